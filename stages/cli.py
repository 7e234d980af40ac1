"""The ``mmaffect`` command: one subcommand per pipeline stage, imported only when used."""

from __future__ import annotations

import importlib

import click

# subcommand name -> module under stages/ that defines ``command``
STAGES: dict[str, str] = {
    "synth": "synth",
    "synth-faces": "synth_faces",
    "pretrain-face": "pretrain_face",
    "prepare": "prepare",
    "pack-frames": "pack_frames",
    "finetune-visual": "finetune_visual",
    "export-onnx": "export_onnx",
    "embed-visual": "embed_visual",
    "train-audio": "train_audio",
    "embed-audio": "embed_audio",
    "train-sequence": "train_sequence",
    "evaluate": "evaluate",
    "predict": "predict",
    "crop": "crop",
    "ablate": "ablate",
    "report": "report",
    "faces-info": "faces_info",
    "backbone-of": "backbone_of",
}

# One-line summaries for `mmaffect --help`, so listing commands imports no stage (and no torch).
SUMMARIES: dict[str, str] = {
    "synth": "Write the synthetic Aff-Wild2-layout dataset.",
    "synth-faces": "Write the synthetic face-identity set (both layouts).",
    "pretrain-face": "Train the backbone as a face recogniser (CosFace).",
    "prepare": "Read annotations and videos; write manifest, labels, report.",
    "pack-frames": "Pack the face crops into one HDF5 frame store.",
    "finetune-visual": "Fine-tune the IResNet with AU and expression heads.",
    "export-onnx": "Re-export a visual model.pt to ONNX (parity-checked; int8, fp16 copies).",
    "embed-visual": "Cache per-frame visual embeddings in Zarr (dask).",
    "train-audio": "Train the TDNN audio stream and A+V fusion head.",
    "embed-audio": "Cache per-frame audio embeddings in Zarr (dask).",
    "train-sequence": "Train the transformer on cached embedding windows.",
    "evaluate": "Score all variants; write metrics, plots, submissions.",
    "predict": "Predict per-frame AUs and expressions for new videos.",
    "crop": "Write aligned face crops of new videos (cropped_aligned layout).",
    "ablate": "Run a train-sequence params grid as DVC experiments; tabulate.",
    "report": "Render the result tables of README.md and docs/ from JSON files.",
    "faces-info": "Print format, identities and images of a face-identity set.",
    "backbone-of": "Write a visual model.pt's backbone as finetune-visual's starting point.",
}


class LazyGroup(click.Group):
    """A group that imports a stage module only when its subcommand runs (keeps --help fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(STAGES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in STAGES:
            return None
        module = importlib.import_module(f"stages.{STAGES[name]}")
        return module.command

    def invoke(self, ctx: click.Context) -> object:
        # A full disk can strike in any write of any stage; report it as one line, not a traceback.
        from pipeline.fsio import ForeignOutputError

        try:
            return super().invoke(ctx)
        except ForeignOutputError as exc:  # an output folder someone else filled: one line, kept as it is
            raise click.ClickException(str(exc)) from exc
        except (OSError, RuntimeError) as exc:
            from stages.common import raise_if_disk_full

            raise_if_disk_full(exc)
            raise

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUMMARIES.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="mmaffect")
def main() -> None:
    """mmaffect: facial Action Units and expressions from face and voice, stage by stage.

    Each subcommand is one DVC stage (see dvc.yaml); `dvc repro` runs them in order.
    """


if __name__ == "__main__":
    main()
