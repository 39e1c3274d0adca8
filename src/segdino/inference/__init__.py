"""Inference: the `Predictor`, its engines (eager, compiled, ONNX Runtime), image files in and
masks out, and the ONNX export."""
