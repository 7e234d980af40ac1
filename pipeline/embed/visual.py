"""Visual embeddings: every subject's face crops through ``visual.onnx`` into ``visual.zarr``.

One dask task per subject reads its crops from the frame store in batches, runs the exported model
with onnxruntime and writes the subject's entry (see :mod:`pipeline.storage.embedding_store`)::

    visual.zarr/<subject>/embedding     (N, 512) float16, zeros where no face
                         /au_logits     (N, 12) float32, zeros where no face
                         /expr_logits   (N, 7) float32, zeros where no face
                         /va_pred       (N, 2) float32 valence, arousal, zeros where no face
                         /face_present  (N,) bool
                         /au            (N, 12) int8 labels, -1 = unlabelled
                         /expr          (N,) int8 labels, -1 = unlabelled
                         /va            (N, 2) float32 labels, NaN = unlabelled
    attrs: fps, n_frames, video, source, au_split, expr_split, va_split, complete

The model runs through :class:`pipeline.inference.visual.VisualEmbedder`; JPEG decoding runs in its
prefetch thread, one batch ahead of inference, so decoding overlaps the model.

Example (not run here: it needs the pipeline's prepared data, frame store and visual model)::

    report = embed_visual("cache/prepared", "cache/frames/frames.h5", "cache/onnx/visual.onnx",
                          "cache/embeddings/visual.zarr", EmbedVisualConfig(),
                          InferenceOptions(device="cpu"), ClusterOptions(n_workers=2),
                          work_dir="cache/work/embed-visual")
    report.ok, report.computed[:2]
    # (True, ['video1', 'video10_left'])
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import ConfigError, to_dict
from pipeline.storage.frame_store import FrameStore
from pipeline.data.labels_store import read_labels
from pipeline.data.manifest import SOURCES, SubjectRecord, read_manifest
from pipeline.embed.runner import ClusterOptions, InferenceOptions, RunReport, open_work_store, run_and_publish
from pipeline.inference.visual import OUTPUT_NAMES, VisualEmbedder, embed_batches
from pipeline.labels import EMBEDDING_DIM
from pipeline.model_files import visual as visual_files
from pipeline.model_files.onnx_export import check_outputs, read_metadata
from pipeline.model_files.precision import DEFAULT_PRECISION, recorded_params
from pipeline.models.preprocess import PREPROCESSING
from pipeline.storage.embedding_store import EmbeddingStore, as_float16, fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedVisualConfig:
    """The ``embed_visual`` params section."""

    chunk_frames: int = 512                # frames per Zarr chunk along time
    sources: tuple[str, ...] = ("affwild2",)  # manifest sources to embed ("affwild2", "bp4d")
    precision: str = DEFAULT_PRECISION     # which copy of the model runs (pipeline.model_files.precision)

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise ConfigError(f"must be >= 1, got {self.chunk_frames}", key="chunk_frames")
        if self.precision not in visual_files.PRECISIONS:
            raise ConfigError(f"must be one of {list(visual_files.PRECISIONS)}, got {self.precision!r}",
                              key="precision")
        unknown = sorted(set(self.sources) - set(SOURCES))
        if not self.sources or unknown:
            raise ConfigError(f"must be a non-empty subset of {list(SOURCES)}, got {list(self.sources)}", key="sources")


def embed_visual(
    prepared_dir: str | Path,
    frames_path: str | Path,
    model_path: str | Path,
    out_path: str | Path,
    cfg: EmbedVisualConfig,
    inference: InferenceOptions,
    cluster: ClusterOptions,
    work_dir: str | Path,
    progress: bool | None = None,
) -> RunReport:
    """Embed every selected subject into ``work_dir/<out name>``, publishing to ``out_path`` when complete.

    ``model_path`` is the float32 ``visual.onnx``; ``cfg.precision`` picks the copy beside it that runs.
    """
    prepared_dir, frames_path = Path(prepared_dir), Path(frames_path)
    model_path = visual_files.onnx_model(model_path, cfg.precision)
    manifest = read_manifest(prepared_dir / "manifest.json")
    labels_path = prepared_dir / "labels.h5"
    if not labels_path.is_file():
        raise FileNotFoundError(f"labels file not found: {labels_path} (run the prepare stage first)")
    FrameStore(frames_path).close()  # fail fast on a missing or unfinished frame store
    jobs = {r.name: r for r in manifest.subjects if r.source in cfg.sources}
    if not jobs:
        raise ValueError(f"{prepared_dir / 'manifest.json'}: no subjects from sources {list(cfg.sources)}")
    meta = read_metadata(model_path)
    # once, here: a model from before an output existed would otherwise fail every subject alike
    check_outputs(model_path, OUTPUT_NAMES, f"export it again from its model.pt ({visual_files.STAGE} or "
                                            "export-onnx) so that it gives every output")
    params = recorded_params(to_dict(cfg))
    producer = fingerprint(model_path, {"embed_visual": params, "preprocessing": PREPROCESSING})
    store = open_work_store(
        work_dir, out_path, producer, {"model": meta, "params": params, "dim": EMBEDDING_DIM},
        chunk_frames=cfg.chunk_frames,
    )
    task = functools.partial(
        embed_subject, store_path=str(store.path), store_fingerprint=producer, frames_path=str(frames_path),
        labels_path=str(labels_path), model_path=str(model_path), inference=inference,
    )
    return run_and_publish(store, out_path, jobs, task, cluster, desc="embed-visual", progress=progress)


def embed_subject(
    key: str,
    record: SubjectRecord,
    *,
    store_path: str,
    store_fingerprint: str,
    frames_path: str,
    labels_path: str,
    model_path: str,
    inference: InferenceOptions,
) -> dict[str, Any]:
    """Embed one subject and write its entry (runs inside a dask task); return timing figures."""
    start = time.perf_counter()
    store = EmbeddingStore.open_append(store_path, store_fingerprint)
    frames = _frame_store(frames_path)
    labels = read_labels(labels_path, key)
    present = frames.face_present(key)
    if not len(present) == labels.n_frames == record.n_frames:
        raise ValueError(
            f"{frames_path}: subject {key!r} has {len(present)} frames, {labels_path} has {labels.n_frames}, "
            f"the manifest says {record.n_frames}"
        )
    embedder = _embedder(model_path, store_fingerprint, inference.device)
    outputs, timing = run_visual(embedder, frames, key, np.flatnonzero(present), inference.batch_size)
    arrays = {name: _scatter(values, present) for name, values in outputs.items()}
    arrays["embedding"] = as_float16(arrays["embedding"], f"{model_path}: subject {key!r}")
    arrays.update(face_present=present, au=labels.au.astype(np.int8), expr=labels.expr.astype(np.int8),
                  va=labels.va.astype(np.float32))
    store.write(key, arrays, {
        "fps": record.fps, "n_frames": record.n_frames, "video": record.video, "source": record.source,
        "au_split": record.au_split, "expr_split": record.expr_split, "va_split": record.va_split,
    })
    return {"frames": len(present), "faces": int(present.sum()), "seconds": time.perf_counter() - start, **timing}


def run_visual(
    embedder: VisualEmbedder, frames: FrameStore, name: str, indices: np.ndarray, batch_size: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Run the model over frames ``indices`` of subject ``name`` in batches, decoding one batch ahead.

    Returns the stacked outputs (``embedding`` (k, 512), ``au_logits`` (k, 12), ``expr_logits``
    (k, 7), ``va_pred`` (k, 2), float32) and the seconds spent in the model and waiting for decoded batches.
    """
    batches = [indices[i: i + batch_size] for i in range(0, len(indices), batch_size)]
    return embed_batches(embedder, functools.partial(frames.read, name), batches)


def _scatter(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Place per-face rows at the face-present frames of an all-zero (N, ...) array."""
    out = np.zeros((len(present), *values.shape[1:]), dtype=values.dtype)
    out[present] = values
    return out


@functools.lru_cache(maxsize=4)
def _frame_store(path: str) -> FrameStore:
    """One frame store per process (it opens its HDF5 handle lazily)."""
    return FrameStore(path)


@functools.lru_cache(maxsize=2)
def _embedder(model_path: str, model_fingerprint: str, device: str) -> VisualEmbedder:
    """One onnxruntime session per worker process and model (the fingerprint keys a changed file)."""
    # One intra-op thread: dask runs one task per worker thread, so parallelism comes from tasks,
    # and the decoding thread keeps a core of its own.
    return VisualEmbedder.from_onnx(model_path, device, threads=1)
