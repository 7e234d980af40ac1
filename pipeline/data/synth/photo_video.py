"""A short video made from one still photograph, slowly panned, with an optional tone track.

Used to try ``predict`` on a real face without any download (scikit-image ships real photographs,
e.g. ``skimage.data.astronaut()``) and by the tests.

Example:
    >>> import skimage.data, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "astronaut.mp4"
    >>> write_photo_video(path, skimage.data.astronaut(), n_frames=5).is_file()
    True
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np

from pipeline.fsio import atomic_path


def panned_frames(image: np.ndarray, n_frames: int, shift: int = 2) -> np.ndarray:
    """(n_frames, H, W, 3) uint8: ``image`` moved right and down by ``shift`` px per frame (black fill)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    height, width = image.shape[:2]
    frames = np.zeros((n_frames, height, width, 3), dtype=np.uint8)
    for i in range(n_frames):
        dy, dx = min(i * shift, height - 1), min(i * shift, width - 1)
        frames[i, dy:, dx:] = image[: height - dy, : width - dx]
    return frames


def write_photo_video(
    path: str | Path,
    image: np.ndarray,
    n_frames: int = 20,
    fps: int = 25,
    shift: int = 2,
    audio_hz: float | None = 220.0,
    sample_rate: int = 16000,
) -> Path:
    """Write an H.264 MP4 of ``image`` panned over ``n_frames`` frames, plus an AAC tone unless ``audio_hz`` is None."""
    return write_frames_video(path, panned_frames(image, n_frames, shift), fps, audio_hz, sample_rate)


def write_frames_video(
    path: str | Path,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: int = 25,
    audio_hz: float | None = 220.0,
    sample_rate: int = 16000,
    display_rotation: int = 0,
) -> Path:
    """Write (N, H, W, 3) uint8 RGB ``frames`` as an H.264 MP4 (odd sides cropped by one pixel), atomically,
    plus an AAC tone of the video's length unless ``audio_hz`` is None.

    ``display_rotation`` (degrees counter-clockwise, as PyAV's ``VideoFrame.rotation`` reads it back)
    stores a display matrix, as phones do: ``-90`` with frames turned a quarter counter-clockwise is
    how a phone stores a portrait clip, shown upright by players.

    ``frames`` may also be any iterable of (H, W, 3) frames of one size, encoded as they come: a long or
    large video need not be held in memory.
    """
    path = Path(path)
    n_frames = 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            video, audio = None, None
            for frame in frames:
                frame = np.asarray(frame)
                if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                    raise ValueError(f"{path}: frame {n_frames} must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
                height, width = frame.shape[0] - frame.shape[0] % 2, frame.shape[1] - frame.shape[1] % 2
                if video is None:
                    video = container.add_stream("libx264", rate=fps)
                    video.width, video.height = width, height
                    video.pix_fmt = "yuv420p"
                    if display_rotation:
                        video.set_display_rotation(display_rotation)
                    if audio_hz is not None:   # every stream is added before the first packet is written
                        audio = container.add_stream("aac", rate=sample_rate, layout="mono")
                elif (height, width) != (video.height, video.width):
                    raise ValueError(f"{path}: frame {n_frames} is {frame.shape[:2]}, the first was "
                                     f"{(video.height, video.width)}")
                container.mux(video.encode(av.VideoFrame.from_ndarray(frame[:height, :width], format="rgb24")))
                n_frames += 1
            if video is None:
                raise ValueError(f"{path}: frames must be (N >= 1, H, W, 3) uint8 RGB, got no frame")
            container.mux(video.encode())
            if audio is not None and audio_hz is not None:
                _write_tone(container, audio, audio_hz, n_frames / fps, sample_rate)
    return path


def _write_tone(container: av.container.OutputContainer, stream: av.AudioStream, hz: float,
                seconds: float, sample_rate: int) -> None:
    n = int(round(seconds * sample_rate))
    t = np.arange(n, dtype=np.float32) / sample_rate
    samples = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    block = 1024
    for start in range(0, n, block):
        chunk = samples[start:start + block]
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
