"""Tiny media and stores for the audio tests: videos with chosen soundtracks, a prepared dir, a visual store.

``write_av`` writes a short video whose audio track can start late, have any sample rate and carry
any waveform. ``build_audio_dataset`` writes four videos whose soundtrack pitch follows the
expression label, a manifest and a hand-made visual embedding store in the documented layout
(with ``va`` labels that follow the expression too, so they are audible, and a zero ``va_pred``;
``with_va=False``: a dataset without VA_Set and a store without VA arrays):

    video  subjects            fps    audio        AU split    EXPR split
    v0     v0                  25     16 kHz       train       train
    v1     v1_left, v1_right   29.97  22.05 kHz    train       train
    v2     v2                  30     16 kHz, +0.4 s late  validation  validation
    v3     v3                  25     none         validation  validation
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from _media import mux_grey_frames
from pipeline.data.manifest import Manifest, SubjectRecord, write_manifest
from pipeline.storage.embedding_store import EmbeddingStore

EXPR_PITCH_HZ = (220.0, 330.0, 440.0, 550.0, 660.0, 880.0, 990.0)   # tone per expression class
# (valence, arousal) per expression class: what the VA labels are, so the pitch carries them
EXPR_VA = np.array([[0.0, -0.2], [-0.6, 0.5], [-0.5, 0.2], [-0.6, 0.7], [0.7, 0.4], [-0.7, -0.5], [0.3, 0.8]],
                   np.float32)


def write_av(
    path: Path,
    n_frames: int,
    fps: float | Fraction,
    samples: np.ndarray | None,
    sample_rate: int = 16000,
    audio_start_s: float = 0.0,
    size: int = 32,
) -> Path:
    """Write ``n_frames`` grey frames at ``fps`` plus, unless ``samples`` is None, a mono track from ``audio_start_s``.

    ``.mp4`` gets H.264 + AAC, ``.avi`` MPEG-4 part 2 + 16-bit PCM (AVI keeps no record of AAC's
    encoder delay, so AAC in AVI would really play late).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264" if path.suffix == ".mp4" else "mpeg4", rate=rate)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        sound = None
        if samples is not None:
            pcm = path.suffix == ".avi"
            sound = container.add_stream("pcm_s16le" if pcm else "aac", rate=sample_rate)
            sound.layout = "mono"
        mux_grey_frames(container, video, n_frames, size)
        if sound is not None:
            offset = int(round(audio_start_s * sample_rate))
            for begin in range(0, len(samples), 1024):
                chunk = np.ascontiguousarray(samples[None, begin:begin + 1024], dtype=np.float32)
                if pcm:
                    chunk = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(chunk, format="s16" if pcm else "fltp", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = offset + begin
                frame.time_base = Fraction(1, sample_rate)
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def tone_track(expr: np.ndarray, fps: float, sample_rate: int, seed: int) -> np.ndarray:
    """A waveform whose pitch at each video frame's time is the tone of that frame's expression."""
    rng = np.random.default_rng(seed)
    n = int(len(expr) / fps * sample_rate)
    frame_of_sample = np.minimum((np.arange(n) / sample_rate * fps).astype(int), len(expr) - 1)
    pitch = np.asarray(EXPR_PITCH_HZ)[np.maximum(expr, 0)][frame_of_sample]
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    return (0.3 * np.sin(phase) + 0.01 * rng.normal(size=n)).astype(np.float32)


def expression_va(expr: np.ndarray, seed: int) -> np.ndarray:
    """(N, 2) valence-arousal of each frame: its expression's point (expression 0's where unlabelled,
    as the tone is) plus a little annotator jitter."""
    rng = np.random.default_rng([seed, 7])
    return np.clip(EXPR_VA[np.maximum(expr, 0)] + rng.normal(scale=0.05, size=(len(expr), 2)), -1, 1).astype(np.float32)


def expression_runs(n_frames: int, seed: int, run: int = 12) -> np.ndarray:
    """Expression labels in runs of ``run`` frames with a few unlabelled (-1) frames."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.integers(0, 7, size=n_frames // run + 1), run)[:n_frames]
    labels[rng.random(n_frames) < 0.05] = -1
    return labels.astype(np.int8)


def build_audio_dataset(root: Path, n_frames: int = 72, with_va: bool = True) -> tuple[Path, Path]:
    """Write videos, ``prepared/manifest.json`` and ``visual.zarr`` under ``root``; return (prepared dir, store)."""
    videos = [
        ("v0", 25.0, 16000, 0.0, ("v0",), "train"),
        ("v1", 30000 / 1001, 22050, 0.0, ("v1_left", "v1_right"), "train"),
        ("v2", 30.0, 16000, 0.4, ("v2",), "validation"),
        ("v3", 25.0, None, 0.0, ("v3",), "validation"),
    ]
    records, entries = [], {}
    for index, (video, fps, sample_rate, start, subjects, split) in enumerate(videos):
        expr = expression_runs(n_frames, seed=index)
        path = root / "videos" / f"{video}.mp4"
        samples = None if sample_rate is None else tone_track(expr, fps, sample_rate, seed=index)
        if samples is not None and start:
            samples = samples[int(start * sample_rate):]
        write_av(path, n_frames, fps, samples, sample_rate or 16000, audio_start_s=start)
        for k, name in enumerate(subjects):
            rng = np.random.default_rng(100 + 10 * index + k)
            face = rng.random(n_frames) > 0.15
            au = (rng.random((n_frames, 12)) < 0.3).astype(np.int8)
            au[:, 0] = (expr >= 4).astype(np.int8)          # AU1 follows the (audible) expression
            visual = rng.normal(size=(n_frames, 512)).astype(np.float16) * face[:, None]
            records.append(SubjectRecord(
                name=name, video=video, video_path=str(path), crops_dir=None, fps=float(fps), n_frames=n_frames,
                has_audio=sample_rate is not None, sample_rate=sample_rate, au_split=split, expr_split=split,
                n_au_labelled=n_frames, n_expr_labelled=int((expr >= 0).sum()), n_faces=int(face.sum()),
                va_split=split if with_va else None, n_va_labelled=n_frames if with_va else 0,
            ))
            arrays = {
                "embedding": visual, "face_present": face, "au": au, "expr": expr,
                "au_logits": (rng.normal(size=(n_frames, 12)) * face[:, None]).astype(np.float32),
                "expr_logits": (rng.normal(size=(n_frames, 7)) * face[:, None]).astype(np.float32),
            }
            if with_va:
                arrays.update(va=expression_va(expr, 100 + 10 * index + k), va_pred=np.zeros((n_frames, 2), np.float32))
            entries[name] = (arrays, {"fps": float(fps), "n_frames": n_frames, "video": video, "au_split": split,
                                      "expr_split": split})
    prepared = root / "prepared"
    write_manifest(Manifest(root=str(root), subjects=tuple(records)), prepared / "manifest.json")
    store_path = root / "visual.zarr"
    store = EmbeddingStore.open_for_write(store_path, "0" * 64, {"model": "test", "params": {}, "dim": 512},
                                          chunk_frames=32)
    for name, (arrays, attrs) in entries.items():
        store.write(name, arrays, attrs)
    return prepared, store_path
