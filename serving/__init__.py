"""Serving: the appraisal API, inference on ONNX Runtime, routing, the review queue, benefits.

Installed with `.[serve]`: it must never import torch.
"""
