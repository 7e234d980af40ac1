"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import time
from typing import Any, Callable


def rate(fn: Callable[[], Any], items: int, min_seconds: float) -> float:
    """Items per second of ``fn`` (called until ``min_seconds`` have passed, after one warm-up call)."""
    fn()
    calls, began = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - began
        if elapsed >= min_seconds:
            return items * calls / elapsed
