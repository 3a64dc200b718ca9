"""A bound model (:class:`Model`): a declaration bound on a backend, called on NCHW arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from se_multi.dispatch import to_numpy
from se_multi.dtypes import is_floating, largest_finite
from se_multi.nn import Module

__all__ = ["Model"]


class Model:
    """A bound model: ``model(x)`` takes NCHW (NumPy or the backend's native array) and
    returns the output in the backend's native type (logits N x K, or N x K x H x W).

    ``declaration`` is the model as declared (data: no arrays), ``module`` the copy bound on
    ``ops`` (weights, and whatever the backend compiled for it). Dropping the Model frees both.
    """

    def __init__(self, name: str, module: Module, ops, in_chans: int | None = None):
        if module.bound_to is not ops:
            raise TypeError(f"{name}: Model needs the module bound on {ops!r} (what bind(state, ops) returns)")
        # the input's channels: as given, else as the module declares them (QuickNAT's one MRI channel), else RGB
        in_chans = getattr(module, "in_chans", 3) if in_chans is None else in_chans
        self.name, self.module, self.ops, self.in_chans = name, module, ops, in_chans
        self.declaration = module.declaration
        if "calibration_default" not in module.__dict__:  # create_model gives the weights' preprocessing
            from se_multi.calibration import DefaultCalibration

            # what an int8 backend calibrates it on when given no data (the adapter never preprocesses)
            module.calibration_default = DefaultCalibration(name)
        self._input_sizes = None

    backend = property(lambda self: self.ops)
    dtype = property(lambda self: self.ops.dtype)

    @property
    def input_sizes(self):
        """Which input sizes fit this model's graph (:class:`se_multi.tracing.InputSizes`)."""
        if self._input_sizes is None:
            from se_multi.tracing import InputSizes

            self._input_sizes = InputSizes(self.declaration, self.in_chans)
        return self._input_sizes

    def smallest_input_size(self) -> tuple[int, int] | None:
        """The smallest (H, W) this model accepts, derived from its own graph."""
        return self.input_sizes.smallest()

    def check_input_size(self, shape) -> None:
        """One ``ValueError`` (model, input size, the layer whose output would be empty, the
        smallest size that works) if an NCHW shape does not fit; before any backend runs."""
        self.input_sizes.check(self.name, shape)

    def check_input(self, x: Any) -> Any:
        """Reject what would otherwise give a silent wrong answer or a backend traceback; return
        the input ready for the backend (a NumPy array in native byte order)."""
        from se_multi.dispatch import max_abs

        if not (hasattr(x, "shape") and hasattr(x, "dtype")) or isinstance(x, (np.generic, memoryview)):
            raise TypeError(f"{self.name}: expected an array (NumPy, or the backend's own) of shape "
                            f"(N, {self.in_chans}, H, W); got {type(x).__name__} (np.asarray(x, np.float32) makes one)")
        shape = tuple(int(d) for d in x.shape)
        if len(shape) != 4:
            raise ValueError(f"{self.name}: expected a 4-D NCHW array (N, {self.in_chans}, H, W); got shape {shape}")
        if shape[1] != self.in_chans:
            hint = " (it looks NHWC: transpose with x.transpose(0, 3, 1, 2))" if shape[-1] == self.in_chans else ""
            raise ValueError(f"{self.name}: expected NCHW with {self.in_chans} channels; got shape {shape}{hint}")
        if shape[0] < 1:
            raise ValueError(f"{self.name}: expected at least one image; got shape {shape}")
        if not is_floating(x.dtype):
            raise TypeError(f"{self.name}: expected a floating-point array (bfloat16, float16, float32 or float64); "
                            f"got dtype {x.dtype}")
        if isinstance(x, np.ndarray) and not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))  # a big-endian array is data, not an error
        # one reduction gives both checks: max |x| is NaN if x holds a NaN and inf if it holds an Inf
        # (measured cost: see the README's "Input sizes, caches and threads")
        largest = max_abs(x)
        if not np.isfinite(largest):
            raise ValueError(f"{self.name}: input contains NaN or Inf")
        # a quantized (int8) graph takes float32 inputs: the backend says which dtype inputs must fit
        limit = largest_finite(getattr(self.ops, "input_dtype", self.ops.dtype))
        if largest > limit:
            raise ValueError(f"{self.name}: input values up to {largest:.4g} overflow the compute dtype "
                             f"{self.ops.dtype} (largest finite {limit:.4g}); scale the input first")
        self.check_input_size(shape)
        return x

    def __call__(self, x: Any) -> Any:
        return self.ops.run_model(self.module, self.check_input(x))

    def predict_numpy(self, x: Any) -> np.ndarray:
        return to_numpy(self(x))

    def __repr__(self) -> str:
        return f"<Model {self.name!r} on {self.ops!r}, {self.module.num_params() / 1e6:.2f}M params>"

    # A Model pickles, and deep-copies, as its name, its bound module (the weights as the backend
    # holds them, and the declaration: plain data) and its backend as the way to make it again
    # (se_multi.dispatch.portable: by name, dtype, device and options); caches are not copied
    # (nn.Module.__getstate__), so a copy compiles its own graphs on a backend object of its own.
    def __getstate__(self) -> dict:
        from se_multi.dispatch import portable

        return {**self.__dict__, "ops": portable(self.ops), "_input_sizes": None}

    def __copy__(self) -> "Model":
        # a shallow copy shares the module and the backend (the default would go through
        # __getstate__ and keep the backend's recipe in place of the backend)
        new = object.__new__(Model)
        new.__dict__.update(self.__dict__)
        return new
