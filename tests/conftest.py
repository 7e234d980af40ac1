"""Shared fixtures: a tiny synthetic Aff-Wild2 dataset, prepared and packed once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two CI cores: keep each test process to one intra-op thread so parallel work does not thrash.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``cuda`` when torch sees no CUDA device (they run in .ci/gpu_check.sh)."""
    marked = [item for item in items if "cuda" in item.keywords]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (.ci/gpu_check.sh runs it on a GPU)")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset in the Aff-Wild2 layout (seed 0)."""
    from pipeline.data.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("synthetic") / "affwild2"
    generate_dataset(root, SynthConfig.from_preset("tiny", seed=0))
    return root


@pytest.fixture(scope="session")
def tiny_prepared(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``prepare`` output directory (manifest.json, labels.h5, report.json) of ``tiny_root``."""
    from pipeline.data.prepare import PrepareConfig, prepare_dataset

    out = tmp_path_factory.mktemp("prepared") / "prepared"
    bp4d = tiny_root / "BP4D"
    prepare_dataset(tiny_root, out, PrepareConfig(), bp4d_root=bp4d if bp4d.is_dir() else None)
    return out


@pytest.fixture(scope="session")
def tiny_frames(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packed HDF5 frame store of the tiny dataset."""
    from pipeline.data.pack_frames import PackConfig, pack_frames
    from pipeline.data.manifest import read_manifest

    out = tmp_path_factory.mktemp("frames") / "frames.h5"
    pack_frames(read_manifest(tiny_prepared / "manifest.json"), out, PackConfig())
    return out
