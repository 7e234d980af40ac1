"""Hand-built tiny inputs of the ``evaluate`` stage: manifest, both embedding stores, two checkpoints.

Subjects (``fps`` 25, 512-d embeddings):

    subject      video  frames  AU split     EXPR split   VA split     visual logits and VA
    vidA         vidA   40      validation   validation   validation   agree with the labels
    vidB_left    vidB   33      validation   train        train        agree with the labels, VA wrong
    vidB_right   vidB   33      excluded     validation   validation   agree with the EXPR and VA labels, AUs wrong
    vidC         vidC   20      train        train        train        wrong

so the cached visual logits and VA predictions score perfectly on exactly the leakage-free
validation frames with a face. Without VA (``with_va=False``) the manifest has no VA split and the
visual store no ``va``/``va_pred`` arrays, as one written before VA was read.
Frames 5..9 of vidA have no face (zero embedding and logits) but keep their labels, as Aff-Wild2's
labelled frames without a cropped image do; vidC has no audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.audio.features import AudioConfig
from pipeline.config import to_dict
from pipeline.data.manifest import Manifest, SubjectRecord, write_manifest
from pipeline.inference.features import feature_dim
from pipeline.labels import NUM_AUS, NUM_EXPRS, NUM_VA
from pipeline.models.fusion import FusionConfig, FusionHead
from pipeline.models.sequence import SequenceArch, SequenceModel, arch_to_dict
from pipeline.models.tdnn import TDNN, TDNNConfig
from pipeline.storage.embedding_store import EmbeddingStore

FACELESS = ("vidA", slice(5, 10))   # the subject and frames without a face
SUBJECTS = (
    # name, video, frames, au split, expr split, logits agree (au, expr)
    ("vidA", "vidA", 40, "validation", "validation", (True, True)),
    ("vidB_left", "vidB", 33, "validation", "train", (True, True)),
    ("vidB_right", "vidB", 33, "excluded", "validation", (False, True)),
    ("vidC", "vidC", 20, "train", "train", (False, False)),
)
# name -> (VA split, the visual VA predictions agree with the labels)
VA_SUBJECTS = {"vidA": ("validation", True), "vidB_left": ("train", False), "vidB_right": ("validation", True),
               "vidC": ("train", False)}
VA_UNLABELLED = slice(0, 3)   # the frames of every subject without a VA label
WINDOW, STRIDE = 8, 4


@dataclass(frozen=True)
class EvaluationInputs:
    """Paths of everything ``evaluate`` reads."""

    prepared: Path
    manifest: Manifest
    visual: Path
    audio: Path
    audio_model: Path
    sequence_model: Path


def build_evaluation_inputs(root: Path, seed: int = 0, with_va: bool = True) -> EvaluationInputs:
    """Write the inputs under ``root`` and return their paths (``with_va``: VA labels, split and predictions)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    records = tuple(
        SubjectRecord(name=name, video=video, video_path=f"videos/{video}.mp4", fps=25.0, n_frames=n,
                      has_audio=video != "vidC", sample_rate=16000, au_split=au, expr_split=expr,
                      va_split=VA_SUBJECTS[name][0] if with_va else None)
        for name, video, n, au, expr, _ in SUBJECTS
    )
    manifest = Manifest(root=str(root / "data"), subjects=records)
    prepared = root / "prepared"
    write_manifest(manifest, prepared / "manifest.json")

    visual = EmbeddingStore.open_for_write(root / "visual.zarr", "v" * 64, {"model": "test", "params": {}, "dim": 512})
    for name, video, n, au_split, expr_split, (au_ok, expr_ok) in SUBJECTS:
        au = rng.integers(0, 2, (n, NUM_AUS)).astype(np.int8)
        expr = rng.integers(0, NUM_EXPRS, n).astype(np.int8)
        au[-3:] = -1
        expr[:2] = -1
        face = np.ones(n, bool)
        if name == FACELESS[0]:
            face[FACELESS[1]] = False
        signs = np.where(au == 1, 5.0, -5.0) if au_ok else np.where(au == 1, -5.0, 5.0)
        expr_logits = np.full((n, NUM_EXPRS), -3.0, np.float32)
        target = np.where(expr >= 0, expr, 0) if expr_ok else (np.where(expr >= 0, expr, 0) + 1) % NUM_EXPRS
        expr_logits[np.arange(n), target] = 3.0
        embedding = rng.standard_normal((n, 512)).astype(np.float16)
        embedding[~face] = 0
        au_logits = signs.astype(np.float32)
        au_logits[~face], expr_logits[~face] = 0.0, 0.0
        arrays = {"embedding": embedding, "face_present": face, "au_logits": au_logits, "expr_logits": expr_logits,
                  "au": au, "expr": expr}
        attrs = {"fps": 25.0, "n_frames": n, "video": video, "au_split": au_split, "expr_split": expr_split}
        va = rng.uniform(-1.0, 1.0, (n, NUM_VA)).astype(np.float32)
        va_pred = np.where(VA_SUBJECTS[name][1], va, -va).astype(np.float32)
        va[VA_UNLABELLED] = np.nan
        va_pred[~face] = 0.0
        if with_va:
            arrays.update(va=va, va_pred=va_pred)
            attrs["va_split"] = VA_SUBJECTS[name][0]
        visual.write(name, arrays, attrs)

    audio = EmbeddingStore.open_for_write(root / "audio.zarr", "a" * 64, {"model": "test", "params": {}, "dim": 512})
    for video, n in {video: n for _, video, n, *_ in SUBJECTS}.items():
        present = np.full(n, video != "vidC")
        embedding = rng.standard_normal((n, 512)).astype(np.float16) * present[:, None]
        audio.write(video, {"embedding": embedding.astype(np.float16), "audio_present": present},
                    {"fps": 25.0, "n_frames": n})

    tdnn_cfg = TDNNConfig(channels=(8, 8), kernel_sizes=(3, 1), dilations=(1, 1))
    fusion_cfg = FusionConfig(hidden=16)
    audio_model = root / "audio" / "model.pt"
    audio_model.parent.mkdir(parents=True)
    torch.save({
        "tdnn_arch": to_dict(tdnn_cfg), "tdnn": TDNN(tdnn_cfg).state_dict(),
        "fusion_arch": to_dict(fusion_cfg), "fusion": FusionHead(fusion_cfg).state_dict(),
        "audio_config": to_dict(AudioConfig()),
    }, audio_model)

    arch = SequenceArch(input_dim=feature_dim("both"), d_model=16, layers=1, heads=2, dropout=0.0, max_len=WINDOW)
    sequence_model = root / "sequence" / "model.pt"
    sequence_model.parent.mkdir(parents=True)
    torch.save({
        "arch": arch_to_dict(arch), "state_dict": SequenceModel(arch).state_dict(),
        "modalities": "both", "window": WINDOW, "stride": STRIDE, "config": {},
    }, sequence_model)
    return EvaluationInputs(prepared, manifest, root / "visual.zarr", root / "audio.zarr", audio_model, sequence_model)
