"""The model registry: everything a model family declares, registered from the family's own module.

A *family* is one module of the package :mod:`se_multi.models` (``resnet.py``, ``mobilenet.py``,
``unet.py``, ...). The registry finds the families itself: on first use it imports every public
module of the package (:func:`_load_families`), so a new family is one new file and no list
anywhere names it. Each family registers each of its models with :func:`register_model`:

- the builder (keyword options -> an unbound :class:`se_multi.nn.Module`);
- ``pretrained``: its :class:`se_multi.pretrained.PretrainedCfg` tags (how each checkpoint expects
  its images); the first is the model's default tag (timm's rule) unless ``default_tag`` names another;
- ``layouts``: ``(layout name, converter)`` pairs for checkpoint key layouts other than the native
  one, tried in order (:func:`se_multi.checkpoint.to_native` says what a converter is);
- ``conformance_input``: an NCHW shape at which ``se-multi validate`` checks the whole model
  (:func:`se_multi.conformance.model_cases`); one model of each family declares one;
- ``conformance_options``: builder options for that check (e.g. a narrower classifier), where the
  default build is too heavy to check on every backend and dtype but the family's code paths are
  the same at a smaller width;
- ``conformance_dtypes``: the dtypes that check runs at, where the whole model is ill-conditioned in
  coarser ones (QuickNAT: a max-pool window whose two largest values lie within a dtype's rounding
  picks either, and the unpool then moves that value: float16 outputs jump); default every dtype.

``register_model`` also works as a bare decorator (``@register_model``), as it always has: a model
registered so has no pretrained config, no other layout and no conformance case.

A leaf of the models package: it imports no family (it finds them by name, on first use) and holds
the configs and converters as the families give them, so that the families, checkpoint loading
(:mod:`se_multi.models.loading`), :mod:`se_multi.pretrained` and :mod:`se_multi.models` itself all
stand above it.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from se_multi.checkpoint import Converter
from se_multi.nn import Module

PACKAGE = "se_multi.models"


@dataclass(frozen=True)
class ModelEntry:
    """What one model's family registered for it."""

    name: str
    builder: Callable[..., Module]
    #: the module that registered it (its family)
    family: str
    pretrained: tuple = ()
    default_tag: str | None = None
    layouts: tuple[tuple[str, Converter], ...] = ()
    conformance_input: tuple[int, int, int, int] | None = None
    #: builder options for the conformance check (``{}``: the default build)
    conformance_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: the dtypes its conformance check runs at (``()``: every dtype)
    conformance_dtypes: tuple[str, ...] = ()


_REGISTRY: dict[str, ModelEntry] = {}
#: bumped by every registration: what is derived from the entries (:func:`_derived`) is made again
_VERSION = 0
_CACHE: dict = {}
#: the package path the families were last imported from (``None``: not yet)
_LOADED_FROM: tuple[str, ...] | None = None
_LOADING = False


def _check_entry(entry: ModelEntry) -> ModelEntry:
    name = entry.name
    tags = []
    for cfg in entry.pretrained:
        tag = getattr(cfg, "tag", None)
        if not isinstance(tag, str) or tag.split(".", 1)[0] != name:
            raise ValueError(f"register_model({name!r}): pretrained config {tag or cfg!r} is not a tag of "
                             f"{name!r} (a tag is '{name}.<weights>', e.g. '{name}.in1k')")
        tags.append(tag)
    if len(set(tags)) != len(tags):
        raise ValueError(f"register_model({name!r}): a pretrained tag is given twice: {', '.join(tags)}")
    if entry.default_tag is not None and entry.default_tag not in tags:
        raise ValueError(f"register_model({name!r}): default_tag {entry.default_tag!r} is not one of its "
                         f"pretrained tags ({', '.join(tags) or 'none given'})")
    for layout in entry.layouts:
        if not (isinstance(layout, tuple) and len(layout) == 2 and isinstance(layout[0], str)
                and callable(layout[1])):
            raise TypeError(f"register_model({name!r}): layouts are (name, converter) pairs; got {layout!r}")
    shape = entry.conformance_input
    if shape is not None and not (isinstance(shape, tuple) and len(shape) == 4 and all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise ValueError(f"register_model({name!r}): conformance_input must be an NCHW shape of 4 positive "
                         f"ints; got {shape!r}")
    if not isinstance(entry.conformance_options, Mapping) or not all(
            isinstance(k, str) for k in entry.conformance_options):
        raise TypeError(f"register_model({name!r}): conformance_options is a mapping of builder options; "
                        f"got {entry.conformance_options!r}")
    if not (isinstance(entry.conformance_dtypes, tuple) and all(isinstance(d, str) for d in entry.conformance_dtypes)):
        raise TypeError(f"register_model({name!r}): conformance_dtypes is a tuple of dtype names; "
                        f"got {entry.conformance_dtypes!r}")
    if entry.conformance_options and shape is None:
        raise ValueError(f"register_model({name!r}): conformance_options without a conformance_input")
    return entry


def register_model(fn: Callable[..., Module] | None = None, *, name: str | None = None,
                   pretrained: Iterable = (), default_tag: str | None = None,
                   layouts: Iterable[tuple[str, Converter]] = (),
                   conformance_input: tuple[int, int, int, int] | None = None,
                   conformance_options: Mapping[str, Any] | None = None,
                   conformance_dtypes: tuple[str, ...] = ()):
    """Register a model builder under ``name`` (default: the builder's ``__name__``), with what its
    family declares about it (see the module docstring). ``@register_model`` or
    ``@register_model(pretrained=..., ...)`` as a decorator, or ``register_model(builder, ...)``;
    returns the builder. Registering a name again replaces its entry."""

    def register(builder: Callable[..., Module]) -> Callable[..., Module]:
        if not callable(builder):
            raise TypeError(f"register_model takes a builder function; got {type(builder).__name__}")
        global _VERSION
        model_name = name or builder.__name__
        _VERSION += 1
        _REGISTRY[model_name] = _check_entry(ModelEntry(
            model_name, builder, getattr(builder, "__module__", "?"), tuple(pretrained), default_tag,
            tuple(layouts), None if conformance_input is None else tuple(conformance_input),
            MappingProxyType(dict(conformance_options or {})), tuple(conformance_dtypes)))
        return builder

    return register if fn is None else register(fn)


def _load_families() -> None:
    """Import every public module of :mod:`se_multi.models` (once for each package path: a
    module added to the package's ``__path__`` is found on the next call). Importing a family
    registers its models; the package's other modules (this one, ``model``, ``create``,
    ``loading``) register none, and importing them costs nothing more."""
    global _LOADED_FROM, _LOADING
    package = sys.modules.get(PACKAGE) or importlib.import_module(PACKAGE)
    path = tuple(package.__path__)
    if path == _LOADED_FROM or _LOADING:  # _LOADING: a family that asks the registry while imported
        return
    _LOADING = True
    try:
        for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
            if not module.startswith("_"):
                importlib.import_module(f"{PACKAGE}.{module}")
    finally:
        _LOADING = False
    _LOADED_FROM = path


def entries() -> dict[str, ModelEntry]:
    """Every registered model's :class:`ModelEntry`, by name, in the order they were registered."""
    _load_families()
    return dict(_REGISTRY)


def list_models() -> list[str]:
    return sorted(entries())


def check_model_name(name: str) -> str:
    """``name`` if it is a registered model, else the one error that lists the known ones."""
    known = entries()
    if name not in known:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(known))}")
    return name


def build_model(name: str, **kwargs) -> Module:
    """The unbound module for ``name`` (declared parameters, no weights)."""
    check_model_name(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    module = _REGISTRY[name].builder(**kwargs)
    # what it was built as: a whole-graph backend that calibrates it (int8, se_multi.quantize)
    # needs its preprocessing, and a bound copy keeps the name
    module.model_name = name
    return module


def layouts(model_name: str) -> list[tuple[str, Converter]]:
    """The checkpoint layouts ``model_name``'s family registered, in the order they are tried
    ("native" is implicit and last)."""
    entry = entries().get(model_name)
    return list(entry.layouts) if entry else []


def _derived(what: str, make: Callable[[dict[str, ModelEntry]], dict]) -> Mapping:
    """``make(entries)``, read-only, made again only when the registry has changed (the lookups of
    :mod:`se_multi.pretrained` run once per image)."""
    _load_families()
    key = (id(_REGISTRY), _VERSION)
    if _CACHE.get("key") != key:
        _CACHE.clear()
        _CACHE["key"] = key
    if what not in _CACHE:
        _CACHE[what] = MappingProxyType(make(dict(_REGISTRY)))
    return _CACHE[what]


def pretrained_cfgs() -> Mapping[str, Any]:
    """Every registered pretrained config, by tag."""
    return _derived("cfgs", lambda known: {cfg.tag: cfg for e in known.values() for cfg in e.pretrained})


def default_tags() -> Mapping[str, str]:
    """Model name -> its default tag, for the models that have a pretrained config."""
    return _derived("tags", lambda known: {name: e.default_tag or e.pretrained[0].tag
                                           for name, e in known.items() if e.pretrained})


def conformance_cases() -> tuple[tuple[str, tuple[int, int, int, int]], ...]:
    """``(model name, NCHW shape)`` of every model whose family declared a conformance input, by
    family (module name), then in the order the family registered them."""
    cases = [entry for entry in entries().values() if entry.conformance_input is not None]
    return tuple((entry.name, entry.conformance_input) for entry in sorted(cases, key=lambda e: e.family))
