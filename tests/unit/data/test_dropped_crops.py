"""Crops that pack-frames drops are not trained on: the frame store's face_present wins over labels.h5's.

A copy of the tiny synthetic dataset gets one corrupt crop (a labelled AU training frame), one empty
crop (a labelled EXPR training frame) and one corrupt validation crop; prepare lists all three as
faces, pack-frames with ``on_corrupt: drop`` stores none of them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.storage.frame_store import CorruptCropError, FrameStore
from pipeline.data.pack_frames import PackConfig, pack_frames
from pipeline.data.labels_store import SubjectLabels, read_all_labels
from pipeline.data.manifest import Manifest, read_manifest
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.train.frames_dataset import FrameDataset, has_labels, read_frame_labels
from pipeline.train.visual import build_training_data


def _labelled_face(manifest: Manifest, labels: dict[str, SubjectLabels], task: str, split: str) -> tuple[str, int]:
    """The first labelled face frame of ``task`` in ``split`` (an Aff-Wild2 subject)."""
    for record in manifest.in_split(task, split):
        item = labels[record.name]
        labelled = (item.au >= 0).any(axis=1) if task == "au" else item.expr >= 0
        frames = np.flatnonzero(labelled & item.face_present)
        if len(frames):
            return record.name, int(frames[len(frames) // 2])
    raise AssertionError(f"the tiny dataset has no labelled {task} {split} face")


@pytest.fixture(scope="module")
def damaged(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The damaged copy, prepared; which frames were damaged and how."""
    base = tmp_path_factory.mktemp("dropped")
    root = base / "affwild2"
    shutil.copytree(tiny_root, root)
    prepared = base / "prepared"
    prepare_dataset(root, prepared, PrepareConfig(), bp4d_root=root / "BP4D")
    manifest = read_manifest(prepared / "manifest.json")
    labels = read_all_labels(prepared / "labels.h5")
    damage = {
        "au_train": _labelled_face(manifest, labels, "au", "train"),
        "expr_train": _labelled_face(manifest, labels, "expr", "train"),
        "validation": _labelled_face(manifest, labels, "au", "validation"),
    }
    for key, (name, frame) in damage.items():
        crop = Path(manifest.by_name(name).crops_dir) / f"{frame + 1:05d}.jpg"
        crop.write_bytes(b"" if key == "expr_train" else b"\xff\xd8 not a jpeg at all")
    return {"prepared": prepared, "manifest": manifest, "labels": labels, "damage": damage, "base": base}


@pytest.fixture(scope="module")
def dropped_store(damaged: dict) -> Path:
    out = damaged["base"] / "frames.h5"
    stats = pack_frames(damaged["manifest"], out, PackConfig(on_corrupt="drop"))
    assert stats["dropped"] == 3
    return out


def test_prepare_listed_the_damaged_crops_as_faces(damaged: dict, dropped_store: Path) -> None:
    store = FrameStore(dropped_store)
    for name, frame in damaged["damage"].values():
        assert damaged["labels"][name].face_present[frame]
        assert not store.face_present(name)[frame]


def test_frame_labels_take_the_store_faces(damaged: dict, dropped_store: Path) -> None:
    labels = damaged["labels"]
    merged = read_frame_labels(damaged["prepared"] / "labels.h5", dropped_store)
    store = FrameStore(dropped_store)
    assert set(merged) == set(labels)
    lost = 0
    for name, item in merged.items():
        np.testing.assert_array_equal(item.face_present, store.face_present(name))
        np.testing.assert_array_equal(item.au, labels[name].au)
        np.testing.assert_array_equal(item.expr, labels[name].expr)
        lost += int((labels[name].face_present & ~item.face_present).sum())
    assert lost == 3


def test_dropped_crops_are_neither_trained_on_nor_scored(damaged: dict, dropped_store: Path) -> None:
    data = build_training_data(damaged["manifest"], damaged["prepared"] / "labels.h5", dropped_store, True)
    sets = {"au_train": data.au_train, "expr_train": data.expr_train, "validation": data.val}
    for key, frame_set in sets.items():
        locations = {frame_set.location(i) for i in range(len(frame_set))}
        assert damaged["damage"][key] not in locations, key
        assert len(frame_set) > 0
    # the damaged validation frame was an AU validation frame; the others are still scored
    assert has_labels(data.val, "au").any() and has_labels(data.val, "expr").any()
    # every selected frame reads as a real image, none as the black image of a missing crop
    for frame_set in sets.values():
        dataset = FrameDataset(dropped_store, frame_set)
        images = [item[0] for item in dataset.__getitems__(list(range(len(frame_set))))]
        assert all(bool(image.any()) for image in images)


def test_empty_crop_is_refused_or_dropped_even_without_verification(damaged: dict) -> None:
    name, frame = damaged["damage"]["expr_train"]
    with pytest.raises(CorruptCropError, match=rf"{frame + 1:05d}\.jpg: frame {frame} of subject '{name}': .*empty"):
        pack_frames(damaged["manifest"], damaged["base"] / "refused.h5", PackConfig(verify="none"))
    out = damaged["base"] / "unverified.h5"
    stats = pack_frames(damaged["manifest"], out, PackConfig(verify="none", on_corrupt="drop"))
    assert stats["dropped"] == 1     # only the empty file: verify none keeps the other two as they are
    assert not FrameStore(out).face_present(name)[frame]


def test_store_from_another_prepare_output_is_refused(damaged: dict, tmp_path: Path) -> None:
    manifest = damaged["manifest"]
    partial = Manifest(root=manifest.root, subjects=manifest.subjects[:2], excluded_frames=manifest.excluded_frames)
    out = tmp_path / "partial.h5"
    pack_frames(partial, out, PackConfig(on_corrupt="drop"))
    missing = manifest.subjects[2].name
    with pytest.raises(ValueError, match=rf"partial\.h5: no subject '{missing}' of .*labels\.h5; run pack-frames"):
        read_frame_labels(damaged["prepared"] / "labels.h5", out)
