"""The visual model at inference: face crops -> embedding, AU/expression logits and valence-arousal,
from ONNX or torch.

A :class:`VisualEmbedder` maps normalised crops (B, 3, 112, 112) float32
(:func:`pipeline.models.preprocess.to_model_input`) to ``embedding`` (B, 512), ``au_logits``
(B, 12), ``expr_logits`` (B, 7) and ``va_pred`` (B, 2), all float32, from ``visual.onnx``
(onnxruntime, the stages' path) or ``cache/visual/model.pt`` (torch). :func:`embed_batches` runs it over batches of crops,
decoding the next batch in a thread while the model computes (onnxruntime and torch release the
GIL), and returns the stacked outputs with the seconds spent in the model and waiting for crops.

Example:
    >>> import numpy as np
    >>> def model(images):
    ...     k = len(images)
    ...     return {"embedding": np.zeros((k, 512), np.float32), "au_logits": np.zeros((k, 12), np.float32),
    ...             "expr_logits": np.zeros((k, 7), np.float32), "va_pred": np.zeros((k, 2), np.float32)}
    >>> embedder = VisualEmbedder(model, "a stand-in")
    >>> crops = lambda n: np.zeros((n, 112, 112, 3), np.uint8)
    >>> outputs, timing = embed_batches(embedder, crops, [3, 2])
    >>> {name: value.shape for name, value in outputs.items()}
    {'embedding': (5, 512), 'au_logits': (5, 12), 'expr_logits': (5, 7), 'va_pred': (5, 2)}
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from pipeline.labels import EMBEDDING_DIM, NUM_AUS, NUM_EXPRS, NUM_VA
from pipeline.models.preprocess import to_model_input

INPUT_NAME = "image"
OUTPUT_WIDTHS: dict[str, int] = {"embedding": EMBEDDING_DIM, "au_logits": NUM_AUS, "expr_logits": NUM_EXPRS,
                                 "va_pred": NUM_VA}
OUTPUT_NAMES: tuple[str, ...] = tuple(OUTPUT_WIDTHS)
T = TypeVar("T")
R = TypeVar("R")
BatchFn = Callable[[np.ndarray], dict[str, np.ndarray]]


class VisualEmbedder:
    """Normalised crops (B, 3, 112, 112) float32 -> ``{embedding, au_logits, expr_logits, va_pred}`` float32."""

    def __init__(self, run_batch: BatchFn, source: str) -> None:
        self.run_batch = run_batch
        self.source = source      # the model file, for error messages

    @classmethod
    def from_onnx(cls, path: str | Path, device: str = "auto", threads: int = 0,
                  io_binding: bool | None = None) -> VisualEmbedder:
        """``visual.onnx`` (or its ``.fp16.onnx`` copy) through onnxruntime (``threads=0``: its default).

        ``io_binding`` (default: when the session runs on CUDA) binds inputs and outputs on the
        session's device (:class:`~pipeline.inference.binding.BoundRunner`) instead of ``session.run``.
        """
        from pipeline.model_files.onnx_export import make_session
        from pipeline.inference.binding import BoundRunner, session_device

        session = make_session(path, device, threads)
        missing = [name for name in OUTPUT_NAMES if name not in {o.name for o in session.get_outputs()}]
        if missing:   # a file exported before an output existed: say so once, not at every batch
            raise ValueError(f"{path}: the model has no output {', '.join(missing)}; export it again from its "
                             "model.pt (finetune-visual or export-onnx)")
        if io_binding is None:
            io_binding = session_device(session) == "cuda"
        bound = BoundRunner(session, INPUT_NAME, OUTPUT_NAMES) if io_binding else None

        def run(images: np.ndarray) -> dict[str, np.ndarray]:
            values = bound(images) if bound else session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
            return {name: np.asarray(value, dtype=np.float32) for name, value in zip(OUTPUT_NAMES, values)}

        return cls(run, str(path))

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> VisualEmbedder:
        """``cache/visual/model.pt`` (the ``finetune-visual`` checkpoint) through torch."""
        import torch

        from pipeline.device import resolve_device
        from pipeline.model_files.visual import load_model

        torch_device = resolve_device(device)
        model = load_model(path).to(torch_device).eval()

        def run(images: np.ndarray) -> dict[str, np.ndarray]:
            with torch.inference_mode():
                embedding = model.forward_features(torch.from_numpy(images).to(torch_device))
                au, expr, va = model.forward_head(embedding)
            values = (embedding, au, expr, va)
            return {name: value.float().cpu().numpy() for name, value in zip(OUTPUT_NAMES, values)}

        return cls(run, str(path))

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The model's outputs for one batch, checked to be (B, width) each."""
        outputs = self.run_batch(np.ascontiguousarray(images, dtype=np.float32))
        for name, width in OUTPUT_WIDTHS.items():
            if outputs[name].shape != (len(images), width):
                raise ValueError(f"{self.source}: output {name!r} has shape {outputs[name].shape}, expected "
                                 f"({len(images)}, {width})")
        return outputs


def embed_batches(
    embedder: VisualEmbedder, read_crops: Callable[[T], np.ndarray], batches: Sequence[T]
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Run ``embedder`` over the crops ``read_crops(batch)`` (uint8 (k,112,112,3)) of every batch in order.

    Returns the stacked outputs (``embedding`` (n, 512), ``au_logits`` (n, 12), ``expr_logits``
    (n, 7), ``va_pred`` (n, 2), float32) and the seconds spent in the model (``model_seconds``) and waiting for the
    decoding thread (``decode_wait_seconds``).
    """
    parts: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
    model_s = wait_s = 0.0
    tick = time.perf_counter()
    for images in prefetch(lambda batch: to_model_input(read_crops(batch)).numpy(), batches):
        wait_s += time.perf_counter() - tick
        tick = time.perf_counter()
        for name, value in embedder(images).items():
            parts[name].append(value)
        model_s += time.perf_counter() - tick
        tick = time.perf_counter()
    outputs = {
        name: np.concatenate(chunks) if chunks else np.zeros((0, OUTPUT_WIDTHS[name]), np.float32)
        for name, chunks in parts.items()
    }
    return outputs, {"model_seconds": model_s, "decode_wait_seconds": wait_s}


def prefetch(fn: Callable[[T], R], items: Sequence[T], depth: int = 2) -> Iterator[R]:
    """Yield ``fn(item)`` for each item in order, computing up to ``depth`` results ahead in a thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        pending = [pool.submit(fn, item) for item in items[:depth]]
        for i in range(len(items)):
            result = pending.pop(0).result()
            if i + depth < len(items):
                pending.append(pool.submit(fn, items[i + depth]))
            yield result
