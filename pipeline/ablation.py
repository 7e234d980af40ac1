"""Ablation grids over the ``train_sequence`` params as DVC experiments, and their results table.

A grid maps params to the values to try, e.g. ``{"modalities": ["visual", "both"], "window": [10, 30],
"layers": [1, 2]}`` (bare names belong to ``train_sequence``; dotted names are used as given). Each
point of the cartesian product becomes one ``dvc exp run -S train_sequence.modalities=visual ...``;
as only ``train_sequence`` params change, DVC reruns only ``train-sequence`` and ``evaluate`` and
reuses the cached embeddings. Results come from each experiment's metrics file (read right after
its run, or from ``dvc exp show --json``) and are tabulated as Markdown or CSV.

Example:
    >>> points = expand_grid({"modalities": ["visual", "both"], "window": [10, 30]})
    >>> len(points), points[0]
    (4, {'train_sequence.modalities': 'visual', 'train_sequence.window': 10})
    >>> " ".join(exp_run_command(points[0]))
    'dvc exp run -n visual-w10 -S train_sequence.modalities=visual -S train_sequence.window=10'

Repeats: ``plan_repeats`` turns the arms into runs over training seeds and synthetic draws,
``run_repeats`` runs them, ``summarize_runs`` gives each arm's mean ± sd and the paired differences
against reference arms, and ``render_ablation_table`` renders that summary as Markdown.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from pipeline.config import ConfigError, from_section, read_yaml
from pipeline.labels import TASKS
from pipeline.paired_stats import DEFAULT_MARGIN, paired_stats

SECTION = "train_sequence"
EXAMPLE_GRID: dict[str, list[Any]] = {"modalities": ["visual", "audio", "both"], "window": [10, 30], "layers": [1, 2]}
METRIC_COLUMNS: tuple[str, ...] = ("au.f1", "au.acc", "au.score", "expr.f1", "expr.acc", "expr.score",
                                   "va.ccc_valence", "va.ccc_arousal", "va.score", "mean_score", "au_expr_score",
                                   "selection_score")
# the mean of the AU and EXPR scores alone: a statistic that means the same with and without VA labels
AU_EXPR_SCORE = "au_expr_score"
SELECTION_SCORE = "selection_score"   # a trainer's held-out score of the epoch it kept (tunes, never reports)
# params named by their value alone in experiment names (``visual``, ``random``)
_VALUE_ONLY = ("modalities", "backbone_init")
# short names used in experiment names
_ABBREVIATIONS = {"window": "w", "layers": "l", "stride": "s", "heads": "h", "d_model": "d", "dropout": "p",
                  "batch_size": "b"}


def param_key(name: str) -> str:
    """Full params path of a grid axis (``window`` -> ``train_sequence.window``)."""
    return name if "." in name else f"{SECTION}.{name}"


def expand_grid(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, first axis slowest; keys are full params paths."""
    if not axes:
        raise ValueError("an ablation grid needs at least one param with values")
    for name, values in axes.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"grid param {name!r} needs a non-empty list of values, got {values!r}")
    keys = [param_key(name) for name in axes]
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes.values())]


def load_grid(path: str | Path) -> dict[str, list[Any]]:
    """Read a grid from YAML: a mapping of param name to list of values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ablation grid file not found: {path}")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an ablation grid must be a mapping of param -> list of values")
    try:
        expand_grid(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return {str(k): list(v) for k, v in data.items()}


ARM_KEY = "arm"   # in a listed arm, its name instead of one made from its params (not a param)


def load_points(path: str | Path) -> list[dict[str, Any]]:
    """The arms of an ablation from YAML: a mapping of param -> values (their cartesian product, like
    ``load_grid``) or a list of mappings, each one arm (e.g. ``[{modalities: both, window: 1}, ...]``),
    optionally named by an ``arm`` key (``{arm: scratch, finetune_visual.backbone_init: random}``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ablation grid file not found: {path}")
    data = read_yaml(path)
    if isinstance(data, dict):
        return expand_grid(load_grid(path))
    if not isinstance(data, list) or not data or not all(isinstance(arm, dict) and arm for arm in data):
        raise ValueError(f"{path}: an ablation grid must be a mapping of param -> list of values, "
                         f"or a list of non-empty param mappings (one per arm), got {data!r}")
    points = [{(ARM_KEY if k == ARM_KEY else param_key(str(k))): v for k, v in arm.items()} for arm in data]
    names = [experiment_name(point) for point in points]
    if twice := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"{path}: two arms have the name {twice[0]!r}; name them apart with an 'arm' key")
    return points



def arm_params(point: Mapping[str, Any]) -> dict[str, Any]:
    """The params of a grid point (its ``arm`` name left out)."""
    return {key: value for key, value in point.items() if key != ARM_KEY}


def experiment_name(point: Mapping[str, Any]) -> str:
    """A short, git-ref-safe name of a grid point, e.g. ``both-w30-l1``: its arm's name, which is also its
    DVC experiment's (repeats add ``-d<draw>-s<seed>``), so ``dvc exp show`` lists the arms the tables name."""
    if ARM_KEY in point:
        return "".join(c if c.isalnum() or c == "-" else "_" for c in str(point[ARM_KEY]))
    parts = []
    for key, value in point.items():
        name = key.split(".")[-1]
        text = str(value).lower().replace(".", "p").replace("-", "m")
        parts.append(text if name in _VALUE_ONLY else f"{_ABBREVIATIONS.get(name, name)}{text}")
    return "-".join("".join(c if c.isalnum() else "_" for c in part) for part in parts) or "baseline"


def exp_run_command(point: Mapping[str, Any], name: str | None = None, temp: bool = False,
                    stages: Sequence[str] = (), force: bool = False) -> list[str]:
    """The ``dvc exp run`` argv of one grid point; ``stages`` limits it to those stages and their upstream;
    ``force`` replaces an experiment of the same name (``-f``)."""
    argv = ["dvc", "exp", "run", "-n", name or experiment_name(point)]
    if temp:
        argv.append("--temp")
    if force:
        argv.append("-f")
    for key, value in arm_params(point).items():
        argv += ["-S", f"{key}={_yaml_scalar(value)}"]
    return argv + list(stages)


def _yaml_scalar(value: Any) -> str:
    """``value`` as DVC's ``-S`` parses it (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def flatten_metrics(metrics: Mapping[str, Any], variant: str | None) -> dict[str, float]:
    """``{"au.f1": ..., ..., "va.score": ..., "mean_score": ...}`` from an evaluate JSON or a train-sequence
    JSON (``{"au": {...}, "expr": {...}, "va": {...}}``; ``va`` only where VA was scored).

    ``mean_score`` is the mean of the scores of the tasks present, as the trainers' selection score
    (:func:`pipeline.train.loop.selection_score`): AU and EXPR, and VA where the metrics have a VA
    score (a NaN or null score, a VA dimension without labelled frames, counts as absent).
    ``au_expr_score`` is the mean of the AU and EXPR scores alone, whether or not VA was scored.

    ``variant`` picks the scores in an evaluate JSON: ``sequence`` (its headline, the frames with a
    face), or a dotted path such as ``all_frames.sequence``; a single key the file lacks reads the
    file's top level.

    A trainer's metrics file (``selection.per_epoch`` and ``best_epoch``, ``selection.mode`` holdout) also
    gives ``selection_score``: the held-out selection score of the epoch it kept, the score to tune on
    (the validation scores stay untouched by the choice).
    """
    source: Any = metrics
    if variant and "." in variant:
        for key in variant.split("."):
            if not isinstance(source, Mapping) or key not in source:
                raise ValueError(f"metrics have no {variant!r} (missing {key!r})")
            source = source[key]
    elif variant:
        source = metrics.get(variant, metrics)
    if not isinstance(source, Mapping):
        raise ValueError(f"metrics for variant {variant!r} are not a mapping: {source!r}")
    row: dict[str, float] = {}
    for task in TASKS:
        for name, value in dict(source.get(task) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[f"{task}.{name}"] = float(value)   # a null score (JSON has no NaN) is no score
    scores = [row[f"{task}.score"] for task in TASKS if math.isfinite(row.get(f"{task}.score", math.nan))]
    if scores:
        row["mean_score"] = sum(scores) / len(scores)
    if all(math.isfinite(row.get(f"{task}.score", math.nan)) for task in ("au", "expr")):
        row[AU_EXPR_SCORE] = (row["au.score"] + row["expr.score"]) / 2
    held_out = _selection_score(metrics)
    if held_out is not None:
        row[SELECTION_SCORE] = held_out
    return row


def _selection_score(metrics: Mapping[str, Any]) -> float | None:
    """The held-out selection score of a trainer's kept epoch (``best_epoch``), or ``None`` without one."""
    selection = metrics.get("selection")
    if not isinstance(selection, Mapping) or selection.get("mode") != "holdout":
        return None
    kept = [e.get("selection_score") for e in selection.get("per_epoch") or []
            if isinstance(e, Mapping) and e.get("epoch") == metrics.get("best_epoch")]
    return float(kept[0]) if kept and isinstance(kept[0], (int, float)) else None


def rows_from_exp_show(
    exp_show: Sequence[Mapping[str, Any]],
    params: Sequence[str],
    metrics_file: str,
    variant: str | None = "sequence",
) -> list[dict[str, Any]]:
    """Rows of ``dvc exp show --json`` output: each baseline's and experiment's ``params`` and metrics."""
    keys = [param_key(p) for p in params]
    rows = []
    for state in _states(exp_show):
        if state.get("rev") == "workspace":
            continue  # the workspace repeats the last experiment run in it
        data = state.get("data") or {}
        values = _params_of(data)
        metrics = ((data.get("metrics") or {}).get(metrics_file) or {}).get("data")
        if not metrics:
            continue
        label = state.get("name") or str(state.get("rev", ""))[:7]
        rows.append({"experiment": label, **{k: values.get(k) for k in keys}, **flatten_metrics(metrics, variant)})
    return rows


def _states(nodes: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Every experiment state in ``dvc exp show --json``: baselines and their experiments."""
    for node in nodes:
        yield node
        for group in node.get("experiments") or []:
            yield from _states(group.get("revs") or [])


def _params_of(data: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted params (``train_sequence.window``) of every params file of an experiment."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node

    for result in (data.get("params") or {}).values():
        walk("", (result or {}).get("data") or {})
    return flat


def table_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Experiment, the grid params, then the metric columns present, in a fixed order (a task's other
    entries, such as ``va.frames_valence``, stay in the records, out of the table; ``au_expr_score`` only
    beside a VA score, as without one it is the mean score)."""
    seen: list[str] = []
    for row in rows:
        seen += [k for k in row if k not in seen]
    params = [k for k in seen if k != "experiment" and k not in METRIC_COLUMNS and k.split(".")[0] not in TASKS]
    if "va.score" not in seen:   # without VA the AU and EXPR mean is the mean score: one column says it
        seen = [k for k in seen if k != AU_EXPR_SCORE]
    return ["experiment", *params, *[c for c in METRIC_COLUMNS if c in seen]]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def format_markdown(rows: Sequence[Mapping[str, Any]], sort_by: str | None = "mean_score") -> str:
    """A Markdown table of ``rows`` (best ``sort_by`` first), params shortened to their last name."""
    rows = _sorted(rows, sort_by)
    columns = table_columns(rows)
    header = [c.split(".")[-1] if c.startswith(f"{SECTION}.") else c for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_csv(rows: Sequence[Mapping[str, Any]], sort_by: str | None = "mean_score") -> str:
    """The same table as CSV (full param paths as headers)."""
    rows = _sorted(rows, sort_by)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=table_columns(rows), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _sorted(rows: Sequence[Mapping[str, Any]], key: str | None) -> list[Mapping[str, Any]]:
    if key is None:
        return list(rows)
    return sorted(rows, key=lambda r: -r[key] if isinstance(r.get(key), (int, float)) else float("inf"))


# --- repeats: training seeds and synthetic draws, and their summary -------------------------------------------

DATA_SEED_KEY = "synth.seed"
SUMMARY_METRICS: tuple[str, ...] = ("au.score", "expr.score", "va.score", "mean_score")
_METRIC_TITLES = {"au.score": "AU score", "expr.score": "EXPR score", "va.score": "VA score",
                  "mean_score": "mean score"}


def arm_name(point: Mapping[str, Any]) -> str:
    """The label of one arm of a grid (``both-w30``, ``visual``): the name of its DVC experiments."""
    return experiment_name(point)


def default_seed_keys(points: Iterable[Mapping[str, Any]]) -> list[str]:
    """``<section>.seed`` of every params section the grid changes: the training seeds of the stages it reruns
    (``train_sequence.seed`` for a grid over ``train_sequence`` params)."""
    sections: list[str] = []
    for point in points:
        sections += [key.split(".")[0] for key in arm_params(point) if key.split(".")[0] not in sections]
    return [f"{section}.seed" for section in sections if section != "synth"]


def missing_keys(points: Sequence[Mapping[str, Any]]) -> list[str]:
    """Params some arms set and others do not (arms listed one by one, e.g. ``both`` and ``both-w1``)."""
    keys: list[str] = []
    for point in points:
        keys += [key for key in arm_params(point) if key not in keys]
    return [key for key in keys if any(key not in point for point in points)]


def lookup_params(params: Mapping[str, Any], keys: Iterable[str], source: str = "params.yaml") -> dict[str, Any]:
    """The values of dotted ``keys`` (``train_sequence.window``) in a params mapping; a missing one is an error
    naming ``source``."""
    values = {}
    for key in keys:
        node: Any = params
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ValueError(f"{source}: no param {key!r} (needed as the base value of an ablation arm)")
            node = node[part]
        values[key] = node
    return values


def plan_repeats(
    points: Sequence[Mapping[str, Any]],
    seeds: Sequence[int] | None = None,
    seed_keys: Sequence[str] = (),
    data_seeds: Sequence[int] | None = None,
    data_seed_key: str = DATA_SEED_KEY,
    base: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One planned run per (draw, arm, seed), draws slowest so each synthetic draw's upstream stages run once.

    Each run is ``{"experiment", "arm", "draw", "seed", "params"}``: ``params`` are the ``-S`` overrides (the
    arm's params, every key of ``seed_keys`` set to the seed, ``data_seed_key`` to the draw). ``None`` for
    ``seeds``/``data_seeds`` keeps the params file's value (one run, ``seed``/``draw`` recorded as ``None``).
    Workspace experiments keep the previous run's ``-S`` values, so a param that only some arms set
    (``missing_keys``) is set on the others to its ``base`` value (the params file's, ``lookup_params``).

    Example:
        >>> runs = plan_repeats([{"train_sequence.modalities": "both"}], seeds=[0, 1],
        ...                     seed_keys=["train_sequence.seed"], data_seeds=[3])
        >>> [(r["experiment"], r["params"]["train_sequence.seed"], r["params"]["synth.seed"]) for r in runs]
        [('both-d3-s0', 0, 3), ('both-d3-s1', 1, 3)]
    """
    if not points:
        raise ValueError("an ablation needs at least one arm")
    if seeds is not None and (not seeds or not seed_keys):
        raise ValueError(f"repeating over seeds {list(seeds)} needs at least one seed and one seed param")
    if data_seeds is not None and not data_seeds:
        raise ValueError("--data-seeds needs at least one synthetic draw")
    for name, values in (("seeds", seeds), ("data seeds", data_seeds)):
        if values is not None and len(set(values)) != len(values):
            raise ValueError(f"{name} repeat a value: {list(values)}")
    arms = [arm_name(point) for point in points]
    if len(set(arms)) != len(arms):
        raise ValueError(f"two arms of the ablation have the same name: {arms}")
    unset = [key for key in missing_keys(points) if key not in (base or {})]
    if unset:
        raise ValueError(f"params {unset} are set by some arms only: their base values are needed for the others")
    runs = []
    for draw in data_seeds if data_seeds is not None else [None]:
        for point, arm in zip(points, arms):
            for seed in seeds if seeds is not None else [None]:
                params = {**{key: (base or {})[key] for key in missing_keys(points) if key not in point},
                          **arm_params(point)}
                suffix = ""
                if draw is not None:
                    params[data_seed_key] = draw
                    suffix += f"-d{draw}"
                if seed is not None:
                    params.update({key: seed for key in seed_keys})
                    suffix += f"-s{seed}"
                runs.append({"experiment": experiment_name(point) + suffix, "arm": arm, "draw": draw, "seed": seed,
                             "params": params})
    return runs


REPLICATE_KEYS: tuple[str, ...] = ("synth.seed", "synth_faces.seed", "pretrain_face.seed", "finetune_visual.seed")


def plan_replicates(
    points: Sequence[Mapping[str, Any]],
    replicates: Sequence[int],
    replicate_keys: Sequence[str] = REPLICATE_KEYS,
    base: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One planned run per (replicate, arm), replicate by replicate, so an interrupted study holds whole pairs.

    Replicate ``r`` sets every key of ``replicate_keys`` (the seeds of the synthetic draws and of the
    training) to ``r`` in every arm, so the arms of one replicate differ in their own params only and are
    compared pair by pair. Each run is ``{"experiment": "<arm>-r<r>", "arm", "replicate", "draw": None,
    "seed": None, "params"}``; ``base`` as in :func:`plan_repeats`. An arm may not set a replicate key itself.

    Example:
        >>> runs = plan_replicates([{ARM_KEY: "a"}, {ARM_KEY: "b", "finetune_visual.lr": 0.1}], [0, 1],
        ...                        ["synth.seed"], base={"finetune_visual.lr": 0.02})
        >>> [(r["experiment"], r["params"]["finetune_visual.lr"], r["params"]["synth.seed"]) for r in runs]
        [('a-r0', 0.02, 0), ('b-r0', 0.1, 0), ('a-r1', 0.02, 1), ('b-r1', 0.1, 1)]
    """
    if not points:
        raise ValueError("an ablation needs at least one arm")
    if not replicates or not replicate_keys:
        raise ValueError(f"replicates {list(replicates)} need at least one replicate and one replicate param")
    if len(set(replicates)) != len(replicates):
        raise ValueError(f"replicates repeat a value: {list(replicates)}")
    arms = [arm_name(point) for point in points]
    if len(set(arms)) != len(arms):
        raise ValueError(f"two arms of the ablation have the same name: {arms}")
    for point, arm in zip(points, arms):
        if clash := [key for key in replicate_keys if key in point]:
            raise ValueError(f"arm {arm} sets {clash[0]}, which each replicate sets (--replicate-params)")
    unset = [key for key in missing_keys(points) if key not in (base or {})]
    if unset:
        raise ValueError(f"params {unset} are set by some arms only: their base values are needed for the others")
    runs = []
    for replicate in replicates:
        for point, arm in zip(points, arms):
            params = {**{key: (base or {})[key] for key in missing_keys(points) if key not in point},
                      **arm_params(point), **{key: replicate for key in replicate_keys}}
            runs.append({"experiment": f"{experiment_name(point)}-r{replicate}", "arm": arm, "replicate": replicate,
                         "draw": None, "seed": None, "params": params})
    return runs


def check_runs(
    runs: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any],
    configs: Mapping[str, type],
    where: str,
) -> None:
    """Check every run's ``-S`` values against the config dataclass of its params section, before any runs.

    Each section a run changes is built from the params file's section (``params``) with the run's
    values over it, as the stage will build it (``configs``: section -> dataclass; a section without
    one, such as ``data``, which only dvc.yaml reads, is not checked). An unknown section or key, or
    a bad value, is a :class:`~pipeline.config.ConfigError` on one line naming ``where`` (the grid),
    the arm and the key: ``grid.yaml: arm w0: train_sequence.window: must be >= 1, got 0``.
    """
    for run in runs:
        sections: dict[str, dict[str, Any]] = {}
        for key, value in run["params"].items():
            section, *path = key.split(".")
            if section not in params or not isinstance(params[section], Mapping):
                raise ConfigError(f"{where}: arm {run['arm']}: {key}: no params section {section!r} "
                                  f"(sections: {', '.join(sorted(params))})")
            if not path:
                raise ConfigError(f"{where}: arm {run['arm']}: {key}: names a section, not a param in it")
            data = sections.setdefault(section, copy.deepcopy(dict(params[section])))
            for part in path[:-1]:  # a nested section's key, e.g. predict.detector.upsample
                child = data.get(part)
                if not isinstance(child, dict):
                    child = data[part] = {}
                data = child
            data[path[-1]] = value
        for section, data in sections.items():
            if section in configs:
                from_section(configs[section], data, where=f"{where}: arm {run['arm']}: {section}")


def run_repeats(
    runs: Iterable[Mapping[str, Any]],
    run: Callable[[list[str]], None],
    read_metrics: Callable[[], Mapping[str, Any]],
    variant: str | None = "sequence",
    temp: bool = False,
    on_done: Callable[[list[dict[str, Any]]], None] | None = None,
    stages: Sequence[str] = (),
    finished: Sequence[Mapping[str, Any]] = (),
    force: bool = False,
) -> list[dict[str, Any]]:
    """Run every planned run with ``run(argv)`` and attach the flattened metrics ``read_metrics()`` returns
    after it (``temp``: runs outside the workspace, ``read_metrics`` is not called, ``metrics`` stays empty).

    ``on_done(finished)`` is called after each run with the runs finished so far, so a long ablation can save
    its partial results as it goes. ``finished`` are runs of an earlier, interrupted ablation
    (:func:`resumable_runs`): a planned run among them is taken as it is, not run again; the result keeps
    the planned order either way. ``force`` runs each experiment with ``-f``: a resumed ablation replaces an
    experiment its record does not hold (one DVC finished just before the ablation was stopped).
    """
    earlier = {_run_key(r): r for r in finished}
    done: list[dict[str, Any]] = []
    for planned in runs:
        if _run_key(planned) in earlier:
            done.append(dict(earlier[_run_key(planned)]))
            continue
        run(exp_run_command(planned["params"], planned["experiment"], temp=temp, stages=stages, force=force))
        metrics = {} if temp else flatten_metrics(read_metrics(), variant)
        done.append({**planned, "metrics": metrics})
        if on_done is not None:
            on_done(list(done))
    return done


def _run_key(run: Mapping[str, Any]) -> str:
    """What makes two runs the same experiment: its name and its ``-S`` params (order aside)."""
    return json.dumps([run["experiment"], run["params"]], sort_keys=True)


def study_plan(
    points: Sequence[Mapping[str, Any]],
    references: Sequence[str],
    statistic: str,
    margin: float,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """What an ablation record declares before its first run, and what a resumed run must match: the arms and
    their params, the reference arms, the statistic and equivalence margin, and ``settings`` (the metrics file,
    variant, stages, replicate or seed params: whatever else decides what a run measures)."""
    return {"arms": [{"arm": arm_name(point), "params": arm_params(point)} for point in points],
            "references": list(references), "statistic": statistic, "equivalence_margin": margin, **settings}


def resumable_runs(
    record: Mapping[str, Any],
    plan: Mapping[str, Any],
    planned: Sequence[Mapping[str, Any]],
    source: str,
) -> list[dict[str, Any]]:
    """The runs of an earlier record of the same plan that need not run again (those with metrics).

    ``record`` is what ``mmaffect ablate --json`` wrote (``source`` names it in errors); a record of another
    plan (other arms, params, statistic, margin, references or settings), or holding a run this plan does
    not have, is a ``ValueError``: its runs measure something else. More replicates than the record's are
    allowed (the study is extended).
    """
    declared = record.get("plan")
    if not isinstance(declared, Mapping):
        raise ValueError(f"{source}: not a resumable ablation record (it declares no plan); "
                         "move it away or write the record elsewhere")
    if dict(declared) != dict(json.loads(json.dumps(plan))):
        differ = sorted(key for key in set(declared) | set(plan) if declared.get(key) != plan.get(key))
        raise ValueError(f"{source}: made by another plan (its {', '.join(differ)} differ from this run's); "
                         "resume it with the options it was made with, or write the record elsewhere")
    keys = {_run_key(run) for run in planned}
    runs = list(record.get("runs") or [])
    if stray := [r.get("experiment") for r in runs if _run_key(r) not in keys]:
        raise ValueError(f"{source}: holds run {stray[0]!r}, which this plan does not make; "
                         "resume it with the options it was made with, or write the record elsewhere")
    return [dict(r) for r in runs if r.get("metrics")]


def experiment_rows(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One table row per run: its experiment name, params and scores (for ``format_markdown``/``format_csv``)."""
    return [{"experiment": r["experiment"], **r["params"], **r["metrics"]} for r in runs]


def attach_exp_show_metrics(
    runs: Iterable[Mapping[str, Any]],
    exp_show: Sequence[Mapping[str, Any]],
    metrics_file: str,
    variant: str | None = "sequence",
) -> list[dict[str, Any]]:
    """The planned runs with the metrics of the experiments of the same name in ``dvc exp show --json``."""
    by_name = {row["experiment"]: row for row in rows_from_exp_show(exp_show, [], metrics_file, variant)}
    missing = [r["experiment"] for r in runs if r["experiment"] not in by_name]
    if missing:
        raise ValueError(f"dvc exp show has no metrics ({metrics_file}) for experiment(s): {', '.join(missing)}")
    return [{**r, "metrics": {k: v for k, v in by_name[r["experiment"]].items() if k != "experiment"}} for r in runs]


def _mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the deviation of a single value is ``None``."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _stats(values_by_metric: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    n = {len(values) for values in values_by_metric.values()}
    stats: dict[str, Any] = {"n": max(n) if n else 0, "mean": {}, "sd": {}}
    for metric, values in values_by_metric.items():
        if values:
            stats["mean"][metric], stats["sd"][metric] = _mean_sd(values)
    return stats


def summary_metrics(statistic: str | None = None, metrics: Sequence[str] = SUMMARY_METRICS) -> list[str]:
    """The summary's metrics: the declared ``statistic`` first, then the others of ``metrics``."""
    return [statistic, *[m for m in metrics if m != statistic]] if statistic else list(metrics)


def summarize_runs(
    runs: Sequence[Mapping[str, Any]],
    references: Sequence[str] = (),
    metrics: Sequence[str] = SUMMARY_METRICS,
    statistic: str | None = None,
    margin: float = DEFAULT_MARGIN,
) -> dict[str, Any]:
    """Per arm: mean, sample standard deviation and number of runs of each metric; per (arm, reference) pair:
    the paired differences ``arm - reference``, runs paired by their (replicate, draw, seed), with their 95 %
    t interval, equivalence test at ``±margin`` and verdict (:func:`pipeline.paired_stats.paired_stats`).

    ``runs`` are records with ``arm``, ``replicate``/``draw``/``seed``, ``params`` and flat ``metrics``
    (``run_repeats``). A pair exists only where both arms have a run of that replicate. ``statistic``, the
    one the study declared, comes first in ``metrics``; a metric no run has (``va.score`` of a study on
    data without VA labels) is left out. Returns ``{"metrics", "statistic",
    "equivalence_margin", "arms": [{"arm", "params", "n", "mean", "sd"}], "differences": [{"arm",
    "reference", "n", "mean", "sd", "ci95", "ci90", "tost_p", "verdict"}]}``, each statistic a mapping of
    metric to value; ``sd`` (and the intervals, test and verdict) is ``None`` for a single run.

    Example:
        >>> runs = [{"arm": a, "draw": 0, "seed": s, "params": {}, "metrics": {"au.score": v}}
        ...         for a, s, v in [("v", 0, 0.5), ("v", 1, 0.75), ("b", 0, 0.75), ("b", 1, 1.0)]]
        >>> summary = summarize_runs(runs, references=["v"], metrics=["au.score"])
        >>> summary["arms"][0]["mean"], summary["differences"][0]["mean"], summary["differences"][0]["sd"]
        ({'au.score': 0.625}, {'au.score': 0.25}, {'au.score': 0.0})
        >>> summary["differences"][0]["ci95"], summary["differences"][0]["verdict"]
        ({'au.score': [0.25, 0.25]}, {'au.score': 'difference'})
    """
    metrics = [m for m in summary_metrics(statistic, metrics)
               if m == statistic or any(m in (r.get("metrics") or {}) for r in runs)]
    arms: list[str] = []
    for r in runs:
        arms += [r["arm"]] if r["arm"] not in arms else []
    unknown = [ref for ref in references if ref not in arms]
    if unknown:
        raise ValueError(f"reference arm(s) {unknown} are not arms of this ablation; the arms are {arms}")
    by_arm: dict[str, dict[tuple[Any, Any, Any], Mapping[str, Any]]] = {arm: {} for arm in arms}
    for r in runs:
        key = (r.get("replicate"), r.get("draw"), r.get("seed"))
        if key in by_arm[r["arm"]]:
            what = f"replicate {key[0]}" if key[0] is not None else f"draw {key[1]} and seed {key[2]}"
            raise ValueError(f"arm {r['arm']!r} has two runs with {what}")
        by_arm[r["arm"]][key] = r
    summary_arms = []
    for arm in arms:
        arm_runs = list(by_arm[arm].values())
        values = {m: [float(r["metrics"][m]) for r in arm_runs if m in r["metrics"]] for m in metrics}
        summary_arms.append({"arm": arm, "params": dict(arm_runs[0].get("params") or {}), **_stats(values)})
    differences = []
    for reference in references:
        for arm in arms:
            if arm == reference:
                continue
            pairs = [(by_arm[arm][key], ref_run) for key, ref_run in by_arm[reference].items() if key in by_arm[arm]]
            values = {m: [float(a["metrics"][m]) - float(b["metrics"][m]) for a, b in pairs
                          if m in a["metrics"] and m in b["metrics"]] for m in metrics}
            differences.append({"arm": arm, "reference": reference, **_paired(values, margin)})
    return {"metrics": list(metrics), "statistic": statistic, "equivalence_margin": margin, "arms": summary_arms,
            "differences": differences}


def _paired(values_by_metric: Mapping[str, Sequence[float]], margin: float) -> dict[str, Any]:
    """:func:`pipeline.paired_stats.paired_stats` of each metric's differences, as metric -> value per statistic."""
    n = {len(values) for values in values_by_metric.values()}
    result: dict[str, Any] = {"n": max(n) if n else 0, "mean": {}, "sd": {}, "ci95": {}, "ci90": {}, "tost_p": {},
                              "verdict": {}}
    for metric, values in values_by_metric.items():
        if values:
            for key, value in paired_stats(values, margin).items():
                if key != "n":
                    result[key][metric] = value
    return result


def _mean_sd_cell(mean: float | None, sd: float | None, signed: bool = False) -> str:
    if mean is None:
        return ""
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text if sd is None else f"{text} ± {sd:.3f}"


def _difference_cell(diff: Mapping[str, Any], metric: str) -> str:
    """``+0.012 ± 0.020, 95 % CI −0.005 to +0.029: inconclusive`` (the interval and verdict where the record has
    them: records from before they were computed hold the mean ± sd alone)."""
    text = _mean_sd_cell(diff["mean"].get(metric), diff["sd"].get(metric), signed=True)
    interval = (diff.get("ci95") or {}).get(metric)
    verdict = (diff.get("verdict") or {}).get(metric)
    if text and interval:
        text += f", 95 % CI {interval[0]:+.3f} to {interval[1]:+.3f}"
    return f"{text}: {verdict}" if text and verdict else text


def render_ablation_table(summary: Mapping[str, Any]) -> str:
    """A Markdown table of a summary (``summarize_runs``, or the JSON ``mmaffect ablate --json`` wrote): one row
    per arm (mean ± sd over its runs), then one per paired difference ``arm − reference`` (mean ± sd, 95 % CI and
    verdict), with the runs counted. The declared statistic, when there is one, is the first metric column.
    """
    metrics = list(summary["metrics"])
    statistic = summary.get("statistic")
    titles = [_METRIC_TITLES.get(m, m) + (" (declared)" if m == statistic else "") for m in metrics]
    header = ["arm", "runs", *titles]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for arm in summary["arms"]:
        cells = [_mean_sd_cell(arm["mean"].get(m), arm["sd"].get(m)) for m in metrics]
        lines.append("| " + " | ".join([arm["arm"], str(arm["n"]), *cells]) + " |")
    for diff in summary["differences"]:
        cells = [_difference_cell(diff, m) for m in metrics]
        lines.append("| " + " | ".join([f"{diff['arm']} − {diff['reference']} (paired)", f"{diff['n']} pairs",
                                         *cells]) + " |")
    return "\n".join(lines) + "\n"
