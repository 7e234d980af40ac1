"""EmbeddingStore: roundtrip, layout, completion marker, fingerprint rebuilds, plain-zarr readability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.storage.embedding_store import EmbeddingStore, StoreError, as_float16, fingerprint

ATTRS = {"model": "tiny", "params": {"batch": 4}, "dim": 8}


def _arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "embedding": rng.normal(size=(n, 8)).astype(np.float16),
        "face_present": rng.random(n) > 0.3,
        "au": rng.integers(-1, 2, size=(n, 12)).astype(np.int8),
    }


@pytest.fixture
def store(tmp_path: Path) -> EmbeddingStore:
    return EmbeddingStore.open_for_write(tmp_path / "s.zarr", "a" * 64, ATTRS, chunk_frames=16)


def test_roundtrip_keeps_values_dtypes_and_attrs(store: EmbeddingStore) -> None:
    arrays = _arrays(40)
    store.write("video1_left", arrays, {"fps": 30.0, "n_frames": 40, "video": "video1"})

    back = EmbeddingStore.open_read(store.path)
    assert back.keys() == ["video1_left"]
    assert back.attrs["fingerprint"] == "a" * 64 and back.attrs["dim"] == 8 and back.chunk_frames == 16
    got = back.read("video1_left")
    assert set(got) == set(arrays)
    for name, value in arrays.items():
        assert got[name].dtype == value.dtype
        np.testing.assert_array_equal(got[name], value)
    assert back.entry_attrs("video1_left") == {"fps": 30.0, "n_frames": 40, "video": "video1"}
    assert set(back.read("video1_left", names=("au",))) == {"au"}


def test_arrays_are_chunked_along_time_and_readable_with_plain_zarr_and_dask(store: EmbeddingStore) -> None:
    import dask.array as da

    arrays = _arrays(40)
    store.write("v", arrays, {})
    group = zarr.open_group(str(store.path), mode="r")
    assert group["v/embedding"].chunks == (16, 8)
    assert group["v/face_present"].chunks == (16,)
    assert group["v"].attrs["complete"] is True
    lazy = da.from_zarr(str(store.path), component="v/embedding")
    assert lazy.chunks[0] == (16, 16, 8)
    np.testing.assert_array_equal(lazy.compute(), arrays["embedding"])


def test_zero_length_entry_roundtrips(store: EmbeddingStore) -> None:
    store.write("empty", {"embedding": np.zeros((0, 8), np.float16)}, {"n_frames": 0})
    assert store.read("empty")["embedding"].shape == (0, 8)


def test_entry_without_marker_is_ignored_and_rewritten(store: EmbeddingStore) -> None:
    store.write("done", _arrays(20), {})
    store.write("partial", _arrays(20), {})
    meta_path = store.path / "partial" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    del meta["attributes"]["complete"]  # as if killed just before the marker was written
    meta_path.write_text(json.dumps(meta))

    reopened = EmbeddingStore.open_for_write(store.path, "a" * 64, ATTRS, chunk_frames=16)
    assert reopened.keys() == ["done"]
    assert not reopened.is_complete("partial") and "partial" not in reopened
    with pytest.raises(KeyError, match="partial"):
        reopened.read("partial")
    reopened.write("partial", _arrays(20, seed=1), {})
    np.testing.assert_array_equal(reopened.read("partial")["au"], _arrays(20, seed=1)["au"])


def test_truncated_or_missing_entry_metadata_counts_as_incomplete(store: EmbeddingStore) -> None:
    store.write("a", _arrays(5), {})
    store.write("b", _arrays(5), {})
    (store.path / "a" / "zarr.json").write_text('{"attributes": {"complete": tr')
    (store.path / "b" / "zarr.json").unlink()
    (store.path / "c").mkdir()
    assert store.keys() == []


def test_rewrite_replaces_a_longer_entry_completely(store: EmbeddingStore) -> None:
    store.write("v", _arrays(50), {"n_frames": 50})
    store.write("v", _arrays(10, seed=2), {"n_frames": 10})
    got = store.read("v")
    assert got["embedding"].shape == (10, 8)
    np.testing.assert_array_equal(got["embedding"], _arrays(10, seed=2)["embedding"])


def test_fingerprint_mismatch_rebuilds_the_store(store: EmbeddingStore) -> None:
    store.write("old", _arrays(5), {})
    same = EmbeddingStore.open_for_write(store.path, "a" * 64, ATTRS, chunk_frames=16)
    assert same.keys() == ["old"]

    rebuilt = EmbeddingStore.open_for_write(store.path, "b" * 64, {**ATTRS, "model": "other"}, chunk_frames=16)
    assert rebuilt.keys() == [] and rebuilt.fingerprint == "b" * 64 and rebuilt.attrs["model"] == "other"
    assert not (store.path / "old").exists()
    assert not list(store.path.parent.glob(".s.zarr.stale-*"))


def test_chunk_length_change_rebuilds_the_store(store: EmbeddingStore) -> None:
    store.write("old", _arrays(5), {})
    assert EmbeddingStore.open_for_write(store.path, "a" * 64, ATTRS, chunk_frames=8).keys() == []


def test_open_append_refuses_a_store_of_another_fingerprint(store: EmbeddingStore) -> None:
    EmbeddingStore.open_append(store.path, "a" * 64).write("k", _arrays(3), {})
    with pytest.raises(StoreError, match="fingerprint"):
        EmbeddingStore.open_append(store.path, "c" * 64)
    with pytest.raises(StoreError, match="no embedding store"):
        EmbeddingStore.open_append(store.path.parent / "nothing.zarr", "a" * 64)


def test_refuses_to_wipe_a_directory_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not an embedding store"):
        EmbeddingStore.open_for_write(tmp_path / "mine", "a" * 64, ATTRS)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_open_read_of_missing_store_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.zarr"):
        EmbeddingStore.open_read(tmp_path / "missing.zarr")


@pytest.mark.parametrize("key", ["", "a/b", ".hidden", "__x", " pad"])
def test_invalid_keys_are_refused(store: EmbeddingStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid store key"):
        store.write(key, _arrays(2), {})


def test_arrays_must_share_the_frame_axis(store: EmbeddingStore) -> None:
    with pytest.raises(ValueError, match="disagree"):
        store.write("v", {"a": np.zeros((3, 2)), "b": np.zeros(4)}, {})
    with pytest.raises(ValueError, match="complete"):
        store.write("v", {"a": np.zeros(3)}, {"complete": True})


def test_fingerprint_hashes_model_bytes_and_params(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"weights-1")
    base = fingerprint(model, {"a": 1, "b": [1, 2]})
    assert base == fingerprint(model, {"b": [1, 2], "a": 1})  # key order does not matter
    assert base != fingerprint(model, {"a": 2, "b": [1, 2]})
    model.write_bytes(b"weights-2")
    assert base != fingerprint(model, {"a": 1, "b": [1, 2]})
    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        fingerprint(tmp_path / "absent.onnx", {})


def test_as_float16_refuses_overflow_and_nan() -> None:
    np.testing.assert_array_equal(as_float16(np.array([[1.5, -2.0]], np.float32), "m"), np.array([[1.5, -2.0]], np.float16))
    with pytest.raises(ValueError, match=r"m.onnx: subject 'v'.*overflow float16 \(largest \|value\| 1e\+05\)"):
        as_float16(np.array([1.0, 1e5], np.float32), "m.onnx: subject 'v'")
    with pytest.raises(ValueError, match="NaN"):
        as_float16(np.array([np.nan, 1.0], np.float32), "m")


def test_a_leftover_is_refused_unless_the_caller_owns_the_path(tmp_path: Path) -> None:
    path = tmp_path / "work" / "visual.zarr"
    (path / "vidA" / "embedding").mkdir(parents=True)  # entries of a store whose root was never written
    attrs = {"model": "m", "params": {}, "dim": 2}
    with pytest.raises(StoreError, match="exists and is not an embedding store"):
        EmbeddingStore.open_for_write(path, "a" * 64, attrs)
    store = EmbeddingStore.open_for_write(path, "a" * 64, attrs, replace_foreign=True)
    assert store.keys() == [] and sorted(p.name for p in path.iterdir()) == ["zarr.json"]
    assert [p.name for p in path.parent.iterdir()] == ["visual.zarr"]
