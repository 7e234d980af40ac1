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
    'dvc exp run -n seq-visual-w10 -S train_sequence.modalities=visual -S train_sequence.window=10'
"""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from pipeline.config import read_yaml

SECTION = "train_sequence"
EXAMPLE_GRID: dict[str, list[Any]] = {"modalities": ["visual", "audio", "both"], "window": [10, 30], "layers": [1, 2]}
METRIC_COLUMNS: tuple[str, ...] = ("au.f1", "au.acc", "au.score", "expr.f1", "expr.acc", "expr.score", "mean_score")
# short names used in experiment names
_ABBREVIATIONS = {"window": "w", "layers": "l", "stride": "s", "heads": "h", "d_model": "d", "dropout": "p"}


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


def experiment_name(point: Mapping[str, Any]) -> str:
    """A short, git-ref-safe experiment name, e.g. ``seq-both-w30-l1``."""
    parts = ["seq"]
    for key, value in point.items():
        name = key.split(".")[-1]
        text = str(value).lower().replace(".", "p").replace("-", "m")
        parts.append(text if name == "modalities" else f"{_ABBREVIATIONS.get(name, name)}{text}")
    return "-".join("".join(c if c.isalnum() else "_" for c in part) for part in parts)


def exp_run_command(point: Mapping[str, Any], name: str | None = None, temp: bool = False) -> list[str]:
    """The ``dvc exp run`` argv of one grid point."""
    argv = ["dvc", "exp", "run", "-n", name or experiment_name(point)]
    if temp:
        argv.append("--temp")
    for key, value in point.items():
        argv += ["-S", f"{key}={_yaml_scalar(value)}"]
    return argv


def _yaml_scalar(value: Any) -> str:
    """``value`` as DVC's ``-S`` parses it (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def flatten_metrics(metrics: Mapping[str, Any], variant: str | None) -> dict[str, float]:
    """``{"au.f1": ..., ..., "mean_score": ...}`` from an evaluate JSON (``variant`` picks e.g. ``sequence``)
    or a train-sequence JSON (``{"au": {...}, "expr": {...}}``)."""
    source = metrics.get(variant, metrics) if variant else metrics
    if not isinstance(source, Mapping):
        raise ValueError(f"metrics for variant {variant!r} are not a mapping: {source!r}")
    row: dict[str, float] = {}
    for task in ("au", "expr"):
        for name, value in dict(source.get(task) or {}).items():
            row[f"{task}.{name}"] = float(value)
    scores = [row[f"{task}.score"] for task in ("au", "expr") if f"{task}.score" in row]
    if scores:
        row["mean_score"] = sum(scores) / len(scores)
    return row


def run_grid(
    points: Iterable[Mapping[str, Any]],
    run: Callable[[list[str]], None],
    read_metrics: Callable[[], Mapping[str, Any]],
    variant: str | None = "sequence",
) -> list[dict[str, Any]]:
    """Run every point with ``run(argv)`` (in the workspace); tabulate ``read_metrics()`` read after each run."""
    rows = []
    for point in points:
        name = experiment_name(point)
        run(exp_run_command(point, name))
        rows.append({"experiment": name, **point, **flatten_metrics(read_metrics(), variant)})
    return rows


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
    """Experiment, the grid params, then the metric columns present, in a fixed order."""
    seen: list[str] = []
    for row in rows:
        seen += [k for k in row if k not in seen]
    params = [k for k in seen if k != "experiment" and k not in METRIC_COLUMNS]
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
