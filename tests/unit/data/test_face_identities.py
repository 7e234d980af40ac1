"""The synthetic face-identity set: deterministic, identity visible, images varied, people new."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.data.faces.sets import open_face_set
from pipeline.data.synth import SynthConfig
from pipeline.data.synth.faces import sample_identity
from pipeline.data.synth import identities
from pipeline.data.synth.identities import (
    SUMMARY_FILE, WEB_EXPRESSION_SHARES, FaceIdentityConfig, expression_of, generate_face_identities, identity_of,
    render_face,
)
from pipeline.data.synth.plan import plan_videos
from pipeline.data.synth.scene import CROP_SIZE, crop
from pipeline.labels import EXPR_NAMES


def test_same_config_same_bytes_and_a_new_seed_new_people(tmp_path: Path) -> None:
    cfg = FaceIdentityConfig(identities=3, images_per_identity=2, seed=4)
    first = generate_face_identities(tmp_path / "a", cfg)
    second = generate_face_identities(tmp_path / "b", cfg)
    assert first == second and first["images"] == 6
    for name in ("rec/train.rec", "rec/train.idx", "folder/00002/0001.jpg"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert json.loads((tmp_path / "a" / SUMMARY_FILE).read_text())["config"]["seed"] == 4
    other = render_face(FaceIdentityConfig(identities=3, images_per_identity=2, seed=5), 0, 0)
    assert not np.array_equal(other, render_face(cfg, 0, 0))
    assert not list(tmp_path.glob(".*tmp-*"))


def test_parallel_workers_write_the_same_bytes(tmp_path: Path) -> None:
    cfg = FaceIdentityConfig(identities=3, images_per_identity=2, seed=4)
    generate_face_identities(tmp_path / "one", cfg)
    generate_face_identities(tmp_path / "two", cfg, workers=2)
    for name in ("rec/train.rec", "rec/train.idx", "folder/00001/0000.jpg"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def _colour(image: np.ndarray) -> np.ndarray:
    """Log colour of the hair line and of the face centre, light level taken out: a colour cue."""
    regions = (image[5:15, 40:72], image[50:75, 40:72])
    logs = np.concatenate([np.log(r.reshape(-1, 3).astype(float).mean(0) + 1) for r in regions])
    return logs - logs.mean()


def _shape(image: np.ndarray) -> np.ndarray:
    """The face's grey levels at 4x4 px, contrast-normalised: where its parts are, not their colour."""
    grey = image.astype(float).mean(-1)[28:96, 24:88].reshape(17, 4, 16, 4).mean((1, 3))
    return (grey - grey.mean()) / (grey.std() + 1e-6)


def _nearest_neighbour_accuracy(features: np.ndarray) -> float:
    """Leave-one-out nearest-neighbour identification over (people, images, ...) features."""
    people, images = features.shape[:2]
    flat, labels = features.reshape(people * images, -1), np.repeat(np.arange(people), images)
    dist = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    return float((labels[dist.argmin(1)] == labels).mean())


def test_identity_is_in_the_face_shape_more_than_in_colour_and_images_differ() -> None:
    people, per_person = 30, 6
    cfg = FaceIdentityConfig(identities=people, images_per_identity=per_person, seed=0, occlusion_rate=0.0)
    images = np.array([[render_face(cfg, p, i) for i in range(per_person)] for p in range(people)])
    by_shape = _nearest_neighbour_accuracy(np.array([[_shape(im) for im in person] for person in images]))
    by_colour = _nearest_neighbour_accuracy(np.array([[_colour(im) for im in person] for person in images]))
    # people are told apart by where their parts are, well above chance (1/30) and better than by
    # colour, which white balance, light and greyscale photos blur
    assert by_shape > 5 / people and by_shape > by_colour, (by_shape, by_colour)
    # ... while pose, light and expression change every image of a person
    diffs = [np.abs(images[p, 0].astype(int) - images[p, i]).mean() for p in range(people) for i in range(1, 6)]
    assert min(diffs) > 5.0


# nothing varied from image to image but the background and clothes
PLAIN = FaceIdentityConfig(identities=2, images_per_identity=2, face_px=(50.0, 50.0), yaw_deg=0.0,
                           roll_deg=0.0, align_roll_deg=0.0, scale_jitter=0.0, shift_px=0.0,
                           expression_shares=(1.0, 0, 0, 0, 0, 0, 0), blink_rate=0.0, occlusion_rate=0.0,
                           blur_rate=0.0, light_gain=(1.0, 1.0), light_gradient=0.0, white_balance=0.0,
                           gamma=(1.0, 1.0), greyscale_rate=0.0, noise_std=(0.0, 0.0))


def test_the_variations_are_configurable_and_checked() -> None:
    plain = PLAIN
    a, b = render_face(plain, 0, 0).astype(int), render_face(plain, 0, 1).astype(int)
    face = (slice(30, 90), slice(30, 82))
    assert np.abs(a[face] - b[face]).mean() < 1.0   # with nothing varied, only the background/clothes differ
    varied = render_face(FaceIdentityConfig(identities=2, images_per_identity=2), 0, 1).astype(int)
    assert np.abs(a[face] - varied[face]).mean() > 5.0
    with pytest.raises(ConfigError, match="occlusion_rate: must be in"):
        FaceIdentityConfig(occlusion_rate=1.5)
    with pytest.raises(ConfigError, match="identities: must be >= 2"):
        FaceIdentityConfig(identities=1)
    with pytest.raises(ConfigError, match="expression_shares: must be 7 shares >= 0 summing to 1"):
        FaceIdentityConfig(expression_shares=(0.5, 0.5))
    with pytest.raises(ConfigError, match="greyscale_rate: must be in"):
        FaceIdentityConfig(greyscale_rate=-0.1)
    with pytest.raises(ConfigError, match="face_px: must be 0 < low <= high"):
        FaceIdentityConfig(face_px=(60.0, 30.0))
    with pytest.raises(ConfigError, match="expression_strength: must be 0 <= low <= high"):
        FaceIdentityConfig(expression_strength=(1.0, 0.5))


def test_expressions_mix_as_in_web_photographs() -> None:
    cfg = FaceIdentityConfig()
    n = 3000
    draws = [expression_of(cfg, label, image) for label in range(250) for image in range(12)]
    exprs = np.array([expr for expr, _ in draws])
    for k, share in enumerate(WEB_EXPRESSION_SHARES):
        tolerance = 4 * np.sqrt(share * (1 - share) / n)
        assert abs((exprs == k).mean() - share) <= tolerance, (EXPR_NAMES[k], (exprs == k).mean(), share)
    assert WEB_EXPRESSION_SHARES[EXPR_NAMES.index("Neutral")] == 0.55
    assert WEB_EXPRESSION_SHARES[EXPR_NAMES.index("Happiness")] == 0.30
    strengths = np.array([strength for expr, strength in draws if expr == EXPR_NAMES.index("Happiness")])
    assert strengths.min() >= 0.25 and strengths.max() <= 1.0 and strengths.std() > 0.15   # smiles of all sizes
    assert all(strength == 0.0 for expr, strength in draws if expr == 0)


def test_a_share_of_images_is_greyscale() -> None:
    cfg = FaceIdentityConfig(identities=25, images_per_identity=12)
    n = cfg.identities * cfg.images_per_identity
    images = [render_face(cfg, label, image) for label in range(cfg.identities) for image in range(12)]
    grey = sum(bool(np.array_equal(im[..., 0], im[..., 1]) and np.array_equal(im[..., 1], im[..., 2]))
               for im in images)
    assert abs(grey / n - cfg.greyscale_rate) <= 4 * np.sqrt(0.1 * 0.9 / n), grey


def test_images_are_photographs_warped_by_the_video_crop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each image is drawn at the photo's own scale, then goes through scene.crop, as video crops do."""
    seen = []

    def spy(frame: np.ndarray, pose, rng, jitter_px: float) -> np.ndarray:
        seen.append((frame.shape, pose.scale))
        return crop(frame, pose, rng, jitter_px)

    monkeypatch.setattr(identities, "crop", spy)
    cfg = dataclasses.replace(PLAIN, face_px=(30.0, 30.0))
    small = render_face(cfg, 0, 0)
    assert small.shape == (CROP_SIZE, CROP_SIZE, 3)
    big = render_face(dataclasses.replace(cfg, face_px=(60.0, 60.0)), 0, 0)
    assert [scale for _, scale in seen[:2]] == [30.0, 60.0]
    assert seen[0][0][0] < CROP_SIZE < seen[1][0][0]     # a small photo is enlarged, a large one reduced
    # the same person in the same aligned place either way; the enlarged one is softer
    face = (slice(30, 90), slice(30, 82))
    other = render_face(cfg, 1, 0)
    same, different = (np.abs(small[face].astype(int) - im[face]).mean() for im in (big, other))
    assert same < 0.5 * different, (same, different)
    assert _sharpness(small) < _sharpness(big)


def _sharpness(image: np.ndarray) -> float:
    grey = image.astype(float).mean(-1)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def test_people_are_not_the_affwild2_subjects() -> None:
    synth = SynthConfig.from_preset("tiny", seed=0)
    subjects = {sample_identity(np.random.default_rng([synth.seed, 2, plan.index, k]))
                for plan in plan_videos(synth) for k in range(len(plan.subjects))}
    people = {identity_of(FaceIdentityConfig(seed=0), label) for label in range(50)}
    assert subjects and not subjects & people


def test_written_set_reads_back_as_rendered(tmp_path: Path) -> None:
    cfg = FaceIdentityConfig(identities=2, images_per_identity=3, seed=2, jpeg_quality=95)
    generate_face_identities(tmp_path / "set", cfg)
    image, label = open_face_set(tmp_path / "set" / "folder")[4]
    assert label == 1
    own = np.abs(image.astype(int) - render_face(cfg, 1, 1)).mean()         # JPEG error only
    other = np.abs(image.astype(int) - render_face(cfg, 1, 2)).mean()
    assert own < 5.0 and other > 3 * own
