"""The one image reader: JPEG only, the size checked before decoding, and every reader goes through it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from _media import jpeg_claiming_size, write_jpeg
from PIL import Image

from pipeline.jpeg import MAX_SIDE, ImageError, check_jpeg, jpeg_size, read_jpeg


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt,start", [("PNG", "89504e47"), ("GIF", "47494638"), ("TIFF", "49492a00")])
def test_only_a_jpeg_is_opened(fmt: str, start: str, tmp_path: Path) -> None:
    path = tmp_path / "00001.jpg"
    path.write_bytes(_encoded(fmt))
    with pytest.raises(ImageError, match=rf"not a JPEG \(starts with {start}\)"):
        read_jpeg(path)


def test_pillow_is_asked_for_its_jpeg_parser_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that starts like a JPEG still goes to no other format's parser."""
    import pipeline.jpeg as jpeg

    seen: list[object] = []
    real = Image.open

    def spy(fp: object, mode: str = "r", formats: object = None) -> Image.Image:
        seen.append(formats)
        return real(fp, mode, formats)

    monkeypatch.setattr(jpeg.Image, "open", spy)
    assert jpeg_size(_encoded("JPEG")) == (16, 16)
    assert seen == [["JPEG"]]


def test_the_size_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    crafted, tall = jpeg_claiming_size(12000, 12000), jpeg_claiming_size(16, MAX_SIDE + 1)

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("decoded an image its header already refuses")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(Image.Image, "convert", no_decoding)
    with pytest.raises(ImageError, match=rf"12000x12000 pixels, larger than the {MAX_SIDE}x{MAX_SIDE}"):
        read_jpeg(crafted)
    with pytest.raises(ImageError, match="larger than"):
        check_jpeg(tall, decode=True)


def test_empty_and_truncated_files(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"the file is empty \(0 bytes\)"):
        read_jpeg(b"")
    data = write_jpeg(tmp_path / "a.jpg").read_bytes()
    assert check_jpeg(data[: len(data) // 2], decode=False) == (112, 112)  # the header alone is whole
    with pytest.raises(ImageError, match="broken JPEG"):
        check_jpeg(data[: len(data) // 2], decode=True)


def test_read_resizes_only_when_asked_and_returns_a_writable_array(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "a.jpg", value=90, size=128)
    image = read_jpeg(path)
    assert image.shape == (128, 128, 3) and image.flags.writeable
    assert read_jpeg(path, size=112).shape == (112, 112, 3)
    np.testing.assert_array_equal(read_jpeg(path.read_bytes()), image)


def test_an_image_past_pillows_own_limit_is_refused_as_too_large() -> None:
    with pytest.raises(ImageError, match=r"larger than the \d+x\d+ a face crop may be \(Image size"):
        jpeg_size(jpeg_claiming_size(65000, 65000))
