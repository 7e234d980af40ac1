"""Mixed precision, channels-last and DataLoader feeding in the visual and pretraining trainers.

The CPU tests train tiny models in bf16 autocast and channels-last; the ``cuda`` tests (skipped
without a GPU, run by ``.ci/gpu_check.sh``) train in fp16 with loss scaling and bf16 on the GPU.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from _finetune_params import write_params as write_finetune_params
from _pretrain_inputs import PRETRAIN, make_faces
from pipeline.config import ConfigError, from_dict
from pipeline.data.faces.sets import open_face_set
from pipeline.data.manifest import read_manifest
from pipeline.train.ddp import DistContext
from pipeline.train.face_data import FaceImages, split_identities
from pipeline.train.loop_state import LoopState
from pipeline.train.amp import Precision, check_amp
from pipeline.train.loader import LoaderConfig
from pipeline.train.pretrain import PretrainConfig, PretrainRun, epoch_batches
from pipeline.train.visual import VisualTrainConfig, train_visual
from stages.cli import main

TINY = dict(width_mult=0.0625, epochs=1, batch_size=16, lr=0.05, max_frames_per_epoch=32)


def _train_visual(prepared: Path, frames: Path, out: Path, device: str = "cpu",
                  loader: LoaderConfig = LoaderConfig(), **changes: Any):
    return train_visual(read_manifest(prepared / "manifest.json"), prepared / "labels.h5", frames, out / "model.pt",
                        out / "metrics.json", out / "work", VisualTrainConfig(**{**TINY, **changes}), device=device,
                        loader=loader, progress=False)


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_faces(tmp_path_factory.mktemp("faces") / "faces")


def _pretrain_losses(faces: Path, tmp_path: Path, device: str = "cpu", loader: LoaderConfig = LoaderConfig(),
                     **changes: Any) -> list[float]:
    """Two pretraining steps of the tiny recogniser; their losses."""
    cfg = PretrainConfig(**{**PRETRAIN, **changes})
    face_set = open_face_set(faces / "rec")
    split = split_identities(face_set.labels, cfg.holdout_share, cfg.seed)
    run = PretrainRun(cfg, split.train_identities, torch.device(device), DistContext(), total_steps=4, loader=loader)
    dataset = FaceImages(face_set, split.train_images, split.train_labels)
    loop = LoopState(tmp_path / "state.pt", {}, writer=False)
    losses = run.train_epoch(loop, 0, epoch_batches(len(split.train_images), 0, cfg, 2)[:2], dataset, 0, False)
    return losses["face"]


# -- the params and options ----------------------------------------------------------------------

def test_loader_options_default_to_loading_in_the_training_process() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert LoaderConfig().dataloader_kwargs(cpu) == {"num_workers": 0, "pin_memory": False}
    assert LoaderConfig().dataloader_kwargs(cuda) == {"num_workers": 0, "pin_memory": True}
    assert LoaderConfig(pin_memory=False).dataloader_kwargs(cuda)["pin_memory"] is False
    assert LoaderConfig(workers=2, prefetch_factor=4, persistent_workers=True).dataloader_kwargs(cpu) == {
        "num_workers": 2, "pin_memory": False, "prefetch_factor": 4, "persistent_workers": True}


@pytest.mark.parametrize("bad, message", [
    ({"workers": -1}, "workers: must be >= 0"),
    ({"prefetch_factor": 2}, "prefetch_factor: must be >= 1 and needs workers >= 1"),
    ({"persistent_workers": True}, "persistent_workers: needs workers >= 1"),
])
def test_loader_config_names_a_bad_value(bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LoaderConfig(**bad)


@pytest.mark.parametrize("stage", ["finetune-visual", "pretrain-face"])
def test_a_bad_loader_option_is_a_usage_error_naming_the_option(stage: str, tmp_path: Path) -> None:
    (tmp_path / "frames.h5").write_bytes(b"")
    args = [str(tmp_path), str(tmp_path / "frames.h5")] if stage == "finetune-visual" else [str(tmp_path / "faces")]
    result = CliRunner().invoke(main, [stage, *args, str(tmp_path / "out"), str(tmp_path / "m.json"),
                                       "--prefetch-factor", "2", "--work-dir", str(tmp_path / "w")])
    assert result.exit_code == 2, result.output
    assert "--prefetch-factor: must be >= 1 and needs workers >= 1" in result.output


def test_amp_params_reach_both_configs_and_reject_unknown_modes() -> None:
    for cls in (VisualTrainConfig, PretrainConfig):
        extra = {} if cls is VisualTrainConfig else {"init": None}
        cfg = from_dict(cls, {"amp": "bf16", "channels_last": True, **extra})
        assert (cfg.amp, cfg.channels_last) == ("bf16", True)
        with pytest.raises(ConfigError, match=r"amp: 'fp8' is not one of \['off', 'bf16', 'fp16'\]"):
            from_dict(cls, {"amp": "fp8"}, where="params.yaml:section")


def test_the_params_file_holds_the_defaults() -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    for section, cls in (("finetune_visual", VisualTrainConfig), ("pretrain_face", PretrainConfig)):
        cfg = from_dict(cls, params[section])
        assert (cfg.amp, cfg.channels_last) == ("off", False)


@pytest.mark.parametrize("cls", [VisualTrainConfig, PretrainConfig])
def test_loader_settings_are_not_params(cls: type) -> None:
    # they change speed only: editing one must not rerun a stage, so a params section cannot hold them
    with pytest.raises(ConfigError, match="unknown key.*'loader'"):
        from_dict(cls, {"loader": {"workers": 1}}, where="params.yaml:section")


def test_fp16_off_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="finetune_visual.amp fp16 needs a CUDA device .*use amp: bf16 on the CPU"):
        check_amp("fp16", torch.device("cpu"), "finetune_visual")
    with pytest.raises(ValueError, match="must be one of off, bf16, fp16"):
        Precision("half", False, torch.device("cpu"))  # type: ignore[arg-type]


def test_fp16_on_the_cpu_fails_the_stage_naming_the_param(tiny_prepared: Path, tiny_frames: Path,
                                                          tmp_path: Path) -> None:
    params = write_finetune_params(tmp_path, epochs=1)
    text = params.read_text().replace("  seed: 0\nselection:", "  seed: 0\n  amp: fp16\nselection:")
    params.write_text(text)
    result = CliRunner().invoke(main, ["finetune-visual", str(tiny_prepared), str(tiny_frames), str(tmp_path / "v"),
                                       str(tmp_path / "m.json"), "--params", str(params), "--device", "cpu",
                                       "--work-dir", str(tmp_path / "work"), "--no-progress"])
    assert result.exit_code != 0
    assert "finetune_visual.amp fp16 needs a CUDA device" in result.output
    assert not (tmp_path / "v").exists()


# -- training on the CPU -------------------------------------------------------------------------

def test_precision_autocasts_and_lays_out_channels_last() -> None:
    # the layout is asked for a CUDA run; amp off builds no scaler, so no GPU is needed to check it
    p = Precision("off", True, torch.device("cuda"))
    conv = p.model(torch.nn.Conv2d(3, 4, 3))
    assert p.channels_last
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.dtype == torch.float32
    x = p.batch(torch.ones(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert p.standard_layout(conv).weight.is_contiguous()
    bf16 = Precision("bf16", False, torch.device("cpu"))
    with bf16.autocast():
        assert conv(x).dtype == torch.bfloat16
    off = Precision("off", False, torch.device("cpu"))
    with off.autocast():
        assert conv(x).dtype == torch.float32
    assert off.scaler is None and off.state_dict() is None


CPU_LAYOUT_WARNING = "channels_last is ignored on the CPU (standard layout used)"


def test_channels_last_is_ignored_on_the_cpu_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.train.amp"):
        p = Precision("bf16", True, torch.device("cpu"), "finetune_visual")
    assert f"finetune_visual.{CPU_LAYOUT_WARNING}" in caplog.text
    assert not p.channels_last
    assert p.model(torch.nn.Conv2d(3, 4, 3)).weight.is_contiguous()
    assert p.batch(torch.ones(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)).is_contiguous(
        memory_format=torch.channels_last)  # a batch is passed on as it came, not converted
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.train.amp"):
        Precision("bf16", False, torch.device("cpu"))
    assert CPU_LAYOUT_WARNING not in caplog.text


def test_visual_trainer_trains_in_bf16_on_the_cpu_with_channels_last_left_on(
        tiny_prepared: Path, tiny_frames: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.train.amp"):
        result = _train_visual(tiny_prepared, tiny_frames, tmp_path, amp="bf16", channels_last=True)
    assert f"finetune_visual.{CPU_LAYOUT_WARNING}" in caplog.text
    losses = [v for record in result.history for v in record["loss"].values() if v is not None]
    assert losses and all(math.isfinite(v) for v in losses)
    state = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    conv = next(v for v in state.values() if v.ndim == 4)
    # published in float32 and the standard layout
    assert conv.dtype == torch.float32 and conv.is_contiguous()
    assert result.metrics["validation"]["face_frames"]["score"] is not None


def test_pretrain_trains_in_bf16_on_the_cpu_with_channels_last_left_on(faces: Path, tmp_path: Path) -> None:
    losses = _pretrain_losses(faces, tmp_path, amp="bf16", channels_last=True)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)


def test_pretrain_loads_with_worker_processes(faces: Path, tmp_path: Path) -> None:
    plain = _pretrain_losses(faces, tmp_path / "plain")
    workers = _pretrain_losses(faces, tmp_path / "workers",
                               loader=LoaderConfig(workers=1, prefetch_factor=2, persistent_workers=True))
    np.testing.assert_array_equal(plain, workers)   # feeding changes speed, never the result


def test_persistent_workers_outlive_an_epoch(faces: Path, tmp_path: Path) -> None:
    cfg = PretrainConfig(**PRETRAIN)
    face_set = open_face_set(faces / "rec")
    split = split_identities(face_set.labels, cfg.holdout_share, cfg.seed)
    run = PretrainRun(cfg, split.train_identities, torch.device("cpu"), DistContext(), total_steps=4,
                      loader=LoaderConfig(workers=1, persistent_workers=True))
    dataset = FaceImages(face_set, split.train_images, split.train_labels)
    iterators = []
    for epoch in range(2):
        loop = LoopState(tmp_path / "state.pt", {}, writer=False)
        batches = epoch_batches(len(split.train_images), epoch, cfg, 2)[:1]
        assert len(run.train_epoch(loop, epoch, batches, dataset, 0, False)["face"]) == 1
        iterators.append(run.epoch_loader.loader._iterator)
    # one loader for both epochs, and its worker pool (the iterator holding it) was kept
    assert iterators[0] is iterators[1] is not None


# -- on a GPU ----------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_visual_trainer_trains_on_cuda(amp: str, tiny_prepared: Path, tiny_frames: Path, tmp_path: Path) -> None:
    result = _train_visual(tiny_prepared, tiny_frames, tmp_path, device="cuda", amp=amp, channels_last=True,
                           loader=LoaderConfig(workers=1))
    losses = [v for record in result.history for v in record["loss"].values() if v is not None]
    assert losses and all(math.isfinite(v) for v in losses)
    state = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    assert all(v.device.type == "cpu" for v in state.values())


@pytest.mark.cuda
def test_fp16_scaler_state_is_saved_and_restored(faces: Path, tmp_path: Path) -> None:
    cfg = PretrainConfig(**{**PRETRAIN, "amp": "fp16"})
    run = PretrainRun(cfg, 8, torch.device("cuda"), DistContext(), total_steps=4)
    assert run.precision.scaler is not None
    run.precision.scaler.scale(torch.ones((), device="cuda"))  # the scale tensor exists from the first use
    run.precision.scaler.update(1024.0)
    extra = run.extra_state()
    fresh = PretrainRun(cfg, 8, torch.device("cuda"), DistContext(), total_steps=4)
    fresh.load_extra(extra)
    assert fresh.precision.scaler.get_scale() == 1024.0
    assert all(math.isfinite(v) for v in _pretrain_losses(faces, tmp_path, device="cuda", amp="fp16"))
