"""MLX backend: Apple silicon (Metal GPU) and Linux/macOS CPU, NHWC, float32/float16/bfloat16.

Layout. MLX convolutions are channels-last, so feature maps live as NHWC:
:meth:`MlxBackend.input` transposes the public NCHW array once per forward and
:meth:`MlxBackend.output` transposes 4-D results back; weights are rearranged once
in :meth:`MlxBackend.param`. No op transposes a feature map, and only
:meth:`MlxBackend.conv_transpose2d` a weight (``param`` lays its (C_in, C_out, KH, KW) weight out
as a conv's; MLX wants (C_out, KH, KW, C_in): a view, per call).

Convolution formulation, chosen per device by measurement (``conv="auto"``):

- ``"conv2d"`` (the GPU default): ``mx.conv_general`` with (C_out, KH, KW, C_in/groups)
  weights -- Metal's convolution kernels are the fast path there.
- ``"im2col"`` (the CPU default): MLX 0.32's CPU convolution and matmul run on the
  reference (netlib) BLAS bundled in the ``mlx[cpu]`` wheel, which is ~30x slower than
  NumPy's OpenBLAS. What still matters there is the shape handed to that BLAS:
  ``cols @ W`` with ``W`` stored contiguous as (KH*KW*C_in, C_out) is ~2x faster than
  ``mx.conv2d`` (whose internal weight view is transposed), and a depthwise conv as
  KH*KW whole-tensor multiply-adds (MLX's vectorised elementwise kernels, no BLAS) is
  ~5x faster than ``mx.conv2d`` with ``groups=C``. Measured on the 2-core Linux CI
  box, float32, batch 1, best of 3 (ms):

  ==========================  =========  =======  ======================
  conv                        mx.conv2d  im2col   depthwise taps
  ==========================  =========  =======  ======================
  3x3 64->64 @56^2            128        60
  1x1 64->256 @56^2           33         23
  3x3 128->128 @28^2          204        103
  3x3 512->512 @7^2           96         40
  7x7/2 3->64 @224^2          78         42
  3x3/2 128->128 @56^2        93         38
  dw 3x3 32 @112^2            9.5                 1.5
  dw 3x3/2 128 @56^2          3.7                 0.6
  ==========================  =========  =======  ======================

  Grouped (non-depthwise) convs use ``mx.conv_general`` on every device.

The CPU layout for conv weights is therefore HWIO (KH, KW, C_in/groups, C_out), the
GPU layout OHWI; the choice is fixed per backend instance, so ``param`` and
``conv2d`` always agree. Linear weights are stored (in, out), contiguous, for the
same BLAS reason (``x @ W`` beats ``x @ W_t.T`` ~2x on the CPU build).

Lazy evaluation. MLX builds a graph and computes on :func:`mlx.core.eval`; this
backend evaluates in :meth:`output`, :meth:`synchronize` and :meth:`to_numpy`, so
what a user (or a timer) receives is always materialised.

``mx.compile``: unless ``compile=False`` (or ``SE_MULTI_MLX_COMPILE=0``) :meth:`run_model`
runs each model's whole forward through ``mx.compile``, and :meth:`compile_forward` does the
same for any function; otherwise both run op by op. MLX traces a compiled function once per
input shape and keeps every trace while the function lives, so a model keeps one compiled
function per input shape, at most ``graph_cache_size`` of them (least recently used out; see
:mod:`se_multi.cache`), in the bound model itself: dropping the model frees them.

Threads. MLX is not thread-safe, and a thread that ran MLX work must destroy its streams
(``mx.clear_streams()``) before it exits or the process aborts at exit ("terminate called
without an active exception"). So every whole-model call holds one process-wide lock
(calls from several threads are serialised, not parallel), and the first call from a thread
registers a thread-local guard whose finaliser, run by that thread as it ends, clears the
thread's streams.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import weakref
from typing import Sequence

import numpy as np

from se_multi import op_table, shapes
from se_multi.backend import Backend, BackendUnavailable
from se_multi.cache import graph_cache_size as checked_cache_size

#: ``SE_MULTI_MLX_COMPILE=1`` turns on ``mx.compile`` of whole forwards by default
COMPILE_ENV_VAR = "SE_MULTI_MLX_COMPILE"
CONV_IMPLS = ("auto", "im2col", "conv2d")
DEVICES = (None, "cpu", "gpu")

# every op a model calls (the op table's, and the array conversions); wrapped in
# ``mx.stream(device)`` when the device is not MLX's default
_OPS = ("asarray", "input", "output", "param", *op_table.NAMES)


def _stream_bound(method, device):
    """``method`` run with ``device`` as MLX's default device (ops inherit it)."""
    import mlx.core as mx

    @functools.wraps(method)
    def run(*args, **kwargs):
        with mx.stream(device):
            return method(*args, **kwargs)

    return run


def _scalar_weights(module, mx) -> list:
    """The attribute dicts of the bound module's layers that hold a one-entry weight array (sSE's
    bias, a PReLU's single slope), as ``mx.compile``'s ``inputs``: MLX writes a captured scalar
    into the C++ source of the kernel it fuses on the CPU, so each distinct weight value was one
    more g++ build (~0.5 s); as inputs (MLX swaps them in the dicts while it traces) they are read
    at run time, and one kernel serves every block of every model."""
    from mlx.utils import tree_flatten

    return [vars(m) for _, m in module.named_modules()
            if any(isinstance(leaf, mx.array) and leaf.size == 1 for _, leaf in tree_flatten(list(vars(m).values())))]


#: MLX is not thread-safe: one whole-model call at a time in this process
_MLX_LOCK = threading.RLock()
_thread_state = threading.local()


class _StreamCleanup:
    """Lives in one thread's ``threading.local``; CPython finalises it in that thread as the thread
    ends, which is when MLX needs ``clear_streams()`` (a thread's streams must die with it)."""

    def __del__(self):
        mx = sys.modules.get("mlx.core")
        if mx is not None:
            mx.clear_streams()


def _register_thread() -> None:
    if threading.current_thread() is not threading.main_thread() and not hasattr(_thread_state, "cleanup"):
        _thread_state.cleanup = _StreamCleanup()


@functools.lru_cache(maxsize=256)
def _pool_counts(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool, count_include_pad: bool):
    """Elements each pooling window counts along one axis (PyTorch's divisor rule).

    A window starts at ``o*stride - pad`` and is clipped at the end of the padded input
    (a ceil-mode overhang never counts); without ``count_include_pad`` it is also clipped
    to the input itself. The 2-D divisor is the outer product of the two axes' counts.
    """
    out = shapes.pool_output_size(size, kernel, stride, pad, ceil_mode)
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)
    if not count_include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return (end - start).astype(np.float64)


class MlxBackend(Backend):
    name = "mlx"
    package = "mlx"
    extra = "mlx"
    dtypes = ("float32", "float16", "bfloat16")

    @classmethod
    def native_dtypes(cls) -> tuple[str, ...]:
        """Every dtype on Apple silicon (Metal); float32 on MLX's CPU backend, where reduced
        precision is no faster (measured 2026-11-24, mlx 0.32 CPU, 256->256 3x3 conv at 56x56:
        float32 1304 ms, bfloat16 1341 ms, float16 1348 ms)."""
        import platform
        import sys

        if sys.platform == "darwin" and platform.machine() == "arm64":
            return cls.dtypes
        return ("float32",)

    def __init__(self, dtype: str = "float32", device: str | None = None, conv: str = "auto",
                 compile: bool | None = None, graph_cache_size: int | None = None):
        super().__init__(dtype, device)
        import mlx.core as mx

        self._mx = mx
        self._dt = getattr(mx, self.dtype)
        # NumPy has no bfloat16 (and MLX's GPU no float64): asarray hands MLX float16 or float32,
        # rounded by NumPy's own cast, and MLX casts on; folded weights come rounded to it
        self._host = self.param_dtype = "float16" if self.dtype == "float16" else "float32"
        self._device = self._resolve_device(device)
        if conv not in CONV_IMPLS:
            raise ValueError(f"mlx conv must be one of {CONV_IMPLS}; got {conv!r}")
        if conv == "auto":
            conv = "conv2d" if self._device.type == mx.DeviceType.gpu else "im2col"
        #: the convolution formulation in use (see the module docstring for the measurements)
        self.conv_impl = conv
        if compile is not None and not isinstance(compile, bool):
            raise TypeError(f"mlx backend: compile must be True, False or None; got {compile!r}")
        if compile is None:
            # on by default: measured on Linux CPU (mlx 0.32, batch 1, 224x224) a compiled
            # forward is 5% faster on SE-ResNet-50 and 9% on SE-MobileNet; =0 turns it off
            compile = os.environ.get(COMPILE_ENV_VAR, "1") not in ("0", "false", "False")
        #: whether :meth:`compile_forward` wraps forwards in ``mx.compile``
        self.compile = bool(compile)
        #: compiled forwards (one per input shape) kept per bound model
        self.graph_cache_size = checked_cache_size(graph_cache_size)
        if self._device != mx.default_device():
            for op in _OPS:
                setattr(self, op, _stream_bound(getattr(self, op), self._device))

    def _resolve_device(self, device):
        mx = self._mx
        if device not in DEVICES:
            raise ValueError(f"mlx device must be None, 'cpu' or 'gpu'; got device={device!r}")
        if device is None:
            return mx.default_device()
        if device == "gpu" and not mx.is_available(mx.gpu):
            raise BackendUnavailable(
                "mlx device 'gpu' is not available: this mlx build has no GPU backend "
                "(Metal needs Apple silicon; on Linux install mlx[cuda]); use device='cpu'"
            )
        return mx.Device(mx.gpu if device == "gpu" else mx.cpu)

    def __repr__(self) -> str:
        dev = "gpu" if self._device.type == self._mx.DeviceType.gpu else "cpu"
        extra = ", compiled" if self.compile else ""
        return f"<MlxBackend 'mlx' dtype={self.dtype}, device={dev!r}, conv={self.conv_impl}{extra}>"

    # ------------------------------------------------------------------ arrays
    def asarray(self, x):
        mx = self._mx
        if isinstance(x, mx.array):
            return x if x.dtype == self._dt else x.astype(self._dt)
        if not isinstance(x, np.ndarray):
            from se_multi.dispatch import to_numpy  # torch/cupy/... -> NumPy

            x = to_numpy(x)
        return mx.array(np.ascontiguousarray(x, dtype=self._host)).astype(self._dt)

    @staticmethod
    def to_numpy(x) -> np.ndarray:
        import mlx.core as mx

        if x.dtype == mx.bfloat16:
            x = x.astype(mx.float32)  # exact: every bfloat16 is a float32
        mx.eval(x)
        return np.array(x)

    @staticmethod
    def max_abs(x) -> float:
        import mlx.core as mx

        return float(mx.max(mx.abs(x)).item()) if x.size else 0.0  # max propagates NaN

    def input(self, x):
        x = self.asarray(x)
        return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x

    def output(self, y):
        if y.ndim == 4:
            y = y.transpose(0, 3, 1, 2)
        self._mx.eval(y)
        return y

    def param(self, w, kind: str):
        w = np.asarray(w)
        if kind == "conv":
            # OIHW -> HWIO for the im2col matmul, OHWI for mx.conv_general
            w = _transposed(w, (2, 3, 1, 0) if self.conv_impl == "im2col" else (0, 2, 3, 1), self._host)
        elif kind == "linear":
            w = _transposed(w, (1, 0), self._host)  # (out, in) -> (in, out): x @ W without a transposed view
        elif kind != "vector":
            raise ValueError(f"param kind must be 'conv', 'linear' or 'vector'; got {kind!r}")
        out = self.asarray(w)
        self._mx.eval(out)
        return out

    def shape(self, x) -> tuple[int, ...]:
        s = tuple(int(d) for d in x.shape)
        return (s[0], s[3], s[1], s[2]) if len(s) == 4 else s

    def synchronize(self, x):
        self._mx.eval(x)
        return x

    def compile_forward(self, fn):
        """``mx.compile(fn)`` when compiling is on, else ``fn`` (traced once per input shape)."""
        return self._mx.compile(fn) if self.compile else fn

    def run_model(self, module, x):
        """The whole forward, through ``mx.compile`` when compiling is on: one compiled function
        per input shape, kept in the model's bounded cache; serialised (see the module docstring)."""
        _register_thread()
        with _MLX_LOCK:
            if not self.compile:
                return super().run_model(module, x)
            x = self.input(x)
            forward = module.graphs(self.graph_cache_size).get_or_create(tuple(x.shape), lambda: self._compiled(module))
            return self.output(forward(x))

    def _compiled(self, module):
        # the traced function refers to its module weakly: the model's cache holds the compiled
        # function, and a strong reference back would be a cycle the collector cannot see
        # through MLX's C++ object, keeping the model alive after it is dropped
        ref = weakref.ref(module)
        return self._mx.compile(lambda x: ref()(self, x), inputs=_scalar_weights(module, self._mx))

    # ------------------------------------------------------------------ convolution
    def conv2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        c = x.shape[-1]
        if self.conv_impl == "im2col":
            kh, kw, cg, o = w.shape
        else:
            o, kh, kw, cg = w.shape
        _, _, ho, wo = shapes.conv2d(self.shape(x), (o, cg, kh, kw), stride, padding, dilation, groups)
        if self.conv_impl == "conv2d":
            y = self._conv_general(x, w, stride, padding, dilation, groups)
        elif groups == 1:
            y = self._conv_im2col(x, w, (ho, wo), stride, padding, dilation)
        elif cg == 1 and o == c:
            y = self._conv_depthwise_taps(x, w, (ho, wo), stride, padding, dilation)
        else:  # grouped, not depthwise: MLX's own grouped conv
            y = self._conv_general(x, w.transpose(3, 0, 1, 2), stride, padding, dilation, groups)
        return y if b is None else y + b

    def conv_transpose2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0)):
        # param made the (C_in, C_out, KH, KW) weight HWIO-like (KH, KW, C_out, C_in) for im2col, or
        # (C_in, KH, KW, C_out) for conv_general: mx.conv_transpose2d wants (C_out, KH, KW, C_in)
        w = w.transpose(2, 0, 1, 3) if self.conv_impl == "im2col" else w.transpose(3, 1, 2, 0)
        o, kh, kw, c = w.shape
        _, _, ho, wo = shapes.conv_transpose2d(self.shape(x), (c, o, kh, kw), stride, padding)
        pt, pb, pl, pr = padding
        if pt == pb and pl == pr:
            y = self._mx.conv_transpose2d(x, w, stride=tuple(stride), padding=(pt, pl))
        else:  # asymmetric: the full output, cropped here
            y = self._mx.conv_transpose2d(x, w, stride=tuple(stride))[:, pt : pt + ho, pl : pl + wo, :]
        return y if b is None else y + b

    def _conv_general(self, x, w_ohwi, stride, padding, dilation, groups):
        pt, pb, pl, pr = padding
        return self._mx.conv_general(x, w_ohwi, stride=tuple(stride), padding=([pt, pl], [pb, pr]),
                                     kernel_dilation=tuple(dilation), groups=groups)

    def _taps(self, x, kernel, out_hw, stride, padding, dilation, fill=0.0):
        """Pad ``x`` (NHWC), then yield each kernel tap's strided (N, Ho, Wo, C) window slice;
        ``out_hw`` (Ho, Wo) comes from :mod:`se_multi.shapes`, which also checked it."""
        kh, kw = kernel
        ho, wo = out_hw
        (sh, sw), (dh, dw) = stride, dilation
        pt, pb, pl, pr = padding
        if any(padding):
            x = self._mx.pad(x, [(0, 0), (pt, pb), (pl, pr), (0, 0)], constant_values=fill)
        for i in range(kh):
            for j in range(kw):
                yield x[:, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw, :]

    def _conv_im2col(self, x, w_hwio, out_hw, stride, padding, dilation):
        mx = self._mx
        kh, kw, c, o = w_hwio.shape
        cols = list(self._taps(x, (kh, kw), out_hw, stride, padding, dilation))
        # (N, Ho, Wo, KH*KW*C) in (kh, kw, c) order: the row order of the HWIO weight
        patches = cols[0] if len(cols) == 1 else mx.concatenate(cols, axis=-1)
        n, ho, wo, k = patches.shape
        return (patches.reshape(n * ho * wo, k) @ w_hwio.reshape(k, o)).reshape(n, ho, wo, o)

    def _conv_depthwise_taps(self, x, w_hwio, out_hw, stride, padding, dilation):
        kh, kw = w_hwio.shape[:2]
        out = None
        for t, tap in enumerate(self._taps(x, (kh, kw), out_hw, stride, padding, dilation)):
            term = tap * w_hwio[t // kw, t % kw, 0]
            out = term if out is None else out + term
        return out

    def linear(self, x, w, b=None):
        return x @ w if b is None else self._mx.addmm(b, x, w)

    def batch_norm(self, x, mean, var, weight, bias, eps):
        inv = weight * self._mx.rsqrt(var + eps)
        return (x - mean) * inv + bias  # vectors broadcast over the last (channel) axis

    # ------------------------------------------------------------------ activations
    def relu(self, x):
        return self._mx.maximum(x, 0.0)

    def relu6(self, x):
        return self._mx.clip(x, 0.0, 6.0)

    def sigmoid(self, x):
        return self._mx.sigmoid(x)

    def hard_sigmoid(self, x):
        return self.relu6(x + 3.0) / 6.0

    def hard_swish(self, x):
        return x * self.relu6(x + 3.0) / 6.0

    # ------------------------------------------------------------------ pooling
    def _pool_pads(self, x, kernel, stride, padding, ceil_mode, op):
        """(top, bottom, left, right) padding so every (ceil-mode) window is complete, and (Ho, Wo)."""
        _, h, w, _ = x.shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        _, _, ho, wo = shapes.pool2d(self.shape(x), kernel, stride, padding, ceil_mode, op)
        eh, ew = shapes.pool_overhang(h, ho, kh, sh, ph), shapes.pool_overhang(w, wo, kw, sw, pw)
        return (ph, ph + eh, pw, pw + ew), (ho, wo)

    def max_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False):
        mx = self._mx
        pads, (ho, wo) = self._pool_pads(x, kernel, stride, padding, ceil_mode, "max_pool2d")
        out = None
        for tap in self._taps(x, kernel, (ho, wo), stride, pads, (1, 1), fill=-float("inf")):
            out = tap if out is None else mx.maximum(out, tap)
        return out

    def max_pool2d_indices(self, x, kernel, stride):
        """Values and indices in this backend's NHWC layout: indices (N, Ho, Wo, C), each the
        PyTorch flat ``h * W + w`` of its maximum in its plane (the first maximum in scan order)."""
        mx = self._mx
        (_, _, ho, wo), _ = shapes.max_pool2d_indices(self.shape(x), kernel, stride)
        (kh, kw), (sh, sw), width = kernel, stride, x.shape[2]
        taps = [x[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]
                for i in range(kh) for j in range(kw)]
        values = taps[0]
        for tap in taps[1:]:
            values = mx.maximum(values, tap)
        k = mx.full(values.shape, kh * kw, mx.int32)
        for t in reversed(range(kh * kw)):  # the first tap that holds the maximum wins
            k = mx.where(taps[t] == values, t, k)
        # (o_h*sh + t//kw) * W + o_w*sw + t%kw, with every term that depends on the input's size
        # made in NumPy, as arrays: under mx.compile a scalar such as W is a constant in the fused
        # kernel's source, one more g++ build on the CPU for each size (see _scalar_weights)
        window = np.arange(ho)[:, None] * sh * width + np.arange(wo)[None, :] * sw
        tap = np.arange(kh * kw)
        tap_offset = mx.array(((tap // kw) * width + tap % kw).astype(np.int32))
        return values, mx.array(window.astype(np.int32))[None, :, :, None] + mx.take(tap_offset, k)

    def max_unpool2d(self, x, indices, output_size):
        mx = self._mx
        n, c, h, w = shapes.max_unpool2d(self.shape(x), self.shape(indices), output_size)
        # each value to (sample, index within its plane, channel) of an (N, H*W, C) array: no
        # arithmetic on the sizes, which mx.compile would write into a kernel per size
        batch = mx.arange(n, dtype=mx.int32)[:, None, None, None]
        chan = mx.arange(c, dtype=mx.int32)[None, None, None, :]
        out = mx.zeros((n, h * w, c), x.dtype)
        out[batch, indices.astype(mx.int32), chan] = x
        return out.reshape(n, h, w, c)

    def avg_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
        _, h, w, _ = x.shape
        pads, (ho, wo) = self._pool_pads(x, kernel, stride, padding, ceil_mode, "avg_pool2d")
        total = None
        for tap in self._taps(x, kernel, (ho, wo), stride, pads, (1, 1)):
            total = tap if total is None else total + tap
        rows = _pool_counts(h, kernel[0], stride[0], padding[0], ceil_mode, count_include_pad)
        cols = _pool_counts(w, kernel[1], stride[1], padding[1], ceil_mode, count_include_pad)
        divisor = self.asarray(np.outer(rows, cols)[None, :, :, None])
        return total / divisor

    def global_avg_pool(self, x):
        mx = self._mx
        _, h, w, c = x.shape
        # mx.mean's sum times float32(1 / (H*W)), bit for bit, with the factor an array of C
        # entries rather than MLX's scalar: inside mx.compile a scalar is a constant written into
        # the fused kernel's C++ source, and on the CPU each new constant (each feature-map size
        # a model pools) is one more g++ build (~0.5 s) before the forward runs
        scale = mx.array(np.full(c, 1.0 / (h * w), np.float32))
        if self.dtype == "float32":
            return mx.sum(x, axis=(1, 2)) * scale
        # a half-precision sum over H*W loses digits: accumulate in float32
        return (mx.sum(x.astype(mx.float32), axis=(1, 2)) * scale).astype(self._dt)

    # ------------------------------------------------------------------ elementwise / shape
    def add(self, a, b):
        return a + b

    def maximum(self, a, b):
        return self._mx.maximum(a, b)

    def mul_channel(self, x, s):
        return x * s[:, None, None, :]

    def mul_pixel(self, x, q):
        return x * q  # q is (N, H, W, 1)

    def upsample_nearest2x(self, x):
        n, h, w, c = x.shape
        up = self._mx.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
        return up.reshape(n, 2 * h, 2 * w, c)

    def concat_channels(self, xs: Sequence):
        return self._mx.concatenate(list(xs), axis=-1)

    def prelu(self, x, slope):
        n, h, w, c = x.shape
        shapes.prelu((n, c, h, w), slope.shape)
        return self._mx.where(x > 0, x, x * slope)  # NHWC: a (C,) or (1,) slope broadcasts along C

    def center_crop(self, x, like):
        top, left, h, w = shapes.center_crop_window(self.shape(x), self.shape(like))  # NCHW sizes of NHWC arrays
        return x[:, top : top + h, left : left + w, :]

    def channel_shuffle(self, x, groups):
        n, h, w, c = x.shape
        shapes.channel_shuffle((n, c, h, w), groups)
        return x.reshape(n, h, w, groups, c // groups).transpose(0, 1, 2, 4, 3).reshape(n, h, w, c)


#: output channels per block of :func:`_transposed`
_TRANSPOSE_BLOCK = 64


def _transposed(w: np.ndarray, axes: tuple[int, ...], dtype) -> np.ndarray:
    """``np.ascontiguousarray(w.transpose(axes), dtype)``, copied a block of output channels
    (``w``'s first axis) at a time: one strided copy of a whole OIHW weight into HWIO reads and
    writes far apart in memory, and was two thirds of binding a model (SENet-154 1.2 of 1.8 s
    on MLX); by blocks it is about 3x faster (2 cores, 2026-12-03). The same values."""
    out = np.empty([w.shape[a] for a in axes], dtype)
    where = [slice(None)] * w.ndim
    to = axes.index(0)
    for start in range(0, w.shape[0], _TRANSPOSE_BLOCK):
        where[to] = slice(start, start + _TRANSPOSE_BLOCK)
        out[tuple(where)] = w[start : start + _TRANSPOSE_BLOCK].transpose(axes)
    return out
