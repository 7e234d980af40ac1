"""Video frames: a background, one or two posed faces, lighting, blur and sensor noise; aligned crops.

A ``Scene`` holds what stays fixed in one video (background, light direction, noise level) and the
smooth per-frame trajectories (pose of each face, light level). ``render`` draws frame i at twice
the resolution and box-downsamples it (cheap anti-aliasing); ``crop`` warps the finished frame into
the 112x112 aligned face crop with the face's known pose, as a detector + aligner would.

    >>> rng = np.random.default_rng(0)
    >>> scene = make_scene(rng, 50, 25.0, (256, 256), FaceConfig(), n_faces=1)
    >>> scene.frame_shape, scene.poses[0].shape
    ((256, 256, 3), (50, 5))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.data.synth.config import FaceConfig
from pipeline.data.synth.faces import Drawing, Pose, draw_drawing

CROP_SIZE = 112
CROP_PX_PER_UNIT = 50.0      # face units -> crop pixels (eyes ~32 px apart, like 112x112 arcface crops)
CROP_CENTER_Y = 0.12         # face-coordinate y at the crop centre
SUPERSAMPLE = 2
NOISE_FIELDS = 3             # sensor noise: a few fields per video, taken at random offsets per frame
NOISE_MARGIN = 32


@dataclass(frozen=True)
class Scene:
    """Fixed look and per-frame trajectories of one video."""

    background: Image.Image           # supersampled background
    poses: list[np.ndarray]           # per face: (N, 5) cx, cy, scale, roll, yaw (video pixels/degrees)
    light: np.ndarray                 # (N,) global light level
    gain_map: np.ndarray              # (H, W, 3) directional light times colour cast
    noise: np.ndarray                 # (NOISE_FIELDS, H + margin, W + margin, 3) sensor noise (+0.5 rounding)
    align_jitter_px: float

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        w, h = self.background.size
        return (h // SUPERSAMPLE, w // SUPERSAMPLE, 3)

    def pose(self, face: int, i: int) -> Pose:
        """Pose of face ``face`` in frame ``i`` (video pixels)."""
        cx, cy, scale, roll, yaw = self.poses[face][i]
        return Pose(float(cx), float(cy), float(scale), float(roll), float(yaw))


def make_scene(rng: np.random.Generator, n: int, fps: float, size: tuple[int, int], cfg: FaceConfig,
               n_faces: int) -> Scene:
    """Draw a background and smooth pose and light trajectories for ``n`` frames."""
    width, height = size
    background = _background(rng, width * SUPERSAMPLE, height * SUPERSAMPLE)
    base = float(rng.uniform(*cfg.face_px)) * (height / 256.0)
    poses = []
    for k in range(n_faces):
        scale = base * (0.72 if n_faces == 2 else 1.0) * float(rng.uniform(0.92, 1.08))
        cx = width * ((0.28 + 0.44 * k) if n_faces == 2 else 0.5) + rng.uniform(-0.04, 0.04) * width
        cy = height * 0.44 + rng.uniform(-0.03, 0.03) * height
        traj = np.stack([
            cx + cfg.shift_px * _smooth(rng, n, fps, cfg.pose_speed_hz),
            cy + cfg.shift_px * 0.6 * _smooth(rng, n, fps, cfg.pose_speed_hz),
            scale * (1 + cfg.scale_jitter * _smooth(rng, n, fps, cfg.pose_speed_hz * 0.5)),
            cfg.roll_deg * _smooth(rng, n, fps, cfg.pose_speed_hz),
            cfg.yaw_deg * _smooth(rng, n, fps, cfg.pose_speed_hz),
        ], axis=1)
        poses.append(traj)
    light = rng.uniform(*cfg.light_gain) * (1 + 0.08 * _smooth(rng, n, fps, 0.1))
    n_changes = rng.poisson(cfg.light_change_per_min * n / fps / 60.0)
    for _ in range(n_changes):     # sudden lighting changes (a lamp, a cloud), ramped over ~0.3 s
        start = int(rng.integers(0, n))
        ramp = np.clip((np.arange(n) - start) / max(0.3 * fps, 1), 0, 1)
        light = light * (1 + (rng.uniform(0.7, 1.3) - 1) * ramp)
    light = np.clip(light, 0.45, 1.5)
    direction = float(rng.uniform(0, 2 * math.pi))
    strength = float(rng.uniform(0.3, 1.0) * cfg.light_gradient)
    tint = 1 + rng.uniform(-0.08, 0.08, 3)
    noise_std = float(rng.uniform(*cfg.noise_std))
    noise = rng.standard_normal((NOISE_FIELDS, height + NOISE_MARGIN, width + NOISE_MARGIN, 3), dtype=np.float32)
    return Scene(
        background=background, poses=poses, light=light.astype(np.float32),
        gain_map=(_light_field(height, width, direction, strength)[:, :, None] * tint).astype(np.float32),
        noise=noise * noise_std + 0.5, align_jitter_px=cfg.align_jitter_px,
    )


def render(scene: Scene, i: int, faces: list[tuple[list[Drawing], Pose | None]], blur: list[float],
           rng: np.random.Generator) -> np.ndarray:
    """Frame ``i`` as uint8 (H, W, 3): ``faces`` are (drawings, pose) pairs; ``blur`` a radius per face."""
    canvas = scene.background.copy()
    draw = ImageDraw.Draw(canvas)
    for drawings, pose in faces:
        if pose is not None:
            big = _supersampled(pose)
            for drawing in drawings:
                draw_drawing(draw, drawing, big)
    image = canvas.reduce(SUPERSAMPLE)
    for (_, pose), radius in zip(faces, blur):
        if pose is not None and radius > 0:
            box = _face_box(pose, image.size)
            region = image.crop(box).filter(ImageFilter.GaussianBlur(radius))
            image.paste(region, box[:2])
    frame = np.asarray(image, dtype=np.float32)
    h, w = frame.shape[:2]
    frame *= scene.gain_map
    frame *= scene.light[i]
    oy, ox = rng.integers(0, NOISE_MARGIN, 2)
    frame += scene.noise[rng.integers(NOISE_FIELDS), oy:oy + h, ox:ox + w]
    np.clip(frame, 0, 255, out=frame)
    return frame.astype(np.uint8)


def crop(frame: np.ndarray, pose: Pose, rng: np.random.Generator, jitter_px: float) -> np.ndarray:
    """The 112x112 aligned crop of the face at ``pose`` (alignment ignores yaw, as landmark aligners do)."""
    c, s = math.cos(math.radians(pose.roll)), math.sin(math.radians(pose.roll))
    k = pose.scale / CROP_PX_PER_UNIT
    # landmarks shift sideways with yaw; the aligner centres on them
    x_off = 0.3 * math.sin(math.radians(pose.yaw)) - CROP_SIZE / 2 / CROP_PX_PER_UNIT
    y_off = CROP_CENTER_Y - CROP_SIZE / 2 / CROP_PX_PER_UNIT
    jx, jy = rng.normal(0, jitter_px, 2) / CROP_PX_PER_UNIT if jitter_px > 0 else (0.0, 0.0)
    x_off, y_off = x_off + jx, y_off + jy
    a, b = k * c, -k * s
    d, e = k * s, k * c
    tx = pose.cx + pose.scale * (c * x_off - s * y_off)
    ty = pose.cy + pose.scale * (s * x_off + c * y_off)
    image = Image.fromarray(frame).transform((CROP_SIZE, CROP_SIZE), Image.Transform.AFFINE,
                                             (a, b, tx, d, e, ty), resample=Image.Resampling.BILINEAR)
    return np.asarray(image)


def aligned_pose(size: int = CROP_SIZE) -> Pose:
    """The pose that draws a face exactly where ``crop`` puts it (for rendering crops directly)."""
    scale = CROP_PX_PER_UNIT * size / CROP_SIZE
    return Pose(size / 2, size / 2 - CROP_CENTER_Y * scale, scale)


def _supersampled(pose: Pose) -> Pose:
    k = SUPERSAMPLE
    return Pose(pose.cx * k + (k - 1) / 2, pose.cy * k + (k - 1) / 2, pose.scale * k, pose.roll, pose.yaw)


def _face_box(pose: Pose, size: tuple[int, int]) -> tuple[int, int, int, int]:
    r = pose.scale * 1.35
    w, h = size
    return (max(int(pose.cx - r), 0), max(int(pose.cy - r), 0), min(int(pose.cx + r), w), min(int(pose.cy + r), h))


def _light_field(h: int, w: int, direction: float, strength: float) -> np.ndarray:
    """Directional light: a linear ramp across the frame."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (x / w - 0.5) * math.cos(direction) + (y / h - 0.5) * math.sin(direction)
    return (1 + strength * ramp).astype(np.float32)


def _smooth(rng: np.random.Generator, n: int, fps: float, hz: float) -> np.ndarray:
    """A smooth random signal in about [-1, 1]: a few sinusoids around ``hz``."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    for _ in range(3):
        out += np.sin(2 * math.pi * hz * rng.uniform(0.4, 1.6) * t + rng.uniform(0, 2 * math.pi))
    return out / 2.0


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A room-like backdrop: a vertical colour gradient, a few blocks (furniture, window) and blobs."""
    top, bottom = rng.uniform(40, 220, 3), rng.uniform(30, 200, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    base = (top * (1 - ramp) + bottom * ramp) * np.ones((1, width, 1))
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.uniform(-0.2, 0.9) * width, rng.uniform(-0.2, 0.9) * height
        x1, y1 = x0 + rng.uniform(0.1, 0.6) * width, y0 + rng.uniform(0.1, 0.6) * height
        fill = tuple(int(v) for v in rng.uniform(20, 235, 3))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        else:
            draw.ellipse([x0, y0, x1, y1], fill=fill)
    return image.filter(ImageFilter.GaussianBlur(1.5 * SUPERSAMPLE))
