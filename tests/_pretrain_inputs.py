"""A tiny ``pretrain_face`` params section and a tiny face-identity set for the pretraining tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from pipeline.data.synth.identities import FaceIdentityConfig, generate_face_identities

# 1/16-width iresnet18, 8 training identities, 2 held out; two epochs of two batches.
PRETRAIN: dict[str, Any] = {
    "backbone": "iresnet18", "width_mult": 0.0625, "init": None, "margin": "cosface", "s": 64.0, "m": 0.4,
    "sample_rate": 0.5, "epochs": 2, "batch_size": 8, "images_per_epoch": 16, "lr": 0.1, "momentum": 0.9,
    "weight_decay": 0.0005, "max_grad_norm": None, "flip_prob": 0.5, "holdout_share": 0.2,
    "verification_pairs": 20, "far": 0.001, "seed": 0,
    "min_gain": None,   # these runs test the stage's mechanics; the gate's tests set it
}
FACES = FaceIdentityConfig(identities=10, images_per_identity=4, seed=3)


def write_params(directory: Path, **overrides: Any) -> Path:
    """Write ``directory/params.yaml`` holding the tiny section with ``overrides``; return its path."""
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump({"pretrain_face": {**PRETRAIN, **overrides}}, sort_keys=False))
    return path


def make_faces(root: Path) -> Path:
    """The tiny identity set in both layouts under ``root`` (``rec/``, ``folder/``); returns ``root``."""
    generate_face_identities(root, FACES)
    return root


def make_learnable_faces(root: Path, identities: int = 12, images_per_identity: int = 4, seed: int = 0) -> Path:
    """A folder set (``root/<identity>/<image>.jpg``) that a few epochs can learn and random weights
    cannot read: each identity is a flat colour in the centre square, each image puts it on loud
    random blobs (and noise), so an untrained network sees mostly the blobs. Returns ``root``."""
    rng = np.random.default_rng(seed)
    for identity in range(identities):
        colour = rng.uniform(0, 255, 3)
        folder = root / f"{identity:05d}"
        folder.mkdir(parents=True)
        for image in range(images_per_identity):
            blobs = Image.fromarray(rng.uniform(0, 255, (3, 3, 3)).astype(np.uint8)).resize((112, 112), Image.BICUBIC)
            pixels = np.asarray(blobs, np.float64).copy()
            pixels[40:72, 40:72] = colour
            pixels += rng.normal(0.0, 10.0, pixels.shape)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{image:04d}.jpg", quality=90)
    return root
