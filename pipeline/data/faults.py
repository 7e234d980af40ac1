"""Listing every fault of a file in one message: the first few in full, the rest counted.

A bad file often has the same fault on every line (an EXPR file in the AU folder), so a message
lists the first ``MAX_LISTED`` and counts the others, and stays readable on one line.

Example:
    >>> join_faults([f"line {n}: bad value" for n in (2, 3)], "bad lines")
    'line 2: bad value; line 3: bad value'
    >>> join_faults([f"line {n}: x" for n in range(2, 14)], "bad lines", limit=2)
    'line 2: x; line 3: x; and 10 more bad lines'
"""

from __future__ import annotations

from typing import Sequence

MAX_LISTED = 10


def join_faults(faults: Sequence[str], more: str, limit: int = MAX_LISTED) -> str:
    """Join ``faults`` with ``"; "``, listing at most ``limit`` and counting the rest as ``more``."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    listed = "; ".join(faults[:limit])
    rest = len(faults) - limit
    return f"{listed}; and {rest} more {more}" if rest > 0 else listed
