"""Label vocabularies of the ABAW2 Action Unit and expression tasks, and the per-frame embedding width."""

from __future__ import annotations

AU_NAMES: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26",
)
EXPR_NAMES: tuple[str, ...] = (
    "Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise",
)
NUM_AUS: int = len(AU_NAMES)
NUM_EXPRS: int = len(EXPR_NAMES)
UNLABELLED: int = -1
TASKS: tuple[str, ...] = ("au", "expr")
# Width of every per-frame embedding: the visual backbone's and the TDNN's output, the embedding
# stores' columns and each modality's block of the sequence model's input.
EMBEDDING_DIM: int = 512
