"""PyTorch backend: NCHW tensors on CPU, CUDA or MPS, float32/float64/float16/bfloat16.

float32 on CUDA is IEEE float32: the backend turns PyTorch's default TF32 convolutions off
(process-wide; ``tf32=True`` allows them). A model's forward runs under one inference-mode guard, entered in :meth:`TorchBackend.run_model`
(no autograd bookkeeping, no version counters); ops called on their own (the conformance
suite) need none: no tensor here requires grad. torch is imported when the backend is
instantiated, never when this module is. torch's ops are thread-safe, so a model may be
called from several threads at once.
Each op is one ``torch.nn.functional`` call; the fused SE ops use the formulations
that make fewer passes over memory (``addmm`` for the excitation FCs, in-place
activations on tensors the op has just created).
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any, Sequence

import numpy as np

from se_multi import shapes
from se_multi.backend import Backend, BackendUnavailable

#: in-place form of each activation, applied to a tensor the op itself created
_INPLACE_ACTS = {
    "relu": lambda F, y: y.relu_(),
    "relu6": lambda F, y: F.hardtanh_(y, 0.0, 6.0),
    "sigmoid": lambda F, y: y.sigmoid_(),
    "hard_sigmoid": lambda F, y: F.hardsigmoid(y, inplace=True),
    "hard_swish": lambda F, y: F.hardswish(y, inplace=True),
}
#: PyTorch's CUDA hardsigmoid/hardswish kernels multiply by a float32 1/6 whatever the dtype:
#: in float64 that errs by 3e-8 (measured on an H100, torch 2.11), so float64 spells them out
_EXACT_ACTS = {
    "hard_sigmoid": lambda F, y: F.hardtanh_(y.add_(3.0), 0.0, 6.0).div_(6.0),
    "hard_swish": lambda F, y: y.mul_(F.hardtanh(y + 3.0, 0.0, 6.0).div_(6.0)),
}

#: Feature maps and conv weights are kept channels_last (NHWC strides) on every device.
#: Measured on CPU (torch 2.13.0, 2 threads, float32, median of interleaved runs), time
#: channels_last / NCHW: SE-ResNet bottleneck (conv1x1-3x3-1x1 + SE + add/ReLU) 256@56x56
#: batch 1: 0.72, batch 8: 0.64; 512@28x28: 0.94; 1024@14x14: 1.04 (batch 1), 0.95 (batch 8);
#: 7x7/2 stem + max pool on 3x224x224: 0.30; MobileNetV3 dw5x5+SE+1x1 240@28x28: 0.80;
#: scSE 64@112x112: 0.80. It is never meaningfully slower, so it is the default -- except in
#: float64, which oneDNN does not cover: MobileNetV1 at 224x224 took 1.6-4.6 s channels_last
#: against 0.08 s NCHW (2026-11-24), so float64 on the CPU stays NCHW.
CHANNELS_LAST_ON_CPU = True


def _set_cuda_fp32_precision(torch, precision: str) -> None:
    """float32 on CUDA means IEEE float32 unless TF32 is asked for. PyTorch runs cuDNN convolutions
    in TF32 by default on Ampere and newer (measured on an H100: max rel err 2.7e-4 against
    float64, where IEEE float32 gives 3e-7). The setting is process-wide, as PyTorch's is."""
    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    if conv is not None:  # torch >= 2.9: the per-backend precision API
        torch.backends.cudnn.conv.fp32_precision = precision
        torch.backends.cuda.matmul.fp32_precision = precision
    else:
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"


class TorchBackend(Backend):
    name = "torch"
    package = "torch"
    extra = "torch"
    dtypes = ("float32", "float64", "float16", "bfloat16")

    def __init__(self, dtype: str = "float32", device: str | None = None,
                 channels_last: bool | None = None, tf32: bool = False):
        super().__init__(dtype, "cpu" if device is None else device)  # device=0 means cuda:0, never the CPU
        self.torch = torch = importlib.import_module("torch")
        self.F = importlib.import_module("torch.nn.functional")
        self._dev = self._resolve_device(self.device)
        self.device = str(self._dev)
        self._dt = getattr(torch, self.dtype)  # torch names each of its dtypes as se_multi.dtypes does
        # float32/float64: torch rounds a float64 array to them as NumPy does (to nearest, once); its
        # double -> half goes through float, so the 16-bit types take float64 and round their way
        self.param_dtype = self.dtype if self.dtype in ("float32", "float64") else "float64"
        if self._dev.type == "mps" and self.dtype == "float64":
            raise ValueError("torch device 'mps' has no float64; use dtype float32, float16 or bfloat16")
        guard = getattr(torch._C, "_InferenceMode", None)  # the C++ guard behind torch.inference_mode
        self._inference_mode = functools.partial(guard, True) if guard else torch.inference_mode
        if channels_last is not None and not isinstance(channels_last, bool):
            raise TypeError(f"torch backend: channels_last must be True, False or None; got {channels_last!r}")
        if channels_last is None:
            channels_last = self._dev.type != "cpu" or (CHANNELS_LAST_ON_CPU and self.dtype != "float64")
        self.channels_last = bool(channels_last)
        if not isinstance(tf32, bool):
            raise TypeError(f"torch backend: tf32 must be True or False; got {tf32!r}")
        #: whether float32 convolutions and matmuls on CUDA may run in TF32 (10-bit mantissa)
        self.tf32 = tf32
        if self._dev.type == "cuda" and self.dtype == "float32":
            _set_cuda_fp32_precision(torch, "tf32" if tf32 else "ieee")
        self._acts = {**_INPLACE_ACTS, **(_EXACT_ACTS if self.dtype == "float64" else {})}
        #: whether oneDNN's AMX bfloat16 convolution runs here, whose one-column bug :meth:`_conv` avoids
        self._amx_bf16 = (self._dev.type == "cpu" and self.dtype == "bfloat16"
                          and "amx_bf16" in importlib.import_module("se_multi.cpu").cpu_info().flags)

    @classmethod
    def native_dtypes(cls) -> tuple[str, ...]:
        """On the CPU: float32, float64, and bfloat16/float16 where the CPU has the units oneDNN's
        reduced-precision convolutions use (:mod:`se_multi.cpu`). Measured 2026-11-24 (Xeon with
        AMX-BF16 and AVX512_FP16, no AMX-FP16; 256->256 3x3 conv at 56x56, channels_last):
        float32 9.0 ms, bfloat16 1.19 ms (oneDNN's AMX kernel), float16 15.0 ms."""
        from se_multi.cpu import cpu_info

        return (*super().native_dtypes(), *(d for d in cpu_info().native_reduced() if d in cls.dtypes))

    def __repr__(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        tf32 = ", tf32" if self.tf32 and self._dev.type == "cuda" else ""
        return f"<TorchBackend 'torch' dtype={self.dtype}, device={str(self._dev)!r}, {layout}{tf32}>"

    # ------------------------------------------------------------------ device
    def _resolve_device(self, device):
        torch = self.torch
        if isinstance(device, int) and not isinstance(device, bool):
            device = f"cuda:{device}"  # PyTorch's meaning of a bare index
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"torch backend: expected device 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}") from None
        if dev.type == "cpu":
            return dev
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise BackendUnavailable(
                    f"torch device {device!r} requested but torch.cuda.is_available() is False "
                    f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})"
                )
            count = torch.cuda.device_count()
            if (dev.index or 0) >= count:
                raise BackendUnavailable(f"torch device {device!r} requested but only {count} CUDA device(s) exist")
            return torch.device("cuda", dev.index or 0)
        if dev.type == "mps":
            if not torch.backends.mps.is_available():
                raise BackendUnavailable(f"torch device {device!r} requested but torch.backends.mps.is_available() is False")
            return dev
        raise ValueError(f"torch backend: expected device 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}")

    # ------------------------------------------------------------------ arrays
    def asarray(self, x: Any):
        torch = self.torch
        if not isinstance(x, torch.Tensor):
            if not isinstance(x, np.ndarray):
                from se_multi.dispatch import to_numpy  # mlx, cupy, lists, anything array-like

                x = to_numpy(x)
            from se_multi.dtypes import numpy_float  # bfloat16 (ml_dtypes) -> float32, exactly

            x = torch.from_numpy(np.ascontiguousarray(numpy_float(np.asarray(x))))
        return x.to(device=self._dev, dtype=self._dt)

    @staticmethod
    def to_numpy(x) -> np.ndarray:
        torch = sys.modules["torch"]  # a tensor exists, so torch is imported
        if not isinstance(x, torch.Tensor):
            return np.asarray(x)
        x = x.detach()
        if x.dtype == torch.bfloat16:
            x = x.float()  # NumPy has no bfloat16; float32 holds every bfloat16 value exactly
        return x.cpu().numpy()

    @staticmethod
    def max_abs(x) -> float:
        return float(x.detach().abs().max()) if x.numel() else 0.0  # reduced where x lives; max propagates NaN

    def run_model(self, module, x):
        """The whole forward under one inference-mode guard (not one per op)."""
        with self._inference_mode():
            return self.output(module(self, self.input(x)))

    def _layout(self, x):
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=self.torch.channels_last)
        return x.contiguous()

    def input(self, x: Any):
        return self._layout(self.asarray(x))

    def output(self, y):
        return y.contiguous() if y.dim() == 4 else y

    def param(self, w: np.ndarray, kind: str):
        t = self.asarray(w)
        return self._layout(t) if kind == "conv" else t.contiguous()

    def shape(self, x) -> tuple[int, ...]:
        return tuple(int(d) for d in x.shape)

    def synchronize(self, x):
        if self._dev.type == "cuda":
            self.torch.cuda.synchronize(self._dev)
        elif self._dev.type == "mps":
            self.torch.mps.synchronize()
        return x

    # ------------------------------------------------------------------ primitives
    def _conv(self, x, w, b, stride, padding, dilation, groups):
        pt, pb, pl, pr = padding
        if self._amx_bf16 and shapes.onednn_amx_one_column_conv(
                tuple(w.shape), stride, groups,
                shapes.conv2d(tuple(x.shape), tuple(w.shape), stride, padding, dilation, groups)):
            # oneDNN's AMX bfloat16 convolution (torch 2.13 CPU) reads uninitialised memory for a
            # strided 3x3 convolution whose output is one column wide and 2+ rows high: measured
            # 2026-12-03 on an AMX Xeon, every such shape of >= 256 channels and the 3->32 stem at
            # 33x1, 1e30 out (conformance's SE-ResNet-50 at 2x3x37x29 once gave non-finite logits).
            # The same convolution one row and one column larger, sliced back, is right (the
            # ONNX recorder's ``strided_conv_pad`` for OpenVINO's copy of the kernel).
            y = self._conv(x, w, b, stride, (pt, pb + stride[0], pl, pr + stride[1]), dilation, groups)
            return self._layout(y[:, :, :-1, :-1])
        if pt == pb and pl == pr:
            return self.F.conv2d(x, w, b, tuple(stride), (pt, pl), tuple(dilation), groups)
        # asymmetric (TF "SAME") padding: F.conv2d pads symmetrically only
        x = self.F.pad(x, (pl, pr, pt, pb))
        return self.F.conv2d(x, w, b, tuple(stride), 0, tuple(dilation), groups)

    def conv2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        return self._conv(x, w, b, stride, padding, dilation, groups)

    def conv_transpose2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0)):
        _, _, ho, wo = shapes.conv_transpose2d(tuple(x.shape), tuple(w.shape), stride, padding)
        pt, pb, pl, pr = padding
        if pt == pb and pl == pr:
            return self._layout(self.F.conv_transpose2d(x, w, b, tuple(stride), (pt, pl)))
        # asymmetric padding: F.conv_transpose2d crops symmetrically only; crop the full output here
        y = self.F.conv_transpose2d(x, w, b, tuple(stride), 0)
        return self._layout(y[:, :, pt : pt + ho, pl : pl + wo])

    def linear(self, x, w, b=None):
        return self.F.linear(x, w, b)

    def batch_norm(self, x, mean, var, weight, bias, eps):
        return self.F.batch_norm(x, mean, var, weight, bias, training=False, eps=float(eps))

    def relu(self, x):
        return self.torch.relu(x)

    def relu6(self, x):
        return self.F.relu6(x)

    def sigmoid(self, x):
        return self.torch.sigmoid(x)

    def hard_sigmoid(self, x):
        return self._act_("hard_sigmoid", x.clone()) if self.dtype == "float64" else self.F.hardsigmoid(x)

    def hard_swish(self, x):
        return self._act_("hard_swish", x.clone()) if self.dtype == "float64" else self.F.hardswish(x)

    def max_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False):
        return self.F.max_pool2d(x, tuple(kernel), tuple(stride), tuple(padding), ceil_mode=bool(ceil_mode))

    def max_pool2d_indices(self, x, kernel, stride):
        shapes.max_pool2d_indices(tuple(x.shape), kernel, stride)
        return self.F.max_pool2d(x, tuple(kernel), tuple(stride), return_indices=True)

    def max_unpool2d(self, x, indices, output_size):
        shapes.max_unpool2d(tuple(x.shape), tuple(indices.shape), output_size)
        # aten's own op: it takes the output size alone (F.max_unpool2d wants the pool's kernel and stride)
        return self.torch.ops.aten.max_unpool2d(x, indices, list(output_size))

    def avg_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
        return self.F.avg_pool2d(x, tuple(kernel), tuple(stride), tuple(padding), ceil_mode=bool(ceil_mode),
                                 count_include_pad=bool(count_include_pad))

    def global_avg_pool(self, x):
        return x.mean(dim=(2, 3))

    def add(self, a, b):
        return self.torch.add(a, b)

    def maximum(self, a, b):
        return self.torch.maximum(a, b)

    def mul_channel(self, x, s):
        return x * s[:, :, None, None]

    def mul_pixel(self, x, q):
        return x * q

    def upsample_nearest2x(self, x):
        return self.F.interpolate(x, scale_factor=2, mode="nearest")

    def concat_channels(self, xs: Sequence):
        return self.torch.cat(list(xs), dim=1)

    def prelu(self, x, slope):
        shapes.prelu(tuple(x.shape), tuple(slope.shape))
        return self.F.prelu(x, slope)

    def channel_shuffle(self, x, groups):
        n, c, h, w = shapes.channel_shuffle(tuple(x.shape), groups)
        y = x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self._layout(y)

    def center_crop(self, x, like):
        top, left, h, w = shapes.center_crop_window(tuple(x.shape), tuple(like.shape))
        return self._layout(x[:, :, top : top + h, left : left + w])

    # ------------------------------------------------------------------ fused ops
    def _act_(self, name, y):
        """Activation in place on ``y``, which the calling op has just created."""
        if name is None:
            return y
        if name not in self._acts:
            return self.act(name, y)  # raises the standard unknown-activation error
        return self._acts[name](self.F, y)

    def conv2d_act(self, x, w, b, act, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        return self._act_(act, self._conv(x, w, b, stride, padding, dilation, groups))

    def squeeze(self, x):
        return x.mean(dim=(2, 3))

    def _fc(self, z, w, b):
        return self.torch.addmm(b, z, w.t()) if b is not None else z @ w.t()

    def excite(self, z, w1, b1, w2, b2, act="relu", gate="sigmoid"):
        return self._act_(gate, self._fc(self._act_(act, self._fc(z, w1, b1)), w2, b2))

    def scale(self, x, s):
        return x * s[:, :, None, None]

    def scale_add_relu(self, x, s, residual):
        return self.torch.addcmul(residual, x, s[:, :, None, None]).relu_()

    def add_relu(self, a, b):
        return self.torch.add(a, b).relu_()

    def spatial_gate(self, x, w, b):
        return self.F.conv2d(x, w, b).sigmoid_()

    def scse(self, x, s, q, mode="add"):
        cse = x * s[:, :, None, None]
        if mode == "add":
            return cse.addcmul_(x, q)
        if mode == "max":
            return self.torch.maximum(cse, x * q)
        raise ValueError(f"scSE mode must be 'add' or 'max'; got {mode!r}")
