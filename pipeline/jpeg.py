"""The one way the pipeline opens an image it did not make: JPEG only, its size checked before decoding.

Face crops and face-set images come from outside (Aff-Wild2's ``cropped_aligned``, ``predict --crops``,
insightface ``.rec`` files, identity folders). Pillow identifies a file by its content, not its name,
so a PSD or FITS file named ``.jpg`` would reach that format's parser; and it decodes whatever size
the header announces, so a 1.6 MB JPEG of 12000x12000 pixels becomes a 411 MiB array before any
112x112 check. Here Pillow is asked for its JPEG parser only (``formats=["JPEG"]``) and reads the
header lazily; the size is checked against ``max_side`` before a pixel is decoded, so memory stays
bounded by ``max_side`` squared whatever the file says (Pillow's own ``MAX_IMAGE_PIXELS`` guard,
89 million pixels, is far above what a face crop needs).

    >>> import io
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("RGB", (112, 96), (200, 10, 10)).save(buffer, "JPEG")
    >>> jpeg_size(buffer.getvalue())
    (112, 96)
    >>> read_jpeg(buffer.getvalue(), size=112).shape
    (112, 112, 3)
    >>> read_jpeg(b"GIF89a....")
    Traceback (most recent call last):
    ...
    pipeline.jpeg.ImageError: not a JPEG (starts with 47494638)
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

MAX_SIDE = 1024  # the widest or tallest face crop accepted (aligned crops are 112; 3 MiB decoded at most)
JPEG_START = b"\xff\xd8\xff"
_FORMATS = ("JPEG", "MPO")  # MPO: a JPEG with extra frames, which Pillow's JPEG parser returns as such
# What Pillow raises on bytes that are not a whole, valid image.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ImageError(ValueError):
    """An image that is not a decodable JPEG of an accepted size; the caller adds where it came from."""


@contextmanager
def open_jpeg(source: bytes | Path, max_side: int = MAX_SIDE) -> Iterator[Image.Image]:
    """Open ``source`` (JPEG bytes or a file) with its header read and checked, no pixel decoded yet.

    Raise :class:`ImageError` when it is empty, not a JPEG, or wider or taller than ``max_side``.
    """
    with (source.open("rb") if isinstance(source, Path) else io.BytesIO(bytes(source))) as stream:
        start = stream.read(len(JPEG_START))
        if not start:
            raise ImageError("the file is empty (0 bytes)")
        if start != JPEG_START:
            raise ImageError(f"not a JPEG (starts with {(start + stream.read(1)).hex()})")
        stream.seek(0)
        try:
            with warnings.catch_warnings():  # the size check below refuses far smaller images
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(stream, formats=["JPEG"])  # reads the header only
        except Image.DecompressionBombError as exc:
            raise ImageError(f"larger than the {max_side}x{max_side} a face crop may be ({exc})") from exc
        except _PILLOW_ERRORS as exc:
            raise ImageError(f"broken JPEG ({exc})") from exc
        with image:
            if image.format not in _FORMATS:
                raise ImageError(f"not a JPEG (Pillow reads it as {image.format})")
            width, height = image.size
            if not (0 < width <= max_side and 0 < height <= max_side):
                raise ImageError(f"{width}x{height} pixels, larger than the {max_side}x{max_side} a face crop "
                                 "may be")
            yield image


def jpeg_size(source: bytes | Path, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """``(width, height)`` from the header of JPEG ``source``, nothing decoded (see :func:`open_jpeg`)."""
    with open_jpeg(source, max_side) as image:
        return image.size


def read_jpeg(source: bytes | Path, size: int | None = None, max_side: int = MAX_SIDE) -> np.ndarray:
    """Decode JPEG ``source`` to uint8 (H, W, 3) RGB; with ``size``, resized (bilinear) to (size, size)
    when it has another size. Raise :class:`ImageError` when it cannot be decoded (see :func:`open_jpeg`)."""
    with open_jpeg(source, max_side) as image:
        try:
            rgb = image.convert("RGB")
        except _PILLOW_ERRORS as exc:
            raise ImageError(f"broken JPEG ({exc})") from exc
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(rgb, dtype=np.uint8)  # a writable array of its own (torch.from_numpy needs one)


def check_jpeg(source: bytes | Path, decode: bool = True, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """Check that ``source`` is a valid JPEG (every pixel decoded when ``decode``, else its header
    only) and return its ``(width, height)``; raise :class:`ImageError` otherwise."""
    with open_jpeg(source, max_side) as image:
        if decode:
            try:
                image.load()
            except _PILLOW_ERRORS as exc:
                raise ImageError(f"broken JPEG ({exc})") from exc
        return image.size
