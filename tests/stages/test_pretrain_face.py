"""``mmaffect pretrain-face`` through click: both face-set layouts, the published backbone in the
fine-tuning path, the metrics file, a real kill -9 / rerun, publishing a given checkpoint, bad paths."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from _arcface_reference import FIXTURES, read_key_list
from _kill import kill_after_checkpoint
from _pretrain_inputs import make_faces, make_learnable_faces, write_params
from pipeline.model_files.backbone import load_backbone_state
from pipeline.model_files.checkpoint import CheckpointMismatchError
from pipeline.models.margin import MarginSoftmax, chance_loss
from pipeline.models.multitask import build_model
from pipeline.models.registry import create_backbone
from pipeline.train.visual import VisualTrainConfig
from stages.cli import main


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny identity set, written once for the module (``rec/`` and ``folder/``)."""
    return make_faces(tmp_path_factory.mktemp("pretrain") / "faces")


def _args(faces_path: Path, tmp_path: Path, params: Path) -> list[str]:
    return [str(faces_path), str(tmp_path / "pretrain"), str(tmp_path / "metrics/pretrain.json"), "--params",
            str(params), "--device", "cpu", "--work-dir", str(tmp_path / "work"), "--no-progress"]


def _run(args: list[str]) -> dict:
    result = CliRunner().invoke(main, ["pretrain-face", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def test_help_says_what_it_reads_and_writes() -> None:
    result = CliRunner().invoke(main, ["pretrain-face", "--help"])
    assert result.exit_code == 0
    for word in ("train.rec", "<identity>/<image>.jpg", "backbone.pth", "METRICS_JSON", "--device", "--workers",
                 "--work-dir", "torchrun"):
        assert word in result.output


def test_both_layouts_train_the_same_backbone_and_it_loads_into_finetune(faces: Path, tmp_path: Path) -> None:
    published = {}
    for layout in ("rec", "folder"):
        out = tmp_path / layout
        out.mkdir()
        summary = _run(_args(faces / layout, out, write_params(out)))
        metrics = json.loads((out / "metrics/pretrain.json").read_text())
        assert summary["best_epoch"] == metrics["best_epoch"] and 1 <= metrics["best_epoch"] <= 2
        assert metrics["epochs"] == 2 and [h["epoch"] for h in metrics["history"]] == [1, 2]
        assert metrics["data"] == {"format": layout, "train_identities": 8, "holdout_identities": 2,
                                   "train_images": 32, "holdout_images": 8, "pairs": 40}
        for scores in (metrics["verification"], metrics["initial"], *metrics["history"]):
            assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["tar_at_far"] <= 1.0
            assert scores["far"] == 0.001
        best = metrics["history"][metrics["best_epoch"] - 1]
        assert metrics["verification"]["accuracy"] == best["accuracy"] == max(h["accuracy"] for h in metrics["history"])
        assert all(h["loss"] > 0 for h in metrics["history"])
        arch = json.loads((out / "pretrain/backbone.json").read_text())
        assert arch["backbone"] == "iresnet18" and arch["width_mult"] == 0.0625 and arch["epoch"] == metrics["best_epoch"]
        published[layout] = (torch.load(out / "pretrain/backbone.pth", map_location="cpu", weights_only=True), metrics)

    state, metrics = published["rec"]
    # the same JPEGs in the same identity order: the layouts train the same network
    assert published["folder"][1]["verification"] == metrics["verification"]
    assert all(torch.equal(state[k], v) for k, v in published["folder"][0].items())
    # a plain state dict under arcface_torch's key names (the width changes shapes, never names)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert list(state) == [name for name, _ in read_key_list(FIXTURES / "iresnet18_keys.txt")]

    path = tmp_path / "rec/pretrain/backbone.pth"
    model = build_model(VisualTrainConfig(width_mult=0.0625).arch())
    load_backbone_state(model.backbone, path)
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in state.items())
    wider = build_model(VisualTrainConfig(width_mult=0.125).arch())
    with pytest.raises(CheckpointMismatchError, match=r"backbone.pth.*width_mult 0\.125"):
        load_backbone_state(wider.backbone, path)


def test_epochs_zero_publishes_the_init_checkpoint_as_it_is(faces: Path, tmp_path: Path) -> None:
    torch.manual_seed(7)
    init = create_backbone("iresnet18", width_mult=0.0625).state_dict()
    torch.save({f"module.{k}": v for k, v in init.items()}, tmp_path / "r18.pth")  # as insightface's DDP saves it
    # no gate for a given backbone: it is published although it gained nothing over itself
    params = write_params(tmp_path, epochs=0, init=str(tmp_path / "r18.pth"), min_gain=0.1)
    summary = _run(_args(faces / "rec", tmp_path, params))
    assert summary["best_epoch"] == 0 and summary["epochs"] == 0
    assert summary["verification"] == summary["initial"]
    published = torch.load(tmp_path / "pretrain/backbone.pth", map_location="cpu", weights_only=True)
    assert list(published) == list(init) and all(torch.equal(published[k], v) for k, v in init.items())
    assert not (tmp_path / "work/state.pt").exists()

    wrong = write_params(tmp_path, epochs=0, init=str(tmp_path / "r18.pth"), width_mult=0.125)
    result = CliRunner().invoke(main, ["pretrain-face", *_args(faces / "rec", tmp_path, wrong)])
    assert result.exit_code == 1 and "r18.pth" in result.output and "width_mult 0.125" in result.output


def _with_outs(faces_path: Path, tmp_path: Path, params: Path) -> list[str]:
    """The stage's arguments with every out: backbone dir, metrics, curves and headline."""
    return [*_args(faces_path, tmp_path, params), "--curves", str(tmp_path / "metrics/curves.csv"),
            "--headline", str(tmp_path / "metrics/headline.json")]


def test_a_run_that_cannot_learn_is_refused_in_one_line_and_publishes_nothing(faces: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path, epochs=1, lr=1e-9, min_gain=0.1)   # the weights cannot move
    result = CliRunner().invoke(main, ["pretrain-face", *_with_outs(faces / "rec", tmp_path, params)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    refused = tmp_path / "work/refused.json"
    line = result.output.strip()
    assert "\n" not in line and line.startswith("Error: pretrain-face did not learn: held-out verification ")
    metrics = json.loads(refused.read_text())
    assert f"(needs +0.10); last epoch's loss {metrics['history'][-1]['loss']:.1f} against a chance loss of " \
           f"{metrics['chance_loss']:.1f}; nothing published (this run's metrics: {refused})" in line
    assert metrics["verification"]["accuracy"] - metrics["initial"]["accuracy"] < 0.1
    assert not (tmp_path / "pretrain").exists() and not (tmp_path / "metrics").exists()

    # the gain it asks for is the judge's, not the training's: lowered, the finished run is published
    judged_again = write_params(tmp_path, epochs=1, lr=1e-9, min_gain=-1.0)
    _run(_with_outs(faces / "rec", tmp_path, judged_again))
    assert (tmp_path / "pretrain/backbone.pth").is_file() and (tmp_path / "metrics/headline.json").is_file()
    assert json.loads((tmp_path / "metrics/pretrain.json").read_text())["history"] == metrics["history"]
    assert not refused.exists()


def test_a_run_that_learns_is_published_with_its_loss_against_chance(tmp_path: Path) -> None:
    faces = make_learnable_faces(tmp_path / "faces")
    params = write_params(tmp_path, width_mult=0.125, epochs=3, batch_size=16, images_per_epoch=None, lr=0.05,
                          s=30.0, m=0.2, sample_rate=1.0, holdout_share=0.3, verification_pairs=30, min_gain=0.1)
    _run(_with_outs(faces, tmp_path, params))
    metrics = json.loads((tmp_path / "metrics/pretrain.json").read_text())
    assert metrics["verification"]["accuracy"] >= metrics["initial"]["accuracy"] + 0.1
    assert metrics["chance_loss"] == pytest.approx(chance_loss(8, 30.0, 0.2), rel=1e-9)
    assert metrics["loss"] == metrics["history"][metrics["best_epoch"] - 1]["loss"]
    assert metrics["history"][-1]["loss"] < metrics["chance_loss"]
    assert (tmp_path / "pretrain/backbone.pth").is_file() and not (tmp_path / "work/refused.json").exists()


def test_a_nan_loss_is_refused_and_publishes_nothing(faces: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real = MarginSoftmax.forward
    monkeypatch.setattr(MarginSoftmax, "forward", lambda self, *a, **k: real(self, *a, **k) * float("nan"))
    result = CliRunner().invoke(main, ["pretrain-face", *_with_outs(faces / "rec", tmp_path, write_params(tmp_path))])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == ("Error: pretrain_face: training diverged at epoch 1, batch 1: the face loss is "
                                     "nan; nothing was published. Try a lower pretrain_face.lr or set "
                                     "pretrain_face.max_grad_norm")
    assert not (tmp_path / "pretrain").exists() and not (tmp_path / "metrics").exists()


def test_bad_params_and_paths_are_one_line_errors(faces: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["pretrain-face", *_args(faces / "rec", tmp_path, write_params(tmp_path, epochs=0))])
    assert result.exit_code == 2 and "pretrain_face.epochs: 0 needs init" in result.output
    result = CliRunner().invoke(main, ["pretrain-face", *_args(faces / "rec", tmp_path, write_params(tmp_path, margin="sphere"))])
    assert result.exit_code == 2 and "pretrain_face.margin" in result.output
    params = write_params(tmp_path)
    (tmp_path / "notes.txt").write_text("not a face set")
    (tmp_path / "empty").mkdir()
    for path, message in ((tmp_path / "nowhere", "nowhere: no such file or directory"),
                          (tmp_path / "notes.txt", "neither an insightface .rec/.idx pair"),
                          (tmp_path / "empty", "no <identity>/<image>.jpg files")):
        result = CliRunner().invoke(main, ["pretrain-face", *_args(path, tmp_path, params)])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "pretrain").exists() and not (tmp_path / "metrics").exists()


@pytest.mark.slow
def test_killed_stage_resumes_from_its_last_checkpoint(
    faces: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = _args(faces / "rec", tmp_path, write_params(tmp_path, epochs=3))
    kill_after_checkpoint("stages.pretrain_face", [*args, "--checkpoint-every", "1"], tmp_path / "work/state.pt")
    assert not (tmp_path / "pretrain").exists() and not (tmp_path / "metrics/pretrain.json").exists()

    caplog.set_level(logging.INFO, logger="pipeline.train.pretrain")
    summary = _run(args)
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming from epoch")]
    assert resumed and "of 3 epochs" in resumed[0] and "resuming from epoch 1 batch 0" not in resumed[0], resumed
    metrics = json.loads((tmp_path / "metrics/pretrain.json").read_text())
    assert metrics["epochs"] == 3 and [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert 1 <= summary["best_epoch"] == metrics["best_epoch"] <= 3
    assert (tmp_path / "pretrain/backbone.pth").is_file()


def test_a_damaged_record_fails_before_training_in_one_line(faces: Path, tmp_path: Path) -> None:
    import shutil

    from pipeline.data.faces.recordio import RecordReader

    root = Path(shutil.copytree(faces / "rec", tmp_path / "rec"))
    key = len(RecordReader(root / "train.rec", root / "train.idx").index) // 2
    offset = RecordReader(root / "train.rec", root / "train.idx").index.offset(key)
    with (root / "train.rec").open("r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * 64)
    result = CliRunner().invoke(main, ["pretrain-face", *_args(root, tmp_path, write_params(tmp_path))])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.splitlines()[-1] == (f"Error: {root / 'train.rec'}: record {key} at offset {offset}: "
                                              "wrong magic 0x00000000 (expected 0xced7230a)")
    assert not (tmp_path / "pretrain").exists() and not (tmp_path / "work" / "state.pt").exists()
