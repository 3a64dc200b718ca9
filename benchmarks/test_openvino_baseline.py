"""OpenVINO on a PyTorch export of the timm-structured model (``peers.py``), the deployment peer of
the ``openvino`` backend, at float32 and bfloat16, with the backend's own settings and static
shapes, in the same groups as test_models.py: the same engine on both graphs."""

from __future__ import annotations

import pytest

from benchmarks.conftest import SIZE, cached_input, requires, skip_unless_available

pytestmark = requires("torch", "onnx")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("model", ["seresnet50", "resnet50"])
def test_openvino_on_torch_export(benchmark, model, batch, dtype):
    from benchmarks.conftest import skip_unless_native
    from benchmarks.peers import openvino_peer

    skip_unless_available("openvino")
    skip_unless_native(dtype)
    run = openvino_peer(model, SIZE, batch, dtype)
    x = cached_input(batch)
    benchmark.group = f"{model} batch {batch} {dtype}"
    benchmark.extra_info.update(backend="openvino-on-torch-export", model=model, batch=batch, dtype=dtype)
    benchmark(run, x)
