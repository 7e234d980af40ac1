"""Video probing with PyAV: fps, frame count, audio extent; corrupt and truncated files name the file.

The truncated and damaged files are cut or garbled copies of videos written by the synthetic
generator's writer (``pipeline.data.synth.media``).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from _media import cut_file, garble_file, write_synth_video, write_video

from pipeline.data import video as video_module
from pipeline.data.video import VideoError, probe_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {
        "mp4": write_video(root / "a.mp4", n_frames=10, fps=25, audio=True),
        "avi": write_video(root / "b.avi", n_frames=12, fps=30, audio=False),
    }


@pytest.mark.parametrize("mode", ["demux", "decode", "header"])
def test_mp4_with_audio(videos: dict[str, Path], mode: str) -> None:
    info = probe_video(videos["mp4"], frame_count=mode)
    assert info.n_frames == 10
    assert info.fps == pytest.approx(25.0)
    assert info.has_audio and info.sample_rate == 16000
    assert (info.width, info.height) == (32, 32)


def test_avi_without_audio(videos: dict[str, Path]) -> None:
    info = probe_video(videos["avi"])
    assert (info.n_frames, info.fps, info.has_audio, info.sample_rate) == (12, 30.0, False, None)


def test_ntsc_frame_rate(tmp_path: Path) -> None:
    from fractions import Fraction

    path = tmp_path / "ntsc.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30000, 1001))
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for _ in range(6):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    info = probe_video(path)
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert info.n_frames == 6


def test_truncated_video_names_the_file(videos: dict[str, Path], tmp_path: Path) -> None:
    data = videos["mp4"].read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match=r"cut\.mp4: .*(corrupt|truncated)"):
        probe_video(path)


@pytest.mark.parametrize("fraction", [0.6, 0.9])
def test_truncated_avi_names_the_file(videos: dict[str, Path], tmp_path: Path, fraction: float) -> None:
    data = videos["avi"].read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(VideoError, match=r"cut\.avi: .*(corrupt or truncated|truncated video)"):
        probe_video(path)


def test_avi_cut_after_its_header_reports_missing_frames(videos: dict[str, Path], tmp_path: Path) -> None:
    data = videos["avi"].read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: int(len(data) * 0.9)])
    with pytest.raises(VideoError, match=r"cut\.avi: truncated video: the header declares 12 frames"):
        probe_video(path)


@pytest.mark.parametrize("content", [b"", b"not a video at all\n" * 50, np.random.default_rng(0).bytes(4000)])
def test_garbage_file_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match=r"junk\.mp4: "):
        probe_video(path)


def test_missing_file_and_bad_mode(tmp_path: Path, videos: dict[str, Path]) -> None:
    with pytest.raises(FileNotFoundError, match="none.mp4"):
        probe_video(tmp_path / "none.mp4")
    with pytest.raises(ValueError, match="frame_count"):
        probe_video(videos["mp4"], frame_count="guess")


# -- synthetic-generator media: truncation, damage, short audio ---------------------------------

@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth_videos")
    return {
        "mp4": write_synth_video(root / "whole.mp4"),
        "faststart": write_synth_video(root / "fast.mp4", faststart=True),
        "avi": write_synth_video(root / "whole.avi"),
        "silent": write_synth_video(root / "silent.mp4", audio_share=None),
        "short_mp4": write_synth_video(root / "short.mp4", audio_share=0.4),
        "short_avi": write_synth_video(root / "short.avi", audio_share=0.5),
    }


@pytest.mark.parametrize("mode", ["header", "demux", "decode"])
@pytest.mark.parametrize("name", ["mp4", "faststart", "avi"])
def test_whole_synthetic_videos_have_audio_over_the_picture(synth: dict[str, Path], name: str, mode: str) -> None:
    info = probe_video(synth[name], frame_count=mode)
    assert (info.n_frames, info.header_frames, info.fps) == (50, 50, 25.0)
    assert info.audio_start_s == pytest.approx(0.0, abs=1e-3)
    assert info.audio_end_s == pytest.approx(2.0, abs=0.05)
    assert info.audio_missing_share() == 0.0


@pytest.mark.parametrize("name", ["faststart", "avi"])
@pytest.mark.parametrize("keep", [0.42, 0.9])
def test_header_mode_catches_a_truncated_container(synth: dict[str, Path], tmp_path: Path, name: str,
                                                   keep: float) -> None:
    """A cut file that still opens and declares 50 frames is refused in every mode, ``header`` included."""
    cut = cut_file(synth[name], tmp_path / f"cut{synth[name].suffix}", keep)
    with av.open(str(cut)) as container:
        assert container.streams.video[0].frames == 50     # the header still promises every frame
    for mode in ("header", "demux", "decode"):
        with pytest.raises(VideoError, match=r"cut\.(mp4|avi): .*(truncated|corrupt)"):
            probe_video(cut, frame_count=mode)


def test_header_mode_names_the_last_frame_it_can_reach(synth: dict[str, Path], tmp_path: Path) -> None:
    cut = cut_file(synth["avi"], tmp_path / "cut.avi", 0.9)
    with pytest.raises(VideoError, match=r"cut\.avi: truncated video: the header declares 50 frames \(2\.00 s\) "
                                         r"but the stream ends at frame \d+ \("):
        probe_video(cut, frame_count="header")


def test_header_mode_reads_only_the_end_of_a_whole_file(synth: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def read_all(*args: object, **kwargs: object) -> None:
        raise AssertionError("header mode read the whole file")

    monkeypatch.setattr(video_module, "_read_all", read_all)
    assert probe_video(synth["mp4"], frame_count="header").n_frames == 50
    with pytest.raises(AssertionError, match="whole file"):
        probe_video(synth["mp4"], frame_count="demux")


def test_demux_mode_catches_damaged_audio_in_the_middle(synth: dict[str, Path], tmp_path: Path) -> None:
    damaged = garble_file(synth["mp4"], tmp_path / "damaged.mp4")
    assert probe_video(damaged, frame_count="header").n_frames == 50    # header mode decodes nothing
    for mode in ("demux", "decode"):
        with pytest.raises(VideoError, match=r"damaged\.mp4: audio at \d+\.\d\d s: cannot decode the sound"):
            probe_video(damaged, frame_count=mode)


def test_only_decode_mode_catches_a_damaged_picture(synth: dict[str, Path], tmp_path: Path) -> None:
    damaged = garble_file(synth["silent"], tmp_path / "damaged.mp4")
    assert probe_video(damaged, frame_count="demux").n_frames == 50     # packets intact, payload not
    with pytest.raises(VideoError, match=r"damaged\.mp4: frame \d+: cannot decode the picture"):
        probe_video(damaged, frame_count="decode")


def test_damaged_avi_loses_packets_and_fails_in_demux_mode(synth: dict[str, Path], tmp_path: Path) -> None:
    damaged = garble_file(synth["avi"], tmp_path / "damaged.avi")
    with pytest.raises(VideoError, match=r"damaged\.avi: truncated video: the header declares 50 frames but only"):
        probe_video(damaged)


@pytest.mark.parametrize("mode", ["header", "demux", "decode"])
@pytest.mark.parametrize(("name", "share"), [("short_mp4", 0.4), ("short_avi", 0.5)])
def test_audio_shorter_than_the_picture_is_measured(synth: dict[str, Path], name: str, share: float,
                                                    mode: str) -> None:
    info = probe_video(synth[name], frame_count=mode)
    assert info.n_frames == 50 and info.has_audio
    # AAC rounds the track up to whole 1024-sample frames: 0.064 s at 16 kHz
    assert info.audio_end_s == pytest.approx(2.0 * share, abs=0.07)
    assert info.audio_missing_share() == pytest.approx(1 - share, abs=0.035)


def test_video_without_audio_has_no_missing_share(synth: dict[str, Path]) -> None:
    info = probe_video(synth["silent"])
    assert not info.has_audio and info.audio_missing_share() is None and info.audio_end_s is None

