"""OpenVINO backend: export from the loaded torch model, static int8 with NNCF, run on CPU.

Files use the layout sentence-transformers loads with ``backend="openvino"``:
``openvino_model.xml``/``.bin`` (float32) and ``openvino_model_qint8_quantized.xml``/``.bin``
(static int8), inputs ``input_ids``/``attention_mask``, output ``last_hidden_state``.
bfloat16 is not a file: it is OpenVINO's inference precision for the float32 file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from kalm_rag.backends.base import INPUT_NAMES, OUTPUT_NAME, FloatArray, IntArray, example_inputs, traceable
from kalm_rag.errors import require

FLOAT_FILE = "openvino_model.xml"
INT8_FILE = "openvino_model_qint8_quantized.xml"
EXTRA = "openvino"


def version() -> str:
    ov = require("openvino", EXTRA)
    return str(ov.get_version()).split("-")[0]


def export(model: Any, folder: Path, *, pad_id: int) -> Path:
    """Convert the torch backbone to an OpenVINO IR (float32 weights) in ``folder``."""
    import torch

    ov = require("openvino", EXTRA)
    ids, mask = example_inputs(pad_id, int(model.config.vocab_size))
    shapes = [(name, [-1, -1], ov.Type.i64) for name in INPUT_NAMES]
    with torch.inference_mode():
        converted = ov.convert_model(traceable(model), example_input=(ids, mask), input=shapes)
    converted.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    path = folder / FLOAT_FILE
    ov.save_model(converted, str(path), compress_to_fp16=False)
    return path


def quantize(source: Path, folder: Path, batches: list[dict[str, IntArray]]) -> Path:
    """Static int8 with NNCF: activation ranges from ``batches`` of real texts (one text each).

    Transformer mode keeps the accuracy-critical ops (softmax, layer norms, GELU inputs) in float;
    SmoothQuant moves activation outliers into the weights before the int8 matmuls.
    """
    # NNCF sends usage telemetry unless told it runs in CI; a library must not phone home
    os.environ.setdefault("NNCF_CI", "1")
    ov = require("openvino", EXTRA)
    nncf = require("nncf", EXTRA)
    model = ov.Core().read_model(str(source))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(batches),
        model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(batches),
    )
    path = folder / INT8_FILE
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return path


class OpenVINORunner:
    """A compiled OpenVINO model; thread-safe (one infer request per thread)."""

    backend = "openvino"

    def __init__(self, path: Path, *, precision: str, num_threads: int) -> None:
        ov = require("openvino", EXTRA)
        self.precision = precision
        self.path = path
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": num_threads,
            "PERFORMANCE_HINT": "LATENCY",
            # explicit, since OpenVINO picks bf16 by itself on AMX / AVX512-bf16 CPUs
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32",
        }
        self._compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._local = threading.local()

    def __call__(self, input_ids: IntArray, attention_mask: IntArray) -> FloatArray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer({"input_ids": input_ids, "attention_mask": attention_mask})
        out: FloatArray = result[0]
        return out

    def __repr__(self) -> str:
        return f"OpenVINORunner({self.path.name}, precision={self.precision!r})"
