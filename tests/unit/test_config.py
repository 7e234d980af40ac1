"""params.yaml sections become frozen dataclasses; bad keys and types fail with the key's name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from pipeline.config import ConfigError, check_fields, from_dict, load_section, to_dict


@dataclass(frozen=True)
class Inner:
    gamma: float = 2.0
    alpha: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Outer:
    lr: float
    mode: str
    layers: int = 1
    inner: Inner = field(default_factory=Inner)


def test_builds_nested_dataclass_with_defaults() -> None:
    cfg = from_dict(Outer, {"lr": 1, "mode": "epoch", "inner": {"alpha": [0.5, 1]}})
    assert cfg == Outer(lr=1.0, mode="epoch", layers=1, inner=Inner(gamma=2.0, alpha=(0.5, 1.0)))
    assert isinstance(cfg.lr, float)


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\]"):
        from_dict(Outer, {"lrr": 0.1, "lr": 0.1, "mode": "x"}, where="params.yaml:demo")


def test_missing_key_is_named() -> None:
    with pytest.raises(ConfigError, match="params.yaml:demo: missing key 'mode'"):
        from_dict(Outer, {"lr": 0.1}, where="params.yaml:demo")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"lr": "fast", "mode": "x"}, r"demo\.lr: expected a number"),
        ({"lr": 0.1, "mode": "x", "layers": 1.5}, r"demo\.layers: expected an integer"),
        ({"lr": 0.1, "mode": "x", "layers": True}, r"demo\.layers: expected an integer"),
        ({"lr": 0.1, "mode": "x", "inner": {"gamma": "2"}}, r"demo\.inner\.gamma: expected a number"),
    ],
)
def test_wrong_types_are_rejected(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data, where="demo")


def test_load_section_reads_dotted_sections(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("stage:\n  sub:\n    lr: 0.5\n    mode: batch\n")
    assert load_section(params, "stage.sub") == {"lr": 0.5, "mode": "batch"}
    with pytest.raises(ConfigError, match="section 'other' is missing"):
        load_section(params, "other")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_section(tmp_path / "nope.yaml", "stage")


def test_to_dict_round_trips() -> None:
    cfg = Outer(lr=0.1, mode="epoch", inner=Inner(alpha=(1.0, 2.0)))
    assert from_dict(Outer, to_dict(cfg)) == cfg


@dataclass(frozen=True)
class Checked:
    epochs: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


def test_value_checks_of_the_dataclass_become_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"params.yaml:demo: epochs must be >= 1, got 0"):
        from_dict(Checked, {"epochs": 0}, where="params.yaml:demo")


@dataclass(frozen=True)
class Keyed:
    window: int = 2
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ConfigError(f"must be >= 2, got {self.window}", key="window")
        if self.inner.gamma < 0:
            raise ConfigError(f"must be >= 0, got {self.inner.gamma}", key="inner.gamma")


@pytest.mark.parametrize(("data", "message"), [
    ({"window": 1}, "params.yaml:demo.window: must be >= 2, got 1"),
    ({"inner": {"gamma": -1}}, "params.yaml:demo.inner.gamma: must be >= 0, got -1.0"),
])
def test_a_config_check_names_section_and_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(Keyed, data, where="params.yaml:demo")
    assert str(info.value) == message


def test_a_config_built_directly_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        Keyed(window=0)
    assert str(info.value) == "window: must be >= 2, got 0"


def test_scientific_notation_that_pyyaml_reads_as_text_is_a_number(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  lr: 1e-3\n  mode: x\n  inner:\n    alpha: [2E+1, -.5e2]\n")
    section = load_section(params, "train")
    assert section["lr"] == "1e-3"  # what PyYAML hands over
    cfg = from_dict(Outer, section)
    assert cfg.lr == 0.001 and cfg.inner.alpha == (20.0, -50.0)
    with pytest.raises(ConfigError, match=r"demo\.layers: expected an integer"):
        from_dict(Outer, {**section, "layers": "1e3"}, where="demo")  # an integer stays an integer
    with pytest.raises(ConfigError, match=r"demo\.lr: expected a number, got 'nan'"):
        from_dict(Outer, {**section, "lr": "nan"}, where="demo")


def test_yaml_syntax_error_is_one_line_with_file_line_column(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  lr: 0.1\n   mode: x\n")
    with pytest.raises(ConfigError) as info:
        load_section(params, "train")
    message = str(info.value)
    assert message.startswith(f"{params}:3:")
    assert "invalid YAML" in message and "\n" not in message


@dataclass(frozen=True)
class Choice:
    amp: Literal["off", "bf16", "fp16"]
    answer: Literal["yes", "no", "maybe"] = "maybe"


def test_a_choice_word_that_yaml_reads_as_a_boolean_is_taken_as_that_word(tmp_path: Path) -> None:
    """`dvc exp run -S` writes params.yaml back without the quotes of `amp: "off"`: YAML then reads false."""
    path = tmp_path / "params.yaml"
    path.write_text("demo:\n  amp: off\n  answer: yes\n")
    assert from_dict(Choice, load_section(path, "demo")) == Choice(amp="off", answer="yes")
    assert from_dict(Choice, {"amp": False, "answer": False}) == Choice(amp="off", answer="no")
    # a boolean with no word of its value among the choices is still an error, naming the value
    with pytest.raises(ConfigError, match=r"params.yaml:demo.amp: True is not one of \['off', 'bf16', 'fp16'\]"):
        from_dict(Choice, {"amp": True}, where="params.yaml:demo")


def test_check_fields_raises_the_first_failed_check_with_its_key() -> None:
    check_fields([(True, "epochs", "unused")])
    with pytest.raises(ConfigError) as info:
        check_fields([(True, "epochs", "unused"), (False, "lr", "must be > 0, got 0"), (False, "momentum", "later")])
    assert info.value.key == "lr" and str(info.value) == "lr: must be > 0, got 0"


def _library_configs() -> list[tuple[type, dict, str]]:
    from pipeline.data.synth.identities import FaceIdentityConfig
    from pipeline.embed.runner import ClusterOptions, InferenceOptions
    from tooling.full_size import Workload
    from pipeline.model_files.int8 import CalibrationConfig, QuantSettings
    from pipeline.train.ddp import DistContext
    return [
        (FaceIdentityConfig, {"identities": 1}, "identities: must be >= 2, got 1"),
        (FaceIdentityConfig, {"blur_rate": 2.0}, "blur_rate: must be in [0, 1], got 2.0"),
        (ClusterOptions, {"threads_per_worker": 0}, "threads_per_worker: must be >= 1, got 0"),
        (InferenceOptions, {"batch_size": 0}, "batch_size: must be >= 1, got 0"),
        (InferenceOptions, {"device": "tpu"}, "device: must be one of"),
        (Workload, {"videos": 1, "frames": 10, "fps": 0.0}, "fps: must be > 0, got 0.0"),
        (CalibrationConfig, {"batch_size": 0}, "batch_size: must be >= 1, got 0"),
        (QuantSettings, {"weights": "int4"}, "weights: must be uint8 or int8, got 'int4'"),
        (DistContext, {"rank": 2, "world_size": 2}, "rank: must be in [0, world_size), got 2"),
    ]


@pytest.mark.parametrize(("cls", "kwargs", "message"), _library_configs(),
                         ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_library_config_checks_are_config_errors_naming_the_field(cls: type, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert info.value.key == message.split(":")[0] and str(info.value).startswith(message)
