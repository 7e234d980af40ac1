"""Pretraining's pieces: identity split, verification pairs, the image dataset, the set digest,
the epoch's batches and the config's checks."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _pretrain_inputs import PRETRAIN, make_faces
from pipeline.config import ConfigError, from_dict
from pipeline.data.faces.sets import open_face_set
from pipeline.train.ddp import DistContext
from pipeline.train.face_data import (
    FaceImages, face_set_digest, shuffled_labels, split_identities, verification_pairs,
)
from pipeline.train.pretrain import PretrainConfig, PretrainRun, epoch_batches, train_pretrain


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_faces(tmp_path_factory.mktemp("faces") / "faces")


def test_split_holds_out_whole_identities_disjointly_and_renumbers_the_rest() -> None:
    labels = np.repeat(np.arange(20), 3)
    split = split_identities(labels, holdout_share=0.25, seed=0)
    held = set(split.holdout_labels.tolist())
    assert split.holdout_identities == len(held) == 5 and split.train_identities == 15
    assert held.isdisjoint(labels[split.train_images].tolist())
    assert sorted(np.concatenate([split.train_images, split.holdout_images]).tolist()) == list(range(60))
    assert sorted(set(split.train_labels.tolist())) == list(range(15))
    # renumbering keeps the set's order of identities
    assert np.all(np.diff(split.train_labels) >= 0)
    again = split_identities(labels, holdout_share=0.25, seed=0)
    assert np.array_equal(again.holdout_images, split.holdout_images)
    other = split_identities(labels, holdout_share=0.25, seed=1)
    assert not np.array_equal(other.holdout_images, split.holdout_images)


def test_split_keeps_two_identities_on_each_side_and_refuses_tiny_sets() -> None:
    assert split_identities(np.arange(4), 0.01, 0).holdout_identities == 2
    assert split_identities(np.arange(4), 0.99, 0).train_identities == 2
    with pytest.raises(ValueError, match="need >= 4 identities"):
        split_identities(np.array([0, 0, 1, 2]), 0.5, 0)


def test_pairs_point_at_held_out_images_and_say_whether_they_match() -> None:
    labels = np.repeat(np.arange(10), 4)
    split = split_identities(labels, 0.3, seed=2)
    pairs = verification_pairs(split, pairs_per_kind=15, seed=2)
    assert len(pairs.same) == 30 and pairs.same.sum() == 15
    assert len(np.unique(pairs.images)) == len(pairs.images)
    assert set(pairs.images.tolist()) <= set(split.holdout_images.tolist())
    first, second = pairs.images[pairs.first], pairs.images[pairs.second]
    assert np.array_equal(labels[first] == labels[second], pairs.same) and np.all(first != second)


def test_dataset_gives_uint8_faces_and_names_a_wrong_sized_image(faces: Path, tmp_path: Path) -> None:
    images = FaceImages(open_face_set(faces / "rec"), np.array([0, 5]), np.array([3, 4]))
    image, label = images[1]
    assert tuple(image.shape) == (112, 112, 3) and str(image.dtype) == "torch.uint8" and label == 4
    folder = tmp_path / "folder"
    shutil.copytree(faces / "folder", folder)
    Image.new("RGB", (64, 48)).save(folder / "00001" / "0000.jpg")
    faces_set = open_face_set(folder)
    index = faces_set.paths.index(folder / "00001" / "0000.jpg")
    with pytest.raises(ValueError, match=r"00001/0000\.jpg: image is 48x64x3, expected aligned 112x112x3"):
        FaceImages(faces_set, np.array([index]), np.array([0]))[0]


def test_digest_follows_the_content(faces: Path, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    shutil.copytree(faces / "folder", folder)
    assert face_set_digest(open_face_set(folder)) == face_set_digest(open_face_set(faces / "folder"))
    assert face_set_digest(open_face_set(faces / "rec")) != face_set_digest(open_face_set(folder))
    (folder / "00000" / "0000.jpg").write_bytes((folder / "00000" / "0001.jpg").read_bytes())
    assert face_set_digest(open_face_set(folder)) != face_set_digest(open_face_set(faces / "folder"))


def test_epoch_batches_replay_from_seed_and_epoch() -> None:
    cfg = PretrainConfig(batch_size=4, images_per_epoch=10)
    batches = epoch_batches(20, 0, cfg, min_batch=2)
    assert [len(b) for b in batches] == [4, 4, 2] and len(set(np.concatenate(batches).tolist())) == 10
    assert all(np.array_equal(a, b) for a, b in zip(batches, epoch_batches(20, 0, cfg, 2)))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(epoch_batches(20, 1, cfg, 2)))
    assert [len(b) for b in epoch_batches(20, 0, cfg, min_batch=4)] == [4, 4]
    whole = PretrainConfig(batch_size=4, images_per_epoch=None)
    assert sorted(np.concatenate(epoch_batches(9, 0, whole, 1)).tolist()) == list(range(9))


@pytest.mark.parametrize(("change", "message"), [
    ({"epochs": 0}, "epochs: 0 needs init"),
    ({"margin": "sphereface"}, "margin"),
    ({"m": 1.5}, "m: must be in"),
    ({"sample_rate": 0.0}, "sample_rate"),
    ({"holdout_share": 1.0}, "holdout_share"),
    ({"verification_pairs": 4}, "verification_pairs"),
    ({"lr": 0.0}, "lr: must be > 0"),
    ({"images_per_epoch": 1}, "images_per_epoch"),
    ({"warmup_epochs": 2.5}, r"warmup_epochs: must be in \[0, epochs \(2\)\], got 2.5"),
    ({"warmup_epochs": -0.5}, "warmup_epochs"),
    ({"min_gain": 1.5}, r"min_gain: must be in \[-1, 1\] or null, got 1.5"),
])
def test_config_names_the_bad_value(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(PretrainConfig, {**PRETRAIN, **change}, where="params.yaml:pretrain_face")
    assert from_dict(PretrainConfig, PRETRAIN).width_mult == 0.0625


def test_a_given_backbone_published_as_it_is_ignores_the_warmup() -> None:
    """The paper profile sets init and epochs 0 over the demo's params, whose warm-up is then unread."""
    cfg = from_dict(PretrainConfig, {**PRETRAIN, "init": "backbone.pth", "epochs": 0, "warmup_epochs": 0.5})
    assert cfg.epochs == 0 and cfg.warmup_epochs == 0.5


def test_shuffled_labels_keep_each_class_count_and_replay_from_the_seed() -> None:
    labels = np.repeat(np.arange(6), [2, 3, 4, 5, 6, 7])
    shuffled = shuffled_labels(labels, seed=4)
    assert np.array_equal(np.bincount(shuffled), np.bincount(labels))
    assert (shuffled != labels).mean() > 0.5          # most images now carry another identity's label
    assert np.array_equal(shuffled, shuffled_labels(labels, seed=4))
    assert not np.array_equal(shuffled, shuffled_labels(labels, seed=5))


def _lrs(run: PretrainRun, steps: int) -> list[float]:
    """The learning rate of each of the next ``steps`` optimiser steps."""
    seen = []
    for _ in range(steps):
        seen.append(run.optimizer.param_groups[0]["lr"])
        run.optimizer.step()
        run.scheduler.step()
    return seen


def test_warmup_rises_linearly_to_lr_then_decays_and_resumes() -> None:
    cfg = PretrainConfig(width_mult=0.0625, lr=0.1, epochs=2, warmup_epochs=0.5)
    run = PretrainRun(cfg, classes=4, device=torch.device("cpu"), ctx=DistContext(), total_steps=20, warmup_steps=5)
    first = _lrs(run, 7)
    assert first[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])   # lr/5 .. lr over the warm-up
    assert first[5] == pytest.approx(0.1) and first[6] < 0.1              # then the cosine over the 15 left
    assert first[6] == pytest.approx(0.05 * (1 + math.cos(math.pi / 15)))
    saved, optimizer = run.extra_state(), run.optimizer.state_dict()   # what LoopState saves
    rest = _lrs(run, 13)
    assert rest[-1] == pytest.approx(0.05 * (1 + math.cos(math.pi * 14 / 15))) and rest == sorted(rest, reverse=True)

    resumed = PretrainRun(cfg, classes=4, device=torch.device("cpu"), ctx=DistContext(), total_steps=20,
                          warmup_steps=5)
    resumed.optimizer.load_state_dict(optimizer)   # as LoopState.resume restores it
    resumed.load_extra(saved)
    assert _lrs(resumed, 13) == pytest.approx(rest)


def test_no_warmup_is_the_plain_cosine() -> None:
    run = PretrainRun(PretrainConfig(width_mult=0.0625, lr=0.1), classes=4, device=torch.device("cpu"),
                      ctx=DistContext(), total_steps=8)
    assert _lrs(run, 8) == pytest.approx([0.05 * (1 + math.cos(math.pi * i / 8)) for i in range(8)])


def test_shuffle_labels_trains_on_the_permuted_labels_and_verifies_on_the_real_pairs(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[np.ndarray] = []
    original = FaceImages.__init__

    def spy(self: FaceImages, faces_set, indices, labels) -> None:  # type: ignore[no-untyped-def]
        seen.append(np.asarray(labels).copy())
        original(self, faces_set, indices, labels)

    monkeypatch.setattr(FaceImages, "__init__", spy)
    runs, trained = {}, {}
    for shuffle in (False, True):
        seen.clear()
        cfg = from_dict(PretrainConfig, {**PRETRAIN, "epochs": 1, "shuffle_labels": shuffle})
        runs[shuffle] = train_pretrain(faces / "rec", tmp_path / f"out{shuffle}", tmp_path / f"m{shuffle}.json",
                                       tmp_path / f"work{shuffle}", cfg, progress=False)
        trained[shuffle] = seen[1]   # [0]: the held-out pairs' images (initial verification); [1]: training
    split = split_identities(open_face_set(faces / "rec").labels, PRETRAIN["holdout_share"], PRETRAIN["seed"])
    assert np.array_equal(trained[False], split.train_labels)
    assert np.array_equal(trained[True], shuffled_labels(split.train_labels, PRETRAIN["seed"]))
    assert runs[True].metrics["shuffle_labels"] and not runs[False].metrics["shuffle_labels"]
    assert runs[True].metrics["initial"] == runs[False].metrics["initial"]   # the same real pairs
    assert runs[True].metrics["history"][0]["loss"] != runs[False].metrics["history"][0]["loss"]
