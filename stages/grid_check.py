"""An ablation grid checked before any experiment runs: each run's values built into its sections' configs.

The stages build each params section into a config dataclass (``stages.common.load_config``), which
refuses unknown keys and bad values; an experiment with such a value would fail only when DVC
reaches that stage. The grid is built the same way first, with the other values from the params
file, so ``mmaffect ablate --dry-run`` already names the grid, the arm and the key.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from pipeline.ablation import check_runs
from pipeline.config import ConfigError, read_yaml

# The config dataclass each params section is built into by its stage ("module:Class"), to check a grid's
# values before any experiment runs. `data` has none: only dvc.yaml reads it.
SECTION_CONFIGS: dict[str, str] = {
    "synth": "pipeline.data.synth:SynthConfig",
    "synth_faces": "pipeline.data.synth.identities:FaceIdentityConfig",
    "pretrain_face": "pipeline.train.pretrain:PretrainConfig",
    "prepare": "pipeline.data.prepare:PrepareConfig",
    "pack_frames": "pipeline.data.pack_frames:PackConfig",
    "selection": "pipeline.train.selection:SelectionConfig",
    "finetune_visual": "pipeline.train.visual:VisualTrainConfig",
    "export_onnx": "pipeline.model_files.visual:ExportConfig",
    "embed_visual": "pipeline.embed.visual:EmbedVisualConfig",
    "train_audio": "pipeline.train.audio:AudioTrainConfig",
    "embed_audio": "pipeline.embed.audio:EmbedAudioConfig",
    "train_sequence": "pipeline.train.sequence:SequenceTrainConfig",
    "evaluate": "pipeline.evaluate.scoring:EvaluateConfig",
    "predict": "pipeline.predict.video:PredictConfig",
}


def config_classes(sections: set[str]) -> dict[str, type]:
    """The config dataclasses of ``sections`` (imported only for the sections a grid changes)."""
    classes = {}
    for section in sections & set(SECTION_CONFIGS):
        module, name = SECTION_CONFIGS[section].split(":")
        classes[section] = getattr(importlib.import_module(module), name)
    return classes


def check_grid(planned: list[dict[str, Any]], params_path: Path, where: str) -> None:
    """Every planned run's values checked against its sections' config dataclasses (one line on failure)."""
    if not params_path.is_file():
        raise click.UsageError(f"{params_path} not found: the grid's values are checked against its sections")
    try:
        params = read_yaml(params_path)
        sections = {key.split(".")[0] for run in planned for key in run["params"]}
        check_runs(planned, params, config_classes(sections), where)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
