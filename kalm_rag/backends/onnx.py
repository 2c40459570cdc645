"""ONNX Runtime backend: torch.onnx export, static (calibrated) int8 QDQ, CPU execution.

Files use the layout sentence-transformers loads with ``backend="onnx"``: ``model.onnx``
(float32) and ``model_qint8_static.onnx`` (load it there with
``model_kwargs={"file_name": "onnx/model_qint8_static.onnx"}``); inputs ``input_ids`` and
``attention_mask``, output ``last_hidden_state``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from kalm_rag.backends.base import INPUT_NAMES, OUTPUT_NAME, FloatArray, IntArray, example_inputs, traceable
from kalm_rag.errors import require

FLOAT_FILE = "model.onnx"
INT8_FILE = "model_qint8_static.onnx"
EXTRA = "onnx"
OPSET = 17


def version() -> str:
    ort = require("onnxruntime", EXTRA)
    return str(ort.__version__)


def export(model: Any, folder: Path, *, pad_id: int) -> Path:
    """Export the torch backbone with the TorchScript-based exporter (dynamic batch and length)."""
    import torch

    require("onnx", EXTRA)
    ids, mask = example_inputs(pad_id, int(model.config.vocab_size))
    path = folder / FLOAT_FILE
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            OUTPUT_NAME: {0: "batch", 1: "tokens"}}  # fmt: skip
    with torch.inference_mode():
        torch.onnx.export(
            traceable(model),
            (ids, mask),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def quantize(source: Path, folder: Path, batches: list[dict[str, IntArray]], *, vnni: bool) -> Path:
    """Static int8 (QDQ): weights per channel, activation ranges from real texts.

    Only the MatMuls are quantised (layer norms, softmax and GELU stay float). Without VNNI the
    u8 x s8 products can saturate, so weights then use 7 bits (``reduce_range``).
    """
    require("onnx", EXTRA)
    quantization = require("onnxruntime.quantization", EXTRA)
    quant_pre_process = require("onnxruntime.quantization.shape_inference", EXTRA).quant_pre_process
    reader_base: Any = quantization.CalibrationDataReader

    class _Reader(reader_base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            self._items = iter(batches)

        def get_next(self) -> dict[str, IntArray] | None:
            return next(self._items, None)

    path = folder / INT8_FILE
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantization.quantize_static(
            str(prepared),
            str(path),
            _Reader(),
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            reduce_range=not vnni,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
    return path


class OnnxRunner:
    """An ONNX Runtime CPU session (``run`` is thread-safe)."""

    backend = "onnx"

    def __init__(self, path: Path, *, precision: str, num_threads: int) -> None:
        ort = require("onnxruntime", EXTRA)
        self.precision = precision
        self.path = path
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: IntArray, attention_mask: IntArray) -> FloatArray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        out: FloatArray = self._session.run([OUTPUT_NAME], feed)[0]
        return out

    def __repr__(self) -> str:
        return f"OnnxRunner({self.path.name}, precision={self.precision!r})"
