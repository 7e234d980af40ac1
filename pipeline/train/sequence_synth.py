"""A generated embedding cache (manifest + ``visual.zarr`` + ``audio.zarr``) for tests and benchmarks.

The embeddings carry a learnable signal without any image or audio model: each video is a
sequence of expression segments; a frame's visual embedding is its expression's prototype plus
its active AUs' prototypes plus noise (zeros where the face is missing), and its audio embedding is
a weaker, noisier copy of the expression prototype. Temporal context and audio therefore recover
labels of frames without a face, which is what the sequence model is for. Valence and arousal
(``with_va``) are each expression's point in the valence-arousal plane plus a slow drift, so they
are learnable from the same embeddings; the visual store then holds ``va`` labels and a zero
``va_pred``, as ``embed-visual`` writes them.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> paths = write_synthetic_cache(out, SyntheticCacheConfig(n_videos=3, min_frames=20, max_frames=40))
    >>> sorted(p.name for p in paths)
    ['audio.zarr', 'manifest.json', 'visual.zarr']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.manifest import Manifest, SubjectRecord, write_manifest
from pipeline.labels import EMBEDDING_DIM, NUM_AUS, NUM_EXPRS, NUM_VA
from pipeline.storage.embedding_store import EmbeddingStore


_VA_SALT = 4471   # keeps the VA draws apart from the embeddings' (same seed)


@dataclass(frozen=True)
class SyntheticCacheConfig:
    """Size and difficulty of a generated cache."""

    n_videos: int = 8
    min_frames: int = 60
    max_frames: int = 120
    validation_fraction: float = 0.25
    missing_face: float = 0.3       # fraction of frames in face-occlusion segments
    missing_audio: float = 0.1      # fraction of frames without audio
    visual_noise: float = 1.0
    audio_noise: float = 1.5
    segment_frames: tuple[int, int] = (15, 45)
    random_embeddings: bool = False  # pure noise (benchmarks of size and speed only; no signal)
    with_va: bool = True            # valence-arousal labels (False: a store and manifest without VA)
    seed: int = 0


def write_synthetic_cache(out_dir: str | Path, config: SyntheticCacheConfig) -> tuple[Path, Path, Path]:
    """Write ``manifest.json``, ``visual.zarr`` and ``audio.zarr`` under ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    protos = _prototypes(rng)
    # VA has its own generator, so the embeddings and AU/EXPR labels are those of a cache without VA
    va_rng = np.random.default_rng([config.seed, _VA_SALT])
    protos["expr_va"] = va_rng.uniform(-0.7, 0.7, size=(NUM_EXPRS, NUM_VA)).astype(np.float32)
    attrs = {"model": "synthetic", "params": {"seed": config.seed}, "dim": EMBEDDING_DIM}
    visual = EmbeddingStore.open_for_write(out_dir / "visual.zarr", f"synthetic-visual-{config.seed}", attrs)
    audio = EmbeddingStore.open_for_write(out_dir / "audio.zarr", f"synthetic-audio-{config.seed}", attrs)
    n_validation = max(1, round(config.validation_fraction * config.n_videos)) if config.n_videos > 1 else 0
    records = []
    for v in range(config.n_videos):
        name = f"video{v}"
        n = int(rng.integers(config.min_frames, config.max_frames + 1))
        split = "validation" if v >= config.n_videos - n_validation else "train"
        arrays = _video(rng, n, protos, config)
        arrays["va"] = _valence_arousal(va_rng, arrays["expr"], protos["expr_va"])
        arrays["va_pred"] = np.zeros((n, NUM_VA), np.float32)
        visual_names = ("embedding", "face_present", "au_logits", "expr_logits", "au", "expr")
        visual_arrays = {k: arrays[k] for k in visual_names + (("va", "va_pred") if config.with_va else ())}
        entry = {"fps": 30.0, "n_frames": n}
        visual.write(name, visual_arrays, {**entry, "video": name, "au_split": split, "expr_split": split})
        audio.write(name, {"embedding": arrays["audio"], "audio_present": arrays["audio_present"]}, entry)
        records.append(SubjectRecord(
            name=name, video=name, fps=30.0, n_frames=n, has_audio=True, sample_rate=16000,
            au_split=split, expr_split=split, n_au_labelled=n, n_expr_labelled=n,
            n_faces=int(arrays["face_present"].sum()),
            va_split=split if config.with_va else None, n_va_labelled=n if config.with_va else 0,
        ))
    manifest_path = out_dir / "manifest.json"
    write_manifest(Manifest(root=str(out_dir), subjects=tuple(records)), manifest_path)
    return manifest_path, out_dir / "visual.zarr", out_dir / "audio.zarr"


def _valence_arousal(rng: np.random.Generator, expr: np.ndarray, expr_va: np.ndarray) -> np.ndarray:
    """(N, 2) valence-arousal: each frame's expression point plus a slow drift (a random walk held to +-0.2)."""
    drift = np.clip(np.cumsum(rng.normal(scale=0.02, size=(len(expr), NUM_VA)), axis=0), -0.2, 0.2)
    return np.clip(expr_va[expr] + drift, -1.0, 1.0).astype(np.float32)


def _prototypes(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "expr": rng.normal(size=(NUM_EXPRS, EMBEDDING_DIM)).astype(np.float32),
        "au": rng.normal(size=(NUM_AUS, EMBEDDING_DIM)).astype(np.float32) * 0.7,
        # each expression switches on a few AUs with high probability
        "expr_au": (rng.random((NUM_EXPRS, NUM_AUS)) < 0.3).astype(np.float32) * 0.8 + 0.1,
    }


def _segments(rng: np.random.Generator, n: int, lengths: tuple[int, int], values: int) -> np.ndarray:
    out = np.empty(n, np.int64)
    t = 0
    while t < n:
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        out[t:t + length] = rng.integers(values)
        t += length
    return out


def _mask(rng: np.random.Generator, n: int, fraction: float, lengths: tuple[int, int]) -> np.ndarray:
    """Frames inside random occlusion segments covering about ``fraction`` of the video."""
    missing = np.zeros(n, bool)
    if fraction <= 0:
        return missing
    mean = (lengths[0] + lengths[1]) / 2
    for _ in range(rng.poisson(fraction * n / mean)):
        start = int(rng.integers(n))
        missing[start:start + int(rng.integers(lengths[0], lengths[1] + 1))] = True
    return missing


def _video(
    rng: np.random.Generator, n: int, protos: dict[str, np.ndarray], config: SyntheticCacheConfig
) -> dict[str, np.ndarray]:
    lengths = config.segment_frames
    expr = _segments(rng, n, lengths, NUM_EXPRS)
    # AUs are redrawn (given the expression) whenever the expression or an AU segment changes
    au_segment = _segments(rng, n, lengths, 1 << 30)
    changes = np.r_[True, (np.diff(expr) != 0) | (np.diff(au_segment) != 0)]
    draws = rng.random((int(changes.sum()), NUM_AUS))[np.cumsum(changes) - 1]
    au = (draws < protos["expr_au"][expr]).astype(np.int8)
    face = ~_mask(rng, n, config.missing_face, (lengths[0] // 2, lengths[1]))
    voice = ~_mask(rng, n, config.missing_audio, (lengths[0] // 2, lengths[1]))
    if config.random_embeddings:
        visual = rng.standard_normal((n, EMBEDDING_DIM), dtype=np.float32)
        audio = rng.standard_normal((n, EMBEDDING_DIM), dtype=np.float32)
    else:
        noise = rng.standard_normal((2, n, EMBEDDING_DIM), dtype=np.float32)
        visual = protos["expr"][expr] + au @ protos["au"] + config.visual_noise * noise[0]
        audio = 0.5 * protos["expr"][expr] + config.audio_noise * noise[1]
    visual[~face] = 0
    audio[~voice] = 0
    return {
        "embedding": visual.astype(np.float16), "face_present": face,
        "au_logits": np.zeros((n, NUM_AUS), np.float32), "expr_logits": np.zeros((n, NUM_EXPRS), np.float32),
        "au": au, "expr": expr.astype(np.int8),
        "audio": audio.astype(np.float16), "audio_present": voice,
    }
