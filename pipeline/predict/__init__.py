"""Prediction on new videos: face detection, alignment and the exported ONNX models."""
