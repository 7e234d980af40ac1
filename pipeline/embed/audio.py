"""Audio embeddings: every video's soundtrack through the trained TDNN into ``audio.zarr``.

One dask task per video (the ``_left``/``_right`` subjects of a video share its audio) decodes the
track, cuts each video frame's log-mel window (:mod:`pipeline.audio.windows`) and runs the TDNN
(:class:`pipeline.inference.audio.AudioEmbedder`), from ``tdnn.onnx`` with onnxruntime or from
``model.pt`` with torch::

    audio.zarr/<video>/embedding      (N, 512) float16, zeros where no audio covers the frame
                      /audio_present  (N,) bool
    attrs: fps, n_frames, video, subjects, complete

Example (not run here: it needs the pipeline's prepared data and audio model)::

    report = embed_audio("cache/prepared", "cache/audio", "cache/embeddings/audio.zarr",
                         EmbedAudioConfig(), InferenceOptions(device="cpu"), ClusterOptions(),
                         work_dir="cache/work/embed-audio")
    report.ok
    # True
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import video_audio
from pipeline.config import ConfigError, to_dict
from pipeline.data.manifest import read_manifest
from pipeline.embed.runner import ClusterOptions, InferenceOptions, RunReport, open_work_store, run_and_publish
from pipeline.inference.audio import AudioEmbedder
from pipeline.labels import EMBEDDING_DIM
from pipeline.model_files import audio as audio_files
from pipeline.model_files.precision import DEFAULT_PRECISION, recorded_params
from pipeline.storage.embedding_store import EmbeddingStore, as_float16, fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedAudioConfig:
    """The ``embed_audio`` params section."""

    chunk_frames: int = 512                      # frames per Zarr chunk along time
    backend: Literal["onnx", "torch"] = "onnx"   # run tdnn.onnx (onnxruntime) or model.pt (torch)
    precision: str = DEFAULT_PRECISION           # which copy of tdnn.onnx runs (pipeline.model_files.precision)

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise ConfigError(f"must be >= 1, got {self.chunk_frames}", key="chunk_frames")
        if self.precision not in audio_files.PRECISIONS:
            raise ConfigError(f"must be one of {list(audio_files.PRECISIONS)}, got {self.precision!r}",
                              key="precision")
        if self.backend == "torch" and self.precision != DEFAULT_PRECISION:
            raise ConfigError(f"backend torch runs model.pt in float32 only, got {self.precision!r}; "
                              f"use backend onnx", key="precision")


@dataclass(frozen=True)
class VideoJob:
    """What one task needs to know about a video."""

    video_path: str
    fps: float
    n_frames: int
    subjects: tuple[str, ...]


def embed_audio(
    prepared_dir: str | Path,
    model_dir: str | Path,
    out_path: str | Path,
    cfg: EmbedAudioConfig,
    inference: InferenceOptions,
    cluster: ClusterOptions,
    work_dir: str | Path,
    progress: bool | None = None,
) -> RunReport:
    """Embed every Aff-Wild2 video into ``work_dir/<out name>``, publishing to ``out_path`` when complete."""
    prepared_dir, model_dir = Path(prepared_dir), Path(model_dir)
    manifest_path = prepared_dir / "manifest.json"
    jobs = video_jobs(manifest_path)
    model_path = audio_files.model_path(model_dir, cfg.backend, cfg.precision)
    audio_cfg = audio_files.read_audio_config(model_path)
    params = recorded_params(to_dict(cfg))
    producer = fingerprint(model_path, {"embed_audio": params, "audio_config": to_dict(audio_cfg)})
    store = open_work_store(
        work_dir, out_path, producer,
        {"model": {"path": str(model_path), "audio_config": to_dict(audio_cfg)}, "params": params,
         "dim": EMBEDDING_DIM},
        chunk_frames=cfg.chunk_frames,
    )
    task = functools.partial(
        embed_video, store_path=str(store.path), store_fingerprint=producer, model_path=str(model_path),
        audio_cfg=audio_cfg, inference=inference,
    )
    return run_and_publish(store, out_path, jobs, task, cluster, desc="embed-audio", progress=progress)


def video_jobs(manifest_path: Path) -> dict[str, VideoJob]:
    """One job per Aff-Wild2 video of the manifest, checking its subjects agree on the frame count."""
    jobs = {}
    for video, records in read_manifest(manifest_path).videos().items():
        first = records[0]
        counts = {r.name: r.n_frames for r in records}
        if len(set(counts.values())) != 1:
            raise ValueError(f"{manifest_path}: subjects of video {video!r} disagree on the frame count: {counts}")
        if first.video_path is None or first.fps is None:
            raise ValueError(f"{manifest_path}: subject {first.name!r} has no video file or fps for its audio")
        jobs[video] = VideoJob(first.video_path, first.fps, first.n_frames, tuple(r.name for r in records))
    if not jobs:
        raise ValueError(f"{manifest_path}: no Aff-Wild2 videos to embed")
    return jobs


def embed_video(
    key: str,
    job: VideoJob,
    *,
    store_path: str,
    store_fingerprint: str,
    model_path: str,
    audio_cfg: AudioConfig,
    inference: InferenceOptions,
) -> dict[str, Any]:
    """Embed one video's audio and write its entry (runs inside a dask task); return timing figures."""
    start = time.perf_counter()
    store = EmbeddingStore.open_append(store_path, store_fingerprint)
    audio = video_audio(job.video_path, job.n_frames, job.fps, audio_cfg)
    embedder = _embedder(model_path, store_fingerprint, inference.device)
    tick = time.perf_counter()
    embedding = as_float16(embedder.embed(audio, inference.batch_size), f"{model_path}: video {key!r}")
    model_s = time.perf_counter() - tick
    store.write(key, {"embedding": embedding, "audio_present": audio.present}, {
        "fps": job.fps, "n_frames": job.n_frames, "video": key, "subjects": list(job.subjects),
    })
    return {"frames": job.n_frames, "with_audio": int(audio.present.sum()), "seconds": time.perf_counter() - start,
            "model_seconds": model_s}


@functools.lru_cache(maxsize=2)
def _embedder(model_path: str, model_fingerprint: str, device: str) -> AudioEmbedder:
    """One TDNN per worker process and model (the fingerprint keys a changed file)."""
    # As with the visual sessions: one compute thread per task, parallelism from the tasks.
    return AudioEmbedder.from_file(model_path, device, threads=1)
