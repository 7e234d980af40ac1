"""Face-recognition pretraining of the visual backbone (paper §3.1, §4.2): the ``pretrain-face`` stage.

The paper starts its visual model from an IResNet100 trained with CosFace on Glint360K. This module
trains a registry backbone the same way on any face-identity set (insightface's ``train.rec`` +
``train.idx``, or an ``<identity>/<image>.jpg`` folder, chosen by :func:`open_face_set`): the
backbone's 512-d embedding goes into a margin softmax (:class:`~pipeline.models.margin.MarginSoftmax`:
CosFace by default, ArcFace as an option, Partial-FC class sampling with ``sample_rate < 1``),
optimised with SGD under a per-batch cosine learning-rate schedule (after an optional linear
warm-up of ``warmup_epochs``), with horizontal flips. ``shuffle_labels`` permutes the identity labels
of the training images (the shuffled-identity control: the same training on labels that name no one).

A share of the identities is held out (:func:`~pipeline.train.face_data.split_identities`). After
every epoch the backbone embeds seeded pairs of held-out images and is scored as LFW scores a face
recogniser (:mod:`pipeline.verification`: 10-fold pair accuracy, TAR at FAR 1e-3); the epoch with
the best pair accuracy is kept. The starting weights are scored the same way (``initial``),
so the metrics file says what training added, beside the per-epoch losses and the loss of random
embeddings (``chance_loss``, :func:`~pipeline.models.margin.chance_loss`). A trained backbone is
published only when its pair accuracy beats ``initial`` by ``min_gain``
(:mod:`pipeline.train.pretrain_gate`); a refused run's metrics stay in ``work_dir/refused.json``.

The epoch loop, resume after a kill and divergence checks are those every trainer shares
(:mod:`pipeline.train.loop`); the state lives in ``work_dir/state.pt``, keyed by the config and
a digest of the face set. What is published is the backbone alone, as a plain state dict with
insightface arcface_torch's key names (``OUT_DIR/backbone.pth``), beside ``OUT_DIR/backbone.json``
(its arch and input contract), so ``finetune-visual --pretrained`` loads it as it loads a Glint360K
``backbone.pth``. With ``epochs: 0`` and ``init`` set, nothing is trained: the ``init`` checkpoint is
checked, scored and published as it is (the way to use a real Glint360K checkpoint in the DAG).

Example (not run here: it trains a network)::

    result = train_pretrain("data/synthetic_faces/rec", "cache/pretrain", "metrics/pretrain.json",
                            "cache/work/pretrain-face", PretrainConfig())
    sorted(result.metrics["verification"])
    # ['accuracy', 'accuracy_std', 'far', 'score', 'tar_at_far']
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline.config import check_fields, to_dict
from pipeline.data.faces.sets import FaceSet, open_face_set
from pipeline.fsio import file_sha256, write_json
from pipeline.labels import EMBEDDING_DIM
from pipeline.model_files.backbone import BACKBONE_FILE, load_backbone_state, publish_backbone
from pipeline.models.margin import DEFAULT_MARGIN, MARGINS, MarginSoftmax, chance_loss
from pipeline.models.preprocess import to_model_input
from pipeline.models.registry import create_backbone
from pipeline.train import ddp
from pipeline.train.amp import AmpMode, Precision
from pipeline.train.augment import AugmentConfig, augment_batch
from pipeline.train.ddp import DistContext
from pipeline.train.epoch_plan import split_batches
from pipeline.train.face_data import (
    FaceImages, IdentitySplit, VerificationPairs, face_set_digest, shuffled_labels, split_identities,
    verification_pairs,
)
from pipeline.train.loader import EpochLoader, LoaderConfig
from pipeline.train.loop import TrainResult, Trainer, check_weights, checked_step, run_epochs
from pipeline.train.loop_state import LoopState
from pipeline.train.optim import OptimConfig, lr_factor
from pipeline.train.pretrain_gate import NotLearnedError, check_learned
from pipeline.verification import verification_scores

log = logging.getLogger(__name__)

SECTION = "pretrain_face"
STATE_FILE = "state.pt"
REFUSED_FILE = "refused.json"   # in the work directory: the metrics of a run the gate refused
TASK = "face"


@dataclass(frozen=True)
class PretrainConfig:
    """The ``pretrain_face`` params section (demo defaults; the paper's values in docs/pretrain.md)."""

    backbone: str = "iresnet18"        # must be finetune_visual.backbone
    width_mult: float = 0.125          # must be finetune_visual.width_mult
    init: str | None = None            # backbone.pth to start from (with epochs 0: published as it is)
    margin: Literal["cosface", "arcface"] = "cosface"
    s: float = 64.0                    # logit scale
    m: float | None = None             # margin; None: insightface's default (cosface 0.4, arcface 0.5)
    sample_rate: float = 1.0           # Partial-FC share of classes scored per step (1 = all)
    epochs: int = 3
    batch_size: int = 64               # global batch, split between DDP processes
    images_per_epoch: int | None = 1792  # a fresh random subset of training images per epoch; None = all
    lr: float = 0.02
    warmup_epochs: float = 0.0         # linear warm-up of the learning rate (epochs), then the cosine decay
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_grad_norm: float | None = None
    flip_prob: float = 0.5             # horizontal flip, insightface's only training augmentation
    holdout_share: float = 0.05        # share of identities held out for verification
    verification_pairs: int = 3000     # same-identity pairs, and as many different-identity pairs
    far: float = 1e-3                  # the false accept rate TAR is reported at
    seed: int = 0                      # identity split, pairs, init, image order, flips, class sampling
    shuffle_labels: bool = False       # permute the training images' identity labels (a negative control)
    min_gain: float | None = 0.1       # publish only if held-out accuracy beats the start by this; None: always
    amp: AmpMode = "off"               # off (float32) | bf16 | fp16 (CUDA only, with loss scaling) autocast
    channels_last: bool = False        # NHWC memory layout of the backbone and its batches

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}"),
            (self.epochs >= 1 or self.init is not None, "epochs",
             "0 needs init (a backbone.pth to publish as it is); got init null"),
            (self.batch_size >= 2, "batch_size", f"must be >= 2, got {self.batch_size}"),
            (self.width_mult > 0, "width_mult", f"must be > 0, got {self.width_mult}"),
            (self.margin in MARGINS, "margin", f"must be one of {list(MARGINS)}, got {self.margin!r}"),
            (self.s > 0, "s", f"must be > 0, got {self.s}"),
            (self.m is None or 0.0 <= self.m < 1.0, "m", f"must be in [0, 1) or null, got {self.m}"),
            (0.0 < self.sample_rate <= 1.0, "sample_rate", f"must be in (0, 1], got {self.sample_rate}"),
            (self.images_per_epoch is None or self.images_per_epoch >= 2, "images_per_epoch",
             f"must be >= 2 or null, got {self.images_per_epoch}"),
            (0.0 <= self.flip_prob <= 1.0, "flip_prob", f"must be in [0, 1], got {self.flip_prob}"),
            (0.0 < self.holdout_share < 1.0, "holdout_share", f"must be in (0, 1), got {self.holdout_share}"),
            (self.verification_pairs >= 10, "verification_pairs",
             f"must be >= 10 (10 folds), got {self.verification_pairs}"),
            (0.0 < self.far < 1.0, "far", f"must be in (0, 1), got {self.far}"),
            # with epochs 0 (a given backbone published as it is) nothing trains: the warm-up is unread
            (self.warmup_epochs >= 0.0 and (self.epochs == 0 or self.warmup_epochs <= self.epochs), "warmup_epochs",
             f"must be in [0, epochs ({self.epochs})], got {self.warmup_epochs}"),
            (self.min_gain is None or -1.0 <= self.min_gain <= 1.0, "min_gain",
             f"must be in [-1, 1] or null, got {self.min_gain}"),
        ]
        check_fields(checks)
        self.optim()

    def optim(self) -> OptimConfig:
        """The shared optimiser block (SGD with momentum)."""
        return OptimConfig.of(self)

    def chance_loss(self, classes: int) -> float:
        """The loss of random embeddings (:func:`~pipeline.models.margin.chance_loss`) over the
        classes a step scores out of ``classes``: all, or about Partial FC's sample (at least a batch's)."""
        scored = classes if self.sample_rate >= 1.0 else min(classes, max(int(self.sample_rate * classes),
                                                                           self.batch_size))
        return chance_loss(scored, self.s, DEFAULT_MARGIN[self.margin] if self.m is None else self.m, self.margin,
                           EMBEDDING_DIM)

    def arch(self) -> dict[str, Any]:
        """What ``backbone.json`` records: the registry name and width the weights are for."""
        return {"backbone": self.backbone, "width_mult": self.width_mult}


class FaceRecogniser(nn.Module):
    """Backbone -> 512-d embedding -> margin softmax loss over the training identities."""

    def __init__(self, backbone: nn.Module, head: MarginSoftmax) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean margin softmax loss of normalised images (B,3,112,112) with class ``labels`` (B,)."""
        return self.head(self.backbone(x), labels, generator)


def epoch_batches(n: int, epoch: int, cfg: PretrainConfig, min_batch: int) -> list[np.ndarray]:
    """Global batches (indices into the training images) of the 0-based ``epoch``: a permutation
    drawn from ``(seed, epoch)`` alone, cut to ``images_per_epoch``, so a resumed run replays it."""
    order = np.random.default_rng([cfg.seed, 2, epoch]).permutation(n)[:cfg.images_per_epoch]
    return split_batches(order, cfg.batch_size, min_batch)


@torch.no_grad()
def embed_images(backbone: nn.Module, dataset: FaceImages, batch_size: int, device: torch.device,
                 ctx: DistContext, loader_cfg: LoaderConfig = LoaderConfig(),
                 precision: Precision | None = None) -> np.ndarray:
    """(len(dataset), 512) float32 embeddings (eval mode, in ``precision``'s autocast and layout when
    given); each process embeds its share, every process gets all rows."""
    precision = precision or Precision("off", False, device)
    n = len(dataset)
    mine = np.asarray(ddp.shard(np.arange(n), ctx))
    batches = [mine[i:i + batch_size].tolist() for i in range(0, len(mine), batch_size)]
    backbone.eval()
    parts = [np.zeros((0, EMBEDDING_DIM), np.float32)]
    loader = DataLoader(dataset, batch_sampler=batches, **loader_cfg.dataloader_kwargs(device))
    for images, _ in loader:
        with precision.autocast():
            embedding = backbone(precision.batch(to_model_input(images, device)))
        parts.append(embedding.float().cpu().numpy())
    return ddp.unshard(ddp.gather_rows(np.concatenate(parts), ctx), n)


def verify(backbone: nn.Module, faces: FaceSet, pairs: VerificationPairs, cfg: PretrainConfig,
           device: torch.device, ctx: DistContext, loader_cfg: LoaderConfig = LoaderConfig(),
           precision: Precision | None = None) -> dict[str, float]:
    """Pair accuracy (10 folds), its std, TAR at ``cfg.far`` and ``score`` (the accuracy, which selects
    the best epoch) of ``backbone`` on the held-out pairs."""
    dataset = FaceImages(faces, pairs.images, np.zeros(len(pairs.images), np.int64))
    embeddings = embed_images(backbone, dataset, cfg.batch_size, device, ctx, loader_cfg, precision)
    scores = verification_scores(embeddings, pairs.first, pairs.second, pairs.same, cfg.far)
    return {**scores, "score": scores["accuracy"]}


class PretrainRun:
    """One run's recogniser, DDP wrapper, optimiser, schedule and random streams."""

    def __init__(self, cfg: PretrainConfig, classes: int, device: torch.device, ctx: DistContext,
                 total_steps: int, loader: LoaderConfig = LoaderConfig(), warmup_steps: int = 0) -> None:
        self.cfg, self.device, self.ctx = cfg, device, ctx
        self.precision = Precision(cfg.amp, cfg.channels_last, device, SECTION)
        self.loader = loader
        self.epoch_loader: EpochLoader | None = None
        torch.manual_seed(cfg.seed)
        backbone = create_backbone(cfg.backbone, width_mult=cfg.width_mult)
        if cfg.init is not None:
            load_backbone_state(backbone, cfg.init)
        head = MarginSoftmax(classes, margin=cfg.margin, s=cfg.s, m=cfg.m, sample_rate=cfg.sample_rate)
        self.model = FaceRecogniser(backbone, head).to(device)
        self.precision.model(self.model)
        self.net: nn.Module = self.model
        if ctx.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device] if device.type == "cuda" else None)
        self.optimizer = cfg.optim().build(self.model.parameters())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(total_steps, warmup_steps))
        self.augment = AugmentConfig(flip_prob=cfg.flip_prob, crop_scale=0.0, hue=0.0, saturation=0.0,
                                     lightness=0.0)
        # per rank: flips, and the classes Partial FC samples (each rank draws its own)
        self.flip_rng = torch.Generator().manual_seed(cfg.seed * 1000 + ctx.rank)
        self.class_rng = torch.Generator().manual_seed(cfg.seed * 1000 + 500 + ctx.rank)

    def train_epoch(self, loop: LoopState, epoch: int, batches: list[np.ndarray], dataset: FaceImages,
                    checkpoint_every: int, progress: bool) -> dict[str, list[float]]:
        """The batches of ``batches`` from ``loop.batch`` on, checkpointing every ``checkpoint_every``."""
        cfg, ctx = self.cfg, self.ctx
        mine = [ddp.shard(b, ctx).tolist() for b in batches[loop.batch:]]
        loader = self._epoch_loader(dataset).epoch(mine)
        self.net.train()
        bar = tqdm(total=len(batches), initial=loop.batch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not (progress and ctx.is_main), mininterval=1.0)
        losses: list[float] = []
        for images, labels in loader:
            x = to_model_input(augment_batch(images.to(self.device), self.augment, self.flip_rng))
            with self.precision.autocast():
                loss = self.net(self.precision.batch(x), labels.to(self.device), self.class_rng)
            losses.append(checked_step(self.net, self.optimizer, TASK, loss, SECTION, epoch + 1, loop.batch + 1,
                                       heads={TASK: self.model.head}, max_grad_norm=cfg.max_grad_norm, ctx=ctx,
                                       scaler=self.precision.scaler))
            self.scheduler.step()
            loop.batch += 1
            bar.update(1)
            bar.set_postfix({"loss": f"{np.mean(losses[-20:]):.3f}"}, refresh=False)
            if checkpoint_every and loop.batch % checkpoint_every == 0 and loop.batch < len(batches):
                check_weights(self.model, SECTION, epoch + 1, loop.batch, cfg.max_grad_norm)
                loop.save(self.model, self.optimizer, self.extra_state())
        bar.close()
        ddp.sync_buffers(self.model, ctx)  # each rank's batches moved its own BatchNorm statistics
        return {TASK: losses}

    def _epoch_loader(self, dataset: Dataset) -> EpochLoader:
        """The training loader over ``dataset``, built once (its workers may persist across epochs)."""
        if self.epoch_loader is None or self.epoch_loader.dataset is not dataset:
            self.epoch_loader = EpochLoader(dataset, self.loader, self.device)
        return self.epoch_loader

    def extra_state(self) -> dict[str, Any]:
        """The schedule, the fp16 loss scale and every rank's random streams (a collective call under DDP)."""
        flips = ddp.gather_tensors(self.flip_rng.get_state(), self.ctx)
        classes = ddp.gather_tensors(self.class_rng.get_state(), self.ctx)
        extra = {"scheduler": self.scheduler.state_dict(), "rngs": list(zip(flips, classes))}
        if self.precision.scaler is not None:  # only then: an amp-off state stays as it was
            extra["grad_scaler"] = self.precision.state_dict()
        return extra

    def load_extra(self, extra: Mapping[str, Any] | None) -> None:
        """Restore :meth:`extra_state` (with more processes than saved, extra ranks reuse the last)."""
        if extra is None:
            return
        self.scheduler.load_state_dict(extra["scheduler"])
        self.precision.load_state_dict(extra.get("grad_scaler"))
        flip, classes = extra["rngs"][min(self.ctx.rank, len(extra["rngs"]) - 1)]
        self.flip_rng.set_state(flip)
        self.class_rng.set_state(classes)


class _PretrainTrainer(Trainer):
    """The run's steps over each epoch's batches, verified on the held-out identities' pairs."""

    def __init__(self, run: PretrainRun, plans: list[list[np.ndarray]], dataset: FaceImages, faces: FaceSet,
                 pairs: VerificationPairs, checkpoint_every: int, progress: bool) -> None:
        self.run, self.model, self.optimizer = run, run.model, run.optimizer
        self.plans, self.dataset, self.faces, self.pairs = plans, dataset, faces, pairs
        self.checkpoint_every, self.progress = checkpoint_every, progress

    def fit_epoch(self, loop: LoopState, epoch: int) -> dict[str, list[float]]:
        """The epoch's batches from ``loop.batch`` on."""
        return self.run.train_epoch(loop, epoch, self.plans[epoch], self.dataset, self.checkpoint_every,
                                    self.progress)

    def validate(self) -> dict[str, Any]:
        """Verification on the held-out identities' pairs."""
        run = self.run
        return {"verification": verify(run.model.backbone, self.faces, self.pairs, run.cfg, run.device, run.ctx,
                                       run.loader, run.precision)}

    def extra_state(self) -> dict[str, Any]:
        """The run's schedule, loss scale and random streams."""
        return self.run.extra_state()


def run_key(cfg: PretrainConfig, faces: FaceSet) -> str:
    """A digest of what the run trains on: the face set and the ``init`` file."""
    payload = {"faces": face_set_digest(faces), "init": file_sha256(cfg.init) if cfg.init else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def train_pretrain(
    faces_path: str | Path,
    out_dir: str | Path,
    metrics_path: str | Path,
    work_dir: str | Path,
    cfg: PretrainConfig,
    device: torch.device | str = "cpu",
    loader: LoaderConfig = LoaderConfig(),
    dist: DistContext | None = None,
    checkpoint_every: int = 50,
    progress: bool = True,
) -> TrainResult:
    """Pretrain the backbone on the face set at ``faces_path``; publish ``out_dir/backbone.pth`` (+ ``.json``)
    of the best epoch, then the metrics JSON.

    Under DDP (``dist`` with several processes, process group initialised) every process calls this;
    only rank 0 writes files. ``checkpoint_every`` (batches) adds mid-epoch checkpoints (0 = epoch ends).
    ``loader`` says how batches are fed (speed only).
    """
    ctx, device = dist or DistContext(), torch.device(device)
    faces = open_face_set(faces_path)
    faces.check()  # a damaged record fails here, in one line, not in a DataLoader worker hours in
    split = split_identities(faces.labels, cfg.holdout_share, cfg.seed)
    _check_data(split, faces_path, cfg, ctx)
    pairs = verification_pairs(split, cfg.verification_pairs, cfg.seed)
    plans = [epoch_batches(len(split.train_images), e, cfg, 2 * ctx.world_size) for e in range(cfg.epochs)]
    warmup_steps = round(cfg.warmup_epochs * len(plans[0])) if plans else 0
    run = PretrainRun(cfg, split.train_identities, device, ctx, sum(len(p) for p in plans), loader, warmup_steps)
    initial = verify(run.model.backbone, faces, pairs, cfg, device, ctx, run.loader, run.precision)
    data = {"format": faces.format, **split.sizes(), "pairs": 2 * cfg.verification_pairs}
    if ctx.is_main:
        log.info("face set %s: %s; initial verification %s", faces_path, data, _rounded(initial))
    if cfg.epochs == 0:
        best = {"epoch": 0, "metrics": {"verification": initial}}
        history: list[dict[str, Any]] = []
        resumed_from = None
    else:
        labels = shuffled_labels(split.train_labels, cfg.seed) if cfg.shuffle_labels else split.train_labels
        dataset = FaceImages(faces, split.train_images, labels)
        digest = ddp.broadcast_digest(run_key(cfg, faces) if ctx.is_main else None, ctx)
        key = {"config": resume_config(cfg), "data": digest}
        loop = LoopState.resume(Path(work_dir) / STATE_FILE, key, run.model, run.optimizer, writer=ctx.is_main)
        run.load_extra(loop.extra)
        if ctx.is_main and loop.resumed_from is not None:
            log.info("resuming from epoch %d batch %d (of %d epochs)", loop.epoch + 1, loop.batch, cfg.epochs)
        trainer = _PretrainTrainer(run, plans, dataset, faces, pairs, checkpoint_every, progress)
        # kept by the held-out identities' pair accuracy
        best = run_epochs(loop, SECTION, cfg.epochs, trainer, cfg.max_grad_norm,
                          criterion=lambda report: report["verification"]["score"])
        history, resumed_from = loop.history, loop.resumed_from
    metrics = {
        "verification": _public(best["metrics"]["verification"]), "initial": _public(initial),
        "best_epoch": best["epoch"], "epochs": cfg.epochs, "data": data, **cfg.arch(),
        "history": [{"epoch": h["epoch"], "loss": h["loss"][TASK], **_public(h["metrics"]["verification"])}
                    for h in history],
        "loss": next((h["loss"][TASK] for h in history if h["epoch"] == best["epoch"]), None),
        "chance_loss": cfg.chance_loss(split.train_identities), "shuffle_labels": cfg.shuffle_labels,
    }
    run.precision.standard_layout(run.model)
    _gate(metrics, cfg, Path(work_dir), ctx)
    if ctx.is_main:
        made = {"epoch": best["epoch"], "init": cfg.init, "margin": cfg.margin}   # what backbone.json records
        publish_backbone(run.model.backbone, cfg.arch(), made, out_dir)
        write_json(metrics_path, metrics)
        log.info("published %s and %s (best epoch %d, pair accuracy %.4f)", Path(out_dir) / BACKBONE_FILE,
                 metrics_path, best["epoch"], metrics["verification"]["accuracy"])
    ddp.barrier(ctx)
    return TrainResult(run.model.backbone, metrics, best["epoch"], history, resumed_from)


def resume_config(cfg: PretrainConfig) -> dict[str, Any]:
    """What a saved state is keyed by: the config less ``min_gain``, which judges a finished run and does
    not change it (so a run refused at one gain is published at another without retraining)."""
    return {k: v for k, v in to_dict(cfg).items() if k != "min_gain"}


def _gate(metrics: dict[str, Any], cfg: PretrainConfig, work_dir: Path, ctx: DistContext) -> None:
    """Refuse a trained backbone that did not learn (:func:`check_learned`), keeping its metrics in
    ``work_dir/refused.json``; a given backbone (``epochs: 0``) is published as it is."""
    refused = work_dir / REFUSED_FILE
    if cfg.epochs == 0:
        return
    try:
        check_learned(metrics, cfg.min_gain, refused)
    except NotLearnedError:
        if ctx.is_main:
            write_json(refused, metrics)
        raise
    if ctx.is_main:
        refused.unlink(missing_ok=True)   # an earlier refusal no longer describes the work directory


def _check_data(split: IdentitySplit, faces_path: str | Path, cfg: PretrainConfig, ctx: DistContext) -> None:
    """Errors for a set too small to train on with this batch size and process count."""
    if cfg.batch_size < 2 * ctx.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is too small for {ctx.world_size} processes "
                         f"(BatchNorm needs >= 2 images per process)")
    if cfg.epochs and len(split.train_images) < 2 * ctx.world_size:
        raise ValueError(f"{faces_path}: {len(split.train_images)} training images after holding out "
                         f"{split.holdout_identities} identities; too few to train on")


def _public(scores: Mapping[str, float]) -> dict[str, float]:
    """The verification figures the metrics file reports (``score`` is the accuracy, kept once)."""
    return {k: v for k, v in scores.items() if k != "score"}


def _rounded(scores: Mapping[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in _public(scores).items()}


def verification_headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The kept epoch's held-out pair accuracy and TAR@FAR: what ``dvc exp show`` lists of a pretraining."""
    verification = metrics["verification"]
    return {"verification": {"accuracy": verification["accuracy"], "tar_at_far": verification["tar_at_far"]}}
