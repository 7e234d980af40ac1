"""Make the README's overlay example: two real faces, predicted with ``mmaffect predict --overlay``, one frame saved.

Builds a 2 s, 25 frames/s, 640x360 video (with a tone track) of two photographs shipped with installed
packages (scikit-image's astronaut, matplotlib's Grace Hopper; :mod:`pipeline.faces.moving_photos`),
runs ``mmaffect predict`` on it with ``--overlay`` and ``--timelines``, and saves one frame of the
overlay as a PNG. Prints the predict command it ran and what it wrote, as JSON.

    python docs/make_overlay_example.py --models-dir cache --work /tmp/overlay-example \
        --png docs/images/predict_overlay.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.video import decode_frames
from pipeline.faces.moving_photos import astronaut, grace_hopper, located_faces, side_by_side_photos
from pipeline.data.synth.photo_video import write_frames_video

N_FRAMES, FPS, SIZE = 50, 25, (640, 360)


def make_video(path: Path) -> Path:
    """The two photographs side by side, drifting right by 1 px per frame, with a tone track."""
    photos = located_faces([astronaut(), grace_hopper()])
    frames = side_by_side_photos(photos, n_frames=N_FRAMES, size=SIZE, face_px=120.0, drift=1.0)
    return write_frames_video(path, frames, fps=FPS)


def save_frame(video: Path, index: int, png: Path) -> Path:
    """Save frame ``index`` of ``video`` as a palette PNG (small enough to commit)."""
    for i, (_, _, pixels) in enumerate(decode_frames(video)):
        if i == index:
            image = Image.fromarray(pixels)
            break
    else:
        raise ValueError(f"{video}: no frame {index}")
    png.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(png, optimize=True)
    return png


def main() -> None:
    """Make the video, predict it with the overlay, save one overlay frame; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default="cache", help="the pipeline's cache folder with the ONNX models")
    parser.add_argument("--work", default="overlay-example", help="folder for the video, CSV, timelines, overlay")
    parser.add_argument("--png", default="docs/images/predict_overlay.png", help="where the overlay frame goes")
    parser.add_argument("--frame", type=int, default=N_FRAMES // 2, help="index of the overlay frame to save")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    work = Path(args.work)
    video = make_video(work / "two_faces.mp4")
    overlay = work / "two_faces_overlay.mp4"
    command = ["mmaffect", "predict", str(video), "--out", str(work / "predictions"), "--models-dir",
               args.models_dir, "--device", args.device, "--overlay", str(overlay), "--timelines", "--redo"]
    # the CLI as a user runs it (python -m stages.cli is what the mmaffect script starts)
    subprocess.run([sys.executable, "-m", "stages.cli", *command[1:]], check=True)
    png = save_frame(overlay, args.frame, Path(args.png))
    with Image.open(png) as image:
        size = image.size
    print(json.dumps({
        "command": " ".join(command), "video": str(video), "overlay": str(overlay),
        "timelines": sorted(str(p) for p in (work / "predictions").glob("*.png")),
        "png": str(png), "png_bytes": png.stat().st_size, "png_size": list(size), "frame": args.frame,
        "frame_pixels_changed": _changed_share(video, overlay, args.frame),
    }, indent=2))


def _changed_share(video: Path, overlay: Path, index: int) -> float:
    """Share of the frame's pixels the overlay changed by more than re-encoding does (a check the faces were drawn)."""
    def frame(path: Path) -> np.ndarray:
        for i, (_, _, pixels) in enumerate(decode_frames(path)):
            if i == index:
                return pixels.astype(int)
        raise ValueError(f"{path}: no frame {index}")

    return round(float((np.abs(frame(video) - frame(overlay)).sum(axis=2) > 60).mean()), 4)


if __name__ == "__main__":
    main()
