"""Videos of real photographs moving by known similarity transforms, to measure detection, alignment and tracking.

Every frame is drawn from photographs by a known (2, 3) matrix per photograph (photo pixel -> frame
pixel), so where a face's landmarks must be in each frame is known exactly. The photographs ship with
installed packages (no download): :func:`astronaut` (scikit-image) and :func:`grace_hopper` (matplotlib).

Example:
    >>> frames, matrices = moving_photo(astronaut(), centre=(223.0, 127.0), n_frames=3)
    >>> frames.shape, matrices.shape
    ((3, 240, 320, 3), (3, 2, 3))
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from pipeline.data.synth.photo_video import write_frames_video
from pipeline.faces.align import warp_image
from pipeline.jpeg import read_jpeg


def astronaut() -> np.ndarray:
    """scikit-image's astronaut photograph (Eileen Collins), (512, 512, 3) uint8 RGB."""
    import skimage.data

    return skimage.data.astronaut()


def grace_hopper() -> np.ndarray:
    """matplotlib's sample photograph of Grace Hopper, (600, 512, 3) uint8 RGB."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: matplotlib's sample photograph is missing; reinstall matplotlib")
    return read_jpeg(path)


def similarity(angle_deg: float, zoom: float, source: tuple[float, float], target: tuple[float, float]) -> np.ndarray:
    """The (2, 3) matrix rotating by ``angle_deg`` (counter-clockwise on screen) and scaling by ``zoom``
    about photo point ``source``, which lands on frame point ``target``."""
    a = math.radians(angle_deg)
    # image y points down, so a counter-clockwise turn on screen is a negative angle in x/y maths
    rotation = zoom * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    offset = np.asarray(target, np.float64) - rotation @ np.asarray(source, np.float64)
    return np.hstack([rotation, offset[:, None]])


def render(layers: Sequence[tuple[np.ndarray, np.ndarray]], size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """One (height, width, 3) frame: each ``(photo, matrix)`` drawn in turn (later ones cover earlier ones) on black."""
    width, height = size
    frame = np.zeros((height, width, 3), np.float32)
    for photo, matrix in layers:
        rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
        warped = warp_image(rgba, matrix, size).astype(np.float32)
        alpha = warped[..., 3:] / 255.0
        frame = frame * (1.0 - alpha) + warped[..., :3] * alpha
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def moving_photo(
    photo: np.ndarray,
    centre: tuple[float, float],
    n_frames: int = 40,
    size: tuple[int, int] = (320, 240),
    max_angle: float = 30.0,
    zoom: tuple[float, float] = (1.0, 1.3),
    max_shift: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames of ``photo`` turning, zooming and shifting about its point ``centre``; and each frame's matrix.

    Frame ``i`` of ``n`` (``t = i / (n - 1)``) is rotated by ``max_angle * sin(2 pi t)`` degrees, zoomed
    linearly from ``zoom[0]`` to ``zoom[1]``, and ``centre`` lands ``max_shift * (sin(2 pi t), sin(pi t) / 2)``
    pixels from the frame's centre. Returns (N, H, W, 3) uint8 frames and (N, 2, 3) matrices.
    """
    matrices = moving_photo_matrices(centre, n_frames, size, max_angle, zoom, max_shift)
    return np.stack([render([(photo, matrix)], size) for matrix in matrices]), matrices


def moving_photo_matrices(centre: tuple[float, float], n_frames: int = 40, size: tuple[int, int] = (320, 240),
                          max_angle: float = 30.0, zoom: tuple[float, float] = (1.0, 1.3),
                          max_shift: float = 30.0) -> np.ndarray:
    """The (N, 2, 3) photo-to-frame matrices of :func:`moving_photo` (same arguments); render frame ``i``
    with ``render([(photo, matrices[i])], size)`` to make a long or large video one frame at a time."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    matrices = []
    for i in range(n_frames):
        t = i / max(n_frames - 1, 1)
        target = (size[0] / 2 + max_shift * math.sin(2 * math.pi * t),
                  size[1] / 2 + max_shift * math.sin(math.pi * t) / 2)
        matrices.append(similarity(max_angle * math.sin(2 * math.pi * t), zoom[0] + (zoom[1] - zoom[0]) * t,
                                   centre, target))
    return np.stack(matrices)


def crossing_photos(
    photos: Sequence[tuple[np.ndarray, tuple[float, float], float]],
    n_frames: int = 40,
    size: tuple[int, int] = (400, 240),
    patch: float = 1.8,
) -> tuple[np.ndarray, np.ndarray]:
    """Two faces side by side that swap places once, the second passing in front of the first.

    ``photos`` are two ``(photo, face centre, face side in px)``; each face is cut out as a square
    ``patch`` times its side, scaled to a side of ``size[1] / 2.4``, and moves linearly from a quarter
    of the frame's width to three quarters (the first) or back (the second). Returns (N, H, W, 3)
    uint8 frames and (N, 2, 2, 3) matrices (frame, photo, matrix).
    """
    if len(photos) != 2:
        raise ValueError(f"need two photographs, got {len(photos)}")
    face_px = size[1] / 2.4
    cut = [_cut(photo, centre, side, patch, face_px) for photo, centre, side in photos]
    frames, matrices = [], []
    for i in range(n_frames):
        t = i / max(n_frames - 1, 1)
        xs = (size[0] * (0.25 + 0.5 * t), size[0] * (0.75 - 0.5 * t))
        layers = [(piece, similarity(0.0, scale, centre, (x, size[1] / 2)))
                  for (piece, centre, scale), x in zip(cut, xs)]
        frames.append(render(layers, size))
        # the matrices map points of the uncut photographs
        matrices.append([m @ np.array([[1.0, 0.0, -(c0 - c1)], [0.0, 1.0, -(d0 - d1)], [0.0, 0.0, 1.0]])
                         for (_, m), (_, (c1, d1), _), (_, (c0, d0), _) in zip(layers, cut, photos)])
    return np.stack(frames), np.asarray(matrices)


def side_by_side_photos(
    photos: Sequence[tuple[np.ndarray, tuple[float, float], float]],
    n_frames: int = 12,
    size: tuple[int, int] = (400, 240),
    face_px: float = 100.0,
    drift: float = 2.0,
) -> np.ndarray:
    """(N, H, W, 3) uint8 frames of faces side by side, evenly spaced, each drifting right by ``drift`` px per frame.

    ``photos`` are ``(photo, face centre, face side in px)``; each face is cut out as a square of 1.8
    times its side and scaled to ``face_px``.
    """
    pieces = [_cut(photo, centre, side, 1.8, face_px) for photo, centre, side in photos]
    step = size[0] / (len(pieces) + 1)
    return np.stack([
        render([(piece, similarity(0.0, zoom, centre, (step * (k + 1) + drift * i, size[1] / 2)))
                for k, (piece, centre, zoom) in enumerate(pieces)], size)
        for i in range(n_frames)
    ])


def _cut(photo: np.ndarray, centre: tuple[float, float], side: float, patch: float,
         face_px: float) -> tuple[np.ndarray, tuple[float, float], float]:
    """The square ``patch`` x ``side`` around a face: the piece, the face centre in it, the zoom to ``face_px``."""
    half = patch * side / 2
    left, top = int(round(centre[0] - half)), int(round(centre[1] - half))
    piece = np.asarray(Image.fromarray(photo).crop((left, top, left + int(2 * half), top + int(2 * half))))
    return piece, (centre[0] - left, centre[1] - top), face_px / side


def located_faces(photos: Sequence[np.ndarray]) -> list[tuple[np.ndarray, tuple[float, float], float]]:
    """Each photograph with its first detected face's centre (mean of the five landmarks) and box side:
    the ``(photo, face centre, face side in px)`` that :func:`crossing_photos` and
    :func:`side_by_side_photos` take. A photograph without a detected face is a ValueError."""
    from pipeline.faces.detect import DetectorConfig, FaceDetector

    detector = FaceDetector(DetectorConfig())
    located = []
    for k, photo in enumerate(photos):
        faces = detector.detect(photo)
        if not faces:
            raise ValueError(f"photograph {k} ({photo.shape}): no face detected")
        located.append((photo, tuple(float(v) for v in faces[0].landmarks.mean(axis=0)), float(faces[0].box.w)))
    return located


def write_moving_photo_video(
    path: str | Path,
    located: tuple[np.ndarray, tuple[float, float], float],
    size: tuple[int, int],
    n_frames: int = 30,
    face_share: float = 0.25,
    max_angle: float = 15.0,
    display_rotation: int = 0,
) -> tuple[Path, np.ndarray]:
    """An MP4 of a located photograph (:func:`located_faces`) moving as :func:`moving_photo` moves it, seen at
    ``size`` (width, height) by a viewer, its face ``face_share`` of the frame's height; and the (N, 2, 3)
    photo-to-viewed-frame matrices.

    With ``display_rotation`` (degrees counter-clockwise, a multiple of 90) the pictures are stored turned
    the other way with that display matrix, as a phone stores a portrait clip (``-90``): decoded and
    turned upright, they are the frames a viewer sees at ``size``.
    """
    if display_rotation % 90:
        raise ValueError(f"display_rotation must be a multiple of 90 degrees, got {display_rotation}")
    photo, centre, side = located
    zoom = face_share * size[1] / side
    matrices = moving_photo_matrices(centre, n_frames, size, max_angle, (zoom, 1.2 * zoom), max_shift=size[0] / 20)
    # stored = viewed turned back by the display rotation, so that applying it gives the viewed frame
    stored = (np.rot90(render([(photo, matrix)], size), -display_rotation // 90) for matrix in matrices)
    video = write_frames_video(path, stored, audio_hz=None, display_rotation=display_rotation)
    return video, matrices
