"""Writers of the two face-set layouts read by :mod:`pipeline.data.faces.sets`.

``PackedFaceSetWriter`` writes insightface's convention: record 0 is the header ``(a, b)``, images
are records ``1 .. a-1`` labelled with their identity, then one identity record per identity holding
the range of its images. Labels are float32 in the format, so record numbers stay below 2**24 (exact).

    >>> import tempfile
    >>> from pipeline.data.faces.sets import PackedFaceSet
    >>> root = Path(tempfile.mkdtemp())
    >>> jpeg = b"\\xff\\xd8\\xff" + bytes(20)
    >>> with PackedFaceSetWriter(root, [2, 1]) as writer:
    ...     for label in (0, 0, 1):
    ...         writer.add(label, jpeg)
    >>> faces = PackedFaceSet(root / "train.rec")
    >>> len(faces), faces.identities, faces.labels.tolist()
    (3, 2, [0, 0, 1])
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Sequence

import numpy as np

from pipeline.data.faces.recordio import IRHeader, RecordWriter, pack_record
from pipeline.data.faces.sets import IDX_NAME, REC_NAME

PROPERTY_NAME = "property"       # insightface's "classes,height,width" side file
MAX_RECORDS = 1 << 24            # float32 labels hold record numbers exactly up to here


class PackedFaceSetWriter:
    """Write ``root/train.rec``, ``train.idx`` and ``property``; images are added in identity order."""

    def __init__(self, root: str | Path, images_per_identity: Sequence[int], image_size: int = 112) -> None:
        self.root = Path(root)
        self.counts = [int(c) for c in images_per_identity]
        if not self.counts or min(self.counts) < 1:
            raise ValueError(f"{self.root}: every identity needs at least one image, got {self.counts[:10]}")
        self.first_identity = sum(self.counts) + 1
        if self.first_identity + len(self.counts) >= MAX_RECORDS:
            raise ValueError(f"{self.root}: {self.first_identity + len(self.counts)} records exceed the "
                             f"{MAX_RECORDS} a float32 label can number exactly")
        self.image_size = image_size
        self._records = RecordWriter(self.root / REC_NAME, self.root / IDX_NAME)
        self._next = 1

    def __enter__(self) -> "PackedFaceSetWriter":
        self._records.__enter__()
        header0 = IRHeader(2, np.array([self.first_identity, self.first_identity + len(self.counts)]), 0, 0)
        self._records.write(0, pack_record(header0, b""))
        self._starts = np.concatenate([[1], 1 + np.cumsum(self.counts)])
        return self

    def add(self, label: int, jpeg: bytes) -> None:
        """Append one image of identity ``label`` (identities in order, each with its announced count)."""
        key = self._next
        if not self._starts[label] <= key < self._starts[label + 1]:
            raise ValueError(f"{self.root / REC_NAME}: image record {key} given to identity {label}; images "
                             "must come in identity order with the announced counts")
        self._records.write(key, pack_record(IRHeader(0, float(label), key, 0), jpeg))
        self._next += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._records.__exit__(exc_type, exc, tb)   # discards the temporaries
            return
        if self._next != self.first_identity:
            error = ValueError(f"{self.root / REC_NAME}: {self._next - 1} images added, "
                               f"{self.first_identity - 1} announced")
            self._records.__exit__(ValueError, error, None)
            raise error
        for ordinal in range(len(self.counts)):
            key = self.first_identity + ordinal
            span = np.array([self._starts[ordinal], self._starts[ordinal + 1]])
            self._records.write(key, pack_record(IRHeader(2, span, key, 0), b""))
        self._records.__exit__(None, None, None)
        (self.root / PROPERTY_NAME).write_text(f"{len(self.counts)},{self.image_size},{self.image_size}\n")


class FolderFaceSetWriter:
    """Write ``root/<identity>/<image>.jpg``: identity folders zero-padded so sorted order is label order."""

    def __init__(self, root: str | Path, identities: int) -> None:
        self.root = Path(root)
        self.width = max(len(str(identities - 1)), 5)
        self._seen: dict[int, int] = {}

    def add(self, label: int, jpeg: bytes) -> None:
        """Write one image of identity ``label``."""
        folder = self.root / f"{label:0{self.width}d}"
        n = self._seen.get(label, 0)
        if n == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{n:04d}.jpg").write_bytes(jpeg)
        self._seen[label] = n + 1
