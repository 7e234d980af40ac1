"""Audio embeddings: every video's soundtrack through the trained TDNN into ``audio.zarr``.

One dask task per video (the ``_left``/``_right`` subjects of a video share its audio) decodes the
track, cuts each video frame's log-mel window (:mod:`pipeline.audio.windows`) and runs the TDNN,
from ``tdnn.onnx`` with onnxruntime or from ``model.pt`` with torch::

    audio.zarr/<video>/embedding      (N, 512) float16, zeros where no audio covers the frame
                      /audio_present  (N,) bool
    attrs: fps, n_frames, video, subjects, complete

Example:
    >>> report = embed_audio("cache/prepared", "cache/audio", "cache/embeddings/audio.zarr",
    ...                      EmbedAudioConfig(), InferenceOptions(device="cpu"), ClusterOptions(),
    ...                      work_dir="cache/work/embed-audio")                  # doctest: +SKIP
    >>> report.ok                                                              # doctest: +SKIP
    True
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import video_audio
from pipeline.checkpoint import load_checkpoint
from pipeline.config import ConfigError, from_dict, to_dict
from pipeline.data.manifest import read_manifest
from pipeline.embed.runner import ClusterOptions, InferenceOptions, RunReport, open_work_store, run_and_publish
from pipeline.store import EmbeddingStore, as_float16, fingerprint

log = logging.getLogger(__name__)

EMBED_DIM = 512
ONNX_NAME = "tdnn.onnx"
CHECKPOINT_NAME = "model.pt"
_CHECKPOINT_ROLE = "audio model checkpoint"
_CHECKPOINT_HINT = "run the train-audio stage first"
MelModel = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EmbedAudioConfig:
    """The ``embed_audio`` params section."""

    chunk_frames: int = 512                      # frames per Zarr chunk along time
    backend: Literal["onnx", "torch"] = "onnx"   # run tdnn.onnx (onnxruntime) or model.pt (torch)

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise ConfigError(f"must be >= 1, got {self.chunk_frames}", key="chunk_frames")


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
    model_path = model_dir / (ONNX_NAME if cfg.backend == "onnx" else CHECKPOINT_NAME)
    audio_cfg = load_audio_config(model_dir, cfg.backend)
    params = to_dict(cfg)
    producer = fingerprint(model_path, {"embed_audio": params, "audio_config": to_dict(audio_cfg)})
    store = open_work_store(
        work_dir, out_path, producer,
        {"model": {"path": str(model_path), "audio_config": to_dict(audio_cfg)}, "params": params, "dim": EMBED_DIM},
        chunk_frames=cfg.chunk_frames,
    )
    task = functools.partial(
        embed_video, store_path=str(store.path), store_fingerprint=producer, model_path=str(model_path),
        backend=cfg.backend, audio_cfg=audio_cfg, inference=inference,
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


def load_audio_config(model_dir: Path, backend: str) -> AudioConfig:
    """The audio frontend config the TDNN was trained with, from the ONNX metadata or the checkpoint."""
    if backend == "onnx":
        from pipeline.export import read_metadata

        path = model_dir / ONNX_NAME
        meta = read_metadata(path)
        if "audio_config" not in meta:
            raise ValueError(f"{path}: metadata has no 'audio_config' (keys: {sorted(meta)})")
        return from_dict(AudioConfig, meta["audio_config"], where=f"{path}:audio_config")
    from pipeline.models.fusion import load_audio_config as from_checkpoint

    return from_checkpoint(load_checkpoint(model_dir / CHECKPOINT_NAME, _CHECKPOINT_ROLE, missing_hint=_CHECKPOINT_HINT))


def embed_video(
    key: str,
    job: VideoJob,
    *,
    store_path: str,
    store_fingerprint: str,
    model_path: str,
    backend: str,
    audio_cfg: AudioConfig,
    inference: InferenceOptions,
) -> dict[str, Any]:
    """Embed one video's audio and write its entry (runs inside a dask task); return timing figures."""
    start = time.perf_counter()
    store = EmbeddingStore.open_append(store_path, store_fingerprint)
    audio = video_audio(job.video_path, job.n_frames, job.fps, audio_cfg)
    model = _mel_model(model_path, store_fingerprint, backend, inference.device)
    present = audio.present
    embedding = np.zeros((job.n_frames, EMBED_DIM), np.float16)
    frames = np.flatnonzero(present)
    model_s = 0.0
    for i in range(0, len(frames), inference.batch_size):
        batch = frames[i: i + inference.batch_size]
        mel = audio.windows(batch).mel
        tick = time.perf_counter()
        values = model(mel)
        model_s += time.perf_counter() - tick
        if values.shape != (len(batch), EMBED_DIM):
            raise ValueError(f"{model_path}: embedding has shape {values.shape}, expected ({len(batch)}, {EMBED_DIM})")
        embedding[batch] = as_float16(values, f"{model_path}: video {key!r}")
    store.write(key, {"embedding": embedding, "audio_present": present}, {
        "fps": job.fps, "n_frames": job.n_frames, "video": key, "subjects": list(job.subjects),
    })
    return {"frames": job.n_frames, "with_audio": len(frames), "seconds": time.perf_counter() - start,
            "model_seconds": model_s}


@functools.lru_cache(maxsize=2)
def _mel_model(model_path: str, model_fingerprint: str, backend: str, device: str) -> MelModel:
    """One TDNN per worker process: mel windows (B, n_mels, C) float32 -> (B, 512) float32."""
    if backend == "onnx":
        from pipeline.export import make_session

        session = make_session(model_path, device, threads=1)
        return lambda mel: session.run(["embedding"], {"mel": mel})[0]
    import torch

    from pipeline.device import resolve_device
    from pipeline.models.fusion import load_tdnn

    torch_device = resolve_device(device)
    # As with the onnxruntime sessions: one compute thread per task, parallelism from the tasks.
    torch.set_num_threads(1)
    tdnn = load_tdnn(load_checkpoint(model_path, _CHECKPOINT_ROLE, missing_hint=_CHECKPOINT_HINT)).to(torch_device)

    def run(mel: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return tdnn(torch.from_numpy(mel).to(torch_device)).float().cpu().numpy()

    return run

