"""A study's tuning step: the value of one param (the learning rate) each arm uses, chosen on held-out scores.

A learning-rate grid run by ``mmaffect ablate --json`` on a tuning replicate records, per run, the
held-out selection score of the epoch the trainer kept (``selection_score``; the validation scores
the study reports play no part). :func:`choose` picks, for each value of the grouping param (the
start, ``finetune_visual.backbone_init``: ``pretrained`` or ``random``), the value of the tuned param
with the best mean held-out score; ties go to the smaller value. :func:`check_arms` says where a
study's arms file does not use those choices, so the study cannot start on an untuned rate.

    python -m tooling.study choose-lr studies/pretrain_lr_grid.json --out studies/pretrain_lr_choice.json \\
        --check-arms experiments/pretrain_arms.yaml --check-arms experiments/pretrain_arms_sequence.yaml

Example:
    >>> runs = [{"experiment": f"e{i}", "params": {"lr": lr, "init": init}, "metrics": {"selection_score": s}}
    ...         for i, (lr, init, s) in enumerate([(0.01, "random", 0.4), (0.05, "random", 0.5),
    ...                                            (0.01, "pretrained", 0.3), (0.05, "pretrained", 0.2)])]
    >>> chosen = choose({"complete": True, "runs": runs}, "lr", "init", "grid.json")
    >>> {group: entry["value"] for group, entry in chosen.items()}
    {'random': 0.05, 'pretrained': 0.01}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from pipeline.ablation import SELECTION_SCORE, arm_name, load_points
from pipeline.fsio import atomic_path

DEFAULT_PARAM = "finetune_visual.lr"
DEFAULT_GROUP = "finetune_visual.backbone_init"


def choose(record: Mapping[str, Any], param: str, by: str, source: str) -> dict[str, dict[str, Any]]:
    """Per value of ``by``: ``{"value", "selection_score", "runs", "candidates": {value: mean score}}``, the value
    of ``param`` whose runs have the best mean held-out selection score (ties: the smaller value).

    ``record`` is a complete ``mmaffect ablate --json`` record (``source`` names it in errors); a run without
    ``param``, ``by`` or a held-out score is a ``ValueError``: the choice would be made on something else.
    """
    if not record.get("complete"):
        raise ValueError(f"{source}: the tuning runs are not complete; finish them (rerun with --resume) first")
    scores: dict[str, dict[Any, list[float]]] = {}
    for run in record.get("runs") or []:
        params, metrics = run.get("params") or {}, run.get("metrics") or {}
        for key in (param, by):
            if key not in params:
                raise ValueError(f"{source}: run {run.get('experiment')!r} does not set {key}")
        if SELECTION_SCORE not in metrics:
            raise ValueError(f"{source}: run {run.get('experiment')!r} has no held-out {SELECTION_SCORE} "
                             "(its trainer's selection.mode must be holdout)")
        scores.setdefault(str(params[by]), {}).setdefault(params[param], []).append(float(metrics[SELECTION_SCORE]))
    if not scores:
        raise ValueError(f"{source}: holds no runs to choose from")
    chosen = {}
    for group, by_value in scores.items():
        means = {value: sum(values) / len(values) for value, values in sorted(by_value.items())}
        best = max(means.values())
        value = min(v for v, mean in means.items() if mean == best)
        chosen[group] = {"value": value, "selection_score": best, "runs": len(by_value[value]),
                         "candidates": {str(v): mean for v, mean in means.items()}}
    return chosen


def check_arms(points: Sequence[Mapping[str, Any]], chosen: Mapping[str, Mapping[str, Any]], param: str, by: str,
               source: str) -> list[str]:
    """Where the arms (``load_points``) do not use the chosen value of ``param`` for their ``by`` value: one
    message per arm naming ``source``; empty when every arm does."""
    problems = []
    for point in points:
        arm = arm_name(point)
        if by not in point or param not in point:
            problems.append(f"{source}: arm {arm}: set {by} and {param} in the arm (the study runs in the "
                            "workspace, where the previous experiment's values stay)")
        elif str(point[by]) not in chosen:
            problems.append(f"{source}: arm {arm}: the tuning ran no {by}={point[by]}")
        elif point[param] != chosen[str(point[by])]["value"]:
            problems.append(f"{source}: arm {arm}: {param} is {point[param]}, the tuning chose "
                            f"{chosen[str(point[by])]['value']} for {by}={point[by]}")
    return problems


def render_choice(chosen: Mapping[str, Mapping[str, Any]], param: str, by: str) -> str:
    """A Markdown table: per group, the chosen value, its mean held-out score and every candidate's."""
    lines = [f"| {by} | chosen {param} | held-out score | runs | every {param} (held-out score) |",
             "|---|---|---|---|---|"]
    for group, entry in chosen.items():
        candidates = ", ".join(f"{value}: {score:.3f}" for value, score in entry["candidates"].items())
        lines.append(f"| {group} | {entry['value']} | {entry['selection_score']:.3f} | {entry['runs']} | "
                     f"{candidates} |")
    return "\n".join(lines) + "\n"


def _choose_lr(args: argparse.Namespace) -> int:
    record_path = Path(args.record)
    if not record_path.is_file():
        raise FileNotFoundError(f"{record_path}: no such tuning record (run the learning-rate grid first)")
    try:
        record = json.loads(record_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{record_path}: not a JSON record ({exc})") from exc
    chosen = choose(record, args.param, args.by, str(record_path))
    sys.stdout.write(render_choice(chosen, args.param, args.by))
    if args.out:
        with atomic_path(Path(args.out)) as tmp:
            tmp.write_text(json.dumps({"record": str(record_path), "param": args.param, "by": args.by,
                                       "score": SELECTION_SCORE, "chosen": chosen}, indent=2) + "\n")
    problems = [problem for arms in args.check_arms
                for problem in check_arms(load_points(arms), chosen, args.param, args.by, str(arms))]
    if problems:
        raise ValueError("; ".join(problems))
    return 0


def parser() -> argparse.ArgumentParser:
    """``python -m tooling.study``'s options."""
    top = argparse.ArgumentParser(prog="python -m tooling.study", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    choose_lr = commands.add_parser("choose-lr", help="the best value of a tuned param per start, on held-out scores")
    choose_lr.add_argument("record", help="the mmaffect ablate --json record of the tuning grid")
    choose_lr.add_argument("--param", default=DEFAULT_PARAM, help=f"the tuned param [default: {DEFAULT_PARAM}]")
    choose_lr.add_argument("--by", default=DEFAULT_GROUP, help=f"the param whose values get their own choice "
                                                               f"[default: {DEFAULT_GROUP}]")
    choose_lr.add_argument("--out", help="also write the choice here as JSON")
    choose_lr.add_argument("--check-arms", action="append", default=[],
                           help="an ablate --grid arms file; exit 1 unless every arm uses the choice (repeatable)")
    choose_lr.set_defaults(run=_choose_lr)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; an input error is one line on stderr and exit status 1."""
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
