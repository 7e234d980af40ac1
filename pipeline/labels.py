"""Label vocabularies of the ABAW2 tasks (Action Units, expressions, valence-arousal) and the embedding width."""

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
# The tasks the models predict: every trainer, selection and score loops over these. ``va`` is
# continuous valence and arousal, each in [-1, 1] (NaN where unlabelled).
TASKS: tuple[str, ...] = ("au", "expr", "va")
CLASSIFICATION_TASKS: tuple[str, ...] = ("au", "expr")
VA_NAMES: tuple[str, ...] = ("valence", "arousal")
NUM_VA: int = len(VA_NAMES)
VA_RANGE: tuple[float, float] = (-1.0, 1.0)
VA_FILE_UNLABELLED: float = -5.0   # what a VA_Set file writes for an unlabelled frame (stored as NaN)
# Every task an Aff-Wild2 copy annotates: what prepare reads, splits and reports.
ANNOTATED_TASKS: tuple[str, ...] = TASKS
# Width of every per-frame embedding: the visual backbone's and the TDNN's output, the embedding
# stores' columns and each modality's block of the sequence model's input.
EMBEDDING_DIM: int = 512
