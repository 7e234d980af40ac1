"""``mmaffect embed-visual`` on a five-subject dataset with a tiny stand-in ``visual.onnx``.

Runs use dask workers as threads of the test process (``--no-processes``): worker processes cost
seconds to start and import torch; the kill-and-resume test and the full-disk test run the stage
with worker processes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from _embed_inputs import TinyVisual, build_prepared, tiny_visual_onnx
from pipeline.storage.frame_store import FrameStore
from pipeline.data.labels_store import read_all_labels
from pipeline.data.manifest import read_manifest
from pipeline.model_files.onnx_export import export_onnx, make_session
from pipeline.models.preprocess import to_model_input
from pipeline.storage.embedding_store import EmbeddingStore
from stages.embed_visual import command

SUBJECTS = ["vidA", "vidB", "vidC_left", "vidC_right", "vidD"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("embed_visual")
    prepared, frames = build_prepared(base)
    params = base / "params.yaml"
    params.write_text("embed_visual:\n  chunk_frames: 4\n  sources: [affwild2]\n")
    return {"prepared": prepared, "frames": frames, "params": params,
            "onnx": tiny_visual_onnx(base / "visual.onnx", seed=0),
            "onnx_b": tiny_visual_onnx(base / "visual_b.onnx", seed=1)}


def _invoke(inputs: dict[str, Path], out: Path, work: Path, onnx: Path | None = None,
            prepared: Path | None = None) -> object:
    args = [str(prepared or inputs["prepared"]), str(inputs["frames"]), str(onnx or inputs["onnx"]), str(out),
            "--params", str(inputs["params"]), "--device", "cpu", "--no-processes", "--workers", "1",
            "--threads", "2", "--batch-size", "3", "--work-dir", str(work), "--no-progress"]
    return CliRunner().invoke(command, args)


def test_writes_every_subject_with_model_outputs_and_labels(inputs: dict[str, Path], tmp_path: Path) -> None:
    out, work = tmp_path / "out" / "visual.zarr", tmp_path / "work"
    result = _invoke(inputs, out, work)
    assert result.exit_code == 0, result.output
    assert '"computed": 5' in result.output
    assert not (work / "visual.zarr").exists()  # moved onto the output

    store = EmbeddingStore.open_read(out)
    assert store.keys() == SUBJECTS
    assert store.chunk_frames == 4 and store.attrs["dim"] == 512
    assert store.attrs["params"] == {"chunk_frames": 4, "sources": ["affwild2"]}
    assert store.attrs["model"]["model"] == "visual"
    manifest = read_manifest(inputs["prepared"] / "manifest.json")
    labels = read_all_labels(inputs["prepared"] / "labels.h5")
    frames = FrameStore(inputs["frames"])
    session = make_session(inputs["onnx"], "cpu", threads=1)
    for name in SUBJECTS:
        entry = store.read(name)
        record = manifest.by_name(name)
        n = record.n_frames
        assert entry["embedding"].shape == (n, 512) and entry["embedding"].dtype == np.float16
        assert entry["au_logits"].shape == (n, 12) and entry["expr_logits"].shape == (n, 7)
        present = frames.face_present(name)
        np.testing.assert_array_equal(entry["face_present"], present)
        np.testing.assert_array_equal(entry["au"], labels[name].au)
        np.testing.assert_array_equal(entry["expr"], labels[name].expr)
        assert entry["va"].shape == entry["va_pred"].shape == (n, 2)
        assert entry["va"].dtype == entry["va_pred"].dtype == np.float32
        np.testing.assert_array_equal(entry["va"], labels[name].va)   # NaN where unlabelled
        assert not entry["embedding"][~present].any() and not entry["au_logits"][~present].any()
        assert not entry["va_pred"][~present].any()
        embedding, au_logits, _, va_pred = session.run(
            None, {"image": to_model_input(frames.read(name, np.flatnonzero(present))).numpy()})
        np.testing.assert_array_equal(entry["embedding"][present], embedding.astype(np.float16))
        np.testing.assert_allclose(entry["au_logits"][present], au_logits, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(entry["va_pred"][present], va_pred, rtol=1e-6, atol=1e-6)
        assert store.entry_attrs(name) == {
            "fps": record.fps, "n_frames": n, "video": record.video, "source": "affwild2",
            "au_split": record.au_split, "expr_split": record.expr_split, "va_split": record.va_split,
        }
    assert not store.read("vidA")["face_present"][2]  # its crop 00003.jpg is missing


def test_failed_subject_is_named_others_kept_and_rerun_completes(inputs: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "prepared"
    shutil.copytree(inputs["prepared"], broken)
    with h5py.File(broken / "labels.h5", "a") as fh:
        del fh["vidC_right"]
    out, work = tmp_path / "visual.zarr", tmp_path / "work"

    result = _invoke(inputs, out, work, prepared=broken)
    assert result.exit_code == 1
    assert "1 failed" in result.output and "vidC_right" in result.output and "no labels" in result.output
    assert not out.exists()
    partial = EmbeddingStore.open_read(work / "visual.zarr")
    assert partial.keys() == [s for s in SUBJECTS if s != "vidC_right"]
    kept = partial.read("vidA")["embedding"]

    shutil.copyfile(inputs["prepared"] / "labels.h5", broken / "labels.h5")
    result = _invoke(inputs, out, work, prepared=broken)
    assert result.exit_code == 0, result.output
    assert '"computed": 1' in result.output and '"skipped": 4' in result.output
    np.testing.assert_array_equal(EmbeddingStore.open_read(out).read("vidA")["embedding"], kept)


def test_another_model_rebuilds_the_work_store(inputs: dict[str, Path], tmp_path: Path) -> None:
    work = tmp_path / "work"
    first = _invoke(inputs, tmp_path / "a.zarr", work)
    assert first.exit_code == 0, first.output
    # leave a complete work store of model A behind, as an interrupted run would
    shutil.copytree(tmp_path / "a.zarr", work / "b.zarr")
    result = _invoke(inputs, tmp_path / "b.zarr", work, onnx=inputs["onnx_b"])
    assert result.exit_code == 0, result.output
    assert '"computed": 5' in result.output and '"skipped": 0' in result.output
    a, b = EmbeddingStore.open_read(tmp_path / "a.zarr"), EmbeddingStore.open_read(tmp_path / "b.zarr")
    assert a.fingerprint != b.fingerprint
    assert not np.array_equal(a.read("vidB")["embedding"], b.read("vidB")["embedding"])


def test_bad_inputs_give_one_line_errors(inputs: dict[str, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _invoke(inputs, tmp_path / "v.zarr", tmp_path / "work", prepared=empty)
    assert result.exit_code == 1 and "manifest not found" in result.output
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_bytes(b"not a model")
    result = _invoke(inputs, tmp_path / "v.zarr", tmp_path / "work", onnx=not_onnx)
    assert result.exit_code == 1 and "not an ONNX model" in result.output
    # the default --work-dir is relative: run where a leftover would show, never in the checkout
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(command, [str(inputs["prepared"]), str(inputs["frames"]), str(inputs["onnx"]),
                                          str(tmp_path / "v.zarr"), "--params", str(inputs["params"]),
                                          "--workers", "64", "--no-processes"])
    assert result.exit_code == 1 and "cores available" in result.output
    assert list(cwd.iterdir()) == []   # options refused before the work directory was taken


class _BeforeVA(torch.nn.Module):
    """A visual.onnx as the pipeline exported it before the model predicted valence-arousal."""

    def __init__(self) -> None:
        super().__init__()
        self.model = TinyVisual()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model(image)[:3]


def test_a_model_without_the_va_output_is_one_line_before_any_subject(inputs: dict[str, Path], tmp_path: Path) -> None:
    old = tmp_path / "old.onnx"
    names = ("image", "embedding", "au_logits", "expr_logits")
    export_onnx(_BeforeVA(), (torch.zeros(2, 3, 112, 112),), old, names[:1], names[1:],
                {name: {0: "batch"} for name in names}, {"model": "visual"})
    result = _invoke(inputs, tmp_path / "v.zarr", tmp_path / "work", onnx=old)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"Error: {old}: the model has no output va_pred (it has au_logits, embedding, "
                                    "expr_logits); export it again from its model.pt")
    assert not (tmp_path / "work" / "v.zarr").exists()   # refused before any subject ran


def test_help_names_inputs_and_outputs() -> None:
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0
    for word in ("FRAMES_H5", "VISUAL_ONNX", "OUT_ZARR", "--scheduler", "--work-dir", "embed_visual"):
        assert word in result.output


def test_scheduler_help_says_what_a_scheduler_can_do() -> None:
    result = CliRunner().invoke(command, ["--help"])
    text = " ".join(result.output.split())
    assert "can run code in this process" in text and "use TLS or a private network" in text
    assert "127.0.0.1 only" in text


def test_a_full_disk_is_the_one_line_with_worker_processes(inputs: dict[str, Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    from _fs import small_filesystem

    root = Path(__file__).resolve().parents[2]
    with small_filesystem(tmp_path / "small", "60k") as mounted:
        if not mounted:
            pytest.skip("needs a tmpfs to fill (root and mount)")
        work = tmp_path / "small" / "work"
        # worker processes, as dvc repro runs the stage: their own logs reach stderr too
        result = subprocess.run(
            [sys.executable, "-m", "stages.cli", "embed-visual", str(inputs["prepared"]), str(inputs["frames"]),
             str(inputs["onnx"]), str(tmp_path / "small" / "out" / "v.zarr"), "--params", str(inputs["params"]),
             "--device", "cpu", "--workers", "2", "--threads", "1", "--work-dir", str(work), "--no-progress"],
            cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    said = [line for line in result.stderr.splitlines() if " INFO " not in line and line.strip()]
    assert said == [f"Error: {work / 'v.zarr'}: no space left on device; free some space (or point the output "
                    "elsewhere) and rerun"], result.stderr
