"""``finetune-visual`` as ``torchrun`` starts it, each rank also writing a digest of its final weights.

Run as ``torchrun ... tests/_torchrun_finetune.py <finetune-visual arguments>`` with ``DIGEST_DIR``
set: the stage runs unchanged, and rank r writes ``DIGEST_DIR/rank<r>.digest`` (sha256 of its model's
state dict after training) so a test can check that every rank ends with the same weights.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

import stages.finetune_visual as stage


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names and bytes of a state dict's tensors, in name order."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _recording(train: Any) -> Any:
    def train_and_record(*args: Any, **kwargs: Any) -> Any:
        result = train(*args, **kwargs)
        Path(os.environ["DIGEST_DIR"], f"rank{os.environ['RANK']}.digest").write_text(
            state_digest(result.model.state_dict()))
        return result

    return train_and_record


if __name__ == "__main__":
    torch.set_num_threads(1)  # two ranks on two cores
    stage.train_visual = _recording(stage.train_visual)
    stage.command()
