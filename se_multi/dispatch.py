"""Finding backends by name: built-ins, entry points, and ``"package.module:Class"``.

Nothing here imports a framework: built-ins are named by their module path and
imported only when asked for, and availability is checked with
``importlib.util.find_spec`` (plus the backend's own device probe).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import platform
import sys
import weakref
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


def _import_path_state() -> tuple:
    """Each ``sys.path`` folder and the time it last changed: installing or removing a
    distribution adds or removes its ``.dist-info`` folder there, which changes that time."""
    state = []
    for entry in sys.path:
        try:
            folder = entry or os.getcwd()  # "": the current folder, wherever that is now
            state.append((folder, os.stat(folder).st_mtime_ns))
        except OSError:  # a path entry that does not exist (yet) finds nothing
            state.append((entry, None))
    return tuple(state)


#: ``(import path state, {name: "module:Class"})``: the backends' entry points as last read
_entry_points_read: "tuple[tuple, dict[str, str]] | None" = None


def _entry_points() -> dict[str, str]:
    """The ``se_multi.backends`` entry points, read again only when the import path changed
    (:func:`_import_path_state`), as Python's own path finder keeps each folder's listing until
    the folder changes. Reading them opens every installed distribution's metadata (4-5 ms with
    torch, ray and jax installed, 2026-12-05), and backend lookups ask on every call."""
    global _entry_points_read
    state = _import_path_state()
    read = _entry_points_read
    if read is not None and read[0] == state:
        return dict(read[1])
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
        found = {ep.name: ep.value for ep in eps}
    except Exception:  # a broken third-party distribution must not break import
        return {}
    _entry_points_read = state, found
    return dict(found)


def known_backends() -> dict[str, str]:
    """Every backend name se_multi knows of -> its ``module:Class`` path."""
    names = dict(BUILTIN_BACKENDS)
    for name, target in _entry_points().items():
        names.setdefault(name, target)
    return names


class PluginError(BackendUnavailable):
    """A third-party backend (a ``module:Class`` name, or an entry point) that failed to import or
    to start: its module or class raised, or called ``sys.exit``. The backend is then unavailable
    here, which is not a bug of se_multi's; the exception it raised is the ``__cause__`` (its
    traceback is what ``--debug`` shows)."""


def _ours(module_name: str) -> bool:
    """Whether a backend module is se_multi's own: whatever it raises is then a bug of se_multi's."""
    return module_name == "se_multi" or module_name.startswith("se_multi.")


def _raised(exc: BaseException) -> str:
    """What a plugin raised, in a few words."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@contextlib.contextmanager
def _plugin_guard(name: str, ours: bool, doing: str, passes: tuple = ()):
    """Turn what a third-party backend raises while ``doing`` into one :class:`PluginError` that
    names it. ``SystemExit`` too: a plugin calling ``sys.exit(0)`` at import would otherwise end the
    command silently with exit 0. ``passes``: exception types that are already a clear verdict.
    se_multi's own backends are not guarded: what they raise is a bug, reported as one."""
    if ours:
        yield
        return
    try:
        yield
    except (BackendUnavailable, *passes):
        raise
    except (Exception, SystemExit) as exc:
        raise PluginError(f"third-party backend {name!r} {doing}: {_raised(exc)}") from exc


def _search_cwd() -> None:
    """Let a ``module:Class`` backend name a module in the current directory, as uvicorn's
    ``module:app`` does: a console script's ``sys.path`` does not hold the current directory
    (``python -m`` puts it first). Appended, not prepended, so that a file there never shadows
    an installed package (a ``numpy.py`` in the current directory); and only when a third-party
    backend module is about to be imported, so that nothing se_multi imports otherwise is found
    there."""
    try:
        cwd = os.getcwd()
    except OSError:  # the current directory was deleted: nothing to add
        return
    if cwd not in sys.path and "" not in sys.path:  # "": the current directory, as python -c puts it
        sys.path.append(cwd)


def _import(module_name: str, name: str, ours: bool):
    """The backend's module. A name that names no module is bad input; an adapter of se_multi's
    that raises (a module it imports at module level is missing) is a bug; a third-party module
    that raises or calls ``sys.exit`` (a missing dependency included: a package this machine
    lacks) is a :class:`PluginError`."""
    try:
        return importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        missing = (exc.name or "") if isinstance(exc, ModuleNotFoundError) else ""
        if missing and (missing == module_name or module_name.startswith(missing + ".")):
            # (or a part of se_multi this build lacks)
            raise ValueError(f"backend {name!r}: cannot import module {module_name!r} ({exc})") from None
        if ours:
            raise
        raise PluginError(f"third-party backend {name!r} failed to import: {_raised(exc)}") from exc


def _load_class(target: str, name: str) -> type[Backend]:
    module_name, _, class_name = target.partition(":")
    if not class_name:
        raise ValueError(f"backend {name!r}: expected 'package.module:ClassName', got {target!r}")
    ours = _ours(module_name)
    if not ours:
        _search_cwd()
    module = _import(module_name, name, ours)
    with _plugin_guard(name, ours, "failed to import"):  # a module __getattr__ may raise
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
    for name, target in known_backends().items():
        try:
            out[name] = _load_class(target, name).availability()
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


class BackendRecipe:
    """How :func:`get_backend` made a backend object: the backend's name (``auto`` resolved), dtype,
    device and options. A bound model pickles this in place of its backend object (which may hold
    a framework's module, sessions or locks), and unpickling it makes the backend again."""

    __slots__ = ("name", "dtype", "device", "options")

    def __init__(self, name: str, dtype: str, device: str | None, options: dict):
        self.name, self.dtype, self.device, self.options = name, dtype, device, dict(options)

    def __reduce__(self):
        return _remake, (self.name, self.dtype, self.device, self.options)

    def __repr__(self) -> str:
        return f"BackendRecipe({self.name!r}, dtype={self.dtype!r}, device={self.device!r}, options={self.options!r})"


def _remake(name: str, dtype: str, device: str | None, options: dict) -> Backend:
    return get_backend(name, dtype=dtype, device=device, **options)


#: backend object -> its :class:`BackendRecipe` (made by get_backend), or ``_PICKLES_ITSELF`` once a
#: backend object made elsewhere was found to pickle; weak, so that it keeps no backend alive
_RECIPES: "weakref.WeakKeyDictionary[Backend, Any]" = weakref.WeakKeyDictionary()
_PICKLES_ITSELF = object()


def _remember(ops: Backend, value) -> None:
    try:
        _RECIPES[ops] = value
    except TypeError:  # a backend class that is not hashable or weak-referenceable: nothing to remember
        pass


def portable(ops: Backend):
    """What a model bound on ``ops`` pickles (and deep-copies) in its place: the
    :class:`BackendRecipe` of a backend made by :func:`get_backend`, so that the copy runs on a
    backend object of its own, made the same way; a backend object made otherwise only if it
    pickles itself. Else one ``TypeError`` saying why."""
    try:
        known = _RECIPES.get(ops)
    except TypeError:
        known = None
    if known is not None:
        return ops if known is _PICKLES_ITSELF else known
    try:
        pickle.dumps(ops)
    except Exception as exc:
        raise TypeError(
            f"cannot pickle a model bound on {ops!r}: se_multi.get_backend did not make that backend object, "
            f"so se_multi cannot make it again, and it does not pickle itself ({_raised(exc)}); bind the model "
            "on se_multi.get_backend(name, dtype=..., device=...)") from exc
    _remember(ops, _PICKLES_ITSELF)
    return ops


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
    ours = _ours(cls.__module__)
    with _plugin_guard(name, ours, "failed its availability check"):
        ok, reason = cls.availability()
    if not ok:
        raise BackendUnavailable(f"backend {name!r} is unavailable: {reason}")
    try:
        # ValueError and TypeError are a backend refusing what it was given (a dtype, a device, an
        # option), as Backend.__init__ refuses a dtype: bad input, with the plugin named
        with _plugin_guard(name, ours, "failed to start", passes=(ValueError, TypeError)):
            ops = cls(dtype=dtype, device=device, **options)
    except (ValueError, TypeError) as exc:
        if ours:
            raise
        kind = ValueError if isinstance(exc, ValueError) else TypeError
        raise kind(f"third-party backend {name!r}: {' '.join(str(exc).split())}") from exc
    _remember(ops, BackendRecipe(name, dtype, device, options))
    return ops


def _owner_candidates():
    yield from BUILTIN_BACKENDS.values()
    yield from _entry_points().values()  # read only when no built-in owns the array


def owner(x: Any) -> type[Backend] | None:
    """The backend class whose library ``x`` is an array of (:meth:`Backend.owns`), or ``None``;
    built-ins first, entry points after."""
    for target in _owner_candidates():
        try:
            cls = _load_class(target, target)
        except (ValueError, ImportError, BackendUnavailable):  # a missing or broken plugin owns nothing
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
