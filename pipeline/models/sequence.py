"""The multi-modal sequence model (paper §3.2): a transformer encoder over fused per-frame features.

Input: composed features (B, L, D) from :func:`pipeline.inference.features.compose_features`
(concatenated visual/audio embeddings and presence flags), an optional key padding mask (B, L)
(``True`` = padded frame, ignored as attention key). Optional linear input projection D -> d_model,
learned or sinusoidal positional encoding, ``layers`` transformer encoder layers, then per-frame
fully connected heads ``au_head`` (12 logits), ``expr_head`` (7 logits) and ``va_head`` (valence and
arousal, tanh to [-1, 1]; our extension), the attribute names the alternating-update helper
(:mod:`pipeline.train.alternating`) expects.

The encoder layer is the original post-norm transformer layer (self-attention, add & norm,
ReLU feed-forward, add & norm), the computation of ``nn.TransformerEncoderLayer``. It is written
here with ``scaled_dot_product_attention`` because the TorchScript ONNX exporter bakes the example
sequence length into ``nn.MultiheadAttention``'s reshapes, which breaks ``sequence.onnx`` on
any other length (pytorch/pytorch#110347); this layer exports with dynamic batch and length.

Example:
    >>> import torch
    >>> arch = SequenceArch(input_dim=1026, d_model=64, layers=1, heads=4, max_len=30)
    >>> model = SequenceModel(arch).eval()
    >>> au, expr, va = model(torch.zeros(2, 30, 1026))
    >>> tuple(au.shape), tuple(expr.shape), tuple(va.shape)
    ((2, 30, 12), (2, 30, 7), (2, 30, 2))
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.config import ConfigError
from pipeline.labels import NUM_AUS, NUM_EXPRS, NUM_VA

Positional = Literal["learned", "sinusoidal"]


@dataclass(frozen=True)
class SequenceArch:
    """Hyper-parameters that fix the network's shape (stored in checkpoints as ``arch``)."""

    input_dim: int
    d_model: int = 128
    layers: int = 1
    heads: int = 4
    dropout: float = 0.1
    input_projection: bool = True   # False: features enter the encoder as they are (d_model == input_dim)
    positional: Positional = "learned"
    max_len: int = 30               # longest sequence the positional code covers (the window length)
    ff_mult: int = 2                # feed-forward width = ff_mult * d_model

    def __post_init__(self) -> None:
        for name in ("input_dim", "d_model", "layers", "heads", "max_len", "ff_mult"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", key=name)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.dropout}", key="dropout")
        if self.positional not in ("learned", "sinusoidal"):
            raise ConfigError(f"must be 'learned' or 'sinusoidal', got {self.positional!r}", key="positional")
        if not self.input_projection and self.d_model != self.input_dim:
            raise ConfigError(
                f"without input projection must equal the feature width {self.input_dim}, got {self.d_model}",
                key="d_model",
            )
        if self.d_model % self.heads:
            raise ConfigError(f"{self.d_model} is not divisible by heads {self.heads}", key="d_model")


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """The fixed sin/cos positional code of "Attention is all you need": (length, dim) float32."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    code = torch.zeros(length, dim)
    code[:, 0::2] = torch.sin(position * freq)
    code[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return code


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer: x = LN(x + MHA(x)); x = LN(x + FF(x)); (B, L, d) -> same."""

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model)
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def attention(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Multi-head self-attention; ``attn_mask`` (B, 1, 1, L) bool, True = may attend."""
        batch, _, width = x.shape
        # -1 for the length keeps the ONNX graph's reshapes free of the example length.
        q, k, v = self.qkv(x).reshape(batch, -1, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(batch, -1, width))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode (B, L, d_model); padded keys (``attn_mask`` False) receive no attention."""
        x = self.norm1(x + self.drop1(self.attention(x, attn_mask)))
        return self.norm2(x + self.drop2(self.ff(x)))


class SequenceModel(nn.Module):
    """Transformer encoder with per-frame AU, expression and valence-arousal heads."""

    def __init__(self, arch: SequenceArch) -> None:
        super().__init__()
        self.arch = arch
        d = arch.d_model
        self.input_proj: nn.Module = nn.Linear(arch.input_dim, d) if arch.input_projection else nn.Identity()
        if arch.positional == "learned":
            self.pos_embedding = nn.Parameter(torch.zeros(arch.max_len, d))
            nn.init.normal_(self.pos_embedding, std=0.02)
        else:
            self.register_buffer("pos_embedding", sinusoidal_encoding(arch.max_len, d), persistent=False)
        self.dropout = nn.Dropout(arch.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d, arch.heads, arch.ff_mult * d, arch.dropout) for _ in range(arch.layers)
        )
        self.au_head = nn.Linear(d, NUM_AUS)
        self.expr_head = nn.Linear(d, NUM_EXPRS)
        self.va_head = nn.Linear(d, NUM_VA)

    def forward_features(self, features: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode (B, L, D) features into (B, L, d_model) per-frame sequence features."""
        length = features.shape[1]
        if not torch.jit.is_tracing():  # shape checks would be frozen into an exported graph
            if features.ndim != 3 or features.shape[-1] != self.arch.input_dim:
                raise ValueError(f"features must be (B, L, {self.arch.input_dim}), got {tuple(features.shape)}")
            if length > self.arch.max_len:
                raise ValueError(f"sequence length {length} exceeds the model's max_len {self.arch.max_len}")
        x = self.input_proj(features) + self.pos_embedding[:length]
        x = self.dropout(x)
        attn_mask = None
        if key_padding_mask is not None:
            # (B, 1, 1, L): True where a key may be attended to (SDPA's boolean convention).
            attn_mask = ~key_padding_mask.to(torch.bool)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, attn_mask)
        return x

    def forward_head(self, sequence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-frame outputs: (B, L, 12) AU logits, (B, L, 7) expression logits, (B, L, 2) VA in [-1, 1]."""
        return self.au_head(sequence), self.expr_head(sequence), torch.tanh(self.va_head(sequence))

    def forward(
        self, features: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L, D) features (and optional (B, L) padding mask, True = pad) -> AU and EXPR logits, VA."""
        return self.forward_head(self.forward_features(features, key_padding_mask))


def arch_to_dict(arch: SequenceArch) -> dict[str, Any]:
    """Plain-dict form of ``arch`` for checkpoints."""
    return dataclasses.asdict(arch)
