"""se_multi: Squeeze-and-Excitation networks on every array backend.

One definition of SE (Hu et al.), sSE and scSE (Roy et al.) and the models built
from them, run op by op on NumPy (the float64 reference), PyTorch, MLX and CuPy, and
as whole graphs from se_multi's own ONNX export on ONNX Runtime and OpenVINO
(``se_multi.dispatch.BUILTIN_BACKENDS``; third-party backends register through the
``se_multi.backends`` entry point). ``import se_multi`` imports no framework; a
backend imports its own when it is first used.
"""

from __future__ import annotations

from se_multi.backend import Backend, BackendUnavailable, GraphBackend
from se_multi.dispatch import available_backends, backend_status, get_backend, to_numpy

from se_multi._version import __version__

# Heavier parts of the API load on first use (PEP 562), keeping `import se_multi` light.
_LAZY = {
    "create_model": "se_multi.models",
    "list_models": "se_multi.models",
    "Model": "se_multi.models",
    "load_checkpoint": "se_multi.models.loading",
    "preprocess": "se_multi.preprocess",
    "predict_batch": "se_multi.predict",
    "model_info": "se_multi.info",
    "export_onnx": "se_multi.onnx_export",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'se_multi' has no attribute {name!r}")


__all__ = [
    "__version__", "Backend", "BackendUnavailable", "GraphBackend", "available_backends", "backend_status",
    "get_backend", "to_numpy", *_LAZY,
]
