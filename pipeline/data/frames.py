"""The frame store: every subject's face crops in one HDF5 file, for fast random access.

Layout of ``frames.h5``::

    /subjects/<name>/jpeg          (N,) variable-length uint8: the crop's original JPEG bytes, empty if none
    /subjects/<name>/face_present  (N,) bool
    attrs: version, image_size (112), complete (True once every subject is written), config

Keeping the original JPEG bytes (no re-encoding) keeps the store close to the size of the source
crops and the pixels identical. ``pack_frames`` streams one chunk of crops at a time, checks that
each decodes, and works in a partial file that is renamed onto the output only when complete; with
a ``work_dir`` the partial file survives a failure and the next run resumes after the last complete
subject.

Example (not run here: it needs the pipeline's prepared manifest and crops)::

    stats = pack_frames(read_manifest("cache/prepared/manifest.json"), "cache/frames/frames.h5",
                        PackConfig())
    store = FrameStore("cache/frames/frames.h5")
    store.read("video5_left", [0, 7, 3]).shape
    # (3, 112, 112, 3)
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import h5py
import numpy as np
from h5py import h5s, h5t
from PIL import Image
from tqdm import tqdm

from pipeline import config
from pipeline.data.crops import crop_paths
from pipeline.data.manifest import Manifest, SubjectRecord
from pipeline.fsio import publish

log = logging.getLogger(__name__)

STORE_VERSION = 1
IMAGE_SIZE = 112
_JPEG_DTYPE = h5py.vlen_dtype(np.uint8)
_EMPTY = np.zeros(0, dtype=np.uint8)
# Exceptions Pillow raises on bytes that are not a whole, valid image.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class PackConfig:
    """The ``pack_frames`` params section."""

    verify: Literal["decode", "header", "none"] = "decode"  # how each JPEG is checked before storing
    on_corrupt: Literal["error", "drop"] = "error"  # "drop" stores the frame as face-absent and counts it
    chunk_frames: int = 256  # crops read per batch; also the HDF5 chunk length

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise config.ConfigError(f"pack_frames.chunk_frames must be >= 1, got {self.chunk_frames}")


class CorruptCropError(ValueError):
    """A face crop is not a decodable JPEG; the message names the file, subject and frame."""


@dataclass(frozen=True)
class _Crop:
    data: np.ndarray  # uint8 JPEG bytes, empty when absent
    present: bool
    dropped: bool = False
    resized: bool = False  # not 112x112 (only known when verified)


def pack_frames(
    manifest: Manifest,
    out_path: str | Path,
    cfg: PackConfig,
    work_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Pack every manifest subject's crops into ``out_path``; return size and speed statistics."""
    out_path = Path(out_path)
    started = time.perf_counter()
    resumable = work_dir is not None
    partial = Path(work_dir) / f"{out_path.name}.partial" if resumable else out_path.with_name(
        f".{out_path.name}.partial-{os.getpid()}"
    )
    fingerprint = json.dumps(config.to_dict(cfg), sort_keys=True)
    fh = _open_partial(partial, fingerprint, resumable)
    totals = {"frames": 0, "faces": 0, "source_bytes": 0, "dropped": 0, "resized": 0, "resumed_subjects": 0}
    finished = False
    try:
        subjects = fh.require_group("subjects")
        wanted = set(manifest.names())
        for stale in [name for name in subjects if name not in wanted]:
            del subjects[stale]
        total = sum(r.n_frames for r in manifest.subjects)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(
            total=total, desc="pack-frames", unit="frame", disable=not progress
        ) as bar:
            for record in manifest.subjects:
                if _is_done(subjects, record):
                    totals["resumed_subjects"] += 1
                    bar.update(record.n_frames)
                else:
                    if record.name in subjects:
                        del subjects[record.name]
                    _pack_subject(subjects, record, cfg, pool, bar)
                    fh.flush()
                attrs = subjects[record.name].attrs
                for key in ("frames", "faces", "source_bytes", "dropped", "resized"):
                    totals[key] += int(attrs[key])
        fh.attrs["n_subjects"] = len(manifest.subjects)
        fh.attrs["complete"] = True
        finished = True
    finally:
        fh.close()
        if not finished and not resumable:
            partial.unlink(missing_ok=True)
    _publish(partial, out_path)
    seconds = time.perf_counter() - started
    store_bytes = out_path.stat().st_size
    return {
        "subjects": len(manifest.subjects),
        **totals,
        "store_bytes": store_bytes,
        "ratio": store_bytes / totals["source_bytes"] if totals["source_bytes"] else None,
        "seconds": seconds,
        "frames_per_s": totals["frames"] / seconds if seconds > 0 else None,
    }


def _open_partial(partial: Path, fingerprint: str, resumable: bool) -> h5py.File:
    """Open the partial store to resume (same config) or start a fresh one."""
    if partial.exists():
        if resumable:
            try:
                fh = h5py.File(partial, "a")
            except OSError as exc:
                log.warning("%s: unreadable partial store (%s); starting over", partial, exc)
            else:
                if fh.attrs.get("config") == fingerprint and fh.attrs.get("version") == STORE_VERSION:
                    log.info("%s: resuming a partial store", partial)
                    return fh
                fh.close()
        partial.unlink()
    partial.parent.mkdir(parents=True, exist_ok=True)
    fh = h5py.File(partial, "w")
    fh.attrs["version"] = STORE_VERSION
    fh.attrs["image_size"] = IMAGE_SIZE
    fh.attrs["config"] = fingerprint
    fh.attrs["complete"] = False
    return fh


def _is_done(subjects: h5py.Group, record: SubjectRecord) -> bool:
    """Whether ``record`` was completely packed by an earlier run from the same crops."""
    if record.name not in subjects:
        return False
    attrs = subjects[record.name].attrs
    return (
        bool(attrs.get("complete", False))
        and int(attrs.get("frames", -1)) == record.n_frames
        and attrs.get("crops_dir") == (record.crops_dir or "")
    )


def _pack_subject(
    subjects: h5py.Group, record: SubjectRecord, cfg: PackConfig, pool: Executor, bar: tqdm
) -> None:
    """Write one subject's crops chunk by chunk; mark its group complete last."""
    paths = crop_paths(record)
    n = len(paths)
    group = subjects.create_group(record.name)
    jpeg = group.create_dataset(
        "jpeg", shape=(n,), dtype=_JPEG_DTYPE, chunks=(min(n, cfg.chunk_frames),) if n else None
    )
    face = np.zeros(n, dtype=bool)
    source_bytes = dropped = resized = 0
    for start in range(0, n, cfg.chunk_frames):
        stop = min(n, start + cfg.chunk_frames)
        crops = list(pool.map(lambda i: _load_crop(paths[i], i, record.name, cfg), range(start, stop)))
        for k, crop in enumerate(crops):
            face[start + k] = crop.present
            source_bytes += crop.data.size
            dropped += crop.dropped
            resized += crop.resized
        _write_vlen(jpeg, start, [crop.data for crop in crops])
        bar.update(stop - start)
    group.create_dataset("face_present", data=face)
    group.attrs.update({
        "frames": n, "faces": int(face.sum()), "source_bytes": source_bytes, "dropped": dropped,
        "resized": resized, "crops_dir": record.crops_dir or "", "source": record.source,
    })
    group.attrs["complete"] = True


def _write_vlen(dataset: h5py.Dataset, start: int, arrays: list[np.ndarray]) -> None:
    """Write uint8 arrays into ``dataset[start:start+len(arrays)]``.

    Goes through the low-level API: ``dataset[a:b] = object_array`` turns equal-length arrays into
    a 2-D block and fails.
    """
    batch = np.empty(len(arrays), dtype=object)
    for k, array in enumerate(arrays):
        batch[k] = array
    memory = h5s.create_simple((len(arrays),))
    file_space = dataset.id.get_space()
    file_space.select_hyperslab((start,), (len(arrays),))
    dataset.id.write(memory, file_space, batch, mtype=h5t.py_create(_JPEG_DTYPE))


def _load_crop(path: Path, frame: int, name: str, cfg: PackConfig) -> _Crop:
    """Read one crop's bytes and check them as ``cfg.verify`` says."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _Crop(_EMPTY, present=False)
    resized = False
    if cfg.verify != "none":
        try:
            size = _check_jpeg(data, decode=cfg.verify == "decode")
        except _DECODE_ERRORS as exc:
            message = f"{path}: frame {frame} of subject {name!r}: corrupt JPEG crop ({exc})"
            if cfg.on_corrupt == "error":
                raise CorruptCropError(message) from exc
            log.warning("dropped %s", message)
            return _Crop(_EMPTY, present=False, dropped=True)
        resized = size != (IMAGE_SIZE, IMAGE_SIZE)
    return _Crop(np.frombuffer(data, dtype=np.uint8), present=True, resized=resized)


def _check_jpeg(data: bytes, decode: bool) -> tuple[int, int]:
    """Return the image size of JPEG ``data``; raise a Pillow/ValueError when it is not a valid JPEG."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format != "JPEG":
            raise ValueError(f"the file is {image.format}, not JPEG")
        if decode:
            image.load()
        return image.size


def _publish(partial: Path, out_path: Path) -> None:
    """Rename the finished partial store onto ``out_path`` (copying first across filesystems)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        publish(partial, out_path)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        staged = out_path.with_name(f".{out_path.name}.staged-{os.getpid()}")
        shutil.copyfile(partial, staged)
        publish(staged, out_path)
        partial.unlink()


def decode_crop(data: np.ndarray | bytes, where: str = "crop") -> np.ndarray:
    """Decode JPEG bytes to uint8 (112, 112, 3) RGB, resizing only when the crop has another size."""
    try:
        with Image.open(io.BytesIO(bytes(data))) as image:
            rgb = image.convert("RGB")
    except _DECODE_ERRORS as exc:
        raise CorruptCropError(f"{where}: cannot decode the stored JPEG ({exc})") from exc
    if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
        rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


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
