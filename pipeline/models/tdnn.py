"""TDNN audio encoder (x-vector style): dilated 1-D convolutions over mel frames, statistics pooling.

Each block is conv -> ReLU -> BatchNorm -> dropout with "valid" convolutions (no padding), so a
window of C mel frames yields ``C - receptive_field + 1`` frame-level vectors; their mean and
standard deviation are projected to the embedding. Because nothing is padded, the frame-level part
can run once over a long stretch of mel frames and every video frame's window be pooled from it
(:meth:`TDNN.forward_windows`), which in eval mode equals running :meth:`TDNN.forward` on each
window but costs a fraction of it when windows overlap (a 0.5 s window per 33 ms video frame).

The x-vector profile (Snyder et al. 2018, speechbrain ``Xvector``) is
``channels=(512, 512, 512, 512, 1500), kernel_sizes=(5, 3, 3, 1, 1), dilations=(1, 2, 3, 1, 1)``
with a 512-d embedding; the demo uses narrower channels.

Example:
    >>> import torch
    >>> cfg = TDNNConfig(channels=(32, 32, 64), kernel_sizes=(5, 3, 1), dilations=(1, 2, 1))
    >>> model = TDNN(cfg).eval()
    >>> model.receptive_field
    9
    >>> model(torch.randn(4, 64, 101)).shape
    torch.Size([4, 512])
    >>> spans = torch.randn(1, 64, 120)                   # one stretch of 120 mel frames
    >>> model.forward_windows(spans, torch.tensor([0, 0]), torch.tensor([0, 19]), 101).shape
    torch.Size([2, 512])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.labels import EMBEDDING_DIM


@dataclass(frozen=True)
class TDNNConfig:
    """Architecture of a :class:`TDNN`."""

    channels: tuple[int, ...] = (512, 512, 512, 512, 1500)
    kernel_sizes: tuple[int, ...] = (5, 3, 3, 1, 1)
    dilations: tuple[int, ...] = (1, 2, 3, 1, 1)
    embedding_dim: int = EMBEDDING_DIM
    dropout: float = 0.0
    in_channels: int = 64      # mel bands; set from the audio config by the trainer

    def __post_init__(self) -> None:
        n = len(self.channels)
        if n == 0 or len(self.kernel_sizes) != n or len(self.dilations) != n:
            raise ConfigError(
                "channels, kernel_sizes and dilations need the same non-zero length, got "
                f"{len(self.channels)}, {len(self.kernel_sizes)}, {len(self.dilations)}", key="channels"
            )
        for name, values in (("channels", self.channels), ("kernel_sizes", self.kernel_sizes),
                             ("dilations", self.dilations)):
            if any(v < 1 for v in values):
                raise ConfigError(f"every value must be >= 1, got {list(values)}", key=name)
        if self.embedding_dim < 1 or self.in_channels < 1:
            raise ConfigError(f"must be >= 1 (and in_channels too), got {self.embedding_dim} and "
                              f"{self.in_channels}", key="embedding_dim")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.dropout}", key="dropout")

    @property
    def receptive_field(self) -> int:
        """Mel frames seen by one frame-level output vector."""
        return 1 + sum((k - 1) * d for k, d in zip(self.kernel_sizes, self.dilations))


class TDNNBlock(nn.Module):
    """Dilated 1-D convolution -> ReLU -> BatchNorm -> dropout; (B, C_in, T) -> (B, C_out, T - (k-1)d)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)
        self.activation = nn.ReLU()
        self.norm = nn.BatchNorm1d(out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.dropout(self.norm(self.activation(self.conv(x))))


def statistics_pooling(frames: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Concatenated mean and standard deviation over the last axis: (..., C, L) -> (..., 2C)."""
    mean = frames.mean(dim=-1)
    var = (frames - mean.unsqueeze(-1)).pow(2).mean(dim=-1)
    return torch.cat([mean, torch.sqrt(var + eps)], dim=-1)


def window_statistics(
    frames: torch.Tensor, span_index: torch.Tensor, offsets: torch.Tensor, length: int, eps: float = 1e-5
) -> torch.Tensor:
    """:func:`statistics_pooling` of ``frames[span_index[n], :, offsets[n]:offsets[n]+length]`` -> (N, 2D).

    Window sums come from running sums along time (float64, so long spans lose no precision), which
    costs O(S·D·T + N·D) instead of cutting out every (D, length) window.
    """
    wide = frames.double()
    zero = wide.new_zeros(*wide.shape[:-1], 1)
    first = torch.cat([zero, wide.cumsum(dim=-1)], dim=-1)              # (S, D, T + 1)
    second = torch.cat([zero, wide.pow(2).cumsum(dim=-1)], dim=-1)
    begin, end = offsets, offsets + length
    mean = (first[span_index, :, end] - first[span_index, :, begin]) / length      # (N, D)
    square = (second[span_index, :, end] - second[span_index, :, begin]) / length
    var = (square - mean.pow(2)).clamp(min=0.0)
    return torch.cat([mean, torch.sqrt(var + eps)], dim=-1).to(frames.dtype)


class TDNN(nn.Module):
    """Log-mel windows (B, n_mels, C) -> audio embeddings (B, embedding_dim)."""

    def __init__(self, cfg: TDNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = (cfg.in_channels, *cfg.channels)
        self.blocks = nn.Sequential(*(
            TDNNBlock(widths[i], widths[i + 1], k, d, cfg.dropout)
            for i, (k, d) in enumerate(zip(cfg.kernel_sizes, cfg.dilations))
        ))
        self.embedding = nn.Linear(2 * cfg.channels[-1], cfg.embedding_dim)

    @property
    def receptive_field(self) -> int:
        """Mel frames seen by one frame-level vector; a window must be at least this long."""
        return self.cfg.receptive_field

    def frame_features(self, mel: torch.Tensor) -> torch.Tensor:
        """Frame-level features (B, channels[-1], T - receptive_field + 1) of mel frames (B, n_mels, T)."""
        return self.blocks(mel)

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """Statistics pooling and projection: (B, channels[-1], L) -> (B, embedding_dim)."""
        return self.embedding(statistics_pooling(frames))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Embed each window of ``mel`` (B, n_mels, C)."""
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            self._check_input(mel, mel.shape[-1])
        return self.pool(self.frame_features(mel))

    def forward_windows(
        self, spans: torch.Tensor, span_index: torch.Tensor, offsets: torch.Tensor, context: int
    ) -> torch.Tensor:
        """Embed windows ``spans[span_index[n], :, offsets[n]:offsets[n]+context]`` -> (N, embedding_dim).

        The frame-level layers run once over every span (S, n_mels, L); each window is then pooled
        from the shared frame-level features. Equals ``forward`` on the cut-out windows in eval mode.
        """
        self._check_input(spans, context)
        if span_index.shape != offsets.shape or span_index.ndim != 1:
            raise ValueError(f"span_index and offsets must be equal-length 1-D, got "
                             f"{tuple(span_index.shape)} and {tuple(offsets.shape)}")
        if len(offsets) and (offsets.min() < 0 or offsets.max() + context > spans.shape[-1]):
            raise ValueError(f"windows of {context} frames at offsets {int(offsets.min())}..{int(offsets.max())} "
                             f"do not fit in spans of {spans.shape[-1]} frames")
        frames = self.frame_features(spans)                       # (S, D, L - rf + 1)
        stats = window_statistics(frames, span_index, offsets, context - self.receptive_field + 1)
        return self.embedding(stats)

    def _check_input(self, mel: torch.Tensor, context: int) -> None:
        if mel.ndim != 3 or mel.shape[1] != self.cfg.in_channels:
            raise ValueError(f"TDNN input must be (B, {self.cfg.in_channels}, frames), got {tuple(mel.shape)}")
        if context < self.receptive_field:
            raise ValueError(f"TDNN windows need at least {self.receptive_field} mel frames "
                             f"(the receptive field), got {context}")
