"""Tiny inputs for the embed stages: a prepared dataset with its frame store, and stand-in models.

``build_prepared`` runs prepare and pack-frames on the hand-built four-video dataset of ``_media``
(five subjects of 8-12 frames; vidB has no audio track, vidA and vidC_right miss a crop).
``tiny_visual_onnx`` exports a few-kilobyte conv net with input ``image`` (B,3,112,112) and outputs
``embedding`` (B,512), ``au_logits`` (B,12), ``expr_logits`` (B,7), ``va_pred`` (B,2); ``slow_layers`` adds full-size
3x3 convolutions so a test can make each subject take a noticeable time. ``tiny_audio_model_dir``
writes ``model.pt`` (the train-audio checkpoint layout) and the matching ``tdnn.onnx`` (input
``mel`` (B,64,C), output ``embedding`` (B,512), audio config in its metadata).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from _media import build_affwild2
from pipeline.audio.features import AudioConfig
from pipeline.config import to_dict
from pipeline.data.pack_frames import PackConfig, pack_frames
from pipeline.data.manifest import read_manifest
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.model_files.onnx_export import export_onnx
from pipeline.models.fusion import FusionConfig, FusionHead
from pipeline.models.tdnn import TDNN, TDNNConfig
from pipeline.model_files.checkpoint import save_checkpoint


def build_prepared(base: Path) -> tuple[Path, Path]:
    """Write the dataset, ``prepared/`` and ``frames.h5`` under ``base``; return the last two."""
    root = build_affwild2(base / "affwild2")
    prepared = base / "prepared"
    prepare_dataset(root, prepared, PrepareConfig())
    frames = base / "frames.h5"
    pack_frames(read_manifest(prepared / "manifest.json"), frames, PackConfig())
    return prepared, frames


class TinyVisual(nn.Module):
    """(B,3,112,112) -> embedding (B,512), au_logits (B,12), expr_logits (B,7), va_pred (B,2)."""

    def __init__(self, slow_layers: int = 0, slow_channels: int = 16) -> None:
        super().__init__()
        slow: list[nn.Module] = []
        channels = 3
        for _ in range(slow_layers):
            slow += [nn.Conv2d(channels, slow_channels, 3, padding=1), nn.ReLU()]
            channels = slow_channels
        self.slow = nn.Sequential(*slow)
        self.stem = nn.Sequential(nn.Conv2d(channels, 8, 16, stride=16), nn.ReLU(), nn.Flatten())
        self.embed = nn.Linear(8 * 7 * 7, 512)
        self.au = nn.Linear(512, 12)
        self.expr = nn.Linear(512, 7)
        self.va = nn.Linear(512, 2)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        embedding = self.embed(self.stem(self.slow(image)))
        return embedding, self.au(embedding), self.expr(embedding), torch.tanh(self.va(embedding))


def tiny_visual_onnx(path: Path, seed: int = 0, slow_layers: int = 0, slow_channels: int = 16) -> Path:
    """Export a seeded :class:`TinyVisual` to ``path``."""
    torch.manual_seed(seed)
    names = ("image", "embedding", "au_logits", "expr_logits", "va_pred")
    export_onnx(
        TinyVisual(slow_layers, slow_channels), (torch.zeros(2, 3, 112, 112),), path, names[:1], names[1:],
        {name: {0: "batch"} for name in names}, {"model": "visual", "arch": {"backbone": "tiny", "seed": seed}},
    )
    return path


def tiny_audio_model_dir(out_dir: Path, seed: int = 0) -> Path:
    """Write ``model.pt`` and ``tdnn.onnx`` of a seeded small TDNN under ``out_dir``."""
    torch.manual_seed(seed)
    audio_cfg = AudioConfig()
    tdnn_cfg = TDNNConfig(channels=(16, 16, 32), kernel_sizes=(5, 3, 1), dilations=(1, 2, 1))
    tdnn = TDNN(tdnn_cfg).eval()
    fusion_cfg = FusionConfig(hidden=0)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / "model.pt", {
        "tdnn_arch": to_dict(tdnn_cfg), "tdnn": tdnn.state_dict(), "fusion_arch": to_dict(fusion_cfg),
        "fusion": FusionHead(fusion_cfg).state_dict(), "audio_config": to_dict(audio_cfg),
    })
    export_onnx(
        tdnn, (torch.zeros(2, audio_cfg.n_mels, audio_cfg.context_frames),), out_dir / "tdnn.onnx", ("mel",),
        ("embedding",), {"mel": {0: "batch"}, "embedding": {0: "batch"}},
        {"model": "tdnn", "audio_config": to_dict(audio_cfg)},
    )
    return out_dir
