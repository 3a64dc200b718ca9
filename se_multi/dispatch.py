"""Finding backends by name: built-ins, entry points, and ``"package.module:Class"``.

Nothing here imports a framework: built-ins are named by their module path and
imported only when asked for, and availability is checked with
``importlib.util.find_spec`` (plus the backend's own device probe).
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from importlib import metadata
from typing import Any

import numpy as np

from se_multi.backend import Backend, BackendUnavailable

#: name -> "module:Class"; the order is the ``auto`` preference after the device checks
BUILTIN_BACKENDS: dict[str, str] = {
    "numpy": "se_multi.backends.numpy_backend:NumpyBackend",
    "torch": "se_multi.backends.torch_backend:TorchBackend",
    "mlx": "se_multi.backends.mlx_backend:MlxBackend",
    "cupy": "se_multi.backends.cupy_backend:CupyBackend",
    "onnxruntime": "se_multi.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "openvino": "se_multi.backends.openvino_backend:OpenVinoBackend",
}

ENTRY_POINT_GROUP = "se_multi.backends"
ENV_VAR = "SE_MULTI_BACKEND"


def _entry_points() -> dict[str, str]:
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # a broken third-party distribution must not break import
        return {}
    return {ep.name: ep.value for ep in eps}


def known_backends() -> dict[str, str]:
    """Every backend name se_multi knows of -> its ``module:Class`` path."""
    names = dict(BUILTIN_BACKENDS)
    for name, target in _entry_points().items():
        names.setdefault(name, target)
    return names


def _load_class(target: str, name: str) -> type[Backend]:
    module_name, _, class_name = target.partition(":")
    if not class_name:
        raise ValueError(f"backend {name!r}: expected 'package.module:ClassName', got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if module_name.startswith("se_multi.backends.") and exc.name and not exc.name.startswith("se_multi"):
            raise  # the adapter exists but imported something missing at module level: a bug
        raise ValueError(f"backend {name!r}: cannot import module {module_name!r} ({exc})") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ValueError(f"backend {name!r}: {target!r} is not a se_multi.backend.Backend subclass")
    return cls


def backend_class(name: str) -> type[Backend]:
    """The class for a backend name or a ``"module:Class"`` path."""
    if ":" in name:
        return _load_class(name, name)
    known = known_backends()
    if name not in known:
        raise ValueError(
            f"unknown backend {name!r}; known backends: {', '.join(sorted(known))} "
            "(or 'auto', or a 'package.module:ClassName' path)"
        )
    return _load_class(known[name], name)


def backend_status() -> dict[str, tuple[bool, str]]:
    """name -> (usable, reason) for every known backend, e.g. ``cupy: installed, no CUDA device``."""
    out = {}
    for name in known_backends():
        try:
            out[name] = backend_class(name).availability()
        except Exception as exc:  # an adapter missing from this install, a broken plugin
            out[name] = (False, f"cannot load: {exc}")
    return out


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine now."""
    return [name for name, (ok, _) in backend_status().items() if ok]


def _auto_name() -> str:
    """cupy if a CUDA device is usable, else mlx on Apple silicon, else torch, else numpy."""
    status = backend_status()
    usable = lambda n: status.get(n, (False, ""))[0]  # noqa: E731
    if usable("cupy"):
        return "cupy"
    if sys.platform == "darwin" and platform.machine() == "arm64" and usable("mlx"):
        return "mlx"
    if usable("torch"):
        return "torch"
    return "numpy"


def resolve_backend_name(name: str | None = "auto") -> str:
    if name in (None, "auto"):
        name = os.environ.get(ENV_VAR) or "auto"
    return _auto_name() if name == "auto" else name


def get_backend(name: str | Backend | None = "auto", dtype: str = "float32", device: str | None = None,
                **options) -> Backend:
    """A backend instance: ``"numpy"``, ``"torch"``, ``"mlx"``, ``"cupy"``, ``"auto"``
    (or ``$SE_MULTI_BACKEND``), an entry-point name, or ``"package.module:ClassName"``.
    ``options`` are the backend's own keywords (``graph_cache_size=``, ``channels_last=``, ...)."""
    if isinstance(name, Backend):
        if options:
            raise TypeError(f"backend options {sorted(options)} apply to a backend name, not an instance")
        return name
    if name is not None and not isinstance(name, str):
        raise TypeError(f"backend must be a backend name (str), 'auto', or a se_multi Backend instance; "
                        f"got {type(name).__name__}")
    name = resolve_backend_name(name)
    cls = backend_class(name)
    ok, reason = cls.availability()
    if not ok:
        raise BackendUnavailable(f"backend {name!r} is unavailable: {reason}")
    return cls(dtype=dtype, device=device, **options)


def _owner_candidates():
    yield from BUILTIN_BACKENDS.values()
    yield from _entry_points().values()  # read only when no built-in owns the array


def owner(x: Any) -> type[Backend] | None:
    """The backend class whose library ``x`` is an array of (:meth:`Backend.owns`), or ``None``;
    built-ins first, entry points after."""
    for target in _owner_candidates():
        try:
            cls = _load_class(target, target)
        except (ValueError, ImportError):  # a broken plugin cannot own anything
            continue
        if cls.owns(x):
            return cls
    return None


def to_numpy(x: Any) -> np.ndarray:
    """Any backend's array -> NumPy, converted by the backend that owns it (:meth:`Backend.to_numpy`);
    anything else through ``__array__`` or DLPack."""
    if isinstance(x, np.ndarray):
        return x
    cls = owner(x)
    if cls is not None:
        return cls.to_numpy(x)
    try:
        return np.asarray(x)
    except Exception:
        return np.from_dlpack(x)


def max_abs(x: Any) -> float:
    """``max |x|`` of any backend's array, computed where the array lives (:meth:`Backend.max_abs`):
    NaN if it holds a NaN, inf if it holds an Inf."""
    if isinstance(x, np.ndarray):
        return float(np.max(np.abs(x))) if x.size else 0.0
    cls = owner(x)
    return cls.max_abs(x) if cls is not None else max_abs(to_numpy(x))
