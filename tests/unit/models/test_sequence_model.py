"""The transformer sequence model: shapes, padding masks, gradients, consistency, checkpoints."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from pipeline.model_files.sequence import build_from_checkpoint
from pipeline.models.sequence import EncoderLayer, SequenceArch, SequenceModel, arch_to_dict
from pipeline.train.alternating import multitask_step


def tiny(**overrides) -> SequenceModel:
    arch = dict(input_dim=10, d_model=16, layers=2, heads=2, dropout=0.1, max_len=12)
    arch.update(overrides)
    torch.manual_seed(0)
    return SequenceModel(SequenceArch(**arch))


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
@pytest.mark.parametrize("projection", [True, False])
def test_output_shapes_and_finite(positional: str, projection: bool) -> None:
    model = tiny(positional=positional, input_projection=projection, d_model=16 if projection else 10).eval()
    au, expr, va = model(torch.randn(3, 12, 10))
    assert au.shape == (3, 12, 12) and expr.shape == (3, 12, 7) and va.shape == (3, 12, 2)
    assert torch.isfinite(au).all() and torch.isfinite(expr).all() and (va.abs() < 1).all()


def test_forward_features_and_head_compose_forward() -> None:
    model = tiny().eval()
    x = torch.randn(2, 5, 10)
    feats = model.forward_features(x)
    assert feats.shape == (2, 5, 16)
    for a, b in zip(model.forward_head(feats), model(x)):
        torch.testing.assert_close(a, b)


def test_padded_frames_do_not_change_real_frames() -> None:
    model = tiny().eval()
    x = torch.randn(1, 7, 10)
    alone = model(x)
    padded = torch.cat([x, 100 * torch.randn(1, 5, 10)], dim=1)
    mask = torch.tensor([[False] * 7 + [True] * 5])
    with_padding = model(padded, mask)
    for a, b in zip(alone, with_padding):
        torch.testing.assert_close(a, b[:, :7], atol=1e-5, rtol=1e-5)
        assert torch.isfinite(b).all()


def test_batch_equals_items_one_by_one_in_eval() -> None:
    model = tiny().eval()
    x = torch.randn(4, 9, 10)
    mask = torch.zeros(4, 9, dtype=torch.bool)
    mask[1, 6:] = True
    au, expr, va = model(x, mask)
    for i in range(4):
        length = int((~mask[i]).sum())
        au_i, expr_i, va_i = model(x[i:i + 1, :length])
        torch.testing.assert_close(au[i:i + 1, :length], au_i, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(expr[i:i + 1, :length], expr_i, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(va[i:i + 1, :length], va_i, atol=1e-5, rtol=1e-5)


def test_every_parameter_gets_a_gradient() -> None:
    model = tiny().train()
    au, expr, va = model(torch.randn(2, 12, 10), torch.tensor([[False] * 12, [False] * 8 + [True] * 4]))
    (au.square().mean() + expr.square().mean() + va.square().mean()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_encoder_layer_computes_what_torch_transformer_layer_computes() -> None:
    torch.manual_seed(1)
    reference = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
    ours = EncoderLayer(16, 4, 32, dropout=0.0).eval()
    with torch.no_grad():
        ours.qkv.weight.copy_(reference.self_attn.in_proj_weight)
        ours.qkv.bias.copy_(reference.self_attn.in_proj_bias)
        ours.out.weight.copy_(reference.self_attn.out_proj.weight)
        ours.out.bias.copy_(reference.self_attn.out_proj.bias)
        ours.ff[0].load_state_dict(reference.linear1.state_dict())
        ours.ff[3].load_state_dict(reference.linear2.state_dict())
        ours.norm1.load_state_dict(reference.norm1.state_dict())
        ours.norm2.load_state_dict(reference.norm2.state_dict())
    x = torch.randn(3, 8, 16)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[2, 5:] = True
    expected = reference(x, src_key_padding_mask=mask)
    got = ours(x, ~mask[:, None, None, :])
    torch.testing.assert_close(got[0:2], expected[0:2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[2, :5], expected[2, :5], atol=1e-5, rtol=1e-5)


def test_alternating_step_leaves_the_inactive_head_unchanged() -> None:
    model = tiny().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    au, _, _ = model(torch.randn(2, 6, 10))
    multitask_step(model, optimizer, "au", au.mean())
    after = model.state_dict()
    assert torch.equal(before["expr_head.weight"], after["expr_head.weight"])
    assert torch.equal(before["va_head.weight"], after["va_head.weight"])
    assert not torch.equal(before["au_head.weight"], after["au_head.weight"])


def test_checkpoint_round_trip_with_weights_only() -> None:
    model = tiny(positional="sinusoidal").eval()
    buffer = io.BytesIO()
    torch.save({"arch": arch_to_dict(model.arch), "state_dict": model.state_dict()}, buffer)
    buffer.seek(0)
    loaded = build_from_checkpoint(torch.load(buffer, weights_only=True))
    x = torch.randn(1, 12, 10)
    for a, b in zip(model(x), loaded(x)):
        torch.testing.assert_close(a, b)
    assert not loaded.training


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(d_model=15), "not divisible by heads"),
        (dict(input_projection=False, d_model=16), "must equal the feature width"),
        (dict(dropout=1.0), "dropout"),
        (dict(positional="rotary"), "positional"),
        (dict(layers=0), "layers"),
    ],
)
def test_invalid_arch_is_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_inputs_of_wrong_width_or_too_long_are_refused() -> None:
    model = tiny().eval()
    with pytest.raises(ValueError, match=r"\(B, L, 10\)"):
        model(torch.randn(1, 4, 11))
    with pytest.raises(ValueError, match="max_len"):
        model(torch.randn(1, 13, 10))
