"""Models: the registry (:mod:`se_multi.models.registry`), :class:`Model`
(:mod:`se_multi.models.model`) and :func:`create_model` (:mod:`se_multi.models.create`).

A model family is one module of this package (``resnet.py``, ``mobilenet.py``, ``unet.py``),
found by the registry without being named anywhere. It registers each of its builders with
:func:`register_model`, together with the model's pretrained configs, checkpoint layouts and
conformance case. A builder takes keyword options (``num_classes``, ``reduction``, ...) and
returns an unbound :class:`se_multi.nn.Module` whose parameters are declared in the model's
*native* checkpoint layout (the timm layout where timm has the model). Builders never touch
arrays; :func:`create_model` resolves weights, binds them on the backend and wraps the result in
a :class:`Model`.
"""

from __future__ import annotations

from se_multi.models.create import create_model
from se_multi.models.model import Model
from se_multi.models.registry import build_model, check_model_name, list_models, register_model

__all__ = ["Model", "build_model", "check_model_name", "create_model", "list_models", "register_model"]
