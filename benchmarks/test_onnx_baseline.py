"""ONNX Runtime on a PyTorch export of the timm-structured model, the deployment peer of the
``onnxruntime`` backend (which runs se_multi's own export); see ``peers.py``. Both files run in
sessions with the backend's own options, in the same groups as test_models.py, so any gap is in
the graph.
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import SIZE, cached_input, requires, skip_unless_available

pytestmark = requires("torch", "onnx")


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("model", ["seresnet50", "resnet50"])
def test_onnxruntime_on_torch_export(benchmark, model, batch):
    from benchmarks.peers import onnxruntime_peer

    skip_unless_available("onnxruntime")
    run = onnxruntime_peer(model, SIZE)
    x = cached_input(batch)
    benchmark.group = f"{model} batch {batch} float32"
    benchmark.extra_info.update(backend="onnxruntime-on-torch-export", model=model, batch=batch,
                                dtype="float32")
    benchmark(run, x)
