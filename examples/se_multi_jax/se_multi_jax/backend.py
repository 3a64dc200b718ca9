"""A se_multi backend on JAX: every primitive on ``jax.numpy`` / ``jax.lax``, whole models jitted.

Written from ``help(se_multi.Backend)`` alone, as a third party would write one; se_multi's CI
installs this package (``pip install examples/se_multi_jax``) and runs ``se-multi validate
--backend jax`` at every dtype it offers.

Layout: NCHW throughout (XLA picks its own layouts inside a jitted graph), so ``input``,
``output`` and ``param`` keep their defaults. Reduced precision (float16, bfloat16) stores every
array in that dtype and accumulates convolutions, matrix products and pools in float32, as the
hardware that has these types does; validate checks both (its precision check fails a
"bfloat16" backend whose errors are float32-sized).
"""

from __future__ import annotations

import sys

import numpy as np

from se_multi import Backend, shapes


#: each primitive's arguments that are not arrays (sizes, flags, eps): static under jax.jit
_STATIC_ARGS = {
    "conv2d": ("stride", "padding", "dilation", "groups"), "conv_transpose2d": ("stride", "padding"),
    "linear": (), "batch_norm": ("eps",), "relu": (), "relu6": (), "sigmoid": (), "hard_sigmoid": (),
    "hard_swish": (), "max_pool2d": ("kernel", "stride", "padding", "ceil_mode"),
    "max_pool2d_indices": ("kernel", "stride"), "max_unpool2d": ("output_size",),
    "avg_pool2d": ("kernel", "stride", "padding", "ceil_mode", "count_include_pad"),
    "global_avg_pool": (), "add": (), "maximum": (), "mul_channel": (), "mul_pixel": (),
    "upsample_nearest2x": (), "concat_channels": (), "prelu": (), "channel_shuffle": ("groups",),
    "center_crop": (),
}


class JaxBackend(Backend):
    name = "jax"
    package = "jax"  # not installed -> the backend is "unavailable", with `install` as the hint
    install = "pip install se-multi-jax"
    # JAX arrays are jaxlib types whose base class, jax.Array, is in "jax": owns() looks at every
    # class an array's type derives from, so the natural name is enough
    array_module = "jax"
    dtypes = ("float32", "float64", "float16", "bfloat16")

    def __init__(self, dtype: str = "float32", device: str | None = None):
        if device not in (None, "cpu"):
            raise ValueError(f"jax example backend runs on device 'cpu' only; got device={device!r}")
        super().__init__(dtype, None)  # checks dtype against `dtypes`
        import jax  # the framework is imported here, never at module level

        if self.dtype == "float64":
            # JAX computes in float32 unless 64-bit mode is on (a process-wide setting)
            jax.config.update("jax_enable_x64", True)
        self._jax, self.jnp, self.lax = jax, jax.numpy, jax.lax
        self._dt = self.jnp.dtype(self.dtype)
        # what reductions and products accumulate in: float32 for the 16-bit types
        self._acc = self.jnp.float32 if self.dtype in ("float16", "bfloat16") else self._dt
        # Each primitive called on its own (outside a jitted model) is jitted too: one XLA program
        # per op and shape instead of one per jax.numpy call inside it. The arguments that are
        # sizes or flags are static; the compiled programs live with this backend object.
        for op, static in _STATIC_ARGS.items():
            setattr(self, op, jax.jit(getattr(self, op), static_argnames=static))

    # ------------------------------------------------------------------ arrays
    def asarray(self, x):
        if isinstance(x, self._jax.Array):  # also a tracer inside jit
            return x if x.dtype == self._dt else x.astype(self._dt)
        from se_multi import to_numpy  # a torch/mlx/cupy array -> NumPy first

        # rounded to the dtype by NumPy (ml_dtypes for bfloat16), then copied over: jnp.asarray's
        # own conversion compiles an XLA program per shape, one per weight shape of every model
        return self._jax.device_put(np.asarray(to_numpy(x), dtype=self._dt))

    @staticmethod
    def to_numpy(x):
        return np.asarray(x)  # waits for the result; bfloat16 stays bfloat16 (an ml_dtypes array)

    @staticmethod
    def max_abs(x) -> float:
        jnp = sys.modules["jax.numpy"]  # a JAX array exists, so JAX is imported
        return float(jnp.max(jnp.abs(x))) if x.size else 0.0  # reduced by XLA; max propagates NaN

    def synchronize(self, x):
        # JAX dispatches asynchronously: a call returns before its result is computed
        return self._jax.block_until_ready(x)

    def run_model(self, module, x):
        # One jitted forward per bound model, kept in the model's own cache (freed with it);
        # jax.jit compiles it once per input shape.
        forward = module.graphs(1).get_or_create(
            "forward", lambda: self._jax.jit(lambda v: self.output(module(self, self.input(v)))))
        return forward(self.asarray(x))

    # ------------------------------------------------------------------ primitives
    def conv2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        shapes.conv2d(x.shape, w.shape, stride, padding, dilation, groups)  # se_multi's one error
        top, bottom, left, right = padding
        y = self.lax.conv_general_dilated(
            x, w, window_strides=tuple(stride), padding=((top, bottom), (left, right)),
            rhs_dilation=tuple(dilation), dimension_numbers=("NCHW", "OIHW", "NCHW"),
            feature_group_count=groups, precision=self.lax.Precision.HIGHEST,
            preferred_element_type=self._acc)
        if b is not None:
            y = y + b.astype(self._acc).reshape(1, -1, 1, 1)
        return y.astype(self._dt)

    def conv_transpose2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0)):
        # the transposed conv as a conv of the stride-dilated input with the flipped, in/out-swapped
        # kernel, padded by KH - 1 - pad on each side (PyTorch's padding crops the full output)
        shapes.conv_transpose2d(x.shape, w.shape, stride, padding)  # se_multi's one error
        kh, kw = w.shape[2:]
        top, bottom, left, right = padding
        y = self.lax.conv_general_dilated(
            x, w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1], window_strides=(1, 1),
            padding=((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right)),
            lhs_dilation=tuple(stride), dimension_numbers=("NCHW", "OIHW", "NCHW"),
            precision=self.lax.Precision.HIGHEST, preferred_element_type=self._acc)
        if b is not None:
            y = y + b.astype(self._acc).reshape(1, -1, 1, 1)
        return y.astype(self._dt)

    def linear(self, x, w, b=None):
        y = self.jnp.matmul(x, w.T, precision=self.lax.Precision.HIGHEST, preferred_element_type=self._acc)
        return (y if b is None else y + b.astype(self._acc)).astype(self._dt)

    def batch_norm(self, x, mean, var, weight, bias, eps):
        inv = weight / self.jnp.sqrt(var + eps)
        c = (1, -1, 1, 1)
        return (x - mean.reshape(c)) * inv.reshape(c) + bias.reshape(c)

    def relu(self, x):
        return self.jnp.maximum(x, 0)

    def relu6(self, x):
        return self.jnp.clip(x, 0, 6)

    def sigmoid(self, x):
        return self._jax.nn.sigmoid(x)

    # In float32 and rounded once at float16: XLA computes x / 6 as x * (1/6), and 1/6 rounded to
    # float16 is 0.025% low, which makes every output low alike (validate reports that bias)
    def hard_sigmoid(self, x):
        return (self.jnp.clip(x.astype(self._acc) + 3, 0, 6) / 6).astype(self._dt)

    def hard_swish(self, x):
        v = x.astype(self._acc)
        return (v * (self.jnp.clip(v + 3, 0, 6) / 6)).astype(self._dt)

    def _windows(self, x, kernel, stride, padding, ceil_mode, op):
        """reduce_window arguments for a PyTorch pool: the output size from se_multi.shapes (its
        ceil_mode rule), the padding extended on the bottom/right so every last window is whole."""
        _, _, ho, wo = shapes.pool2d(x.shape, kernel, stride, padding, ceil_mode, op)
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        eh = max(0, (ho - 1) * sh + kh - (x.shape[2] + 2 * ph))
        ew = max(0, (wo - 1) * sw + kw - (x.shape[3] + 2 * pw))
        return (1, 1, kh, kw), (1, 1, sh, sw), ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)), (eh, ew)

    def max_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False):
        window, strides, pads, _ = self._windows(x, kernel, stride, padding, ceil_mode, "max_pool2d")
        return self.lax.reduce_window(x, self.jnp.array(-self.jnp.inf, x.dtype), self.lax.max, window, strides, pads)

    def max_pool2d_indices(self, x, kernel, stride):
        jnp = self.jnp
        (_, _, ho, wo), _ = shapes.max_pool2d_indices(x.shape, kernel, stride)
        (kh, kw), (sh, sw), width = kernel, stride, x.shape[3]
        taps = jnp.stack([x[:, :, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw]
                          for i in range(kh) for j in range(kw)], axis=-1)
        k = jnp.argmax(taps, axis=-1)  # the first maximum in scan order, as PyTorch
        values = jnp.take_along_axis(taps, k[..., None], axis=-1)[..., 0]
        rows = jnp.arange(ho)[:, None] * sh + k // kw
        cols = jnp.arange(wo)[None, :] * sw + k % kw
        return values, (rows * width + cols).astype(jnp.int32)

    def max_unpool2d(self, x, indices, output_size):
        jnp = self.jnp
        n, c, h, w = shapes.max_unpool2d(x.shape, indices.shape, output_size)
        flat = jnp.zeros((n * c, h * w), x.dtype)
        rows = jnp.arange(n * c)[:, None]
        flat = flat.at[rows, indices.reshape(n * c, -1)].set(x.reshape(n * c, -1))
        return flat.reshape(n, c, h, w)

    def avg_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
        window, strides, pads, (eh, ew) = self._windows(x, kernel, stride, padding, ceil_mode, "avg_pool2d")
        zero = self.jnp.array(0, self._acc)
        total = self.lax.reduce_window(x.astype(self._acc), zero, self.lax.add, window, strides, pads)
        # PyTorch's divisor: the window's elements inside the input and its padding
        # (count_include_pad) or inside the input alone; a ceil-mode overhang never counts
        (ph, pw), (h, w) = padding, x.shape[2:]
        if count_include_pad:
            ones = self.jnp.ones((1, 1, h + 2 * ph, w + 2 * pw), self._acc)
            count_pads = ((0, 0), (0, 0), (0, eh), (0, ew))
        else:
            ones = self.jnp.ones((1, 1, h, w), self._acc)
            count_pads = pads
        count = self.lax.reduce_window(ones, zero, self.lax.add, window, strides, count_pads)
        return (total / count).astype(self._dt)

    def global_avg_pool(self, x):
        return self.jnp.mean(x, axis=(2, 3), dtype=self._acc).astype(self._dt)

    def add(self, a, b):
        return a + b

    def maximum(self, a, b):
        return self.jnp.maximum(a, b)

    def mul_channel(self, x, s):
        return x * s[:, :, None, None]

    def mul_pixel(self, x, q):
        return x * q

    def upsample_nearest2x(self, x):
        return self.jnp.repeat(self.jnp.repeat(x, 2, axis=2), 2, axis=3)

    def concat_channels(self, xs):
        return self.jnp.concatenate(list(xs), axis=1)

    def prelu(self, x, slope):
        return self.jnp.where(x > 0, x, x * slope.reshape(1, -1, 1, 1))

    def channel_shuffle(self, x, groups):
        n, c, h, w = shapes.channel_shuffle(x.shape, groups)
        return x.reshape(n, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)

    def center_crop(self, x, like):
        top, left, h, w = shapes.center_crop_window(x.shape, like.shape)
        return x[:, :, top : top + h, left : left + w]
