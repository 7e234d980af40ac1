"""The drawn population: facial measures at their documented spread, skin tones in clusters, static
marks at their shares, and every AU still visible on every kind of face."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.data.synth.expressions import AU_INDEX, NUM_DRAWN
from pipeline.data.synth.faces import (
    ASYMMETRY_SD, BEARD_SHARE, BREADTH, CANTHAL_TILT_DEG, GEOMETRY, GLASSES_SHARE, HAIR_COLORS, IRIS_COLORS,
    LENGTH, SKIN_CLUSTERS, SKIN_SHARES, Identity, draw_parts, face_parts, sample_identity,
)
from pipeline.data.synth.identities import IDENTITY_STREAM
from pipeline.data.synth.scene import CROP_SIZE, aligned_pose
from pipeline.labels import AU_NAMES

DOCS = Path(__file__).resolve().parents[3] / "docs" / "pretrain.md"
N_PEOPLE = 2000


@pytest.fixture(scope="module")
def people() -> list[Identity]:
    return [sample_identity(np.random.default_rng([0, IDENTITY_STREAM, k])) for k in range(N_PEOPLE)]


def _binomial_ok(count: int, n: int, share: float, sds: float = 4.0) -> bool:
    return abs(count / n - share) <= sds * np.sqrt(share * (1 - share) / n)


def documented_cvs() -> dict[str, float]:
    """The CV column of the measures table in docs/pretrain.md, by measure name."""
    rows = re.findall(r"^\| `(\w+)` \|[^|]*\|[^|]*\| ([\d.]+) % \|", DOCS.read_text(), flags=re.M)
    return {name: float(cv) / 100 for name, cv in rows}


def test_the_docs_state_every_measure_and_its_cv() -> None:
    documented = documented_cvs()
    assert set(documented) == set(GEOMETRY)
    for name, (_, cv) in GEOMETRY.items():
        assert documented[name] == pytest.approx(cv), name


def test_each_measure_varies_across_people_at_its_documented_cv(people: list[Identity]) -> None:
    documented = documented_cvs()
    for name, cv in documented.items():
        values = np.array([p.measures()[name] for p in people])
        measured = values.std() / values.mean()
        assert 0.9 * cv <= measured <= 1.1 * cv, f"{name}: CV {measured:.3f}, documented {cv:.3f}"


def test_breadths_and_lengths_grow_together_and_not_with_each_other(people: list[Identity]) -> None:
    m = {name: np.array([p.measures()[name] for p in people]) for name in GEOMETRY}
    assert 0.25 < np.corrcoef(m[BREADTH[0]], m[BREADTH[-1]])[0, 1] < 0.55
    assert 0.25 < np.corrcoef(m[LENGTH[0]], m[LENGTH[1]])[0, 1] < 0.55
    assert abs(np.corrcoef(m["face_w"], m["nose_len"])[0, 1]) < 0.1


def test_tilt_asymmetry_and_static_marks_at_their_shares(people: list[Identity]) -> None:
    tilt = np.array([p.eye_tilt for p in people])
    assert abs(tilt.mean() - CANTHAL_TILT_DEG[0]) < 0.3 and abs(tilt.std() - CANTHAL_TILT_DEG[1]) < 0.3
    for name, sd in ASYMMETRY_SD.items():
        values = np.array([getattr(p, name) for p in people])
        assert 0.9 * sd < values.std() < 1.1 * sd and abs(values.mean()) < 4 * sd / np.sqrt(N_PEOPLE), name
    assert _binomial_ok(sum(p.beard > 0 for p in people), N_PEOPLE, BEARD_SHARE)
    assert _binomial_ok(sum(p.glasses > 0 for p in people), N_PEOPLE, GLASSES_SHARE)
    assert 0.1 < np.mean([len(p.moles) > 0 for p in people]) < 0.9
    folds = np.array([p.rest_fold for p in people])
    assert folds.max() < 0.5 and folds.std() > 0.05     # a fold of one's own, never AU10's at full strength


def test_skin_tones_fall_in_clusters_at_their_shares(people: list[Identity]) -> None:
    skin = np.array([p.skin for p in people])
    nearest = np.linalg.norm(skin[:, None] - SKIN_CLUSTERS[None], axis=-1).argmin(1)
    counts = np.bincount(nearest, minlength=len(SKIN_CLUSTERS))
    # clusters overlap a little, so the nearest centre is not always the drawn one: 3 points of slack
    assert np.all(np.abs(counts / N_PEOPLE - SKIN_SHARES) < 0.03), counts / N_PEOPLE
    # within a cluster, tones spread (not one colour per cluster)
    assert skin[nearest == 0].std(0).min() > 5


def test_hair_and_eye_colours_go_with_the_skin_cluster(people: list[Identity]) -> None:
    skin = np.array([p.skin for p in people])
    nearest = np.linalg.norm(skin[:, None] - SKIN_CLUSTERS[None], axis=-1).argmin(1)
    hair = np.linalg.norm(np.array([p.hair for p in people])[:, None] - HAIR_COLORS[None], axis=-1).argmin(1)
    iris = np.array([int(np.argmin(np.abs(IRIS_COLORS - p.iris).sum(1))) for p in people])
    blond, blue = 3, 1
    lightest, darkest = nearest == 0, nearest == len(SKIN_CLUSTERS) - 1
    assert (hair[lightest] == blond).mean() > 0.1 and (hair[darkest] == blond).mean() < 0.03
    assert (iris[lightest] == blue).mean() > 0.25 and (iris[darkest] == blue).mean() < 0.03


def _render(identity: Identity, au: np.ndarray) -> np.ndarray:
    image = Image.new("RGB", (2 * CROP_SIZE, 2 * CROP_SIZE), (100, 100, 100))
    draw_parts(ImageDraw.Draw(image), face_parts(identity, au), aligned_pose(2 * CROP_SIZE))
    return np.asarray(image.reduce(2)).astype(np.float32)


def _first(people: list[Identity], keep) -> Identity:
    return next(p for p in people if keep(p))


@pytest.mark.parametrize("kind", ["thick glasses", "beard", "deep rest fold", "sparse brows", "tilted eyes",
                                  "dark skin"])
def test_every_au_still_shows_on_faces_with_static_marks(people: list[Identity], kind: str) -> None:
    identity = _first(people, {
        "thick glasses": lambda p: p.glasses == 2, "beard": lambda p: p.beard > 0.6,
        "deep rest fold": lambda p: p.rest_fold > 0.4, "sparse brows": lambda p: p.brow_density < 0.55,
        "tilted eyes": lambda p: p.eye_tilt > 8, "dark skin": lambda p: np.mean(p.skin) < 70,
    }[kind])
    base = _render(identity, np.zeros(NUM_DRAWN))
    # marks darken or brighten the skin in proportion (a shadow is a share of the light): on dark
    # skin the same mark moves fewer grey levels, so "visible" is 12 % of the skin's level
    visible = 0.12 * np.mean(identity.skin)
    for name in AU_NAMES:
        au = np.zeros(NUM_DRAWN)
        au[AU_INDEX[name]] = 1.0
        changed = (np.abs(_render(identity, au) - base).max(-1) > visible).sum()
        assert changed >= 60, f"{kind}: {name} changes only {changed} pixels visibly"
