"""Pretraining's pieces: identity split, verification pairs, the image dataset, the set digest,
the epoch's batches and the config's checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _pretrain_inputs import PRETRAIN, make_faces
from pipeline.config import ConfigError, from_dict
from pipeline.data.faces.sets import open_face_set
from pipeline.train.face_data import FaceImages, face_set_digest, split_identities, verification_pairs
from pipeline.train.pretrain import PretrainConfig, epoch_batches


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
])
def test_config_names_the_bad_value(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(PretrainConfig, {**PRETRAIN, **change}, where="params.yaml:pretrain_face")
    assert from_dict(PretrainConfig, PRETRAIN).width_mult == 0.0625
