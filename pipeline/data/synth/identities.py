"""A synthetic face-identity set for recognition pretraining: N drawn people x M aligned 112x112 images.

Identity lives in what ``sample_identity`` draws once per person (face width and jaw, eye, brow,
nose and mouth placement and size, skin, hair colour and style, lip and iris colour); every image
varies what a recogniser must ignore: head pose (yaw, roll, scale, shift), expression (a basic
expression's AU prototype at a random strength, in the person's own style, and blinks), lighting
(level, a directional gradient, colour cast), background, clothing colour, occlusion (a hand or
an object), blur and sensor noise. The people are drawn from their own random streams (tags 9 and
10 of the seed), apart from the Aff-Wild2-layout subjects (tag 2) and the BP4D subjects (tag 6),
so they are other people. Every image comes from ``(seed, identity, image)`` alone: same config,
same bytes.

The set is written in both layouts: ``OUT/rec/{train.rec,train.idx,property}`` (insightface's packed
format) and ``OUT/folder/<identity>/<image>.jpg``, plus ``OUT/faces_summary.json``.

    >>> import tempfile
    >>> summary = generate_face_identities(Path(tempfile.mkdtemp()) / "faces",
    ...                                    FaceIdentityConfig(identities=3, images_per_identity=2))
    >>> summary["identities"], summary["images"]
    (3, 6)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.config import check_fields, to_dict
from pipeline.data.faces.writers import FolderFaceSetWriter, PackedFaceSetWriter
from pipeline.data.synth.expressions import NUM_DRAWN, prototype_intensity, sample_style
from pipeline.data.synth.faces import Identity, compile_parts, draw_drawing, face_parts, occluder_parts, sample_identity
from pipeline.data.synth.media import jpeg_bytes
from pipeline.data.synth.scene import CROP_SIZE, SUPERSAMPLE, aligned_pose
from pipeline.fsio import atomic_path
from pipeline.labels import NUM_EXPRS

log = logging.getLogger(__name__)

SUMMARY_FILE = "faces_summary.json"
IDENTITY_STREAM, IMAGE_STREAM = 9, 10     # seed tags; the video subjects use 2, BP4D 6


@dataclass(frozen=True)
class FaceIdentityConfig:
    """Size and variation of the synthetic face-identity set."""

    identities: int = 1000
    images_per_identity: int = 12
    seed: int = 0
    yaw_deg: float = 30.0              # uniform in +-yaw_deg
    roll_deg: float = 10.0
    scale_jitter: float = 0.06
    shift_px: float = 3.0              # crop pixels
    expression_rate: float = 0.6       # share of images showing an expression (else neutral)
    blink_rate: float = 0.1            # share of images with the eyes closed
    occlusion_rate: float = 0.15
    blur_rate: float = 0.2
    blur_radius: tuple[float, float] = (0.6, 1.8)
    light_gain: tuple[float, float] = (0.6, 1.3)
    light_gradient: float = 0.4
    color_cast: float = 0.08           # per-channel light gain in 1 +- color_cast
    noise_std: tuple[float, float] = (1.0, 6.0)
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        check_fields([(self.identities >= 2, "identities", f"must be >= 2, got {self.identities}"),
                      (self.images_per_identity >= 2, "images_per_identity",
                       f"must be >= 2, got {self.images_per_identity}"),
                      *((0.0 <= getattr(self, name) <= 1.0, name, f"must be in [0, 1], got {getattr(self, name)}")
                        for name in ("expression_rate", "blink_rate", "occlusion_rate", "blur_rate"))])


def identity_of(cfg: FaceIdentityConfig, label: int) -> Identity:
    """The drawn person with label ``label``."""
    return sample_identity(np.random.default_rng([cfg.seed, IDENTITY_STREAM, label]))


def render_face(cfg: FaceIdentityConfig, label: int, image: int) -> np.ndarray:
    """Image ``image`` of person ``label``: (112, 112, 3) uint8 RGB, aligned as arcface crops are."""
    irng = np.random.default_rng([cfg.seed, IDENTITY_STREAM, label])
    identity = sample_identity(irng)
    style = sample_style(irng, (0.7, 1.1))
    rng = np.random.default_rng([cfg.seed, IMAGE_STREAM, label, image])
    identity = dataclasses.replace(identity, clothes=tuple(float(v) for v in rng.uniform(30, 220, 3)))
    au = np.zeros(NUM_DRAWN)
    if rng.random() < cfg.expression_rate:
        au = prototype_intensity(int(rng.integers(1, NUM_EXPRS)), style) * rng.uniform(0.3, 1.0)
    blink = float(rng.random() < cfg.blink_rate)
    size = CROP_SIZE * SUPERSAMPLE
    base = aligned_pose(size)
    shift = rng.uniform(-cfg.shift_px, cfg.shift_px, 2) * SUPERSAMPLE
    pose = dataclasses.replace(
        base, cx=base.cx + shift[0], cy=base.cy + shift[1],
        scale=base.scale * (1 + rng.uniform(-cfg.scale_jitter, cfg.scale_jitter)),
        roll=rng.uniform(-cfg.roll_deg, cfg.roll_deg), yaw=rng.uniform(-cfg.yaw_deg, cfg.yaw_deg),
    )
    canvas = Image.new("RGB", (size, size), tuple(int(v) for v in rng.uniform(40, 200, 3)))
    draw = ImageDraw.Draw(canvas)
    draw_drawing(draw, compile_parts(face_parts(identity, au, blink)), pose)
    if rng.random() < cfg.occlusion_rate:
        draw_drawing(draw, compile_parts(occluder_parts(identity, int(rng.integers(3)), rng)), pose)
    picture = canvas.reduce(SUPERSAMPLE)
    if rng.random() < cfg.blur_rate:
        picture = picture.filter(ImageFilter.GaussianBlur(float(rng.uniform(*cfg.blur_radius))))
    pixels = np.asarray(picture, dtype=np.float32) * _light(rng, cfg)
    pixels += rng.normal(0.0, rng.uniform(*cfg.noise_std), pixels.shape) + 0.5
    return np.clip(pixels, 0, 255).astype(np.uint8)


def identity_jpegs(cfg: FaceIdentityConfig, label: int) -> list[bytes]:
    """The JPEG bytes of every image of person ``label``."""
    return [jpeg_bytes(render_face(cfg, label, image), cfg.jpeg_quality) for image in range(cfg.images_per_identity)]


def iter_faces(cfg: FaceIdentityConfig, workers: int = 1) -> Iterator[tuple[int, bytes]]:
    """(label, JPEG bytes) of every image, identity by identity; ``workers`` processes render in
    parallel (the bytes do not depend on it)."""
    labels = range(cfg.identities)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for label, jpegs in zip(labels, pool.map(identity_jpegs, [cfg] * len(labels), labels, chunksize=8)):
                yield from ((label, jpeg) for jpeg in jpegs)
    else:
        for label in labels:
            yield from ((label, jpeg) for jpeg in identity_jpegs(cfg, label))


def generate_face_identities(out: str | Path, cfg: FaceIdentityConfig, workers: int = 1) -> dict[str, object]:
    """Write the set to ``out`` (``rec/``, ``folder/``, summary; replaced atomically); return the summary.

    ``workers`` processes render the images; the files are the same for any number.
    """
    out = Path(out)
    with atomic_path(out) as tmp:
        folder = FolderFaceSetWriter(tmp / "folder", cfg.identities)
        with PackedFaceSetWriter(tmp / "rec", [cfg.images_per_identity] * cfg.identities) as packed:
            for label, jpeg in iter_faces(cfg, workers):
                packed.add(label, jpeg)
                folder.add(label, jpeg)
        summary = {"identities": cfg.identities, "images": cfg.identities * cfg.images_per_identity,
                   "seed": cfg.seed, "bytes_rec": (tmp / "rec" / "train.rec").stat().st_size}
        record = {**summary, "config": to_dict(cfg)}
        (tmp / SUMMARY_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log.info("face-identity set at %s: %s", out, summary)
    return summary


def _light(rng: np.random.Generator, cfg: FaceIdentityConfig) -> np.ndarray:
    """(112, 112, 3) light: a level, a linear gradient in a random direction and a colour cast."""
    direction = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:CROP_SIZE, 0:CROP_SIZE].astype(np.float32) / CROP_SIZE - 0.5
    ramp = 1 + cfg.light_gradient * rng.uniform(0.3, 1.0) * (x * math.cos(direction) + y * math.sin(direction))
    tint = 1 + rng.uniform(-cfg.color_cast, cfg.color_cast, 3)
    return (rng.uniform(*cfg.light_gain) * ramp[:, :, None] * tint).astype(np.float32)
