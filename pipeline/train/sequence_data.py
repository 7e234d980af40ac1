"""Aligned visual+audio windows for the sequence model, sliced from one array held in memory.

Every subject's arrays are read from the embedding stores once (``visual.zarr/<subject>``, and
``audio.zarr/<video>`` joined through the manifest's ``video`` field, so row ``t`` of both is video
frame ``t``), composed by :func:`~pipeline.inference.features.compose_features` at float16 and
copied into one flat (frames + 1, D) buffer; the extra last row is all zeros and unlabelled, and
padding points to it. A window is then a run of consecutive rows, and a batch of windows is a
single numpy fancy-index of that buffer: the same work as slicing any in-RAM array. Batches stay
float16 (half the bytes to copy and to send to a GPU); the trainer converts them on the device.

Memory: 2 bytes x (512 + 1) per frame and modality (and 22 bytes of labels: AU, expression,
valence-arousal), i.e. 2.8 M frames x two modalities ≈ 5.4 GiB
at Aff-Wild2 scale (:func:`estimate_memory_bytes`). A video's audio rows are repeated for each of
its subjects (``_left``/``_right``), which few videos have.

Example:
    >>> import numpy as np
    >>> cache = SequenceCache.from_arrays({"v1": {
    ...     "video": "v1", "visual": np.ones((40, 512), np.float16), "face_present": np.ones(40, bool),
    ...     "audio": np.zeros((40, 512), np.float16), "audio_present": np.zeros(40, bool),
    ...     "au": np.zeros((40, 12), np.int8), "expr": np.zeros(40, np.int8),
    ...     "va": np.zeros((40, 2), np.float32)}}, modalities="both")
    >>> windows = cache.windows(["v1"], window=30, stride=10)
    >>> batch = cache.batch(windows, window=30)
    >>> batch.features.shape, batch.features.dtype, batch.padding.shape, batch.au.shape, batch.va.shape
    ((2, 30, 1026), dtype('float16'), (2, 30), (2, 30, 12), (2, 30, 2))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from pipeline.data.manifest import Manifest, SubjectRecord
from pipeline.inference.features import compose_features, feature_dim
from pipeline.inference.sequence import window_starts
from pipeline.labels import EMBEDDING_DIM, NUM_AUS, NUM_VA, UNLABELLED
from pipeline.storage.embedding_store import EmbeddingStore
from pipeline.train.va_task import read_va_labels, va_labelled

FEATURE_DTYPE = np.float16   # the stores' precision, kept in RAM
VA_DTYPE = np.float32        # valence-arousal labels: NaN marks an unlabelled frame
AUDIO_SOURCE = "affwild2"    # the manifest source whose videos have audio tracks


@dataclass(frozen=True)
class WindowBatch:
    """A batch of windows: features, padding mask and per-frame labels (numpy)."""

    features: np.ndarray  # (B, L, D) float16
    padding: np.ndarray   # (B, L) bool, True = padded frame past the subject's end
    au: np.ndarray        # (B, L, 12) int8, -1 = unlabelled (padding included)
    expr: np.ndarray      # (B, L) int8, -1 = unlabelled (padding included)
    va: np.ndarray        # (B, L, 2) float32 valence, arousal; NaN = unlabelled (padding included)


def estimate_memory_bytes(n_frames: int, modalities: str, dim: int = EMBEDDING_DIM) -> int:
    """Bytes the in-memory cache of ``n_frames`` subject frames needs (features, labels, face flags)."""
    per_frame = (feature_dim(modalities, dim) * np.dtype(FEATURE_DTYPE).itemsize + NUM_AUS + 2
                 + NUM_VA * np.dtype(VA_DTYPE).itemsize)
    return int((n_frames + 1) * per_frame)


def estimate_manifest_memory(manifest: Manifest, subjects: Iterable[str], modalities: str) -> int:
    """:func:`estimate_memory_bytes` for ``subjects`` of ``manifest``."""
    return estimate_memory_bytes(sum(manifest.by_name(name).n_frames for name in subjects), modalities)


class SequenceCache:
    """Composed features and labels of every loaded subject in flat buffers, and window slicing."""

    def __init__(self, modalities: str, names: list[str], offsets: np.ndarray, features: np.ndarray,
                 au: np.ndarray, expr: np.ndarray, face: np.ndarray, va: np.ndarray) -> None:
        total = int(offsets[-1])
        if (features.shape[0] != total + 1 or au.shape != (total + 1, NUM_AUS) or expr.shape != (total + 1,)
                or face.shape != (total + 1,) or va.shape != (total + 1, NUM_VA)):
            raise ValueError(
                f"cache buffers need {total + 1} rows (frames + the pad row); got features {features.shape}, "
                f"au {au.shape}, expr {expr.shape}, face {face.shape}, va {va.shape}"
            )
        self.modalities = modalities
        self.names = names
        self.index = {name: i for i, name in enumerate(names)}
        self.offsets = offsets    # (S+1,) first row of each subject; the last entry is the pad row
        self.features = features  # (T+1, D) float16, last row zeros
        self.au = au              # (T+1, 12) int8, last row -1
        self.expr = expr          # (T+1,) int8, last row -1
        self.face = face          # (T+1,) bool: the frame has a face crop; last row False
        self.va = va              # (T+1, 2) float32 valence, arousal; NaN unlabelled, last row NaN

    @property
    def pad_row(self) -> int:
        """The all-zero, unlabelled row that padding points to."""
        return int(self.offsets[-1])

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers."""
        return int(self.features.nbytes + self.au.nbytes + self.expr.nbytes + self.face.nbytes + self.va.nbytes
                   + self.offsets.nbytes)

    def n_frames(self, name: str) -> int:
        """Frame count of subject ``name``."""
        i = self._position(name)
        return int(self.offsets[i + 1] - self.offsets[i])

    def _position(self, name: str) -> int:
        if name not in self.index:
            raise KeyError(f"subject {name!r} is not loaded in the sequence cache")
        return self.index[name]

    @classmethod
    def from_arrays(cls, subjects: Mapping[str, Mapping[str, Any]], modalities: str) -> SequenceCache:
        """Build from per-subject dicts with ``visual, face_present, audio, audio_present, au, expr``
        and optionally ``va`` ((N, 2), NaN unlabelled; absent: every frame VA-unlabelled).

        ``audio``/``audio_present`` may be ``None`` for a subject without an audio track.
        """
        builder = _Builder(modalities, sum(len(arrays["expr"]) for arrays in subjects.values()))
        for name, arrays in subjects.items():
            builder.add(name, arrays, arrays.get("audio"), arrays.get("audio_present"))
        return builder.finish()

    def windows(self, names: Iterable[str], window: int, stride: int, task: str | None = None) -> np.ndarray:
        """Windows ``(subject_index, start)`` (K, 2) int64 over ``names``.

        With ``task`` (``"au"``/``"expr"``/``"va"``) only windows holding at least one label of that task.
        """
        rows = []
        for name in names:
            i = self._position(name)
            starts = window_starts(self.n_frames(name), window, stride)
            pairs = np.stack([np.full(len(starts), i), starts], axis=1)
            if task is not None:
                pairs = pairs[self._labelled(pairs, window, task)]
            rows.append(pairs)
        return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 2), np.int64)

    def _labelled(self, pairs: np.ndarray, window: int, task: str) -> np.ndarray:
        rows = self.rows(pairs, window)
        if task == "au":
            return (self.au[rows] != UNLABELLED).all(axis=-1).any(axis=1)
        if task == "expr":
            return (self.expr[rows] != UNLABELLED).any(axis=1)
        if task == "va":
            return va_labelled(self.va[rows]).any(axis=1)
        raise ValueError(f"task must be 'au', 'expr' or 'va', got {task!r}")

    def rows(self, pairs: np.ndarray, window: int) -> np.ndarray:
        """Buffer rows (K, window) of windows ``pairs``; frames past a subject's end map to the pad row."""
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        first = self.offsets[pairs[:, 0]] + pairs[:, 1]
        end = self.offsets[pairs[:, 0] + 1]
        rows = first[:, None] + np.arange(window)
        return np.where(rows < end[:, None], rows, self.pad_row)

    def batch(self, pairs: np.ndarray, window: int, out: np.ndarray | None = None) -> WindowBatch:
        """Slice windows ``pairs`` (K, 2) of ``window`` frames: features, padding mask and labels.

        ``out`` (at least (K, window, D) float16) receives the features instead of a new array.
        """
        rows = self.rows(pairs, window)
        if out is None:
            features = self.features[rows]
        else:
            # mode="clip" (rows are in range anyway) lets numpy write into ``out`` without a copy.
            features = np.take(self.features, rows, axis=0, out=out[: len(rows)], mode="clip")
        return WindowBatch(features=features, padding=rows == self.pad_row, au=self.au[rows], expr=self.expr[rows],
                           va=self.va[rows])

    def subject_rows(self, name: str) -> slice:
        """Buffer rows of every frame of ``name``."""
        i = self._position(name)
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def subject_features(self, name: str) -> np.ndarray:
        """Whole-video composed features (N, D) float32 of subject ``name``."""
        return self.features[self.subject_rows(name)].astype(np.float32)

    def subject_labels(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(au (N, 12), expr (N,)) int8 labels of subject ``name``."""
        rows = self.subject_rows(name)
        return self.au[rows], self.expr[rows]

    def subject_va(self, name: str) -> np.ndarray:
        """(N, 2) float32 valence-arousal labels of subject ``name`` (NaN unlabelled)."""
        return self.va[self.subject_rows(name)]

    def subject_faces(self, name: str) -> np.ndarray:
        """(N,) bool: the frames of subject ``name`` that have a face crop."""
        return self.face[self.subject_rows(name)]


class _Builder:
    """Fills preallocated buffers subject by subject (no per-subject copies kept around)."""

    def __init__(self, modalities: str, n_frames: int) -> None:
        self.modalities = modalities
        # One spare zero, unlabelled row at the end: what padding points to.
        self.features = np.zeros((n_frames + 1, feature_dim(modalities)), FEATURE_DTYPE)
        self.au = np.full((n_frames + 1, NUM_AUS), UNLABELLED, np.int8)
        self.expr = np.full(n_frames + 1, UNLABELLED, np.int8)
        self.face = np.zeros(n_frames + 1, bool)
        self.va = np.full((n_frames + 1, NUM_VA), np.nan, VA_DTYPE)
        self.capacity = n_frames
        self.names: list[str] = []
        self.offsets = [0]

    def add(
        self, name: str, arrays: Mapping[str, Any], audio: np.ndarray | None, audio_present: np.ndarray | None
    ) -> None:
        """Append subject ``name`` (``audio``/``audio_present`` ``None``: no audio track, all zero)."""
        n = len(arrays["expr"])
        start = self.offsets[-1]
        if start + n > self.capacity:
            raise ValueError(f"subject {name!r}: more frames than the {self.capacity} allocated")
        for key in ("au", "face_present") + (("va",) if arrays.get("va") is not None else ()):
            _check_length(name, key, arrays[key], n)
        if audio_present is None:
            audio, audio_present = np.zeros((n, EMBEDDING_DIM), FEATURE_DTYPE), np.zeros(n, bool)
        if len(audio_present) != n:
            raise ValueError(f"subject {name!r} has {n} frames but its video's audio has {len(audio_present)}")
        if audio is None:  # flags only: the audio embedding is not part of these features
            audio = np.zeros((n, EMBEDDING_DIM), FEATURE_DTYPE)
        visual = arrays.get("visual")
        if visual is None:
            visual = np.zeros((n, EMBEDDING_DIM), FEATURE_DTYPE)
        try:
            features = compose_features(visual, audio, arrays["face_present"], audio_present, self.modalities,
                                        dtype=FEATURE_DTYPE)
        except ValueError as exc:
            raise ValueError(f"subject {name!r}: {exc}") from exc
        rows = slice(start, start + n)
        self.features[rows] = features
        self.au[rows] = arrays["au"]
        self.expr[rows] = arrays["expr"]
        self.face[rows] = arrays["face_present"]
        if arrays.get("va") is not None:
            self.va[rows] = arrays["va"]
        self.names.append(name)
        self.offsets.append(start + n)

    def finish(self) -> SequenceCache:
        """The cache over the subjects added so far."""
        total = self.offsets[-1]
        if total != self.capacity:
            keep = np.r_[0:total, self.capacity]   # unused rows out, the zero row last
            self.features, self.au, self.expr = self.features[keep], self.au[keep], self.expr[keep]
            self.face, self.va = self.face[keep], self.va[keep]
        return SequenceCache(self.modalities, self.names, np.asarray(self.offsets, np.int64),
                             self.features, self.au, self.expr, self.face, self.va)


def _check_length(name: str, what: str, array: Any, n: int) -> None:
    if len(array) != n:
        raise ValueError(f"subject {name!r}: {what} has {len(array)} rows, expected {n} (the subject's frames)")


def load_sequence_cache(
    manifest: Manifest,
    visual_path: str | Path,
    audio_path: str | Path,
    subjects: Iterable[str],
    modalities: str,
) -> SequenceCache:
    """Read ``subjects`` from the stores into memory once, aligned by video through ``manifest``."""
    names = list(dict.fromkeys(subjects))
    visual_store = EmbeddingStore.open_read(visual_path)
    audio_store = EmbeddingStore.open_read(audio_path)
    complete_visual, complete_audio = set(visual_store.keys()), set(audio_store.keys())
    missing = [name for name in names if name not in complete_visual]
    if missing:
        raise ValueError(f"{visual_path}: no complete entry for subject(s) {missing[:10]} (re-run embed-visual)")
    records = [manifest.by_name(name) for name in names]
    builder = _Builder(modalities, sum(r.n_frames for r in records))
    use_visual, use_audio = modalities in ("visual", "both"), modalities in ("audio", "both")
    visual_names = ("face_present", "au", "expr") + (("embedding",) if use_visual else ())
    audio_names = ("audio_present",) + (("embedding",) if use_audio else ())
    last_video: tuple[str, dict[str, np.ndarray] | None] | None = None  # subjects of a video are adjacent
    for record in records:
        arrays = visual_store.read(record.name, visual_names)
        if len(arrays["expr"]) != record.n_frames:
            raise ValueError(
                f"{visual_path}: subject {record.name!r} has {len(arrays['expr'])} frames, "
                f"the manifest says {record.n_frames}"
            )
        arrays["visual"] = arrays.pop("embedding", None)
        arrays["va"] = read_va_labels(visual_store, record.name, record.n_frames)
        if last_video is None or last_video[0] != record.video:
            last_video = (record.video, _read_audio(audio_store, audio_path, record, complete_audio, audio_names))
        audio = last_video[1] or {}
        builder.add(record.name, arrays, audio.get("embedding"), audio.get("audio_present"))
    return builder.finish()


def _read_audio(
    store: EmbeddingStore, path: str | Path, record: SubjectRecord, complete: set[str], names: tuple[str, ...]
) -> dict[str, np.ndarray] | None:
    """The audio arrays of ``record``'s video; ``None`` for sources without audio tracks."""
    if record.video in complete:
        return store.read(record.video, names)
    if record.source == AUDIO_SOURCE:
        raise ValueError(f"{path}: no complete entry for video {record.video!r} (re-run embed-audio)")
    return None  # image-sequence sources (BP4D) have no audio track


class WindowLoader:
    """Re-iterable batches of windows: reshuffled per epoch with ``seed + epoch`` (see ``set_epoch``).

    ``limit`` caps the windows of one iteration (a fresh random subset each time; ``None``: all).

    The features of yielded batches live in a ring of ``buffers`` preallocated arrays, so a batch's
    ``features`` is overwritten ``buffers`` batches later (copy it to keep it longer). Reusing the
    arrays saves a fresh multi-megabyte allocation per batch, which the C allocator otherwise
    returns to the system and faults back in each time (it halved the loader's throughput).
    """

    def __init__(
        self, cache: SequenceCache, windows: np.ndarray, window: int, batch_size: int,
        shuffle: bool = True, seed: int = 0, buffers: int = 3, limit: int | None = None,
    ) -> None:
        if batch_size < 1 or buffers < 1:
            raise ValueError(f"batch_size and buffers must be >= 1, got {batch_size} and {buffers}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        self.cache, self.windows, self.window, self.limit = cache, windows, window, limit
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0
        self._iterations = 0
        self._buffers = [np.empty((batch_size, window, cache.features.shape[1]), cache.features.dtype)
                         for _ in range(buffers)]
        self._next_buffer = 0

    def set_epoch(self, epoch: int) -> None:
        """Fix the shuffling order of the next iterations to ``epoch``."""
        self.epoch = epoch
        self._iterations = 0

    def __len__(self) -> int:
        return -(-self._count() // self.batch_size)

    def _count(self) -> int:
        """Windows per iteration: all, or ``limit`` of them."""
        return len(self.windows) if self.limit is None else min(len(self.windows), self.limit)

    def __iter__(self) -> Iterator[WindowBatch]:
        order = np.arange(len(self.windows))
        if self.shuffle:
            # Each re-iteration within an epoch (the shorter task's loader cycles) gets its own order.
            rng = np.random.default_rng([self.seed, self.epoch, self._iterations])
            rng.shuffle(order)
        self._iterations += 1
        order = order[:self._count()]
        for first in range(0, len(order), self.batch_size):
            out = self._buffers[self._next_buffer]
            self._next_buffer = (self._next_buffer + 1) % len(self._buffers)
            yield self.cache.batch(self.windows[order[first:first + self.batch_size]], self.window, out=out)
