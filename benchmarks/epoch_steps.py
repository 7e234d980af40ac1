"""Training steps per epoch of train-audio and train-sequence on the demo, with and without the VA task; prints JSON.

A third task in the alternation adds a batch to every round, so an epoch of the rotation
(EXPR, AU, VA) is half as long again as one of (EXPR, AU) unless each task is capped
(``train_audio.max_segments``, ``train_sequence.max_windows``). This counts the steps of one epoch
from ``params.yaml`` alone: the demo's videos, their frame counts and task splits come from the
synthetic dataset's plan (:func:`pipeline.data.synth.plan.plan_videos`, no video is rendered), the
held-out selection videos from :func:`pipeline.train.selection.carve_selection`, the batches from
the trainers' own schedulers. Every frame of a subject counts as labelled for its tasks, so the
counts are upper bounds (the demo leaves about 6 % of each task's frames unlabelled, in stretches).

    python -m benchmarks.epoch_steps
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import from_dict
from pipeline.data.manifest import Manifest, SubjectRecord
from pipeline.data.synth.config import SynthConfig
from pipeline.data.synth.plan import plan_videos
from pipeline.inference.sequence import window_starts
from pipeline.train.alternating import TaskSchedule, alternating_batches
from pipeline.train.audio import AudioTrainConfig
from pipeline.train.epoch_plan import epoch_plan
from pipeline.train.selection import SelectionConfig, selection_split
from pipeline.train.sequence import SequenceTrainConfig
from pipeline.train.splits import Splits, task_splits
from tooling.bench import harness

ROTATIONS: dict[str, tuple[str, ...]] = {"au_expr": ("expr", "au"), "au_expr_va": ("expr", "au", "va")}


def demo_manifest(synth: SynthConfig) -> Manifest:
    """The demo dataset's subjects as ``prepare`` lists them (frame counts and splits per task)."""
    records = [
        SubjectRecord(name=s.name, video=v.stem, source="affwild2", n_frames=v.n_frames, fps=v.fps,
                      au_split=s.au_split, expr_split=s.expr_split, va_split=s.va_split)
        for v in plan_videos(synth) for s in v.subjects
    ]
    return Manifest(root="data/synthetic", subjects=tuple(records))


def audio_steps(manifest: Manifest, splits: Splits, cfg: AudioTrainConfig, tasks: tuple[str, ...],
                cap: int | None) -> dict[str, Any]:
    """Segments per task and the steps of epoch 0 (``epoch_plan``, as ``train-audio`` plans it)."""
    sizes = {task: sum(math.ceil(manifest.by_name(n).n_frames / cfg.segment_frames) for n in splits.train[task])
             for task in tasks}
    plan = epoch_plan(TaskSchedule(cfg.alternation, tasks), 0, sizes, cfg.batch_segments, cfg.seed,
                      max_frames=cap, min_batch=1)
    return {"segments": sizes, "cap": cap, "steps": len(plan)}


def sequence_steps(manifest: Manifest, splits: Splits, cfg: SequenceTrainConfig, tasks: tuple[str, ...],
                   cap: int | None) -> dict[str, Any]:
    """Windows per task and the steps of epoch 0 (``alternating_batches``, as ``train-sequence`` runs them)."""
    sizes = {task: sum(len(window_starts(manifest.by_name(n).n_frames, cfg.window, cfg.stride))
                       for n in splits.train[task]) for task in tasks}
    batches = {task: list(range(math.ceil(min(n, cap or n) / cfg.batch_size))) for task, n in sizes.items()}
    steps = sum(1 for _ in alternating_batches(TaskSchedule(cfg.alternation, tasks), 0, batches))
    return {"windows": sizes, "cap": cap, "steps": steps}


def main() -> None:
    parser = harness.parser("epoch_steps", __doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the demo's params")
    args = parser.parse_args()
    bench = harness.start("epoch_steps")
    params = yaml.safe_load(args.params.read_text())
    manifest = demo_manifest(SynthConfig.from_params(params["synth"]))
    selection = from_dict(SelectionConfig, params["selection"], where="selection")
    audio = from_dict(AudioTrainConfig, params["train_audio"], where="train_audio")
    sequence = from_dict(SequenceTrainConfig, params["train_sequence"], where="train_sequence")
    splits = {name: task_splits(manifest, cfg.sources, selection_split(manifest, selection))
              for name, cfg in (("audio", audio), ("sequence", sequence))}
    results: dict[str, Any] = {"params": str(args.params), "train_audio": {}, "train_sequence": {}}
    for name, tasks in ROTATIONS.items():
        for capped in (False, True):
            key = f"{name}_{'capped' if capped else 'uncapped'}"
            results["train_audio"][key] = audio_steps(manifest, splits["audio"], audio, tasks,
                                                      audio.max_segments if capped else None)
            results["train_sequence"][key] = sequence_steps(manifest, splits["sequence"], sequence, tasks,
                                                            sequence.max_windows if capped else None)
    for stage in ("train_audio", "train_sequence"):
        before, after = results[stage]["au_expr_uncapped"]["steps"], results[stage]["au_expr_va_capped"]["steps"]
        results[stage]["growth_with_va_capped"] = round(after / before - 1, 3)
    bench.publish(results, harness.env_threads(), args.out)


if __name__ == "__main__":
    main()
