"""Small Markdown formatting helpers shared by the renderers."""

from __future__ import annotations

from typing import Any, Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; cells are converted with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def score(value: float) -> str:
    """A score in [0, 1] to 3 decimals."""
    return f"{value:.3f}"


def signed_gain(value: float) -> str:
    """A difference of scores, to 3 decimals with its sign: ``+0.099`` / ``-0.012``."""
    return f"{value:+.3f}"


def count(value: int) -> str:
    """An integer with thousands separators: ``8,106``."""
    return f"{value:,}"


def rate(value: float) -> str:
    """A throughput: 3 significant figures below 100, else a whole number with separators."""
    return f"{value:.3g}" if value < 100 else f"{round(value):,}"
