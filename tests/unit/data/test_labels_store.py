"""labels.h5: VA beside AU and EXPR, and a store written without VA read as all unlabelled."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.data.labels_store import SubjectLabels, read_all_labels, read_labels, write_labels


def _item(n: int, va: np.ndarray | None = None) -> SubjectLabels:
    return SubjectLabels(au=np.zeros((n, 12), np.int8), expr=np.full(n, -1, np.int8),
                         face_present=np.ones(n, bool), va=va)


def test_va_round_trips_with_nan_for_unlabelled(tmp_path: Path) -> None:
    va = np.array([[0.5, -0.25], [np.nan, np.nan], [-1.0, 1.0]], dtype=np.float32)
    write_labels(tmp_path / "labels.h5", {"v1": _item(3, va)})
    back = read_labels(tmp_path / "labels.h5", "v1").va
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, va)


def test_labels_without_va_are_all_nan() -> None:
    item = _item(4)
    assert item.va.shape == (4, 2) and np.isnan(item.va).all()


def test_a_store_without_va_reads_as_all_nan(tmp_path: Path) -> None:
    path = tmp_path / "labels.h5"
    with h5py.File(path, "w") as fh:      # the layout before VA was stored
        group = fh.create_group("v1")
        group.create_dataset("au", data=np.zeros((5, 12), np.int8))
        group.create_dataset("expr", data=np.zeros(5, np.int8))
        group.create_dataset("face_present", data=np.ones(5, bool))
    for item in (read_labels(path, "v1"), read_all_labels(path)["v1"]):
        assert item.va.shape == (5, 2) and np.isnan(item.va).all()


def test_a_va_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match=r"va \(3, 2\)"):
        _item(4, np.zeros((3, 2), np.float32))
