"""A synthetic face-identity set for recognition pretraining: N drawn people x M aligned 112x112 images.

Identity lives in what ``sample_identity`` draws once per person (the shape of every facial part
at an anthropometric spread, asymmetry, rest folds, moles, stubble, glasses, brows, skin from tone
clusters, hair, lip and iris colour); every image varies what a recogniser must ignore, as web
photographs do: resolution, head pose, the aligner's errors, expression (mostly neutral or smiling:
``WEB_EXPRESSION_SHARES``, at varying strength, in the person's own style; blinks), lighting, white
balance, gamma, greyscale, background, clothing colour, occlusion (a hand or an object), blur and
sensor noise. Each image is drawn as a photograph at its own scale and then warped to the aligned
crop by ``scene.crop``, the function that cuts the video dataset's crops. The people are drawn
from their own random streams (tags 9, 10 and 11 of the seed), apart from the Aff-Wild2-layout
subjects (tag 2) and the BP4D subjects (tag 6), so they are other people. Every image comes from
``(seed, identity, image)`` alone: same config, same bytes.

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
from pipeline.data.synth.expressions import Style, prototype_intensity, sample_style
from pipeline.data.synth.faces import (
    Identity, Pose, compile_parts, draw_drawing, face_parts, occluder_parts, sample_identity,
)
from pipeline.data.synth.media import jpeg_bytes
from pipeline.data.synth.scene import CROP_CENTER_Y, CROP_PX_PER_UNIT, SUPERSAMPLE, crop
from pipeline.fsio import atomic_path
from pipeline.labels import NUM_EXPRS

log = logging.getLogger(__name__)

SUMMARY_FILE = "faces_summary.json"
IDENTITY_STREAM, IMAGE_STREAM, EXPRESSION_STREAM = 9, 10, 11   # seed tags; the video subjects use 2, BP4D 6
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)   # ITU-R BT.601 luma


# Shares of the 7 expressions (EXPR_NAMES order) in web face photographs, as the recognition sets
# hold them: mostly neutral or smiling, the other five rare (docs/pretrain.md).
WEB_EXPRESSION_SHARES = (0.55, 0.03, 0.02, 0.02, 0.30, 0.04, 0.04)
PHOTO_MARGIN = 1.6       # half the photo's side, in face units around the crop centre: room for roll and yaw


@dataclass(frozen=True)
class FaceIdentityConfig:
    """Size and variation of the synthetic face-identity set."""

    identities: int = 1000
    images_per_identity: int = 12
    seed: int = 0
    face_px: tuple[float, float] = (28.0, 60.0)   # half face height in the photo (px); the crop has 50
    yaw_deg: float = 30.0              # head yaw, uniform in +-yaw_deg
    roll_deg: float = 15.0             # head roll in the photo; alignment takes it out
    align_roll_deg: float = 3.0        # the aligner's errors: roll (SD, degrees),
    scale_jitter: float = 0.06         # scale (uniform in 1 +- scale_jitter)
    shift_px: float = 2.0              # and shift (SD, crop pixels)
    expression_shares: tuple[float, ...] = WEB_EXPRESSION_SHARES
    expression_strength: tuple[float, float] = (0.25, 1.0)
    blink_rate: float = 0.1            # share of images with the eyes closed
    occlusion_rate: float = 0.15
    blur_rate: float = 0.2
    blur_radius: tuple[float, float] = (0.6, 1.8)   # crop pixels
    light_gain: tuple[float, float] = (0.6, 1.3)
    light_gradient: float = 0.4
    white_balance: float = 0.1         # red and blue gains in 1 +- white_balance (green a third of it)
    gamma: tuple[float, float] = (0.8, 1.25)
    greyscale_rate: float = 0.1
    noise_std: tuple[float, float] = (1.0, 6.0)
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        shares = self.expression_shares
        check_fields([(self.identities >= 2, "identities", f"must be >= 2, got {self.identities}"),
                      (self.images_per_identity >= 2, "images_per_identity",
                       f"must be >= 2, got {self.images_per_identity}"),
                      (len(shares) == NUM_EXPRS and min(shares) >= 0 and abs(sum(shares) - 1) < 1e-6,
                       "expression_shares", f"must be {NUM_EXPRS} shares >= 0 summing to 1, got {list(shares)}"),
                      (0 < self.face_px[0] <= self.face_px[1], "face_px",
                       f"must be 0 < low <= high, got {list(self.face_px)}"),
                      (0 < self.gamma[0] <= self.gamma[1], "gamma", f"must be 0 < low <= high, got {list(self.gamma)}"),
                      (0 <= self.expression_strength[0] <= self.expression_strength[1], "expression_strength",
                       f"must be 0 <= low <= high, got {list(self.expression_strength)}"),
                      *((0.0 <= getattr(self, name) <= 1.0, name, f"must be in [0, 1], got {getattr(self, name)}")
                        for name in ("blink_rate", "occlusion_rate", "blur_rate", "greyscale_rate",
                                     "white_balance"))])


def identity_of(cfg: FaceIdentityConfig, label: int) -> Identity:
    """The drawn person with label ``label``."""
    return sample_identity(np.random.default_rng([cfg.seed, IDENTITY_STREAM, label]))


def expression_of(cfg: FaceIdentityConfig, label: int, image: int) -> tuple[int, float]:
    """The expression (index into EXPR_NAMES) image ``image`` of person ``label`` shows, and its
    strength (scales the person's prototype AU intensities; 0 for Neutral)."""
    rng = np.random.default_rng([cfg.seed, EXPRESSION_STREAM, label, image])
    expr = int(rng.choice(NUM_EXPRS, p=np.asarray(cfg.expression_shares) / sum(cfg.expression_shares)))
    return expr, float(rng.uniform(*cfg.expression_strength)) if expr else 0.0


def render_face(cfg: FaceIdentityConfig, label: int, image: int) -> np.ndarray:
    """Image ``image`` of person ``label``: (112, 112, 3) uint8 RGB, aligned as arcface crops are.

    The person is photographed (drawn at the photo's own scale, with its light, white balance,
    gamma and noise), then warped to the aligned crop by ``scene.crop``, the function that makes
    the video dataset's crops.
    """
    return _render(cfg, _person(cfg, label), label, image)


def _person(cfg: FaceIdentityConfig, label: int) -> tuple[Identity, Style]:
    """Person ``label`` and their expression style, from the person's own stream."""
    irng = np.random.default_rng([cfg.seed, IDENTITY_STREAM, label])
    identity = sample_identity(irng)
    return identity, sample_style(irng, (0.7, 1.1))


def _render(cfg: FaceIdentityConfig, person: tuple[Identity, Style], label: int, image: int) -> np.ndarray:
    """``render_face`` for a person already drawn (drawn once for all their images)."""
    identity, style = person
    rng = np.random.default_rng([cfg.seed, IMAGE_STREAM, label, image])
    identity = dataclasses.replace(identity, clothes=tuple(float(v) for v in rng.uniform(30, 220, 3)))
    expr, strength = expression_of(cfg, label, image)
    au = prototype_intensity(expr, style) * strength
    blink = float(rng.random() < cfg.blink_rate)
    scale = float(rng.uniform(*cfg.face_px))
    side = int(math.ceil(2 * PHOTO_MARGIN * scale))
    pose = Pose(side / 2, side / 2 - CROP_CENTER_Y * scale, scale,
                roll=rng.uniform(-cfg.roll_deg, cfg.roll_deg), yaw=rng.uniform(-cfg.yaw_deg, cfg.yaw_deg))
    photo = _photograph(rng, cfg, identity, au, blink, pose, side)
    # the aligner finds the face a little off: the crop's pose errs in roll, scale and (in crop) shift
    seen = dataclasses.replace(pose, roll=pose.roll + rng.normal(0.0, cfg.align_roll_deg),
                               scale=pose.scale * (1 + rng.uniform(-cfg.scale_jitter, cfg.scale_jitter)))
    return crop(photo, seen, rng, cfg.shift_px)


def _photograph(rng: np.random.Generator, cfg: FaceIdentityConfig, identity: Identity, au: np.ndarray,
                blink: float, pose: Pose, side: int) -> np.ndarray:
    """(side, side, 3) uint8: the person at ``pose`` on a plain background, as a camera renders it."""
    size = side * SUPERSAMPLE
    canvas = Image.new("RGB", (size, size), tuple(int(v) for v in rng.uniform(40, 200, 3)))
    draw = ImageDraw.Draw(canvas)
    big = Pose(pose.cx * SUPERSAMPLE + (SUPERSAMPLE - 1) / 2, pose.cy * SUPERSAMPLE + (SUPERSAMPLE - 1) / 2,
               pose.scale * SUPERSAMPLE, pose.roll, pose.yaw)
    draw_drawing(draw, compile_parts(face_parts(identity, au, blink)), big)
    if rng.random() < cfg.occlusion_rate:
        draw_drawing(draw, compile_parts(occluder_parts(identity, int(rng.integers(3)), rng)), big)
    picture = canvas.reduce(SUPERSAMPLE)
    if rng.random() < cfg.blur_rate:    # the radius is given in crop pixels: scale it to the photo's
        radius = float(rng.uniform(*cfg.blur_radius)) * pose.scale / CROP_PX_PER_UNIT
        picture = picture.filter(ImageFilter.GaussianBlur(radius))
    pixels = np.asarray(picture, dtype=np.float32) * _light(rng, cfg, side)
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(rng.uniform(*cfg.noise_std)) + 0.5
    # the camera's tone curve (a table over the 256 levels), then (for some photos) greyscale
    levels = np.clip(pixels, 0, 255).astype(np.uint8)
    curve = 255.0 * (np.arange(256) / 255.0) ** rng.uniform(*cfg.gamma) + 0.5
    levels = curve.astype(np.uint8)[levels]
    if rng.random() < cfg.greyscale_rate:
        grey = (levels.astype(np.float32) @ GREY_WEIGHTS + 0.5).astype(np.uint8)
        levels = np.repeat(grey[:, :, None], 3, axis=2)
    return levels


def identity_jpegs(cfg: FaceIdentityConfig, label: int) -> list[bytes]:
    """The JPEG bytes of every image of person ``label``."""
    person = _person(cfg, label)
    return [jpeg_bytes(_render(cfg, person, label, image), cfg.jpeg_quality)
            for image in range(cfg.images_per_identity)]


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


def _light(rng: np.random.Generator, cfg: FaceIdentityConfig, side: int) -> np.ndarray:
    """(side, side, 3) light: a level, a linear gradient in a random direction and the white balance."""
    direction = rng.uniform(0, 2 * math.pi)
    steps = (np.arange(side, dtype=np.float32) / side - 0.5)
    strength = cfg.light_gradient * rng.uniform(0.3, 1.0)
    ramp = 1 + strength * (steps[None, :] * math.cos(direction) + steps[:, None] * math.sin(direction))
    warm, green = rng.uniform(-1, 1, 2) * cfg.white_balance
    balance = np.array([1 + warm, 1 + green / 3, 1 - warm], dtype=np.float32) * np.float32(rng.uniform(*cfg.light_gain))
    return ramp[:, :, None] * balance
