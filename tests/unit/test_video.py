"""Video probing with PyAV: fps, frame count, audio; corrupt and truncated files name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _media import write_video

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

    import av

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
