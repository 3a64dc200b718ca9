"""CuPy backend: NCHW on an NVIDIA GPU, cuBLAS convolutions and fused SE kernels.

Convolutions: a 1x1 conv is one (batched) cuBLAS GEMM on the NCHW map itself, a
k x k conv is the ``im2col`` kernel + one batched GEMM, a depthwise conv is its
own kernel with bias and activation fused; the GEMM paths finish with one
in-place bias+activation pass. The SE path runs as fused kernels (squeeze,
excite, scale / scale+add+ReLU, sSE gate, scSE combine); see ``cupy_kernels.py``.

float32 and float16 storage; every kernel accumulates in float32. CuPy is
imported when the backend is instantiated, never at module import, and
:meth:`CupyBackend.availability` probes the CUDA driver with ``ctypes`` so that
``se_multi.available_backends()`` imports no CuPy either.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import re
import sys
from importlib import metadata

import numpy as np

from se_multi import shapes
from se_multi.backend import Backend
from se_multi.backends import cupy_kernels as K

NOT_INSTALLED = "not installed: pip install 'se-multi[cupy]'"
NO_DEVICE = "installed, no CUDA device"


# --------------------------------------------------------------------------- availability
def _driver_library_names() -> list[str]:
    if sys.platform == "win32":
        return ["nvcuda.dll"]
    found = ctypes.util.find_library("cuda")
    return ["libcuda.so.1", "libcuda.so"] + ([found] if found else [])


@functools.lru_cache(maxsize=1)
def cuda_driver_probe() -> tuple[int, int]:
    """``(device_count, driver_cuda_version)`` from the CUDA driver API, ``(0, 0)``
    when there is no driver. No CuPy import, no subprocess; cached, because
    ``cuInit`` is process-wide anyway (as with any CUDA library, initialise
    before forking workers, not after)."""
    for name in _driver_library_names():
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if lib.cuInit(0) != 0:  # CUDA_ERROR_NO_DEVICE, a driver/kernel-module mismatch, ...
            return 0, 0
        count, version = ctypes.c_int(0), ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0, 0
        lib.cuDriverGetVersion(ctypes.byref(version))
        return count.value, version.value
    return 0, 0


def cupy_cuda_major() -> int | None:
    """The CUDA major the installed CuPy wheel is built for (``cupy-cuda13x`` -> 13), if known."""
    for dist in metadata.distributions():
        match = re.fullmatch(r"cupy-cuda(\d+)x", (dist.metadata["Name"] or "").lower())
        if match:
            return int(match.group(1))
    return None


class CupyBackend(Backend):
    name = "cupy"
    package = "cupy"
    extra = "cupy"
    dtypes = tuple(K.CTYPES)  # the dtypes its kernels are instantiated for

    @classmethod
    def native_dtypes(cls) -> tuple[str, ...]:
        return cls.dtypes  # an NVIDIA GPU computes both natively

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("cupy") is None:
            return False, NOT_INSTALLED
        count, driver = cuda_driver_probe()
        if count == 0:
            return False, NO_DEVICE
        needed = cupy_cuda_major()
        if needed and driver // 1000 < needed:
            return False, (f"installed for CUDA {needed}, but the CUDA driver supports only "
                           f"{driver // 1000}.{driver % 1000 // 10}: update the driver or install cupy-cuda{driver // 1000}x")
        return True, f"available ({count} CUDA device{'s' if count > 1 else ''})"

    def __init__(self, dtype: str = "float32", device: str | None = None):
        super().__init__(dtype, device)
        import cupy

        self._cp = cupy
        self._dt = np.dtype(self.dtype)
        self.param_dtype = self.dtype  # asarray rounds on the host, with NumPy's own cast
        index = self._device_index(device)
        cupy.cuda.Device(index).use()  # kernels and arrays below go to this device
        self.device = f"cuda:{index}"
        self._module = None
        self._functions: dict[str, object] = {}

    @staticmethod
    def _device_index(device: str | int | None) -> int:
        if device in (None, "cuda", "gpu"):
            return 0
        if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
            return device
        match = re.fullmatch(r"(?:cuda|gpu):(\d+)", str(device))
        if not match:
            raise ValueError(f"cupy backend device must be 'cuda' or 'cuda:<index>'; got device={device!r}")
        return int(match.group(1))

    # ------------------------------------------------------------------ kernels
    def _kernel(self, name: str):
        """The compiled ``name<T>`` for this dtype (one RawModule, compiled on first use, disk-cached by CuPy)."""
        fn = self._functions.get(name)
        if fn is None:
            if self._module is None:
                self._module = self._cp.RawModule(code=K.SOURCE, options=K.NVRTC_OPTIONS,
                                                  name_expressions=K.name_expressions((self.dtype,)))
            fn = self._functions[name] = self._module.get_function(K.name_expression(name, self.dtype))
        return fn

    def _launch(self, name: str, grid, block, shared_mem: int = 0, **args) -> None:
        self._kernel(name)(grid, block, K.pack_args(name, self.dtype, args), shared_mem=shared_mem)

    def _empty(self, shape):
        return self._cp.empty(shape, dtype=self._dt)

    def _elementwise(self, name: str, out, **args):
        """Launch a grid-stride kernel over every element of ``out``."""
        grid, block = K.launch_config(out.size)
        self._launch(name, grid, block, out=out, **args)
        return out

    # ------------------------------------------------------------------ arrays
    def asarray(self, x):
        cp = self._cp
        if not isinstance(x, cp.ndarray):
            from se_multi.dispatch import to_numpy  # any backend's array -> NumPy

            x = np.ascontiguousarray(to_numpy(x), dtype=self._dt)
        return cp.ascontiguousarray(cp.asarray(x, dtype=self._dt))

    @staticmethod
    def to_numpy(x):
        return sys.modules["cupy"].asnumpy(x)  # a cupy array exists, so cupy is imported

    @staticmethod
    def max_abs(x) -> float:
        cp = sys.modules["cupy"]
        return float(cp.abs(x).max()) if x.size else 0.0  # reduced on the device; max propagates NaN

    def synchronize(self, x):
        self._cp.cuda.get_current_stream().synchronize()
        return x

    # ------------------------------------------------------------------ convolution
    def conv2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        return self.conv2d_act(x, w, b, None, stride, padding, dilation, groups)

    def conv2d_act(self, x, w, b, act, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        n, o, ho, wo = shapes.conv2d(x.shape, w.shape, stride, padding, dilation, groups)
        algorithm = K.conv_algorithm(w.shape, groups)
        if algorithm == "depthwise":
            return self._depthwise(x, w, b, act, (n, o, ho, wo), stride, padding, dilation)
        if algorithm == "gemm_1x1":
            out = self._gemm_1x1(x, w, (ho, wo), stride, padding, groups)
        else:
            out = self._im2col_gemm(x, w, (ho, wo), stride, padding, dilation, groups)
        out = out.reshape(n, o, ho, wo)
        if b is None and act is None:
            return out
        return self._bias_act(out, b, act, out=out)  # in place: the GEMM output is ours

    def _gemm_1x1(self, x, w, out_hw, stride, padding, groups):
        return K.grouped_gemm(self._cp, w, K.conv1x1_columns(self._cp, x, out_hw, stride, padding), groups)

    def _im2col_gemm(self, x, w, out_hw, stride, padding, dilation, groups):
        n, c, h, wd = x.shape
        kh, kw = w.shape[2:]
        ho, wo = out_hw
        cols = self._empty((n, c * kh * kw, ho * wo))
        self._elementwise(
            "im2col", cols, x=x, batch=n, channels=c, height=h, width=wd, out_h=ho, out_w=wo,
            kernel_h=kh, kernel_w=kw, stride_h=stride[0], stride_w=stride[1], pad_top=padding[0],
            pad_left=padding[2], dilation_h=dilation[0], dilation_w=dilation[1])
        return K.grouped_gemm(self._cp, w, cols, groups)

    def _depthwise(self, x, w, b, act, out_shape, stride, padding, dilation):
        n, c, h, wd = x.shape
        out = self._empty(out_shape)
        return self._elementwise(
            "depthwise_conv_act", out, x=x, w=w, bias=x if b is None else b, batch=n, channels=c,
            height=h, width=wd, out_h=out_shape[2], out_w=out_shape[3], kernel_h=w.shape[2],
            kernel_w=w.shape[3], stride_h=stride[0], stride_w=stride[1], pad_top=padding[0],
            pad_left=padding[2], dilation_h=dilation[0], dilation_w=dilation[1],
            has_bias=int(b is not None), act=K.act_code(act))

    def _bias_act(self, x, b, act, out=None):
        """act(x + b[c]) over an NCHW map (or an (N, C) matrix), one pass; ``b=None``: no bias."""
        x = self._cp.ascontiguousarray(x)
        out = self._empty(x.shape) if out is None else out
        channels = x.shape[1] if x.ndim > 1 else 1
        hw = int(np.prod(x.shape[2:], dtype=np.int64)) if x.ndim > 2 else 1
        return self._elementwise("bias_act", out, x=x, bias=x if b is None else b, n=x.size, hw=hw,
                                 channels=channels, has_bias=int(b is not None), act=K.act_code(act))

    def conv_transpose2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0)):
        # the reference's scatter of patches in CuPy array ops: one cuBLAS GEMM makes every input
        # pixel's (C_out, KH, KW) patch, one strided add per kernel tap places them (float32 sums)
        cp = self._cp
        n, o, ho, wo = shapes.conv_transpose2d(x.shape, w.shape, stride, padding)
        _, c, h, wd = x.shape
        kh, kw = w.shape[2:]
        (sh, sw), (pt, _, pl, _) = stride, padding
        f32 = np.dtype(np.float32)
        xs = cp.ascontiguousarray(x).reshape(n, c, h * wd).astype(f32)
        cols = cp.matmul(w.reshape(c, o * kh * kw).T.astype(f32), xs)
        cols = cols.reshape(n, o, kh, kw, h, wd)
        full = cp.zeros((n, o, (h - 1) * sh + kh, (wd - 1) * sw + kw), dtype=f32)
        for i in range(kh):
            for j in range(kw):
                full[:, :, i : i + (h - 1) * sh + 1 : sh, j : j + (wd - 1) * sw + 1 : sw] += cols[:, :, i, j]
        out = cp.ascontiguousarray(full[:, :, pt : pt + ho, pl : pl + wo]).astype(self._dt)
        return out if b is None else self._bias_act(out, b, None, out=out)

    def linear(self, x, w, b=None):
        out = self._cp.matmul(x, w.T)
        return out if b is None else self._bias_act(out, b, None, out=out)

    def batch_norm(self, x, mean, var, weight, bias, eps):
        # inference BN is normally folded at load; this unfused form exists for the op table
        inv = weight / self._cp.sqrt(var + eps)
        return ((x - mean.reshape(1, -1, 1, 1)) * inv.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)).astype(self._dt)

    # ------------------------------------------------------------------ activations
    def relu(self, x):
        return self._bias_act(x, None, "relu")

    def relu6(self, x):
        return self._bias_act(x, None, "relu6")

    def sigmoid(self, x):
        return self._bias_act(x, None, "sigmoid")

    def hard_sigmoid(self, x):
        return self._bias_act(x, None, "hard_sigmoid")

    def hard_swish(self, x):
        return self._bias_act(x, None, "hard_swish")

    # ------------------------------------------------------------------ pooling
    def _pool(self, name, x, kernel, stride, padding, ceil_mode, **extra):
        n, c, h, w = x.shape
        op = "max_pool2d" if name == "max_pool" else "avg_pool2d"
        out = self._empty(shapes.pool2d(x.shape, kernel, stride, padding, ceil_mode, op))
        return self._elementwise(
            name, out, x=self._cp.ascontiguousarray(x), batch=n, channels=c, height=h, width=w,
            out_h=out.shape[2], out_w=out.shape[3], kernel_h=kernel[0], kernel_w=kernel[1],
            stride_h=stride[0], stride_w=stride[1], pad_h=padding[0], pad_w=padding[1], **extra)

    def max_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False):
        return self._pool("max_pool", x, kernel, stride, padding, ceil_mode)

    def max_pool2d_indices(self, x, kernel, stride):
        # the reference's rule in CuPy array ops: each window's first maximum in scan order
        cp = self._cp
        (_, _, ho, wo), _ = shapes.max_pool2d_indices(x.shape, kernel, stride)
        (kh, kw), (sh, sw), width = kernel, stride, x.shape[3]
        taps = cp.stack([x[:, :, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw]
                         for i in range(kh) for j in range(kw)], axis=-1)
        k = cp.argmax(taps, axis=-1)  # the first maximum
        values = cp.ascontiguousarray(cp.take_along_axis(taps, k[..., None], axis=-1)[..., 0])
        rows = cp.arange(ho)[:, None] * sh + k // kw
        cols = cp.arange(wo)[None, :] * sw + k % kw
        return values, (rows * width + cols).astype(cp.int64)

    def max_unpool2d(self, x, indices, output_size):
        cp = self._cp
        n, c, h, w = shapes.max_unpool2d(x.shape, indices.shape, output_size)
        plane = (cp.arange(n * c, dtype=cp.int64) * (h * w))[:, None]
        out = cp.zeros(n * c * h * w, dtype=x.dtype)
        out[(indices.reshape(n * c, -1).astype(cp.int64) + plane).ravel()] = x.ravel()
        return out.reshape(n, c, h, w)

    def avg_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
        return self._pool("avg_pool", x, kernel, stride, padding, ceil_mode,
                          count_include_pad=int(count_include_pad))

    def global_avg_pool(self, x):
        return self.squeeze(x)

    # ------------------------------------------------------------------ elementwise / shape
    def add(self, a, b):
        return a + b

    def maximum(self, a, b):
        return self._cp.maximum(a, b)

    def mul_channel(self, x, s):
        return self.scale(x, s)

    def mul_pixel(self, x, q):
        return x * q

    def upsample_nearest2x(self, x):
        return self._cp.ascontiguousarray(x.repeat(2, axis=2).repeat(2, axis=3))

    def concat_channels(self, xs):
        return self._cp.concatenate(list(xs), axis=1)

    def prelu(self, x, slope):
        shapes.prelu(x.shape, slope.shape)
        return self._cp.where(x > 0, x, x * slope.reshape(1, -1, 1, 1))

    def channel_shuffle(self, x, groups):
        n, c, h, w = shapes.channel_shuffle(x.shape, groups)
        y = x.reshape(n, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4)
        return self._cp.ascontiguousarray(y).reshape(n, c, h, w)

    def center_crop(self, x, like):
        top, left, h, w = shapes.center_crop_window(x.shape, like.shape)
        return self._cp.ascontiguousarray(x[:, :, top : top + h, left : left + w])

    # ------------------------------------------------------------------ fused SE ops
    def squeeze(self, x):
        x = self._cp.ascontiguousarray(x)
        n, c, h, w = x.shape
        out = self._empty((n, c))
        grid, block = K.squeeze_config(n * c, h * w)
        self._launch("se_squeeze", grid, block, x=x, out=out, planes=n * c, hw=h * w)
        return out

    def excite(self, z, w1, b1, w2, b2, act="relu", gate="sigmoid"):
        n, c = shapes.excite(z.shape, w1.shape, w2.shape)
        hidden = w1.shape[0]
        out = self._empty((n, c))
        grid, block, shared = K.excite_config(n, c, hidden)
        self._launch("se_excite", grid, block, shared, z=self._cp.ascontiguousarray(z), w1=w1,
                     b1=w1 if b1 is None else b1, w2=w2, b2=w2 if b2 is None else b2, out=out,
                     channels=c, hidden=hidden, has_b1=int(b1 is not None), has_b2=int(b2 is not None),
                     act=K.act_code(act), gate=K.act_code(gate))
        return out

    def _hw(self, x) -> int:
        return int(x.shape[2]) * int(x.shape[3])

    def scale(self, x, s):
        return self._elementwise("se_scale", self._empty(x.shape), x=self._cp.ascontiguousarray(x),
                                 s=self._cp.ascontiguousarray(s), n=x.size, hw=self._hw(x))

    def scale_add_relu(self, x, s, residual):
        return self._elementwise("se_scale_add_relu", self._empty(x.shape), x=self._cp.ascontiguousarray(x),
                                 s=self._cp.ascontiguousarray(s),
                                 residual=self._cp.ascontiguousarray(residual), n=x.size, hw=self._hw(x))

    def add_relu(self, a, b):
        return self._elementwise("add_relu", self._empty(a.shape), a=self._cp.ascontiguousarray(a),
                                 b=self._cp.ascontiguousarray(b), n=a.size)

    def spatial_gate(self, x, w, b):
        n, c, h, wd = x.shape
        out = self._empty(shapes.spatial_gate(x.shape, w.shape))
        return self._elementwise("sse_gate", out, x=self._cp.ascontiguousarray(x), w=w.reshape(c),
                                 bias=w.reshape(c) if b is None else b, pixels=n * h * wd, hw=h * wd,
                                 channels=c, has_bias=int(b is not None))

    def scse(self, x, s, q, mode="add"):
        if mode not in K.SCSE_MODES:
            raise ValueError(f"scSE mode must be 'add' or 'max'; got {mode!r}")
        hw = self._hw(x)
        return self._elementwise("scse_combine", self._empty(x.shape), x=self._cp.ascontiguousarray(x),
                                 s=self._cp.ascontiguousarray(s), q=self._cp.ascontiguousarray(q),
                                 n=x.size, hw=hw, chw=int(x.shape[1]) * hw, mode=K.SCSE_MODES[mode])
