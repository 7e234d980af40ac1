"""Each trained model's files, written and read in one module per model.

One module per model owns its file formats: the checkpoint (what its dict holds, writing it,
rebuilding the model from it), the ONNX export with its metadata, and the lower-precision copies:

- :mod:`pipeline.model_files.backbone`: ``pretrain-face``'s ``backbone.pth`` and ``backbone.json``;
- :mod:`pipeline.model_files.visual`: ``finetune-visual``'s ``model.pt``, ``visual.onnx`` and its
  ``.fp16.onnx`` and ``.int8.onnx`` copies;
- :mod:`pipeline.model_files.audio`: ``train-audio``'s ``model.pt`` (TDNN + fusion head),
  ``tdnn.onnx`` and ``tdnn.int8.onnx``;
- :mod:`pipeline.model_files.sequence`: ``train-sequence``'s ``model.pt`` and ``sequence.onnx``.

The mechanics they share sit beside them, each in a module of its own:
:mod:`~pipeline.model_files.checkpoint` (atomic save, the one loader, state-dict checks),
:mod:`~pipeline.model_files.loading` (reading with errors that name the stage that writes a file),
:mod:`~pipeline.model_files.onnx_export` (export, checker, onnxruntime-vs-torch parity, sessions,
metadata), :mod:`~pipeline.model_files.int8` (static quantization), :mod:`~pipeline.model_files.float16`
(the float16 copy) and :mod:`~pipeline.model_files.precision` (the precision tags and where each
copy lives). Trainers, embedders, ``evaluate`` and ``predict`` go through these modules; nothing
else saves or loads a model file.
"""
