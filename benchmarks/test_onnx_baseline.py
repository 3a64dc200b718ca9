"""ONNX Runtime on a PyTorch export of the timm-structured model, the deployment peer of the
``onnxruntime`` backend (which runs se_multi's own export).

timm cannot run on this project's torch build, so the peer file is made the way timm's
``onnx_export`` makes it: ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``) of
the eager nn.Module in ``torch_baseline.py``, whose structure and keys are timm's
``seresnet50`` / ``resnet50``, with the same seeded weights. Both files run in sessions with the
backend's own options, in the same groups as test_models.py, so any gap is in the graph.
"""

from __future__ import annotations

import functools

import pytest

import se_multi
from benchmarks.conftest import SIZE, cached_input, cached_model, skip_unless_available

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


@functools.lru_cache(maxsize=None)
def peer_runner(model: str, path: str):
    from benchmarks import torch_baseline
    from se_multi.init import recipe_state

    net = cached_model("numpy", model, "float32")  # for its declared keys only
    specs = net.module.param_specs()
    state = recipe_state(((k, s.shape, s.kind) for k, s in specs.items()), seed=0)
    eager = getattr(torch_baseline, model)(state)
    torch.onnx.export(eager, (torch.zeros(1, 3, SIZE, SIZE),), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return se_multi.get_backend("onnxruntime").load(path)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("model", ["seresnet50", "resnet50"])
def test_onnxruntime_on_torch_export(benchmark, tmp_path_factory, model, batch):
    skip_unless_available("onnxruntime")
    path = str(tmp_path_factory.getbasetemp() / f"{model}_torch_export.onnx")
    run = peer_runner(model, path)
    x = cached_input(batch)
    benchmark.group = f"{model} batch {batch} float32"
    benchmark.extra_info.update(backend="onnxruntime-on-torch-export", model=model, batch=batch,
                                dtype="float32")
    benchmark(run, x)
