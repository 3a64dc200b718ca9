"""NumPy backend: the reference maths as a backend (float32 and float64, NCHW, CPU)."""

from __future__ import annotations

import numpy as np

from se_multi import reference as ref
from se_multi.backend import Backend


class NumpyBackend(Backend):
    name = "numpy"
    package = "numpy"
    extra = None
    dtypes = ("float32", "float64")

    def __init__(self, dtype: str = "float32", device: str | None = None):
        if device not in (None, "cpu"):
            raise ValueError(f"numpy backend runs on device 'cpu' only; got device={device!r}")
        super().__init__(dtype, None)
        self._dt = np.dtype(self.dtype)

    def asarray(self, x):
        if not isinstance(x, np.ndarray):
            from se_multi.dispatch import to_numpy  # any backend's array -> NumPy

            x = to_numpy(x)
        return np.ascontiguousarray(x, dtype=self._dt)

    def to_numpy(self, x):
        return np.asarray(x)

    # primitives: the reference, nothing else
    def conv2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        return ref.conv2d(x, w, b, stride, padding, dilation, groups)

    def linear(self, x, w, b=None):
        return ref.linear(x, w, b)

    def batch_norm(self, x, mean, var, weight, bias, eps):
        return ref.batch_norm(x, mean, var, weight, bias, eps).astype(self._dt, copy=False)

    relu = staticmethod(ref.relu)
    relu6 = staticmethod(ref.relu6)
    sigmoid = staticmethod(ref.sigmoid)
    hard_sigmoid = staticmethod(ref.hard_sigmoid)
    hard_swish = staticmethod(ref.hard_swish)
    global_avg_pool = staticmethod(ref.global_avg_pool)
    add = staticmethod(ref.add)
    maximum = staticmethod(ref.maximum)
    mul_channel = staticmethod(ref.mul_channel)
    mul_pixel = staticmethod(ref.mul_pixel)
    upsample_nearest2x = staticmethod(ref.upsample_nearest2x)
    concat_channels = staticmethod(ref.concat_channels)

    def max_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False):
        return ref.max_pool2d(x, kernel, stride, padding, ceil_mode)

    def avg_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
        return ref.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad).astype(self._dt, copy=False)
