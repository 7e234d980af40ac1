"""predict's watchable outputs: the overlay video, the per-face timelines and the progress callback,
on videos made from real photographs, with tiny exported models."""

from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np
import pytest
import skimage.data
from PIL import Image

from _predict_models import PredictModelPaths, build_predict_models
from pipeline.faces.moving_photos import astronaut, crossing_photos, grace_hopper, located_faces
from pipeline.predict import overlay as overlay_module
from pipeline.predict.overlay import FaceMark, draw_marks, write_overlay
from pipeline.data.synth.photo_video import panned_frames, write_frames_video
from pipeline.predict.pass_progress import FrameProgress
from pipeline.predict.video import FacePrediction, load_models, predict_video

FPS = 25
FACE_FRAMES, FACELESS_FRAMES = 10, 6


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    paths: PredictModelPaths = build_predict_models(tmp_path_factory.mktemp("outputs-models"))
    return load_models(paths.visual, paths.audio, paths.sequence, device="cpu")


@pytest.fixture(scope="module")
def face_then_none(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The astronaut panning, then a photograph without a face (coffee), with a tone track."""
    face = panned_frames(skimage.data.astronaut(), FACE_FRAMES)
    coffee = np.asarray(Image.fromarray(skimage.data.coffee()).resize((512, 512)))
    frames = np.concatenate([face, np.repeat(coffee[None], FACELESS_FRAMES, axis=0)])
    return write_frames_video(tmp_path_factory.mktemp("outputs-video") / "clip.mp4", frames, fps=FPS)


def _decode(path: Path) -> tuple[list[np.ndarray], float, int]:
    """Every frame (RGB), the frame rate and the number of audio streams."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, float(stream.average_rate), len(container.streams.audio)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_overlay_draws_the_faces_and_keeps_frames_fps_audio(models, face_then_none, tmp_path: Path):
    events: list[FrameProgress] = []
    out = tmp_path / "over" / "clip.mp4"
    summary = predict_video(face_then_none, tmp_path / "clip.csv", models=models, overlay=out, timelines=True,
                            progress=events.append)
    n = FACE_FRAMES + FACELESS_FRAMES
    assert summary.frames == n
    source, source_fps, source_audio = _decode(face_then_none)
    drawn, fps, audio = _decode(out)
    assert (len(drawn), fps, audio) == (n, source_fps, source_audio) == (n, FPS, 1)
    rows = _rows(tmp_path / "clip.csv")
    boxed = [r for r in rows if r["face_present"] == "1"]
    faceless = sorted({int(r["frame"]) for r in rows if r["face_present"] == "0"})
    assert boxed and faceless, "the video needs frames with and without a face"
    for r in boxed:
        i = int(r["frame"])
        x, y, w, h = (int(round(float(r[k]))) for k in ("x", "y", "w", "h"))
        diff = np.abs(drawn[i].astype(int) - source[i].astype(int)).sum(axis=2)
        # the box's outline and the face's AU bars beside it were drawn
        assert diff[y:y + h + 1, x:x + 3].mean() > 60 and diff[y:y + h + 1, x + w - 2:x + w + 1].mean() > 60
        assert diff[y:y + h, x + w + 4:x + w + 40].mean() > 30
    for i in faceless:
        assert np.abs(drawn[i].astype(int) - source[i].astype(int)).mean() < 3.0, i
    # one timeline per face id, next to the CSV
    assert sorted(p.name for p in tmp_path.glob("clip_face*.png")) == [f"clip_face{r}.png" for r in
                                                                         sorted({r["face_id"] for r in boxed})]
    # progress: every frame of both passes, counted up one by one
    for phase in ("faces", "overlay"):
        done = [e.done for e in events if e.phase == phase]
        assert done == list(range(1, n + 1)), phase
        assert {e.total for e in events if e.phase == phase} == {n}
    assert [e.phase for e in events] == ["faces"] * n + ["overlay"] * n
    assert not [p for p in out.parent.iterdir() if p.name != "clip.mp4"]


def test_two_faces_silent_video_gets_two_timelines_and_no_audio(models, tmp_path: Path):
    frames, _ = crossing_photos(located_faces([astronaut(), grace_hopper()]), n_frames=16)
    video = write_frames_video(tmp_path / "two.mp4", frames, fps=FPS, audio_hz=None)
    predict_video(video, tmp_path / "out" / "two.csv", models=models, overlay=tmp_path / "two_overlay.mp4",
                  timelines=True)
    drawn, fps, audio = _decode(tmp_path / "two_overlay.mp4")
    assert (len(drawn), fps, audio) == (16, FPS, 0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["two.csv", "two_face0.png", "two_face1.png"]
    with Image.open(tmp_path / "out" / "two_face1.png") as image:
        assert image.format == "PNG" and image.size == (1200, 600)


def test_a_failed_overlay_leaves_no_file(face_then_none, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    n = 8
    face = FacePrediction(0, np.arange(n), np.full((n, 12), 0.5), np.full((n, 7), 1 / 7),
                          np.tile([150.0, 40.0, 120.0, 140.0], (n, 1)))
    calls = []

    def broken(image: np.ndarray, marks: list[FaceMark], **options) -> np.ndarray:
        calls.append(1)
        if len(calls) == 5:
            raise OSError("drawing failed on the fifth frame")
        return draw_marks(image, marks, **options)

    monkeypatch.setattr(overlay_module, "draw_marks", broken)
    out = tmp_path / "clip.mp4"
    with pytest.raises(OSError, match="fifth frame"):
        write_overlay(face_then_none, out, [face])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="overwrite its own video"):
        write_overlay(face_then_none, face_then_none, [face])


def test_overlay_reencodes_audio_mp4_cannot_hold(tmp_path: Path):
    """A Matroska video with PCM audio: the audio becomes AAC, the picture keeps its frames and rate."""
    source = tmp_path / "pcm.mkv"
    frames = panned_frames(skimage.data.astronaut()[:240, :320], 6)
    with av.open(str(source), "w") as container:
        video = container.add_stream("mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        tone = (3000 * np.sin(np.arange(16000 * 6 // FPS) / 5.0)).astype(np.int16)
        samples = av.AudioFrame.from_ndarray(tone[None], format="s16", layout="mono")
        samples.sample_rate, samples.pts = 16000, 0
        container.mux(audio.encode(samples))
        container.mux(audio.encode())
    face = FacePrediction(0, np.arange(3), np.full((3, 12), 0.9), np.eye(7)[[4, 4, 4]],
                          np.tile([100.0, 50.0, 80.0, 90.0], (3, 1)))
    out = write_overlay(source, tmp_path / "pcm.mp4", [face])
    drawn, fps, _ = _decode(out)
    with av.open(str(out)) as container:
        assert [s.codec_context.name for s in container.streams.audio] == ["aac"]
    assert (len(drawn), fps) == (6, FPS)


def test_a_face_without_a_place_is_drawn_in_the_corner():
    image = np.full((120, 200, 3), 128, np.uint8)
    drawn = draw_marks(image, [FaceMark(0, None, np.full(12, 1.0), np.eye(7)[1])])
    changed = np.abs(drawn.astype(int) - image).sum(axis=2) > 0
    rows, cols = np.nonzero(changed)
    assert rows.min() < 10 and cols.min() < 10 and cols.max() < 150    # top-left, not across the frame
    with pytest.raises(ValueError, match="12 AU"):
        draw_marks(image, [FaceMark(0, None, np.zeros(11), np.eye(7)[1])])


def test_the_au_bars_carry_a_scale_under_them():
    """Under the 12 bars a scale row (0, .5, 1) says how to read them: the panel reaches one row lower."""
    image = np.zeros((240, 400, 3), np.uint8)
    box = (40.0, 40.0, 100.0, 100.0)
    drawn = draw_marks(image, [FaceMark(0, box, np.zeros(12), np.eye(7)[0])])
    right_of_box = np.abs(drawn[:, 145:].astype(int)).sum(axis=2) > 0
    rows = np.nonzero(right_of_box.any(axis=1))[0]
    font_size = max(10, round(240 / 45))
    bars_bottom = 40 + 2 + 12 * (font_size + 2)
    assert rows.max() > bars_bottom + font_size // 2, "no scale row under the AU bars"
