"""The backend protocol: the one op table every array library implements.

Rules (read these before writing a backend):

1. A backend is one subclass of :class:`Backend` in one module. It implements the
   *primitives* (the abstract methods below) and nothing else is required: every
   *fused op* (``squeeze``, ``excite``, ``scale``, ``scale_add_relu``, ...) has a
   default composed from the primitives, so a new backend passes the conformance
   suite as soon as its primitives are right. Override a fused op only for speed,
   and the same conformance check then proves the override right.
2. Models and blocks call ops only. There is no ``if backend == ...`` outside
   ``backends/``; anything backend-specific (layout, device, kernels) lives in the
   backend.
3. No framework is imported until the backend is instantiated (import it inside
   ``__init__`` or methods). ``import se_multi`` must import no torch, mlx or cupy.
4. Feature maps are *opaque* between ops. The public boundary is NCHW:
   :meth:`Backend.input` turns a public NCHW array into the backend's internal
   feature map (an NHWC backend transposes here, once per forward) and
   :meth:`Backend.output` turns it back. Weights are converted once, at load, by
   :meth:`Backend.param`, which receives them in PyTorch layout (conv ``OIHW``,
   linear ``(out, in)``); an NHWC backend transposes them there, never per op.
5. Convolution arguments arrive normalised: ``stride`` and ``dilation`` are
   ``(h, w)`` tuples and ``padding`` is ``(top, bottom, left, right)``.
6. Per-channel vectors (``s`` of :meth:`mul_channel`, the result of
   :meth:`global_avg_pool`) are ``(N, C)`` native arrays; a per-pixel map ``q``
   of :meth:`mul_pixel` is a one-channel feature map.
7. The compute dtype is fixed per backend instance (``dtype=``); :meth:`asarray`
   and :meth:`param` cast to it. ``device=`` is the backend's own device name
   (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"gpu"``).

Whole-graph backends (an engine that takes a whole model, such as ONNX Runtime)
subclass :class:`GraphBackend` instead; see its docstring.
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
from typing import Any, ClassVar, Sequence

import numpy as np

Array = Any  # a backend's native array type

#: Activation and gate names an op may receive; each maps to a primitive method.
ACTIVATIONS = ("relu", "relu6", "sigmoid", "hard_sigmoid", "hard_swish")


class BackendUnavailable(RuntimeError):
    """A backend's package is missing or it cannot run here (no device)."""


class Backend(abc.ABC):
    """An op-by-op backend. Subclass it, set the class attributes, implement the primitives."""

    #: the name users pass as ``backend=``
    name: ClassVar[str] = ""
    #: the import name whose absence makes the backend unavailable
    package: ClassVar[str | None] = None
    #: the pip extra that installs it: ``pip install se-multi[<extra>]``
    extra: ClassVar[str | None] = None
    #: compute dtypes this backend supports, the first is the default
    dtypes: ClassVar[tuple[str, ...]] = ("float32",)

    def __init__(self, dtype: str = "float32", device: str | None = None):
        dtype = str(np.dtype(dtype)) if dtype not in ("bfloat16",) else dtype
        if dtype not in self.dtypes:
            raise ValueError(
                f"backend {self.name!r} supports dtype {', '.join(self.dtypes)}; got {dtype!r}"
            )
        self.dtype = dtype
        self.device = device

    # ------------------------------------------------------------------ availability
    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """``(usable, reason)`` without importing the framework where possible."""
        if cls.package and importlib.util.find_spec(cls.package) is None:
            return False, f"not installed: pip install 'se-multi[{cls.extra or cls.package}]'"
        return True, "available"

    def __repr__(self) -> str:
        dev = f", device={self.device!r}" if self.device else ""
        return f"<{type(self).__name__} {self.name!r} dtype={self.dtype}{dev}>"

    # ------------------------------------------------------------------ arrays
    @abc.abstractmethod
    def asarray(self, x: Any) -> Array:
        """NumPy or native array -> native array in the compute dtype, on the device."""

    @abc.abstractmethod
    def to_numpy(self, x: Array) -> np.ndarray:
        """Native array -> NumPy array (same layout, same values)."""

    def is_native(self, x: Any) -> bool:
        """Whether ``x`` is already this backend's array type (passed through as is)."""
        return isinstance(x, np.ndarray)

    def input(self, x: Any) -> Array:
        """Public NCHW array -> internal feature map (layout conversion happens here, once)."""
        return self.asarray(x)

    def output(self, y: Array) -> Array:
        """Internal feature map or (N, K) logits -> public NCHW / (N, K) native array."""
        return y

    def param(self, w: np.ndarray, kind: str) -> Array:
        """A folded weight, PyTorch layout, float64 NumPy -> native, once at load.

        ``kind`` is ``"conv"`` (OIHW), ``"linear"`` ((out, in)) or ``"vector"`` ((C,)).
        """
        return self.asarray(w)

    def shape(self, x: Array) -> tuple[int, ...]:
        """NCHW shape of an internal feature map (or the shape of a vector/matrix)."""
        return tuple(int(d) for d in x.shape)

    def synchronize(self, x: Array) -> Array:
        """Materialise lazy work / wait for the device (for timing). Returns ``x``."""
        return x

    def run_model(self, module: Any, x: Any) -> Array:
        """Run a bound module on a public NCHW input and return the public output.

        This is how :class:`se_multi.Model` calls every backend. The default runs the
        module op by op between :meth:`input` and :meth:`output`; a backend that takes a
        whole forward at once (a traced/compiled graph, an inference session) overrides
        this one method, and nothing in the models changes.
        """
        return self.output(module(self, self.input(x)))

    # ------------------------------------------------------------------ primitives
    @abc.abstractmethod
    def conv2d(self, x: Array, w: Array, b: Array | None = None, stride=(1, 1),
               padding=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1) -> Array:
        """2-D cross-correlation (PyTorch ``conv2d`` semantics), grouped and depthwise included."""

    @abc.abstractmethod
    def linear(self, x: Array, w: Array, b: Array | None = None) -> Array:
        """``x @ w.T + b`` for ``x`` of shape (N, in)."""

    @abc.abstractmethod
    def batch_norm(self, x: Array, mean: Array, var: Array, weight: Array, bias: Array,
                   eps: float) -> Array:
        """Inference batch norm over channels (running statistics)."""

    @abc.abstractmethod
    def relu(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def relu6(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def sigmoid(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def hard_sigmoid(self, x: Array) -> Array:
        """PyTorch's definition: ``relu6(x + 3) / 6``."""

    @abc.abstractmethod
    def hard_swish(self, x: Array) -> Array:
        """``x * relu6(x + 3) / 6``."""

    @abc.abstractmethod
    def max_pool2d(self, x: Array, kernel, stride, padding=(0, 0), ceil_mode: bool = False) -> Array:
        """Max pool; ``kernel``/``stride``/``padding`` are (h, w); PyTorch ``ceil_mode`` rule."""

    @abc.abstractmethod
    def avg_pool2d(self, x: Array, kernel, stride, padding=(0, 0), ceil_mode: bool = False,
                   count_include_pad: bool = True) -> Array:
        """Average pool with PyTorch's divisor rules."""

    @abc.abstractmethod
    def global_avg_pool(self, x: Array) -> Array:
        """Mean over H and W: feature map -> (N, C)."""

    @abc.abstractmethod
    def add(self, a: Array, b: Array) -> Array: ...

    @abc.abstractmethod
    def maximum(self, a: Array, b: Array) -> Array: ...

    @abc.abstractmethod
    def mul_channel(self, x: Array, s: Array) -> Array:
        """``x[n, c, h, w] * s[n, c]`` (channel-wise broadcast)."""

    @abc.abstractmethod
    def mul_pixel(self, x: Array, q: Array) -> Array:
        """``x[n, c, h, w] * q[n, 0, h, w]`` (pixel-wise broadcast)."""

    @abc.abstractmethod
    def upsample_nearest2x(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def concat_channels(self, xs: Sequence[Array]) -> Array: ...

    # ------------------------------------------------------------------ dispatch helpers
    def act(self, name: str | None, x: Array) -> Array:
        """Apply the activation/gate called ``name`` (``None`` = identity)."""
        if name is None:
            return x
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")
        return getattr(self, name)(x)

    # ------------------------------------------------------------------ fused ops
    # Each default is the definition; a backend overrides one only to run it faster.
    def conv2d_act(self, x: Array, w: Array, b: Array | None, act: str | None, stride=(1, 1),
                   padding=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1) -> Array:
        """Convolution + bias + activation (BN is already folded into ``w``, ``b``)."""
        return self.act(act, self.conv2d(x, w, b, stride, padding, dilation, groups))

    def squeeze(self, x: Array) -> Array:
        """SE squeeze: global average pool, feature map -> (N, C)."""
        return self.global_avg_pool(x)

    def excite(self, z: Array, w1: Array, b1: Array | None, w2: Array, b2: Array | None,
               act: str = "relu", gate: str = "sigmoid") -> Array:
        """SE excitation on the squeezed (N, C) vector: FC -> act -> FC -> gate."""
        return self.act(gate, self.linear(self.act(act, self.linear(z, w1, b1)), w2, b2))

    def scale(self, x: Array, s: Array) -> Array:
        """SE scale: multiply each channel by its gate."""
        return self.mul_channel(x, s)

    def scale_add_relu(self, x: Array, s: Array, residual: Array) -> Array:
        """``relu(x * s + residual)``: the end of a standard SE residual unit."""
        return self.relu(self.add(self.scale(x, s), residual))

    def add_relu(self, a: Array, b: Array) -> Array:
        """``relu(a + b)``: the end of a plain residual unit."""
        return self.relu(self.add(a, b))

    def spatial_gate(self, x: Array, w: Array, b: Array | None) -> Array:
        """sSE gate: 1x1 conv C -> 1, then sigmoid; a one-channel map."""
        return self.sigmoid(self.conv2d(x, w, b))

    def scse(self, x: Array, s: Array, q: Array, mode: str = "add") -> Array:
        """scSE combine: ``x*s + x*q`` (Roy et al.) or ``max(x*s, x*q)``."""
        cse, sse = self.mul_channel(x, s), self.mul_pixel(x, q)
        if mode == "add":
            return self.add(cse, sse)
        if mode == "max":
            return self.maximum(cse, sse)
        raise ValueError(f"scSE mode must be 'add' or 'max'; got {mode!r}")

    #: names of the fused ops above; the conformance suite checks each one
    FUSED_OPS: ClassVar[tuple[str, ...]] = (
        "conv2d_act", "squeeze", "excite", "scale", "scale_add_relu", "add_relu",
        "spatial_gate", "scse",
    )


class GraphBackend(Backend):
    """A backend that runs a whole model at once (ONNX Runtime, TensorRT, ...).

    :meth:`run_model` (what every model call goes through) hands the bound module
    (already holding folded weights, made by :meth:`param`) and the input's shape to
    :meth:`compile`, and runs the callable it returns; an implementation caches that
    callable per module and input shape. Such a backend still exposes the op table:
    the conformance suite checks each op by compiling a one-op graph.
    """

    @abc.abstractmethod
    def compile(self, model: Any, input_shape: tuple[int, ...]):
        """Return ``fn(x_nchw) -> output`` running the whole model."""

    def run_model(self, module: Any, x: Any) -> Array:
        x = self.asarray(x)
        return self.compile(module, tuple(x.shape))(x)
