"""Evaluation without torch: score a manifest with ONNX Runtime, calibrate, choose thresholds,
measure, and write the report. Training runs it on its best weights; `touchstone evaluate`
runs it on an exported model."""
