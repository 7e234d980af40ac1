"""Running the trained models: visual and audio embedders, the sequence runner and its input contract.

``embed-visual``, ``embed-audio``, ``evaluate`` and ``predict`` all load and run the models through
this package, from the exported ONNX files (onnxruntime) or the torch checkpoints, which
:mod:`pipeline.model_files` locates and reads:

- :mod:`pipeline.inference.features`: the sequence model's per-frame input (``compose_features``);
- :mod:`pipeline.inference.sequence`: whole-video sequence inference (``SequenceRunner``);
- :mod:`pipeline.inference.visual`: face crops -> embeddings and logits (``VisualEmbedder``);
- :mod:`pipeline.inference.audio`: a video's soundtrack -> per-frame embeddings (``AudioEmbedder``).
"""
