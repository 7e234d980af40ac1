"""``mmaffect export-onnx``: a visual ``model.pt`` to ONNX, published only after a parity check.

Not a stage of the DAG: there ``finetune-visual --onnx`` exports the model it trains, with the same
library call. This command re-exports a ``model.pt`` by hand, e.g. with ``--fp16`` for a GPU.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.model_files.int8 import CalibrationConfig, int8_path
from pipeline.model_files.visual import ExportConfig, export_visual, quantize_visual, write_float16
from stages.common import load_config, params_option, run_or_exit, setup_logging


@click.command(name="export-onnx")
@click.argument("model_pt", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out_onnx", type=click.Path(dir_okay=False, path_type=Path))
@params_option
@click.option("--int8-calibration", "frames_h5", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, metavar="FRAMES_H5",
              help="Also write the int8 model (<OUT_ONNX stem>.int8.onnx), calibrated on export_onnx.int8_crops "
                   "face crops of FRAMES_H5 (drawn with seed 0).")
@click.option("--fp16", is_flag=True,
              help="Also write the float16 copy (<OUT_ONNX stem>.fp16.onnx) for GPU inference (docs/gpu.md).")
def command(model_pt: Path, out_onnx: Path, params_path: Path, frames_h5: Path | None, fp16: bool) -> None:
    """Export MODEL_PT (cache/visual/model.pt) to OUT_ONNX (cache/onnx/visual.onnx).

    The ONNX model takes `image` float32 (B,3,112,112), normalised (x/255-0.5)/0.5, and returns
    `embedding` (B,512), `au_logits` (B,12), `expr_logits` (B,7), `va_pred` (B,2) (valence, arousal
    in [-1, 1]), with a dynamic batch axis. It is
    checked with onnx.checker and compared with torch on onnxruntime's CPU provider (max abs diff
    <= parity_rtol * max(1, max|torch output|), per output) before it is renamed onto OUT_ONNX; on
    failure nothing is written. Params: the `export_onnx` section of --params (opset, parity_rtol,
    example_batch, int8_crops).

    With --int8-calibration, also writes the onnxruntime static quantization of OUT_ONNX (QDQ,
    per-channel int8 weights, uint8 activations) next to it, with the calibration crops recorded in
    its metadata; OUT_ONNX itself is the same as without the option. `embed-visual` runs it with
    `embed_visual.precision: int8`, `predict` with `--precision int8`.

    With --fp16, also writes OUT_ONNX's float16 copy (float16 weights and compute, float32 inputs and
    outputs), checked with onnx.checker and, where onnxruntime's CPU provider runs it, against OUT_ONNX.
    """
    setup_logging()
    cfg = load_config(params_path, "export_onnx", ExportConfig)
    report = run_or_exit(export_visual, model_pt, out_onnx, cfg)
    diffs = ", ".join(f"{name} {diff:.2e}" for name, diff in report["max_abs_diff"].items())
    click.echo(f"exported {model_pt} -> {out_onnx} (opset {report['opset']}; max abs diff vs torch: {diffs})")
    if frames_h5 is not None:
        quantized = run_or_exit(quantize_visual, out_onnx, frames_h5, int8_path(out_onnx),
                                CalibrationConfig(n_crops=cfg.int8_crops))
        diffs = ", ".join(f"{name} {diff:.2e}" for name, diff in quantized["max_abs_diff"].items())
        click.echo(f"quantized {out_onnx} -> {int8_path(out_onnx)} on {quantized['calibration']['n_crops']} crops "
                   f"(max abs diff vs float32: {diffs})")
    if fp16:
        half = run_or_exit(write_float16, out_onnx)
        check = half["cpu_check"]
        said = (", ".join(f"{name} {diff:.2e}" for name, diff in check["max_abs_diff"].items()) if check["ran"]
                else check["reason"])
        click.echo(f"float16 copy {out_onnx} -> {half['path']} (max abs diff vs float32 on the CPU: {said})")


if __name__ == "__main__":
    command()
