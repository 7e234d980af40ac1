"""The generated tiny dataset: layout, every required case, determinism, labels agreeing with crops."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pipeline.data.synth import SynthConfig, generate_dataset
from pipeline.labels import AU_NAMES, EXPR_NAMES, UNLABELLED

SETS = ("Train_Set", "Validation_Set")


def _annotations(root: Path, task: str) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (set, labels) for one task ("AU_Set" or "EXPR_Set")."""
    out = {}
    for split in SETS:
        for path in sorted((root / "annotations" / task / split).glob("*.txt")):
            lines = path.read_text().splitlines()
            header = ",".join(AU_NAMES) if task == "AU_Set" else ",".join(EXPR_NAMES)
            assert lines[0] == header, path
            out[path.stem] = (split, np.array([[int(v) for v in line.split(",")] for line in lines[1:]]))
    return out


def _videos(root: Path) -> dict[str, Path]:
    return {p.stem: p for p in (root / "videos").rglob("*") if p.suffix in (".mp4", ".avi")}


def _video_facts(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n = sum(1 for _ in container.decode(video=0))
        audio = container.streams.audio[0] if container.streams.audio else None
        return {"frames": n, "fps": float(stream.average_rate), "codec": stream.codec_context.name,
                "audio": audio.codec_context.name if audio else None, "size": (stream.width, stream.height)}


def _base(name: str) -> str:
    for suffix in ("_left", "_right", "_main"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_layout_and_annotation_values(tiny_root: Path) -> None:
    au, expr = _annotations(tiny_root, "AU_Set"), _annotations(tiny_root, "EXPR_Set")
    for _, labels in au.values():
        assert labels.shape[1] == 12 and set(np.unique(labels)) <= {-1, 0, 1}
        assert np.all((labels == -1).any(1) == (labels == -1).all(1))
    for _, labels in expr.values():
        assert labels.shape[1] == 1 and set(np.unique(labels)) <= set(range(-1, 7))
    videos = _videos(tiny_root)
    for name in set(au) | set(expr):
        assert _base(name) in videos, f"annotation {name} has no video"
        assert (tiny_root / "cropped_aligned" / name).is_dir()


def test_every_required_case_is_present(tiny_root: Path) -> None:
    au, expr = _annotations(tiny_root, "AU_Set"), _annotations(tiny_root, "EXPR_Set")
    videos = {stem: _video_facts(path) for stem, path in _videos(tiny_root).items()}
    assert any(v["audio"] is None for v in videos.values()), "a video without audio"
    assert {"h264"} <= {v["codec"] for v in videos.values()}
    assert any(p.suffix == ".avi" for p in _videos(tiny_root).values())
    assert any(v["audio"] == "aac" for v in videos.values())
    fps = {round(v["fps"], 2) for v in videos.values()}
    assert {25.0, 30.0, 29.97} <= fps
    assert any(n.endswith("_left") for n in au) and any(n.endswith("_right") for n in au)
    assert set(au) - set(expr) and set(expr) - set(au), "AU-only and EXPR-only videos"
    for task in (au, expr):
        assert {split for split, _ in task.values()} == set(SETS)
    leaks = [n for n in au if au[n][0] == "Train_Set" and n in expr and expr[n][0] == "Validation_Set"]
    assert leaks, "a video in AU train and EXPR validation"
    assert any((labels == UNLABELLED).any() for _, labels in au.values())
    assert any((labels == UNLABELLED).any() for _, labels in expr.values())
    assert all(v["size"] == (256, 256) for v in videos.values())


def test_annotation_lines_match_video_frames_and_some_crops_are_missing(tiny_root: Path) -> None:
    au, expr = _annotations(tiny_root, "AU_Set"), _annotations(tiny_root, "EXPR_Set")
    videos = {stem: _video_facts(path) for stem, path in _videos(tiny_root).items()}
    deltas, missing = [], 0
    for name, (_, labels) in {**au, **expr}.items():
        n_video = videos[_base(name)]["frames"]
        deltas.append(len(labels) - n_video)
        crops = {int(p.stem) for p in (tiny_root / "cropped_aligned" / name).glob("*.jpg")}
        assert crops <= set(range(1, n_video + 1)), name
        missing += n_video - len(crops)
    assert sorted(set(deltas)) == [0, 1], "all annotations match their video except one off by one line"
    assert missing > 0


def test_two_subject_video_has_two_faces_with_own_crops(tiny_root: Path) -> None:
    au = _annotations(tiny_root, "AU_Set")
    left = next(n for n in au if n.endswith("_left"))
    right = left[: -len("_left")] + "_right"
    assert right in au and not np.array_equal(au[left][1], au[right][1])
    crop_l = np.asarray(Image.open(tiny_root / "cropped_aligned" / left / "00001.jpg"), dtype=np.float32)
    crop_r = np.asarray(Image.open(tiny_root / "cropped_aligned" / right / "00001.jpg"), dtype=np.float32)
    assert np.abs(crop_l - crop_r).mean() > 10


def test_crops_are_112_rgb_jpegs(tiny_root: Path) -> None:
    paths = sorted((tiny_root / "cropped_aligned").rglob("*.jpg"))[::25]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.size == (112, 112) and image.mode == "RGB"


def test_bp4d_part(tiny_root: Path) -> None:
    csvs = sorted((tiny_root / "BP4D" / "AU_OCC").glob("*.csv"))
    assert csvs
    for path in csvs:
        rows = [line.split(",") for line in path.read_text().splitlines()]
        assert rows[0] == ["0", "1", "2", "4", "6", "7", "10", "12", "14", "15", "17", "23", "24"]
        values = {int(v) for row in rows[1:] for v in row[1:]}
        assert values <= {0, 1, 9} and 9 in values
        for row in rows[1:]:
            assert (tiny_root / "BP4D" / "cropped_aligned" / path.stem / f"{int(row[0]):05d}.jpg").is_file()


def test_summary_matches_the_files(tiny_root: Path) -> None:
    summary = json.loads((tiny_root / "synth_summary.json").read_text())
    assert summary["videos"] == len(_videos(tiny_root))
    assert summary["crops"] == len(list((tiny_root / "cropped_aligned").rglob("*.jpg")))
    assert summary["config"]["preset"] == "tiny"


def _digest(root: Path, pattern: str) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob(pattern)):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_differs(tiny_root: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_dataset(again, SynthConfig.from_preset("tiny", seed=0))
    for pattern in ("*.txt", "*.jpg", "*.csv", "*.mp4", "*.avi"):
        assert _digest(again, pattern) == _digest(tiny_root, pattern), pattern
    other = tmp_path / "other"
    cfg = SynthConfig.from_params({"preset": "tiny", "seed": 1, "video": {"required_duration_s": [0.6, 0.8]}})
    generate_dataset(other, cfg)
    assert _digest(other, "*.txt") != _digest(tiny_root, "*.txt")


@pytest.mark.slow
def test_labels_agree_with_what_the_crops_show(tmp_path: Path) -> None:
    """Under a still camera and noiseless labels, labelled AUs change the crop where they should.

    Frames whose labelled AUs are all brow AUs (AU1/2/4) or all lower-face AUs are compared with the
    subject's neutral face in a brow window and a mouth window (eyes, where blinks happen, left out).
    """
    cfg = SynthConfig.from_params({
        "preset": "tiny", "seed": 5,
        "video": {"required_duration_s": [3.0, 3.0]},
        "face": {"roll_deg": 0.0, "yaw_deg": 0.0, "shift_px": 0.0, "scale_jitter": 0.0, "light_gain": [1.0, 1.0],
                 "light_gradient": 0.0, "light_change_per_min": 0.0, "noise_std": [0.0, 0.0],
                 "align_jitter_px": 0.0},
        "labels": {"boundary_jitter_frames": 0, "au_flip_rate": 0.0, "expr_swap_rate": 0.0, "unlabelled_rate": 0.0,
                   "spontaneous_au_per_min": 60.0},
        "degrade": {"occlusion_rate": 0.0, "blur_rate": 0.0, "missing_rate": 0.0},
        "bp4d": {"frames": 2},
    })
    root = tmp_path / "clean"
    generate_dataset(root, cfg)
    upper, lower = {0, 1, 2}, {5, 6, 7, 8, 9, 10, 11}     # AU1/2/4 and AU10..AU26 (indices)
    change: dict[str, list[tuple[float, float]]] = {"upper": [], "lower": [], "none": []}
    expr = _annotations(root, "EXPR_Set")
    for name, (_, labels) in _annotations(root, "AU_Set").items():
        if name not in expr:
            continue
        neutral = (expr[name][1][: len(labels), 0] == 0) & (labels == 0).all(1)
        crops = {int(p.stem) - 1: p for p in (root / "cropped_aligned" / name).glob("*.jpg")}
        images = {i: np.asarray(Image.open(p), dtype=np.float32) for i, p in crops.items() if i < len(labels)}
        reference = np.median(np.stack([images[i] for i in images if neutral[i]]), axis=0)
        for i, image in images.items():
            on = set(np.flatnonzero(labels[i] == 1).tolist())
            group = "none" if neutral[i] else "upper" if on and on <= upper else "lower" if on and on <= lower else None
            if group:
                diff = np.abs(image - reference).mean(-1)
                change[group].append((float(diff[14:40, 15:97].mean()), float(diff[66:100, 28:84].mean())))
    assert min(len(v) for v in change.values()) >= 5, {g: len(v) for g, v in change.items()}
    brows = {g: np.mean(v, axis=0)[0] for g, v in change.items()}
    mouth = {g: np.mean(v, axis=0)[1] for g, v in change.items()}
    assert brows["upper"] > 2 * brows["lower"] and brows["upper"] > 3 * brows["none"], brows
    assert mouth["lower"] > 1.3 * mouth["upper"] and mouth["lower"] > 2 * mouth["none"], mouth
