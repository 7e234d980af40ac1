"""Log-mel frontend: shapes, silence is zero, tones land in the right band, no empty mel filter, batch consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.audio.features import AudioConfig, LogMel, mel_filterbank


def _tone(hz: float, seconds: float = 0.5, rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return 0.5 * torch.sin(2 * torch.pi * hz * t)


def test_paper_parameters_are_the_defaults() -> None:
    cfg = AudioConfig()
    assert (cfg.sample_rate, cfg.n_mels, cfg.win_length, cfg.hop_length) == (16000, 64, 160, 80)
    assert cfg.win_length / cfg.sample_rate == pytest.approx(0.010)
    assert cfg.hop_s == pytest.approx(0.005)


def test_no_mel_filter_is_empty_with_the_default_fft() -> None:
    bank = mel_filterbank(AudioConfig())
    assert bank.shape == (257, 64)
    assert (bank.amax(dim=0) > 0).all()


def test_too_small_fft_is_refused_naming_n_fft() -> None:
    with pytest.raises(ValueError, match="n_fft=160"):
        LogMel(AudioConfig(n_fft=160))


@pytest.mark.parametrize("n_samples", [1, 100, 256, 257, 16000, 16079])
def test_frame_count(n_samples: int) -> None:
    mel = LogMel(AudioConfig())(torch.zeros(n_samples))
    assert mel.shape == (64, n_samples // 80 + 1)


def test_silence_is_zero_and_sound_positive() -> None:
    logmel = LogMel(AudioConfig())
    assert torch.equal(logmel(torch.zeros(4000)), torch.zeros(64, 51))
    assert (logmel(_tone(440.0)) >= 0).all()
    assert logmel(_tone(440.0)).max() > 10


@pytest.mark.parametrize("hz", [300.0, 1000.0, 4000.0])
def test_tone_peaks_in_its_band(hz: float) -> None:
    cfg = AudioConfig()
    mel = LogMel(cfg)(_tone(hz))
    band = int(mel[:, 10:-10].mean(dim=1).argmax())
    bank = mel_filterbank(cfg)
    freqs = torch.linspace(0, cfg.sample_rate / 2, bank.shape[0])
    centre = float(freqs[bank[:, band].argmax()])
    assert centre == pytest.approx(hz, rel=0.15)


def test_batch_equals_items_one_by_one() -> None:
    logmel = LogMel(AudioConfig())
    gen = torch.Generator().manual_seed(0)
    batch = torch.randn(3, 4000, generator=gen) * 0.1
    together = logmel(batch)
    assert together.shape == (3, 64, 51)
    for i in range(3):
        torch.testing.assert_close(together[i], logmel(batch[i]))


@pytest.mark.parametrize("context_s,frames", [(0.5, 101), (1.0, 201), (0.25, 51), (0.001, 1)])
def test_context_frames_is_odd_and_matches_seconds(context_s: float, frames: int) -> None:
    assert AudioConfig(context_s=context_s).context_frames == frames


@pytest.mark.parametrize("bad,match", [
    ({"win_length": 600}, "win_length"),
    ({"hop_length": 0}, "hop_length"),
    ({"log_offset": 0.0}, "log_offset"),
    ({"f_max": 9000.0}, "f_max"),
])
def test_bad_config_names_the_value(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AudioConfig(**bad)


def test_output_is_finite_for_loud_input() -> None:
    mel = LogMel(AudioConfig())(torch.from_numpy(np.sign(np.random.default_rng(0).normal(size=8000))).float())
    assert torch.isfinite(mel).all()
