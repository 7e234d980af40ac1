"""SynthConfig presets and params overrides, and the video plan built from them."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, from_dict, to_dict
from pipeline.data.synth import SynthConfig
from pipeline.data.synth.config import N_REQUIRED_VIDEOS
from pipeline.data.synth.plan import TRAIN, VALIDATION, plan_videos


def test_presets_round_trip_through_from_dict() -> None:
    for name in ("tiny", "demo"):
        cfg = SynthConfig.from_preset(name, seed=3)
        assert cfg.preset == name and cfg.seed == 3
        assert from_dict(SynthConfig, to_dict(cfg)) == cfg


def test_params_override_nested_fields_only() -> None:
    cfg = SynthConfig.from_params({"preset": "tiny", "seed": 2, "degrade": {"blur_rate": 0.2}})
    tiny = SynthConfig.from_preset("tiny")
    assert cfg.degrade.blur_rate == 0.2 and cfg.degrade.missing_rate == tiny.degrade.missing_rate
    assert cfg.video == tiny.video and cfg.seed == 2


@pytest.mark.parametrize("section, message", [
    ({"seed": 1}, "preset"),
    ({"preset": "large"}, "large"),
    ({"preset": "demo", "colour": 1}, "colour"),
    ({"preset": "demo", "video": {"fps": 3}}, "fps"),
    ({"preset": "demo", "video": 3}, "mapping"),
    ({"preset": "demo", "n_videos": 3}, "n_videos"),
    ({"preset": "demo", "degrade": {"occlusion_rate": 0.6}}, "occlusion_rate"),
    ({"preset": "demo", "video": {"frame_size": [100, 100]}}, "frame_size"),
    ({"preset": "demo", "seed": "x"}, "seed"),
])
def test_bad_params_name_the_key(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SynthConfig.from_params(section)


def test_plan_has_the_required_roles_and_exact_shares() -> None:
    cfg = SynthConfig.from_preset("demo", seed=1)
    plans = plan_videos(cfg)
    assert len(plans) == cfg.n_videos and len({p.stem for p in plans}) == len(plans)
    roles = [p.role for p in plans[:N_REQUIRED_VIDEOS]]
    assert "two_subject" in roles and "no_audio" in roles and "au_train_expr_validation" in roles
    ordinary = plans[N_REQUIRED_VIDEOS:]
    validation = [p for p in ordinary if VALIDATION in {p.subjects[0].au_split, p.subjects[0].expr_split}]
    assert len(validation) == round(cfg.video.validation_fraction * len(ordinary))
    assert sum(p.container == "avi" for p in ordinary) == round(cfg.video.avi_fraction * len(ordinary))
    assert all(s.au_split in (TRAIN, VALIDATION, None) for p in plans for s in p.subjects)
    assert sum(p.extra_lines != 0 for p in plans) == 1
    frames = sum(p.n_frames for p in plans)
    assert 7000 <= frames <= 10000, f"demo has {frames} frames"
    assert plans == plan_videos(cfg) and plans != plan_videos(SynthConfig.from_preset("demo", seed=2))
