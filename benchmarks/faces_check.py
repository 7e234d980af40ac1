"""What ``faces-info``'s check of every image costs: wall time per image, packed and folder layouts.

Writes a face set of ``--images`` 112x112 JPEGs (``--per-identity`` each) in both layouts under a
temporary directory, then times :func:`pipeline.data.faces.sets.face_set_info` (which checks every
record's framing, IRHeader, label and JPEG start, or every folder image's JPEG header) ``--repeats``
times and keeps the fastest. The files were just written, so they are read from the page cache: a
cold disk adds its read time (one small read per record, one file open per folder image). Prints JSON.

    python -m benchmarks.faces_check --images 20000
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.faces.sets import face_set_info
from pipeline.data.faces.writers import FolderFaceSetWriter, PackedFaceSetWriter
from tooling.bench import harness


def jpegs(n: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct 112x112 noise JPEGs (quality 90, about 10 KB each)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def write_sets(root: Path, images: int, per_identity: int) -> tuple[Path, Path]:
    """The same images as ``root/rec`` (packed) and ``root/folder``; return both paths."""
    samples = jpegs(64)
    identities = images // per_identity
    folder = FolderFaceSetWriter(root / "folder", identities)
    with PackedFaceSetWriter(root / "rec", [per_identity] * identities) as packed:
        for i in range(identities * per_identity):
            packed.add(i // per_identity, samples[i % len(samples)])
            folder.add(i // per_identity, samples[i % len(samples)])
    return root / "rec", root / "folder"


def fastest(path: Path, repeats: int) -> float:
    """Fastest wall time (s) of ``face_set_info(path)``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        face_set_info(path)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Parse the options, write the sets, time the checks, print the JSON figures."""
    parser = harness.parser("faces_check", __doc__, out=False)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--per-identity", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rec, folder = write_sets(Path(tmp), args.images, args.per_identity)
        images = face_set_info(rec)["images"]
        figures = {"images": images, "rec_bytes": (rec / "train.rec").stat().st_size}
        for name, path in (("rec", rec), ("folder", folder)):
            seconds = fastest(path, args.repeats)
            figures[f"{name}_seconds"] = round(seconds, 3)
            figures[f"{name}_us_per_image"] = round(1e6 * seconds / images, 1)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
