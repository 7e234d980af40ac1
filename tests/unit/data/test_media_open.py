"""Media files are read as local files only, within bounds: playlists and file lists are never followed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.audio.decode import decode_audio
from pipeline.config import ConfigError, from_dict
from pipeline.data.media_open import MediaLimitError, MediaLimits, MediaOpenError
from pipeline.data.video import decode_frames, probe_video
from pipeline.faces.crop import crop_videos
from pipeline.predict.overlay import write_overlay
from pipeline.data.synth.photo_video import write_frames_video
from pipeline.predict.video import PredictConfig


@pytest.fixture()
def real(tmp_path: Path) -> Path:
    """A real 64x48 video of 10 frames (0.4 s) with a tone: what a crafted list points at."""
    frames = np.full((10, 48, 64, 3), 128, np.uint8)
    return write_frames_video(tmp_path / "real.mp4", frames, fps=25)


def _concat_list(tmp_path: Path, target: Path) -> Path:
    """An FFmpeg concat list posing as an MP4: FFmpeg opens the file it names as if it were this one."""
    path = tmp_path / "crafted.mp4"
    path.write_text(f"ffconcat version 1.0\nfile '{target}'\n")
    return path


def _black_video(path: Path, container_format: str, frames: int) -> Path:
    """``frames`` black 64x48 H.264 frames at 25 fps in a ``container_format`` file at ``path``."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    return path

def _hls_playlist(tmp_path: Path) -> Path:
    """An HLS playlist naming a local MPEG-TS segment."""
    segment = _black_video(tmp_path / "segment.ts", "mpegts", 5)
    path = tmp_path / "crafted.m3u8"
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{segment.name}\n#EXT-X-ENDLIST\n")
    return path


READERS = {
    "decode_frames": lambda path: list(decode_frames(path)),
    "probe_video": probe_video,
    "decode_audio": decode_audio,
    "write_overlay": lambda path: write_overlay(path, path.with_name("overlay.mp4"), []),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("crafted", ("concat", "hls"))
def test_a_list_of_other_files_is_refused_in_one_line(real: Path, tmp_path: Path, reader: str, crafted: str) -> None:
    path = _concat_list(tmp_path, real) if crafted == "concat" else _hls_playlist(tmp_path)
    with pytest.raises(MediaOpenError) as caught:
        READERS[reader](path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and "never followed" in message
    assert not path.with_name("overlay.mp4").exists()


def test_one_crafted_video_does_not_lose_the_others(real: Path, tmp_path: Path) -> None:
    crafted = _concat_list(tmp_path, real)
    done, failed = crop_videos([crafted, real], tmp_path / "crops", min_frames=1)
    assert [Path(summary.video).name for summary in done] == ["real.mp4"]
    assert list(failed) == [str(crafted)] and failed[str(crafted)].startswith(f"{crafted}: ")


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_picture_above_the_pixel_limit_is_refused_before_decoding(real: Path, reader: str) -> None:
    small = MediaLimits(max_pixels=64 * 48 - 1)
    calls = {
        "decode_frames": lambda: list(decode_frames(real, limits=small)),
        "probe_video": lambda: probe_video(real, limits=small),
        "decode_audio": lambda: decode_audio(real, limits=small),
        "write_overlay": lambda: write_overlay(real, real.with_name("overlay.mp4"), [], limits=small),
    }
    with pytest.raises(MediaLimitError, match=rf"^{real}: video stream 0 is 64x48 pixels, above the limit of "
                                              rf"3071 \(max_pixels\)$"):
        calls[reader]()
    assert not real.with_name("overlay.mp4").exists()


def test_a_video_longer_than_the_limit_is_refused(real: Path) -> None:
    with pytest.raises(MediaLimitError, match=rf"^{real}: the header reaches 0\.40 s, above the limit of 0\.2 s"):
        list(decode_frames(real, limits=MediaLimits(max_duration_s=0.2)))


def test_frames_beyond_a_header_without_duration_are_counted(tmp_path: Path) -> None:
    # a raw H.264 stream declares no duration: the bound is checked frame by frame
    path = _black_video(tmp_path / "raw.h264", "h264", 10)
    with pytest.raises(MediaLimitError, match=rf"^{path}: frame 6 reaches 0\.24 s, above the limit of 0\.2 s"):
        list(decode_frames(path, limits=MediaLimits(max_duration_s=0.2)))


def test_limits_come_from_the_predict_params() -> None:
    config = from_dict(PredictConfig, {"limits": {"max_pixels": 1920 * 1080, "max_duration_s": 600.0}})
    assert config.limits == MediaLimits(1920 * 1080, 600.0)
    with pytest.raises(ConfigError, match=r"params\.limits\.max_pixels: must be in"):
        from_dict(PredictConfig, {"limits": {"max_pixels": 0}})


def test_a_picture_above_the_limit_is_never_decoded(tmp_path: Path) -> None:
    # one 7680x4352 frame: just above 8K UHD; decoded to RGB it would take 100 MB
    video = write_frames_video(tmp_path / "huge.mp4", [np.zeros((4352, 7680, 3), np.uint8)], audio_hz=None)
    child = (
        "import resource, sys\n"
        "from pipeline.data.video import decode_frames\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    list(decode_frames(sys.argv[1]))\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"   # KiB -> MiB
    )
    out = subprocess.run([sys.executable, "-c", child, str(video)], capture_output=True, text=True, check=True)
    message, grown_mib = out.stdout.splitlines()
    assert message == f"{video}: video stream 0 is 7680x4352 pixels, above the limit of 33177600 (max_pixels)"
    assert int(grown_mib) < 40, out.stdout   # not even the 50 MB of the frame's YUV planes was allocated
