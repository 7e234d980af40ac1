"""Configuration of the synthetic dataset: one frozen dataclass tree, two named presets.

The ``synth`` section of ``params.yaml`` names a preset and overrides any of its fields:

    >>> cfg = SynthConfig.from_params({"preset": "tiny", "seed": 3, "degrade": {"blur_rate": 0.1}})
    >>> cfg.seed, cfg.degrade.blur_rate, cfg.n_videos
    (3, 0.1, 7)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import ConfigError, from_dict, to_dict

# Roles every preset contains (see plan.py); the rest of the videos are ordinary ones.
N_REQUIRED_VIDEOS = 7


@dataclass(frozen=True)
class VideoConfig:
    """How the videos are sized and encoded."""

    duration_s: tuple[float, float] = (12.0, 20.0)   # per-video length range (ordinary videos)
    required_duration_s: tuple[float, float] = (6.0, 10.0)  # length range of the required-role videos
    fps_choices: tuple[float, ...] = (25.0, 30.0, 29.97)  # ordinary videos draw from these
    frame_size: tuple[int, int] = (256, 256)          # width, height of the video canvas
    avi_fraction: float = 0.2                         # share of ordinary videos written as .avi
    crf: int = 26                                     # H.264 constant rate factor (.mp4)
    avi_quality: int = 5                              # MPEG-4 part 2 qscale (.avi), 2 best .. 31 worst
    validation_fraction: float = 0.35                 # share of ordinary videos in validation
    single_task_fraction: float = 0.2                 # share of ordinary videos annotated for one task only
    two_subject_fraction: float = 0.1                 # share of ordinary videos with two faces
    mismatch_lines: int = 1          # annotation lines minus video frames of one video (pad/trim check)


@dataclass(frozen=True)
class FaceConfig:
    """Identity, pose, lighting and sensor variation of the rendered faces."""

    face_px: tuple[float, float] = (54.0, 66.0)   # half face height in video pixels (one-face videos)
    roll_deg: float = 8.0                          # pose jitter amplitudes
    yaw_deg: float = 18.0
    shift_px: float = 10.0
    scale_jitter: float = 0.06
    pose_speed_hz: float = 0.25                    # typical frequency of pose movement
    light_gain: tuple[float, float] = (0.7, 1.2)   # range of the global light level
    light_gradient: float = 0.35                   # strength of the directional light across the frame
    light_change_per_min: float = 3.0              # sudden lighting changes per minute
    noise_std: tuple[float, float] = (2.0, 7.0)    # sensor noise std (grey levels), drawn per video
    align_jitter_px: float = 1.0                   # crop alignment error (crop pixels)
    expression_gain: tuple[float, float] = (0.65, 1.15)  # per-person AU intensity multiplier range
    jpeg_quality: int = 90


@dataclass(frozen=True)
class LabelConfig:
    """Temporal behaviour (expression and AU segments) and how it is annotated."""

    expr_segment_s: tuple[float, float] = (1.2, 3.5)   # expression episode length
    neutral_gap_s: tuple[float, float] = (0.4, 2.0)    # neutral stretch between episodes
    ramp_s: tuple[float, float] = (0.15, 0.5)          # onset/offset duration
    spontaneous_au_per_min: float = 14.0               # AU events outside expressions
    au_threshold: float = 0.35                         # drawn intensity at which an AU is labelled present
    expr_threshold: float = 0.3                        # episode intensity at which the expression is labelled
    boundary_jitter_frames: int = 3                    # annotator onset/offset error
    au_flip_rate: float = 0.01                         # share of AU label cells flipped (in short runs)
    expr_swap_rate: float = 0.05                       # share of expression episodes given a wrong label
    unlabelled_rate: float = 0.06                      # share of frames in -1 stretches (per task)
    va_drift_std: float = 0.1                          # std of the slow drift of valence and of arousal
    va_drift_s: float = 5.0                            # time constant of that drift (s)
    va_noise_std: float = 0.03                         # annotator jitter of the VA joystick (std)
    va_voice_gain: float = 0.3                         # arousal a loud, high voice adds at most


@dataclass(frozen=True)
class DegradeConfig:
    """Frames whose face is occluded, blurred or not found (labels continue through them)."""

    occlusion_rate: float = 0.06   # share of frames with part of the face covered
    blur_rate: float = 0.05        # share of frames with motion/focus blur
    missing_rate: float = 0.05     # share of frames without a face crop
    event_s: tuple[float, float] = (0.3, 1.2)  # length of one degradation event


@dataclass(frozen=True)
class AudioConfig:
    """Speech-like audio track whose prosody follows the speaker's expression."""

    sample_rates: tuple[int, ...] = (16000, 22050)  # cycled over the videos
    speech_fraction: float = 0.8    # share of time inside phrases (rest are pauses)
    snr_db: float = 20.0            # speech to background noise ratio
    prosody_strength: float = 1.0   # 0 removes the expression dependence of the voice


@dataclass(frozen=True)
class BP4DConfig:
    """The small BP4D-layout image set written under ``<out>/BP4D``."""

    subjects: int = 3
    tasks: int = 2
    frames: int = 120          # frames per subject/task sequence
    not_coded_rate: float = 0.05  # share of frames coded 9 (not coded)


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines the synthetic dataset; same config, same bytes."""

    preset: str = "demo"
    seed: int = 0
    n_videos: int = 22
    video: VideoConfig = field(default_factory=VideoConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    bp4d: BP4DConfig = field(default_factory=BP4DConfig)

    def __post_init__(self) -> None:
        if self.n_videos < N_REQUIRED_VIDEOS:
            raise ConfigError(f"must be at least {N_REQUIRED_VIDEOS}, got {self.n_videos}", key="n_videos")
        for name in ("occlusion_rate", "blur_rate", "missing_rate"):
            value = getattr(self.degrade, name)
            if not 0.0 <= value < 0.5:
                raise ConfigError(f"must be in [0, 0.5), got {value}", key=f"degrade.{name}")
        if sum(getattr(self.degrade, n) for n in ("occlusion_rate", "blur_rate", "missing_rate")) >= 0.8:
            raise ConfigError("the rates together must stay below 0.8", key="degrade")
        width, height = self.video.frame_size
        if width < 128 or height < 128 or width % 2 or height % 2:
            raise ConfigError(f"must be even and at least 128, got {self.video.frame_size}", key="video.frame_size")
        for name in ("va_drift_std", "va_noise_std", "va_voice_gain"):
            value = getattr(self.labels, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"must be in [0, 1], got {value}", key=f"labels.{name}")
        if self.labels.va_drift_s <= 0:
            raise ConfigError(f"must be positive, got {self.labels.va_drift_s}", key="labels.va_drift_s")
        if not self.audio.sample_rates:
            raise ConfigError("must not be empty", key="audio.sample_rates")
        if not self.video.fps_choices or min(self.video.fps_choices) <= 0:
            raise ConfigError(f"must be positive, got {self.video.fps_choices}", key="video.fps_choices")

    @classmethod
    def from_preset(cls, name: str, seed: int = 0) -> "SynthConfig":
        """Return preset ``"tiny"`` (tests, seconds) or ``"demo"`` (the default pipeline run)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown synth preset {name!r}; known presets are {sorted(PRESETS)}")
        return from_dict(cls, {**copy.deepcopy(PRESETS[name]), "preset": name, "seed": seed},
                         where=f"preset {name}")

    @classmethod
    def from_params(cls, section: dict[str, Any], where: str = "params:synth") -> "SynthConfig":
        """Build from a params section: ``preset`` (required) plus any overrides of its fields."""
        if not isinstance(section, dict) or "preset" not in section:
            raise ConfigError(f"{where}: needs a 'preset' key (one of {sorted(PRESETS)})")
        preset = section["preset"]
        if preset not in PRESETS:
            raise ConfigError(f"{where}.preset: unknown preset {preset!r}; known presets are {sorted(PRESETS)}")
        base = to_dict(cls.from_preset(preset, seed=0))
        return from_dict(cls, _merge(base, section, where), where=where)


def _merge(base: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base``; unknown keys are reported with their path."""
    merged = dict(base)
    for key, value in overrides.items():
        if key not in base:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys are {sorted(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a mapping, got {value!r}")
            merged[key] = _merge(base[key], value, f"{where}.{key}")
        else:
            merged[key] = value
    return merged


# Presets are plain dicts of overrides on the dataclass defaults (which are the demo values).
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {},
    "tiny": {
        "n_videos": 7,
        "video": {"duration_s": [2.0, 3.0], "required_duration_s": [2.0, 3.2]},
        "bp4d": {"subjects": 2, "tasks": 1, "frames": 30},
        "labels": {"expr_segment_s": [0.6, 1.4], "neutral_gap_s": [0.2, 0.6]},
        # tiny videos are short: raise the rates so every degradation surely occurs
        "degrade": {"occlusion_rate": 0.1, "blur_rate": 0.08, "missing_rate": 0.1, "event_s": [0.2, 0.5]},
    },
}
