"""Margin softmax heads for face-recognition training: CosFace and ArcFace, with Partial-FC sampling.

Embeddings and class centres are L2-normalised, so a logit is ``s * cos(theta)``. The target class's
logit gets a margin: CosFace ``s * (cos(theta) - m)`` (Wang et al. 2018; insightface defaults s=64,
m=0.4), ArcFace ``s * cos(theta + m)`` (Deng et al. 2019; s=64, m=0.5). With ``sample_rate < 1``
each step scores only a subset of classes, as Partial FC (An et al. 2021) does: every class
present in the batch plus a random share of the others, so the logits and their gradient are
(B, K) with K ~ sample_rate * C instead of (B, C).

Functional core (pure tensors) and a module holding the class centres:

    >>> import torch
    >>> cos = torch.tensor([[0.5, 0.2]])
    >>> margin_logits(cos, torch.tensor([0]), "cosface", s=64.0, m=0.4)
    tensor([[ 6.4000, 12.8000]])
    >>> head = MarginSoftmax(num_classes=1000, embedding_size=8, sample_rate=0.1)
    >>> loss = head(torch.randn(4, 8), torch.tensor([1, 5, 5, 999]), generator=torch.Generator().manual_seed(0))
    >>> loss.shape, head.last_sampled
    (torch.Size([]), 100)
    >>> round(chance_loss(950, s=64.0, m=0.4), 2)   # what a recogniser that learnt nothing scores
    36.46
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.labels import EMBEDDING_DIM

MARGINS: tuple[str, ...] = ("cosface", "arcface")
DEFAULT_MARGIN: dict[str, float] = {"cosface": 0.4, "arcface": 0.5}   # insightface's defaults


def margin_logits(cosine: torch.Tensor, labels: torch.Tensor, kind: str = "cosface",
                  s: float = 64.0, m: float = 0.4) -> torch.Tensor:
    """Scaled logits (B, K) from cosines (B, K), with the margin on column ``labels[b]`` of row b.

    Rows whose label is -1 (their class was not scored) get no margin.
    """
    _check_kind(kind)
    rows = torch.nonzero(labels >= 0).squeeze(1)
    target = cosine[rows, labels[rows]]
    if kind == "cosface":
        changed = target - m
    else:
        # cos(theta + m); past theta = pi - m the angle would wrap around, so continue linearly
        # (insightface's non-easy margin), which keeps the target logit decreasing in theta
        sine = torch.sqrt((1.0 - target * target).clamp_min(0.0))
        with_margin = target * math.cos(m) - sine * math.sin(m)
        changed = torch.where(target > math.cos(math.pi - m), with_margin, target - math.sin(math.pi - m) * m)
    logits = cosine.clone()
    logits[rows, labels[rows]] = changed
    return logits * s


def chance_loss(classes: int, s: float = 64.0, m: float = 0.4, kind: str = "cosface",
                dim: int = EMBEDDING_DIM) -> float:
    """The expected margin-softmax loss of random unit embeddings against random unit centres.

    A network that has learnt nothing scores about this: the yardstick a training loss is read against.
    ``classes`` is the number of classes each step scores (all of them, or Partial FC's sample).

    Derivation. The cosine of two independent random unit vectors in ``dim`` dimensions is close to
    N(0, 1/dim) (mean 0, variance exactly 1/dim), so each of the ``classes - 1`` other logits
    ``s * cos`` makes ``exp(s * cos)`` a log-normal term with mean ``exp(s^2 / (2 dim))``. The
    target's logit carries the margin: CosFace ``s * (cos - m)``, mean ``-s m``; ArcFace
    ``s * cos(theta + m) = s * (cos(theta) cos(m) - sin(theta) sin(m))``, mean ``-s sin(m) E[sin theta]``
    with ``E[sin theta] ~ 1 - 1/(2 dim)``. The loss is ``log(sum of exp(logits)) - target logit``;
    the approximation takes the log of the expected sum (``log E[S]``), which by Jensen's inequality
    is at or above ``E[log S]``: the estimate errs high, by less than the sum's spread. Measured
    against Monte Carlo (random embeddings and centres, tests/unit/models/test_margin.py) it is within
    1% at 950 classes in 512 dimensions (CosFace s=64 m=0.4: 36.46 vs 36.32; s=30 m=0.2; ArcFace
    s=64 m=0.5); it degrades when ``exp(s^2 / dim) / classes`` is large (few classes, or few dims).
    """
    _check_kind(kind)
    if classes < 2:
        raise ValueError(f"classes must be >= 2, got {classes}")
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    var = 1.0 / dim                                   # variance of one cosine
    if kind == "cosface":
        target_mean, target_var = -s * m, s * s * var
    else:
        target_mean, target_var = -s * math.sin(m) * (1.0 - var / 2.0), (s * math.cos(m)) ** 2 * var
    others = (classes - 1) * math.exp(s * s * var / 2.0)     # expected sum of the other classes' exp(logit)
    target = math.exp(target_mean + target_var / 2.0)        # the target's, log-normal likewise
    return math.log(others + target) - target_mean


def sample_classes(labels: torch.Tensor, num_classes: int, sample_rate: float,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The classes one step scores and the labels renumbered into them.

    Returns ``(index, local_labels)``: ``index`` (K,) sorted class ids holding every class of
    ``labels`` plus randomly drawn others, ``K = max(#positives, int(sample_rate * num_classes))``;
    ``local_labels`` (B,) are positions in ``index``.
    """
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
    positives = torch.unique(labels)
    count = max(int(sample_rate * num_classes), positives.numel())
    if count >= num_classes:
        index = torch.arange(num_classes, device=labels.device)
    else:
        score = torch.rand(num_classes, generator=generator, device="cpu").to(labels.device)
        score[positives] = 2.0          # above every random score: positives are always kept
        index = torch.topk(score, count).indices.sort().values
    return index, torch.searchsorted(index, labels)


class MarginSoftmax(nn.Module):
    """Class centres (C, D) and the margin softmax cross-entropy over them (optionally sampled).

    ``forward(embeddings (B, D), labels (B,))`` returns the mean loss; ``last_sampled`` is the
    number of classes the last call scored. The centres are stored as ``weight``, as insightface's
    ``PartialFC`` does (normal init, std 0.01).
    """

    def __init__(self, num_classes: int, embedding_size: int = EMBEDDING_DIM, margin: str = "cosface",
                 s: float = 64.0, m: float | None = None, sample_rate: float = 1.0) -> None:
        super().__init__()
        _check_kind(margin)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if s <= 0:
            raise ValueError(f"scale s must be > 0, got {s}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.num_classes, self.margin, self.s = num_classes, margin, float(s)
        self.m = DEFAULT_MARGIN[margin] if m is None else float(m)
        if not 0.0 <= self.m < 1.0:
            raise ValueError(f"margin m must be in [0, 1), got {self.m}")
        self.sample_rate = float(sample_rate)
        self.weight = nn.Parameter(torch.normal(0.0, 0.01, (num_classes, embedding_size)))
        self.last_sampled = num_classes

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Margin logits (B, K) over the scored classes and the labels (B,) as positions among them."""
        weight, local = self.weight, labels
        if self.sample_rate < 1.0 and self.training:
            index, local = sample_classes(labels, self.num_classes, self.sample_rate, generator)
            weight = self.weight[index]
        self.last_sampled = weight.shape[0]
        cosine = F.linear(F.normalize(embeddings, dim=1), F.normalize(weight, dim=1)).clamp(-1.0, 1.0)
        return margin_logits(cosine, local, self.margin, self.s, self.m), local

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean cross-entropy of the margin logits."""
        logits, local = self.logits(embeddings, labels, generator)
        return F.cross_entropy(logits, local)


def _check_kind(kind: str) -> None:
    if kind not in MARGINS:
        raise ValueError(f"margin must be one of {MARGINS}, got {kind!r}")
