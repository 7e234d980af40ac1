"""An independent statement of insightface's arcface_torch IResNet: key lists, seeded weights, forward.

Written from ``recognition/arcface_torch/backbones/iresnet.py`` of deepinsight/insightface, without
importing ``pipeline``: the committed key/shape lists (``tests/fixtures/arcface_torch/*_keys.txt``)
and the forward fixture (``iresnet18_forward.json``) are what a checkpoint trained there looks like
and computes, and ``tests/unit/models/test_iresnet.py`` checks our model against them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "arcface_torch"
BN_EPS = 1e-05


def read_key_list(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """``name shape`` lines (shape ``64x3x3x3``, ``-`` for a scalar; ``#`` comments) -> [(key, shape)]."""
    spec = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        name, shape = line.split()
        try:
            spec.append((name, () if shape == "-" else tuple(int(v) for v in shape.split("x"))))
        except ValueError as err:
            raise ValueError(f"{path}:{number}: bad shape {shape!r}") from err
    return spec


def seeded_state_dict(spec: list[tuple[str, tuple[int, ...]]], seed: int) -> dict[str, torch.Tensor]:
    """Weights for every key of ``spec`` drawn from numpy's PCG64 (stable across versions) in key order.

    Scales keep activations finite through 18 blocks: He-scaled convolutions, BN statistics and
    affine parameters near their neutral values, PReLU slopes in [0, 0.5].
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    state: dict[str, torch.Tensor] = {}
    for key, shape in spec:
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            value = np.zeros(shape, dtype=np.int64)
        elif len(shape) == 4:
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif len(shape) == 2:
            value = rng.standard_normal(shape) / np.sqrt(shape[1])
        elif key == "features.weight":
            value = np.ones(shape)   # frozen at 1.0 in arcface_torch
        elif "prelu" in key:
            value = rng.uniform(0.0, 0.5, shape)
        elif leaf == "weight":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "running_var":
            value = rng.uniform(0.5, 2.0, shape)
        else:   # bias, running_mean
            value = rng.normal(0.0, 0.1, shape)
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.int64 if leaf == "num_batches_tracked" else np.float32))
    return state


def seeded_input(seed: int, batch: int = 2) -> torch.Tensor:
    """A normalised (B,3,112,112) float32 input from numpy's PCG64."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return torch.from_numpy(rng.uniform(-1.0, 1.0, (batch, 3, 112, 112)).astype(np.float32))


def bn_eval(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    """Eval-mode batch norm with the parameters and statistics stored under ``p`` in ``sd``."""
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        False, 0.0, BN_EPS)


def reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """arcface_torch's ``IResNet.forward`` in eval mode, in functional ops on a state dict.

    Every stage's first block has stride 2 (and so a 1x1 downsample); blocks are counted from the keys.
    """
    x = F.prelu(bn_eval(F.conv2d(x, sd["conv1.weight"], padding=1), sd, "bn1"), sd["prelu.weight"])
    for stage in range(1, 5):
        i = 0
        while f"layer{stage}.{i}.conv1.weight" in sd:
            p = f"layer{stage}.{i}"
            stride = 2 if i == 0 else 1
            out = F.conv2d(bn_eval(x, sd, f"{p}.bn1"), sd[f"{p}.conv1.weight"], padding=1)
            out = F.prelu(bn_eval(out, sd, f"{p}.bn2"), sd[f"{p}.prelu.weight"])
            out = bn_eval(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1), sd, f"{p}.bn3")
            identity = x
            if f"{p}.downsample.0.weight" in sd:
                identity = bn_eval(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
            x = out + identity
            i += 1
    x = torch.flatten(bn_eval(x, sd, "bn2"), 1)
    x = F.linear(x, sd["fc.weight"], sd["fc.bias"])
    return F.batch_norm(x, sd["features.running_mean"], sd["features.running_var"], sd["features.weight"],
                        sd["features.bias"], False, 0.0, BN_EPS)
