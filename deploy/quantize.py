"""Smaller numbers for an exported network, with ONNX Runtime's own tools: static int8 quantisation in QDQ form
(weights per output channel, activations calibrated on real chips) and fp16 weights and activations.
bench/onnx_runtime.py measures what each costs in accuracy and gains in speed (bench/RESULTS.md "ONNX")."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from runtime import batch_input
from utils import get_logger

log = get_logger()
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]  # the arithmetic; additions, poolings and the final normalisation stay fp32
CALIBRATION_BATCH = 8
# The first and last few quantised layers stay fp32: with them in int8, FaceRes's embedding fell to a cosine of 0.85
# with its fp32 one on real chips, 0.977 without them (dlib's network: 0.994 either way).
KEEP_FP32_ENDS = 5


class ChipReader:
    """onnxruntime.quantization's CalibrationDataReader over preprocessed chips, a batch at a time."""

    def __init__(self, chips: list[np.ndarray], inp: dict, input_name: str):
        self.batches = iter([{input_name: batch_input(chips[i:i + CALIBRATION_BATCH], inp)}
                             for i in range(0, len(chips), CALIBRATION_BATCH)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)

    def rewind(self) -> None:  # part of the reader's protocol; one pass is all calibration makes here
        pass


def quantize_int8(path: Path, chips: list[np.ndarray], inp: dict) -> None:
    """Quantise the ONNX file at `path` in place: QDQ, int8 weights per channel, uint8 activations whose ranges are the
    calibration chips' (`chips`, preprocessed as `inp` says; training people's, never the ones it is scored on)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(path), str(prepared))  # shapes inferred and constants folded first, as ORT advises
        graph = onnx.load(str(prepared))
        input_name = graph.graph.input[0].name
        layers = [n.name for n in graph.graph.node if n.op_type in QUANTIZED_OPS]
        log.info(f"quantising {path.name} to int8 on {len(chips)} calibration chips")
        quantize_static(str(prepared), str(Path(tmp) / "int8.onnx"), ChipReader(chips, inp, input_name),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, op_types_to_quantize=QUANTIZED_OPS, calibrate_method=CalibrationMethod.MinMax,
                        # 7-bit weights: without AVX-512 VNNI, ONNX Runtime's u8s8 products can saturate (its docs)
                        reduce_range=True, nodes_to_exclude=layers[:KEEP_FP32_ENDS] + layers[-KEEP_FP32_ENDS:])
        graph = onnx.load(str(Path(tmp) / "int8.onnx"))
    onnx.helper.set_model_props(graph, meta)
    onnx.save(graph, str(path))


def convert_fp16(path: Path) -> None:
    """The ONNX file at `path` in half precision in place, its input and output kept fp32 (so it is fed alike)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    graph = onnx.load(str(path))
    meta = {p.key: p.value for p in graph.metadata_props}
    half = convert_float_to_float16(graph, keep_io_types=True)
    del half.metadata_props[:]
    onnx.helper.set_model_props(half, meta)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".onnx", delete=False) as tmp:
        onnx.save(half, tmp.name)
    shutil.move(tmp.name, path)
