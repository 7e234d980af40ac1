"""``finetune-visual`` and ``pretrain-face`` under ``torchrun --nproc_per_node 2`` on the CPU (gloo), as a user
launches them.

``--standalone`` puts the rendezvous at ``localhost:0``, but torch's store binds every interface whatever
the endpoint (docs/cluster.md, "Who can reach the cluster"): these tests expose it for their run, as any
torchrun does. The in-process DDP tests (tests/unit/train/test_ddp.py, test_visual_train.py) meet through a file
store instead and open no rendezvous socket.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _finetune_params import write_params
from _pretrain_inputs import PRETRAIN, make_faces
from _pretrain_inputs import write_params as write_pretrain_params
from pipeline.config import from_dict
from pipeline.data.faces.sets import open_face_set
from _torchrun_finetune import state_digest
from pipeline.data.manifest import read_manifest
from pipeline.fsio import OUTPUT_MARKER
from pipeline.model_files.backbone import load_backbone_state
from pipeline.model_files.visual import build_from_checkpoint
from pipeline.models.registry import create_backbone
from pipeline.train.ddp import DistContext
from pipeline.train.face_data import split_identities, verification_pairs
from pipeline.train.frames_dataset import FrameDataset
from pipeline.train.selection import SelectionConfig, selection_split
from pipeline.train.pretrain import PretrainConfig, verify
from pipeline.train.visual import build_training_data, predict_frames, score_predictions

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _run_bounded(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``argv`` in its own process group; on timeout kill the group (torchrun and its ranks) and fail."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


@pytest.mark.slow
def test_finetune_visual_under_torchrun_publishes_the_model_every_rank_ends_with(
    tiny_prepared: Path, tiny_frames: Path, tmp_path: Path
) -> None:
    params = write_params(tmp_path, epochs=1)
    out, metrics_path = tmp_path / "visual", tmp_path / "metrics" / "visual.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DIGEST_DIR": str(tmp_path)}
    proc = _run_bounded(
        [str(TORCHRUN), "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
         str(REPO / "tests" / "_torchrun_finetune.py"), str(tiny_prepared), str(tiny_frames), str(out),
         str(metrics_path), "--params", str(params), "--device", "cpu", "--work-dir", str(tmp_path / "work"),
         "--no-progress"],
        tmp_path, env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])  # rank 0 alone prints it

    # both ranks end with the same weights, and those are what rank 0 published (one epoch: best = last)
    digests = {(tmp_path / f"rank{r}.digest").read_text() for r in range(2)}
    assert len(digests) == 1
    ckpt = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert state_digest(ckpt["state_dict"]) == digests.pop()
    assert sorted(p.name for p in out.iterdir()) == ["model.pt"]
    model = build_from_checkpoint(ckpt).eval()
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())

    # the validation each rank did on its share, gathered, is the single-process validation of that model
    metrics = json.loads(metrics_path.read_text())
    assert metrics["epochs"] == 1 and metrics["best_epoch"] == summary["best_epoch"] == 1
    assert metrics["validation"] == summary["validation"]
    manifest = read_manifest(tiny_prepared / "manifest.json")
    data = build_training_data(manifest, tiny_prepared / "labels.h5", tiny_frames, use_bp4d=True,
                               held=selection_split(manifest, SelectionConfig()))
    predictions = predict_frames(model, FrameDataset(tiny_frames, data.val), 0, len(data.val), 16,
                                 torch.device("cpu"), DistContext())
    alone = score_predictions(data.val, data.val_faceless, *predictions)
    for frames in ("face_frames", "all_frames"):
        published = metrics["validation"][frames]
        for task in ("au", "expr"):
            assert published[task].keys() == alone[frames][task].keys()
            for name, value in alone[frames][task].items():
                assert published[task][name] == pytest.approx(value, abs=1e-6), (frames, task, name)
        assert np.isfinite(published["score"])


@pytest.mark.slow
def test_pretrain_face_under_torchrun_publishes_a_backbone_whose_verification_it_reports(tmp_path: Path) -> None:
    faces = make_faces(tmp_path / "faces")
    params = write_pretrain_params(tmp_path, epochs=1)
    out, metrics_path = tmp_path / "pretrain", tmp_path / "metrics" / "pretrain.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = _run_bounded(
        [str(TORCHRUN), "--standalone", "--nnodes", "1", "--nproc_per_node", "2", "-m", "stages.pretrain_face",
         str(faces / "rec"), str(out), str(metrics_path), "--params", str(params), "--device", "cpu",
         "--work-dir", str(tmp_path / "work"), "--no-progress"],
        REPO, env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count('"best_epoch"') == 1  # rank 0 alone prints the summary
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "backbone.json", "backbone.pth"]

    # the verification each rank did on its share, gathered, is the single-process one of the published backbone
    metrics = json.loads(metrics_path.read_text())
    cfg = from_dict(PretrainConfig, {**PRETRAIN, "epochs": 1})
    backbone = create_backbone(cfg.backbone, width_mult=cfg.width_mult)
    load_backbone_state(backbone, out / "backbone.pth")
    face_set = open_face_set(faces / "rec")
    split = split_identities(face_set.labels, cfg.holdout_share, cfg.seed)
    alone = verify(backbone, face_set, verification_pairs(split, cfg.verification_pairs, cfg.seed), cfg,
                   torch.device("cpu"), DistContext())
    assert metrics["best_epoch"] == 1
    for name in ("accuracy", "accuracy_std", "tar_at_far"):
        assert metrics["verification"][name] == pytest.approx(alone[name], abs=1e-6), name
