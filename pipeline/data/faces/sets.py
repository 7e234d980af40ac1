"""Face-identity training sets in the two layouts face recognisers are trained from.

- ``PackedFaceSet``: insightface's packed format, ``train.rec`` + ``train.idx`` (the form Glint360K,
  MS1MV2/MS1MV3 and WebFace are distributed in). Record 0 is a header whose label array
  ``(a, b)`` says that records ``1 .. a-1`` are images and records ``a .. b-1`` are identity
  headers, one per identity, each labelled with the range ``(start, stop)`` of its images. A file
  whose record 0 has no label array is read as images only, every index key (0 included) being one,
  as insightface's ``MXFaceDataset`` reads it.
- ``FolderFaceSet``: a directory of ``<identity>/<image>.jpg`` aligned faces; identities are the
  subdirectories in sorted order (label = position).

Both are map-style datasets: ``len(s)`` images, ``s[i]`` is ``(image (H, W, 3) uint8 RGB, label)``,
safe to hand to DataLoader workers. ``open_face_set`` chooses the reader by what the path holds.
Counts read from a file (record 0's identity range) are checked against the index before anything is
allocated, and images are decoded through :mod:`pipeline.jpeg` (JPEG only, at most
:data:`pipeline.jpeg.MAX_SIDE` pixels a side, checked before decoding). ``s.check()`` checks every
image without decoding any: a packed set's record framing, IRHeader, label and JPEG start (one small
read per record), a folder's JPEG headers (Pillow reads the header only).

    >>> import tempfile
    >>> from pipeline.data.synth.identities import FaceIdentityConfig, generate_face_identities
    >>> root = Path(tempfile.mkdtemp()) / "faces"
    >>> _ = generate_face_identities(root, FaceIdentityConfig(identities=2, images_per_identity=3))
    >>> face_set_info(root / "rec"), face_set_info(root / "folder")["images"]
    ({'format': 'rec', 'identities': 2, 'images': 6}, 6)
    >>> image, label = open_face_set(root / "rec")[4]
    >>> image.shape, label
    ((112, 112, 3), 1)
"""

from __future__ import annotations

import math
import struct
from functools import cached_property
from pathlib import Path

import numpy as np

from pipeline.data.faces.recordio import IR_SIZE, IRHeader, RecordIOError, RecordReader, unpack_record
from pipeline.jpeg import JPEG_START, ImageError, jpeg_size, read_jpeg

REC_NAME, IDX_NAME = "train.rec", "train.idx"
IMAGE_SUFFIXES = (".jpg", ".jpeg")
_HEAD_BYTES = 64  # read per record by check(): the IRHeader, a short label array and the JPEG start


class FaceSetFormatError(ValueError):
    """A path that holds neither face-set format."""


def decode_jpeg(data: bytes, where: str) -> np.ndarray:
    """Decode JPEG bytes to (H, W, 3) uint8 RGB (:func:`pipeline.jpeg.read_jpeg`); ``where`` (file,
    record) names them in errors."""
    try:
        return read_jpeg(data)
    except ImageError as exc:
        raise RecordIOError(f"{where}: {exc}") from exc


class PackedFaceSet:
    """Images and labels of a ``train.rec``/``train.idx`` pair, read through the index."""

    format = "rec"

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        self.reader = RecordReader(self.rec_path, self.idx_path)
        header, _ = unpack_record(self.reader.read(0), f"{self.rec_path}: record 0")
        self.header0: tuple[int, int] | None = None
        if header.flag > 0:
            if header.flag < 2:
                raise RecordIOError(f"{self.rec_path}: record 0 holds {header.flag} label, expected the 2 "
                                    "of the identity range")
            self.header0 = self._identity_range(header.label[:2])
            self.keys = np.arange(1, self.header0[0], dtype=np.int64)
        else:
            self.keys = self.reader.keys().copy()
        for key in self.keys[[0, -1]] if len(self.keys) else ():
            if int(key) not in self.reader.index:
                raise RecordIOError(f"{self.rec_path}: record 0 announces image record {int(key)}, "
                                    "which the index lacks")

    def _identity_range(self, values: np.ndarray) -> tuple[int, int]:
        """Record 0's ``(first identity record, stop)``, checked against the index before the image keys
        it implies are allocated: every record it counts must be one the index lists."""
        n = len(self.reader.index)
        where = f"{self.rec_path}: record 0 holds the identity range ({values[0]:g}, {values[1]:g})"
        if not all(math.isfinite(v) and v == int(v) for v in values.tolist()):
            raise RecordIOError(f"{where}, not two record numbers")
        first_identity, stop = int(values[0]), int(values[1])
        # float32 labels round record numbers above 2**24 (Glint360K's) to a neighbour: allow that much
        rounding = int(np.spacing(np.float32(stop)))
        if not 1 <= first_identity <= stop <= n + rounding:
            raise RecordIOError(f"{where}, expected 1 <= start <= stop <= {n}, the records {self.idx_path} lists")
        return first_identity, stop

    def __len__(self) -> int:
        return len(self.keys)

    def check(self) -> None:
        """Check every image record (framing, IRHeader, label, JPEG start) and, with a header, every
        identity record; one read of :data:`_HEAD_BYTES` per record, no image decoded."""
        for key, head in self.reader.heads(self.keys, _HEAD_BYTES):
            header, image = self._unpack_head(key, head)
            if not image.startswith(JPEG_START):
                raise RecordIOError(f"{self.rec_path}: record {key}: not a JPEG (starts with "
                                    f"{image[:4].hex() or 'nothing'})")
            _stored_label(header, f"{self.rec_path}: record {key}")
        if self.header0 is not None:
            self.labels  # reads and checks every identity record

    @property
    def identities(self) -> int:
        """Number of identities: from the header when there is one, else the distinct labels."""
        if self.header0 is not None:
            return self.header0[1] - self.header0[0]
        return len(np.unique(self.labels))

    @cached_property
    def labels(self) -> np.ndarray:
        """(len,) int64 label of every image: with a header, the position of the identity record
        whose range holds it (one read per identity; insightface numbers classes the same way), else
        the label of every image record (one read per image)."""
        if self.header0 is None:
            return np.array([self._label(int(k)) for k in self.keys], dtype=np.int64)
        labels = np.full(len(self.keys), -1, dtype=np.int64)
        for ordinal, key in enumerate(range(*self.header0)):
            where = f"{self.rec_path}: identity record {key}"
            header, _ = unpack_record(self.reader.read(key), where)
            if header.flag < 2:
                raise RecordIOError(f"{where}: no (start, stop) label range")
            start, stop = int(header.label[0]), int(header.label[1])
            if not 1 <= start < stop <= len(self.keys) + 1:
                raise RecordIOError(f"{where}: image range ({start}, {stop}) outside 1..{len(self.keys)}")
            labels[start - 1:stop - 1] = ordinal
        if (labels < 0).any():
            first = int(np.nonzero(labels < 0)[0][0]) + 1
            raise RecordIOError(f"{self.rec_path}: image record {first} belongs to no identity record")
        return labels

    def jpeg(self, i: int) -> tuple[bytes, int]:
        """The JPEG bytes and the label stored in image ``i``'s record (0-based ``i``)."""
        key = int(self.keys[i])
        where = f"{self.rec_path}: record {key}"
        header, data = unpack_record(self.reader.read(key), where)
        return data, _stored_label(header, where)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        data, label = self.jpeg(i)
        return decode_jpeg(data, f"{self.rec_path}: record {int(self.keys[i])}"), label

    def _label(self, key: int) -> int:
        header, _ = self._head(key)
        return _stored_label(header, f"{self.rec_path}: record {key}")

    def _head(self, key: int) -> tuple[IRHeader, bytes]:
        """Record ``key``'s IRHeader and the first bytes after it, without reading the whole image."""
        return self._unpack_head(key, self.reader.read_head(key, _HEAD_BYTES))

    def _unpack_head(self, key: int, head: bytes) -> tuple[IRHeader, bytes]:
        """The IRHeader and following bytes of record ``key`` from its first :data:`_HEAD_BYTES`
        (read again, longer, when its label array runs past them)."""
        flag = struct.unpack_from("<I", head)[0] if len(head) >= 4 else 0
        if len(head) == _HEAD_BYTES and IR_SIZE + 4 * flag + len(JPEG_START) > _HEAD_BYTES:
            head = self.reader.read_head(key, IR_SIZE + 4 * flag + len(JPEG_START))  # a long label array
        return unpack_record(head, f"{self.rec_path}: record {key}")


def _stored_label(header: IRHeader, where: str) -> int:
    """An image record's class: its scalar label, or the first of its label array; a class number."""
    value = float(header.label if np.ndim(header.label) == 0 else header.label[0])
    if not (math.isfinite(value) and value >= 0 and value == int(value)):
        raise RecordIOError(f"{where}: label {value:g} is not a class number")
    return int(value)


class FolderFaceSet:
    """Images of an ``<identity>/<image>.jpg`` tree; the label is the identity's sorted position."""

    format = "folder"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        names = sorted(d.name for d in self.root.iterdir() if d.is_dir()) if self.root.is_dir() else []
        self.names: list[str] = []
        paths: list[Path] = []
        labels: list[int] = []
        for name in names:
            images = sorted(p for p in (self.root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if images:
                labels += [len(self.names)] * len(images)
                paths += images
                self.names.append(name)
        if not paths:
            raise FaceSetFormatError(f"{self.root}: no <identity>/<image>.jpg files")
        self.paths = paths
        self.labels = np.array(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def check(self) -> None:
        """Check that every image is a JPEG of an accepted size, reading its header only."""
        for path in self.paths:
            try:
                jpeg_size(path)
            except (ImageError, OSError) as exc:
                raise RecordIOError(f"{path}: {exc}") from exc

    @property
    def identities(self) -> int:
        """Number of identity folders holding at least one image."""
        return len(self.names)

    def jpeg(self, i: int) -> tuple[bytes, int]:
        """The JPEG bytes and the label of image ``i``."""
        return self.paths[i].read_bytes(), int(self.labels[i])

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        data, label = self.jpeg(i)
        return decode_jpeg(data, str(self.paths[i])), label


FaceSet = PackedFaceSet | FolderFaceSet


def open_face_set(path: str | Path) -> FaceSet:
    """The reader for what ``path`` holds: a ``.rec`` file or a directory with ``train.rec`` (packed),
    or a directory of identity folders with JPEGs (folder)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file() and path.suffix == ".rec":
        return PackedFaceSet(path)
    if path.is_dir() and (path / REC_NAME).is_file():
        return PackedFaceSet(path / REC_NAME, path / IDX_NAME)
    if path.is_dir():
        return FolderFaceSet(path)
    raise FaceSetFormatError(f"{path}: neither an insightface .rec/.idx pair nor an <identity>/<image>.jpg folder")


def face_set_info(path: str | Path) -> dict[str, object]:
    """``{"format", "identities", "images"}`` of the face set at ``path`` (see :func:`open_face_set`),
    after checking every image it counts (``check``)."""
    faces = open_face_set(path)
    faces.check()
    return {"format": faces.format, "identities": int(faces.identities), "images": len(faces)}


def check_same_faces(first: str | Path, second: str | Path) -> int:
    """Read two face sets back and check they hold the same images (JPEG bytes) with the same labels,
    in the same order; return the number of images. A difference is an error naming the first image.

    The synthetic set is written in both layouts at once, so this runs both readers on every image.
    """
    a, b = open_face_set(first), open_face_set(second)
    if len(a) != len(b) or a.identities != b.identities:
        raise ValueError(f"{first} holds {len(a)} images of {a.identities} identities, "
                         f"{second} {len(b)} of {b.identities}")
    for i in range(len(a)):
        if a.jpeg(i) != b.jpeg(i):
            raise ValueError(f"image {i} differs between {first} and {second} (JPEG bytes or label)")
    return len(a)
