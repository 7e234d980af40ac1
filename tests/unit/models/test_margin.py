"""Margin softmax heads: CosFace/ArcFace margins on the target logit, Partial-FC class sampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.margin import MarginSoftmax, chance_loss, margin_logits, sample_classes


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_cosface_lowers_only_the_target_logit_by_m_times_s() -> None:
    cos = torch.rand(5, 7, generator=_gen()) * 2 - 1
    labels = torch.tensor([0, 3, 6, 3, 1])
    plain = margin_logits(cos, labels, "cosface", s=64.0, m=0.0)
    with_margin = margin_logits(cos, labels, "cosface", s=64.0, m=0.4)
    diff = plain - with_margin
    expected = torch.zeros(5, 7)
    expected[torch.arange(5), labels] = 0.4 * 64.0
    assert torch.allclose(diff, expected, atol=1e-4)
    assert torch.allclose(plain, 64.0 * cos)


def test_arcface_adds_the_margin_to_the_angle() -> None:
    cos = torch.tensor([[0.8, 0.1], [-0.95, 0.3]])
    logits = margin_logits(cos, torch.tensor([0, 0]), "arcface", s=10.0, m=0.5)
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(math.acos(0.8) + 0.5), abs=1e-5)
    # theta past pi - m: linear continuation, still below the margin-free logit and decreasing in theta
    assert logits[1, 0].item() == pytest.approx(10 * (-0.95 - math.sin(math.pi - 0.5) * 0.5), abs=1e-5)
    assert logits[0, 1].item() == pytest.approx(1.0) and logits[1, 1].item() == pytest.approx(3.0)
    thetas = torch.linspace(0.01, math.pi - 0.01, 200)
    target = margin_logits(torch.cos(thetas)[:, None], torch.zeros(200, dtype=torch.long), "arcface", 1.0, 0.5)
    assert bool((target[1:, 0] < target[:-1, 0]).all())


def test_sampling_keeps_every_positive_and_renumbers_labels() -> None:
    labels = torch.tensor([3, 999, 3, 512, 7])
    index, local = sample_classes(labels, 1000, 0.05, _gen(1))
    assert index.numel() == 50 and bool((index[1:] > index[:-1]).all())
    assert set(labels.tolist()) <= set(index.tolist())
    assert torch.equal(index[local], labels)
    again, _ = sample_classes(labels, 1000, 0.05, _gen(1))
    other, _ = sample_classes(labels, 1000, 0.05, _gen(2))
    assert torch.equal(index, again) and not torch.equal(index, other)
    # more positives than the share: all positives, nothing else
    many = torch.arange(0, 1000, 10)
    index, local = sample_classes(many, 1000, 0.01, _gen())
    assert torch.equal(index, many) and torch.equal(local, torch.arange(100))


def test_sample_rate_one_is_the_full_margin_softmax() -> None:
    torch.manual_seed(0)
    head = MarginSoftmax(20, embedding_size=6, margin="cosface", s=30.0, m=0.35, sample_rate=1.0)
    x, y = torch.randn(8, 6), torch.randint(0, 20, (8,))
    cos = F.normalize(x) @ F.normalize(head.weight).T
    reference = F.cross_entropy(30.0 * (cos - 0.35 * F.one_hot(y, 20)), y)
    assert head(x, y).item() == pytest.approx(reference.item(), rel=1e-5)
    assert head.last_sampled == 20


def test_sampled_loss_is_the_softmax_over_the_sampled_classes_and_only_they_learn() -> None:
    torch.manual_seed(0)
    head = MarginSoftmax(200, embedding_size=6, sample_rate=0.1)
    x, y = torch.randn(8, 6), torch.randint(0, 200, (8,))
    loss = head(x, y, generator=_gen(5))
    index, local = sample_classes(y, 200, 0.1, _gen(5))
    cos = F.normalize(x) @ F.normalize(head.weight[index]).T
    reference = F.cross_entropy(64.0 * (cos - 0.4 * F.one_hot(local, len(index))), local)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5) and head.last_sampled == 20
    loss.backward()
    touched = torch.nonzero(head.weight.grad.abs().sum(1)).squeeze(1)
    assert set(touched.tolist()) <= set(index.tolist()) and set(y.tolist()) <= set(touched.tolist())
    head.eval()
    head(x, y)
    assert head.last_sampled == 200   # evaluation scores every class


def test_training_with_the_margin_separates_classes() -> None:
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(10, 16))
    y = torch.arange(10).repeat(20)
    x = centres[y] + 0.3 * torch.randn(200, 16)
    head = MarginSoftmax(10, embedding_size=16, margin="arcface", s=16.0, sample_rate=0.5)
    opt = torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9)
    first = head(x, y).item()
    for _ in range(60):
        opt.zero_grad()
        head(x, y).backward()
        opt.step()
    head.eval()
    assert head(x, y).item() < 0.5 * first


@pytest.mark.parametrize("kwargs,message", [
    ({"margin": "sphereface"}, "margin must be one of"), ({"sample_rate": 0.0}, "sample_rate must be in"),
    ({"s": -1.0}, "scale s must be > 0"), ({"m": 1.5}, "margin m must be in"), ({"num_classes": 1}, ">= 2"),
])
def test_bad_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MarginSoftmax(**{"num_classes": 10, "embedding_size": 4, **kwargs})


def test_labels_outside_the_classes_are_an_error() -> None:
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\), got 0..10"):
        sample_classes(torch.tensor([0, 10]), 10, 0.5)


def _monte_carlo_loss(classes: int, s: float, m: float, kind: str, dim: int, n: int = 4000) -> float:
    """The mean margin-softmax loss of ``n`` random unit embeddings against random unit centres."""
    gen = _gen(11)
    centres = F.normalize(torch.randn(classes, dim, generator=gen), dim=1)
    embeddings = F.normalize(torch.randn(n, dim, generator=gen), dim=1)
    labels = torch.randint(0, classes, (n,), generator=gen)
    cosine = (embeddings @ centres.T).clamp(-1.0, 1.0)
    return F.cross_entropy(margin_logits(cosine, labels, kind, s, m), labels).item()


# within 1%: the log of the expected sum errs high by Jensen's inequality (0.4% at the demo's settings)
@pytest.mark.parametrize(("classes", "s", "m", "kind"), [
    (950, 64.0, 0.4, "cosface"), (950, 30.0, 0.2, "cosface"), (950, 64.0, 0.5, "arcface"), (2000, 64.0, 0.4, "cosface"),
])
def test_chance_loss_matches_random_embeddings(classes: int, s: float, m: float, kind: str) -> None:
    estimate = chance_loss(classes, s, m, kind, dim=512)
    measured = _monte_carlo_loss(classes, s, m, kind, dim=512)
    assert estimate == pytest.approx(measured, rel=0.01)
    assert estimate >= measured - 0.02   # errs high, as the docstring says


def test_chance_loss_at_the_demo_settings_and_its_checks() -> None:
    assert chance_loss(950, 64.0, 0.4, "cosface", 512) == pytest.approx(36.46, abs=0.01)
    # without a margin and scale, every class is equally likely: log(classes)
    assert chance_loss(10, s=1e-6, m=0.0) == pytest.approx(math.log(10), abs=1e-6)
    with pytest.raises(ValueError, match="classes must be >= 2, got 1"):
        chance_loss(1)
    with pytest.raises(ValueError, match="margin must be one of"):
        chance_loss(10, kind="sphereface")
