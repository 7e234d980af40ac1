"""One PNG timeline per followed face of a predicted video: its AU probabilities and expression over time.

Drawn by evaluate's :func:`pipeline.evaluate.plots.plot_timeline` without the true rows: the AU
probabilities as a heat map, the most probable expression as a line, the frames where that face was
not followed shaded (and left grey / blank: there is no prediction of that face there).

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from pipeline.predict.video import FacePrediction
    >>> face = FacePrediction(3, np.arange(2, 8), np.full((6, 12), 0.4), np.eye(7)[[0, 0, 4, 4, 4, 6]])
    >>> [p.name for p in write_timelines(pathlib.Path(tempfile.mkdtemp()), "clip", [face], 10, 25.0)]
    ['clip_face3.png']
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline.evaluate.plots import plot_timeline
from pipeline.labels import NUM_AUS


def timeline_path(folder: str | Path, stem: str, face_id: int) -> Path:
    """Where the timeline of face ``face_id`` of video ``stem`` goes: ``folder/<stem>_face<id>.png``."""
    return Path(folder) / f"{stem}_face{face_id}.png"


def write_timelines(folder: str | Path, stem: str, predictions: Iterable[object], n_frames: int,
                    fps: float | None) -> list[Path]:
    """Write ``<stem>_face<id>.png`` for every face id of ``predictions`` (FacePrediction); return the paths.

    The rows of frames without any face (``face_id`` None) have no timeline of their own.
    """
    paths = []
    for pred in predictions:
        if pred.face_id is None:
            continue
        frames = np.asarray(pred.frames, np.int64)
        if len(frames) and (frames.min() < 0 or frames.max() >= n_frames):
            raise ValueError(f"{stem}: face {pred.face_id} has frames outside 0..{n_frames - 1}")
        au = np.full((n_frames, NUM_AUS), np.nan)
        au[frames] = pred.au_prob
        expression = np.full(n_frames, np.nan)
        expression[frames] = np.argmax(pred.expr_prob, axis=1)
        present = np.zeros(n_frames, bool)
        present[frames] = True
        paths.append(plot_timeline(f"{stem}, face {pred.face_id}", None, au, None, {"sequence": expression},
                                   timeline_path(folder, stem, pred.face_id), fps=fps or None,
                                   face_present=present))
    return paths
