"""The drawn faces: every AU has its own visible cue, identities differ, crops agree with frames."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.data.synth.expressions import (
    AU_INDEX, DRAWN_AUS, EXPR_INDEX, NUM_DRAWN, prototype_intensity, sample_style,
)
from pipeline.data.synth.faces import Pose, draw_parts, face_parts, sample_identity
from pipeline.data.synth.config import LabelConfig
from pipeline.data.synth.scene import CROP_SIZE, aligned_pose, crop
from pipeline.data.synth.segments import make_timeline
from pipeline.labels import AU_NAMES

# rows of the 112x112 crop where each AU's cue must be centred (eyes at ~44, mouth at ~78)
EXPECTED_ROWS = {
    "AU1": (15, 42), "AU2": (15, 42), "AU4": (25, 48), "AU6": (38, 62), "AU7": (36, 50),
    "AU10": (58, 84), "AU12": (60, 86), "AU15": (66, 95), "AU23": (68, 90), "AU24": (68, 90),
    "AU25": (68, 95), "AU26": (68, 105),
}


def _render_aligned(identity, au: np.ndarray) -> np.ndarray:
    image = Image.new("RGB", (2 * CROP_SIZE, 2 * CROP_SIZE), (100, 100, 100))
    draw_parts(ImageDraw.Draw(image), face_parts(identity, au), aligned_pose(2 * CROP_SIZE))
    return np.asarray(image.reduce(2)).astype(np.float32)


def _au(name: str, value: float = 1.0) -> np.ndarray:
    vec = np.zeros(NUM_DRAWN)
    vec[AU_INDEX[name]] = value
    return vec


@pytest.mark.parametrize("name", AU_NAMES)
def test_each_au_draws_a_visible_cue_in_its_region(name: str) -> None:
    for seed in range(3):
        identity = sample_identity(np.random.default_rng(seed))
        base = _render_aligned(identity, np.zeros(NUM_DRAWN))
        changed = np.abs(_render_aligned(identity, _au(name)) - base).max(-1) > 25
        rows = np.nonzero(changed)[0]
        assert changed.sum() >= 60, f"{name}: only {changed.sum()} pixels change visibly"
        lo, hi = EXPECTED_ROWS[name]
        assert lo <= rows.mean() <= hi, f"{name}: cue centred at row {rows.mean():.1f}, expected {lo}-{hi}"


def test_cue_grows_with_intensity() -> None:
    identity = sample_identity(np.random.default_rng(0))
    base = _render_aligned(identity, np.zeros(NUM_DRAWN))
    for name in AU_NAMES:
        weak = np.abs(_render_aligned(identity, _au(name, 0.3)) - base).sum()
        strong = np.abs(_render_aligned(identity, _au(name, 1.0)) - base).sum()
        assert strong > 1.5 * weak > 0, name


def test_au_cues_are_distinct() -> None:
    for seed in range(3):
        identity = sample_identity(np.random.default_rng(seed))
        base = _render_aligned(identity, np.zeros(NUM_DRAWN))
        diffs = {name: (_render_aligned(identity, _au(name)) - base).ravel() for name in AU_NAMES}
        for i, a in enumerate(AU_NAMES):
            for b in AU_NAMES[i + 1:]:
                corr = np.corrcoef(diffs[a], diffs[b])[0, 1]
                assert corr < 0.8, f"{a} and {b} look alike (correlation {corr:.2f})"


def test_expressions_draw_their_prototype_aus() -> None:
    style = sample_style(np.random.default_rng(0), (0.9, 1.0))
    happy = prototype_intensity(EXPR_INDEX["Happiness"], style)
    sad = prototype_intensity(EXPR_INDEX["Sadness"], style)
    surprise = prototype_intensity(EXPR_INDEX["Surprise"], style)
    assert happy[AU_INDEX["AU6"]] > 0.5 and happy[AU_INDEX["AU12"]] > 0.5
    assert all(sad[AU_INDEX[au]] > 0.5 for au in ("AU1", "AU4", "AU15"))
    assert all(surprise[AU_INDEX[au]] > 0.5 for au in ("AU1", "AU2", "AU25", "AU26", "AU5"))
    assert not prototype_intensity(EXPR_INDEX["Neutral"], style).any()
    assert len(DRAWN_AUS) == NUM_DRAWN


def test_identities_differ() -> None:
    faces = [_render_aligned(sample_identity(np.random.default_rng(s)), np.zeros(NUM_DRAWN)) for s in range(4)]
    for i in range(len(faces)):
        for j in range(i + 1, len(faces)):
            assert np.abs(faces[i] - faces[j]).mean() > 5


def test_crop_of_a_posed_frame_matches_the_aligned_face() -> None:
    identity = sample_identity(np.random.default_rng(1))
    au = _au("AU12")
    pose = Pose(130.0, 110.0, 58.0, roll=9.0)
    frame = Image.new("RGB", (512, 512), (100, 100, 100))
    big = Pose(pose.cx * 2 + 0.5, pose.cy * 2 + 0.5, pose.scale * 2, pose.roll)
    draw_parts(ImageDraw.Draw(frame), face_parts(identity, au), big)
    frame_arr = np.asarray(frame.reduce(2))
    expected = _render_aligned(identity, au)
    rng = np.random.default_rng(0)
    aligned = crop(frame_arr, pose, rng, jitter_px=0.0).astype(np.float32)
    misaligned = crop(frame_arr, Pose(pose.cx + 8, pose.cy, pose.scale, pose.roll), rng, 0.0).astype(np.float32)
    assert aligned.shape == (CROP_SIZE, CROP_SIZE, 3)
    assert np.abs(aligned - expected).mean() < 4
    assert np.abs(misaligned - expected).mean() > 2 * np.abs(aligned - expected).mean()


def test_frames_labelled_with_an_au_show_its_cue() -> None:
    """Noiseless labels of a timeline against the faces drawn from it, AU by AU."""
    rng = np.random.default_rng(0)
    identity, style = sample_identity(rng), sample_style(rng, (0.65, 1.15))
    cfg = dataclasses.replace(LabelConfig(), boundary_jitter_frames=0, au_flip_rate=0.0, expr_swap_rate=0.0,
                              unlabelled_rate=0.0, spontaneous_au_per_min=30.0)
    timeline = make_timeline(rng, 1000, 25.0, cfg, style)
    frames = np.stack([_render_aligned(identity, timeline.intensity[i]) for i in range(0, 1000, 4)])
    labels = timeline.au_labels[::4]
    neutral = _render_aligned(identity, np.zeros(NUM_DRAWN))
    checked = 0
    for k, name in enumerate(AU_NAMES):
        region = np.abs(_render_aligned(identity, _au(name)) - neutral).max(-1) > 25
        score = np.abs(frames - neutral).max(-1)[:, region].mean(-1)
        on = labels[:, k] == 1
        if on.sum() < 5:
            continue
        assert score[on].mean() > 1.3 * score[~on].mean(), f"{name}: cue region barely differs when labelled"
        checked += 1
    assert checked >= 10
