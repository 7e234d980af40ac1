"""The full-size bill: each stage's wall time and disk on the whole of Aff-Wild2, from measured rates.

Pure arithmetic. ``benchmarks/full_size_bill.py`` measures the rates (items per second on this
machine) and the bytes per frame of the stores a run wrote; :func:`stage_bill` turns them into
hours and bytes for a :class:`Workload` (how much data) and a :class:`Profile` (how many epochs, which
models). Every formula is written out in the returned rows, so a record says how each figure arose.

Example:
    >>> work = Workload(videos=2, frames=3600, fps=30.0, train_share=0.5)
    >>> work.audio_seconds, work.train_frames, work.eval_frames
    (120.0, 1800, 1800)
    >>> visual_key("iresnet18", 0.125), tdnn_key((128, 256)), sequence_key(128, 4, 32)
    ('iresnet18@0.125', '128-256', 'd128-h4-b32')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from pipeline.config import check_fields
from pipeline.train.alternating import ROTATION

# The tasks the visual, audio and sequence trainers take in turn (EXPR, AU, VA): each epoch passes
# over the training frames of every one.
TASKS = len(ROTATION)


@dataclass(frozen=True)
class Workload:
    """How much data a run processes.

    ``frames`` and ``videos`` are the dataset's; ``face_share`` is the share of frames with a face
    crop, ``train_share`` the share of frames each trainer trains on per task (the rest are the
    validation and held-out selection frames, scored once per epoch), ``fps`` turns frames into
    seconds of audio.
    """

    videos: int
    frames: int
    fps: float = 30.0
    face_share: float = 1.0
    train_share: float = 0.64

    def __post_init__(self) -> None:
        check_fields([(self.videos >= 1, "videos", f"must be >= 1, got {self.videos}"),
                      (self.frames >= 1, "frames", f"must be >= 1, got {self.frames}"),
                      (self.fps > 0, "fps", f"must be > 0, got {self.fps}"),
                      *((0.0 <= getattr(self, name) <= 1.0, name, f"must be in [0, 1], got {getattr(self, name)}")
                        for name in ("face_share", "train_share"))])

    @property
    def faces(self) -> int:
        """Frames with a face crop: what pack-frames stores and embed-visual embeds."""
        return round(self.frames * self.face_share)

    @property
    def train_frames(self) -> int:
        """Training frames per task."""
        return round(self.frames * self.train_share)

    @property
    def eval_frames(self) -> int:
        """Validation and held-out selection frames, scored once per epoch by each trainer."""
        return self.frames - self.train_frames

    @property
    def audio_seconds(self) -> float:
        """Seconds of video (and of its soundtrack)."""
        return self.frames / self.fps


@dataclass(frozen=True)
class Profile:
    """The params of a run that set its cost; ``sources`` says where each value comes from."""

    name: str
    backbone: str
    width_mult: float
    pretrain_epochs: int
    pretrain_images_per_epoch: int
    pretrain_verification_images: int
    finetune_epochs: int
    max_frames_per_epoch: int | None
    tdnn_channels: tuple[int, ...]
    audio_epochs: int
    sequence_epochs: int
    sequence_stride: int
    sequence_d_model: int
    sequence_heads: int
    sequence_batch: int
    audio_segment_frames: int
    audio_max_segments: int | None = None     # train_audio.max_segments: cap on segments per task per epoch
    sequence_max_windows: int | None = None   # train_sequence.max_windows: cap on windows per task per epoch
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def visual(self) -> str:
        """Key of this profile's visual model in the measured rates."""
        return visual_key(self.backbone, self.width_mult)

    @property
    def tdnn(self) -> str:
        """Key of this profile's TDNN in the measured rates."""
        return tdnn_key(self.tdnn_channels)

    @property
    def sequence(self) -> str:
        """Key of this profile's sequence model in the measured rates."""
        return sequence_key(self.sequence_d_model, self.sequence_heads, self.sequence_batch)


def visual_key(backbone: str, width_mult: float) -> str:
    """``iresnet18@0.125``: how the rates name a visual model."""
    return f"{backbone}@{width_mult:g}"


def tdnn_key(channels: Sequence[int]) -> str:
    """``128-128-128-128-256``: how the rates name a TDNN."""
    return "-".join(str(c) for c in channels)


def sequence_key(d_model: int, heads: int, batch: int) -> str:
    """``d128-h4-b32``: how the rates name a sequence model and its batch."""
    return f"d{d_model}-h{heads}-b{batch}"


def _capped(available: float, cap: int | None, unit: int) -> float:
    """What a trainer takes per task per epoch: all ``available`` training items, or ``cap`` draws of
    ``unit`` items each (segments of frames), whichever is fewer."""
    return available if cap is None else min(available, cap * unit)


def _row(stage: str, seconds: float, formula: str, inputs: dict[str, Any], disk_bytes: float = 0.0,
         disk_what: str = "") -> dict[str, Any]:
    return {"stage": stage, "seconds": seconds, "hours": seconds / 3600, "formula": formula, "inputs": inputs,
            "disk_bytes": disk_bytes, "disk": disk_what}


def _rate(rates: dict[str, Any], *keys: str) -> float:
    """The rate at ``rates[keys[0]][keys[1]]...``; a missing or non-positive one is an error naming it."""
    value: Any = rates
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise KeyError(f"measured rates have no {'/'.join(keys)} (missing '{key}')")
        value = value[key]
    if not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"measured rate {'/'.join(keys)} must be a positive number, got {value!r}")
    return float(value)


def stage_bill(rates: dict[str, Any], disk_per_frame: dict[str, float], work: Workload,
               profile: Profile) -> list[dict[str, Any]]:
    """One row per stage: wall seconds (and hours) on the measured machine, the formula and its inputs,
    and the bytes the stage writes.

    ``rates`` holds the measured rates (see ``benchmarks/full_size_bill.py`` for the keys and units);
    ``disk_per_frame`` the bytes per frame of ``frames_h5`` (per face), ``labels``, ``visual_zarr`` and
    ``audio_zarr``. Data loading is added to the model's time per image (JPEG decode from the frame
    store, measured separately), as on 2 cores the two share the same cores.
    """
    read = _rate(rates, "read_faces_per_s")
    visual = profile.visual
    train_img = _rate(rates, "visual", visual, "train_images_per_s")
    embed_torch = _rate(rates, "visual", visual, "embed_torch_faces_per_s")
    embed_ort = _rate(rates, "visual", visual, "embed_onnxruntime_faces_per_s")
    model_bytes = _rate(rates, "visual", visual, "onnx_bytes")
    logmel = _rate(rates, "logmel_audio_s_per_s")
    tdnn_train = _rate(rates, "tdnn", profile.tdnn, "train_frames_per_s")
    tdnn_embed = _rate(rates, "tdnn", profile.tdnn, "embed_frames_per_s")
    seq_train = _rate(rates, "sequence", profile.sequence, "train_windows_per_s")
    seq_infer = _rate(rates, "sequence", profile.sequence, "infer_windows_per_s")
    per_image_train = 1 / train_img + 1 / read
    per_image_eval = 1 / embed_torch + 1 / read

    video_hours = work.audio_seconds / 3600
    probe = _rate(rates, "probe_cpu_s_per_video_hour")
    rows = [_row("prepare", probe * video_hours, "video hours × probe CPU s per video hour",
                 {"video_hours": video_hours, "probe_cpu_s_per_video_hour": probe},
                 work.frames * disk_per_frame["labels"], "labels")]
    pack = _rate(rates, "pack_faces_per_s")
    rows.append(_row("pack-frames", work.faces / pack, "faces / pack rate",
                     {"faces": work.faces, "pack_faces_per_s": pack},
                     work.faces * disk_per_frame["frames_h5"], "frames.h5"))

    pretrain_images = profile.pretrain_epochs * profile.pretrain_images_per_epoch
    # pretrain-face verifies its starting point and then every epoch; with no epochs it only publishes.
    passes = profile.pretrain_epochs + 1 if profile.pretrain_epochs else 0
    pretrain_verify = passes * profile.pretrain_verification_images
    rows.append(_row(
        "pretrain-face", pretrain_images * per_image_train + pretrain_verify * per_image_eval,
        "epochs × images × (1/train + 1/read) + (epochs + 1) × verification images × (1/embed + 1/read)",
        {"epochs": profile.pretrain_epochs, "images_per_epoch": profile.pretrain_images_per_epoch,
         "verification_images_per_epoch": profile.pretrain_verification_images},
        model_bytes, "backbone.pth"))

    per_task = _capped(work.train_frames, profile.max_frames_per_epoch, 1)
    finetune_images = TASKS * per_task
    rows.append(_row(
        "finetune-visual",
        profile.finetune_epochs * (finetune_images * per_image_train + work.eval_frames * per_image_eval),
        f"epochs × ({TASKS} tasks × training images per task × (1/train + 1/read) + eval frames × (1/embed + 1/read))",
        {"epochs": profile.finetune_epochs, "training_images_per_task": per_task, "eval_frames": work.eval_frames},
        model_bytes, "model.pt"))
    export_s = _rate(rates, "visual", visual, "export_s")
    rows.append(_row("export-onnx", export_s, "measured once (does not grow with the data)",
                     {"export_s": export_s}, model_bytes, "visual.onnx"))
    rows.append(_row("embed-visual", work.faces * (1 / embed_ort + 1 / read),
                     "faces × (1/embed (onnxruntime) + 1/read)", {"faces": work.faces},
                     work.frames * disk_per_frame["visual_zarr"], "visual.zarr"))

    audio_per_task = _capped(work.train_frames, profile.audio_max_segments, profile.audio_segment_frames)
    rows.append(_row(
        "train-audio",
        work.audio_seconds / logmel
        + profile.audio_epochs * (TASKS * audio_per_task / tdnn_train + work.eval_frames / tdnn_embed),
        f"audio seconds / log-mel rate + epochs × ({TASKS} tasks × training frames per task / TDNN train "
        "+ eval frames / TDNN embed)",
        {"audio_seconds": work.audio_seconds, "epochs": profile.audio_epochs,
         "training_frames_per_task": audio_per_task, "eval_frames": work.eval_frames}))
    rows.append(_row("embed-audio", work.audio_seconds / logmel + work.frames / tdnn_embed,
                     "audio seconds / log-mel rate + frames / TDNN embed",
                     {"audio_seconds": work.audio_seconds, "frames": work.frames},
                     work.frames * disk_per_frame["audio_zarr"], "audio.zarr"))

    stride = profile.sequence_stride
    windows_per_task = _capped(work.train_frames / stride, profile.sequence_max_windows, 1)
    eval_windows = work.eval_frames / stride
    rows.append(_row(
        "train-sequence",
        profile.sequence_epochs * (TASKS * windows_per_task / seq_train + eval_windows / seq_infer),
        f"epochs × ({TASKS} tasks × training windows per task / train windows/s + eval frames / stride "
        "/ infer windows/s)",
        {"epochs": profile.sequence_epochs, "training_windows_per_task": windows_per_task,
         "eval_windows": eval_windows}))
    rows.append(_row("evaluate", eval_windows / seq_infer, "eval frames / stride / infer windows/s",
                     {"eval_windows": eval_windows}))
    return rows


def total(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Summed seconds, hours and disk bytes of a bill's rows."""
    seconds = sum(row["seconds"] for row in rows)
    return {"seconds": seconds, "hours": seconds / 3600, "disk_bytes": sum(row["disk_bytes"] for row in rows)}
