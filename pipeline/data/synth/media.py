"""Writing the media files: .mp4 (H.264 + AAC) or .avi (MPEG-4 + PCM) with PyAV, JPEG crops with Pillow.

``VideoWriter`` takes frames one at a time and the whole audio track up front, and interleaves the
audio packets with the video frames by presentation time, as a camera recording would.

    >>> frames = np.zeros((3, 64, 64, 3), dtype=np.uint8)          # 3 frames at 25 fps = 0.12 s
    >>> with VideoWriter(Path("/tmp/x.mp4"), 25.0, (64, 64), np.zeros(1920, np.float32), 16000) as w:
    ...     for f in frames: w.write(f)
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
from av.codec.context import Flags
import numpy as np
from PIL import Image

AUDIO_CHUNK = 1024   # samples per audio frame (the AAC frame size)


def fps_fraction(fps: float) -> Fraction:
    """Exact frame rate: NTSC rates (29.97, 59.94, 23.976) as n*1000/1001, others as given."""
    for nominal in (24, 30, 60):
        if abs(fps - nominal * 1000 / 1001) < 0.01:
            return Fraction(nominal * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


class VideoWriter:
    """Encode RGB frames (and optionally a mono audio track) into ``path`` (.mp4 or .avi)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], audio: np.ndarray | None,
                 sample_rate: int, crf: int = 26, avi_quality: int = 5) -> None:
        self.path = path
        self.rate = fps_fraction(fps)
        fmt = {".mp4": "mp4", ".avi": "avi"}.get(path.suffix)
        if fmt is None:
            raise ValueError(f"{path}: video suffix must be .mp4 or .avi")
        self._container = av.open(str(path), mode="w", format=fmt)
        # no creation time or encoder tags that vary between runs: same inputs, same bytes
        self._container.metadata.clear()
        if fmt == "mp4":
            self._video = self._container.add_stream("libx264", rate=self.rate)
            self._video.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"}
        else:
            self._video = self._container.add_stream("mpeg4", rate=self.rate)
            # fixed quantiser (ffmpeg's -q:v), as a camera's MPEG-4 AVI would be
            self._video.codec_context.flags |= Flags.qscale
            self._video.codec_context.qscale = avi_quality
        self._video.width, self._video.height = size
        self._video.pix_fmt = "yuv420p"
        self._video.codec_context.time_base = 1 / self.rate
        self._video.thread_count = 1     # deterministic output
        self._audio_stream = None
        self._audio = audio
        self._sample_rate = sample_rate
        self._audio_pos = 0
        if audio is not None:
            # AVI gets PCM: an MP3 encoder delay makes the AVI muxer insert dropped video frames
            codec = "aac" if fmt == "mp4" else "pcm_s16le"
            self._audio_stream = self._container.add_stream(codec, rate=sample_rate)
            self._audio_stream.layout = "mono"
            if fmt == "mp4":
                self._audio_stream.bit_rate = 48000
        self._pcm = fmt == "avi"
        self._n = 0

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame, and the audio up to its end time."""
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        vf.pts = self._n
        vf.time_base = 1 / self.rate
        self._mux(self._video.encode(vf))
        self._n += 1
        if self._audio_stream is not None:
            self._write_audio(int(self._n / self.rate * self._sample_rate))

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        if self._container is None:
            return
        if self._audio_stream is not None:
            self._write_audio(len(self._audio))
            self._mux(self._audio_stream.encode(None))
        self._mux(self._video.encode(None))
        self._container.close()
        self._container = None

    def _write_audio(self, until: int) -> None:
        until = min(until, len(self._audio))
        while self._audio_pos + AUDIO_CHUNK <= until or (until == len(self._audio) and self._audio_pos < until):
            chunk = self._audio[self._audio_pos:self._audio_pos + AUDIO_CHUNK]
            if self._pcm:
                pcm = np.round(np.clip(chunk, -1, 1) * 32767).astype(np.int16)
                af = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
            else:
                af = av.AudioFrame.from_ndarray(chunk[None, :].astype(np.float32), format="fltp", layout="mono")
            af.sample_rate = self._sample_rate
            af.pts = self._audio_pos
            af.time_base = Fraction(1, self._sample_rate)
            self._mux(self._audio_stream.encode(af))
            self._audio_pos += len(chunk)

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self._container.mux(packet)


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    """Encode an (H, W, 3) uint8 RGB array as baseline JPEG (deterministic for fixed input)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
