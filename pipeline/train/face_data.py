"""What face-recognition pretraining trains and verifies on: an identity split of a face set, its
images as a dataset, the verification pairs, and a digest of the set.

The identities of a face set (:func:`pipeline.data.faces.sets.open_face_set`) are split, seeded, into
training identities (renumbered ``0 .. K-1``, the margin head's classes) and held-out identities,
whose images only ever serve verification: pairs of them are scored each epoch, so the metric
measures how the embedding generalises to people it never saw.

Example:
    >>> import numpy as np
    >>> split = split_identities(np.repeat(np.arange(10), 3), holdout_share=0.2, seed=0)
    >>> split.train_identities, split.holdout_identities, len(split.train_images), len(split.holdout_images)
    (8, 2, 24, 6)
    >>> sorted(set(split.train_labels.tolist())) == list(range(8))
    True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.faces.sets import FaceSet, PackedFaceSet
from pipeline.fsio import file_sha256
from pipeline.models.preprocess import IMAGE_SIZE
from pipeline.verification import sample_pairs


@dataclass(frozen=True)
class IdentitySplit:
    """Image indices (into the face set) of the training and held-out identities, with their labels.

    ``train_labels`` are class numbers ``0 .. train_identities-1`` (in the set's identity order);
    ``holdout_labels`` keep the set's own identity labels.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    holdout_images: np.ndarray
    holdout_labels: np.ndarray
    train_identities: int
    holdout_identities: int

    def sizes(self) -> dict[str, int]:
        """Identity and image counts, for logs and the metrics file."""
        return {"train_identities": self.train_identities, "holdout_identities": self.holdout_identities,
                "train_images": len(self.train_images), "holdout_images": len(self.holdout_images)}


def split_identities(labels: np.ndarray, holdout_share: float, seed: int) -> IdentitySplit:
    """Hold out ``round(holdout_share * identities)`` identities (at least 2), drawn with ``seed``.

    At least 2 identities stay for training (the margin head needs two classes). Raises
    ``ValueError`` when the set has fewer than 4 identities.
    """
    labels = np.asarray(labels, dtype=np.int64)
    identities = np.unique(labels)
    if len(identities) < 4:
        raise ValueError(f"need >= 4 identities (2 to train, 2 to verify), got {len(identities)}")
    if not 0.0 < holdout_share < 1.0:
        raise ValueError(f"holdout_share must be in (0, 1), got {holdout_share}")
    count = min(max(2, round(holdout_share * len(identities))), len(identities) - 2)
    held = np.sort(np.random.default_rng([seed, 1]).choice(identities, count, replace=False))
    is_held = np.isin(labels, held)
    train_ids = identities[~np.isin(identities, held)]
    train_images = np.nonzero(~is_held)[0]
    return IdentitySplit(
        train_images=train_images,
        train_labels=np.searchsorted(train_ids, labels[train_images]),
        holdout_images=np.nonzero(is_held)[0],
        holdout_labels=labels[is_held],
        train_identities=len(train_ids),
        holdout_identities=count,
    )


@dataclass(frozen=True)
class VerificationPairs:
    """Pairs of held-out images: ``images`` (unique face-set indices to embed) and, per pair, the
    positions of its two images in ``images`` and whether they show one identity."""

    images: np.ndarray
    first: np.ndarray
    second: np.ndarray
    same: np.ndarray


def verification_pairs(split: IdentitySplit, pairs_per_kind: int, seed: int) -> VerificationPairs:
    """``pairs_per_kind`` same-identity and as many different-identity pairs of held-out images."""
    first, second, same = sample_pairs(split.holdout_labels, pairs_per_kind, seed)
    used, inverse = np.unique(np.concatenate([first, second]), return_inverse=True)
    return VerificationPairs(images=split.holdout_images[used], first=inverse[:len(first)],
                             second=inverse[len(first):], same=same)


def image_where(faces: FaceSet, index: int) -> str:
    """The file (and record) holding image ``index`` of ``faces``, for error messages."""
    if isinstance(faces, PackedFaceSet):
        return f"{faces.rec_path}: record {int(faces.keys[index])}"
    return str(faces.paths[index])


class FaceImages(Dataset):
    """``faces[indices[k]]`` as ``(image (112, 112, 3) uint8 tensor, labels[k])``; safe in DataLoader
    workers (the packed reader reopens its file per process)."""

    def __init__(self, faces: FaceSet, indices: np.ndarray, labels: np.ndarray) -> None:
        if len(indices) != len(labels):
            raise ValueError(f"{len(indices)} indices but {len(labels)} labels")
        self.faces, self.indices, self.labels = faces, np.asarray(indices), np.asarray(labels)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        index = int(self.indices[k])
        image, _ = self.faces[index]
        if image.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"{image_where(self.faces, index)}: image is {'x'.join(map(str, image.shape))}, "
                             f"expected aligned {IMAGE_SIZE}x{IMAGE_SIZE}x3 faces")
        return torch.from_numpy(image), int(self.labels[k])


def face_set_digest(faces: FaceSet) -> str:
    """sha256 of what the set holds: the ``.rec`` and ``.idx`` bytes, or every image file's relative
    path and bytes (so a resumed run never continues on other data)."""
    digest = hashlib.sha256()
    if isinstance(faces, PackedFaceSet):
        digest.update(file_sha256(faces.rec_path).encode())
        digest.update(file_sha256(faces.idx_path).encode())
        return digest.hexdigest()
    for path in faces.paths:
        digest.update(str(Path(path).relative_to(faces.root)).encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def shuffled_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """``labels`` permuted across images, drawn with ``seed``: each class keeps its image count, but an
    image's label no longer says who it shows (the shuffled-identity control of pretraining).

    Example:
        >>> labels = np.repeat(np.arange(3), 4)
        >>> shuffled = shuffled_labels(labels, seed=0)
        >>> np.bincount(shuffled).tolist(), bool((shuffled != labels).any())
        ([4, 4, 4], True)
    """
    labels = np.asarray(labels)
    return labels[np.random.default_rng([seed, 3]).permutation(len(labels))]
