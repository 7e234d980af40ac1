"""Hand-built tiny media for the data-layer tests: videos (PyAV), JPEG crops (Pillow), annotation files.

``build_affwild2(root)`` writes a four-video dataset in the Aff-Wild2 layout whose splits exercise the
validation protocol:

    video  file                  frames fps audio  AU split          EXPR split
    vidA   videos/batch1/.mp4    10     25  yes    train             validation (9 lines, padded)
    vidB   videos/batch2/.avi    12     30  no     validation        train
    vidC   videos/batch2/.mp4    10     25  yes    _left train,      -
                                                   _right validation
    vidD   videos/batch1/.mp4    8      25  yes    validation        validation

so the protocol excludes vidB from AU validation and vidA from EXPR validation. Crop 00003.jpg of
vidA and 00001.jpg of vidC_right are missing.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
from PIL import Image

from pipeline.data.annotations import AU_HEADER, EXPR_HEADER

AU_TRAIN = "annotations/AU_Set/Train_Set"
AU_VAL = "annotations/AU_Set/Validation_Set"
EXPR_TRAIN = "annotations/EXPR_Set/Train_Set"
EXPR_VAL = "annotations/EXPR_Set/Validation_Set"


def write_video(path: Path, n_frames: int = 10, fps: int = 25, audio: bool = True, size: int = 32) -> Path:
    """Write a tiny video (.mp4: H.264 + AAC; .avi: MPEG-4 part 2) of ``n_frames`` grey levels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if path.suffix == ".mp4" else "mpeg4"
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=16000) if audio else None
        mux_grey_frames(container, video, n_frames, size)
        if sound is not None:
            samples = np.zeros((1, int(16000 * n_frames / fps)), dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in sound.encode(frame):
                container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def mux_grey_frames(container: av.container.OutputContainer, video: av.VideoStream, n_frames: int, size: int) -> None:
    """Encode ``n_frames`` ``size`` x ``size`` frames of grey level ``23 * i % 256`` into ``video`` and flush it."""
    for i in range(n_frames):
        image = np.full((size, size, 3), (i * 23) % 256, dtype=np.uint8)
        for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)


def write_jpeg(path: Path, value: int = 128, size: int = 112) -> Path:
    """Write a ``size`` x ``size`` RGB JPEG whose pixels encode ``value`` (a gradient plus an offset)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 100, size, dtype=np.float32)
    image = np.clip(value + ramp[None, :, None] * np.array([1.0, 0.5, 0.0]), 0, 255).astype(np.uint8)
    Image.fromarray(np.broadcast_to(image, (size, size, 3)).copy()).save(path, quality=90)
    return path


def write_crops(crops_dir: Path, n_frames: int, missing: tuple[int, ...] = (), size: int = 112) -> None:
    """Write crops ``{i+1:05d}.jpg`` for frames ``0..n_frames-1`` except ``missing`` (0-based)."""
    for i in range(n_frames):
        if i not in missing:
            write_jpeg(crops_dir / f"{i + 1:05d}.jpg", value=(i * 37) % 150, size=size)


def write_au(path: Path, rows: np.ndarray | list[list[int]], header: str = AU_HEADER) -> Path:
    """Write an AU_Set file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header] + [",".join(str(int(v)) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_expr(path: Path, values: np.ndarray | list[int], header: str = EXPR_HEADER) -> Path:
    """Write an EXPR_Set file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header] + [str(int(v)) for v in values]) + "\n")
    return path


def au_rows(n: int, seed: int, unlabelled: tuple[int, ...] = ()) -> np.ndarray:
    """Random 0/1 AU rows with rows ``unlabelled`` set to -1."""
    rows = np.random.default_rng(seed).integers(0, 2, size=(n, 12))
    rows[list(unlabelled)] = -1
    return rows


def expr_values(n: int, seed: int, unlabelled: tuple[int, ...] = ()) -> np.ndarray:
    """Random expression classes 0..6 with frames ``unlabelled`` set to -1."""
    values = np.random.default_rng(seed).integers(0, 7, size=n)
    values[list(unlabelled)] = -1
    return values


def build_affwild2(root: Path) -> Path:
    """Write the four-video dataset described in the module docstring under ``root``."""
    write_video(root / "videos/batch1/vidA.mp4", 10, fps=25)
    write_video(root / "videos/batch2/vidB.avi", 12, fps=30, audio=False)
    write_video(root / "videos/batch2/vidC.mp4", 10, fps=25)
    write_video(root / "videos/batch1/vidD.mp4", 8, fps=25)
    write_au(root / AU_TRAIN / "vidA.txt", au_rows(10, 1, unlabelled=(0,)))
    write_au(root / AU_TRAIN / "vidC_left.txt", au_rows(10, 2))
    write_au(root / AU_VAL / "vidB.txt", au_rows(12, 3, unlabelled=(5, 6)))
    write_au(root / AU_VAL / "vidC_right.txt", au_rows(10, 4))
    write_au(root / AU_VAL / "vidD.txt", au_rows(8, 5))
    write_expr(root / EXPR_TRAIN / "vidB.txt", expr_values(12, 6, unlabelled=(0,)))
    write_expr(root / EXPR_VAL / "vidA.txt", expr_values(9, 7, unlabelled=(8,)))
    write_expr(root / EXPR_VAL / "vidD.txt", expr_values(8, 8))
    crops = root / "cropped_aligned"
    write_crops(crops / "vidA", 10, missing=(2,))
    write_crops(crops / "vidB", 12)
    write_crops(crops / "vidC_left", 10)
    write_crops(crops / "vidC_right", 10, missing=(0,))
    write_crops(crops / "vidD", 8)
    return root


BP4D_HEADER = "0,1,2,4,6,7,10,12,14,15,17,23,24"


def build_bp4d(root: Path) -> Path:
    """Write one BP4D sequence F001_T1 (frames 100..104, frame 102's crop missing, some AUs not coded)."""
    rows = [
        "100,1,0,0,1,0,0,1,0,0,1,0,0",
        "101,0,0,1,0,0,1,0,1,0,0,1,0",
        "102,9,9,9,9,9,9,9,9,9,9,9,9",
        "103,1,1,0,0,1,0,0,0,1,0,0,1",
        "104,0,1,9,0,0,0,1,0,0,0,0,0",
    ]
    csv = root / "AU_OCC/F001_T1.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    csv.write_text("\n".join([BP4D_HEADER] + rows) + "\n")
    for frame in (100, 101, 103, 104):
        write_jpeg(root / f"cropped_aligned/F001_T1/{frame:05d}.jpg", value=frame % 150)
    return root


def write_synth_video(path: Path, n_frames: int = 50, fps: int = 25, audio_share: float | None = 1.0,
                      faststart: bool = False, size: int = 64) -> Path:
    """Write a video with the synthetic generator's writer: a moving ramp, and noise audio covering
    ``audio_share`` of the picture (``None``: no audio stream).

    ``faststart`` moves an .mp4's index in front of the media (as web downloads have it), so a copy cut
    short still opens and declares every frame.
    """
    from pipeline.data.synth.media import VideoWriter

    rate = 16000
    audio = None
    if audio_share is not None:
        audio = np.random.default_rng(0).uniform(-0.3, 0.3, int(rate * n_frames / fps * audio_share)).astype(np.float32)
    written = path.with_name(f"plain-{path.name}") if faststart else path
    written.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 200, size, dtype=np.float32)
    with VideoWriter(written, float(fps), (size, size), audio, rate) as writer:
        for i in range(n_frames):
            image = (ramp[None, :, None] + 5 * i) % 256 * np.ones((size, 1, 3), np.float32)
            writer.write(image.astype(np.uint8))
    if faststart:
        with av.open(str(written)) as source, av.open(str(path), "w", options={"movflags": "faststart"}) as out:
            streams = {s.index: out.add_stream_from_template(s) for s in source.streams}
            for packet in source.demux():
                if packet.dts is None:   # the demuxer's flush packets carry no data
                    continue
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
        written.unlink()
    return path


def cut_file(source: Path, path: Path, keep: float) -> Path:
    """Write the first ``keep`` share of ``source``'s bytes to ``path`` (a truncated download)."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def garble_file(source: Path, path: Path, start: float = 0.4, length: float = 0.2, seed: int = 0) -> Path:
    """Copy ``source`` to ``path`` with random bytes over ``[start, start + length)`` of it (a damaged copy)."""
    data = bytearray(source.read_bytes())
    first, count = int(len(data) * start), int(len(data) * length)
    data[first:first + count] = np.random.default_rng(seed).bytes(count)
    path.write_bytes(bytes(data))
    return path


def jpeg_claiming_size(width: int, height: int) -> bytes:
    """A 16x16 JPEG whose frame header is patched to announce ``width`` x ``height`` pixels: what a
    crafted file looks like to a reader that trusts the header."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 150)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def write_large_jpeg(path: Path, side: int) -> Path:
    """A real, flat grey ``side`` x ``side`` JPEG (small on disk, ``side``² bytes once decoded)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (side, side), 128).save(path, quality=30)
    return path
