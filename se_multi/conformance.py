"""The conformance suite: every op of a backend against the NumPy float64 reference.

Defined once, used by pytest (``tests/test_conformance.py``) and by
``se-multi validate --backend NAME|module:Class [--dtype D] [--device D] [--json PATH]``
(:mod:`se_multi.cli.validate`).

Each :class:`Check` draws its inputs from a NumPy ``Generator`` seeded by the check's
name (so every backend sees the same numbers), rounds them to the backend's dtype,
computes the expected result with :mod:`se_multi.reference` in float64 on those
rounded values, runs the backend's op, and compares after ``to_numpy``. Rounding the
inputs first means the tolerance only has to cover the backend's arithmetic, not
the representation error of its inputs.

What is covered: every primitive over a grid of shapes (odd H and W, H != W, C not
divisible by the reduction, batch 1 and > 1, 1x1 spatial, stride 2, asymmetric
padding, dilation, groups and depthwise, both ``ceil_mode`` and ``count_include_pad``
settings), every fused op, the SE blocks of :mod:`se_multi.nn` (cSE with ReLU/sigmoid,
hard-sigmoid gate, bias on/off; sSE; scSE add and max), ``nn.residual_unit`` in every
integration, BatchNorm folding (a ``ConvNormAct`` bound on the backend against the
unfolded float64 conv -> batch norm -> activation), and **whole models**: one model of
every family (:data:`MODEL_CASES`) called as users call it, ``Model(x)``, which goes
through the backend's own :meth:`~se_multi.backend.Backend.run_model` (a compiled graph,
an inference session, one inference guard...), against the same declaration bound on the
float64 reference. A bug that lives only in ``run_model`` fails a model check, named
``model <name>``.

Error metric, per check: ``max_abs`` and ``max_rel`` of :func:`se_multi.metrics.max_errors`
(``max |ours - ref| / max |ref|``). An op check passes when ``max_rel <= TOLERANCES[dtype]``,
a model check when ``max_rel <= MODEL_TOLERANCES[dtype]``.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from se_multi import nn
from se_multi import reference as ref
from se_multi.backend import ACTIVATIONS, Backend
from se_multi.metrics import max_errors

#: Largest allowed ``max_rel`` (error relative to the largest reference magnitude), per dtype.
#:
#: Inputs are rounded to the dtype before the float64 reference runs, so what remains
#: is the backend's arithmetic error. A K-term dot product accumulated with unit
#: roundoff ``u`` errs by about ``sqrt(K) * u`` of its scale on random data (``K * u``
#: worst case), and every op that stores its result in the dtype adds half an ulp
#: (``u``). The suite's largest reductions have K = 7*7*3 = 147 (stem conv); its longest
#: chain is a residual unit: conv, conv, squeeze, two FCs, gate, scale+add+ReLU (~7 ops).
#:
#: ======== ========= ============ ========================================= ===============
#: dtype    u         tolerance    why                                       measured max
#: ======== ========= ============ ========================================= ===============
#: float64  1.1e-16   1e-12        K*u = 2e-14 per op, 50x more for blocked  torch 5.0e-16
#:                                 BLAS orders and the chain                 numpy 3.8e-16
#: float32  6.0e-8    1e-5         K*u = 9e-6: the worst case of the         torch 5.4e-7
#:                                 largest dot product                       numpy 2.3e-7
#: float16  4.9e-4    1e-2         ~20 output roundings: 7 chained ops,      torch 8.6e-4
#:                                 each rounding its result, with margin
#: bfloat16 3.9e-3    5e-2         the same ~13 roundings at 8x coarser u    torch 7.3e-3
#:                                                                           openvino 5.8e-3
#: ======== ========= ============ ========================================= ===============
#:
#: (Measured: torch 2.13 CPU, numpy 2.x, this suite, worst check.) The planted bugs of
#: ``tests/broken_backends.py`` err by 1.5e-2 (a 1/(H*W+1) divisor on 8x8) up to O(1),
#: so float32 and float64 validation separates them from rounding by > 1000x.
TOLERANCES: dict[str, float] = {
    "float64": 1e-12,
    "float32": 1e-5,
    "float16": 1e-2,
    "bfloat16": 5e-2,
}

#: Largest allowed ``max_rel`` of a whole model's output (logits, or a segmentation map)
#: against the same weights on the float64 reference: validate's model checks and the parity
#: tests. A 50-layer network chains the per-op errors above through ~50 convolutions, whose
#: errors add (in quadrature on random data), and its weights are rounded to the dtype too.
#:
#: ======== ========= ==================================================================
#: dtype    tolerance worst model check measured (2026-11-24, :data:`MODEL_CASES`)
#: ======== ========= ==================================================================
#: float64  1e-8      numpy 0 (the same code), torch 8e-16
#: float32  1e-4      numpy 4e-7, torch 3e-7, onnxruntime 4e-7, mlx 1.2e-6, openvino 1.1e-6
#: float16  1e-2      torch 8.3e-4, mlx 9.7e-4, onnxruntime 5.0e-4
#: bfloat16 1e-1      torch 2.5e-2 (SE-ResNeXt-50), mlx 7.6e-3, openvino 4.5e-3 (once its AMX bf16
#:                    kernel bug is worked around: see se_multi.onnx_export.WORKAROUNDS; before, 8e35)
#: ======== ========= ==================================================================
#:
#: (The parity fixtures' README expects ~1e-9 at float64 and ~1e-5 at float32 on 224x224.)
#: A backend whose ``run_model`` scales the output by 1.01 errs by 1e-2: float32 and float64
#: validation catch it by 100x.
MODEL_TOLERANCES: dict[str, float] = {
    "float64": 1e-8,
    "float32": 1e-4,
    "float16": 1e-2,
    "bfloat16": 1e-1,
}


# =========================================================================== data types
@dataclass(frozen=True)
class Check:
    """One comparison: ``run(ctx)`` returns ``(backend_result_native, reference_float64)``.

    ``level`` is ``"op"`` (the result is an internal feature map or vector, made public with
    ``ops.output``; :data:`TOLERANCES`) or ``"model"`` (a model's public output;
    :data:`MODEL_TOLERANCES`)."""

    name: str
    op: str
    run: Callable[["Ctx"], tuple[Any, np.ndarray]] = field(repr=False, compare=False)
    level: str = "op"


@dataclass
class CheckResult:
    name: str
    op: str
    max_abs: float | None
    max_rel: float | None
    tol: float
    passed: bool
    error: str | None = None


@dataclass
class SuiteResult:
    backend: str
    dtype: str
    device: str | None
    tolerance: float
    checks: list[CheckResult]
    model_tolerance: float | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed_ops(self) -> list[str]:
        """Names of the ops (or blocks) with at least one failing check, in suite order."""
        return list(dict.fromkeys(c.op for c in self.checks if not c.passed))

    def to_dict(self) -> dict:
        return {
            "backend": self.backend, "dtype": self.dtype, "device": self.device,
            "tolerance": self.tolerance, "model_tolerance": self.model_tolerance,
            "passed": self.passed, "failed_ops": self.failed_ops,
            "num_checks": len(self.checks), "num_failed": sum(not c.passed for c in self.checks),
            "checks": [asdict(c) for c in self.checks],
        }


# =========================================================================== inputs
def _round_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round to the nearest bfloat16 (ties to even), returned as float64."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def round_to_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    """The float64 values a backend computing in ``dtype`` actually holds for ``x``."""
    if dtype == "bfloat16":
        return _round_bfloat16(x)
    return np.asarray(x, np.float64).astype(dtype).astype(np.float64)


class Ctx:
    """What a check gets: the backend, a seeded generator, and the conversions to the backend."""

    def __init__(self, ops: Backend, rng: np.random.Generator):
        self.ops, self.rng, self.dtype = ops, rng, ops.dtype

    # random inputs, already rounded to the backend's dtype
    def normal(self, shape, scale: float = 1.0) -> np.ndarray:
        return round_to_dtype(self.rng.normal(0.0, scale, tuple(shape)), self.dtype)

    def uniform(self, shape, low: float, high: float) -> np.ndarray:
        return round_to_dtype(self.rng.uniform(low, high, tuple(shape)), self.dtype)

    def conv_weight(self, shape) -> np.ndarray:
        return self.normal(shape, 1.0 / np.sqrt(np.prod(shape[1:])))

    # to the backend: feature maps through input(), weights through param(), (N, C) vectors as arrays
    def fmap(self, x):
        return self.ops.input(x)

    def conv(self, w):
        return self.ops.param(w, "conv")

    def linear(self, w):
        return self.ops.param(w, "linear")

    def vector(self, v):
        return None if v is None else self.ops.param(v, "vector")

    def nc(self, s):
        return self.ops.asarray(s)

    def random_state(self, module: nn.Module) -> dict[str, np.ndarray]:
        """Random tensors for every declared parameter, in ranges real checkpoints have."""
        state = {}
        for key, spec in module.param_specs().items():
            if spec.kind == "weight" and len(spec.shape) >= 2:
                state[key] = self.conv_weight(spec.shape)
            elif spec.kind == "bn_weight":
                state[key] = self.uniform(spec.shape, 0.5, 1.5)
            elif spec.kind == "bn_running_var":
                state[key] = self.uniform(spec.shape, 0.2, 1.5)
            else:  # bias, bn_bias, bn_running_mean
                state[key] = self.normal(spec.shape, 0.3)
        return state


def _fmt_shape(shape) -> str:
    return "x".join(str(d) for d in shape)


# =========================================================================== primitive checks
#: feature maps: batch 1 and >1, 1x1 spatial, odd H != W, C not divisible by 16 or 8
FMAP_SHAPES = [(1, 3, 1, 1), (2, 6, 7, 9), (1, 20, 8, 5), (3, 36, 6, 6)]


def conv2d_check(n, c, h, w, out, kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1),
                 groups=1, bias=True) -> Check:
    name = (f"conv2d[{_fmt_shape((n, c, h, w))} o{out} k{_fmt_shape(kernel)} s{stride[0]},{stride[1]} "
            f"p{','.join(map(str, padding))} d{dilation[0]},{dilation[1]} g{groups}{' bias' if bias else ''}]")

    def run(t: Ctx):
        x = t.normal((n, c, h, w))
        wt = t.conv_weight((out, c // groups, *kernel))
        b = t.normal((out,), 0.5) if bias else None
        want = ref.conv2d(x, wt, b, stride, padding, dilation, groups)
        return t.ops.conv2d(t.fmap(x), t.conv(wt), t.vector(b), stride, padding, dilation, groups), want

    return Check(name, "conv2d", run)


#: (n, c, h, w, out, kernel, stride, padding (t, b, l, r), dilation, groups, bias)
CONV_CASES = [
    (1, 3, 1, 1, 8, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, True),    # 1x1 conv on 1x1 spatial
    (2, 6, 7, 9, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True),    # same-padded 3x3, odd H != W
    (2, 6, 7, 9, 5, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, False),   # stride 2, no bias
    (1, 5, 8, 7, 4, (3, 3), (2, 2), (0, 1, 0, 1), (1, 1), 1, True),    # TF "SAME": extra pad bottom/right
    (1, 4, 9, 6, 3, (3, 3), (1, 1), (1, 2, 0, 1), (1, 1), 1, True),    # four different pads
    (2, 4, 9, 8, 4, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1, True),    # dilation 2
    (1, 8, 7, 5, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, True),    # groups 2
    (2, 8, 9, 7, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8, True),    # depthwise
    (1, 6, 9, 10, 6, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 6, False),  # depthwise 5x5 stride 2
    (1, 6, 8, 8, 12, (3, 3), (1, 2), (1, 1, 1, 1), (1, 1), 6, True),   # depth multiplier 2, anisotropic stride
    (1, 3, 15, 13, 8, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1, True),  # 7x7/2 stem
    (2, 5, 6, 7, 4, (1, 3), (1, 1), (0, 0, 1, 1), (1, 1), 1, True),    # rectangular kernel
    (1, 36, 5, 3, 20, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, False), # strided 1x1 projection
]


def _linear_check(n, fin, fout, bias) -> Check:
    def run(t: Ctx):
        x, w = t.normal((n, fin)), t.conv_weight((fout, fin))
        b = t.normal((fout,), 0.5) if bias else None
        return t.ops.linear(t.nc(x), t.linear(w), t.vector(b)), ref.linear(x, w, b)

    return Check(f"linear[{n}x{fin} -> {fout}{' bias' if bias else ''}]", "linear", run)


def _batch_norm_check(shape, eps) -> Check:
    def run(t: Ctx):
        c = shape[1]
        x = t.normal(shape)
        # small variances make eps matter (a backend that drops eps errs by ~5% at eps=1e-3)
        mean, var = t.normal((c,), 0.5), t.uniform((c,), 0.01, 1.5)
        weight, bias = t.uniform((c,), 0.5, 1.5), t.normal((c,), 0.5)
        want = ref.batch_norm(x, mean, var, weight, bias, eps)
        got = t.ops.batch_norm(t.fmap(x), t.vector(mean), t.vector(var), t.vector(weight), t.vector(bias), eps)
        return got, want

    return Check(f"batch_norm[{_fmt_shape(shape)} eps={eps:g}]", "batch_norm", run)


def _activation_check(act, shape) -> Check:
    def run(t: Ctx):
        x = t.normal(shape, 4.0)  # spans the knees at -3, 0, 3 and 6
        return getattr(t.ops, act)(t.fmap(x)), getattr(ref, act)(x)

    return Check(f"{act}[{_fmt_shape(shape)}]", act, run)


def _pool_check(op, shape, kernel, stride, padding, ceil_mode, count_include_pad=True) -> Check:
    extra = f" count_include_pad={count_include_pad}" if op == "avg_pool2d" else ""
    name = (f"{op}[{_fmt_shape(shape)} k{_fmt_shape(kernel)} s{_fmt_shape(stride)} p{_fmt_shape(padding)} "
            f"ceil_mode={ceil_mode}{extra}]")

    def run(t: Ctx):
        x = t.normal(shape)
        if op == "max_pool2d":
            return (t.ops.max_pool2d(t.fmap(x), kernel, stride, padding, ceil_mode),
                    ref.max_pool2d(x, kernel, stride, padding, ceil_mode))
        return (t.ops.avg_pool2d(t.fmap(x), kernel, stride, padding, ceil_mode, count_include_pad),
                ref.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad))

    return Check(name, op, run)


#: (shape, kernel, stride, padding, ceil_mode); the 8x10 and 7x6 cases get an extra row/column
#: from ceil_mode (the Caffe SENet layout's 3x3/2 pools)
MAX_POOL_CASES = [
    ((1, 4, 8, 10), (3, 3), (2, 2), (0, 0), True),
    ((1, 4, 8, 10), (3, 3), (2, 2), (0, 0), False),
    ((2, 3, 9, 7), (3, 3), (2, 2), (1, 1), False),
    ((2, 3, 9, 7), (3, 3), (2, 2), (1, 1), True),
    ((1, 2, 7, 6), (2, 2), (2, 2), (0, 0), True),
    ((1, 3, 1, 1), (3, 3), (2, 2), (1, 1), True),
    ((1, 3, 5, 4), (3, 2), (2, 1), (1, 0), True),
]
#: (shape, kernel, stride, padding, ceil_mode, count_include_pad)
AVG_POOL_CASES = [
    ((2, 3, 9, 7), (3, 3), (2, 2), (1, 1), False, True),
    ((2, 3, 9, 7), (3, 3), (2, 2), (1, 1), False, False),
    ((1, 4, 8, 10), (3, 3), (2, 2), (1, 1), True, True),
    ((1, 4, 8, 10), (3, 3), (2, 2), (1, 1), True, False),
    ((1, 2, 7, 6), (2, 2), (2, 2), (0, 0), True, True),
    ((1, 5, 6, 6), (2, 2), (2, 2), (0, 0), False, True),
    ((2, 3, 7, 9), (2, 2), (2, 2), (0, 0), True, False),  # the ResNet-D "avg_down" shortcut, odd sizes
]


def _unary_map_check(op, shape, ref_fn) -> Check:
    def run(t: Ctx):
        x = t.normal(shape)
        return getattr(t.ops, op)(t.fmap(x)), ref_fn(x)

    return Check(f"{op}[{_fmt_shape(shape)}]", op, run)


def _binary_map_check(op, shape, ref_fn) -> Check:
    def run(t: Ctx):
        a, b = t.normal(shape), t.normal(shape)
        return getattr(t.ops, op)(t.fmap(a), t.fmap(b)), ref_fn(a, b)

    return Check(f"{op}[{_fmt_shape(shape)}]", op, run)


def _channel_scale_check(op, shape) -> Check:
    """``mul_channel`` / ``scale``: gates in (0, 1) as a sigmoid gives them."""
    def run(t: Ctx):
        x, s = t.normal(shape), t.uniform(shape[:2], 0.0, 1.0)
        return getattr(t.ops, op)(t.fmap(x), t.nc(s)), ref.mul_channel(x, s)

    return Check(f"{op}[{_fmt_shape(shape)}]", op, run)


def _mul_pixel_check(shape) -> Check:
    def run(t: Ctx):
        x, q = t.normal(shape), t.uniform((shape[0], 1, *shape[2:]), 0.0, 1.0)
        return t.ops.mul_pixel(t.fmap(x), t.fmap(q)), ref.mul_pixel(x, q)

    return Check(f"mul_pixel[{_fmt_shape(shape)}]", "mul_pixel", run)


def _concat_check(shapes) -> Check:
    def run(t: Ctx):
        xs = [t.normal(s) for s in shapes]
        return t.ops.concat_channels([t.fmap(x) for x in xs]), ref.concat_channels(xs)

    return Check(f"concat_channels[{' + '.join(_fmt_shape(s) for s in shapes)}]", "concat_channels", run)


def primitive_checks() -> list[Check]:
    checks = [conv2d_check(*case) for case in CONV_CASES]
    checks += [_linear_check(1, 6, 3, True), _linear_check(4, 36, 20, False), _linear_check(2, 20, 1, True)]
    checks += [_batch_norm_check(s, eps) for s, eps in (((2, 6, 7, 9), 1e-5), ((1, 20, 8, 5), 1e-3),
                                                        ((1, 3, 1, 1), 1e-3))]
    checks += [_activation_check(act, s) for act in ACTIVATIONS for s in ((2, 6, 7, 9), (1, 3, 1, 1))]
    checks += [_pool_check("max_pool2d", *case) for case in MAX_POOL_CASES]
    checks += [_pool_check("avg_pool2d", *case) for case in AVG_POOL_CASES]
    checks += [_unary_map_check("global_avg_pool", s, ref.global_avg_pool) for s in FMAP_SHAPES]
    checks += [_binary_map_check("add", s, ref.add) for s in FMAP_SHAPES[:2]]
    checks += [_binary_map_check("maximum", s, ref.maximum) for s in FMAP_SHAPES[:2]]
    checks += [_channel_scale_check("mul_channel", s) for s in FMAP_SHAPES]
    checks += [_mul_pixel_check(s) for s in FMAP_SHAPES[:3]]
    checks += [_unary_map_check("upsample_nearest2x", s, ref.upsample_nearest2x) for s in FMAP_SHAPES[:3]]
    checks += [_concat_check([(2, 3, 5, 7), (2, 4, 5, 7), (2, 1, 5, 7)]), _concat_check([(1, 2, 1, 1)] * 2)]
    return checks


# =========================================================================== fused-op checks
def _conv2d_act_check(act, case) -> Check:
    n, c, h, w, out, kernel, stride, padding, dilation, groups, bias = case
    name = (f"conv2d_act[{act} {_fmt_shape((n, c, h, w))} o{out} k{_fmt_shape(kernel)} s{stride[0]} "
            f"p{','.join(map(str, padding))} g{groups}]")

    def run(t: Ctx):
        x = t.normal((n, c, h, w), 2.0)
        wt = t.conv_weight((out, c // groups, *kernel))
        b = t.normal((out,), 0.5) if bias else None
        want = ref.conv2d(x, wt, b, stride, padding, dilation, groups)
        want = getattr(ref, act)(want) if act else want
        return t.ops.conv2d_act(t.fmap(x), t.conv(wt), t.vector(b), act, stride, padding, dilation, groups), want

    return Check(name, "conv2d_act", run)


def _excite_check(n, c, rd, bias, act, gate) -> Check:
    name = f"excite[{n}x{c} -> {rd} -> {c} {act}/{gate}{' bias' if bias else ''}]"

    def run(t: Ctx):
        z = t.normal((n, c))
        w1, w2 = t.normal((rd, c), 2.0 / np.sqrt(c)), t.normal((c, rd), 2.0 / np.sqrt(rd))
        b1, b2 = (t.normal((rd,), 0.5), t.normal((c,), 0.5)) if bias else (None, None)
        want = getattr(ref, gate)(ref.linear(getattr(ref, act)(ref.linear(z, w1, b1)), w2, b2))
        got = t.ops.excite(t.nc(z), t.linear(w1), t.vector(b1), t.linear(w2), t.vector(b2), act, gate)
        return got, want

    return Check(name, "excite", run)


def _scale_add_relu_check(shape) -> Check:
    def run(t: Ctx):
        x, r, s = t.normal(shape), t.normal(shape), t.uniform(shape[:2], 0.0, 1.0)
        return t.ops.scale_add_relu(t.fmap(x), t.nc(s), t.fmap(r)), ref.relu(ref.mul_channel(x, s) + r)

    return Check(f"scale_add_relu[{_fmt_shape(shape)}]", "scale_add_relu", run)


def _spatial_gate_check(shape) -> Check:
    def run(t: Ctx):
        x, w, b = t.normal(shape), t.conv_weight((1, shape[1], 1, 1)), t.normal((1,), 0.5)
        return t.ops.spatial_gate(t.fmap(x), t.conv(w), t.vector(b)), ref.sigmoid(ref.conv2d(x, w, b))

    return Check(f"spatial_gate[{_fmt_shape(shape)}]", "spatial_gate", run)


def _scse_check(shape, mode) -> Check:
    def run(t: Ctx):
        n, c, h, w = shape
        x, s, q = t.normal(shape), t.uniform((n, c), 0.0, 1.0), t.uniform((n, 1, h, w), 0.0, 1.0)
        cse, sse = ref.mul_channel(x, s), ref.mul_pixel(x, q)
        want = cse + sse if mode == "add" else ref.maximum(cse, sse)
        return t.ops.scse(t.fmap(x), t.nc(s), t.fmap(q), mode), want

    return Check(f"scse[{_fmt_shape(shape)} {mode}]", "scse", run)


def fused_checks() -> list[Check]:
    conv_cases = [CONV_CASES[1], CONV_CASES[8], CONV_CASES[3]]
    acts = (None, "relu", "relu6", "sigmoid", "hard_sigmoid", "hard_swish")
    checks = [_conv2d_act_check(act, conv_cases[i % len(conv_cases)]) for i, act in enumerate(acts)]
    checks += [_conv2d_act_check("relu", case) for case in (CONV_CASES[0], CONV_CASES[10])]
    checks += [_unary_map_check("squeeze", s, ref.global_avg_pool) for s in FMAP_SHAPES]
    checks += [
        _excite_check(2, 36, 4, True, "relu", "sigmoid"),
        _excite_check(1, 20, 1, True, "relu", "sigmoid"),   # C_r = C // 16 = 1
        _excite_check(3, 24, 6, False, "relu", "sigmoid"),
        _excite_check(2, 16, 8, True, "relu", "hard_sigmoid"),  # MobileNetV3
        _excite_check(1, 12, 5, True, "hard_swish", "sigmoid"),
    ]
    checks += [_channel_scale_check("scale", s) for s in FMAP_SHAPES]
    checks += [_scale_add_relu_check(s) for s in FMAP_SHAPES]
    checks += [_binary_map_check("add_relu", s, lambda a, b: ref.relu(a + b)) for s in FMAP_SHAPES]
    checks += [_spatial_gate_check(s) for s in FMAP_SHAPES[:3]]
    checks += [_scse_check(s, mode) for s in ((2, 6, 7, 9), (1, 20, 1, 1)) for mode in ("add", "max")]
    return checks


# =========================================================================== block checks
def module_check(name: str, op: str, build: Callable[[], nn.Module], shape, scale: float = 1.0) -> Check:
    """Bind one random state on the backend and, in float64, on the reference; run both."""
    from se_multi.backends.numpy_backend import NumpyBackend

    def run(t: Ctx):
        module = build()
        state = t.random_state(module)
        x = t.normal(shape, scale)
        reference_ops = NumpyBackend("float64")
        want = build().bind(state, reference_ops)(reference_ops, x)
        return module.bind(state, t.ops)(t.ops, t.fmap(x)), want

    return Check(f"{name}[{_fmt_shape(shape)}]", op, run)


def se_block_check(n, c, h, w, rd, bias=True, act="relu", gate="sigmoid", conv_fc=True) -> Check:
    """A channel SE block (squeeze, excite, scale) from :class:`se_multi.nn.SqueezeExcite`."""
    label = f"SqueezeExcite[rd{rd} {act}/{gate}{' bias' if bias else ' no-bias'}{' conv-fc' if conv_fc else ''}]"
    return module_check(label, "SqueezeExcite",
                        lambda: nn.SqueezeExcite(c, rd, bias=bias, act=act, gate=gate, conv_fc=conv_fc),
                        (n, c, h, w), scale=2.0)


class ResidualUnit(nn.Module):
    """A two-conv residual unit (as in a basic block) with SE in one of the paper's positions."""

    def __init__(self, cin: int, cout: int, stride: int, integration: str, reduction: int = 4):
        super().__init__()
        self.integration = integration
        self.conv1 = nn.ConvNormAct(cin, cout, 3, stride=stride, conv="conv1", bn="bn1")
        self.conv2 = nn.ConvNormAct(cout, cout, 3, act=None, conv="conv2", bn="bn2")
        se_chs = cin if integration == "pre" else cout
        self.se = nn.SqueezeExcite(se_chs, ref.reduced_channels(se_chs, reduction))
        self.downsample = (nn.ConvNormAct(cin, cout, 1, stride=stride, act=None, conv="downsample.0",
                                          bn="downsample.1") if stride != 1 or cin != cout else None)

    def branch(self, ops, x):
        x = self.conv1(ops, x)
        if self.integration == "conv3x3":
            x = self.se(ops, x)  # SE right after the 3x3 conv, inside the branch
        return self.conv2(ops, x)

    def forward(self, ops, x):
        return nn.residual_unit(ops, x, self.branch, self.downsample, self.se, self.integration)


def _bn_folding_check(shape, out, kernel, stride, groups, act, eps, conv_bias) -> Check:
    """``ConvNormAct`` folded on the backend vs conv -> batch_norm -> act, unfolded, float64."""
    name = f"ConvNormAct[{_fmt_shape(shape)} o{out} k{kernel} s{stride} g{groups} {act} eps={eps:g}" \
           f"{' conv-bias' if conv_bias else ''}]"

    def run(t: Ctx):
        module = nn.ConvNormAct(shape[1], out, kernel, stride=stride, groups=groups, bias=conv_bias, act=act,
                                eps=eps)
        state = t.random_state(module)
        x = t.normal(shape)
        want = ref.conv2d(x, state["conv.weight"], state.get("conv.bias"), module.stride, module.padding,
                          module.dilation, groups)
        want = ref.batch_norm(want, state["bn.running_mean"], state["bn.running_var"], state["bn.weight"],
                              state["bn.bias"], eps)
        want = getattr(ref, act)(want) if act else want
        return module.bind(state, t.ops)(t.ops, t.fmap(x)), want

    return Check(name, "ConvNormAct (BN folding)", run)


def block_checks() -> list[Check]:
    checks = [
        se_block_check(2, 36, 7, 9, ref.reduced_channels(36, 16)),
        se_block_check(1, 20, 5, 8, ref.reduced_channels(20, 8), bias=False),
        se_block_check(2, 24, 6, 5, ref.reduced_channels(24, 4, divisor=8), gate="hard_sigmoid"),
        se_block_check(1, 16, 1, 1, 4, conv_fc=False),
        se_block_check(3, 12, 4, 7, 3, act="relu6", gate="hard_sigmoid", bias=False),
    ]
    checks += [module_check("SpatialSE", "SpatialSE", lambda c=s[1]: nn.SpatialSE(c), s, 2.0)
               for s in ((2, 6, 7, 9), (1, 20, 1, 1))]
    checks += [module_check(f"SCSE[{mode}]", "SCSE", lambda m=mode: nn.SCSE(36, 16, mode=m), (2, 36, 7, 9), 2.0)
               for mode in ("add", "max")]
    checks += [module_check(f"residual_unit[{integ}]", "residual_unit",
                            lambda i=integ: ResidualUnit(8, 8, 1, i), (2, 8, 7, 9))
               for integ in nn.SE_INTEGRATIONS]
    checks += [module_check(f"residual_unit[{integ} projection s2]", "residual_unit",
                            lambda i=integ: ResidualUnit(6, 12, 2, i), (1, 6, 9, 8))
               for integ in ("standard", "identity")]
    checks += [
        _bn_folding_check((2, 6, 7, 9), 8, 3, 1, 1, "relu", 1e-5, False),
        _bn_folding_check((1, 8, 9, 6), 8, 3, 2, 8, "relu6", 1e-3, False),
        _bn_folding_check((1, 20, 5, 5), 12, 1, 1, 1, None, 1e-5, True),
        _bn_folding_check((1, 12, 7, 7), 24, 5, 2, 12, "hard_swish", 1e-3, False),
    ]
    return checks


# =========================================================================== whole-model checks
#: one model of every family, at a small input with odd, unequal H and W and batch 2 where the
#: model allows (the U-Net needs multiples of 32)
MODEL_CASES = (
    ("seresnet50", (2, 3, 37, 29)),             # SE-ResNet, timm layout
    ("legacy_seresnet50", (2, 3, 31, 40)),      # Caffe layout: the ceil-mode stem pool sees an even 16x20 map
    ("seresnext50_32x4d", (2, 3, 33, 27)),      # SE-ResNeXt: grouped 3x3
    ("se_mobilenetv1_100", (2, 3, 35, 30)),     # SE-MobileNet: depthwise, ReLU6
    ("mobilenetv3_small_100", (2, 3, 41, 33)),  # MobileNetV3: hard-swish, hard-sigmoid gates
    ("unet_se_resnet50_scse", (1, 3, 64, 32)),  # scSE U-Net: segmentation output
)


def model_check(model_name: str, shape) -> Check:
    """``Model(x)`` on the backend -- its own ``run_model`` -- against the same declaration and
    seeded weights bound on the float64 reference."""

    def run(t: Ctx):
        from se_multi.backends.numpy_backend import NumpyBackend
        from se_multi.dispatch import to_numpy
        from se_multi.init import recipe_state
        from se_multi.models import Model, build_model

        declaration = build_model(model_name)
        state = recipe_state((k, s.shape, s.kind) for k, s in declaration.param_specs().items())
        x = t.normal(shape)
        reference_ops = NumpyBackend("float64")
        want = to_numpy(Model(model_name, declaration.bind(state, reference_ops), reference_ops)(x))
        model = Model(model_name, declaration.bind(state, t.ops), t.ops)
        return model(x), want

    return Check(f"{model_name}[{_fmt_shape(shape)}]", f"model {model_name}", run, level="model")


def model_checks() -> list[Check]:
    return [model_check(name, shape) for name, shape in MODEL_CASES]


def build_checks() -> list[Check]:
    """The whole suite, in the order it runs."""
    return primitive_checks() + fused_checks() + block_checks() + model_checks()


# =========================================================================== running
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"[:300]


def tolerance_for(dtype: str, level: str = "op") -> float:
    table = MODEL_TOLERANCES if level == "model" else TOLERANCES
    if dtype not in table:
        raise ValueError(f"no conformance tolerance for dtype {dtype!r}; expected one of {', '.join(table)}")
    return table[dtype]


def run_check(check: Check, ops: Backend) -> CheckResult:
    """Run one check; an exception is a failure carrying the one-line message, never a crash."""
    tol = tolerance_for(ops.dtype, check.level)
    rng = np.random.default_rng(zlib.crc32(check.name.encode()))
    try:
        got, want = check.run(Ctx(ops, rng))
        got = np.asarray(ops.to_numpy(got if check.level == "model" else ops.output(got)))
        if got.shape != want.shape:
            return CheckResult(check.name, check.op, None, None, tol, False,
                               f"output shape {got.shape}, reference {want.shape}")
        max_abs, max_rel = max_errors(got, want)
        if not np.isfinite(max_abs):
            return CheckResult(check.name, check.op, None, None, tol, False, "non-finite values in the output")
    except Exception as exc:  # a broken op must fail its check, not end the suite
        return CheckResult(check.name, check.op, None, None, tol, False, _one_line(exc))
    return CheckResult(check.name, check.op, max_abs, max_rel, tol, bool(max_rel <= tol))


def run_suite(backend: str | Backend = "auto", dtype: str = "float32", device: str | None = None,
              progress: Callable[[int, int, str], None] | None = None,
              checks: list[Check] | None = None, fail_fast: bool = False) -> SuiteResult:
    """Run every check on ``backend`` (a name, ``"module:Class"``, or an instance, whose own dtype
    and device are then used). ``progress(done, total, check_name)`` is called after each check;
    ``fail_fast`` stops at the first failing check."""
    from se_multi.dispatch import get_backend

    ops = get_backend(backend, dtype=dtype, device=device)
    tol = tolerance_for(ops.dtype)
    checks = build_checks() if checks is None else checks
    results = []
    for i, check in enumerate(checks):
        results.append(run_check(check, ops))
        if progress:
            progress(i + 1, len(checks), check.name)
        if fail_fast and not results[-1].passed:
            break
    return SuiteResult(ops.name or type(ops).__name__, ops.dtype, getattr(ops, "device", None), tol, results,
                       tolerance_for(ops.dtype, "model"))


def covered_ops() -> set[str]:
    return {c.op for c in build_checks()}


# =========================================================================== report / CLI
def _fmt_err(v: float | None) -> str:
    return "-" if v is None else f"{v:.2e}"


def format_table(result: SuiteResult) -> str:
    rows = [(c.name, _fmt_err(c.max_abs), _fmt_err(c.max_rel), f"{c.tol:.0e}",
             "pass" if c.passed else "FAIL" + (f"  {c.error}" if c.error else "")) for c in result.checks]
    header = ("check", "max abs err", "max rel err", "tolerance", "result")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    line = lambda r: "  ".join(f"{v:<{widths[i]}}" if i < 4 else v for i, v in enumerate(r))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths) + ("------",))] + [line(r) for r in rows])
