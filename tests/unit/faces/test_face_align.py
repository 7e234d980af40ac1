"""The five-landmark similarity alignment: exact on similar point sets, least squares otherwise, and crops."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.faces.align import ARCFACE_TEMPLATE, align_face, invert, similarity_transform, transform_points, warp_image
from pipeline.faces.moving_photos import similarity


@pytest.mark.parametrize("angle, zoom", [(0.0, 1.0), (30.0, 0.5), (-25.0, 2.5), (170.0, 1.3)])
def test_similarity_transform_recovers_a_known_similarity(angle: float, zoom: float) -> None:
    known = similarity(angle, zoom, (56.0, 72.0), (200.0, 150.0))   # template -> frame
    frame_points = transform_points(known, ARCFACE_TEMPLATE)
    matrix = similarity_transform(frame_points)
    np.testing.assert_allclose(matrix, invert(known), atol=1e-9)
    np.testing.assert_allclose(transform_points(matrix, frame_points), ARCFACE_TEMPLATE, atol=1e-9)


def test_similarity_transform_is_the_least_squares_fit() -> None:
    rng = np.random.default_rng(0)
    src = ARCFACE_TEMPLATE * 2.0 + rng.normal(0, 3.0, (5, 2))
    matrix = similarity_transform(src)
    residual = ((transform_points(matrix, src) - ARCFACE_TEMPLATE) ** 2).sum()
    assert np.isclose(np.linalg.det(matrix[:, :2]) ** 0.5, np.hypot(*matrix[:, 0]))  # uniform scale, no shear
    assert np.linalg.det(matrix[:, :2]) > 0   # a rotation, not a reflection
    for _ in range(50):   # no nearby similarity fits better
        nudged = matrix + rng.normal(0, 1e-3, (2, 3)) * [[1, 1, 100], [1, 1, 100]]
        nudged[1, :2] = [-nudged[0, 1], nudged[0, 0]]
        assert ((transform_points(nudged, src) - ARCFACE_TEMPLATE) ** 2).sum() >= residual - 1e-9


def test_mirrored_points_still_give_a_rotation() -> None:
    mirrored = ARCFACE_TEMPLATE * [-1.0, 1.0]
    assert np.linalg.det(similarity_transform(mirrored)[:, :2]) > 0


@pytest.mark.parametrize("bad", [np.zeros((5, 2)), np.ones((5, 3)), np.array([[np.nan, 0.0]] * 5)])
def test_bad_landmarks_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="landmarks|point sets"):
        similarity_transform(bad, ARCFACE_TEMPLATE if bad.shape == (5, 2) else np.zeros(bad.shape))


def test_warp_puts_a_frame_pixel_where_the_matrix_sends_it() -> None:
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[50, 80] = 255
    matrix = np.array([[1.0, 0.0, -6.0], [0.0, 1.0, 9.0]])   # a whole-pixel shift: no blur
    crop = warp_image(frame, matrix, (112, 112))
    assert np.argwhere(crop[..., 0] == 255).tolist() == [[59, 74]]


def test_align_face_puts_the_landmarks_on_the_template() -> None:
    frame = np.zeros((240, 320, 3), np.uint8)
    points = transform_points(similarity(20.0, 1.4, (56.0, 72.0), (160.0, 120.0)), ARCFACE_TEMPLATE)
    for x, y in np.rint(points).astype(int):
        frame[y - 1:y + 2, x - 1:x + 2] = 255
    crop = align_face(frame, np.rint(points))
    assert crop.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE:   # each landmark's bright dot is within 2 px of its template point
        near = crop[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3, 0]
        assert near.max() > 100
    assert crop[5:25, 5:25].max() == 0   # and nothing else is bright
