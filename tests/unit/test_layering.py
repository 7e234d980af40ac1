"""The library's packages stack in one declared order: each imports only packages of the layers below.

Found statically from every import statement (function-level ones included), so an arrow running back
up (a model importing a trainer, the audio frontend importing a model) fails here with the file and
line that draws it. A new package or top-level module must be given its layer. (The tooling beside
the library, ``tooling/``, sits above all of it.)
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "pipeline"

# Lowest first. A unit is a subpackage of `pipeline` or one of its top-level modules; units of one layer
# are peers and do not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    # foundations: no project imports
    ("labels", "config", "fsio", "device", "error_words", "jpeg", "verification", "paired_stats"),
    # small helpers on the foundations
    ("metrics", "au_thresholds", "storage", "video_batch", "ablation"),
    # datasets, media readers, the frame store, synthetic data and test media
    ("data",),
    # frontends: log-mel audio features, face detection and alignment
    ("audio", "faces"),
    # networks (they take the frontends' configs, never the other way round)
    ("models",),
    # trained models' files: checkpoints, ONNX exports and their float16/int8 copies
    ("model_files",),
    # running trained models
    ("inference",),
    # the stages' library entry points
    ("train", "embed", "evaluate"),
    ("predict",),
)
LAYER_OF = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    """``pipeline.models.tdnn`` -> ``models``; ``pipeline.fsio`` -> ``fsio``."""
    return module.split(".")[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``pipeline`` import in ``path``, names imported from a package included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "pipeline":  # `from pipeline import fsio`
                found += [(node.lineno, f"pipeline.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] in ("pipeline", "stages")]


def _library_files() -> list[Path]:
    return sorted(p for p in LIBRARY.rglob("*.py") if p != LIBRARY / "__init__.py")


def test_every_library_unit_has_a_layer() -> None:
    units = {_unit(".".join(p.relative_to(ROOT).with_suffix("").parts)) for p in _library_files()}
    assert not units - set(LAYER_OF), f"give these a layer in LAYERS: {sorted(units - set(LAYER_OF))}"
    assert not set(LAYER_OF) - units, f"LAYERS names units that are gone: {sorted(set(LAYER_OF) - units)}"
    assert len(LAYER_OF) == sum(len(units) for units in LAYERS), "a unit is declared in two layers"


def test_imports_point_down_the_layers() -> None:
    wrong: list[str] = []
    for path in _library_files():
        unit = _unit(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for line, name in _imports(path):
            where = f"{path.relative_to(ROOT)}:{line}: imports {name}"
            if name.startswith("stages"):
                wrong.append(f"{where} (the library never imports the stages)")
                continue
            target = _unit(name) if name != "pipeline" else unit
            if target != unit and LAYER_OF.get(target, -1) >= LAYER_OF.get(unit, -1):
                wrong.append(f"{where} ({unit}, layer {LAYER_OF.get(unit)}, may import only layers below; "
                             f"{target} is layer {LAYER_OF.get(target)})")
    assert not wrong, "\n".join(wrong)


def test_the_scan_sees_an_arrow_back_up(tmp_path: Path) -> None:
    module = tmp_path / "fusion.py"
    module.write_text("def f():\n    from pipeline.train.audio import train_audio\n")
    line, name = _imports(module)[0]
    assert (line, name) == (2, "pipeline.train.audio")
    assert LAYER_OF[_unit(name)] > LAYER_OF["models"]
