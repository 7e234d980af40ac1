"""Five-landmark face alignment: a least-squares similarity transform onto the arcface 112x112 template.

The one place a face crop is made. :func:`similarity_transform` is Umeyama's closed-form least-squares
similarity (rotation, uniform scale, translation; no reflection) from the five landmarks to
:data:`ARCFACE_TEMPLATE`, insightface's ``arcface_src`` points for 112x112 crops (left eye centre,
right eye centre, nose tip, left and right mouth corner, left/right as seen in the image). This is
the alignment of insightface's IResNet models and of Aff-Wild2's ``cropped_aligned`` crops.

Coordinates are pixel indices (pixel ``(0, 0)``'s centre is the point ``(0.0, 0.0)``), as dlib's
landmarks and OpenCV's ``warpAffine`` use them. Parts of the crop outside the frame are black.

Example:
    >>> import numpy as np
    >>> frame = np.zeros((240, 320, 3), np.uint8)
    >>> points = ARCFACE_TEMPLATE * 1.5 + (100.0, 40.0)      # a face 1.5x the template, shifted
    >>> matrix = similarity_transform(points)
    >>> np.allclose(transform_points(matrix, points), ARCFACE_TEMPLATE)
    True
    >>> align_face(frame, points).shape
    (112, 112, 3)
"""

from __future__ import annotations

import numpy as np
from PIL import Image

CROP_SIZE = 112

# insightface's arcface_src: where the five landmarks of a 112x112 aligned face lie.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray = ARCFACE_TEMPLATE) -> np.ndarray:
    """The (2, 3) matrix ``[sR | t]`` minimising ``sum |s R src_i + t - dst_i|^2`` (Umeyama, 1991).

    ``src`` and ``dst`` are (N, 2) point sets, N >= 2, not all equal.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    if not np.isfinite(src).all():
        raise ValueError(f"landmarks must be finite, got {src.tolist()}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c ** 2).sum() / len(src)
    if src_var <= 1e-12:
        raise ValueError(f"landmarks all lie on one point: {src.tolist()}")
    u, sigma, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    # d = -1 would make R a reflection; the sign flip on the last axis keeps it a rotation
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(d) @ vt
    scale = (sigma * d).sum() / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine ``matrix`` to (N, 2) ``points``."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a (2, 3) affine matrix."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def warp_image(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The (height, width, C) image whose pixel ``p`` shows ``image`` point ``matrix^-1 p`` (bilinear, zeros outside).

    ``image`` is (H, W, 3) RGB or (H, W, 4) RGBA uint8; ``size`` is (width, height).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3|4) uint8, got {image.shape} {image.dtype}")
    # PIL samples output pixel (x, y) at its centre (x + 0.5, y + 0.5) in coordinates where a pixel
    # spans [i, i + 1): conjugate the pixel-index matrix with that half-pixel shift.
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    unshift = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    out_to_in = shift @ np.vstack([invert(matrix), [0.0, 0.0, 1.0]]) @ unshift
    # Only the part of the image the output samples is handed to PIL (copying a whole 4K frame into a
    # PIL image costs more than the warp of a face): the output's corners bound it; a margin of 2 px keeps
    # every bilinear neighbour of a sampled point inside the part, so the result does not change.
    width, height = size
    corners = out_to_in[:2] @ np.array([[0, width, 0, width], [0, 0, height, height], [1, 1, 1, 1]], np.float64)
    x0, y0 = (max(0, int(np.floor(v)) - 2) for v in corners.min(axis=1))
    x1 = min(image.shape[1], int(np.ceil(corners[0].max())) + 2)
    y1 = min(image.shape[0], int(np.ceil(corners[1].max())) + 2)
    if x1 <= x0 or y1 <= y0:   # the output shows nothing of the image
        return np.zeros((height, width, image.shape[2]), np.uint8)
    out_to_in = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]]) @ out_to_in
    warped = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1])).transform(
        size, Image.Transform.AFFINE, tuple(out_to_in[:2].ravel()), Image.Resampling.BILINEAR
    )
    return np.asarray(warped, dtype=np.uint8)


def warp_face(frame: np.ndarray, matrix: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The (size, size, 3) crop whose pixel ``p`` shows frame point ``matrix^-1 p`` (bilinear, black outside)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    return warp_image(frame, matrix, (size, size))


def align_face(frame: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The (size, size, 3) aligned crop of the face whose five landmarks (insightface order) are given.

    ``size`` other than 112 scales the template (the arcface template is defined for 112x112).
    """
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE * (size / CROP_SIZE))
    return warp_face(frame, matrix, size)
