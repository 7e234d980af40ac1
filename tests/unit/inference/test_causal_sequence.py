"""The causal (low-latency) mode of the sequence model: no look-ahead, the window ending on each frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.audio.align import frame_times, window_starts
from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import audio_lookahead_s, causal_audio_delay
from pipeline.inference.features import compose_features, feature_dim
from pipeline.inference.causal import CausalStream, causal_logits, causal_window_logits, delay_audio
from pipeline.inference.sequence import SequenceRunner, sliding_window_logits, torch_run_fn
from pipeline.models.sequence import SequenceArch, SequenceModel

WINDOW = 6


def _runner(modalities: str = "both") -> SequenceRunner:
    """A tiny random transformer (every output row attends to every input row of its window)."""
    torch.manual_seed(0)
    arch = SequenceArch(input_dim=feature_dim(modalities), d_model=8, heads=2, dropout=0.0, max_len=WINDOW)
    return SequenceRunner(torch_run_fn(SequenceModel(arch)), modalities, WINDOW, stride=2)


def _inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    face = rng.random(n) > 0.2
    return {"visual": rng.normal(size=(n, 512)).astype(np.float16), "audio": rng.normal(size=(n, 512)).astype(np.float16),
            "face_present": face, "audio_present": rng.random(n) > 0.2}


def _changed_after(inputs: dict[str, np.ndarray], t: int, seed: int) -> dict[str, np.ndarray]:
    """``inputs`` with every frame after ``t`` replaced by other random frames."""
    other = _inputs(len(inputs["visual"]), seed)
    return {k: np.concatenate([v[:t + 1], other[k][t + 1:]]) for k, v in inputs.items()}


def _args(inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return inputs["visual"], inputs["audio"], inputs["face_present"], inputs["audio_present"]


@pytest.mark.parametrize("warmup", ["pad", "short"])
@pytest.mark.parametrize("t", [0, 3, WINDOW - 1, 13])
def test_a_frame_does_not_change_when_later_frames_change(warmup: str, t: int) -> None:
    runner, inputs = _runner(), _inputs(20)
    changed = _changed_after(inputs, t, seed=1)
    au, expr, va = causal_logits(runner, *_args(inputs), warmup=warmup)
    au2, expr2, va2 = causal_logits(runner, *_args(changed), warmup=warmup)
    np.testing.assert_array_equal(au[:t + 1], au2[:t + 1])
    np.testing.assert_array_equal(expr[:t + 1], expr2[:t + 1])
    np.testing.assert_array_equal(va[:t + 1], va2[:t + 1])
    assert not np.allclose(au[t + 1:], au2[t + 1:])
    assert not np.allclose(va[t + 1:], va2[t + 1:])
    # the offline mode looks ahead, so the same change moves its frame t: the property can fail
    assert not np.allclose(runner.video_logits(*_args(inputs))[0][t], runner.video_logits(*_args(changed))[0][t])


def test_a_full_window_frame_is_the_last_row_of_the_window_ending_on_it() -> None:
    runner, inputs = _runner(), _inputs(20)
    features = compose_features(*_args(inputs), "both")
    au, expr, va = causal_window_logits(runner.run_fn, features, WINDOW, batch_size=4)
    for t in range(WINDOW - 1, 20):
        window_au, window_expr, window_va = runner.run_fn(features[None, t - WINDOW + 1:t + 1])
        np.testing.assert_allclose(au[t], window_au[0, -1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(expr[t], window_expr[0, -1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(va[t], window_va[0, -1], rtol=1e-5, atol=1e-6)


def test_the_first_frames_are_padded_with_no_face_no_audio_frames_or_run_on_their_history() -> None:
    runner, inputs = _runner(), _inputs(20)
    features = compose_features(*_args(inputs), "both")
    # a frame with neither face nor audio composes to all zeros: the padding rows
    nothing = compose_features(np.ones((1, 512)), np.ones((1, 512)), np.zeros(1, bool), np.zeros(1, bool), "both")
    assert not nothing.any()
    pad_au, *_ = causal_window_logits(runner.run_fn, features, WINDOW, warmup="pad")
    short_au, *_ = causal_window_logits(runner.run_fn, features, WINDOW, warmup="short")
    for t in range(WINDOW - 1):
        padded = np.concatenate([np.zeros((WINDOW - 1 - t, features.shape[1]), np.float32), features[:t + 1]])
        np.testing.assert_allclose(pad_au[t], runner.run_fn(padded[None])[0][0, -1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(short_au[t], runner.run_fn(features[None, :t + 1])[0][0, -1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(pad_au[1], short_au[1])
    np.testing.assert_array_equal(pad_au[WINDOW - 1:], short_au[WINDOW - 1:])


@pytest.mark.parametrize("n", [1, 4, WINDOW, 17])
def test_batching_does_not_change_the_result_and_short_videos_work(n: int) -> None:
    runner = _runner()
    features = compose_features(*_args(_inputs(n)), "both")
    for warmup in ("pad", "short"):
        one = causal_window_logits(runner.run_fn, features, WINDOW, warmup, batch_size=1)
        many = causal_window_logits(runner.run_fn, features, WINDOW, warmup, batch_size=1000)
        assert one[0].shape == (n, 12) and one[1].shape == (n, 7) and one[2].shape == (n, 2)
        for one_output, many_output in zip(one, many, strict=True):
            np.testing.assert_allclose(one_output, many_output, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("warmup", ["pad", "short"])
def test_the_frame_by_frame_stream_equals_the_whole_video_run(warmup: str) -> None:
    runner, inputs = _runner(), _inputs(15)
    au, expr, va = causal_logits(runner, *_args(inputs), warmup=warmup)
    stream = CausalStream(runner, warmup)
    for t in range(15):
        step_au, step_expr, step_va = stream.push(inputs["visual"][t], inputs["audio"][t],
                                                  bool(inputs["face_present"][t]), bool(inputs["audio_present"][t]))
        np.testing.assert_allclose(step_au, au[t], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(step_expr, expr[t], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(step_va, va[t], rtol=1e-5, atol=1e-6)


def test_delayed_audio_keeps_later_audio_out_of_a_frame() -> None:
    runner, inputs, delay, t = _runner(), _inputs(20), 3, 10
    audio, present = delay_audio(inputs["audio"], inputs["audio_present"], delay)
    np.testing.assert_array_equal(audio[delay:], inputs["audio"][:-delay])
    assert not audio[:delay].any() and not present[:delay].any()
    # audio of frames t - delay + 1 .. t (read only by later frames once delayed) changes; frame t does not
    changed = dict(inputs, audio=inputs["audio"].copy())
    changed["audio"][t - delay + 1:] = 0
    base = causal_logits(runner, *_args(inputs), audio_delay=delay)[0]
    moved = causal_logits(runner, *_args(changed), audio_delay=delay)[0]
    np.testing.assert_array_equal(base[:t + 1], moved[:t + 1])
    assert not np.allclose(causal_logits(runner, *_args(inputs))[0][t], causal_logits(runner, *_args(changed))[0][t])
    with pytest.raises(ValueError, match="audio delay must be >= 0"):
        delay_audio(inputs["audio"], inputs["audio_present"], -1)


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001, 30.0, 60.0])
def test_the_audio_lookahead_bounds_what_a_frame_reads_and_the_delay_removes_it(fps: float) -> None:
    cfg = AudioConfig()
    times = frame_times(300, fps)
    starts = window_starts(times, 0.0, cfg.hop_s, cfg.context_frames)
    # the last sample a frame's window reads: its last mel frame's centre plus half the STFT window
    last_read = (starts + cfg.context_frames - 1) * cfg.hop_s + cfg.win_length / (2 * cfg.sample_rate)
    ahead = last_read - times
    assert ahead.max() <= audio_lookahead_s(cfg) + 1e-9
    assert ahead.max() > audio_lookahead_s(cfg) - cfg.hop_s     # the bound is tight (within one hop)
    delay = causal_audio_delay(cfg, fps)
    assert np.all(last_read[:-delay] <= times[delay:] + 1e-9)    # frame t's delayed audio ends by time t
    assert not np.all(last_read[:-(delay - 1)] <= times[delay - 1:] + 1e-9)   # one frame less would not


def test_bad_arguments_are_refused() -> None:
    runner = _runner()
    features = compose_features(*_args(_inputs(5)), "both")
    with pytest.raises(ValueError, match="warmup must be one of"):
        causal_window_logits(runner.run_fn, features, WINDOW, warmup="future")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="features must be"):
        causal_window_logits(runner.run_fn, features[0], WINDOW)
    with pytest.raises(ValueError, match="audio_delay=2 needs the audio"):
        causal_logits(runner, _inputs(5)["visual"], None, np.ones(5, bool), None, audio_delay=2)
    with pytest.raises(ValueError, match="warmup must be one of"):
        CausalStream(runner, "future")  # type: ignore[arg-type]


def test_the_offline_mode_is_the_sliding_window_average() -> None:
    runner, inputs = _runner(), _inputs(20)
    features = compose_features(*_args(inputs), "both")
    np.testing.assert_array_equal(runner.video_logits(*_args(inputs))[0],
                                  sliding_window_logits(runner.run_fn, features, WINDOW, 2)[0])
