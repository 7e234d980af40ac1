"""The log-mel frontend (paper §4.2): 64 mel bands, 10 ms window, 5 ms hop, at 16 kHz.

Mel frame ``j`` is centred on sample ``j * hop_length`` (``center=True``), i.e. at time
``start_s + j * hop_s`` of the track. Values are ``log(mel + log_offset) - log(log_offset)``: zero
for digital silence and positive otherwise, so the zeros used to pad windows past the ends of the
audio (and for videos without audio) read as silence rather than as a loud sound.

Example:
    >>> import torch
    >>> cfg = AudioConfig()
    >>> LogMel(cfg)(torch.zeros(16000)).shape          # one second -> 201 frames of 5 ms
    torch.Size([64, 201])
    >>> LogMel(cfg)(torch.zeros(2, 16000)).shape
    torch.Size([2, 64, 201])
    >>> cfg.context_frames                              # mel frames per video frame's window
    101
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torchaudio.functional import melscale_fbanks
from torchaudio.transforms import MelSpectrogram

from pipeline.config import ConfigError


@dataclass(frozen=True)
class AudioConfig:
    """Log-mel parameters and the context window given to each video frame."""

    sample_rate: int = 16000   # Hz the audio is resampled to
    n_mels: int = 64
    win_length: int = 160      # samples: 10 ms at 16 kHz
    hop_length: int = 80       # samples: 5 ms at 16 kHz
    n_fft: int = 512           # >= win_length; large enough that no mel filter is empty
    f_min: float = 0.0
    f_max: float | None = None  # None = sample_rate / 2
    context_s: float = 0.5     # seconds of audio around each video frame's presentation time
    log_offset: float = 1e-6   # added to the mel power before the log

    def __post_init__(self) -> None:
        positive = {"sample_rate": self.sample_rate, "n_mels": self.n_mels, "win_length": self.win_length,
                    "hop_length": self.hop_length, "n_fft": self.n_fft, "context_s": self.context_s,
                    "log_offset": self.log_offset}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"must be positive, got {value}", key=name)
        if self.win_length > self.n_fft:
            raise ConfigError(f"{self.win_length} must not exceed n_fft ({self.n_fft})", key="win_length")
        top = self.sample_rate / 2 if self.f_max is None else self.f_max
        if not 0 <= self.f_min < top <= self.sample_rate / 2:
            raise ConfigError(
                f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, f_max={self.f_max}",
                key="f_min" if not 0 <= self.f_min < top else "f_max",
            )

    @property
    def hop_s(self) -> float:
        """Seconds between consecutive mel frames."""
        return self.hop_length / self.sample_rate

    @property
    def context_frames(self) -> int:
        """Mel frames per video-frame window: ``context_s`` rounded to an odd count, so it has a centre."""
        return 2 * int(round(self.context_s / (2 * self.hop_s))) + 1

    @property
    def top_frequency(self) -> float:
        """Upper edge of the mel filterbank in Hz."""
        return self.sample_rate / 2 if self.f_max is None else self.f_max


def mel_filterbank(cfg: AudioConfig) -> torch.Tensor:
    """The (n_fft // 2 + 1, n_mels) triangular mel filterbank of ``cfg`` (HTK mel scale)."""
    with warnings.catch_warnings():
        # Empty filters are reported below with the offending parameters instead.
        warnings.simplefilter("ignore", UserWarning)
        return melscale_fbanks(cfg.n_fft // 2 + 1, cfg.f_min, cfg.top_frequency, cfg.n_mels, cfg.sample_rate)


class LogMel(nn.Module):
    """Waveform (..., S) at ``cfg.sample_rate`` -> log-mel (..., n_mels, S // hop_length + 1)."""

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        empty = (mel_filterbank(cfg).amax(dim=0) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"audio config: mel filters {empty} are empty with n_fft={cfg.n_fft} "
                f"({cfg.sample_rate / cfg.n_fft:.1f} Hz per FFT bin) and n_mels={cfg.n_mels}; raise n_fft"
            )
        self.cfg = cfg
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.mel = MelSpectrogram(
                sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length,
                hop_length=cfg.hop_length, f_min=cfg.f_min, f_max=cfg.f_max, n_mels=cfg.n_mels,
                power=2.0, center=True,
            )
        self.log_floor = math.log(cfg.log_offset)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Return the shifted log-mel of ``waveform`` (float32), zero for silence; empty input gives 1 frame."""
        n_samples = waveform.shape[-1]
        n_out = n_samples // self.cfg.hop_length + 1
        if n_samples <= self.cfg.n_fft // 2:
            # Reflect padding needs more samples than half an FFT; zeros past the end are silence.
            waveform = nn.functional.pad(waveform, (0, self.cfg.n_fft // 2 + 1 - n_samples))
        power = self.mel(waveform.float())[..., :n_out]
        return torch.log(power + self.cfg.log_offset) - self.log_floor
