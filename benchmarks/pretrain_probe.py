"""How much expression a backbone's embedding carries: a linear probe, pretrained against random init.

Embeds ``--train`` seeded EXPR training frames and ``--val`` EXPR validation frames of the prepared
data (``prepare`` + ``pack-frames`` outputs) with two backbones of the same registry name and width:
seeded random initialisation and ``--backbone-file`` (e.g. ``cache/pretrain/backbone.pth``). Both run
with batch statistics (train mode, no gradient), so neither depends on running BatchNorm statistics
of other data. A ridge-regularised linear classifier (one-hot least squares on standardised
embeddings) is fitted on the training frames and scored on the validation frames: accuracy and
macro F1 over the 7 expressions. A backbone that discarded expression (as a recogniser trained to
ignore it may) scores lower than the random one. Prints the JSON record and writes it to ``--out``
(default ``benchmarks/results/pretrain_probe.json``).

    python -m benchmarks.pretrain_probe --backbone-file cache/pretrain/backbone.pth
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.data.manifest import read_manifest
from pipeline.labels import NUM_EXPRS
from pipeline.metrics import expr_metrics
from pipeline.model_files.backbone import load_backbone_state
from pipeline.models.preprocess import to_model_input
from pipeline.models.registry import create_backbone
from pipeline.train.frames_dataset import (
    FrameDataset, FrameSet, has_labels, read_frame_labels, select_frames, select_validation_frames,
)
from tooling.bench import harness


def _frames(frames_path: Path, frame_set: FrameSet, n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` seeded frames of ``frame_set`` as model input, with their expression labels."""
    idx = np.sort(np.random.default_rng(seed).choice(len(frame_set), min(n, len(frame_set)), replace=False))
    items = FrameDataset(frames_path, frame_set).__getitems__(idx.tolist())
    return to_model_input(torch.stack([item[0] for item in items])), np.array([int(item[2]) for item in items])


@torch.no_grad()
def _embed(backbone: torch.nn.Module, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    backbone.train()   # batch statistics (no gradient, so only BatchNorm's running buffers move)
    return torch.cat([backbone(x[i:i + batch]) for i in range(0, len(x), batch)]).numpy()


def linear_probe(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray,
                 ridge: float = 10.0) -> dict[str, float]:
    """Expression accuracy and macro F1 on ``test`` of a ridge one-hot least-squares classifier fitted on ``train``."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    a, b = (train - mean) / std, (test - mean) / std
    weights = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ np.eye(NUM_EXPRS)[y_train])
    scores = expr_metrics(y_test, (b @ weights).argmax(1))
    return {"acc": round(scores["acc"], 4), "f1": round(scores["f1"], 4)}


def main(argv: list[str] | None = None) -> dict:
    """Run the probe; return the record."""
    parser = harness.parser("pretrain_probe", __doc__)
    parser.add_argument("--backbone-file", type=Path, required=True)
    parser.add_argument("--backbone", default="iresnet18")
    parser.add_argument("--width-mult", type=float, default=0.125)
    parser.add_argument("--prepared", type=Path, default=Path("cache/prepared"))
    parser.add_argument("--frames", type=Path, default=Path("cache/frames/frames.h5"))
    parser.add_argument("--train", type=int, default=1024, help="EXPR training frames fitted on")
    parser.add_argument("--val", type=int, default=768, help="EXPR validation frames scored")
    parser.add_argument("--seed", type=int, default=0, help="frame draw and the random backbone's init")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bench = harness.start("pretrain_probe", argv)
    manifest = read_manifest(args.prepared / "manifest.json")
    labels = read_frame_labels(args.prepared / "labels.h5", args.frames)
    val = select_validation_frames(manifest, labels)
    x_train, y_train = _frames(args.frames, select_frames(manifest, labels, "expr", "train"), args.train, args.seed)
    x_val, y_val = _frames(args.frames, val.subset(np.flatnonzero(has_labels(val, "expr"))), args.val, args.seed + 1)
    results: dict[str, object] = {"backbone": args.backbone, "width_mult": args.width_mult,
                                  "train_frames": len(y_train), "val_frames": len(y_val),
                                  "val_majority_acc": round(float(np.mean(y_val == np.bincount(y_train).argmax())), 4)}
    for name in ("random", "pretrained"):
        torch.manual_seed(args.seed)
        backbone = create_backbone(args.backbone, width_mult=args.width_mult)
        if name == "pretrained":
            load_backbone_state(backbone, args.backbone_file)
        results[name] = linear_probe(_embed(backbone, x_train), y_train, _embed(backbone, x_val), y_val)
    return bench.publish(results, args.threads, args.out)


if __name__ == "__main__":
    main()
