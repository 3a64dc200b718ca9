"""Making a model ready to run (:func:`create_model`): build it, load or seed its weights, bind
it on a backend."""

from __future__ import annotations

from typing import Any

from se_multi.dispatch import get_backend
from se_multi.models.model import Model
from se_multi.models.registry import build_model

__all__ = ["create_model"]


def create_model(name: str, weights: str | None = None, backend: Any = "auto", dtype: str = "float32",
                 device: str | None = None, num_classes: int | None = None, seed: int = 0, **kwargs) -> Model:
    """Build ``name``, load ``weights`` and bind it on ``backend``.

    ``weights``: ``None`` (deterministic seeded weights, the offline default), a checkpoint
    path (``.safetensors``, ``.npz``, ``.pth``/``.pt``), or a hub id such as
    ``timm/seresnet50.a1_in1k`` (needs the ``hub`` extra and a network).
    """
    from se_multi.calibration import DefaultCalibration
    from se_multi.models.loading import load_declared
    from se_multi.init import recipe_state

    if not isinstance(name, str):
        raise TypeError(f"model name must be a str; got {type(name).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"seed must be a non-negative int; got {seed!r}")
    if weights is None:
        module = build_model(name, num_classes=num_classes, **kwargs)
        specs = module.param_specs()
        state = recipe_state(((k, s.shape, s.kind) for k, s in specs.items()), seed=seed)
    else:
        module, state, _ = load_declared(name, weights, num_classes, **kwargs)
    ops = get_backend(backend, dtype=dtype, device=device)
    bound = module.bind(state, ops)
    # what an int8 backend calibrates it on when given no data (the adapter never preprocesses)
    bound.calibration_default = DefaultCalibration(name, weights)
    return Model(name, bound, ops)
