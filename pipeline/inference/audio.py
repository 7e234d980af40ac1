"""The TDNN at inference: a video's soundtrack -> one audio embedding per video frame, from ONNX or torch.

An :class:`AudioEmbedder` holds the TDNN (``tdnn.onnx`` through onnxruntime, or ``model.pt``
through torch) together with the audio frontend config it was trained with (stored in the ONNX
metadata and in the checkpoint), so every caller cuts the mel windows the model expects.
:meth:`AudioEmbedder.embed` returns (N, 512) float32 embeddings of a video's frames, zeros where
no audio covers the frame (which is what the audio store holds and the fusion head is trained on).

Both backends share the TDNN's convolutions across the overlapping windows of consecutive frames
(:mod:`pipeline.models.tdnn_spans`): the frame-level layers run once over a span of mel frames covering
a run of video frames, and each frame's window is pooled from it. For ``tdnn.onnx`` the graph is
split at its statistics pooling into a frame-level model (``mel`` -> frame features) and a
projection model (pooled statistics -> ``embedding``); the pooling between them is
:func:`pipeline.models.tdnn.window_statistics`, the torch path's. On loading, the split model is
checked against the whole graph on random windows.

Example (a torch TDNN of random weights):
    >>> import numpy as np
    >>> from pipeline.audio.decode import AudioTrack
    >>> from pipeline.audio.features import AudioConfig
    >>> from pipeline.audio.windows import track_audio
    >>> from pipeline.models.tdnn import TDNN, TDNNConfig
    >>> track = AudioTrack(np.ones(8000, np.float32), 16000, 0.0)         # 0.5 s of audio
    >>> audio = track_audio(track, n_frames=30, fps=30.0, cfg=AudioConfig())
    >>> tdnn = TDNN(TDNNConfig(channels=(8, 8), kernel_sizes=(3, 1), dilations=(1, 1))).eval()
    >>> embedder = AudioEmbedder.from_module(tdnn, AudioConfig())
    >>> embedding = embedder.embed(audio, batch_size=8)
    >>> embedding.shape, bool(embedding[~audio.present].any())
    ((30, 512), False)
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.models.tdnn_spans import SpanBatch, SpanEncoder, encode_frames, encode_spans
from pipeline.audio.features import AudioConfig
from pipeline.audio.windows import VideoAudio
from pipeline.labels import EMBEDDING_DIM
from pipeline.model_files.audio import load_tdnn, read_audio_config, read_model

# the split ONNX path may differ from the whole graph by float32 rounding of the pooling, no more
SPLIT_RTOL = 1e-4


class AudioEmbedder:
    """A video's mel windows -> (N, 512) float32 embeddings, with the audio config they are cut by."""

    def __init__(self, encode: SpanEncoder, audio_config: AudioConfig, source: str) -> None:
        self.encode = encode
        self.audio_config = audio_config
        self.source = source      # the model file, for error messages

    @classmethod
    def from_file(cls, path: str | Path, device: str = "auto", threads: int = 0) -> AudioEmbedder:
        """``tdnn.onnx`` (onnxruntime) or ``model.pt`` (torch), by the file's suffix.

        ``threads`` bounds the compute threads (0: the runtime's default; for torch it sets the
        process-wide count, as dask tasks that each run one model want).
        """
        path = Path(path)
        audio_config = read_audio_config(path)
        if path.suffix == ".onnx":
            return cls(_onnx_span_encoder(path, audio_config, device, threads), audio_config, str(path))
        from pipeline.device import resolve_device

        if threads > 0:
            torch.set_num_threads(threads)
        tdnn = load_tdnn(read_model(path))
        return cls.from_module(tdnn, audio_config, resolve_device(device), str(path))

    @classmethod
    def from_module(cls, tdnn: Any, audio_config: AudioConfig, device: torch.device | str = "cpu",
                    source: str = "TDNN") -> AudioEmbedder:
        """A torch :class:`~pipeline.models.tdnn.TDNN` (put in eval mode on ``device``)."""
        tdnn = tdnn.to(device).eval()

        def encode(batch: SpanBatch) -> np.ndarray:
            with torch.no_grad():
                return encode_spans(tdnn, batch, device).float().cpu().numpy()

        return cls(encode, audio_config, source)

    def embed(self, audio: VideoAudio, batch_size: int = 64) -> np.ndarray:
        """Embeddings (N, 512) float32 of every frame of ``audio``, zeros where ``audio.present`` is False.

        ``batch_size`` consecutive frames share one span of mel frames (memory, not results).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        try:
            return encode_frames(self.encode, audio, EMBEDDING_DIM, chunk_frames=batch_size)
        except ValueError as exc:
            raise ValueError(f"{self.source}: {exc}") from exc


def _onnx_span_encoder(path: Path, audio_config: AudioConfig, device: str, threads: int) -> SpanEncoder:
    """Split ``tdnn.onnx`` at its statistics pooling and pool each window between the two parts."""
    import onnx
    from onnx.utils import Extractor

    from pipeline.model_files.onnx_export import make_session
    from pipeline.models.tdnn import window_statistics

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))   # the extractor needs intermediate types
    frames_name, stats_name = _pooling_tensors(proto, path)
    extractor = Extractor(proto)
    parts = {"frames": extractor.extract_model(["mel"], [frames_name]),
             "project": extractor.extract_model([stats_name], ["embedding"])}
    # Spans are longer than the window the graph was traced with: free the time axis (and the batch)
    # of the parts' inputs and outputs, and drop the traced shapes of intermediate tensors.
    for name, part in parts.items():
        for value in (*part.graph.input, *part.graph.output):
            dims = value.type.tensor_type.shape.dim
            for axis in ((0, 2) if name == "frames" else (0,)):
                if axis < len(dims):
                    dims[axis].dim_param = ("batch", "", "frames")[axis]
        del part.graph.value_info[:]
    with tempfile.TemporaryDirectory(prefix="tdnn-split-") as folder:
        sessions = {}
        for name, part in parts.items():
            onnx.save(part, f"{folder}/{name}.onnx")
            sessions[name] = make_session(f"{folder}/{name}.onnx", device, threads)
        whole = make_session(path, device, threads)

    def encode(batch: SpanBatch) -> np.ndarray:
        frames = sessions["frames"].run([frames_name], {"mel": batch.spans})[0]
        receptive_field = batch.spans.shape[-1] - frames.shape[-1] + 1
        stats = window_statistics(torch.from_numpy(frames), torch.from_numpy(batch.span_index),
                                  torch.from_numpy(batch.offsets), batch.context - receptive_field + 1)
        embedding = sessions["project"].run(["embedding"], {stats_name: stats.numpy()})[0]
        return np.where(batch.present[:, None], embedding, np.float32(0.0)).astype(np.float32, copy=False)

    _check_split(encode, whole, path, audio_config)
    return encode


def _pooling_tensors(proto: Any, path: Path) -> tuple[str, str]:
    """Names of the frame-level features (input of the first ReduceMean) and of the pooled statistics."""
    nodes = list(proto.graph.node)
    means = [node for node in nodes if node.op_type == "ReduceMean"]
    heads = [node for node in nodes if "embedding" in node.output]
    if not means or len(heads) != 1 or not heads[0].input:
        raise ValueError(f"{path}: no statistics pooling followed by an 'embedding' projection found in the "
                         f"graph; was it exported by train-audio?")
    return means[0].input[0], heads[0].input[0]


def _check_split(encode: SpanEncoder, whole: Any, path: Path, audio_config: AudioConfig) -> None:
    """Refuse a split graph whose windows differ from the whole model's beyond float32 rounding."""
    context = audio_config.context_frames
    spans = np.random.default_rng(0).normal(4.0, 2.0, size=(1, audio_config.n_mels, context + 3)).astype(np.float32)
    offsets = np.arange(4, dtype=np.int64)
    split = encode(SpanBatch(spans, np.zeros(4, np.int64), offsets, np.ones(4, bool), context))
    reference = whole.run(["embedding"], {"mel": np.stack([spans[0, :, o:o + context] for o in offsets])})[0]
    diff = float(np.max(np.abs(split - reference)))
    if not diff <= SPLIT_RTOL * max(1.0, float(np.max(np.abs(reference)))):
        raise ValueError(f"{path}: the graph split at its statistics pooling differs from the whole model by "
                         f"{diff:.3g}; re-export it with train-audio")
