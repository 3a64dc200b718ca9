"""The model registry: family modules register their builders here (:func:`register_model`),
and :func:`build_model` makes a declaration by name. A leaf of the models package (it imports
the families by name, on first use), so that the families, checkpoint loading
(:mod:`se_multi.models.loading`) and :mod:`se_multi.models` itself all stand above it.
"""

from __future__ import annotations

import importlib
from typing import Callable

from se_multi.nn import Module

_REGISTRY: dict[str, Callable[..., Module]] = {}
#: modules whose import registers models
_FAMILIES = ("se_multi.models.resnet", "se_multi.models.mobilenet", "se_multi.models.unet")


def register_model(fn: Callable[..., Module]) -> Callable[..., Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def _load_families() -> None:
    for mod in _FAMILIES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def list_models() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def check_model_name(name: str) -> str:
    """``name`` if it is a registered model, else the one error that lists the known ones."""
    _load_families()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    return name


def build_model(name: str, **kwargs) -> Module:
    """The unbound module for ``name`` (declared parameters, no weights)."""
    check_model_name(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    module = _REGISTRY[name](**kwargs)
    # what it was built as: a whole-graph backend that calibrates it (int8, se_multi.quantize)
    # needs its preprocessing, and a bound copy keeps the name
    module.model_name = name
    return module
