"""Feature composition and whole-video sliding-window inference of the sequence model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.inference.features import compose_features, feature_dim, feature_layout
from pipeline.inference.sequence import (
    load_sequence_runner, sliding_window_logits, torch_run_fn, window_starts,
)


def start_marking_run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every frame of a window gets the window's first frame number (feature 0) as its logits, and
    a hundredth of it as its valence (arousal: minus that)."""
    first = batch[:, :1, :1]
    au = np.broadcast_to(first, batch.shape[:2] + (12,)).astype(np.float32)
    expr = np.broadcast_to(-first, batch.shape[:2] + (7,)).astype(np.float32)
    va = np.broadcast_to(np.concatenate([first, -first], axis=-1) / 100, batch.shape[:2] + (2,)).astype(np.float32)
    return au, expr, va


def frame_index_features(n: int, dim: int = 3) -> np.ndarray:
    features = np.zeros((n, dim), np.float32)
    features[:, 0] = np.arange(n)
    return features


def make_linear_run(weights_au: np.ndarray, weights_expr: np.ndarray, weights_va: np.ndarray):
    """A frame-wise linear 'model' in numpy: the windowed average must equal it exactly."""
    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return batch @ weights_au, batch @ weights_expr, batch @ weights_va
    return run


def test_average_of_overlapping_windows_on_a_hand_example() -> None:
    # 5 frames, windows of 3 every 2 frames: [0, 1, 2] and [2, 3, 4]; frame 2 is in both.
    au, expr, va = sliding_window_logits(start_marking_run, frame_index_features(5), window=3, stride=2)
    np.testing.assert_array_equal(au[:, 0], [0, 0, 1, 2, 2])
    np.testing.assert_array_equal(expr[:, 0], [0, 0, -1, -2, -2])
    np.testing.assert_allclose(va, [[0, 0], [0, 0], [0.01, -0.01], [0.02, -0.02], [0.02, -0.02]], atol=1e-7)
    assert au.shape == (5, 12) and expr.shape == (5, 7) and va.shape == (5, 2)
    assert au.dtype == va.dtype == np.float32


def test_tail_window_ends_on_the_last_frame() -> None:
    assert window_starts(100, 30, 25).tolist() == [0, 25, 50, 70]
    au, _, va = sliding_window_logits(start_marking_run, frame_index_features(100), window=30, stride=25)
    # frames 95..99 are only in the tail window that starts at 70
    np.testing.assert_array_equal(au[95:, 0], 70)
    # frame 72 is in windows 50 and 70: its logits and its VA are their means
    assert au[72, 0] == pytest.approx(60.0)
    assert va[72].tolist() == pytest.approx([0.6, -0.6])


def test_short_video_is_one_window_of_its_own_length() -> None:
    lengths = []

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lengths.append(batch.shape[1])
        return start_marking_run(batch)

    au, expr, va = sliding_window_logits(run, frame_index_features(7), window=30, stride=10)
    assert au.shape == (7, 12) and expr.shape == (7, 7) and va.shape == (7, 2)
    assert lengths == [7]
    assert np.isfinite(au).all()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 120), window=st.integers(1, 40), stride=st.integers(1, 50), batch=st.integers(1, 9))
def test_every_frame_is_predicted_and_frame_wise_models_are_exact(n: int, window: int, stride: int, batch: int) -> None:
    rng = np.random.default_rng(n * 1000 + window)
    features = rng.normal(size=(n, 5)).astype(np.float32)
    w_au, w_expr = rng.normal(size=(5, 12)).astype(np.float32), rng.normal(size=(5, 7)).astype(np.float32)
    w_va = rng.normal(size=(5, 2)).astype(np.float32)
    au, expr, va = sliding_window_logits(make_linear_run(w_au, w_expr, w_va), features, window, stride,
                                         batch_size=batch)
    np.testing.assert_allclose(au, features @ w_au, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(expr, features @ w_expr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(va, features @ w_va, rtol=1e-5, atol=1e-5)
    starts = window_starts(n, window, stride)
    covered = np.zeros(n, bool)
    for start in starts:
        covered[start:start + window] = True
    assert covered.all()


def test_batching_of_windows_does_not_change_the_result() -> None:
    features = frame_index_features(53)
    one = sliding_window_logits(start_marking_run, features, window=10, stride=3, batch_size=1)
    many = sliding_window_logits(start_marking_run, features, window=10, stride=3, batch_size=1000)
    for one_output, many_output in zip(one, many, strict=True):
        np.testing.assert_array_equal(one_output, many_output)


def test_torch_and_numpy_run_fns_agree() -> None:
    torch.manual_seed(0)
    heads = torch.nn.Linear(6, 21)

    class FrameWise(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            y = heads(x)
            return y[..., :12], y[..., 12:19], torch.tanh(y[..., 19:])

    weight, bias = heads.weight.detach().numpy().T, heads.bias.detach().numpy()

    def numpy_run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = batch @ weight + bias
        return y[..., :12], y[..., 12:19], np.tanh(y[..., 19:])

    features = np.random.default_rng(1).normal(size=(77, 6)).astype(np.float32)
    from_torch = sliding_window_logits(torch_run_fn(FrameWise()), features, window=16, stride=5)
    from_numpy = sliding_window_logits(numpy_run, features, window=16, stride=5)
    for torch_output, numpy_output in zip(from_torch, from_numpy, strict=True):
        np.testing.assert_allclose(torch_output, numpy_output, atol=1e-5)


def test_run_fn_with_wrong_output_shape_is_an_error() -> None:
    def bad(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.zeros(batch.shape[:2] + (11,)), np.zeros(batch.shape[:2] + (7,)), np.zeros(batch.shape[:2] + (2,))

    with pytest.raises(ValueError, match="expected"):
        sliding_window_logits(bad, frame_index_features(10), window=4, stride=2)


def test_a_run_fn_of_a_model_without_the_va_head_is_refused_in_one_line() -> None:
    def two_outputs(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(batch.shape[:2] + (12,)), np.zeros(batch.shape[:2] + (7,))

    with pytest.raises(ValueError, match="before the valence-arousal head") as info:
        sliding_window_logits(two_outputs, frame_index_features(10), window=4, stride=2)
    assert "\n" not in str(info.value)


def test_window_averaged_va_stays_in_its_range() -> None:
    rng = np.random.default_rng(3)

    def tanh_run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # every window gives each frame a different value in [-1, 1], so the average mixes them
        va = np.tanh(rng.normal(scale=3.0, size=batch.shape[:2] + (2,)))
        return np.zeros(batch.shape[:2] + (12,)), np.zeros(batch.shape[:2] + (7,)), va

    _, _, va = sliding_window_logits(tanh_run, frame_index_features(90), window=30, stride=5)
    assert va.shape == (90, 2) and np.abs(va).max() <= 1.0


@pytest.mark.parametrize("bad", [dict(window=0, stride=1), dict(window=3, stride=0)])
def test_window_and_stride_must_be_positive(bad: dict) -> None:
    with pytest.raises(ValueError, match="window and stride"):
        sliding_window_logits(start_marking_run, frame_index_features(10), **bad)


def test_compose_both_layout_and_missing_modalities_are_zeroed() -> None:
    visual = np.full((4, 512), 2.0, np.float16)
    audio = np.full((4, 512), 3.0, np.float16)
    face = np.array([True, False, True, True])
    voice = np.array([True, True, False, True])
    features = compose_features(visual, audio, face, voice, "both")
    assert features.shape == (4, 1026) and features.dtype == np.float32
    assert feature_dim("both") == 1026
    blocks = {b["name"]: slice(b["start"], b["stop"]) for b in feature_layout("both")}
    assert list(blocks) == ["visual", "face_present", "audio", "audio_present"]
    np.testing.assert_array_equal(features[:, blocks["face_present"]][:, 0], face)
    np.testing.assert_array_equal(features[:, blocks["audio_present"]][:, 0], voice)
    assert (features[1, blocks["visual"]] == 0).all() and (features[0, blocks["visual"]] == 2).all()
    assert (features[2, blocks["audio"]] == 0).all() and (features[3, blocks["audio"]] == 3).all()


def test_compose_single_modality_ignores_the_other_and_keeps_leading_shape() -> None:
    visual = np.ones((2, 5, 512), np.float16)
    present = np.ones((2, 5), bool)
    features = compose_features(visual, None, present, None, "visual")
    assert features.shape == (2, 5, 513)
    assert compose_features(None, visual, None, present, "audio").shape == (2, 5, 513)
    assert compose_features(None, visual, None, present, "audio", dtype=np.float16).dtype == np.float16


def test_compose_rejects_bad_inputs() -> None:
    visual = np.ones((4, 512), np.float16)
    with pytest.raises(ValueError, match="modalities"):
        compose_features(visual, visual, np.ones(4, bool), np.ones(4, bool), "video")
    with pytest.raises(ValueError, match="audio embedding or audio_present is None"):
        compose_features(visual, None, np.ones(4, bool), None, "both")
    with pytest.raises(ValueError, match="do not match"):
        compose_features(visual, None, np.ones(3, bool), None, "visual")
    with pytest.raises(ValueError, match="do not match"):
        compose_features(visual, np.ones((5, 512)), np.ones(4, bool), np.ones(5, bool), "both")


def _sequence_checkpoint(path: Path, **layout: object) -> Path:
    """A tiny ``train-sequence``-style ``model.pt`` whose layout keys are ``layout``."""
    from pipeline.models.sequence import SequenceArch, SequenceModel, arch_to_dict

    torch.manual_seed(0)
    arch = SequenceArch(input_dim=feature_dim("visual"), d_model=8, heads=2, dropout=0.0, max_len=6)
    torch.save({"arch": arch_to_dict(arch), "state_dict": SequenceModel(arch).state_dict(), **layout}, path)
    return path


def test_sequence_runner_predicts_every_frame_of_a_video(tmp_path: Path) -> None:
    runner = load_sequence_runner(_sequence_checkpoint(tmp_path / "model.pt", modalities="visual", window=6,
                                                       stride=3), device="cpu")
    assert (runner.modalities, runner.window, runner.stride, runner.uses_audio()) == ("visual", 6, 3, False)
    visual, present = np.random.default_rng(0).normal(size=(20, 512)).astype(np.float16), np.ones(20, bool)
    au, expr, va = runner.video_logits(visual, None, present, None)
    expected = sliding_window_logits(runner.run_fn, compose_features(visual, None, present, None, "visual"), 6, 3)
    assert au.shape == (20, 12) and expr.shape == (20, 7) and va.shape == (20, 2)
    np.testing.assert_array_equal(au, expected[0])
    np.testing.assert_array_equal(va, expected[2])
    assert np.abs(va).max() <= 1.0


def test_sequence_runner_refuses_a_checkpoint_made_before_the_va_head(tmp_path: Path) -> None:
    path = _sequence_checkpoint(tmp_path / "model.pt", modalities="visual", window=6, stride=3)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("va_head.")}
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r"model\.pt: .*va_head.*train it again with train-sequence"):
        load_sequence_runner(path, device="cpu")


def test_sequence_runner_refuses_a_file_without_its_layout(tmp_path: Path) -> None:
    path = _sequence_checkpoint(tmp_path / "model.pt", modalities="visual")
    with pytest.raises(ValueError, match=r"model\.pt: lacks \['window', 'stride'\] \(re-run train-sequence\)"):
        load_sequence_runner(path, device="cpu")
    with pytest.raises(ValueError, match="modalities must be one of"):
        load_sequence_runner(_sequence_checkpoint(tmp_path / "odd.pt", modalities="smell", window=6, stride=3), "cpu")
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx \(run train-sequence first\)"):
        load_sequence_runner(tmp_path / "missing.onnx", device="cpu")
