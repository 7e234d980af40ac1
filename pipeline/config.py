"""Stage configuration: plain frozen dataclasses built from one ``params.yaml`` section.

Each stage owns one dataclass (defined next to the code that uses it). ``from_dict`` builds it from
the stage's section, rejecting unknown and missing keys so a typo in ``params.yaml`` fails loudly
instead of silently falling back to a default.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Demo:
    ...     lr: float
    ...     layers: int = 1
    >>> from_dict(Demo, {"lr": 0.01}, where="params.yaml:demo")
    Demo(lr=0.01, layers=1)
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

T = TypeVar("T")

# Scientific notation that YAML 1.2 reads as a number but PyYAML's YAML 1.1 reads as a string: it
# wants a dot and a signed exponent, so `1e-3` and `1.0e3` arrive as text. A quoted "2" stays text.
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

# Words YAML 1.1 (PyYAML) reads as booleans when unquoted. `dvc exp run -S` rewrites params.yaml with
# a YAML 1.2 writer, which drops the quotes around them (`amp: "off"` becomes `amp: off`, read back as
# false); a choice among strings that offers one of these words takes the boolean as that word.
_YAML11_WORDS = {False: ("off", "no", "n", "false"), True: ("on", "yes", "y", "true")}


class ConfigError(ValueError):
    """A params section does not match the stage's configuration dataclass.

    A config's own checks (``__post_init__``) raise it with the offending field as ``key``, e.g.
    ``ConfigError("must be >= 1, got 0", key="chunk_frames")``; :func:`from_dict` then reports it
    as ``<file>:<section>.<key>: <what is wrong>``, the same form as a wrong type or unknown key.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.key}: {message}" if self.key else message


def check_fields(checks: Iterable[tuple[bool, str, str]]) -> None:
    """Raise :class:`ConfigError` for the first ``(ok, key, message)`` whose ``ok`` is false.

    The one form of a config's own checks (``__post_init__``): each names the field it checks, so
    :func:`from_dict` reports ``<file>:<section>.<key>: <message>``.

    Example:
        >>> check_fields([(1 >= 1, "epochs", "must be >= 1, got 1"), (0 > 0, "lr", "must be > 0, got 0")])
        Traceback (most recent call last):
        ...
        pipeline.config.ConfigError: lr: must be > 0, got 0
    """
    for ok, key, message in checks:
        if not ok:
            raise ConfigError(message, key=key)


def load_section(path: str | Path, section: str) -> dict[str, Any]:
    """Read ``section`` (dotted for nesting, e.g. ``embed.visual``) from a YAML params file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    data = read_yaml(path)
    node: Any = data
    for part in section.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{path}: section {section!r} is missing")
        node = node[part]
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: section {section!r} must be a mapping, got {type(node).__name__}")
    return node


def from_section(cls: type[T], data: dict[str, Any], where: str = "params") -> T:
    """Build ``cls`` from a params section: with ``cls.from_params(data, where)`` when the class
    defines it (a section that names a preset and overrides its fields, as ``synth`` does), else
    with :func:`from_dict`."""
    build = getattr(cls, "from_params", None)
    return build(data, where=where) if callable(build) else from_dict(cls, data, where=where)


def read_yaml(path: Path) -> Any:
    """Parse the YAML file ``path``; a syntax error is a :class:`ConfigError` naming file:line:column."""
    try:
        with path.open() as fh:
            return yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None


def from_dict(cls: type[T], data: dict[str, Any], where: str = "params") -> T:
    """Build dataclass ``cls`` from ``data``; nested dataclasses and tuples are converted."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in data:
            has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
            if not has_default:
                raise ConfigError(f"{where}: missing key {name!r}")
            continue
        kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if exc.key is None:  # already placed (a nested section's error)
            raise
        raise ConfigError(f"{where}.{exc}") from None
    except ValueError as exc:
        # a check that names no key: still a config error, placed at the section
        raise ConfigError(f"{where}: {exc}") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """Return a JSON/YAML-friendly dict of a config dataclass (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: value {value!r} does not match {hint}")
    if origin is typing.Literal:
        if isinstance(value, bool):
            value = next((word for word in args if isinstance(word, str) and word.lower() in _YAML11_WORDS[value]),
                         value)
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()} if args else dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value
