"""predict's low-latency mode end to end: tiny exported ONNX models, faces from a crops folder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from _predict_models import WINDOW, PredictModelPaths, build_predict_models
from pipeline.faces.align import align_face
from pipeline.faces.detect import DetectorConfig, FaceDetector
from pipeline.labels import AU_NAMES, EXPR_NAMES
from pipeline.data.synth.photo_video import panned_frames, write_photo_video
from pipeline.predict.video import CSV_COLUMNS, PredictModels, load_models, predict_video, predict_videos

N_FRAMES, FPS, CUT = 20, 25, 10


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> PredictModelPaths:
    return build_predict_models(tmp_path_factory.mktemp("low-latency-models"))


@pytest.fixture(scope="module")
def models(onnx_models: PredictModelPaths) -> PredictModels:
    return load_models(onnx_models.visual, onnx_models.audio, onnx_models.sequence, device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A video with sound, its faces' crops, and the same crops changed after frame ``CUT``."""
    root = tmp_path_factory.mktemp("low-latency-clip")
    video = write_photo_video(root / "astronaut.mp4", skimage.data.astronaut(), n_frames=N_FRAMES, fps=FPS)
    frames = panned_frames(skimage.data.astronaut(), N_FRAMES, shift=2)
    detector = FaceDetector(DetectorConfig())
    same, changed = root / "same", root / "changed"
    same.mkdir()
    changed.mkdir()
    for i, frame in enumerate(frames):
        crop = align_face(frame, detector.detect(frame)[0].landmarks)
        Image.fromarray(crop).save(same / f"{i + 1:05d}.jpg")
        if i <= CUT:
            Image.fromarray(crop).save(changed / f"{i + 1:05d}.jpg")
        elif i % 3:   # later frames: another face picture, or none at all
            Image.fromarray(np.ascontiguousarray(crop[::-1, ::-1] // 2)).save(changed / f"{i + 1:05d}.jpg")
    return video, same, changed


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open() as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _probabilities(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([[float(r[name]) for name in (*AU_NAMES, *EXPR_NAMES)] for r in rows])


def test_low_latency_rows_up_to_a_frame_ignore_the_frames_after_it(models, clip, tmp_path: Path):
    video, same, changed = clip
    runs = {}
    for low_latency in (False, True):
        for crops in (same, changed):
            out = tmp_path / f"{low_latency}-{crops.name}.csv"
            predict_video(video, out, crops_dir=crops, models=models, low_latency=low_latency)
            runs[low_latency, crops.name] = _read(out)
    columns, causal_same = runs[True, "same"]
    assert tuple(columns) == CSV_COLUMNS == tuple(runs[False, "same"][0])
    causal_changed = runs[True, "changed"][1]
    assert [r["frame"] for r in causal_same] == [str(i) for i in range(N_FRAMES)]
    np.testing.assert_array_equal(_probabilities(causal_same[:CUT + 1]), _probabilities(causal_changed[:CUT + 1]))
    assert not np.array_equal(_probabilities(causal_same[CUT + 1:]), _probabilities(causal_changed[CUT + 1:]))
    # the offline mode reads up to a window ahead: the same change moves its frames before the cut
    offline_same, offline_changed = runs[False, "same"][1], runs[False, "changed"][1]
    assert not np.array_equal(_probabilities(offline_same[CUT - WINDOW + 2:CUT + 1]),
                              _probabilities(offline_changed[CUT - WINDOW + 2:CUT + 1]))
    # the two modes agree on what each frame is, they differ in the context they read
    assert [r["face_present"] for r in causal_same] == [r["face_present"] for r in offline_same]
    assert not np.array_equal(_probabilities(causal_same), _probabilities(offline_same))


def test_causal_audio_delays_the_audio_and_needs_the_low_latency_mode(models, clip, tmp_path: Path):
    video, same, _ = clip
    centred, delayed = tmp_path / "centred.csv", tmp_path / "delayed.csv"
    predict_video(video, centred, crops_dir=same, models=models, low_latency=True)
    done, failed = predict_videos([video], tmp_path / "out", models, crops_root=same, low_latency=True,
                                  causal_audio=True)
    assert not failed and done[0].frames == N_FRAMES
    columns, rows = _read(tmp_path / "out" / "astronaut.csv")
    assert tuple(columns) == CSV_COLUMNS and len(rows) == N_FRAMES
    assert not np.array_equal(_probabilities(rows), _probabilities(_read(centred)[1]))
    with pytest.raises(ValueError, match="causal_audio is an option of the low-latency mode"):
        predict_video(video, delayed, crops_dir=same, models=models, causal_audio=True)
    assert not delayed.exists()


def test_a_causal_faceless_frame_follows_the_face_seen_most_so_far():
    from pipeline.predict.video import _FollowedFace, _predict_faces, _VisualPass

    n = 20
    # face 0 (embeddings all 1) in frames 5-9; face 1 (all 2) in frames 0-2 and 12-19, the most seen overall
    faces = {0: _FollowedFace(frames=list(range(5, 10))), 1: _FollowedFace(frames=[0, 1, 2, *range(12, 20)])}
    for face_id, face in faces.items():
        face.embedding = np.full((len(face.frames), 512), face_id + 1, np.float16)
    frames = _VisualPass(np.arange(n) / 25.0, faces, 25.0, located=False)

    def running_max(visual, audio, face_present, audio_present, batch_size):
        """A causal stand-in for the sequence model: frame t's logits (and valence, arousal a tenth of
        them) are the largest embedding so far."""
        seen = np.maximum.accumulate(visual[:, 0].astype(np.float32))
        return np.repeat(seen[:, None], 12, axis=1), np.repeat(seen[:, None], 7, axis=1), np.repeat(
            seen[:, None] / 10, 2, axis=1)

    def faceless_logit(causal: bool) -> dict[int, float]:
        predictions, any_face = _predict_faces(frames, running_max, np.zeros((n, 512), np.float16), np.zeros(n, bool),
                                               8, causal=causal)
        row = next(p for p in predictions if p.face_id is None)
        assert row.frames.tolist() == [3, 4, 10, 11] and not any_face[[3, 4, 10, 11]].any()
        logit = {int(t): float(np.log(p / (1 - p))) for t, p in zip(row.frames, row.au_prob[:, 0])}
        # the valence-arousal of a faceless frame comes from the same face's run as its probabilities
        assert row.va[:, 0] * 10 == pytest.approx([logit[int(t)] for t in row.frames], abs=1e-4)
        return logit

    # causal: frames 3, 4 after face 1 alone (3 frames); 10, 11 after face 0's 5 frames against face 1's 3
    assert faceless_logit(causal=True) == pytest.approx({3: 2.0, 4: 2.0, 10: 1.0, 11: 1.0}, abs=1e-4)
    # offline: from face 1, the most seen in the whole video
    assert faceless_logit(causal=False) == pytest.approx({3: 2.0, 4: 2.0, 10: 2.0, 11: 2.0}, abs=1e-4)
