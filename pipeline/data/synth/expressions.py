"""FACS vocabulary of the renderer: the 12 labelled AUs, three drawn-but-unlabelled AUs, prototypes.

The renderer works on an intensity vector over ``DRAWN_AUS``: the 12 ABAW AUs in label order followed
by AU5 (upper lid raiser), AU9 (nose wrinkler) and AU20 (lip stretcher). These three belong to the
Surprise, Fear and Disgust prototypes but are not ABAW labels, so they make the expressions more
separable than their labelled AUs alone (as in real faces).

    >>> style = sample_style(np.random.default_rng(0), gain_range=(0.8, 1.0))
    >>> vec = prototype_intensity(EXPR_INDEX["Happiness"], style)
    >>> vec.shape, bool(vec[AU_INDEX["AU12"]] > 0.5)
    ((15,), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.labels import AU_NAMES, EXPR_NAMES, NUM_AUS

EXTRA_AUS: tuple[str, ...] = ("AU5", "AU9", "AU20")
DRAWN_AUS: tuple[str, ...] = AU_NAMES + EXTRA_AUS
NUM_DRAWN = len(DRAWN_AUS)
AU_INDEX: dict[str, int] = {name: i for i, name in enumerate(DRAWN_AUS)}
EXPR_INDEX: dict[str, int] = {name: i for i, name in enumerate(EXPR_NAMES)}

# Prototype AU combinations (core AUs at full weight, optional ones chosen per person).
PROTOTYPES: dict[str, dict[str, float]] = {
    "Neutral": {},
    "Anger": {"AU4": 1.0, "AU7": 0.9},                        # + AU23 or AU24 (person style)
    "Disgust": {"AU9": 1.0, "AU10": 1.0},                     # + AU15 or AU4 (person style)
    "Fear": {"AU1": 1.0, "AU2": 0.8, "AU4": 0.7, "AU5": 1.0, "AU20": 1.0, "AU25": 0.9},  # + AU7
    "Happiness": {"AU6": 0.9, "AU12": 1.0},                   # + AU25 (person style)
    "Sadness": {"AU1": 1.0, "AU4": 0.8, "AU15": 1.0},
    "Surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 0.9, "AU25": 1.0, "AU26": 1.0},
}
OPTIONAL: dict[str, tuple[tuple[str, ...], ...]] = {
    # each inner tuple is a set of alternatives: the person uses one of them (or none when "")
    "Anger": (("AU23", "AU24"),),
    "Disgust": (("AU15", "AU4", ""),),
    "Fear": (("AU7", ""),),
    "Happiness": (("AU25", ""),),
}

# AUs that also occur on their own, outside expression episodes, with relative frequencies.
SPONTANEOUS: dict[tuple[str, ...], float] = {
    ("AU25",): 3.0,             # lips part while talking
    ("AU25", "AU26"): 1.5,      # mouth open
    ("AU1", "AU2"): 1.5,        # brow flash
    ("AU4",): 1.0,              # concentration frown
    ("AU7",): 1.0,              # squint
    ("AU24",): 1.0,             # lip press
    ("AU23",): 0.6,
    ("AU12",): 0.8,             # polite smile without AU6
    ("AU6",): 0.5,
    ("AU10",): 0.5,
    ("AU15",): 0.5,
    ("AU1",): 0.5,
    ("AU2",): 0.4,
}


@dataclass(frozen=True)
class Style:
    """How one person shows expressions: per-AU gain and the optional AUs they use."""

    gain: np.ndarray                            # (NUM_DRAWN,) intensity multiplier per AU
    optional: dict[str, tuple[str, ...]]        # expression -> chosen optional AUs


def sample_style(rng: np.random.Generator, gain_range: tuple[float, float]) -> Style:
    """Draw one person's expression style."""
    gain = rng.uniform(gain_range[0], gain_range[1], size=NUM_DRAWN)
    optional = {}
    for expr, groups in OPTIONAL.items():
        chosen = [str(rng.choice(group)) for group in groups]
        optional[expr] = tuple(au for au in chosen if au)
    return Style(gain=gain, optional=optional)


def prototype_intensity(expr: int, style: Style) -> np.ndarray:
    """Apex AU intensities (NUM_DRAWN,) of expression ``expr`` for a person of ``style``."""
    name = EXPR_NAMES[expr]
    vec = np.zeros(NUM_DRAWN)
    for au, weight in PROTOTYPES[name].items():
        vec[AU_INDEX[au]] = weight
    for au in style.optional.get(name, ()):
        vec[AU_INDEX[au]] = 0.9
    return np.clip(vec * style.gain, 0.0, 1.0)


def labelled(intensity: np.ndarray) -> np.ndarray:
    """The 12 ABAW AU columns of a (..., NUM_DRAWN) intensity array."""
    return intensity[..., :NUM_AUS]
