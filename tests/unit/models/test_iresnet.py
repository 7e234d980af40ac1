"""IResNet: arcface_torch state-dict compatibility, the reference function, and timm-style checks."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.iresnet import DEPTHS, IBasicBlock, iresnet18, iresnet34, iresnet50, iresnet100
from pipeline.models.registry import create_backbone, list_backbones, register_backbone
from _arcface_reference import FIXTURES, bn_eval, read_key_list, reference_forward, seeded_input, seeded_state_dict

CONSTRUCTORS = {"iresnet18": iresnet18, "iresnet34": iresnet34, "iresnet50": iresnet50, "iresnet100": iresnet100}

# Written down from insightface recognition/arcface_torch/backbones/iresnet.py.
ARCFACE_BLOCKS = {"iresnet18": [2, 2, 2, 2], "iresnet34": [3, 4, 6, 3], "iresnet50": [3, 4, 14, 3], "iresnet100": [3, 13, 30, 3]}
ARCFACE_KEY_COUNTS = {"iresnet18": 187, "iresnet34": 331, "iresnet50": 475, "iresnet100": 925}
ARCFACE_SAMPLES = {
    "conv1.weight": (64, 3, 3, 3),
    "prelu.weight": (64,),
    "layer1.0.bn1.running_var": (64,),
    "layer1.0.downsample.0.weight": (64, 64, 1, 1),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.conv2.weight": (128, 128, 3, 3),
    "layer4.1.prelu.weight": (512,),
    "bn2.num_batches_tracked": (),
    "fc.weight": (512, 25088),
    "fc.bias": (512,),
    "features.running_mean": (512,),
}


def _bn(prefix: str, ch: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.{n}", (ch,)) for n in ("weight", "bias", "running_mean", "running_var")] + [
        (f"{prefix}.num_batches_tracked", ())
    ]


def arcface_spec(blocks: list[int]) -> list[tuple[str, tuple[int, ...]]]:
    """Keys and shapes, in order, of arcface_torch's IResNet with these block counts."""
    spec = [("conv1.weight", (64, 3, 3, 3)), *_bn("bn1", 64), ("prelu.weight", (64,))]
    inplanes = 64
    for stage, (n, planes) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for i in range(n):
            p = f"layer{stage}.{i}"
            cin = inplanes if i == 0 else planes
            spec += [*_bn(f"{p}.bn1", cin), (f"{p}.conv1.weight", (planes, cin, 3, 3)), *_bn(f"{p}.bn2", planes)]
            spec += [(f"{p}.prelu.weight", (planes,)), (f"{p}.conv2.weight", (planes, planes, 3, 3)), *_bn(f"{p}.bn3", planes)]
            if i == 0:  # every stage starts with stride 2, so its first block always downsamples
                spec += [(f"{p}.downsample.0.weight", (planes, cin, 1, 1)), *_bn(f"{p}.downsample.1", planes)]
        inplanes = planes
    spec += [*_bn("bn2", 512), ("fc.weight", (512, 512 * 7 * 7)), ("fc.bias", (512,)), *_bn("features", 512)]
    return spec


@pytest.mark.parametrize("name", list(CONSTRUCTORS))
def test_state_dict_matches_arcface_torch_keys_and_shapes(name: str) -> None:
    state = CONSTRUCTORS[name]().state_dict()
    got = [(k, tuple(v.shape)) for k, v in state.items()]
    assert got == arcface_spec(ARCFACE_BLOCKS[name])
    assert len(got) == ARCFACE_KEY_COUNTS[name]
    for key, shape in ARCFACE_SAMPLES.items():
        assert tuple(state[key].shape) == shape
    assert list(DEPTHS[name]) == ARCFACE_BLOCKS[name]


@pytest.mark.parametrize("name", ["iresnet18", "iresnet50"])
def test_state_dict_is_the_committed_arcface_torch_key_list(name: str) -> None:
    spec = read_key_list(FIXTURES / f"{name}_keys.txt")
    assert [(k, tuple(v.shape)) for k, v in CONSTRUCTORS[name]().state_dict().items()] == spec


def test_arcface_torch_checkpoint_loads_strictly_and_computes_the_committed_outputs() -> None:
    fixture = json.loads((FIXTURES / "iresnet18_forward.json").read_text())
    checkpoint = seeded_state_dict(read_key_list(FIXTURES / "iresnet18_keys.txt"), fixture["weight_seed"])
    net = iresnet18()
    net.load_state_dict(checkpoint, strict=True)
    with torch.no_grad():
        out = net.eval()(seeded_input(fixture["input_seed"]))
    expected = torch.tensor(fixture["embedding"])
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_embedding_bn_scale_is_frozen_at_one() -> None:
    net = iresnet18(width_mult=0.125)
    assert not net.features.weight.requires_grad
    assert torch.all(net.features.weight == 1.0)
    assert all(m.eps == 1e-05 for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


def _randomise_bn_statistics(net: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0.0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.bias.data.normal_(0.0, 0.1, generator=generator)
        if isinstance(module, torch.nn.PReLU):
            module.weight.data.uniform_(0.0, 0.5, generator=generator)


def test_block_matches_hand_built_reference() -> None:
    torch.manual_seed(0)
    block = IBasicBlock(8, 16, stride=2).eval()
    _randomise_bn_statistics(block, 1)
    sd = {f"layer1.0.{k}": v for k, v in block.state_dict().items()}
    x = torch.randn(2, 8, 14, 14)
    p = "layer1.0"
    out = F.conv2d(bn_eval(x, sd, f"{p}.bn1"), sd[f"{p}.conv1.weight"], padding=1)
    out = F.prelu(bn_eval(out, sd, f"{p}.bn2"), sd[f"{p}.prelu.weight"])
    out = bn_eval(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=2, padding=1), sd, f"{p}.bn3")
    identity = bn_eval(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=2), sd, f"{p}.downsample.1")
    with torch.no_grad():
        torch.testing.assert_close(block(x), out + identity, rtol=1e-5, atol=1e-5)
    assert IBasicBlock(16, 16).downsample is None


def test_whole_network_computes_the_reference_function() -> None:
    torch.manual_seed(0)
    net = iresnet18(width_mult=1.0).eval()
    _randomise_bn_statistics(net, 2)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference_forward(net.state_dict(), x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("name", "width"), [("iresnet18", 0.125), ("iresnet34", 0.0625), ("iresnet50", 0.0625), ("iresnet100", 0.03125)])
def test_output_shape_no_nan_and_every_trainable_param_gets_a_gradient(name: str, width: float) -> None:
    torch.manual_seed(0)
    net = CONSTRUCTORS[name](width_mult=width, dropout=0.1).train()
    out = net(torch.randn(3, 3, 112, 112))
    assert out.shape == (3, 512) and torch.isfinite(out).all()
    out.square().mean().backward()
    for key, param in net.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), key
            assert param.grad.abs().sum() > 0, key
        else:
            assert key == "features.weight"


def test_batch_equals_items_one_at_a_time_in_eval_mode() -> None:
    torch.manual_seed(0)
    net = iresnet18(width_mult=0.125, dropout=0.5).eval()
    _randomise_bn_statistics(net, 3)
    x = torch.randn(4, 3, 112, 112)
    with torch.no_grad():
        batch = net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)


def test_width_mult_scales_channels_and_keeps_512_embedding() -> None:
    state = iresnet18(width_mult=0.25).state_dict()
    assert tuple(state["conv1.weight"].shape) == (16, 3, 3, 3)
    assert tuple(state["layer4.0.conv2.weight"].shape) == (128, 128, 3, 3)
    assert tuple(state["fc.weight"].shape) == (512, 128 * 49)


@pytest.mark.parametrize("kwargs", [{"width_mult": 0.0}, {"dropout": 1.0}, {"dropout": -0.1}])
def test_bad_constructor_arguments_are_named(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        iresnet18(**kwargs)


def test_registry_builds_by_name_and_refuses_duplicates() -> None:
    assert {"iresnet18", "iresnet34", "iresnet50", "iresnet100"} <= set(list_backbones())
    net = create_backbone("iresnet34", width_mult=0.0625)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("iresnet18")(iresnet18)
    with pytest.raises(ValueError, match="unknown backbone 'resnet9'"):
        create_backbone("resnet9")
    with pytest.raises(ValueError, match="does not accept"):
        create_backbone("iresnet18", depth=3)
