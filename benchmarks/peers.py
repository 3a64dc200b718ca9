"""The deployment peers of the whole-graph backends: engines run on a ``torch.onnx.export`` of the
timm-structured eager model (``torch_baseline.py``, timm's keys and structure, the same seeded
weights), made the way timm's ``onnx_export`` makes it (TorchScript exporter, ``dynamo=False``).

- ONNX Runtime gets the file with a dynamic batch (timm's default), through the ``onnxruntime``
  backend's own session options;
- OpenVINO gets a file exported at the input's fixed shape, through the ``openvino`` backend's own
  settings (``load``), because the backend compiles static-shape graphs by default: the same
  engine, the same settings, the same shapes, so any gap is in the graph.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import se_multi

_DIR = Path(tempfile.mkdtemp(prefix="se_multi_peers_"))


def eager(model: str):
    """The timm-structured eager ``nn.Module`` with se_multi's seeded weights for ``model``."""
    from benchmarks import torch_baseline
    from se_multi.init import recipe_state
    from se_multi.models import build_model

    specs = build_model(model).param_specs()
    state = recipe_state(((k, s.shape, s.kind) for k, s in specs.items()), seed=0)
    return getattr(torch_baseline, model)(state)


@functools.lru_cache(maxsize=None)
def export(model: str, size: int, batch: int | None = None) -> str:
    """The peer's ONNX file: dynamic batch if ``batch`` is None, else the fixed ``batch x 3 x size x size``."""
    import torch

    path = _DIR / f"{model}_{size}_{batch or 'dyn'}.onnx"
    dynamic = None if batch else {"input": {0: "batch"}, "logits": {0: "batch"}}
    torch.onnx.export(eager(model), (torch.zeros(batch or 1, 3, size, size),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"], dynamic_axes=dynamic)
    return str(path)


@functools.lru_cache(maxsize=None)
def onnxruntime_peer(model: str, size: int):
    return se_multi.get_backend("onnxruntime").load(export(model, size))


@functools.lru_cache(maxsize=None)
def openvino_peer(model: str, size: int, batch: int, dtype: str = "float32"):
    return se_multi.get_backend("openvino", dtype=dtype).load(export(model, size, batch))
