"""Tracing a model on shapes alone: :class:`ShapeBackend` runs a model's own ``forward`` on
shape records (no arrays, no framework), naming the module each op ran in, with the checks of
:mod:`se_multi.shapes`. :class:`InputSizes` builds on it: it tells whether an input size fits a
model, and if not, which layer's output would be empty and which smallest size works, so that a
model rejects a bad input before any backend sees it; ``model_info`` counts costs on it.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from se_multi import op_table
from se_multi.backend import Backend
from se_multi.shapes import ShapeError, _dims, _fmt, conv2d, linear, mul_channel, mul_pixel


# =========================================================================== shape-only backend
@dataclass(frozen=True)
class ShapeArray:
    """What :class:`ShapeBackend` passes between ops: a public-layout shape (NCHW feature map,
    (N, C) vector, or a weight's PyTorch-layout shape). ``source`` is the weight of the op that
    made it (gates inherit it), for subclasses that charge costs to weights."""

    shape: tuple[int, ...]
    source: "ShapeArray | None" = None

    @property
    def ndim(self) -> int:
        return len(self.shape)


class ShapeBackend(Backend):
    """Runs a module's ``forward`` on shapes alone, with the checks of this module.

    Every fused op keeps its composed default (the definition), so the shapes are those
    of the op graph every backend runs. While a bound module runs, the backend keeps the
    stack of modules entered (``traces_modules``), so a :class:`ShapeError` says in which
    layer it happened (``error.layer``). No array is allocated and no framework imported.
    """

    name = "shapes"
    dtypes = ("float32", "float64")
    traces_modules = True

    def __init__(self, dtype: str = "float32", device: str | None = None):
        super().__init__(dtype, device)
        self._stack: list = []

    # ---------------------------------------------------------------- module scopes
    @contextlib.contextmanager
    def scope(self, module):
        self._stack.append(module)
        try:
            yield
        except ShapeError as exc:
            if exc.layer is None:
                exc.layer = self._stack[:]  # resolved to a name by the caller, which knows the root
            raise
        finally:
            self._stack.pop()

    # ---------------------------------------------------------------- arrays
    def asarray(self, x: Any) -> ShapeArray:
        return x if isinstance(x, ShapeArray) else ShapeArray(_dims(np.shape(x)))

    @staticmethod
    def to_numpy(x: ShapeArray) -> np.ndarray:
        return np.broadcast_to(np.zeros((), np.float32), x.shape)  # zero memory: values do not exist here

    def param(self, w: np.ndarray, kind: str) -> ShapeArray:
        return ShapeArray(_dims(np.shape(w)))

    def fold_batch_norm(self, w, b, mean, var, gamma, beta, eps):
        return w, np.broadcast_to(np.zeros((), np.float64), np.shape(w)[:1])  # shapes only: no arithmetic

    def out(self, shape, w: ShapeArray | None = None) -> ShapeArray:
        """The result of an op (a hook for subclasses that count costs)."""
        return ShapeArray(tuple(shape), source=w)

    # ---------------------------------------------------------------- primitives
    def conv2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        return self.out(conv2d(x.shape, w.shape, stride, padding, dilation, groups), w)

    def linear(self, x, w, b=None):
        return self.out(linear(x.shape, w.shape), w)

    def batch_norm(self, x, mean, var, weight, bias, eps):
        return x

    def relu(self, x):
        return x

    relu6 = sigmoid = hard_sigmoid = hard_swish = relu

    def mul_channel(self, x, s):
        return self.out(mul_channel(x.shape, s.shape), s.source)

    def mul_pixel(self, x, q):
        return self.out(mul_pixel(x.shape, q.shape), q.source)

    # every other primitive (pools, global_avg_pool, add, maximum, upsample_nearest2x,
    # concat_channels, ...) follows its shape rule in the op table: set below the class


def _traced(op: op_table.Op):
    """A primitive on shapes: the op table's shape rule on its arguments' shapes."""

    def method(self, *args, **kwargs):
        shape = tuple(op.output_shape(*args, **kwargs))
        if shape and isinstance(shape[0], tuple):  # several outputs (max_pool2d_indices)
            return tuple(self.out(s) for s in shape)
        if len(args) == 1 and not kwargs and isinstance(args[0], ShapeArray) and shape == args[0].shape:
            return args[0]  # elementwise: the input itself, as the activations above (a gate keeps its weight)
        return self.out(shape)

    method.__name__, method.__doc__ = op.name, f"``{op.name}`` on shapes: its shape rule."
    return method


for _name in op_table.PRIMITIVES:
    if _name not in ShapeBackend.__dict__:
        setattr(ShapeBackend, _name, _traced(op_table.OPS[_name]))
abc.update_abstractmethods(ShapeBackend)
del _name


# =========================================================================== input sizes of a model
def shape_state(module) -> dict[str, np.ndarray]:
    """Read-only zero views of a declaration's shapes: binding on shapes needs arrays, not memory
    (float64, the dtype binding works in, so that no conversion copies them)."""
    zero = np.zeros((), np.float64)
    return {name: np.broadcast_to(zero, spec.shape) for name, spec in module.param_specs().items()}


def layer_name(root, stack: Sequence) -> str:
    """The checkpoint path of the innermost module in ``stack`` (``layer1.0.conv2``), or ``input``."""
    for module in reversed(stack):
        if module is root:
            break
        for prefix, m in root.named_modules():
            if m is module:
                return m.layer_name(prefix)
    return "the model's own ops"


class InputSizes:
    """Which input sizes a declared model accepts, found by tracing its own graph on shapes.

    ``error(c, h, w)`` is ``None`` when an input fits, else the :class:`ShapeError` (or the
    model's own ``ValueError``) that the trace raised. ``smallest()`` is the smallest (H, W)
    that fits: the smallest square that fits, then each side shrunk alone (a conv net's ops act
    on each axis separately). Traces are cheap (no arrays) and the verdicts are memoised in a
    bounded cache.
    """

    #: sizes tried before giving up on finding the smallest one
    SEARCH_LIMIT = 4096

    def __init__(self, module, in_chans: int = 3):
        from se_multi.cache import BoundedCache, INPUT_SIZE_VERDICTS

        self.in_chans = in_chans
        self._ops = ShapeBackend()
        self._module = module.bind(shape_state(module), self._ops)
        self._verdicts = BoundedCache(INPUT_SIZE_VERDICTS)
        self._smallest = None

    def trace(self, shape) -> ShapeArray:
        """The output shape for an NCHW input shape; raises what the graph raises."""
        return self._module(self._ops, self._ops.input(ShapeArray(_dims(shape))))

    def error(self, c: int, h: int, w: int) -> ValueError | None:
        def verdict():
            try:
                self.trace((1, c, h, w))
            except ShapeError as exc:
                exc.layer = layer_name(self._module, exc.layer or [])
                return exc
            except ValueError as exc:  # a model's own input rule (e.g. multiples of 32)
                return exc
            return None

        return self._verdicts.get_or_create((c, h, w), verdict)

    def smallest(self) -> tuple[int, int] | None:
        if self._smallest is None:
            c = self.in_chans
            side = next((s for s in range(1, self.SEARCH_LIMIT + 1) if self.error(c, s, s) is None), None)
            if side is None:
                return None
            h = next(s for s in range(1, side + 1) if self.error(c, s, side) is None)
            w = next(s for s in range(1, side + 1) if self.error(c, side, s) is None)
            self._smallest = (h, w) if self.error(c, h, w) is None else (side, side)
        return self._smallest

    def check(self, model_name: str, shape) -> None:
        """Raise one ``ValueError`` naming the model, the input size, the layer and the smallest
        size that works, if an NCHW ``shape`` does not fit the model."""
        _, c, h, w = _dims(shape)
        exc = self.error(c, h, w)
        if exc is None:
            return
        smallest = self.smallest()
        fits = f"; the smallest input that works is {_fmt(smallest)}" if smallest else ""
        if isinstance(exc, ShapeError):
            raise ValueError(f"{model_name}: a {h}x{w} input does not fit: at layer {exc.layer}, {exc}{fits}") from None
        raise ValueError(f"{model_name}: a {h}x{w} input does not fit: {exc}{fits}") from None
