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
every family (:func:`model_cases`, declared by each family) called as users call it, ``Model(x)``, which goes
through the backend's own :meth:`~se_multi.backend.Backend.run_model` (a compiled graph,
an inference session, one inference guard...), against the same declaration bound on the
float64 reference. A bug that lives only in ``run_model`` fails a model check, named
``model <name>``.

Error metrics, per check: ``max_abs`` and ``max_rel`` of :func:`se_multi.metrics.max_errors`
(``max |ours - ref| / max |ref|``) and the mean signed relative error,
:func:`se_multi.metrics.relative_bias`. What a check must meet is one row of :data:`POLICY` per
dtype: an op check ``max_rel <= TOLERANCES[dtype]``, a model check ``max_rel <=
MODEL_TOLERANCES[dtype]``, an elementwise check at float16/bfloat16 a bias bound too. After the
checks, two verdicts on the whole models (:func:`whole_model_checks`): their mean bias, and that
each errs as the claimed dtype's rounding does ("does not compute in bfloat16").
"""

from __future__ import annotations

import contextlib
import hashlib
import zlib
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from se_multi import nn, op_table
from se_multi import reference as ref
from se_multi.backend import ACTIVATIONS, Backend
from se_multi.dtypes import COMPUTE_DTYPES, round_to, unit_roundoff
from se_multi.metrics import max_errors, relative_bias

@dataclass(frozen=True)
class DtypePolicy:
    """What validate holds a backend computing in one dtype to: one row of :data:`POLICY`."""

    dtype: str
    #: largest ``max_rel`` of an op or block check
    op: float | None
    #: largest ``max_rel`` of a whole model
    model: float
    #: ``torch.testing.assert_close``'s default ``rtol`` for the dtype: the anchor, for comparison
    anchor_rtol: float | None
    #: a quantized dtype (int8): ops are not quantized one by one, so only whole models are
    #: checked, against ``model``, with ``floor`` as the precision floor and no bias bound
    #: (calibration shifts outputs on purpose: bias correction trades bias for error)
    models_only: bool = False
    floor: float | None = None

    @property
    def u(self) -> float:
        """The dtype's unit roundoff (floating dtypes only)."""
        return unit_roundoff(self.dtype)

    @property
    def precision_floor(self) -> float | None:
        """Smallest ``max_rel`` every whole-model check must reach (``None`` at float64)."""
        if self.models_only:
            return self.floor
        return None if self.dtype == "float64" else PRECISION_FLOOR_U * self.u

    @property
    def model_bias(self) -> float | None:
        """Largest ``|bias|`` averaged over the whole-model checks (``None``: not held to one)."""
        return None if self.models_only else MODEL_BIAS_U * self.u

    def elementwise_bias(self, n: int) -> float | None:
        """Largest ``|bias|`` of an elementwise check of ``n`` elements; ``None`` (not held to
        one) at float32 and float64 (see :data:`ELEMENTWISE_BIAS_Z`)."""
        if self.models_only or self.dtype in ("float32", "float64"):
            return None
        return ELEMENTWISE_BIAS_Z * self.u / max(1, n) ** 0.5


#: How far each whole-model check's ``max_rel`` must reach, in units of ``u``: a backend computing
#: in the dtype it claims rounds every stored activation and weight to it, so a model's error is at
#: least about ``u`` (measured below: 0.6u to 25u); one computing in a finer dtype errs by that dtype's
#: ``u``, >= 2^13 times less for float32 under bfloat16 or float16.
PRECISION_FLOOR_U = 1 / 8
#: Largest ``|mean signed relative error|`` (:func:`se_multi.metrics.relative_bias`) averaged over
#: the whole-model checks, in units of ``u`` (measured below: at most 0.22u; a x1.01 output is 2.4u
#: at bfloat16, 20u at float16).
MODEL_BIAS_U = 1 / 2
#: Largest ``|relative_bias|`` of an elementwise check of N elements at float16 and bfloat16, in
#: units of ``u / sqrt(N)``. There, every measured backend computes an activation or elementwise op
#: in float32 and rounds each result once, so the mean of N independent roundings is ~0.7u/sqrt(N)
#: from 0 (measured below: at most 1.32); a sigmoid off by +1e-3 at bfloat16, a quarter of an ulp
#: near 1 and far inside the 5e-2 tolerance, is 32 on 3888 elements. A kernel that multiplies by a
#: constant rounded to float16 (XLA computes ``x / 6`` as ``x * (1/6)``: every hard-sigmoid output
#: 0.025% low, z = 15) is reported too: compute such an op in float32 and round once, as the measured
#: backends do (``examples/se_multi_jax`` does it for that reason). Not at float32 and float64: there a
#: kernel computes in the dtype itself, and a constant rounded to it (``x / 6`` computed as
#: ``x * (1/6)``: JAX at float64, z = 16) biases every element alike by a fraction of ``u``, which is
#: harmless, while any bias that matters exceeds the tolerances (K*u).
ELEMENTWISE_BIAS_Z = 6.0

#: The tolerance policy, one row per compute dtype. Every number validate holds a backend to is
#: here or derived from here (``u``: unit roundoff, :func:`se_multi.dtypes.unit_roundoff`). The error
#: metrics are :mod:`se_multi.metrics`'s: ``max_rel`` = max |ours - ref| / max |ref|, ``bias`` = the
#: mean signed relative error. Inputs are rounded to the dtype before the float64 reference runs, so
#: what remains is the backend's arithmetic.
#:
#: ======== ======= ========= ======== ======== ==============================================
#: dtype    u       anchor    op       model    why
#:                  (rtol)
#: ======== ======= ========= ======== ======== ==============================================
#: float64  1.1e-16 1e-7      1e-12    1e-8     accumulation in the dtype itself: a K-term dot
#:                                              product errs by up to K*u (K = 147, the 7x7 stem),
#:                                              50x more for blocked BLAS orders and a chain of ~7
#:                                              ops; a model chains ~50 convolutions
#: float32  6.0e-8  1.3e-6    1e-5     1e-4     the same: K*u = 9e-6 per op
#: float16  4.9e-4  1e-3      1e-2     1e-2     ~20 roundings: 7 chained ops each storing its
#:                                              result, and fp16 accumulation where a backend has
#:                                              it (MLX CPU: 2.2e-3 on a 5x5 depthwise conv)
#: bfloat16 3.9e-3  1.6e-2    5e-2     1e-1     the same ~13 roundings at 8x coarser u; a model
#:                                              with grouped convs (SE-ResNeXt) errs most
#: ======== ======= ========= ======== ======== ==============================================
#:
#: Why not the anchor: ``assert_close`` compares element by element, one op, with ``atol`` 1e-5
#: besides; these checks chain ops and compare against the output's scale. At float32 and float64
#: the anchor is near this suite's per-op worst case (1.3e-6 vs measured 5.4e-7) while the K*u bound
#: covers backends that accumulate in another order; at float16 the anchor is ~2u, below what a
#: chained block measures (8.6e-4) and what an fp16-accumulating backend gives (2.2e-3).
#:
#: A max-error tolerance of many ``u`` hides errors smaller than it. Three checks see those:
#:
#: - **bias** (elementwise checks at float16 and bfloat16): ``|bias| <= ELEMENTWISE_BIAS_Z * u / sqrt(N)``;
#: - **whole-model bias**: the mean over the model checks of each model's ``bias`` within
#:   ``MODEL_BIAS_U * u`` (averaging over models averages out the rounding of each one's weights,
#:   which a model's bias mostly is; a ``run_model`` that scales its output is the same in all);
#: - **precision**: every model check's ``max_rel >= PRECISION_FLOOR_U * u`` (not float64: nothing
#:   finer exists): "does not compute in bfloat16".
#:
#: Measured 2026-12-02 on this project's machine (2-core AMD EPYC with AVX-512 and AVX512_BF16;
#: numpy 2.4.6, torch 2.13.0, onnxruntime 1.32.0, openvino 2026.4.1, mlx 0.32.4, jax 0.10.2 through
#: ``examples/se_multi_jax``), the whole suite: worst op or block check, worst model, the smallest
#: model error and the whole-model bias in units of u, the largest elementwise ``|bias| sqrt(N)/u``
#: (z, held at float16/bfloat16 only) and the largest single model's ``|bias|/u``. Every row passes:
#:
#: =================== ======== ======== ============ ============== ====== ============
#: backend dtype       op       model    min model/u  |mean bias|/u  z      model |b|/u
#: =================== ======== ======== ============ ============== ====== ============
#: numpy float64       8.7e-16  0        (exact)      0              \-     0
#: torch float64       7.3e-16  1.7e-15  6.3          0.05           \-     0.31
#: jax float64         6.4e-16  1.1e-15  4.2          0.08           \-     0.41
#: numpy float32       4.8e-7   4.4e-7   3.1          0.17           \-     0.49
#: torch float32       5.4e-7   5.5e-7   2.9          0.13           \-     0.35
#: onnxruntime float32 4.8e-7   4.7e-7   2.7          0.04           \-     0.17
#: openvino float32    5.4e-7   1.0e-6   6.2          0.05           \-     0.31
#: mlx float32         4.3e-7   1.5e-6   7.4          0.22           \-     0.82
#: jax float32         5.4e-7   4.4e-7   3.8          0.20           \-     0.37
#: torch float16       8.6e-4   8.3e-4   1.1          0.02           1.03   0.18
#: onnxruntime float16 8.6e-4   5.2e-4   0.8          0.02           1.03   0.16
#: mlx float16         2.2e-3   9.7e-4   1.1          0.04           1.03   0.30
#: jax float16         8.6e-4   9.0e-4   1.0          0.01           1.03   0.12
#: torch bfloat16      7.3e-3   6.2e-3   1.1          0.04           1.32   0.31
#: openvino bfloat16   5.7e-3   5.9e-3   0.6          0.04           0.00   0.29
#: mlx bfloat16        8.8e-3   7.6e-3   1.1          0.09           0.99   0.51
#: jax bfloat16        8.4e-3   6.7e-3   1.1          0.08           1.05   0.49
#: =================== ======== ======== ============ ============== ====== ============
#:
#: So the bounds sit 4.8x below the smallest model error (u/8 against 0.6u), 2.3x above the largest
#: whole-model bias (u/2 against 0.22u) and 4.5x above the largest elementwise z (6 against 1.32).
#: The planted bugs of ``tests/broken_backends.py`` err by 1.5e-2 (a 1/(H*W+1) divisor on 8x8) up
#: to O(1) in max error, by 2.4u (x1.01 at bfloat16: +9.5e-3) in whole-model bias, 4.9x the bound, by
#: z = 32 (a sigmoid off by 1e-3 at bfloat16) in elementwise bias, and by 6e-5 u (float32 arithmetic
#: claimed as bfloat16: 2.2e-7 to 5.1e-7) in model error, 2000x below the floor.
POLICY: dict[str, DtypePolicy] = {p.dtype: p for p in (
    DtypePolicy("float64", op=1e-12, model=1e-8, anchor_rtol=1e-7),
    DtypePolicy("float32", op=1e-5, model=1e-4, anchor_rtol=1.3e-6),
    DtypePolicy("float16", op=1e-2, model=1e-2, anchor_rtol=1e-3),
    DtypePolicy("bfloat16", op=5e-2, model=1e-1, anchor_rtol=1.6e-2),
    # int8 (post-training quantization on openvino/onnxruntime, se_multi.quantize): whole models
    # only. Model bound: weights and activations step by range/255 or range/127 per tensor, ~1e-3
    # of a tensor's range per layer, ~50 layers add in quadrature to ~1e-2, and the largest of 1000
    # logits is ~3x the typical one; measured 2026-12-02 (seeded weights, generated inputs): 9e-3
    # to 5e-2 (se_multi.quantize.MODEL_TOLERANCE's note); a wrong SE gate or a dropped scale errs
    # by O(1e-1) to O(1).
    # validate's six models on openvino (default calibration) erred 3.8e-3 (SE-MobileNet) to 2.2e-2.
    # Floor: 1e-3, 3.8x below the smallest measured: a backend that says int8 and computes in
    # float32 errs by ~1e-6.
    DtypePolicy("int8", op=None, model=1e-1, anchor_rtol=None, models_only=True, floor=1e-3),
)}

#: views of :data:`POLICY` (what the parity tests and older callers read); op tolerances exist
#: for the floating dtypes only
TOLERANCES: dict[str, float] = {d: p.op for d, p in POLICY.items() if not p.models_only}
MODEL_TOLERANCES: dict[str, float] = {d: p.model for d, p in POLICY.items()}


# =========================================================================== data types
@dataclass(frozen=True)
class Check:
    """One comparison: ``run(ctx)`` returns ``(backend_result_native, reference_float64)``.

    ``level`` is ``"op"`` (the result is an internal feature map or vector, made public with
    ``ops.output``; :data:`TOLERANCES`) or ``"model"`` (a model's public output;
    :data:`MODEL_TOLERANCES`). ``elementwise``: every output element is one rounding of its own
    (an activation, an elementwise product or sum), so its bias is held to
    :meth:`DtypePolicy.elementwise_bias` too."""

    name: str
    op: str
    run: Callable[["Ctx"], tuple[Any, np.ndarray]] = field(repr=False, compare=False)
    level: str = "op"
    elementwise: bool = False
    #: the dtypes the check runs at (``()``: every dtype; a model's ``conformance_dtypes``)
    dtypes: tuple[str, ...] = ()


@dataclass
class CheckResult:
    """One check's outcome. ``tol`` bounds ``max_rel`` from above, except for the precision
    check, whose ``tol`` is the floor every whole model's ``max_rel`` must reach; ``bias`` is
    :func:`se_multi.metrics.relative_bias` (the whole-model bias check: its mean over the models);
    ``bias_bound`` is set where the bias is held to a bound; ``error`` says why a check failed."""

    name: str
    op: str
    max_abs: float | None
    max_rel: float | None
    tol: float
    passed: bool
    error: str | None = None
    bias: float | None = None
    bias_bound: float | None = None
    level: str = "op"


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
def round_to_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    """The float64 values a backend computing in ``dtype`` actually holds for ``x``
    (:func:`se_multi.dtypes.round_to`)."""
    return round_to(x, dtype)


class Ctx:
    """What a check gets: the backend, a seeded generator, and the conversions to the backend."""

    def __init__(self, ops: Backend, rng: np.random.Generator):
        # inputs are rounded to what the backend takes in: its compute dtype, or float32 for a
        # quantized one (an int8 graph takes float32 and quantizes inside)
        self.ops, self.rng, self.dtype = ops, rng, getattr(ops, "input_dtype", ops.dtype)

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
FMAP_SHAPES = list(op_table.FMAP_SHAPES)


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
    # the grouped 3x3 convolutions the models run: a kernel may special-case a cardinality
    (1, 128, 7, 9, 128, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 32, False),  # SE-ResNeXt 32x4d
    (2, 128, 9, 8, 256, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 32, False),  # its stride-2 first block, width x2
    (1, 256, 7, 6, 256, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 64, False),  # SENet-154 64x4d, stride 2
    (1, 16, 9, 8, 16, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 16, True),     # depthwise, dilation 2
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

    return Check(f"{act}[{_fmt_shape(shape)}]", act, run, elementwise=True)


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


#: (shape, kernel, stride, ties): QuickNAT's 2x2/2 pool (even, odd and 1-pixel-short sizes), an
#: overlapping 3x3/2 one; ``ties``: values on a coarse grid, so windows hold equal maxima and the
#: unpooled map shows which of them a backend picked (PyTorch: the first in scan order)
UNPOOL_CASES = [
    ((2, 3, 8, 10), (2, 2), (2, 2), False),
    ((1, 4, 7, 9), (2, 2), (2, 2), False),
    ((2, 3, 8, 6), (2, 2), (2, 2), True),
    ((1, 2, 9, 7), (3, 3), (2, 2), True),
    ((1, 3, 5, 4), (3, 2), (2, 1), False),
]


def _unpool_input(t: "Ctx", shape, ties) -> np.ndarray:
    return np.round(t.uniform(shape, 0.0, 1.0) * 2) / 2 if ties else t.normal(shape)


def _max_pool_indices_check(shape, kernel, stride, ties) -> Check:
    """The values of ``max_pool2d_indices`` (its indices are the backend's own: the unpool check below)."""
    def run(t: Ctx):
        x = _unpool_input(t, shape, ties)
        return t.ops.max_pool2d_indices(t.fmap(x), kernel, stride)[0], ref.max_pool2d_indices(x, kernel, stride)[0]

    return Check(f"max_pool2d_indices[{_fmt_shape(shape)} k{_fmt_shape(kernel)} s{_fmt_shape(stride)}"
                 f"{' ties' if ties else ''}]", "max_pool2d_indices", run)


def _max_unpool_check(shape, kernel, stride, ties) -> Check:
    """``max_unpool2d`` of a ``max_pool2d_indices`` back to the input's size: each maximum where the
    reference put it (with ties: the first in scan order), zeros elsewhere."""
    def run(t: Ctx):
        x = _unpool_input(t, shape, ties)
        size = tuple(shape[2:])
        values, indices = t.ops.max_pool2d_indices(t.fmap(x), kernel, stride)
        return t.ops.max_unpool2d(values, indices, size), ref.max_unpool2d(*ref.max_pool2d_indices(x, kernel, stride), size)

    return Check(f"max_unpool2d[{_fmt_shape(shape)} k{_fmt_shape(kernel)} s{_fmt_shape(stride)}"
                 f"{' ties' if ties else ''}]", "max_unpool2d", run)

def _drawn(t: "Ctx", arg: op_table.Arg) -> np.ndarray:
    if arg.values == "gate":
        return t.uniform(arg.shape, 0.0, 1.0)
    return t.conv_weight(arg.shape) if arg.values == "weight" else t.normal(arg.shape)


def _handed(t: "Ctx", arg: op_table.Arg, x):
    if arg.role == "fmaps":
        return [t.fmap(v) for v in x]
    return {"fmap": t.fmap, "nc": t.nc, "vector": t.vector, "conv": t.conv, "linear": t.linear}[arg.role](x)


def _case_check(op: op_table.Op, case: op_table.Case) -> Check:
    arrays = [a for a in case.args.values() if isinstance(a, op_table.Arg)]
    first = arrays[0] if arrays else None
    shown = ("" if first is None else " + ".join(_fmt_shape(s) for s in first.shape) if first.role == "fmaps"
             else _fmt_shape(first.shape))

    def run(t: Ctx):
        mine, theirs = {}, {}
        for name, arg in case.args.items():
            if isinstance(arg, op_table.Arg):
                x = [_drawn(t, op_table.Arg(s)) for s in arg.shape] if arg.role == "fmaps" else _drawn(t, arg)
                mine[name], theirs[name] = _handed(t, arg, x), x
            else:
                mine[name] = theirs[name] = arg
        # positionally, in the table's order (an adapter may name its parameters otherwise)
        given = [n for n in op.args if n in mine]
        lead = list(op.args[:len(given)]) == given
        got = (getattr(t.ops, op.name)(*(mine[n] for n in given)) if lead
               else getattr(t.ops, op.name)(**mine))
        return got, op.reference(**theirs)

    return Check(f"{op.name}[{shown}]", op.name, run, elementwise=case.elementwise)


def case_checks(kind: str | None = None) -> list[Check]:
    """The checks the op table declares (:attr:`se_multi.op_table.Op.cases`), in table order: of
    the primitives (``kind="primitive"``), the fused ops (``"fused"``) or every op (``None``)."""
    return [_case_check(op, case) for op in op_table.TABLE if kind in (None, op.kind) for case in op.cases]


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

    return Check(f"mul_pixel[{_fmt_shape(shape)}]", "mul_pixel", run, elementwise=True)


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
    # the 3x36x6x6 maps make the elementwise bias check sharp: its bound shrinks as 1/sqrt(N)
    checks += [_activation_check(act, s) for act in ACTIVATIONS for s in ((2, 6, 7, 9), (1, 3, 1, 1), (3, 36, 6, 6))]
    checks += [_pool_check("max_pool2d", *case) for case in MAX_POOL_CASES]
    checks += [_pool_check("avg_pool2d", *case) for case in AVG_POOL_CASES]
    checks += [_max_pool_indices_check(*case) for case in UNPOOL_CASES]
    checks += [_max_unpool_check(*case) for case in UNPOOL_CASES]
    checks += [_channel_scale_check("mul_channel", s) for s in FMAP_SHAPES]
    # global_avg_pool, add, maximum, mul_pixel, upsample_nearest2x, concat_channels, and any new
    # primitive: the cases its op-table entry declares
    return checks + case_checks(op_table.PRIMITIVE)


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
    checks += [
        _excite_check(2, 36, 4, True, "relu", "sigmoid"),
        _excite_check(1, 20, 1, True, "relu", "sigmoid"),   # C_r = C // 16 = 1
        _excite_check(3, 24, 6, False, "relu", "sigmoid"),
        _excite_check(2, 16, 8, True, "relu", "hard_sigmoid"),  # MobileNetV3
        _excite_check(1, 12, 5, True, "hard_swish", "sigmoid"),
    ]
    checks += [_channel_scale_check("scale", s) for s in FMAP_SHAPES]
    checks += [_scale_add_relu_check(s) for s in FMAP_SHAPES]
    checks += [_spatial_gate_check(s) for s in FMAP_SHAPES[:3]]
    checks += [_scse_check(s, mode) for s in ((2, 6, 7, 9), (1, 20, 1, 1)) for mode in ("add", "max")]
    # squeeze, add_relu, and any new fused op: the cases its op-table entry declares
    return checks + case_checks(op_table.FUSED)


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
def model_cases() -> tuple[tuple[str, tuple[int, int, int, int]], ...]:
    """``(model name, NCHW shape)``: one model of every family (more where a family has more than
    one kind of network), at a small input with odd, unequal H and W and batch 2 where the model
    allows (the U-Net needs multiples of 32), as each family declares it in its own module
    (``register_model(..., conformance_input=shape)``)."""
    from se_multi.models.registry import conformance_cases

    return conformance_cases()


def __getattr__(name: str):
    if name == "MODEL_CASES":  # read from the registry when asked for: the families' declarations
        return model_cases()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The float64 reference outputs of whole-model checks, by (model, builder options, input bytes):
#: every suite run in a process (one per backend and dtype) checks the same seeded models on inputs
#: that differ only by the dtype they are rounded to, and recomputing the reference each time was
#: about 11 s of a numpy-float32 suite's run. Bounded: the 64 most recent (a whole model's output
#: is a logits row or a small segmentation map, under 1 MB), least recently used dropped first.
REFERENCE_CACHE_SIZE = 64
_reference_outputs: "OrderedDict[tuple, np.ndarray]" = OrderedDict()


def _model_key(model_name: str, options: dict) -> tuple:
    """What identifies a whole-model check's declaration and weights: its name and builder options."""
    return model_name, tuple(sorted(options.items()))


def _reference_output(model_name: str, options: dict, declaration, state, x: np.ndarray) -> np.ndarray:
    """``model_name`` run on the float64 NumPy reference, remembered (:data:`REFERENCE_CACHE_SIZE`)."""
    from se_multi.backends.numpy_backend import NumpyBackend
    from se_multi.dispatch import to_numpy
    from se_multi.models import Model

    key = (*_model_key(model_name, options), x.dtype.str, x.shape,
           hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest())
    if key in _reference_outputs:
        _reference_outputs.move_to_end(key)
        return _reference_outputs[key]
    reference_ops = NumpyBackend("float64")
    want = to_numpy(Model(model_name, declaration.bind(state, reference_ops), reference_ops)(x))
    want.setflags(write=False)  # shared by every later check of this model: nobody may change it
    _reference_outputs[key] = want
    while len(_reference_outputs) > REFERENCE_CACHE_SIZE:
        _reference_outputs.popitem(last=False)
    return want


#: The whole-model checks' declarations and seeded weights, by (model, builder options), while a
#: :func:`sharing_model_weights` block is open; ``None`` outside one.
_shared_weights: "dict[tuple, tuple] | None" = None


@contextlib.contextmanager
def sharing_model_weights():
    """``with sharing_model_weights(): run_suite(a); run_suite(b)``: inside the block, each
    whole-model check builds its declaration and draws its seeded weights once, and every suite
    run (one per backend and dtype) binds those; outside one, each run draws its own. Drawing them
    is ~1.5 s of a suite run (2 cores, 2026-12-03); held, the built-in models' take ~600 MiB, freed
    when the outermost block ends. They are read-only, so nothing that binds them can change the
    next run's weights."""
    global _shared_weights
    outer = _shared_weights
    _shared_weights = {} if outer is None else outer
    try:
        yield
    finally:
        _shared_weights = outer


def _model_weights(model_name: str, options: dict):
    """``(declaration, seeded state)`` of a whole-model check (:func:`sharing_model_weights`)."""
    from se_multi.init import recipe_state
    from se_multi.models import build_model

    key = _model_key(model_name, options)
    shared = _shared_weights
    if shared is not None and key in shared:
        return shared[key]
    declaration = build_model(model_name, **options)
    state = recipe_state((k, s.shape, s.kind) for k, s in declaration.param_specs().items())
    if shared is not None:
        for value in state.values():
            value.setflags(write=False)
        shared[key] = declaration, state
    return declaration, state


def model_check(model_name: str, shape, options: dict | None = None) -> Check:
    """``Model(x)`` on the backend -- its own ``run_model`` -- against the same declaration and
    seeded weights bound on the float64 reference. ``options``: builder options (default: what the
    family declared as its ``conformance_options``, e.g. a narrower classifier); the check's name
    shows them."""
    from se_multi.models.registry import entries

    entry = entries().get(model_name)
    dtypes = entry.conformance_dtypes if entry is not None else ()
    if options is None:
        options = dict(entry.conformance_options) if entry is not None else {}

    def run(t: Ctx):
        from se_multi.models import Model

        declaration, state = _model_weights(model_name, options)
        x = t.normal(shape)
        want = _reference_output(model_name, options, declaration, state, x)
        model = Model(model_name, declaration.bind(state, t.ops), t.ops)
        return model(x), want

    built = "".join(f",{k}={v!r}" for k, v in sorted(options.items())).replace(" ", "")
    return Check(f"{model_name}[{_fmt_shape(shape)}{built}]", f"model {model_name}", run, level="model",
                 dtypes=dtypes)


def model_checks() -> list[Check]:
    return [model_check(name, shape) for name, shape in model_cases()]


def build_checks() -> list[Check]:
    """The whole suite, in the order it runs."""
    return primitive_checks() + fused_checks() + block_checks() + model_checks()


# =========================================================================== running
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"[:300]


def policy_for(dtype: str) -> DtypePolicy:
    """The :data:`POLICY` row of ``dtype``, or one error naming the dtypes that have one."""
    if dtype not in POLICY:
        raise ValueError(f"no conformance tolerance for dtype {dtype!r}; expected one of {', '.join(POLICY)}")
    return POLICY[dtype]


def tolerance_for(dtype: str, level: str = "op") -> float:
    row = policy_for(dtype)
    if level != "model" and row.op is None:
        raise ValueError(f"{dtype} has no op tolerance: only whole models are checked at {dtype}")
    return row.model if level == "model" else row.op


def run_check(check: Check, ops: Backend) -> CheckResult:
    """Run one check; an exception is a failure carrying the one-line message, never a crash."""
    policy = policy_for(ops.dtype)
    tol = tolerance_for(ops.dtype, check.level)
    rng = np.random.default_rng(zlib.crc32(check.name.encode()))
    failed = lambda why: CheckResult(check.name, check.op, None, None, tol, False, why, level=check.level)  # noqa: E731
    try:
        got, want = check.run(Ctx(ops, rng))
        got = np.asarray(ops.to_numpy(got if check.level == "model" else ops.output(got)))
        if got.shape != want.shape:
            return failed(f"output shape {got.shape}, reference {want.shape}")
        max_abs, max_rel = max_errors(got, want)
        if not np.isfinite(max_abs):
            return failed("non-finite values in the output")
        bias = relative_bias(got, want)
    except Exception as exc:  # a broken op must fail its check, not end the suite
        return failed(_one_line(exc))
    passed, error, bound = bool(max_rel <= tol), None, None
    if check.elementwise:
        bound = policy.elementwise_bias(got.size)
        if bound is not None and abs(bias) > bound:
            passed, error = False, (f"biased: mean signed rel err {bias:+.2e}, beyond {bound:.1e} "
                                    f"({ELEMENTWISE_BIAS_Z:g}u/sqrt({got.size}) at {ops.dtype}): honest rounding "
                                    "averages out")
    return CheckResult(check.name, check.op, max_abs, max_rel, tol, passed, error, bias, bound, check.level)


def whole_model_checks(results: list[CheckResult], dtype: str) -> list[CheckResult]:
    """The suite-level verdicts on the whole-model results (none if no model check produced an
    output): their mean bias, and (below float64) that each errs as ``dtype``'s rounding does."""
    policy = policy_for(dtype)
    models = [r for r in results if r.level == "model" and r.max_rel is not None]
    if not models:
        return []
    out = []
    mean_bias = float(np.mean([r.bias for r in models]))
    bound = policy.model_bias
    biased = bound is not None and abs(mean_bias) > bound
    if bound is not None:
        out.append(CheckResult(
        f"bias[mean of {len(models)} whole models]", "whole-model bias", None, None, bound, not biased,
        (f"whole-model outputs are biased: mean signed rel err {mean_bias:+.2e} over {len(models)} models, beyond "
         f"{bound:.1e} ({MODEL_BIAS_U:g}u at {dtype}); per model: "
         + ", ".join(f"{r.op.removeprefix('model ')} {r.bias:+.1e}" for r in models)) if biased else None,
            mean_bias, bound, "suite"))
    floor = policy.precision_floor
    if floor is not None:
        fine = [r for r in models if r.max_rel < floor]
        smallest = min(r.max_rel for r in models)
        finer = next((d for d in COMPUTE_DTYPES if d != dtype and policy_for(d).u < floor / PRECISION_FLOOR_U
                      and smallest < 64 * policy_for(d).u), None)  # the dtype whose rounding the errors fit
        sized = f"{finer}-sized" if finer else "smaller than its rounding makes"
        out.append(CheckResult(
            f"precision[{dtype}: every whole model errs >= {floor:.1e}]", "precision", None, smallest, floor,
            not fine,
            (f"does not compute in {dtype}: whole-model errors are {sized} ("
             + ", ".join(f"{r.op.removeprefix('model ')} {r.max_rel:.1e}" for r in fine) + ")"
             + (f"; quantizing to {dtype} alone errs by >= {floor:.1e}" if policy.models_only else
                f"; rounding to {dtype} alone errs by >= {floor:.1e} ({PRECISION_FLOOR_U:g}u)")) if fine else None,
            level="suite"))
    return out


def run_suite(backend: str | Backend = "auto", dtype: str = "float32", device: str | None = None,
              progress: Callable[[int, int, str], None] | None = None,
              checks: list[Check] | None = None, fail_fast: bool = False) -> SuiteResult:
    """Run every check on ``backend`` (a name, ``"module:Class"``, or an instance, whose own dtype
    and device are then used), then the whole-model verdicts (:func:`whole_model_checks`).
    ``progress(done, total, check_name)`` is called after each check; ``fail_fast`` stops at the
    first failing check (and skips the verdicts, which need every model)."""
    from se_multi.dispatch import get_backend

    ops = get_backend(backend, dtype=dtype, device=device)
    policy = policy_for(ops.dtype)
    tol = policy.model if policy.models_only else tolerance_for(ops.dtype)
    checks = build_checks() if checks is None else checks
    # a model ill-conditioned at coarser dtypes is checked at the dtypes its family names
    checks = [c for c in checks if not c.dtypes or ops.dtype in c.dtypes]
    if policy.models_only:  # a quantized dtype: ops are not quantized one by one (see POLICY)
        checks = [c for c in checks if c.level == "model"]
    results = []
    for i, check in enumerate(checks):
        results.append(run_check(check, ops))
        if progress:
            progress(i + 1, len(checks), check.name)
        if fail_fast and not results[-1].passed:
            break
    else:
        results += whole_model_checks(results, ops.dtype)
    return SuiteResult(ops.name or type(ops).__name__, ops.dtype, getattr(ops, "device", None), tol, results,
                       tolerance_for(ops.dtype, "model"))


def covered_ops() -> set[str]:
    """The ops (and blocks, models) the suite checks; ``tests/test_op_table.py`` holds it to every op
    of :mod:`se_multi.op_table`, so a new op needs a check here (written by hand: its inputs and the
    reference call) before that test passes."""
    return {c.op for c in build_checks()}


# =========================================================================== report / CLI
def _fmt_err(v: float | None) -> str:
    return "-" if v is None else f"{v:.2e}"


def format_table(result: SuiteResult) -> str:
    def tolerance(c: CheckResult) -> str:
        if c.op == "precision":
            return f">= {c.tol:.1e}"  # a floor: the errors must be at least this
        return "-" if c.op == "whole-model bias" else f"{c.tol:.0e}"  # held to its bias bound alone

    def bias(c: CheckResult) -> str:
        if c.bias is None:
            return "-"
        return f"{c.bias:+.1e}" + (f" (<= {c.bias_bound:.0e})" if c.bias_bound is not None else "")

    rows = [(c.name, _fmt_err(c.max_abs), _fmt_err(c.max_rel), tolerance(c), bias(c),
             "pass" if c.passed else "FAIL" + (f"  {c.error}" if c.error else "")) for c in result.checks]
    header = ("check", "max abs err", "max rel err", "tolerance", "bias", "result")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
    line = lambda r: "  ".join(f"{v:<{widths[i]}}" if i < 5 else v for i, v in enumerate(r))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths) + ("------",))] + [line(r) for r in rows])
