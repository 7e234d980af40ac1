"""The sequence model's input contract: which columns of a frame's feature vector hold what.

``compose_features`` is the one place the sequence model's per-frame input is defined
(concatenation fusion). For each selected modality, in the order visual then audio, the frame's
E-dimensional embedding (E = :data:`~pipeline.labels.EMBEDDING_DIM`, 512) is followed by that
modality's presence flag (1.0 present, 0.0 missing)::

    modalities="visual":  [visual (E) | face_present (1)]                               D = E + 1
    modalities="audio":   [audio (E) | audio_present (1)]                               D = E + 1
    modalities="both":    [visual (E) | face_present (1) | audio (E) | audio_present (1)] D = 2E + 2

The flags let the model tell "no face / no audio" apart from an embedding that happens to be small;
embeddings of missing frames are forced to zero, whatever the store holds. Training
(:mod:`pipeline.train.sequence_data`), evaluation and prediction all compose their input here.

Example:
    >>> import numpy as np
    >>> visual, audio = np.ones((50, 512), np.float16), np.zeros((50, 512), np.float16)
    >>> present = np.ones(50, bool)
    >>> feats = compose_features(visual, audio, present, ~present, "both")
    >>> feats.shape, feats.dtype
    ((50, 1026), dtype('float32'))
    >>> [(block["name"], block["start"]) for block in feature_layout("both")]
    [('visual', 0), ('face_present', 512), ('audio', 513), ('audio_present', 1025)]
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from pipeline.labels import EMBEDDING_DIM

Modalities = Literal["visual", "audio", "both"]
MODALITIES: tuple[str, ...] = ("visual", "audio", "both")

# the presence flag that follows each modality's embedding in the feature vector
PRESENCE_FLAGS: dict[str, str] = {"visual": "face_present", "audio": "audio_present"}


def selected_modalities(modalities: str) -> tuple[str, ...]:
    """The modalities whose blocks make up the feature vector, in layout order (visual first)."""
    if modalities not in MODALITIES:
        raise ValueError(f"modalities must be one of {MODALITIES}, got {modalities!r}")
    return ("visual", "audio") if modalities == "both" else (modalities,)


def feature_layout(modalities: str, embedding_dim: int = EMBEDDING_DIM) -> list[dict[str, Any]]:
    """The blocks of the composed feature vector: ``[{"name", "start", "stop"}, ...]`` in order."""
    layout, start = [], 0
    for modality in selected_modalities(modalities):
        layout.append({"name": modality, "start": start, "stop": start + embedding_dim})
        layout.append({"name": PRESENCE_FLAGS[modality], "start": start + embedding_dim,
                       "stop": start + embedding_dim + 1})
        start += embedding_dim + 1
    return layout


def feature_dim(modalities: str, embedding_dim: int = EMBEDDING_DIM) -> int:
    """Width D of the composed feature vector for ``modalities``."""
    return feature_layout(modalities, embedding_dim)[-1]["stop"]


def write_modality(
    out: np.ndarray, modalities: str, modality: str, embedding: np.ndarray | None, present: np.ndarray | None
) -> None:
    """Write ``modality``'s embedding (..., E) and presence flag (...,) into its columns of ``out`` (..., D).

    Frames whose flag is false get a zero embedding, whatever the store holds.
    """
    flag = PRESENCE_FLAGS[modality]
    if embedding is None or present is None:
        raise ValueError(f"modality {modality!r} is selected but its {modality} embedding or {flag} is None")
    blocks = {block["name"]: block for block in feature_layout(modalities, np.shape(embedding)[-1])}
    if modality not in blocks or out.shape[-1] != max(b["stop"] for b in blocks.values()):
        raise ValueError(f"{out.shape[-1]} feature columns do not hold modality {modality!r} of layout {modalities!r}")
    embedding, present = np.asarray(embedding), np.asarray(present, dtype=bool)
    if embedding.shape[:-1] != out.shape[:-1] or present.shape != out.shape[:-1]:
        raise ValueError(
            f"{modality} embedding shape {embedding.shape} and {flag} shape {present.shape} do not match "
            f"the frames {out.shape[:-1]}"
        )
    start, stop = blocks[modality]["start"], blocks[modality]["stop"]
    out[..., start:stop] = embedding          # casts (float16 -> float32) while copying
    if not present.all():
        out[..., start:stop][~present] = 0
    out[..., blocks[flag]["start"]] = present


def compose_features(
    visual: np.ndarray | None,
    audio: np.ndarray | None,
    face_present: np.ndarray | None,
    audio_present: np.ndarray | None,
    modalities: Modalities,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Concatenate the selected modalities' embeddings and presence flags: (..., D) of ``dtype``.

    ``visual``/``audio`` are (..., E) (any float dtype, float16 from the stores), the flags (...,)
    bool. The leading shape is free, so a (N, E) video or a (B, L, E) batch of windows both work.
    Inputs of an unselected modality may be ``None``. ``dtype=np.float16`` keeps a batch at the
    stores' precision (the training loader converts it on the device).
    """
    inputs = {"visual": (visual, face_present), "audio": (audio, audio_present)}
    selected = selected_modalities(modalities)
    first = inputs[selected[0]][0]
    if first is None:
        raise ValueError(f"modality {selected[0]!r} is selected but its {selected[0]} embedding is None")
    width = feature_dim(modalities, np.shape(first)[-1])
    out = np.empty(np.shape(first)[:-1] + (width,), dtype=dtype)
    for modality in selected:
        write_modality(out, modalities, modality, *inputs[modality])
    return out
