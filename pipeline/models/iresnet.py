"""IResNet face-recognition backbones, state-dict compatible with insightface ``arcface_torch``.

At ``width_mult=1`` each constructor builds a module whose ``state_dict()`` has exactly the keys and
shapes of ``recognition/arcface_torch/backbones/iresnet.py`` of the same depth and computes the same
function, so a checkpoint trained there (e.g. Glint360K r100) loads with ``strict=True``:

* stem: 3x3 conv (3->64, stride 1) -> BN -> PReLU;
* four stages of "improved" basic blocks, each stage halving the resolution in its first block
  (112 -> 56 -> 28 -> 14 -> 7). A block is BN -> 3x3 conv -> BN -> PReLU -> 3x3 conv (stride) -> BN,
  plus the identity, downsampled by a strided 1x1 conv + BN in the stage's first block;
* head: BN2d -> flatten -> dropout -> Linear(512*7*7 -> 512) -> BatchNorm1d whose scale is frozen
  at 1.0 (as in arcface_torch).

``width_mult`` scales every channel width (64/128/256/512) for small models in demos and tests; such
models are NOT checkpoint-compatible. The embedding is 512-d at any width. Inputs are 112x112 RGB
normalised with :func:`pipeline.models.preprocess.to_model_input`.

Example:
    >>> import torch
    >>> net = iresnet18(width_mult=0.125).eval()
    >>> net(torch.zeros(2, 3, 112, 112)).shape
    torch.Size([2, 512])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pipeline.labels import EMBEDDING_DIM
from pipeline.models.registry import register_backbone

BN_EPS = 1e-05
INPUT_SIZE = 112
STAGE_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
STEM_WIDTH = 64
DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation style residual block: BN, conv, BN, PReLU, conv (strided), BN, + identity."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        # Attribute names and creation order define the state-dict keys; keep them as in arcface_torch.
        self.bn1 = nn.BatchNorm2d(in_ch, eps=BN_EPS)
        self.conv1 = _conv3x3(in_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch, stride)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch, eps=BN_EPS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """IResNet trunk + embedding head: (B,3,112,112) float -> (B,512) embedding."""

    def __init__(self, layers: Sequence[int], width_mult: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"IResNet needs four positive block counts, got {list(layers)}")
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.layers = tuple(int(n) for n in layers)
        self.width_mult = float(width_mult)
        self.embed_dim = EMBEDDING_DIM
        widths = [_scaled(w, width_mult) for w in STAGE_WIDTHS]
        stem = _scaled(STEM_WIDTH, width_mult)

        self.conv1 = _conv3x3(3, stem)
        self.bn1 = nn.BatchNorm2d(stem, eps=BN_EPS)
        self.prelu = nn.PReLU(stem)
        in_ch = stem
        for index, (blocks, width) in enumerate(zip(self.layers, widths), start=1):
            stage = [IBasicBlock(in_ch, width, stride=2)]
            stage += [IBasicBlock(width, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            in_ch = width
        self.bn2 = nn.BatchNorm2d(in_ch, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        spatial = INPUT_SIZE // 2 ** len(self.layers)
        self.fc = nn.Linear(in_ch * spatial * spatial, EMBEDDING_DIM)
        self.features = nn.BatchNorm1d(EMBEDDING_DIM, eps=BN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        # arcface_torch's initialisation; the embedding BN's scale stays fixed at 1 (not trained).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,112,112) normalised images -> (B,512) embeddings."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


def _scaled(width: int, width_mult: float) -> int:
    return max(1, int(round(width * width_mult)))


@register_backbone("iresnet18")
def iresnet18(width_mult: float = 1.0, dropout: float = 0.0) -> IResNet:
    """IResNet-18 (blocks 2,2,2,2)."""
    return IResNet(DEPTHS["iresnet18"], width_mult, dropout)


@register_backbone("iresnet34")
def iresnet34(width_mult: float = 1.0, dropout: float = 0.0) -> IResNet:
    """IResNet-34 (blocks 3,4,6,3)."""
    return IResNet(DEPTHS["iresnet34"], width_mult, dropout)


@register_backbone("iresnet50")
def iresnet50(width_mult: float = 1.0, dropout: float = 0.0) -> IResNet:
    """IResNet-50 (blocks 3,4,14,3)."""
    return IResNet(DEPTHS["iresnet50"], width_mult, dropout)


@register_backbone("iresnet100")
def iresnet100(width_mult: float = 1.0, dropout: float = 0.0) -> IResNet:
    """IResNet-100 (blocks 3,13,30,3), the paper's backbone (Glint360K checkpoints)."""
    return IResNet(DEPTHS["iresnet100"], width_mult, dropout)
