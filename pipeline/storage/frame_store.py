"""The frame store: every subject's face crops in one HDF5 file, for fast random access.

Layout of ``frames.h5``::

    /subjects/<name>/jpeg          (N,) variable-length uint8: the crop's original JPEG bytes, empty if none
    /subjects/<name>/face_present  (N,) bool
    attrs: version, image_size (112), complete (True once every subject is written), config

Keeping the original JPEG bytes (no re-encoding) keeps the store close to the size of the source
crops and the pixels identical. This module owns the format and reads it (:class:`FrameStore`);
:mod:`pipeline.data.pack_frames` writes it.

Example (not run here: it needs the pipeline's packed frame store)::

    store = FrameStore("cache/frames/frames.h5")
    store.read("video5_left", [0, 7, 3]).shape
    # (3, 112, 112, 3)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from pipeline.jpeg import ImageError, read_jpeg

STORE_VERSION = 1
IMAGE_SIZE = 112
JPEG_DTYPE = h5py.vlen_dtype(np.uint8)


class CorruptCropError(ValueError):
    """A face crop is not a decodable JPEG; the message names the file, subject and frame."""


def decode_crop(data: np.ndarray | bytes, where: str = "crop") -> np.ndarray:
    """Decode JPEG bytes to uint8 (112, 112, 3) RGB, resizing only when the crop has another size
    (through :func:`pipeline.jpeg.read_jpeg`: JPEG only, the size checked before decoding)."""
    try:
        return read_jpeg(data, size=IMAGE_SIZE)
    except ImageError as exc:
        raise CorruptCropError(f"{where}: cannot decode the stored JPEG ({exc})") from exc


class FrameStore:
    """Read access to ``frames.h5``; the HDF5 file is opened lazily, once per process.

    Safe to hand to DataLoader workers and dask tasks: pickling drops the open handle and a forked
    process opens its own.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"frame store not found: {self.path} (run the pack-frames stage first)")
        self._fh: h5py.File | None = None
        self._pid: int | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        if not bool(self._file().attrs.get("complete", False)):
            raise ValueError(f"{self.path}: the frame store is incomplete (pack-frames did not finish)")

    def _file(self) -> h5py.File:
        if self._fh is None or self._pid != os.getpid():
            try:
                self._fh = h5py.File(self.path, "r")
            except OSError as exc:
                raise ValueError(f"{self.path}: not a readable HDF5 frame store ({exc})") from exc
            self._pid = os.getpid()
            self._datasets = {}
        return self._fh

    def _jpeg(self, name: str) -> h5py.Dataset:
        """The ``jpeg`` dataset of ``name``, looked up once per process (training reads it often)."""
        self._file()
        dataset = self._datasets.get(name)
        if dataset is None:
            dataset = self._datasets[name] = self._group(name)["jpeg"]
        return dataset

    def _group(self, name: str) -> h5py.Group:
        subjects = self._file()["subjects"]
        if name not in subjects:
            raise KeyError(f"{self.path}: no subject {name!r} in the frame store")
        return subjects[name]

    def names(self) -> list[str]:
        """Return the subject names in the store."""
        return list(self._file()["subjects"].keys())

    def n_frames(self, name: str) -> int:
        """Return the number of frames of subject ``name``."""
        return int(self._jpeg(name).shape[0])

    def face_present(self, name: str) -> np.ndarray:
        """Return subject ``name``'s (N,) bool face-present mask."""
        return self._group(name)["face_present"][()]

    def read_jpeg(self, name: str, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """Return the stored JPEG bytes (uint8 arrays, empty when no face) of frames ``indices``."""
        dataset = self._jpeg(name)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return []
        n = dataset.shape[0]
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"{self.path}: subject {name!r} has {n} frames; asked for frames {idx.min()}..{idx.max()}")
        # h5py reads a slice or an increasing index list; read each distinct frame once.
        unique, inverse = np.unique(idx, return_inverse=True)
        if unique[-1] - unique[0] + 1 == len(unique):
            data = dataset[int(unique[0]): int(unique[-1]) + 1]
        else:
            data = dataset[unique.tolist()]
        return [data[j] for j in inverse]

    def read(self, name: str, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Return frames ``indices`` of ``name`` as uint8 (k, 112, 112, 3) RGB, zeros where no face."""
        encoded = self.read_jpeg(name, indices)
        out = np.zeros((len(encoded), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        for k, (frame, data) in enumerate(zip(np.asarray(indices).reshape(-1), encoded)):
            if data.size:
                out[k] = decode_crop(data, where=f"{self.path}: subject {name!r} frame {int(frame)}")
        return out

    def close(self) -> None:
        """Close the HDF5 handle of this process (it reopens on the next read)."""
        if self._fh is not None and self._pid == os.getpid():
            self._fh.close()
        self._fh = None
        self._pid = None
        self._datasets = {}

    def __enter__(self) -> "FrameStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_fh": None, "_pid": None, "_datasets": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
