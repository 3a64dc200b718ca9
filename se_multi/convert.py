"""Rewriting a checkpoint in the native layout (``se-multi convert``, :mod:`se_multi.cli.convert`).

The output holds exactly the model's declared tensors under their native names (BatchNorm
unfolded, as checkpoints keep it; training counters such as ``num_batches_tracked`` dropped), so
it loads with ``create_model(NAME, weights=OUT)`` on any backend, without torch. Without
``--model`` the model is detected: every registered model whose layout converters accept the keys
and whose declared shapes match exactly is a candidate, and there must be exactly one.
"""

from __future__ import annotations

import json
import os

import numpy as np

from se_multi import checkpoint
from se_multi.models import loading
from se_multi.files import atomic_output
from se_multi.nn import check_state, key_mismatches

__all__ = ["convert_checkpoint", "detect_model"]


def _native_for(model_name: str, state: dict) -> tuple[dict, dict, str, dict]:
    """``(native_state, builder_options, layout, declared_specs)`` of ``state`` read as ``model_name``."""
    from se_multi.models import build_model

    native, options, layout = loading.convert_layout(model_name, state)
    options = {"num_classes": loading.infer_num_classes(model_name, native), **options}
    specs = build_model(model_name, **options).param_specs()
    return native, options, layout, specs


def _fit(model_name: str, state: dict) -> tuple[dict, dict, str]:
    """``(native_state, builder_options, layout)``; raises :class:`StateDictError` naming the
    missing / unexpected / mis-shaped keys if ``state`` is not a checkpoint of ``model_name``."""
    native, options, layout, specs = _native_for(model_name, state)
    check_state(specs, native, what=f"checkpoint (read as {layout} layout) for {model_name!r}")
    return {k: native[k] for k in specs}, options, layout


def _keys_off(model_name: str, state: dict) -> int:
    """Missing + unexpected + mis-shaped keys of ``state`` for ``model_name`` (0 = it fits)."""
    native, _, _, specs = _native_for(model_name, state)
    return sum(len(keys) for keys in key_mismatches(specs, native).values())


def detect_model(state: dict) -> str:
    """The one registered model this state dict fits; a clear error when none or several do."""
    from se_multi.models import list_models

    scores = []
    for name in list_models():
        try:
            scores.append((_keys_off(name, state), name))
        except (ValueError, TypeError):  # options a layout implied that this model cannot take
            continue
    fits = [name for off, name in scores if off == 0]
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise ValueError(f"the checkpoint fits several models ({', '.join(fits)}); choose one with --model")
    closest = ", ".join(f"{name} ({off} keys off)" for off, name in sorted(scores)[:3])
    raise ValueError(f"no registered model matches this checkpoint's {len(state)} keys; closest: {closest}; "
                     "pass --model NAME to list the mismatched keys")


def convert_checkpoint(src: str, dst: str, model: str | None = None) -> dict:
    """Read ``src`` (any supported format and layout), write the native layout to ``dst``
    (.safetensors). Returns a summary: model, layout, options, tensors, params."""
    if os.path.splitext(os.fspath(dst))[1].lower() != ".safetensors":
        raise ValueError(f"output must be a .safetensors file; got {dst!r}")
    from safetensors.numpy import save_file

    state = checkpoint.read_state_dict(checkpoint.resolve_weights(src))
    model = model or detect_model(state)
    native, options, layout = _fit(model, state)
    # the builder options a layout implies travel in the file's metadata (safetensors keeps strings)
    metadata = {"se_multi.model": model, "se_multi.source_layout": layout,
                "se_multi.options": json.dumps({k: v for k, v in options.items() if v is not None})}
    with atomic_output(dst) as tmp:  # a failed write leaves no half file, and an old one as it was
        save_file({k: np.ascontiguousarray(v) for k, v in native.items()}, os.fspath(tmp), metadata=metadata)
    params = sum(int(np.prod(np.shape(v))) for k, v in native.items() if "running_" not in k)
    # options the native keys do not imply again on load (e.g. a layout's BN eps) must be restated
    _, implied, _ = loading.convert_layout(model, native)
    restate = {k: v for k, v in options.items() if k != "num_classes" and implied.get(k) != v}
    return {"model": model, "layout": layout, "options": options, "restate_on_load": restate,
            "tensors": len(native), "params": params}
