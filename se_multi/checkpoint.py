"""Reading checkpoints and mapping peer key layouts onto the native one.

Formats: ``.safetensors`` (no torch needed), ``.npz``, ``.pth``/``.pt``/``.bin`` (needs
torch; ``torch.load(weights_only=True)``, never unpickling arbitrary objects); or a hub id
(:mod:`se_multi.hub`). What a checkpoint holds is checked when it is bound
(:func:`se_multi.nn.check_state`): keys, shapes, dtypes, finiteness, BatchNorm variances.

Layouts: each model family registers converters with :func:`register_layout`.
A converter looks at the keys of a state dict and either declines (returns
``None``) or returns ``(native_state, options)``, where ``options`` are builder
keywords the layout implies (e.g. torchvision's BatchNorm ``eps=1e-3``).
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

Converter = Callable[[dict], "tuple[dict, dict] | None"]
#: model name -> [(layout name, converter)], tried in order; "native" is implicit and last
_LAYOUTS: dict[str, list[tuple[str, Converter]]] = {}


def register_layout(model_names, layout: str, converter: Converter) -> None:
    for name in [model_names] if isinstance(model_names, str) else model_names:
        _LAYOUTS.setdefault(name, []).append((layout, converter))


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A checkpoint file -> ``{key: NumPy array}``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(path))
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if ext in (".pth", ".pt", ".bin"):
            try:
                import torch
            except ImportError:
                raise CheckpointError(
                    f"{path}: reading {ext} checkpoints needs torch (pip install 'se-multi[torch]'); "
                    "or convert it to .safetensors"
                ) from None
            obj = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model", "model_state_dict"):
                if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
                    obj = obj[key]
            if not isinstance(obj, dict):
                raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
            return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in obj.items()
                    if hasattr(v, "numpy")}
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    raise CheckpointError(f"{path}: unknown checkpoint format {ext!r}; expected .safetensors, .npz, .pth or .pt")


def convert_layout(model_name: str, state: dict) -> tuple[dict, dict, str]:
    """Detect the layout from the keys -> ``(native_state, builder_options, layout_name)``."""
    from se_multi.models import list_models

    list_models()  # import the families, which register their layouts
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel prefix
    for layout, converter in _LAYOUTS.get(model_name, []):
        out = converter(state)
        if out is not None:
            native, opts = out
            return native, opts, layout
    return state, {}, "native"


def resolve_weights(weights) -> str:
    """A local path (it always wins), or a hub id resolved through :mod:`se_multi.hub`."""
    from se_multi import hub

    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a checkpoint path or a hub id (str); got {type(weights).__name__}")
    path = os.fspath(weights)
    if os.path.exists(path):
        return path
    repo_id = hub.parse_hub_id(path)
    if repo_id is None:
        raise CheckpointError(f"checkpoint not found: {path}")
    return hub.resolve(repo_id)


def load_for_model(model_name: str, weights: str) -> tuple[dict, dict]:
    """Read ``weights`` for ``model_name`` -> ``(native_state, builder_options)``."""
    state = read_state_dict(resolve_weights(weights))
    native, opts, _ = convert_layout(model_name, state)
    return native, opts


def infer_num_classes(model_name: str, state: dict) -> int | None:
    """The class count a checkpoint was trained for, from its classifier (last 2-D+ weight)."""
    from se_multi.models import build_model

    head = getattr(build_model(model_name), "classifier_key", None)
    if head and head in state:
        return int(np.shape(state[head])[0])
    return None


def load_checkpoint(path: str, model: str) -> dict[str, np.ndarray]:
    """Public helper: a checkpoint in any supported layout -> the native state dict for ``model``."""
    return load_for_model(model, path)[0]
