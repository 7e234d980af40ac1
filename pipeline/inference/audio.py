"""The TDNN at inference: a video's soundtrack -> one audio embedding per video frame, from ONNX or torch.

An :class:`AudioEmbedder` holds the TDNN (``tdnn.onnx`` through onnxruntime, or ``model.pt``
through torch) together with the audio frontend config it was trained with (stored in the ONNX
metadata and in the checkpoint), so every caller cuts the mel windows the model expects.
:meth:`AudioEmbedder.embed` returns (N, 512) float32 embeddings of a video's frames, zeros where
no audio covers the frame (which is what the audio store holds and the fusion head is trained on).

Example:
    >>> import numpy as np
    >>> from pipeline.audio.decode import AudioTrack
    >>> from pipeline.audio.features import AudioConfig
    >>> from pipeline.audio.windows import track_audio
    >>> track = AudioTrack(np.zeros(8000, np.float32), 16000, 0.0)        # 0.5 s of audio
    >>> audio = track_audio(track, n_frames=30, fps=30.0, cfg=AudioConfig())
    >>> embedder = AudioEmbedder(lambda mel: np.ones((len(mel), 512), np.float32), AudioConfig(), "a stand-in")
    >>> embedding = embedder.embed(audio, batch_size=8)
    >>> embedding.shape, bool(embedding[audio.present].all()), bool(embedding[~audio.present].any())
    ((30, 512), True, False)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import VideoAudio
from pipeline.config import from_dict
from pipeline.inference.loading import read_checkpoint, read_onnx_metadata
from pipeline.labels import EMBEDDING_DIM

ONNX_NAME = "tdnn.onnx"
CHECKPOINT_NAME = "model.pt"
BACKEND_FILES: dict[str, str] = {"onnx": ONNX_NAME, "torch": CHECKPOINT_NAME}
STAGE = "train-audio"
MelFn = Callable[[np.ndarray], np.ndarray]


def audio_model_path(model_dir: str | Path, backend: str) -> Path:
    """The ``train-audio`` output file a backend runs: ``tdnn.onnx`` (onnx) or ``model.pt`` (torch)."""
    if backend not in BACKEND_FILES:
        raise ValueError(f"audio backend must be one of {sorted(BACKEND_FILES)}, got {backend!r}")
    return Path(model_dir) / BACKEND_FILES[backend]


def load_audio_config(path: str | Path) -> AudioConfig:
    """The audio frontend config a TDNN was trained with, from ``tdnn.onnx``'s metadata or ``model.pt``."""
    path = Path(path)
    if path.suffix == ".onnx":
        meta = read_onnx_metadata(path, ("audio_config",), STAGE)
        return from_dict(AudioConfig, meta["audio_config"], where=f"{path}:audio_config")
    from pipeline.models.fusion import load_audio_config as from_checkpoint

    return from_checkpoint(read_checkpoint(path, "audio model", STAGE))


class AudioEmbedder:
    """Mel windows (B, n_mels, C) float32 -> (B, 512) float32, with the audio config they are cut by."""

    def __init__(self, run_windows: MelFn, audio_config: AudioConfig, source: str) -> None:
        self.run_windows = run_windows
        self.audio_config = audio_config
        self.source = source      # the model file, for error messages

    @classmethod
    def from_file(cls, path: str | Path, device: str = "auto", threads: int = 0) -> AudioEmbedder:
        """``tdnn.onnx`` (onnxruntime) or ``model.pt`` (torch), by the file's suffix.

        ``threads`` bounds the compute threads (0: the runtime's default; for torch it sets the
        process-wide count, as dask tasks that each run one model want).
        """
        path = Path(path)
        audio_config = load_audio_config(path)
        if path.suffix == ".onnx":
            from pipeline.export import make_session

            session = make_session(path, device, threads)
            return cls(lambda mel: session.run(["embedding"], {"mel": mel})[0], audio_config, str(path))
        import torch

        from pipeline.device import resolve_device
        from pipeline.models.fusion import load_tdnn

        torch_device = resolve_device(device)
        if threads > 0:
            torch.set_num_threads(threads)
        tdnn = load_tdnn(read_checkpoint(path, "audio model", STAGE)).to(torch_device)

        def run(mel: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return tdnn(torch.from_numpy(mel).to(torch_device)).float().cpu().numpy()

        return cls(run, audio_config, str(path))

    def embed(self, audio: VideoAudio, batch_size: int = 64) -> np.ndarray:
        """Embeddings (N, 512) float32 of every frame of ``audio``, zeros where ``audio.present`` is False."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        embedding = np.zeros((audio.n_frames, EMBEDDING_DIM), np.float32)
        frames = np.flatnonzero(audio.present)
        for start in range(0, len(frames), batch_size):
            batch = frames[start:start + batch_size]
            values = np.asarray(self.run_windows(audio.windows(batch).mel))
            if values.shape != (len(batch), EMBEDDING_DIM):
                raise ValueError(f"{self.source}: embedding has shape {values.shape}, expected "
                                 f"({len(batch)}, {EMBEDDING_DIM})")
            embedding[batch] = values
        return embedding
