"""Windows of the in-memory sequence cache: equal to the stored arrays sliced, aligned by video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data.manifest import Manifest, SubjectRecord
from pipeline.inference.features import compose_features
from pipeline.storage.embedding_store import EmbeddingStore
from pipeline.train.sequence_data import (
    SequenceCache, WindowLoader, estimate_manifest_memory, estimate_memory_bytes, load_sequence_cache,
)

WINDOW = 30
# subject -> (video, frames, source); v1 has two faces sharing one audio track, v2 is shorter than a window
SUBJECTS = {
    "v1_left": ("v1", 45, "affwild2"),
    "v1_right": ("v1", 45, "affwild2"),
    "v2": ("v2", 20, "affwild2"),
    "F001_T1": ("F001_T1", 35, "bp4d"),
}


def subject_arrays(name: str, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    face = rng.random(n) > 0.2
    embedding = rng.normal(size=(n, 512)).astype(np.float16)
    embedding[~face] = 0
    au = rng.integers(0, 2, size=(n, 12)).astype(np.int8)
    au[: n // 3] = -1                      # first third without AU labels
    expr = rng.integers(0, 7, size=n).astype(np.int8)
    expr[-5:] = -1
    if name == "v1_right":
        au[:] = -1                         # this subject has no AU annotation at all
    arrays = {"embedding": embedding, "face_present": face, "au": au, "expr": expr,
              "au_logits": np.zeros((n, 12), np.float32), "expr_logits": np.zeros((n, 7), np.float32)}
    if name != "F001_T1":                  # BP4D: an entry without VA arrays, as a store made before VA
        va = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
        va[n // 2: n // 2 + 4, 1] = np.nan  # arousal unlabelled on a few frames
        if name == "v1_right":
            va[:] = np.nan                 # no VA annotation at all
        arrays.update(va=va, va_pred=np.zeros((n, 2), np.float32))
    return arrays


def audio_arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    present = rng.random(n) > 0.1
    embedding = rng.normal(size=(n, 512)).astype(np.float16)
    embedding[~present] = 0
    return {"embedding": embedding, "audio_present": present}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Path, Path, dict, dict]:
    root = tmp_path_factory.mktemp("stores")
    attrs = {"model": "test", "params": {}, "dim": 512}
    visual = EmbeddingStore.open_for_write(root / "visual.zarr", "v" * 64, attrs, chunk_frames=16)
    audio = EmbeddingStore.open_for_write(root / "audio.zarr", "a" * 64, attrs, chunk_frames=16)
    raw_visual, raw_audio, records = {}, {}, []
    for i, (name, (video, n, source)) in enumerate(SUBJECTS.items()):
        raw_visual[name] = subject_arrays(name, n, seed=i)
        visual.write(name, raw_visual[name], {"video": video})
        if source == "affwild2" and video not in raw_audio:
            raw_audio[video] = audio_arrays(n, seed=100 + i)
            audio.write(video, raw_audio[video], {})
        records.append(SubjectRecord(name=name, video=video, source=source, n_frames=n,
                                     au_split="train", expr_split="train"))
    return Manifest(root=str(root), subjects=tuple(records)), root / "visual.zarr", root / "audio.zarr", raw_visual, raw_audio


@pytest.fixture(scope="module")
def cache(stores) -> SequenceCache:
    manifest, visual, audio, _, _ = stores
    return load_sequence_cache(manifest, visual, audio, list(SUBJECTS), "both")


def expected_window(stores, name: str, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features and labels of one window computed straight from the arrays that were stored."""
    _, _, _, raw_visual, raw_audio = stores
    video, n, _ = SUBJECTS[name]
    v = raw_visual[name]
    stop = min(start + WINDOW, n)
    a = raw_audio.get(video, {"embedding": np.zeros((n, 512), np.float16), "audio_present": np.zeros(n, bool)})
    features = compose_features(v["embedding"][start:stop], a["embedding"][start:stop],
                                v["face_present"][start:stop], a["audio_present"][start:stop], "both")
    va = v.get("va", np.full((n, 2), np.nan, np.float32))
    return features, v["au"][start:stop], v["expr"][start:stop], va[start:stop]


def test_windows_equal_the_stored_arrays_sliced(stores, cache: SequenceCache) -> None:
    pairs = cache.windows(list(SUBJECTS), WINDOW, stride=7)
    batch = cache.batch(pairs, WINDOW)
    assert batch.features.shape == (len(pairs), WINDOW, 1026) and batch.features.dtype == np.float16
    for k, (subject, start) in enumerate(pairs):
        name = cache.names[subject]
        features, au, expr, va = expected_window(stores, name, int(start))
        real = len(features)
        np.testing.assert_array_equal(batch.features[k, :real], features.astype(np.float16))
        np.testing.assert_array_equal(batch.au[k, :real], au)
        np.testing.assert_array_equal(batch.expr[k, :real], expr)
        np.testing.assert_array_equal(batch.va[k, :real], va)   # NaN where unlabelled, both sides
        assert not batch.padding[k, :real].any()
        # frames past the end: padded, zero features, unlabelled
        assert batch.padding[k, real:].all()
        assert (batch.features[k, real:] == 0).all()
        assert (batch.au[k, real:] == -1).all() and (batch.expr[k, real:] == -1).all()
        assert np.isnan(batch.va[k, real:]).all()


def test_windows_cover_each_subject_including_the_tail(cache: SequenceCache) -> None:
    pairs = cache.windows(["v1_left", "v2"], WINDOW, stride=10)
    starts = {cache.names[s]: [] for s in np.unique(pairs[:, 0])}
    for subject, start in pairs:
        starts[cache.names[subject]].append(int(start))
    assert starts == {"v1_left": [0, 10, 15], "v2": [0]}


def test_subjects_of_one_video_share_its_audio(stores, cache: SequenceCache) -> None:
    _, _, _, _, raw_audio = stores
    left, right = cache.subject_features("v1_left"), cache.subject_features("v1_right")
    np.testing.assert_array_equal(left[:, 513:], right[:, 513:])
    np.testing.assert_array_equal(left[:, 513:1025], np.where(raw_audio["v1"]["audio_present"][:, None],
                                                              raw_audio["v1"]["embedding"], 0).astype(np.float32))


def test_subject_without_audio_track_gets_zero_audio(cache: SequenceCache) -> None:
    features = cache.subject_features("F001_T1")
    assert (features[:, 513:] == 0).all()
    assert features[:, 512].sum() > 0       # but its face flags are there


def test_task_windows_hold_labels_of_that_task(cache: SequenceCache) -> None:
    au_windows = cache.windows(list(SUBJECTS), WINDOW, stride=5, task="au")
    assert "v1_right" not in {cache.names[s] for s in au_windows[:, 0]}
    batch = cache.batch(au_windows, WINDOW)
    assert ((batch.au != -1).all(axis=-1)).any(axis=1).all()
    expr_windows = cache.windows(list(SUBJECTS), WINDOW, stride=5, task="expr")
    assert "v1_right" in {cache.names[s] for s in expr_windows[:, 0]}
    va_windows = cache.windows(list(SUBJECTS), WINDOW, stride=5, task="va")
    # v1_right has no VA label, and F001_T1's store entry has no va array: both VA-unlabelled
    assert {cache.names[s] for s in va_windows[:, 0]} == {"v1_left", "v2"}
    assert (~np.isnan(cache.batch(va_windows, WINDOW).va)).any(axis=(1, 2)).all()
    with pytest.raises(ValueError, match="task must be 'au', 'expr' or 'va', got 'valence'"):
        cache.windows(["v2"], WINDOW, stride=5, task="valence")


def test_a_store_entry_without_va_reads_as_va_unlabelled(stores, cache: SequenceCache) -> None:
    assert cache.subject_va("F001_T1").shape == (35, 2) and np.isnan(cache.subject_va("F001_T1")).all()
    np.testing.assert_array_equal(cache.subject_va("v2"), stores[3]["v2"]["va"])


def test_a_loader_limit_draws_a_fresh_subset_of_that_many_windows_each_epoch(cache: SequenceCache) -> None:
    windows = cache.windows(list(SUBJECTS), WINDOW, stride=3)
    loader = WindowLoader(cache, windows, WINDOW, batch_size=4, seed=0, limit=6)
    assert len(loader) == 2
    seen = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        seen.append([tuple(row) for b in loader for row in b.features[:, 0, :4].astype(np.float32).tolist()])
        assert len(seen[-1]) == 6
    assert seen[0] != seen[1]
    assert len(WindowLoader(cache, windows, WINDOW, batch_size=4, limit=len(windows) + 5)) == -(-len(windows) // 4)
    with pytest.raises(ValueError, match="limit must be >= 1 or None, got 0"):
        WindowLoader(cache, windows, WINDOW, batch_size=4, limit=0)


def test_visual_only_cache_holds_only_visual_columns(stores) -> None:
    manifest, visual, audio, raw_visual, _ = stores
    cache = load_sequence_cache(manifest, visual, audio, ["v1_left", "v2"], "visual")
    assert cache.features.shape == (45 + 20 + 1, 513)
    features = cache.subject_features("v2")
    assert features.shape == (20, 513)
    np.testing.assert_array_equal(features[:, :512], raw_visual["v2"]["embedding"].astype(np.float32))


def test_memory_estimate_matches_the_buffers(stores, cache: SequenceCache) -> None:
    manifest = stores[0]
    estimate = estimate_manifest_memory(manifest, list(SUBJECTS), "both")
    assert estimate == cache.nbytes - cache.offsets.nbytes
    assert estimate_memory_bytes(2_800_000, "both") / 2**30 == pytest.approx(5.4, abs=0.05)
    assert estimate_memory_bytes(1000, "visual") < estimate_memory_bytes(1000, "both")


def test_loader_is_deterministic_per_epoch_and_visits_every_window(cache: SequenceCache) -> None:
    pairs = cache.windows(list(SUBJECTS), WINDOW, stride=5)
    loader = WindowLoader(cache, pairs, WINDOW, batch_size=4, seed=3)

    def first_features() -> list[np.ndarray]:
        return [b.features[:, 0, 0].copy() for b in loader]

    loader.set_epoch(1)
    a = first_features()
    loader.set_epoch(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, first_features()))
    loader.set_epoch(2)
    assert not all(np.array_equal(x, y) for x, y in zip(a, first_features()))
    assert sum(len(b.features) for b in loader) == len(pairs) and len(loader) == -(-len(pairs) // 4)


def test_loader_batches_reuse_buffers_but_hold_the_right_windows(cache: SequenceCache) -> None:
    pairs = cache.windows(list(SUBJECTS), WINDOW, stride=5)
    loader = WindowLoader(cache, pairs, WINDOW, batch_size=5, shuffle=False, buffers=2)
    batches = [(b.features.copy(), b.features) for b in loader]
    for k, (copy, _) in enumerate(batches):
        np.testing.assert_array_equal(copy, cache.batch(pairs[5 * k:5 * k + 5], WINDOW).features)
    assert batches[0][1].base is batches[2][1].base  # the ring of two arrays is reused


def test_missing_entries_and_length_mismatches_are_named(stores, tmp_path: Path) -> None:
    manifest, visual, audio, _, _ = stores
    extra = SubjectRecord(name="v9", video="v9", n_frames=10, au_split="train")
    with_missing = Manifest(root="", subjects=manifest.subjects + (extra,))
    with pytest.raises(ValueError, match="v9"):
        load_sequence_cache(with_missing, visual, audio, ["v9"], "both")
    wrong = Manifest(root="", subjects=(SubjectRecord(name="v2", video="v2", n_frames=21),))
    with pytest.raises(ValueError, match="v2.*20 frames.*21"):
        load_sequence_cache(wrong, visual, audio, ["v2"], "both")
    no_audio = EmbeddingStore.open_for_write(tmp_path / "audio.zarr", "b" * 64, {"model": "t", "params": {}, "dim": 512})
    with pytest.raises(ValueError, match="video 'v2'"):
        load_sequence_cache(manifest, visual, no_audio.path, ["v2"], "both")
