"""Reading a checkpoint for a model: its layout detected from its keys, the declaration it
implies (class count, builder options), its tensors checked against that declaration.

:mod:`se_multi.checkpoint` reads files and converts layouts it is given; the registry holds the
layouts the families register; this module, above both, puts them together.
"""

from __future__ import annotations

import numpy as np

from se_multi.checkpoint import read_state_dict, resolve_weights, to_native
from se_multi.models.registry import build_model, layouts


def convert_layout(model_name: str, state: dict) -> tuple[dict, dict, str]:
    """Detect the layout from the keys -> ``(native_state, builder_options, layout_name)``, trying
    the layouts ``model_name``'s family registered, then the native one."""
    return to_native(state, layouts(model_name))


def _declare(model_name: str, state: dict, num_classes: int | None, model_kwargs: dict):
    """``(declaration, native_state, builder_options)``: ``state`` read in its layout, and the model
    it is a checkpoint of (``num_classes`` from its classifier unless given)."""
    native, opts, _ = convert_layout(model_name, state)
    if num_classes is None:
        num_classes = infer_num_classes(model_name, native)
    # what the caller asks for wins over what the checkpoint implies: a mismatch is then reported
    # key by key against the caller's declaration, never as a duplicate keyword
    return build_model(model_name, num_classes=num_classes, **{**opts, **model_kwargs}), native, opts


def load_declared(model_name: str, weights: str, num_classes: int | None = None, **model_kwargs):
    """Read ``weights`` for ``model_name`` -> ``(declaration, native_state, builder_options)``, the
    declaration built with ``num_classes`` (default: the checkpoint's) and ``model_kwargs``.

    A ``.npz`` is checked against that declaration from its headers before any tensor is read
    (:func:`read_state_dict`), by the same :func:`se_multi.nn.check_state` that binding runs."""
    from se_multi.nn import check_state

    path = resolve_weights(weights)

    def expect(stand_ins: dict) -> int:
        declaration, native, _ = _declare(model_name, stand_ins, num_classes, model_kwargs)
        specs = declaration.param_specs()
        check_state(specs, native, what=f"checkpoint {path}")
        return sum(int(np.prod(spec.shape)) * native[key].dtype.itemsize for key, spec in specs.items())

    return _declare(model_name, read_state_dict(path, expect), num_classes, model_kwargs)


def load_for_model(model_name: str, weights: str, num_classes: int | None = None, **model_kwargs) -> tuple[dict, dict]:
    """Read ``weights`` for ``model_name`` -> ``(native_state, builder_options)`` (:func:`load_declared`)."""
    _, native, opts = load_declared(model_name, weights, num_classes, **model_kwargs)
    return native, opts


def infer_num_classes(model_name: str, state: dict) -> int | None:
    """The class count a checkpoint was trained for, from its classifier (last 2-D+ weight)."""
    head = getattr(build_model(model_name), "classifier_key", None)
    if head and head in state:
        return int(np.shape(state[head])[0])
    return None


def load_checkpoint(path: str, model: str) -> dict[str, np.ndarray]:
    """Public helper: a checkpoint in any supported layout -> the native state dict for ``model``."""
    return load_for_model(model, path)[0]
