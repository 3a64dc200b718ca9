"""int8 beside float32 and bfloat16 on the engines that quantize (``openvino`` through NNCF,
``onnxruntime`` QDQ), SE kept in float and quantized, in the same groups as test_models.py; on a
CPU without int8 dot-product units (VNNI, AMX-INT8) every int8 row is skipped with the reason.
Calibration: 32 seeded synthetic images per model (``SE_MULTI_BENCH_INT8_CALIBRATION``), quantized
once per session. The goal table with ratios is ``python -m benchmarks.int8_goals``."""

from __future__ import annotations

import functools
import os

import pytest

import se_multi
from benchmarks.conftest import SIZE, cached_input, skip_unless_available, skip_unless_native

pytest.importorskip("onnx")
CALIBRATION = int(os.environ.get("SE_MULTI_BENCH_INT8_CALIBRATION", "32"))


@functools.lru_cache(maxsize=None)
def int8_model(backend: str, model: str, quantize_se: bool):
    ops = se_multi.get_backend(backend, dtype="int8", calibration=CALIBRATION, quantize_se=quantize_se)
    return se_multi.create_model(model, backend=ops)


@pytest.mark.parametrize("quantize_se", [False, True], ids=["se-float", "se-int8"])
@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
@pytest.mark.parametrize("model", ["seresnet50", "resnet50", "mobilenetv3_large_100", "se_mobilenetv1_100"])
def test_int8(benchmark, model, backend, quantize_se):
    skip_unless_available(backend)
    skip_unless_native("int8")
    if backend == "openvino":
        pytest.importorskip("nncf")
    net = int8_model(backend, model, quantize_se)
    x = cached_input(1)
    net(x)  # quantizes and compiles outside the timing
    benchmark.group = f"{model} batch 1 int8"
    benchmark.extra_info.update(backend=backend, model=model, batch=1, dtype="int8", quantize_se=quantize_se,
                                calibration=CALIBRATION, size=SIZE)
    benchmark(net, x)
