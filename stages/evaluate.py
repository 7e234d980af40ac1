"""``mmaffect evaluate``: score visual-only, A+V fusion and sequence model on the validation sets."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.data.manifest import read_manifest
from pipeline.evaluate.scoring import (
    BASELINE, CALIBRATED, FRAME_SETS, VARIANTS, EvaluateConfig, evaluate, headline_scores,
)
from pipeline.fsio import write_json
from pipeline.labels import TASKS
from stages.common import device_option, headline_option, load_config, params_option, run_or_exit, setup_logging

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command(name="evaluate")
@click.argument("prepared_dir", type=_DIR)
@click.argument("visual_zarr", type=_DIR)
@click.argument("audio_zarr", type=_DIR)
@click.argument("audio_dir", type=_DIR)
@click.argument("sequence_dir", type=_DIR)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("metrics_json", type=click.Path(dir_okay=False, path_type=Path))
@params_option
@device_option
@click.option(
    "--backend", type=click.Choice(("torch", "onnx")), default="torch", show_default=True,
    help="Run the sequence model from SEQUENCE_DIR/model.pt (torch) or SEQUENCE_DIR/sequence.onnx.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Frames per fusion-head batch and windows per sequence-model batch.")
@headline_option
def command(prepared_dir: Path, visual_zarr: Path, audio_zarr: Path, audio_dir: Path, sequence_dir: Path,
            out_dir: Path, metrics_json: Path, params_path: Path, device: str, backend: str,
            batch_size: int, headline_json: Path | None) -> None:
    """Score the validation subjects and write METRICS_JSON and OUT_DIR/{tables,plots,submission}/.

    Reads PREPARED_DIR/manifest.json (who is in the AU/EXPR/VA validation splits), the cached logits,
    VA predictions, embeddings and labels in VISUAL_ZARR and AUDIO_ZARR, the fusion head in
    AUDIO_DIR/model.pt and the sequence model in SEQUENCE_DIR. METRICS_JSON holds
    <frames>.<variant>.<au|expr>.{f1,acc,score} and <frames>.<variant>.va.{ccc_valence,ccc_arousal,score}
    (when the manifest has VA validation subjects) for the variants visual, fusion, sequence and the
    trivial baseline, on face_frames (frames with a
    face crop, as the paper scores) and all_frames (every labelled frame), and the face_frames scores
    again at the top as <variant>.<task>..., all with AUs decided at
    evaluate.au_threshold; calibrated.<frames>.<variant>.au holds the AU scores at the thresholds each
    model carries (chosen on the held-out selection split; 0.5 for a model without them). OUT_DIR gets per-class F1 tables (CSV,
    Markdown), PNG plots with their data as CSV in OUT_DIR/plot_data/, and ABAW submission files
    submission/<variant>/{AU_Set,EXPR_Set,VA_Set}/<subject>.txt.
    --headline gets the AU, EXPR and VA scores of each variant on face frames alone (and the calibrated AU ones).
    Params: the `evaluate` section of --params.
    """
    setup_logging()
    cfg = load_config(params_path, "evaluate", EvaluateConfig)
    manifest = run_or_exit(read_manifest, prepared_dir / "manifest.json")
    sequence_model = sequence_dir / ("model.pt" if backend == "torch" else "sequence.onnx")
    metrics = run_or_exit(
        evaluate, manifest, visual_zarr, audio_zarr, audio_dir / "model.pt", sequence_model, out_dir,
        metrics_json, cfg, device, batch_size=batch_size,
    )
    for frames in FRAME_SETS:
        for variant in (*VARIANTS, BASELINE):
            scores = ", ".join(f"{task.upper()} {metrics[frames][variant][task]['score']:.4f}"
                               for task in TASKS if task in metrics[frames][variant])
            click.echo(f"{frames} {variant}: {scores}")
        for variant, au in metrics[CALIBRATED][frames].items():
            click.echo(f"{frames} {variant} at its own AU thresholds ({CALIBRATED}): AU {au['au']['score']:.4f}")
    if headline_json is not None:
        run_or_exit(write_json, headline_json, headline_scores(metrics))
    click.echo(f"wrote {metrics_json} and {out_dir}/{{tables,plots,plot_data,submission}}")


if __name__ == "__main__":
    command()
