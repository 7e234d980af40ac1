"""Per-epoch curves: the columns dvc.yaml's plots name, one row per epoch, from every trainer's history."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.train.curves import curve_rows, write_curves

ROOT = Path(__file__).resolve().parents[3]


def _frame_report(au: float, expr: float) -> dict:
    return {"face_frames": {"au": {"f1": 0.1, "acc": 0.2, "score": au}, "expr": {"score": expr},
                            "score": (au + expr) / 2, "frames": {"au": 5, "expr": 5}},
            "all_frames": {"au": {"score": 0.0}, "score": 0.0}}


def test_a_trainer_history_becomes_one_row_per_epoch_with_the_face_frame_scores(tmp_path: Path) -> None:
    history = [{"epoch": e, "score": None, "loss": {"au": 1.0 / e, "expr": None},
                "metrics": _frame_report(0.1 * e, 0.2 * e), "seconds": 1.0, "selection": None}
               for e in (1, 2)]
    rows = curve_rows(history)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[1] == {"epoch": 2, "loss_au": 0.5, "loss_expr": None, "val_au_score": 0.2, "val_expr_score": 0.4,
                       "val_score": 0.30000000000000004, "selection_score": None}
    path = tmp_path / "curves" / "train-sequence.csv"
    write_curves(path, history)
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,loss_au,loss_expr,val_au_score,val_expr_score,val_score,selection_score"
    assert lines[1].startswith("1,1.0,,0.1,0.2,")   # a task without batches: an empty cell
    assert [p.name for p in path.parent.iterdir()] == ["train-sequence.csv"]   # no temporary left


def test_a_pretraining_history_gives_the_verification_figures() -> None:
    history = [{"epoch": 1, "score": 0.6, "loss": {"face": 30.0}, "seconds": 1.0, "selection": None,
                "metrics": {"verification": {"score": 0.6, "accuracy": 0.6, "accuracy_std": 0.01, "far": 0.001,
                                             "tar_at_far": 0.02}}}]
    assert curve_rows(history) == [{"epoch": 1, "loss_face": 30.0, "val_accuracy": 0.6, "val_tar_at_far": 0.02,
                                    "selection_score": 0.6}]


def test_holdout_selection_adds_the_held_out_score() -> None:
    history = [{"epoch": 1, "score": 0.3, "loss": {"au": 1.0}, "metrics": _frame_report(0.1, 0.2), "seconds": 1.0,
                "selection": _frame_report(0.2, 0.4)}]
    assert curve_rows(history)[0]["holdout_score"] == 0.30000000000000004


def test_a_report_with_va_adds_its_score_column() -> None:
    report = _frame_report(0.1, 0.2)
    report["face_frames"]["va"] = {"ccc_valence": 0.3, "ccc_arousal": 0.5, "score": 0.4}
    history = [{"epoch": 1, "score": 0.3, "loss": {"expr": 1.0, "au": 0.5, "va": 0.8}, "metrics": report,
                "seconds": 1.0, "selection": None}]
    row = curve_rows(history)[0]
    assert row["loss_va"] == 0.8 and row["val_va_score"] == 0.4
    assert list(row)[:7] == ["epoch", "loss_expr", "loss_au", "loss_va", "val_au_score", "val_expr_score",
                             "val_va_score"]


def test_every_curve_column_dvc_yaml_plots_is_one_the_trainers_write() -> None:
    """A plot naming a column no row has renders empty: keep dvc.yaml and curve_rows in step."""
    written = {
        "pretrain-face": {"epoch", "loss_face", "val_accuracy", "val_tar_at_far", "selection_score"},
        **{stage: {"epoch", "loss_au", "loss_expr", "val_au_score", "val_expr_score", "val_score", "holdout_score",
                   "selection_score"} for stage in ("finetune-visual", "train-audio", "train-sequence")},
    }
    written["finetune-visual"] |= {"loss_va", "val_va_score"}   # the demo's frames carry VA labels
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    named = {}
    for entry in plots:
        if not isinstance(entry, dict):
            continue
        (spec,) = entry.values()
        for path, columns in spec["y"].items():
            if path.startswith("metrics/curves/"):
                assert spec["x"] == "epoch"
                named.setdefault(Path(path).stem, set()).update(columns)
    assert set(named) == set(written)
    assert all(named[stage] <= written[stage] for stage in named), named
