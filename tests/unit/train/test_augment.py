"""Augmentation: layouts and dtypes, determinism, and what each operation preserves."""

from __future__ import annotations

import pytest
import torch

from pipeline.train.augment import AugmentConfig, augment_batch

OFF = AugmentConfig(flip_prob=0.0, crop_scale=0.0, hue=0.0, saturation=0.0, lightness=0.0)


def _images(seed: int = 0, batch: int = 4) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 112, 112, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_layout_and_dtype_are_kept() -> None:
    images = _images()
    out = augment_batch(images, AugmentConfig(), _gen(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    floats = images.permute(0, 3, 1, 2).float() / 255
    out_f = augment_batch(floats, AugmentConfig(), _gen(0))
    assert out_f.shape == (4, 3, 112, 112) and out_f.dtype == torch.float32
    assert out_f.min() >= 0.0 and out_f.max() <= 1.0
    # both layouts get the same augmentation from the same seed
    assert (out_f.permute(0, 2, 3, 1) * 255 - out.float()).abs().max() <= 0.5 + 1e-3


def test_same_seed_same_output_other_seed_differs() -> None:
    images = _images()
    a = augment_batch(images, AugmentConfig(), _gen(7))
    b = augment_batch(images, AugmentConfig(), _gen(7))
    c = augment_batch(images, AugmentConfig(), _gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, images)


def test_all_off_is_the_identity() -> None:
    images = _images()
    assert OFF.is_identity
    assert torch.equal(augment_batch(images, OFF, _gen(0)), images)


def test_flip_only_flips_exactly() -> None:
    images = _images()
    out = augment_batch(images, AugmentConfig(flip_prob=1.0, crop_scale=0, hue=0, saturation=0, lightness=0), _gen(0))
    assert torch.equal(out, images.flip(2))


def test_flip_probability_is_respected_per_image() -> None:
    images = _images(batch=64)
    config = AugmentConfig(flip_prob=0.5, crop_scale=0, hue=0, saturation=0, lightness=0)
    out = augment_batch(images, config, _gen(1))
    flipped = [torch.equal(o, i.flip(1)) for o, i in zip(out, images)]
    kept = [torch.equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 16 < sum(flipped) < 48


def test_crop_zooms_in_and_keeps_flat_images_flat() -> None:
    flat = torch.full((2, 112, 112, 3), 90, dtype=torch.uint8)
    crop_only = AugmentConfig(flip_prob=0, crop_scale=0.2, hue=0, saturation=0, lightness=0)
    assert torch.equal(augment_batch(flat, crop_only, _gen(0)), flat)
    # a centred square grows when the image is zoomed in
    square = torch.zeros(1, 3, 112, 112)
    square[:, :, 46:66, 46:66] = 1.0
    out = augment_batch(square, AugmentConfig(flip_prob=0, crop_scale=0.2, hue=0, saturation=0, lightness=0), _gen(3))
    assert (out > 0.5).sum() > (square > 0.5).sum()


def test_colour_jitter_keeps_gray_gray_and_hue_keeps_luma() -> None:
    gray = torch.full((3, 3, 112, 112), 0.4)
    sat_hue = AugmentConfig(flip_prob=0, crop_scale=0, hue=0.3, saturation=0.9, lightness=0)
    out = augment_batch(gray, sat_hue, _gen(0))
    torch.testing.assert_close(out, gray, atol=1e-5, rtol=0)
    colour = torch.tensor([0.6, 0.4, 0.3])[None, :, None, None].expand(2, 3, 4, 4).contiguous()
    out = augment_batch(colour, AugmentConfig(flip_prob=0, crop_scale=0, hue=0.1, saturation=0, lightness=0), _gen(0))
    luma = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]
    torch.testing.assert_close((out * luma).sum(1), (colour * luma).sum(1), atol=1e-5, rtol=0)
    assert not torch.allclose(out, colour, atol=1e-3)


def test_lightness_scales_brightness() -> None:
    gray = torch.full((8, 3, 4, 4), 0.5)
    out = augment_batch(gray, AugmentConfig(flip_prob=0, crop_scale=0, hue=0, saturation=0, lightness=0.2), _gen(0))
    factors = out[:, 0, 0, 0] / 0.5
    assert torch.all((factors >= 0.8 - 1e-6) & (factors <= 1.2 + 1e-6))
    assert factors.std() > 0


@pytest.mark.parametrize("kwargs", [{"flip_prob": 1.5}, {"crop_scale": 0.6}, {"hue": -0.1}, {"lightness": 2.0}])
def test_bad_config_names_the_field(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AugmentConfig(**kwargs)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        augment_batch(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), AugmentConfig(), _gen(0))
    with pytest.raises(ValueError, match="4-d"):
        augment_batch(torch.zeros(3, 8, 8), AugmentConfig(), _gen(0))
    with pytest.raises(ValueError, match="uint8 or floating"):
        augment_batch(torch.zeros(1, 3, 8, 8, dtype=torch.int32), AugmentConfig(), _gen(0))
