"""Each trained model's files have one home (``pipeline/model_files``), and the precision tags are one list."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.embed.audio import EmbedAudioConfig
from pipeline.embed.visual import EmbedVisualConfig
from pipeline.model_files import audio as audio_files
from pipeline.model_files import visual as visual_files
from pipeline.model_files.float16 import float16_path
from pipeline.model_files.int8 import int8_path
from pipeline.model_files.precision import PRECISION_TAGS, precision_path
from pipeline.predict.video import PRECISIONS as PREDICT_PRECISIONS

ROOT = Path(__file__).resolve().parents[3]
# (module, call) pairs that read or write a model file; only pipeline/model_files may hold them
FILE_CALLS = {("torch", "save"), ("torch", "load"), ("onnx", "save")}
# the TDNN's graph split into two parts, saved to a temporary directory to be loaded at once: not a model file
ALLOWED = {("pipeline/inference/audio.py", "onnx.save")}


def _file_calls(path: Path) -> set[str]:
    """``torch.save``, ``torch.load`` and ``onnx.save`` calls in ``path``."""
    calls = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and (node.func.value.id, node.func.attr) in FILE_CALLS:
            calls.add(f"{node.func.value.id}.{node.func.attr}")
    return calls


def test_only_model_files_save_or_load_a_model_file() -> None:
    found = set()
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith("pipeline/model_files/"):
            continue
        found |= {(relative, call) for call in _file_calls(path)}
    assert found - ALLOWED == set()


def test_the_models_know_nothing_of_their_files() -> None:
    """The architectures hold no checkpoint format: they do not even import the modules that do."""
    for path in sorted((ROOT / "pipeline" / "models").glob("*.py")):
        modules = {node.module for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m for m in modules if m.startswith("pipeline.model_files")}, path.name


def test_the_model_files_import_none_of_their_readers_and_writers() -> None:
    """Trainers, inference, embedding, evaluation and prediction go through pipeline.model_files: no arrow back."""
    readers = ("pipeline.train", "pipeline.inference", "pipeline.embed", "pipeline.evaluate", "pipeline.predict")
    for path in sorted((ROOT / "pipeline" / "model_files").glob("*.py")):
        modules = {node.module for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m for m in modules if m.startswith(readers)}, path.name


def test_float16_is_one_of_the_precision_tags() -> None:
    assert list(PRECISION_TAGS) == ["float32", "float16", "int8"]
    onnx = Path("cache/onnx/visual.onnx")
    assert float16_path(onnx) == precision_path(onnx, "float16") == Path("cache/onnx/visual.fp16.onnx")
    assert int8_path(onnx) == precision_path(onnx, "int8") == Path("cache/onnx/visual.int8.onnx")


def test_each_model_says_which_copies_it_has_and_how_each_is_made(tmp_path: Path) -> None:
    assert visual_files.PRECISIONS == ("float32", "float16", "int8")
    assert audio_files.PRECISIONS == ("float32", "int8")
    with pytest.raises(FileNotFoundError, match=r"float16 model not found: .*visual\.fp16\.onnx \(export-onnx writes it with --fp16"):
        visual_files.onnx_model(tmp_path / "visual.onnx", "float16")
    with pytest.raises(FileNotFoundError, match=r"int8 model not found: .*tdnn\.int8\.onnx \(train-audio writes it"):
        audio_files.onnx_model(tmp_path / "tdnn.onnx", "int8")
    with pytest.raises(ValueError, match=r"precision must be one of \['float32', 'int8'\], got 'float16'"):
        audio_files.onnx_model(tmp_path / "tdnn.onnx", "float16")
    assert visual_files.onnx_model(tmp_path / "visual.onnx", "float32") == tmp_path / "visual.onnx"


def test_the_stages_offer_the_precisions_their_models_have() -> None:
    assert EmbedVisualConfig(precision="float16").precision == "float16"
    with pytest.raises(ConfigError, match=r"must be one of \['float32', 'int8'\], got 'float16'"):
        EmbedAudioConfig(precision="float16")
    # predict runs the visual model and the TDNN at one precision: only those both have
    assert PREDICT_PRECISIONS == ("float32", "int8")
