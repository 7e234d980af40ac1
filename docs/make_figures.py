"""Make the pictures of the README and docs/results.md from one demo run; prints what it ran and wrote, as JSON.

From the run's ``cache/evaluation/`` (written by ``evaluate``) it draws one validation video's
timeline (``timeline.png``: its AU and expression labels against each of the three models' ABAW
submission files) and copies the per-AU F1 of the three models (``au_f1.png``) and the sequence
model's expression confusion matrix (``confusion_sequence.png``). With the run's models it runs
``mmaffect predict --overlay`` twice and saves one overlay frame of each:

- ``predict_overlay.png``: two real photographs (scikit-image's astronaut, matplotlib's Grace Hopper)
  in a 2 s video, far enough apart that each face's AU bars sit beside it, cropped to the pictures;
- ``predict_synthetic.png``: a validation video of the run's synthetic dataset, at the frame where
  the predicted expression matches the label with the highest probability (a labelled expression
  other than Neutral first): what a working model's overlay looks like.

    python docs/make_figures.py --run . --out docs/images      # after `make repro`, from the repository root
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.video import decode_frames
from pipeline.faces.moving_photos import astronaut, grace_hopper, located_faces, side_by_side_photos
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from pipeline.labels import AU_NAMES, EXPR_NAMES
from pipeline.data.synth.photo_video import write_frames_video

N_FRAMES, FPS = 50, 25
# Wide enough that the left face's bars fall in the gap before the right photograph, not on it.
PHOTO_FRAME, FACE_PX = (800, 300), 120.0
EVALUATE_PLOTS = {"au_f1.png": "au_f1.png", "confusion_sequence.png": "confusion_sequence.png"}
VALIDATION_VIDEOS = 3   # validation videos tried for a frame where the model is right


def copy_evaluate_plots(plots: Path, out: Path) -> dict[str, str]:
    """Copy ``evaluate``'s per-AU F1 and sequence-model confusion plots into ``out``."""
    if not plots.is_dir():
        raise FileNotFoundError(f"{plots}: no evaluate plots; run `make repro` (or `dvc repro evaluate`) first")
    for name, source in EVALUATE_PLOTS.items():
        if not (plots / source).is_file():
            raise FileNotFoundError(f"{plots / source}: missing from the evaluate plots")
        shutil.copyfile(plots / source, out / name)
    return {name: str(plots / source) for name, source in EVALUATE_PLOTS.items()}


VARIANTS = (("visual", "visual-only"), ("fusion", "A+V fusion head"), ("sequence", "sequence model"))
VARIANT_COLOURS = {"visual": "#1f77b4", "fusion": "#ff7f0e", "sequence": "#2ca02c"}
# Predicted AU cells by their agreement with the label (code = index), as evaluate's timelines colour them.
AGREEMENT = (("true negative", "#ffffff"), ("missed", "#fdae6b"), ("false positive", "#d62728"),
             ("true positive", "#08306b"), ("unlabelled", "#eeeeee"), ("unlabelled, predicted active", "#6baed6"))


def read_table(path: Path) -> np.ndarray:
    """An Aff-Wild2 annotation or ABAW submission file (a header line, then one line per frame) as ints."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    rows = path.read_text().split()[1:]
    return np.array([[int(v) for v in row.split(",")] for row in rows], dtype=int)


def agreement(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per frame and AU, the index into :data:`AGREEMENT` of a 0/1 prediction against a -1/0/1 label."""
    return np.where(truth < 0, 4 + pred, 2 * pred + np.clip(truth, 0, 1))


def timeline_figure(run: Path, png: Path) -> dict[str, object]:
    """The first validation video (by name) with both labels: its AU labels, each model's AU decisions
    coloured by agreement, and the expression labels against each model's, over time."""
    manifest = json.loads((run / "cache" / "prepared" / "manifest.json").read_text())
    root, submission = run / manifest["root"], run / "cache" / "evaluation" / "submission"
    subjects = sorted((s for s in manifest["subjects"] if s["au_split"] == s["expr_split"] == "validation"),
                      key=lambda s: s["name"])
    if not subjects:
        raise ValueError(f"{run}: no subject is in both validation sets; nothing to draw")
    subject = subjects[0]
    name, fps = subject["name"], float(subject["fps"])
    au_true = read_table(root / "annotations" / "AU_Set" / "Validation_Set" / f"{name}.txt")
    expr_true = read_table(root / "annotations" / "EXPR_Set" / "Validation_Set" / f"{name}.txt")[:, 0]
    au_pred = {v: read_table(submission / v / "AU_Set" / f"{name}.txt") for v, _ in VARIANTS}
    expr_pred = {v: read_table(submission / v / "EXPR_Set" / f"{name}.txt")[:, 0] for v, _ in VARIANTS}
    n = min(len(au_true), len(expr_true), *(len(a) for a in au_pred.values()))
    extent = (-0.5 / fps, (n - 0.5) / fps, len(AU_NAMES) - 0.5, -0.5)

    fig = Figure(figsize=(12, 11), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(5, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1, 1, 1, 1.1]})
    axes[0].imshow(np.clip(au_true[:n].T, -1, 1) + 1, aspect="auto", interpolation="nearest", extent=extent,
                   cmap=ListedColormap(["#d9d9d9", "#ffffff", "#08306b"]), vmin=0, vmax=2)
    axes[0].set_title("AU labels (navy: active, grey: unlabelled)", loc="left", fontsize=10)
    cmap = ListedColormap([colour for _, colour in AGREEMENT])
    for ax, (variant, label) in zip(axes[1:4], VARIANTS):
        ax.imshow(agreement(au_true[:n], au_pred[variant][:n]).T, aspect="auto", interpolation="nearest",
                  extent=extent, cmap=cmap, vmin=0, vmax=len(AGREEMENT) - 1)
        ax.set_title(f"AU decisions, {label}", loc="left", fontsize=10)
    for ax in axes[:4]:
        ax.set_yticks(range(len(AU_NAMES)), AU_NAMES, fontsize=7)
    axes[1].legend(handles=[Patch(facecolor=c, edgecolor="#999999", label=t) for t, c in AGREEMENT],
                   loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    time = np.arange(n) / fps
    labelled = np.where(expr_true[:n] >= 0, expr_true[:n], np.nan)
    axes[4].step(time, labelled, where="mid", color="#777777", linewidth=4, alpha=0.6, label="label")
    for variant, label in VARIANTS:
        axes[4].step(time, expr_pred[variant][:n], where="mid", color=VARIANT_COLOURS[variant], linewidth=1.3,
                     label=label)
    axes[4].set_yticks(range(len(EXPR_NAMES)), EXPR_NAMES, fontsize=8)
    axes[4].invert_yaxis()
    axes[4].set_title("expression (gaps in the label line: unlabelled)", loc="left", fontsize=10)
    axes[4].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes[4].set_xlabel("time (s)")
    fig.suptitle(f"{name}, a synthetic validation video: labels against the three models", fontsize=11)
    fig.savefig(png, format="png")
    return {"subject": name, "frames": int(n), "fps": fps, "submission": str(submission)}


def predict(video: Path, work: Path, models: Path, device: str) -> tuple[Path, Path, str]:
    """Run ``mmaffect predict VIDEO --overlay`` as a user does; return the CSV, the overlay and the command."""
    overlay = work / f"{video.stem}_overlay.mp4"
    args = ["predict", str(video), "--out", str(work / "predictions"), "--models-dir", str(models),
            "--device", device, "--overlay", str(overlay), "--redo"]
    # `python -m stages.cli` is what the `mmaffect` script starts
    subprocess.run([sys.executable, "-m", "stages.cli", *args], check=True)
    return work / "predictions" / f"{video.stem}.csv", overlay, "mmaffect " + " ".join(args)


def frame_of(video: Path, index: int) -> np.ndarray:
    """Frame ``index`` of ``video`` as (H, W, 3) uint8."""
    for i, (_, _, pixels) in enumerate(decode_frames(video)):
        if i == index:
            return pixels
    raise ValueError(f"{video}: no frame {index}")


def content_box(source: np.ndarray, drawn: np.ndarray, margin: int = 4) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) around the pictures and what the overlay drew: the frame without its
    black letterbox."""
    kept = (source.astype(int).sum(axis=2) > 30) | (np.abs(drawn.astype(int) - source).sum(axis=2) > 60)
    rows, cols = np.nonzero(kept)
    if not len(rows):
        raise ValueError("the overlay frame is black: nothing to crop to")
    height, width = kept.shape
    return (max(0, cols.min() - margin), max(0, rows.min() - margin),
            min(width, cols.max() + 1 + margin), min(height, rows.max() + 1 + margin))


def save_png(pixels: np.ndarray, png: Path) -> Path:
    """Save as a palette PNG (small enough to commit)."""
    image = Image.fromarray(pixels)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(png, optimize=True)
    return png


def real_faces_figure(work: Path, models: Path, device: str, png: Path) -> dict[str, object]:
    """The two photographs through ``predict --overlay``; the middle frame, cropped to the pictures."""
    photos = located_faces([astronaut(), grace_hopper()])
    frames = side_by_side_photos(photos, n_frames=N_FRAMES, size=PHOTO_FRAME, face_px=FACE_PX, drift=1.0)
    video = write_frames_video(work / "two_faces.mp4", frames, fps=FPS)
    _, overlay, command = predict(video, work, models, device)
    index = N_FRAMES // 2
    source, drawn = frame_of(video, index), frame_of(overlay, index)
    left, top, right, bottom = content_box(source, drawn)
    save_png(drawn[top:bottom, left:right], png)
    return {"command": command, "frame": index, "crop": [int(v) for v in (left, top, right, bottom)]}


def expression_labels(root: Path, name: str) -> np.ndarray:
    """The per-frame expression labels (-1: none) of validation subject ``name`` in an Aff-Wild2-layout ``root``."""
    path = root / "annotations" / "EXPR_Set" / "Validation_Set" / f"{name}.txt"
    lines = path.read_text().split()
    return np.array([int(v) for v in lines[1:]], dtype=int)


def best_right_frame(rows: list[dict[str, str]], labels: np.ndarray) -> tuple[int, float, int] | None:
    """(frame, probability, label) of the frame whose predicted expression matches its label with the
    highest probability, a label other than Neutral first; None when no frame is right."""
    best: tuple[tuple[bool, float], int, float, int] | None = None
    for row in rows:
        if row["face_present"] != "1" or row["face_id"] != "0":
            continue
        frame = int(row["frame"])
        label = int(labels[frame]) if frame < len(labels) else -1
        if label < 0 or row["expression"] != EXPR_NAMES[label]:
            continue
        prob = float(row[EXPR_NAMES[label]])
        key = (label != 0, prob)
        if best is None or key > best[0]:
            best = (key, frame, prob, label)
    return None if best is None else best[1:]


def synthetic_figure(run: Path, work: Path, models: Path, device: str, png: Path) -> dict[str, object]:
    """A validation video of the run's synthetic dataset through ``predict --overlay``, at a frame the
    model gets right."""
    manifest = json.loads((run / "cache" / "prepared" / "manifest.json").read_text())
    root = run / manifest["root"]
    subjects = sorted((s for s in manifest["subjects"] if s["expr_split"] == "validation"), key=lambda s: s["name"])
    found = []
    for subject in subjects[:VALIDATION_VIDEOS]:
        video = run / subject["video_path"]
        table, overlay, command = predict(video, work, models, device)
        with table.open(newline="") as f:
            right = best_right_frame(list(csv.DictReader(f)), expression_labels(root, subject["name"]))
        if right is not None:
            found.append(((right[2] != 0, right[1]), subject["name"], overlay, command, right))
    if not found:
        raise ValueError(f"{run}: the models get no labelled expression right in the first {VALIDATION_VIDEOS} "
                         "validation videos; no frame to show")
    _, name, overlay, command, (frame, prob, label) = max(found, key=lambda item: item[0])
    save_png(frame_of(overlay, frame), png)
    return {"command": command, "subject": name, "frame": frame, "label": EXPR_NAMES[label],
            "probability": round(prob, 4)}


def main() -> None:
    """Copy evaluate's plots, make the two overlay frames; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("."), help="the repository the demo ran in (cache/, data/)")
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="where the pictures go")
    parser.add_argument("--work", type=Path, default=None, help="folder for the videos and predictions (default: temporary)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    models = args.run / "cache"
    try:
        with tempfile.TemporaryDirectory(prefix="mmaffect-figures-") as tmp:
            work = args.work or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            report = {
                "evaluate_plots": copy_evaluate_plots(args.run / "cache" / "evaluation" / "plots", args.out),
                "timeline.png": timeline_figure(args.run, args.out / "timeline.png"),
                "predict_overlay.png": real_faces_figure(work, models, args.device, args.out / "predict_overlay.png"),
                "predict_synthetic.png": synthetic_figure(args.run, work, models, args.device,
                                                          args.out / "predict_synthetic.png"),
            }
    except (FileNotFoundError, ValueError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"make_figures: {err}") from None
    # the pictures' provenance beside them: which run's plots and which predict commands made them
    (args.out / "figures.json").write_text(json.dumps({"run": str(args.run.resolve()), **report}, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
