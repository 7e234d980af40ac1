"""Per-frame embedding stores: one Zarr v3 group per video or subject, with a completion marker.

Layout of a store directory (e.g. ``cache/embeddings/visual.zarr``)::

    zarr.json                 root attrs: fingerprint, model, params, dim, chunk_frames
    <key>/zarr.json           entry attrs (fps, n_frames, ...) and ``complete: true``, written last
    <key>/<array>/...         arrays of shape (frames, ...), chunked along time

An entry counts only once its marker is set. The marker lives in the entry's own ``zarr.json``, which
the local Zarr store replaces atomically (temporary file + rename), and it is written after every
array chunk; an entry is discarded by deleting that file first. So a process killed at any moment
leaves each entry either complete or visibly incomplete, never half-written but marked.

A store belongs to one producer: its root ``fingerprint`` hashes the model file and the parameters
that shape the values (:func:`fingerprint`). :meth:`EmbeddingStore.open_for_write` rebuilds a store
whose fingerprint differs instead of mixing entries of two models.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "demo.zarr"
    >>> store = EmbeddingStore.open_for_write(path, "f" * 64, {"model": "demo", "params": {}, "dim": 4},
    ...                                       chunk_frames=8)
    >>> store.write("video1", {"embedding": np.ones((10, 4), np.float16)}, {"fps": 30.0})
    >>> EmbeddingStore.open_read(path).read("video1")["embedding"].shape
    (10, 4)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import zarr
import zarr.codecs

from pipeline.fsio import file_sha256

log = logging.getLogger(__name__)

MARKER = "complete"
META_FILE = "zarr.json"
DEFAULT_CHUNK_FRAMES = 1024
ROOT_ATTRS = ("fingerprint", "model", "params", "dim", "chunk_frames")
# Float16 embeddings barely compress; zstd at a low level costs little and still helps the masks,
# the labels and the zero rows of frames without a face.
_COMPRESSOR = zarr.codecs.ZstdCodec(level=3)


class StoreError(ValueError):
    """An embedding store is missing, foreign or was made by another producer."""


def fingerprint(model_path: str | Path, params: Mapping[str, Any]) -> str:
    """Return the sha256 (hex) of the model file's bytes followed by ``params`` as canonical JSON."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"model file not found: {model_path}")
    return file_sha256(model_path, json.dumps(params, sort_keys=True, separators=(",", ":")).encode())


def as_float16(values: np.ndarray, where: str) -> np.ndarray:
    """Cast embeddings to float16, refusing values that are not finite there (|x| > 65504 or NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, with the culprit named
        half = np.asarray(values).astype(np.float16)
    if not np.isfinite(half).all():
        peak = float(np.nanmax(np.abs(np.asarray(values, dtype=np.float64)))) if np.size(values) else 0.0
        raise ValueError(f"{where}: embeddings are NaN or overflow float16 (largest |value| {peak:.3g})")
    return half


class EmbeddingStore:
    """A Zarr v3 directory of per-key groups of frame-aligned arrays (see the module docstring)."""

    def __init__(self, path: Path, root: zarr.Group) -> None:
        self.path = path
        self._root = root
        self.attrs: dict[str, Any] = dict(root.attrs)
        missing = [name for name in ROOT_ATTRS if name not in self.attrs]
        if missing:
            raise StoreError(f"{path}: not an embedding store (root attrs lack {missing})")

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open_for_write(
        cls,
        path: str | Path,
        fingerprint: str,
        attrs: Mapping[str, Any],
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        replace_foreign: bool = False,
    ) -> EmbeddingStore:
        """Open the store at ``path`` to add entries, creating it, or rebuilding it when its
        fingerprint is not ``fingerprint``.

        ``attrs`` must hold ``model``, ``params`` and ``dim``; they are written with the fingerprint
        and ``chunk_frames`` as the root attrs of a new store. Something at ``path`` that is neither
        empty nor an embedding store is refused rather than wiped, unless ``replace_foreign``: a
        caller that owns ``path`` (a stage's locked work directory) sets it, so the leftover of an
        interrupted run is rebuilt instead of blocking every later run.
        """
        path = Path(path)
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        missing = [name for name in ("model", "params", "dim") if name not in attrs]
        if missing:
            raise ValueError(f"store attrs for {path} lack {missing}")
        _remove_stale(path)
        current = _read_meta(path)
        if current is not None and "fingerprint" in current:
            if current["fingerprint"] == fingerprint and current.get("chunk_frames") == chunk_frames:
                return cls(path, zarr.open_group(str(path), mode="r+"))
            log.warning(
                "%s: made by fingerprint %.12s with chunk_frames %s, not %.12s with %s; rebuilding it",
                path, current["fingerprint"], current.get("chunk_frames"), fingerprint, chunk_frames,
            )
            _wipe(path)
        elif path.exists() and (not path.is_dir() or any(path.iterdir())):
            if not replace_foreign:
                raise StoreError(f"{path}: exists and is not an embedding store; refusing to overwrite it")
            log.warning("%s: not an embedding store (left by an interrupted run); rebuilding it", path)
            _wipe(path)
        root_attrs = {**dict(attrs), "fingerprint": fingerprint, "chunk_frames": chunk_frames}
        root = zarr.create_group(store=str(path), attributes=root_attrs, zarr_format=3, overwrite=True)
        return cls(path, root)

    @classmethod
    def open_append(cls, path: str | Path, fingerprint: str) -> EmbeddingStore:
        """Open an existing store to add entries, checking it is still the one ``fingerprint`` made.

        Used by parallel tasks: only the coordinating process creates or rebuilds a store.
        """
        path = Path(path)
        current = _read_meta(path)
        if current is None:
            raise StoreError(f"{path}: no embedding store here (open it with open_for_write first)")
        if current.get("fingerprint") != fingerprint:
            raise StoreError(
                f"{path}: fingerprint {str(current.get('fingerprint'))[:12]} is not the expected "
                f"{fingerprint[:12]}; the store was rebuilt by another run"
            )
        return cls(path, zarr.open_group(str(path), mode="r+"))

    @classmethod
    def open_read(cls, path: str | Path) -> EmbeddingStore:
        """Open an existing store read-only."""
        path = Path(path)
        if _read_meta(path) is None:
            raise FileNotFoundError(f"embedding store not found or unreadable: {path}")
        return cls(path, zarr.open_group(str(path), mode="r"))

    # -- root properties -------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """The producer's fingerprint recorded in the root attrs."""
        return str(self.attrs["fingerprint"])

    @property
    def chunk_frames(self) -> int:
        """Frames per chunk along the time axis of every array."""
        return int(self.attrs["chunk_frames"])

    # -- entries ---------------------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Return the keys of complete entries, sorted."""
        return [name for name in self._entry_names() if self.is_complete(name)]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.is_complete(key)

    def is_complete(self, key: str) -> bool:
        """Whether ``key`` has an entry whose completion marker is set."""
        meta = _read_meta(self.path / key)
        return meta is not None and meta.get(MARKER) is True

    def write(self, key: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> None:
        """Write (or replace) entry ``key``: every array, then ``attrs``, then the marker.

        Arrays share their first (time) axis and are chunked along it; they keep their dtypes.
        """
        _check_key(key)
        if not arrays:
            raise ValueError(f"{self.path}: entry {key!r} has no arrays")
        if MARKER in attrs:
            raise ValueError(f"{self.path}: entry attrs may not set {MARKER!r} themselves")
        lengths = {name: np.shape(value)[0] if np.ndim(value) else None for name, value in arrays.items()}
        if None in lengths.values() or len(set(lengths.values())) != 1:
            raise ValueError(f"{self.path}: arrays of entry {key!r} disagree on the frame axis: {lengths}")
        self.discard(key)
        group = self._root.create_group(key, attributes=dict(attrs))
        for name, value in arrays.items():
            value = np.asarray(value)
            group.create_array(
                name,
                shape=value.shape,
                dtype=value.dtype,
                chunks=(self.chunk_frames, *value.shape[1:]),
                compressors=_COMPRESSOR,
                dimension_names=("frame", *(f"dim_{i}" for i in range(1, value.ndim))),
            )[...] = value
        group.attrs[MARKER] = True  # last: the entry's zarr.json is replaced atomically

    def discard(self, key: str) -> None:
        """Delete entry ``key`` if present; its marker goes first so no reader sees it complete."""
        _check_key(key)
        entry = self.path / key
        if not entry.exists():
            return
        (entry / META_FILE).unlink(missing_ok=True)
        shutil.rmtree(entry)

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Discard every entry, complete or not, whose key is not in ``keep``; return their keys."""
        keep = set(keep)
        removed = [name for name in self._entry_names() if name not in keep]
        for key in removed:
            self.discard(key)
        return removed

    def entry_attrs(self, key: str) -> dict[str, Any]:
        """Return the attrs of complete entry ``key`` (without the marker)."""
        meta = _read_meta(self.path / key)
        if meta is None or meta.get(MARKER) is not True:
            raise KeyError(f"{self.path}: no complete entry {key!r}")
        return {k: v for k, v in meta.items() if k != MARKER}

    def _entry_names(self) -> list[str]:
        """Names of all entry directories, complete or not."""
        return sorted(p.name for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))

    def read(self, key: str, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Read the arrays (all, or ``names``) of complete entry ``key`` into memory."""
        if not self.is_complete(key):
            raise KeyError(f"{self.path}: no complete entry {key!r}")
        group = zarr.open_group(str(self.path), path=key, mode="r")
        available = sorted(group.array_keys())
        wanted = available if names is None else list(names)
        unknown = [name for name in wanted if name not in available]
        if unknown:
            raise KeyError(f"{self.path}/{key}: no array(s) {unknown}; available: {available}")
        return {name: group[name][...] for name in wanted}


def _check_key(key: str) -> None:
    if not key or "/" in key or key.startswith((".", "__")) or key != key.strip():
        raise ValueError(f"invalid store key {key!r}: must be a non-empty name without '/' or a leading '.'/'__'")


def _read_meta(node: Path) -> dict[str, Any] | None:
    """Return the attributes of the Zarr v3 node at ``node``, or None when absent or unreadable."""
    try:
        meta = json.loads((node / META_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        return None
    attrs = meta.get("attributes", {})
    return attrs if isinstance(attrs, dict) else None


def _wipe(path: Path) -> None:
    """Remove a store: rename it aside first so a kill mid-delete leaves no half-store behind."""
    stale = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex[:8]}")
    os.replace(path, stale)
    if stale.is_dir():
        shutil.rmtree(stale)
    else:
        stale.unlink()


def _remove_stale(path: Path) -> None:
    """Finish wipes that a killed process left behind."""
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{path.name}.stale-*"):
            shutil.rmtree(stale)
