"""The install floors in setup.cfg exclude releases with known holes, and the installed set meets them.

A floor below a fixing release lets a fresh install pick the vulnerable one; a floor above what
installs here would make the environment this suite runs in an unsupported one.
"""

from __future__ import annotations

import configparser
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]

# package -> the first release that fixed what docs/privacy.md lists under "Dependencies"
SECURITY_FLOORS = {
    "onnx": "1.21",             # external-data paths through symlinks out of the model folder
    "onnxruntime-gpu": "1.27",  # external-data paths out of the model folder (sparse tensors last)
    "av": "18.1",               # the FFmpeg bundled in the wheels
    "pillow": "12.2",
}


def _requirements() -> dict[str, Requirement]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in config["options"]["install_requires"].splitlines()]
    reqs = [Requirement(line) for line in lines if line and not line.startswith("#")]
    return {req.name.lower(): req for req in reqs}


@pytest.mark.parametrize("name", sorted(SECURITY_FLOORS))
def test_floor_excludes_the_releases_before_the_fix(name: str) -> None:
    spec = _requirements()[name].specifier
    fixed = Version(SECURITY_FLOORS[name])
    last_unfixed = Version(f"{fixed.major}.{fixed.minor - 1}.99") if fixed.minor else Version(f"{fixed.major - 1}.99")
    assert not spec.contains(last_unfixed), f"{name}{spec} admits {last_unfixed}, before the fix in {fixed}"
    assert spec.contains(fixed), f"{name}{spec} excludes the fixing release {fixed}"


@pytest.mark.parametrize("name", sorted(SECURITY_FLOORS))
def test_installed_release_meets_the_floor(name: str) -> None:
    installed = metadata.version(name)
    assert _requirements()[name].specifier.contains(installed), f"{name} {installed} is below setup.cfg's floor"


def test_dvc_does_not_check_for_updates() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert config.getboolean("core", "check_update") is False
