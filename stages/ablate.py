"""``mmaffect ablate``: run a grid of train-sequence params as DVC experiments, repeated over training seeds and
synthetic draws, and tabulate them (per experiment, and per arm as mean ± sd with paired differences)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import click
import yaml
from click.core import ParameterSource

from pipeline.ablation import (
    AU_EXPR_SCORE, DATA_SEED_KEY, EXAMPLE_GRID, REPLICATE_KEYS, arm_name, attach_exp_show_metrics, default_seed_keys,
    expand_grid, exp_run_command, experiment_rows, format_csv, format_markdown, load_points, lookup_params,
    missing_keys, param_key, plan_repeats, plan_replicates, render_ablation_table, resumable_runs, run_repeats,
    study_plan, summarize_runs,
)
from pipeline.labels import TASKS
from pipeline.paired_stats import DEFAULT_MARGIN
from pipeline.fsio import atomic_path
from tooling.bench.record import cpu_model
from stages.common import run_or_exit
from stages.experiment_workspace import Workspace
from stages.grid_check import check_grid


def _values(text: str | None) -> list[Any] | None:
    """``"10,30"`` -> ``[10, 30]`` (each item parsed as YAML, like ``dvc exp run -S``)."""
    return None if text is None else [yaml.safe_load(item) for item in text.split(",") if item.strip()]


def _ints(option: str, text: str | None) -> list[int] | None:
    """``"0,1,2"`` -> ``[0, 1, 2]``; anything but integers is a usage error naming the option."""
    values = _values(text)
    if values is not None and (not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)):
        raise click.BadParameter(f"expected a comma list of integers, got {text!r}", param_hint=option)
    return values


def _dvc(argv: list[str]) -> list[str]:
    """``argv`` with ``dvc`` taken from this interpreter's environment when it has one (an unactivated venv)."""
    beside = Path(sys.executable).parent / "dvc"
    return [str(beside), *argv[1:]] if argv[:1] == ["dvc"] and beside.is_file() else argv


def _run(argv: list[str]) -> None:
    click.echo("$ " + " ".join(argv), err=True)
    try:
        result = subprocess.run(_dvc(argv), check=False)
    except FileNotFoundError as exc:
        raise click.ClickException(f"cannot run {argv[0]!r}: {exc}; install dvc or activate its environment") from exc
    if result.returncode != 0:
        raise click.ClickException(f"{' '.join(argv[:5])} failed with exit status {result.returncode}")


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _undoing_failures(workspace: Workspace) -> Callable[[list[str]], None]:
    """``_run`` for workspace experiments: a failed one leaves params.yaml, dvc.lock, the metrics and the
    outputs as the last good experiment (or the start) left them, not holding its params and deleted outputs."""

    def run(argv: list[str]) -> None:
        workspace.save()
        try:
            _run(argv)
        except click.ClickException as exc:
            workspace.restore()
            raise click.ClickException(f"{exc.message}; the workspace is back as it was before it "
                                       "(params.yaml, dvc.lock, metrics and outputs)") from exc

    return run


def _exp_show() -> list[dict[str, Any]]:
    listing = subprocess.run(_dvc(["dvc", "exp", "show", "--json"]), check=False, capture_output=True, text=True)
    if listing.returncode != 0:
        raise click.ClickException(f"dvc exp show failed: {listing.stderr.strip()}")
    return json.loads(listing.stdout)


def _command_line(ctx: click.Context) -> str:
    """The options given on the command line (defaults left out), as a ``mmaffect ablate ...`` string."""
    words = ["mmaffect", "ablate"]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        flag = param.opts[0]
        if isinstance(param, click.Option) and param.is_flag:
            words.append(flag)
        else:
            for item in value if isinstance(value, tuple) else [value]:
                words += [flag, str(item)]
    return " ".join(words)


def _git_commit() -> str | None:
    result = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


# What decides what a run measures: the library, the stages, the DAG and its params, the pinned dependencies.
MEASURED_PATHS = ("pipeline", "stages", "dvc.yaml", "params.yaml", "setup.cfg")


def _check_same_code(record: dict[str, Any], source: Path) -> None:
    """Refuse to resume a study at a commit whose :data:`MEASURED_PATHS` differ from those it started at: the
    new runs would measure another pipeline than the recorded ones they are paired with."""
    started, now = record.get("git_commit"), _git_commit()
    if not started or not now or started == now:
        return
    diff = subprocess.run(["git", "diff", "--name-only", started, now, "--", *MEASURED_PATHS],
                          check=False, capture_output=True, text=True)
    if diff.returncode != 0:
        raise click.ClickException(f"{source}: started at commit {started[:10]}, which git here cannot compare with "
                                   f"HEAD {now[:10]}; resume it in a checkout of {started[:10]}")
    if changed := diff.stdout.split():
        raise click.ClickException(
            f"{source}: started at commit {started[:10]}, and {len(changed)} file(s) that decide what a run measures "
            f"differ at HEAD {now[:10]} ({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}): new runs "
            f"would not pair with the recorded ones; finish it in a checkout of {started[:10]} "
            f"(git worktree add DIR {started[:10]}), or write the record elsewhere")


def _provenance(ctx: click.Context) -> dict[str, Any]:
    """What a reader needs to judge the numbers: the command, when, which code, on which CPU with how many threads."""
    import torch  # only for the thread count the stages' torch will use in this environment

    return {"command": _command_line(ctx), "date": _now(),
            "git_commit": _git_commit(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


@click.command(name="ablate")
@click.option("--grid", "grid_path", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML: a mapping of param -> list of values (their product), or a list of param mappings "
                   "(one per arm); instead of the options below.")
@click.option("--modalities", help="Comma list, e.g. visual,audio,both.")
@click.option("--window", help="Comma list of window lengths, e.g. 10,30.")
@click.option("--layers", help="Comma list of encoder layer counts, e.g. 1,2.")
@click.option("--seeds", type=click.IntRange(min=1),
              help="Repeat each arm with training seeds 0..N-1 (set on every --seed-param).")
@click.option("--seed-param", "seed_params",
              help="Comma list of the seed params --seeds sets [default: <section>.seed of each params section the "
                   "grid changes, i.e. train_sequence.seed: the stages that rerun].")
@click.option("--data-seeds", help=f"Comma list of synthetic draws ({DATA_SEED_KEY}), e.g. 0,1,2. Each draw reruns "
                                   "the whole pipeline once (slow: a demo draw takes minutes to tens of minutes).")
@click.option("--replicates", type=click.IntRange(min=1),
              help="Run every arm in N paired replicates: replicate r sets each --replicate-params param to "
                   "--replicate-start + r in every arm (instead of --seeds/--data-seeds); replicate by replicate.")
@click.option("--replicate-params", default=",".join(REPLICATE_KEYS), show_default=True,
              help="Comma list of the params each replicate sets: its synthetic draws' and trainings' seeds.")
@click.option("--replicate-start", type=click.IntRange(min=0), default=0, show_default=True,
              help="The first replicate's value of the --replicate-params.")
@click.option("--reference", "references", multiple=True,
              help="Arm the others are compared with, run by run (repeatable) [default: the first arm].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every run and the summary here as JSON (rewritten after each run).")
@click.option("--resume", is_flag=True,
              help="Continue the --json record of an interrupted run of the same plan: its runs with metrics are "
                   "not run again (a record of another plan, or started at a commit whose pipeline, stages, DAG, "
                   "params or pins differ, is refused); the others run with dvc exp run -f, "
                   "replacing an experiment of the same name the record does not hold.")
@click.option("--statistic", default="mean_score", show_default=True,
              help="The statistic declared before the runs (a metric: mean_score, au_expr_score, au.score, expr.f1, va.score, "
                   "...): first in the tables and the record.")
@click.option("--equivalence-margin", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_MARGIN,
              show_default=True, help="Paired differences within ± this are called equivalent when the 90 % "
                                      "interval lies inside it (two one-sided t tests).")
@click.option("--params", "params_path", type=click.Path(dir_okay=False, path_type=Path), default="params.yaml",
              show_default=True, help="Params file giving the value of a param some arms of a --grid list leave unset.")
@click.option("--dry-run", is_flag=True, help="Print the dvc commands instead of running them.")
@click.option("--show", is_flag=True, help="Only tabulate the planned experiments already in `dvc exp show --json`.")
@click.option("--temp", is_flag=True, help="Run each experiment outside the workspace (dvc exp run --temp).")
@click.option("--stage", "stages", multiple=True,
              help="Reproduce only this stage and the stages it depends on (dvc exp run STAGE; repeatable), e.g. "
                   "finetune-visual with --metrics metrics/visual.json [default: the whole pipeline].")
@click.option("--metrics", "metrics_path", default="metrics/headline/evaluate.json", show_default=True,
              help="Metrics file read for each experiment (--show and --temp: one dvc.yaml declares as metrics).")
@click.option("--variant", default="sequence", show_default=True,
              help="Key of the metrics file holding the scores, dotted for nesting: 'sequence' (evaluate's "
                   "headline, the frames with a face), 'all_frames.sequence' of metrics/evaluate.json, a trainer's "
                   "'validation.face_frames', or '' for a file with au/expr (and va) at the top.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the per-experiment table as Markdown here.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the per-experiment table as CSV here.")
@click.pass_context
def command(ctx: click.Context, grid_path: Path | None, modalities: str | None, window: str | None,
            layers: str | None, seeds: int | None, seed_params: str | None, data_seeds: str | None,
            replicates: int | None, replicate_params: str, replicate_start: int,
            references: tuple[str, ...], json_path: Path | None, resume: bool, statistic: str,
            equivalence_margin: float, params_path: Path, dry_run: bool, show: bool, temp: bool,
            stages: tuple[str, ...],
            metrics_path: str, variant: str, markdown_path: Path | None, csv_path: Path | None) -> None:
    """Run `dvc exp run -S train_sequence.<param>=<value> ...` for every arm of the grid (and every seed and
    draw, or every replicate), then print the per-experiment table (best mean score first: the mean of the AU,
    EXPR and, where the metrics have it, VA scores)
    and the per-arm summary: mean ± sd and number of runs, and the paired differences against the reference
    arm with their 95 % interval and verdict (difference, equivalent within --equivalence-margin, inconclusive).

    The grid is --grid, or the product of --modalities, --window and --layers, or by default
    modalities visual,audio,both x window 10,30 x layers 1,2. Without --data-seeds only train-sequence and
    evaluate rerun per experiment: the embeddings come from the DVC cache. Run it in the repository root.
    """
    _check_option_combinations(ctx, replicates, seeds, data_seeds, json_path, resume, temp, show)
    if not _is_metric(statistic):
        raise click.BadParameter(f"{statistic!r} is not a metric of the summary: mean_score, au_expr_score, or au.<name> / "
                                 "expr.<name> / va.<name> (au.score, expr.f1, va.score, ...)",
                                 param_hint="--statistic")
    options = {"modalities": _values(modalities), "window": _values(window), "layers": _values(layers)}
    axes = {name: values for name, values in options.items() if values is not None}
    if grid_path is not None and axes:
        raise click.UsageError("give either --grid or --modalities/--window/--layers, not both")
    points = run_or_exit(load_points, grid_path) if grid_path is not None else run_or_exit(expand_grid,
                                                                                           axes or EXAMPLE_GRID)
    seed_keys = [param_key(k) if "." in k else f"{k}.seed" for k in _values(seed_params) or []]
    seed_keys = seed_keys or default_seed_keys(points)
    replicate_keys = [param_key(k) for k in _values(replicate_params) or []]
    draws = _ints("--data-seeds", data_seeds)
    earlier = _read_record(json_path) if resume and json_path is not None and json_path.exists() else None
    if earlier is not None:
        _check_same_code(earlier, json_path)
    recorded_base = ((earlier or {}).get("plan") or {}).get("base")
    base = None
    if missing_keys(points) and isinstance(recorded_base, dict) and set(missing_keys(points)) <= set(recorded_base):
        # workspace experiments leave their -S values in params.yaml: a resumed study keeps the values it started with
        base = {key: recorded_base[key] for key in missing_keys(points)}
    elif missing_keys(points):  # arms listed one by one: the others run at the params file's value
        if not params_path.is_file():
            raise click.UsageError(f"{params_path} not found: it gives the values of params some arms leave unset")
        base = run_or_exit(lookup_params, yaml.safe_load(params_path.read_text()) or {}, missing_keys(points),
                           str(params_path))
    if replicates is not None:
        replicate_values = list(range(replicate_start, replicate_start + replicates))
        planned = run_or_exit(plan_replicates, points, replicate_values, replicate_keys, base=base)
        settings = {"replicate_params": replicate_keys}
    else:
        planned = run_or_exit(plan_repeats, points, list(range(seeds)) if seeds else None, seed_keys, draws,
                              base=base)
        settings = {"seed_params": seed_keys, "data_seed_param": DATA_SEED_KEY}
    references = references or (arm_name(points[0]),)
    arms = [arm_name(point) for point in points]
    if unknown := [ref for ref in references if ref not in arms]:
        raise click.BadParameter(f"{unknown} are not arms of this grid; the arms are {arms}", param_hint="--reference")
    check_grid(planned, params_path, str(grid_path) if grid_path is not None else "--modalities/--window/--layers")
    settings.update({"metrics_file": metrics_path, "variant": variant or None, "stages": list(stages) or None,
                     "base": base})
    plan = study_plan(points, references, statistic, equivalence_margin, settings)
    finished = [] if earlier is None else run_or_exit(resumable_runs, earlier, plan, planned, str(json_path))
    if dry_run:  # the runs still to do
        done = {run["experiment"] for run in finished}
        for run in planned:
            if run["experiment"] not in done:
                click.echo(" ".join(exp_run_command(run["params"], run["experiment"], temp=temp, stages=stages,
                                                    force=resume)))
        return
    record = {**(_provenance(ctx) if json_path is not None else {}), "metrics_file": metrics_path,
              "variant": variant or None, "statistic": statistic, "equivalence_margin": equivalence_margin,
              **({"replicate_params": replicate_keys,
                  "replicates": list(range(replicate_start, replicate_start + replicates))}
                 if replicates is not None else
                 {"seed_params": seed_keys, "seeds": list(range(seeds)) if seeds else None,
                  "data_seed_param": DATA_SEED_KEY, "data_seeds": draws}),
              "stages": list(stages) or None, "plan": plan}
    if earlier is not None:
        # the study started when its first part did; each resumption is dated beside it
        record["resumed"] = [*earlier.get("resumed", []), record["date"]]
        record["date"] = earlier.get("date", record["date"])
        record["git_commit"] = earlier.get("git_commit", record.get("git_commit"))   # what it measures: checked above
        click.echo(f"{json_path}: {len(finished)} of {len(planned)} runs done, resuming", err=True)

    # a complete record of this plan is left as it is: rerunning a finished study changes nothing
    settled = earlier is not None and earlier.get("complete") is True and len(finished) == len(planned)

    def save(runs: list[dict[str, Any]], complete: bool) -> None:
        if json_path is not None and not settled:
            done = {"finished": _now()} if complete else {}
            # a partial record compares against the references that have run so far
            ran = {run["arm"] for run in runs}
            document = {**record, "complete": complete, **done, "runs": runs,
                        **summarize_runs(runs, [ref for ref in references if ref in ran], statistic=statistic,
                                         margin=equivalence_margin)}
            _write(json_path, json.dumps(document, indent=2) + "\n")

    if show:
        runs = run_or_exit(attach_exp_show_metrics, planned, _exp_show(), metrics_path, variant or None)
    else:
        save(finished, complete=False)   # the plan and the declared statistic, on record before the first run
        read = lambda: json.loads(Path(metrics_path).read_text())  # noqa: E731
        runs = run_repeats(planned, _run if temp else _undoing_failures(Workspace(Path.cwd(), _run)), read, variant or None,
                           temp=temp, on_done=None if temp else lambda done: save(done, complete=False), stages=stages,
                           finished=finished, force=resume)
        if temp:  # --temp results stay out of the workspace: read them back from DVC
            runs = run_or_exit(attach_exp_show_metrics, planned, _exp_show(), metrics_path, variant or None)
    save(runs, complete=True)
    rows = experiment_rows(runs)
    click.echo(format_markdown(rows), nl=False)
    click.echo()
    click.echo(render_ablation_table(summarize_runs(runs, references, statistic=statistic, margin=equivalence_margin)),
               nl=False)
    if markdown_path is not None:
        _write(markdown_path, format_markdown(rows))
    if csv_path is not None:
        _write(csv_path, format_csv(rows))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _is_metric(name: str) -> bool:
    """A name ``flatten_metrics`` can produce: ``mean_score``, ``au_expr_score`` or ``<task>.<name>`` (``au.f1``,
    ``va.score``)."""
    task, _, rest = name.partition(".")
    return name in ("mean_score", AU_EXPR_SCORE) or (task in TASKS and bool(rest))


def _check_option_combinations(ctx: click.Context, replicates: int | None, seeds: int | None, data_seeds: str | None,
                               json_path: Path | None, resume: bool, temp: bool, show: bool) -> None:
    """Usage errors for options that cannot go together (one line each, exit status 2)."""
    given = lambda name: ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE  # noqa: E731
    if replicates is not None and (seeds is not None or data_seeds is not None):
        raise click.UsageError("give either --replicates or --seeds/--data-seeds, not both: a replicate sets the "
                               "seeds and the synthetic draw itself (--replicate-params)")
    if replicates is None and (given("replicate_params") or given("replicate_start")):
        raise click.UsageError("--replicate-params and --replicate-start need --replicates")
    if resume and json_path is None:
        raise click.UsageError("--resume needs --json: the record it continues")
    if resume and (temp or show):
        raise click.UsageError("--resume continues workspace runs: leave out --temp and --show")


def _read_record(path: Path) -> dict[str, Any]:
    """The JSON record an earlier ``ablate --json`` wrote (one-line error naming the file when unreadable)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"{path}: not a readable ablation record ({exc})") from exc
    if not isinstance(record, dict):
        raise click.ClickException(f"{path}: not an ablation record (a JSON object), got {type(record).__name__}")
    return record


if __name__ == "__main__":
    command()
