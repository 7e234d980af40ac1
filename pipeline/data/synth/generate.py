"""Generate the whole synthetic dataset: videos, crops, annotations, the BP4D part and a summary.

Every video draws from its own random stream (seeded by the config seed and the video index), so
videos can be generated in any order or in parallel and still come out identical.

Example (not run here: it writes a few hundred files; the test suite generates the tiny preset
once per session)::

    summary = generate_dataset(Path("data/synthetic"), SynthConfig.from_preset("tiny", seed=0))
    sorted(summary)[:3]
    # ['bp4d_frames', 'bp4d_sequences', 'bytes']
"""

from __future__ import annotations

import dataclasses
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pipeline.config import to_dict
from pipeline.data.synth.affect import make_affect, vocal_activity
from pipeline.data.synth.annotations import write_au_file, write_bp4d_csv, write_expr_file, write_va_file
from pipeline.data.synth.audio import Voice, VoiceTracks, render_voice, sample_voice, voice_tracks
from pipeline.data.synth.config import SynthConfig
from pipeline.data.synth.expressions import sample_style
from pipeline.data.synth.faces import (
    Drawing, Identity, Pose, compile_parts, cover_parts, draw_drawing, face_parts, occluder_parts,
    sample_identity,
)
from pipeline.data.synth.media import VideoWriter, jpeg_bytes
from pipeline.data.synth.plan import SPLIT_DIRS, VideoPlan, plan_videos
from pipeline.data.synth.scene import (
    CROP_SIZE, SUPERSAMPLE, Scene, aligned_pose, crop, make_scene, render,
)
from pipeline.data.synth.segments import (
    BLURRED, MISSING, OCCLUDED, OUT_OF_FRAME, Degradations, Timeline, make_degradations, make_timeline,
)
from pipeline.fsio import atomic_path

log = logging.getLogger(__name__)

SUMMARY_FILE = "synth_summary.json"
INTENSITY_LEVELS = 40   # drawn AU intensities are quantised to 1/40 steps
# Seed tag of the valence-arousal streams, (seed, VA_STREAM, video, subject): a stream no earlier
# file draws from, so adding VA left every other file as it was.
VA_STREAM = 8


def generate_dataset(out: Path, cfg: SynthConfig, workers: int = 1) -> dict[str, Any]:
    """Write the dataset to ``out`` (replaced atomically) and return a small summary dict."""
    out = Path(out)
    plans = plan_videos(cfg)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                stats = list(pool.map(_generate_video, [tmp] * len(plans), plans, [cfg] * len(plans)))
        else:
            stats = [_generate_video(tmp, plan, cfg) for plan in plans]
        bp4d = _generate_bp4d(tmp / "BP4D", cfg)
        summary = {
            "preset": cfg.preset,
            "seed": cfg.seed,
            "videos": len(plans),
            "subjects": sum(s["subjects"] for s in stats),
            "frames": sum(s["frames"] for s in stats),
            "crops": sum(s["crops"] for s in stats),
            "bp4d_sequences": bp4d["sequences"],
            "bp4d_frames": bp4d["frames"],
        }
        summary["bytes"] = _tree_bytes(tmp)
        record = {**summary, "config": to_dict(cfg)}
        (tmp / SUMMARY_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log.info("synthetic dataset at %s: %s", out, summary)
    return summary


@dataclasses.dataclass
class _Subject:
    """Everything drawn for one face of a video."""

    identity: Identity
    timeline: Timeline
    degradations: Degradations
    event_id: np.ndarray      # (N,) index of the degradation event each frame belongs to
    blink: np.ndarray         # (N,) eyelid closure in [0, 1]
    rng: np.random.Generator
    cache: dict[bytes, Drawing] = dataclasses.field(default_factory=dict)

    def drawing(self, i: int) -> Drawing:
        """The face of frame ``i``; intensities are quantised so that repeated looks are drawn from cache."""
        levels = np.round(np.append(self.timeline.intensity[i], self.blink[i]) * INTENSITY_LEVELS).astype(np.int8)
        key = levels.tobytes()
        if key not in self.cache:
            if len(self.cache) > 4096:
                self.cache.clear()
            q = levels.astype(np.float64) / INTENSITY_LEVELS
            self.cache[key] = compile_parts(face_parts(self.identity, q[:-1], float(q[-1])))
        return self.cache[key]


def _generate_video(root: Path, plan: VideoPlan, cfg: SynthConfig) -> dict[str, int]:
    """Render one video with its crops and annotations under ``root``; return counts."""
    rng = np.random.default_rng([cfg.seed, 1, plan.index])
    n, fps = plan.n_frames, plan.fps
    n_labels = n + plan.extra_lines
    subjects: list[_Subject] = []
    voices = []
    for k in range(len(plan.subjects)):
        srng = np.random.default_rng([cfg.seed, 2, plan.index, k])
        identity = sample_identity(srng)
        style = sample_style(srng, cfg.face.expression_gain)
        voices.append(sample_voice(srng))
        timeline = make_timeline(srng, max(n, n_labels), fps, cfg.labels, style)
        degradations = make_degradations(srng, n, fps, cfg.degrade, allow_out_of_frame=len(plan.subjects) == 1)
        subjects.append(_Subject(identity, timeline, degradations, _event_ids(degradations.kind),
                                 _blinks(srng, n, fps), srng))
    scene = make_scene(rng, n, fps, cfg.video.frame_size, cfg.face, n_faces=len(subjects))
    audio = None
    tracks = None
    if plan.has_audio or any(sp.va_split is not None for sp in plan.subjects):
        # The voice is planned for a video without a soundtrack too: the person speaks, the camera
        # has no microphone, and their arousal follows that voice all the same.
        speakers = [(v, s.timeline.expr[:n], s.timeline.expr_level[:n]) for v, s in zip(voices, subjects)]
        arng = np.random.default_rng([cfg.seed, 3, plan.index])
        tracks = voice_tracks(arng, speakers, fps, cfg.audio)
        if plan.has_audio:
            audio = render_voice(arng, tracks, plan.sample_rate, cfg.audio)

    video_path = root / plan.relpath
    video_path.parent.mkdir(parents=True, exist_ok=True)
    crop_dirs = [root / "cropped_aligned" / sp.name for sp in plan.subjects]
    for d in crop_dirs:
        d.mkdir(parents=True, exist_ok=True)
    n_crops = 0
    noise_rng = np.random.default_rng([cfg.seed, 4, plan.index])
    event_looks: list[dict[int, tuple[list[Drawing], float]]] = [{} for _ in subjects]
    with VideoWriter(video_path, fps, cfg.video.frame_size, audio, plan.sample_rate,
                     crf=cfg.video.crf, avi_quality=cfg.video.avi_quality) as writer:
        for i in range(n):
            faces, blur, poses = [], [], []
            for k, subject in enumerate(subjects):
                pose = scene.pose(k, i)
                kind = int(subject.degradations.kind[i])
                variant = int(subject.degradations.variant[i])
                seed = (cfg.seed, 5, plan.index, k, int(subject.event_id[i]))
                extra, radius = _event_look(event_looks[k], subject.identity, seed, kind, variant)
                face = subject.drawing(i)
                shown = _out_of_frame(pose, scene) if kind == MISSING and variant == OUT_OF_FRAME else pose
                faces.append(([face] + extra, shown))
                blur.append(radius)
                poses.append(pose)
            frame = render(scene, i, faces, blur, noise_rng)
            writer.write(frame)
            for k, subject in enumerate(subjects):
                if subject.degradations.kind[i] == MISSING:
                    continue
                face = crop(frame, poses[k], subject.rng, scene.align_jitter_px)
                (crop_dirs[k] / f"{i + 1:05d}.jpg").write_bytes(jpeg_bytes(face, cfg.face.jpeg_quality))
                n_crops += 1

    for sp, subject in zip(plan.subjects, subjects):
        if sp.au_split is not None:
            write_au_file(root / "annotations" / "AU_Set" / SPLIT_DIRS[sp.au_split] / f"{sp.name}.txt",
                          subject.timeline.au_labels[:n_labels])
        if sp.expr_split is not None:
            write_expr_file(root / "annotations" / "EXPR_Set" / SPLIT_DIRS[sp.expr_split] / f"{sp.name}.txt",
                            subject.timeline.expr_labels[:n_labels])
    for k, (sp, subject) in enumerate(zip(plan.subjects, subjects)):
        if sp.va_split is not None and tracks is not None:
            va = _affect(cfg, plan.index, k, subject.timeline, tracks, voices[k], n_labels, fps)
            write_va_file(root / "annotations" / "VA_Set" / SPLIT_DIRS[sp.va_split] / f"{sp.name}.txt", va)
    log.info("video %s: %d frames at %.2f fps, %d crops", plan.stem, n, fps, n_crops)
    return {"subjects": len(subjects), "frames": n, "crops": n_crops}


def _affect(cfg: SynthConfig, video: int, k: int, timeline: Timeline, tracks: VoiceTracks, voice: Voice,
            n_labels: int, fps: float) -> np.ndarray:
    """(n_labels, 2) valence and arousal of subject ``k``, from its own random stream."""
    activity = vocal_activity(tracks, voice, k, n_labels, fps)
    return make_affect(np.random.default_rng([cfg.seed, VA_STREAM, video, k]), timeline.expr[:n_labels],
                       timeline.expr_level[:n_labels], activity, fps, cfg.labels)


def _event_look(cache: dict[int, tuple[list[Drawing], float]], identity: Identity, seed: tuple[int, ...],
                kind: int, variant: int) -> tuple[list[Drawing], float]:
    """Occluder parts and blur radius of one degradation event (fixed for the whole event)."""
    if kind not in (OCCLUDED, BLURRED, MISSING):
        return [], 0.0
    event = seed[-1]
    if event not in cache:
        erng = np.random.default_rng(list(seed))
        if kind == OCCLUDED:
            cache[event] = ([compile_parts(occluder_parts(identity, variant, erng))], 0.0)
        elif kind == BLURRED:
            cache[event] = ([], float(erng.uniform(1.8, 3.5)))
        else:
            cache[event] = ([compile_parts(cover_parts(erng))] if variant != OUT_OF_FRAME else [], 0.0)
    return cache[event]


def _out_of_frame(pose: Pose, scene: Scene) -> Pose:
    """The pose moved mostly out of the picture (the face leaves the frame)."""
    width = scene.frame_shape[1]
    side = -1 if pose.cx < width / 2 else 1
    cx = (width + 0.55 * pose.scale) if side > 0 else -0.55 * pose.scale
    return dataclasses.replace(pose, cx=cx)


def _event_ids(kind: np.ndarray) -> np.ndarray:
    """Number the runs of equal degradation kind."""
    change = np.concatenate([[1], (np.diff(kind) != 0).astype(np.int64)])
    return np.cumsum(change)


def _blinks(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Eyelid closure: a blink (~0.15 s) every 2-6 s."""
    closure = np.zeros(n, dtype=np.float32)
    t = rng.uniform(0.5, 3.0)
    shape = np.array([0.5, 1.0, 1.0, 0.5])
    while t * fps < n:
        i = int(t * fps)
        closure[i:i + 4] = shape[:max(min(4, n - i), 0)]
        t += rng.uniform(2.0, 6.0)
    return closure


def _generate_bp4d(root: Path, cfg: SynthConfig) -> dict[str, int]:
    """The BP4D part: aligned crops rendered directly (lab setting) and AU_OCC CSVs."""
    bc = cfg.bp4d
    labels_cfg = dataclasses.replace(cfg.labels, unlabelled_rate=bc.not_coded_rate)
    total = 0
    for s in range(bc.subjects):
        srng = np.random.default_rng([cfg.seed, 6, s])
        identity = sample_identity(srng)
        style = sample_style(srng, cfg.face.expression_gain)
        subject = f"{'F' if s % 2 == 0 else 'M'}{s // 2 + 1:03d}"
        for t in range(bc.tasks):
            trng = np.random.default_rng([cfg.seed, 7, s, t])
            name = f"{subject}_T{t + 1}"
            timeline = make_timeline(trng, bc.frames, 25.0, labels_cfg, style)
            first = int(trng.integers(1, 60))
            write_bp4d_csv(root / "AU_OCC" / f"{name}.csv", first, timeline.au_labels)
            crops = root / "cropped_aligned" / name
            crops.mkdir(parents=True, exist_ok=True)
            blink = _blinks(trng, bc.frames, 25.0)
            background = tuple(int(v) for v in trng.uniform(60, 140, 3))
            base = aligned_pose(CROP_SIZE * SUPERSAMPLE)
            for i in range(bc.frames):
                canvas = Image.new("RGB", (CROP_SIZE * SUPERSAMPLE,) * 2, background)
                jitter = trng.normal(0, 1.0, 3)
                pose = dataclasses.replace(base, cx=base.cx + jitter[0], cy=base.cy + jitter[1], roll=2 * jitter[2])
                parts = face_parts(identity, timeline.intensity[i], float(blink[i]))
                draw_drawing(ImageDraw.Draw(canvas), compile_parts(parts), pose)
                image = np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float32)
                image = np.clip(image + trng.normal(0, 2.0, image.shape) + 0.5, 0, 255).astype(np.uint8)
                (crops / f"{first + i:05d}.jpg").write_bytes(jpeg_bytes(image, cfg.face.jpeg_quality))
            total += bc.frames
    return {"sequences": bc.subjects * bc.tasks, "frames": total}


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
