"""Running an exported model with ONNX Runtime: what evaluation, benchmarks and serving share.

The session is checked against its card when it opens: an input that is not (batch, 3, size,
size) or an output that is not (batch, regions) means the card belongs to another model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from touchstone.imaging import to_model_input
from touchstone.model_card import ModelCardError, ModelDir, load_model_dir


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def open_session(
    path: Path, threads: int | None = None, spin: bool = True
):  # -> onnxruntime.InferenceSession
    """A CPU session with its threads sized to the cores this process may use. `spin=False`
    for a server: idle ONNX Runtime threads otherwise spin on the cores that decoding, storing
    and HTTP need between batches (measured: about 3 ms of CPU per photo on 2 cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelCardError("onnx_unloadable", f"{path}: ONNX Runtime refused it: {exc}") from exc


class OnnxModel:
    """One ONNX Runtime session and the card that says how to feed it."""

    def __init__(
        self, model_dir: ModelDir | str | Path, threads: int | None = None, spin: bool = True
    ) -> None:
        self.model_dir = model_dir if isinstance(model_dir, ModelDir) else load_model_dir(model_dir)
        self.card = self.model_dir.card
        self.preprocessing = self.card.preprocessing.to_preprocessing()
        self.session = open_session(self.model_dir.onnx_path, threads, spin)
        self._check_signature()
        self.region_index = {name: i for i, name in enumerate(self.card.regions)}

    def _check_signature(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        card = self.card
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelCardError("card_mismatch", "the graph must have one input and one output")
        shape, out_shape = inputs[0].shape, outputs[0].shape
        size = card.preprocessing.input_size
        if inputs[0].name != card.onnx.input_name or outputs[0].name != card.onnx.output_name:
            raise ModelCardError(
                "card_mismatch",
                f"graph input/output are {inputs[0].name}/{outputs[0].name}, "
                f"the card says {card.onnx.input_name}/{card.onnx.output_name}",
            )
        if len(shape) != 4 or list(shape[1:]) != [3, size, size]:
            raise ModelCardError(
                "card_mismatch", f"graph input {shape} does not take (batch, 3, {size}, {size})"
            )
        if len(out_shape) != 2 or out_shape[1] != len(card.regions):
            raise ModelCardError(
                "card_mismatch",
                f"graph output {out_shape} does not give one column per region "
                f"({len(card.regions)}: {', '.join(card.regions)})",
            )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 normalised pixels -> (B, regions) log-odds of authentic."""
        return self.session.run(None, {self.card.onnx.input_name: batch.astype(np.float32)})[0]

    def prepare(self, image: Image.Image) -> np.ndarray:
        """The model's input for a photo as `touchstone.imaging.decode_for_model` reads it."""
        return to_model_input(image, self.preprocessing)

    def score(self, images: Sequence[Image.Image], regions: Sequence[str]) -> np.ndarray:
        """Each photo's (read by `decode_for_model`) log-odds for its own region."""
        if len(images) != len(regions):
            raise ValueError("one region per image")
        columns = np.array([self.region_index[r] for r in regions])
        batch = np.stack([self.prepare(image) for image in images])
        return self.predict(batch)[np.arange(len(images)), columns]
