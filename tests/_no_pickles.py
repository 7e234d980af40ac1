"""Refuse torch's pickling collectives in a rank, so a test sees any exchange that would unpickle."""

from __future__ import annotations

import torch.distributed as dist

PICKLING_COLLECTIVES = ("all_gather_object", "gather_object", "broadcast_object_list", "scatter_object_list")


def forbid_pickled_collectives() -> None:
    """Replace torch's object collectives in this process by ones that raise ``AssertionError``."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pickled collective was called")

    for name in PICKLING_COLLECTIVES:
        setattr(dist, name, refuse)
