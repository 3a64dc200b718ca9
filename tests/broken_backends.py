"""Deliberately broken backends: each is the NumPy backend with one realistic bug.

The conformance suite must fail every one of them and name the op that is wrong
(``EXPECTED_FAILED_OP``), at the dtypes of ``DTYPES`` (float32 and float64 unless listed): the
bfloat16 ones are an honest bfloat16 backend (:class:`NumpyBfloat16`, which passes) with one bug
each that every max-error tolerance at bfloat16 lets through. Each bug is one that passes a casual test: most give the
right answer on square inputs, on 1x1 maps, with C_r = 1, or with symmetric padding,
which is why the suite's shape grid has those cases.
"""

from __future__ import annotations

import inspect

import numpy as np

from se_multi import reference as ref
from se_multi.backend import Backend
from se_multi.backends.numpy_backend import NumpyBackend


class SigmoidGateAsHardSigmoid(NumpyBackend):
    """The excitation gate uses hard-sigmoid where sigmoid was asked for (a MobileNetV3
    code path leaking into every SE block): close to sigmoid near 0, 0.07 off at |x| = 1."""

    name = "broken-excite-gate"

    def excite(self, z, w1, b1, w2, b2, act="relu", gate="sigmoid"):
        gate = "hard_sigmoid" if gate == "sigmoid" else gate
        return super().excite(z, w1, b1, w2, b2, act, gate)


class GlobalPoolDividesByHWPlusOne(NumpyBackend):
    """Global average pool divides the sum by H*W + 1 (an off-by-one in the count)."""

    name = "broken-global-pool"

    def global_avg_pool(self, x):
        h, w = x.shape[2:]
        return x.sum(axis=(2, 3)) / (h * w + 1)


class SqueezeKernelHWTransposed(NumpyBackend):
    """The squeeze runs as one average pool whose kernel is (W, H) instead of (H, W).

    Right whenever H == W (every ImageNet SE-ResNet stage); on H != W the pool averages
    only part of the map (the top W rows, or the left H columns)."""

    name = "broken-squeeze"

    def squeeze(self, x):
        h, w = x.shape[2:]
        kernel = (w, h)  # BUG: H and W transposed
        pooled = self.avg_pool2d(x, kernel, kernel, ceil_mode=True, count_include_pad=False)
        return pooled[:, :, 0, 0]


class ExciteWeightsReshaped(NumpyBackend):
    """The excitation FCs use ``w.reshape(in, out)`` where ``w.T`` was meant: the shapes fit,
    the values are scrambled. Right only when C_r == 1 (then reshape and transpose agree)."""

    name = "broken-excite-weights"

    def excite(self, z, w1, b1, w2, b2, act="relu", gate="sigmoid"):
        def fc(v, w, b):
            out = v @ w.reshape(w.shape[1], w.shape[0])  # BUG: reshape is not a transpose
            return out if b is None else out + b

        return self.act(gate, fc(self.act(act, fc(z, w1, b1)), w2, b2))


class MaxPoolIgnoresCeilMode(NumpyBackend):
    """``ceil_mode`` is dropped: the Caffe SENet's 3x3/2 pools lose their last row and column."""

    name = "broken-max-pool"

    def max_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False):
        return ref.max_pool2d(x, kernel, stride, padding, False)


class HardSigmoidUnclipped(NumpyBackend):
    """``hard_sigmoid(x) = x / 6 + 0.5`` without the clip to [0, 1]: right on [-3, 3] only."""

    name = "broken-hard-sigmoid"

    def hard_sigmoid(self, x):
        return x / 6 + 0.5


class ConvPaddingFlipped(NumpyBackend):
    """Asymmetric padding applied mirrored: the extra row/column of TF "SAME" padding lands
    top/left instead of bottom/right. Symmetric padding is unaffected."""

    name = "broken-conv-padding"

    def conv2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        top, bottom, left, right = padding
        return super().conv2d(x, w, b, stride, (bottom, top, right, left), dilation, groups)


class BatchNormIgnoresEps(NumpyBackend):
    """Inference batch norm divides by ``sqrt(var)``, dropping ``eps`` (matters for small
    running variances and MobileNet's eps = 1e-3)."""

    name = "broken-batch-norm"

    def batch_norm(self, x, mean, var, weight, bias, eps):
        inv = weight / np.sqrt(var)
        return (x - mean.reshape(1, -1, 1, 1)) * inv.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


class RunModelScalesOutput(NumpyBackend):
    """Every op is right; only the whole-model path is wrong (a compiled graph that fused a scale
    twice, a cached session of another model...): ``run_model`` returns 1.01x the output. Only
    checks that call whole models through ``run_model`` can see it."""

    name = "broken-run-model"

    def run_model(self, module, x):
        return super().run_model(module, x) * 1.01


class GroupedConvDropsGroupOffsetAt32(NumpyBackend):
    """A grouped convolution specialised for cardinality 32 (ResNeXt's 32x4d) that drops the group
    offset: every group convolves the *first* group's input channels. Right at every other
    ``groups`` (2, 6, 8, depthwise...), so only a check at groups = 32 sees it in ``conv2d``."""

    name = "broken-conv-groups-32"

    def conv2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        if groups != 32:
            return super().conv2d(x, w, b, stride, padding, dilation, groups)
        cg, og = x.shape[1] // groups, w.shape[0] // groups
        # BUG: x[:, :cg] where x[:, g * cg:(g + 1) * cg] was meant
        out = np.concatenate([ref.conv2d(x[:, :cg], w[g * og:(g + 1) * og], None, stride, padding, dilation, 1)
                              for g in range(groups)], axis=1)
        return out if b is None else out + b.reshape(1, -1, 1, 1)


# --------------------------------------------------------------------------- bfloat16
def _bf16(x):
    """Round to the nearest bfloat16, kept in a float32 array (NumPy computes in float32)."""
    import ml_dtypes

    return np.asarray(x).astype(ml_dtypes.bfloat16).astype(np.float32)


class NumpyBfloat16(NumpyBackend):
    """An *honest* bfloat16 backend, the base of the bfloat16 bugs below: every op computes in
    float32 and rounds its result to bfloat16, as bfloat16 hardware does (products and sums
    accumulated in float32, every stored array bfloat16); weights and inputs are rounded too.
    The fused ops are the base class's compositions of the primitives, so every stored
    intermediate is rounded. It passes validate at bfloat16 (``tests/test_conformance.py``)."""

    name = "numpy-bfloat16"
    dtypes = ("bfloat16",)

    def __init__(self, dtype: str = "bfloat16", device: str | None = None):
        Backend.__init__(self, dtype, device)
        self._dt = np.dtype(np.float32)  # the carrier: every value it holds is a bfloat16

    def asarray(self, x):
        return _bf16(super().asarray(x))


def _rounded(name):
    def op(self, *args, **kwargs):
        return _bf16(getattr(super(NumpyBfloat16, self), name)(*args, **kwargs))

    op.__name__ = name
    return op


for _name in ("conv2d", "linear", "batch_norm", "relu", "relu6", "sigmoid", "hard_sigmoid", "hard_swish",
              "max_pool2d", "avg_pool2d", "global_avg_pool", "add", "maximum", "mul_channel", "mul_pixel",
              "upsample_nearest2x", "concat_channels"):
    setattr(NumpyBfloat16, _name, _rounded(_name))
for _name in Backend.FUSED_OPS:  # the compositions: every intermediate rounded
    setattr(NumpyBfloat16, _name, getattr(Backend, _name))


class ClaimsBfloat16ComputesFloat32(NumpyBfloat16):
    """Claims bfloat16 and computes in float32 (a dtype flag that never reaches the kernels):
    every error is float32-sized, so every max-error tolerance at bfloat16 passes."""

    name = "broken-bf16-precision"

    def asarray(self, x):
        return NumpyBackend.asarray(self, x)  # BUG: no rounding anywhere


for _name in ("conv2d", "linear", "batch_norm", "relu", "relu6", "sigmoid", "hard_sigmoid", "hard_swish",
              "max_pool2d", "avg_pool2d", "global_avg_pool", "add", "maximum", "mul_channel", "mul_pixel",
              "upsample_nearest2x", "concat_channels"):
    setattr(ClaimsBfloat16ComputesFloat32, _name, inspect.getattr_static(NumpyBackend, _name))


class RunModelScalesOutputBfloat16(NumpyBfloat16):
    """:class:`RunModelScalesOutput` at bfloat16: a 1% scale error is within the bfloat16 model
    tolerance (1e-1), and only the whole-model bias check sees it."""

    name = "broken-run-model-bf16"

    def run_model(self, module, x):
        return _bf16(super().run_model(module, x) * 1.01)


class SigmoidOffBfloat16(NumpyBfloat16):
    """``sigmoid(x) + 1e-3`` (a constant added in an approximation): below bfloat16's own rounding
    of values near 1 (2e-3), so within every max-error tolerance; only its bias shows it."""

    name = "broken-sigmoid-bf16"

    def sigmoid(self, x):
        return _bf16(ref.sigmoid(x) + 1e-3)


#: broken backend class name -> the op the suite must name as failing
EXPECTED_FAILED_OP = {
    "SigmoidGateAsHardSigmoid": "excite",
    "GlobalPoolDividesByHWPlusOne": "global_avg_pool",
    "SqueezeKernelHWTransposed": "squeeze",
    "ExciteWeightsReshaped": "excite",
    "MaxPoolIgnoresCeilMode": "max_pool2d",
    "HardSigmoidUnclipped": "hard_sigmoid",
    "ConvPaddingFlipped": "conv2d",
    "BatchNormIgnoresEps": "batch_norm",
    # the first whole model the suite checks (model_cases: by family module name, so it changes as
    # families are added): the bug is caught at the first model, whichever that is
    "RunModelScalesOutput": "model " + __import__("se_multi.conformance").conformance.model_cases()[0][0],
    "GroupedConvDropsGroupOffsetAt32": "conv2d",
    "ClaimsBfloat16ComputesFloat32": "precision",
    "RunModelScalesOutputBfloat16": "whole-model bias",
    "SigmoidOffBfloat16": "sigmoid",
}
#: the dtypes each broken backend is validated in (default: float32 and float64)
DTYPES = {name: ("bfloat16",) for name in EXPECTED_FAILED_OP if name.endswith(("Bfloat16", "ComputesFloat32"))}
#: subclasses of NumpyBackend here that are honest: validate passes them
HONEST = {"NumpyBfloat16": ("bfloat16",)}
