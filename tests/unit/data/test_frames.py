"""The HDF5 frame store: packing, random reads, corrupt crops, atomic publication and resuming."""

from __future__ import annotations

import dataclasses
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from _media import build_affwild2, build_bp4d, write_jpeg
from PIL import Image

from pipeline.storage.frame_store import CorruptCropError, FrameStore, decode_crop
from pipeline.data.pack_frames import PackConfig, pack_frames
from pipeline.data.manifest import Manifest, read_manifest
from pipeline.data.prepare import PrepareConfig, prepare_dataset


def _prepare(root: Path, out: Path) -> Manifest:
    return prepare_dataset(root, out, PrepareConfig(frame_tolerance=2), bp4d_root=root / "BP4D")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_affwild2(tmp_path_factory.mktemp("src") / "affwild2")
    build_bp4d(root / "BP4D")
    return root


@pytest.fixture(scope="module")
def packed(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Path, dict]:
    base = tmp_path_factory.mktemp("packed")
    manifest = _prepare(source, base / "prepared")
    stats = pack_frames(manifest, base / "frames.h5", PackConfig(chunk_frames=4), workers=2)
    return manifest, base / "frames.h5", stats


@pytest.fixture
def copy(source: Path, tmp_path: Path) -> tuple[Path, Manifest]:
    root = Path(shutil.copytree(source, tmp_path / "affwild2"))
    return root, _prepare(root, tmp_path / "prepared")


def test_layout_and_stats(packed: tuple[Manifest, Path, dict]) -> None:
    manifest, path, stats = packed
    with h5py.File(path, "r") as fh:
        assert fh.attrs["complete"] and fh.attrs["image_size"] == 112
        assert sorted(fh["subjects"]) == sorted(manifest.names())
        jpeg = fh["subjects/vidA/jpeg"]
        assert jpeg.shape == (10,) and jpeg.dtype.metadata["vlen"] == np.uint8
        assert fh["subjects/vidA/face_present"][()].tolist() == [True, True, False] + [True] * 7
        assert jpeg[2].size == 0
    n_frames = sum(r.n_frames for r in manifest.subjects)
    n_faces = sum(r.n_faces for r in manifest.subjects)
    assert (stats["subjects"], stats["frames"], stats["faces"]) == (6, n_frames, n_faces)
    assert stats["dropped"] == 0 and stats["resized"] == 0
    crops = [p for p in Path(manifest.root).rglob("*.jpg")]
    assert stats["source_bytes"] == sum(p.stat().st_size for p in crops)
    assert stats["store_bytes"] == path.stat().st_size
    assert stats["ratio"] == pytest.approx(stats["store_bytes"] / stats["source_bytes"])


def test_store_keeps_the_original_bytes(packed: tuple[Manifest, Path, dict]) -> None:
    manifest, path, _ = packed
    store = FrameStore(path)
    crop = Path(manifest.by_name("vidB").crops_dir) / "00006.jpg"
    assert store.read_jpeg("vidB", [5])[0].tobytes() == crop.read_bytes()


def test_read_decodes_rgb_in_requested_order(packed: tuple[Manifest, Path, dict]) -> None:
    manifest, path, _ = packed
    store = FrameStore(path)
    assert store.names() == sorted(manifest.names())
    assert store.n_frames("vidA") == 10
    crops = Path(manifest.by_name("vidA").crops_dir)
    frames = store.read("vidA", [7, 0, 2, 7])
    assert frames.shape == (4, 112, 112, 3) and frames.dtype == np.uint8
    expected7 = np.asarray(Image.open(crops / "00008.jpg").convert("RGB"))
    np.testing.assert_array_equal(frames[0], expected7)
    np.testing.assert_array_equal(frames[3], expected7)
    np.testing.assert_array_equal(frames[1], np.asarray(Image.open(crops / "00001.jpg").convert("RGB")))
    assert not frames[2].any()                               # no face: zeros
    assert store.read("vidA", []).shape == (0, 112, 112, 3)
    assert store.face_present("bp4d_F001_T1").tolist() == [True, True, False, True, True]


def test_read_errors(packed: tuple[Manifest, Path, dict], tmp_path: Path) -> None:
    _, path, _ = packed
    store = FrameStore(path)
    with pytest.raises(KeyError, match="nobody"):
        store.read("nobody", [0])
    with pytest.raises(ValueError, match=r"'vidD' has 8 frames"):
        store.read("vidD", [8])
    with pytest.raises(FileNotFoundError, match="pack-frames"):
        FrameStore(tmp_path / "none.h5")
    incomplete = tmp_path / "half.h5"
    with h5py.File(incomplete, "w") as fh:
        fh.attrs["complete"] = False
        fh.create_group("subjects")
    with pytest.raises(ValueError, match=r"half\.h5: the frame store is incomplete"):
        FrameStore(incomplete)


def test_store_pickles_without_its_handle(packed: tuple[Manifest, Path, dict]) -> None:
    _, path, _ = packed
    store = FrameStore(path)
    before = store.read("vidC_left", [1, 2])
    clone = pickle.loads(pickle.dumps(store))
    assert clone._fh is None
    np.testing.assert_array_equal(clone.read("vidC_left", [1, 2]), before)
    store.close()
    np.testing.assert_array_equal(store.read("vidC_left", [1, 2]), before)   # reopens


def test_corrupt_jpeg_names_file_and_frame_and_publishes_nothing(copy: tuple[Path, Manifest], tmp_path: Path) -> None:
    root, manifest = copy
    bad = root / "cropped_aligned/vidC_left/00005.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    out = tmp_path / "out/frames.h5"
    with pytest.raises(CorruptCropError, match=r"vidC_left/00005\.jpg: frame 4 of subject 'vidC_left': corrupt JPEG"):
        pack_frames(manifest, out, PackConfig())
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_truncated_jpeg_is_caught_by_decoding_only(copy: tuple[Path, Manifest], tmp_path: Path) -> None:
    root, manifest = copy
    crop = root / "cropped_aligned/vidD/00002.jpg"
    crop.write_bytes(crop.read_bytes()[:-200])
    with pytest.raises(CorruptCropError, match=r"vidD/00002\.jpg: frame 1 of subject 'vidD'"):
        pack_frames(manifest, tmp_path / "a.h5", PackConfig(verify="decode"))
    stats = pack_frames(manifest, tmp_path / "b.h5", PackConfig(verify="header"))
    assert stats["faces"] == sum(r.n_faces for r in manifest.subjects)


def test_drop_mode_marks_the_frame_faceless(copy: tuple[Path, Manifest], tmp_path: Path) -> None:
    root, manifest = copy
    (root / "cropped_aligned/vidD/00003.jpg").write_bytes(b"garbage")
    stats = pack_frames(manifest, tmp_path / "f.h5", PackConfig(on_corrupt="drop"))
    assert stats["dropped"] == 1
    store = FrameStore(tmp_path / "f.h5")
    assert store.face_present("vidD").tolist() == [True, True, False] + [True] * 5
    assert not store.read("vidD", [2]).any()


def test_crop_of_another_size_is_resized_on_read(copy: tuple[Path, Manifest], tmp_path: Path) -> None:
    root, manifest = copy
    write_jpeg(root / "cropped_aligned/vidD/00001.jpg", value=90, size=128)
    stats = pack_frames(manifest, tmp_path / "f.h5", PackConfig())
    assert stats["resized"] == 1
    frame = FrameStore(tmp_path / "f.h5").read("vidD", [0])
    assert frame.shape == (1, 112, 112, 3) and frame.any()


def test_resume_after_a_failure(copy: tuple[Path, Manifest], tmp_path: Path) -> None:
    root, manifest = copy
    bad = root / "cropped_aligned/vidD/00003.jpg"
    good = bad.read_bytes()
    bad.write_bytes(b"garbage")
    work, out = tmp_path / "work", tmp_path / "frames.h5"
    with pytest.raises(CorruptCropError):
        pack_frames(manifest, out, PackConfig(), work_dir=work)
    assert not out.exists() and (work / "frames.h5.partial").is_file()
    bad.write_bytes(good)
    stats = pack_frames(manifest, out, PackConfig(), work_dir=work)
    # subjects are packed in manifest order; the four before vidD were complete and are reused
    assert stats["resumed_subjects"] == 4
    assert not (work / "frames.h5.partial").exists()
    reference = tmp_path / "ref.h5"
    pack_frames(manifest, reference, PackConfig())
    a, b = FrameStore(out), FrameStore(reference)
    for name in manifest.names():
        idx = np.arange(a.n_frames(name))
        np.testing.assert_array_equal(a.read(name, idx), b.read(name, idx))
        np.testing.assert_array_equal(a.face_present(name), b.face_present(name))


def test_partial_store_from_another_config_is_discarded(copy: tuple[Path, Manifest], tmp_path: Path) -> None:
    _, manifest = copy
    work = tmp_path / "work"
    work.mkdir()
    (work / "frames.h5.partial").write_bytes(b"not hdf5")
    stats = pack_frames(manifest, tmp_path / "frames.h5", PackConfig(), work_dir=work)
    assert stats["resumed_subjects"] == 0 and FrameStore(tmp_path / "frames.h5").n_frames("vidA") == 10


def test_decode_crop_and_config_checks() -> None:
    with pytest.raises(CorruptCropError, match="where: cannot decode"):
        decode_crop(b"nope", where="where")
    with pytest.raises(ValueError, match="chunk_frames"):
        PackConfig(chunk_frames=0)
    assert dataclasses.asdict(PackConfig()) == {"verify": "decode", "on_corrupt": "error", "chunk_frames": 256}


def test_tiny_synthetic_dataset_packs(tiny_prepared: Path, tiny_frames: Path) -> None:
    """The synthetic tiny preset packs; the store agrees with the prepared labels and the crops."""
    from pipeline.data.labels_store import read_all_labels

    manifest = read_manifest(tiny_prepared / "manifest.json")
    labels = read_all_labels(tiny_prepared / "labels.h5")
    store = FrameStore(tiny_frames)
    assert sorted(store.names()) == sorted(manifest.names())
    for record in manifest.subjects:
        np.testing.assert_array_equal(store.face_present(record.name), labels[record.name].face_present)
    record = next(r for r in manifest.subjects if r.source == "affwild2" and 0 < r.n_faces < r.n_frames)
    face = store.face_present(record.name)
    first, missing = int(np.flatnonzero(face)[0]), int(np.flatnonzero(~face)[0])
    frames = store.read(record.name, [first, missing])
    expected = np.asarray(Image.open(Path(record.crops_dir) / f"{first + 1:05d}.jpg").convert("RGB"))
    np.testing.assert_array_equal(frames[0], expected)
    assert not frames[1].any()


def test_without_a_work_dir_the_store_is_built_where_no_planted_link_reaches(
    source: Path, tmp_path: Path
) -> None:
    """Built without a work dir, the partial store once had a predictable name beside the output
    (``.frames.h5.partial-<pid>``); a link planted there redirected the write into its target."""
    import os

    manifest = _prepare(source, tmp_path / "prepared")
    out = tmp_path / "out" / "frames.h5"
    out.parent.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    planted = out.parent / f".frames.h5.partial-{os.getpid()}"
    planted.symlink_to(victim)
    pack_frames(manifest, out, PackConfig(chunk_frames=4))
    assert victim.read_text() == "keep me"
    assert planted.is_symlink()   # not followed, not removed: it is not ours
    assert sorted(p.name for p in out.parent.iterdir()) == [planted.name, "frames.h5"]
