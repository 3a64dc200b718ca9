"""Deliberately broken backends: each is the NumPy backend with one realistic bug.

The conformance suite must fail every one of them and name the op that is wrong
(``EXPECTED_FAILED_OP``). Each bug is one that passes a casual test: most give the
right answer on square inputs, on 1x1 maps, with C_r = 1, or with symmetric padding,
which is why the suite's shape grid has those cases.
"""

from __future__ import annotations

import numpy as np

from se_multi import reference as ref
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
    "RunModelScalesOutput": "model seresnet50",
}
