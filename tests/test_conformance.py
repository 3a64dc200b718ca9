"""The conformance suite: every installed backend passes it, every planted bug fails it."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ALL_BACKENDS, require_backend, require_native_cpu_dtype
from se_multi import cli, conformance, dispatch
from se_multi.backend import Backend
from se_multi.backends.numpy_backend import NumpyBackend

REPO = Path(__file__).resolve().parents[1]
#: dtypes each backend is validated in: float32 everywhere, float64 where the reference's
#: own precision can be matched, and the reduced precisions (whose bias and precision checks
#: must pass honest backends)
EXTRA_DTYPES = {"numpy": ("float64",), "torch": ("float64", "float16", "bfloat16"), "onnxruntime": ("float16",),
                "openvino": ("bfloat16",), "mlx": ("float16", "bfloat16")}
#: backend dtypes that run only where the CPU has the hardware (OpenVINO refuses bf16 elsewhere)
NEEDS_CPU_DTYPE = {("openvino", "bfloat16")}


def test_this_module_runs_on_one_worker(request):
    """The weights below are drawn once only where the module's tests share a process: each
    carries its module's ``xdist_group`` (tests/conftest.py), and under pytest-xdist (the
    README's command: ``--dist loadgroup``) the group is in the test's id, which is what the
    controller schedules by. Neither held on 2026-12-05 (pytest 9.2, and the workers never told)."""
    assert [m.args[0] for m in request.node.iter_markers("xdist_group")] == ["module:test_conformance"]
    workerinput = getattr(request.config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: told how the controller schedules
        assert "loadgroup" in workerinput
        if workerinput["loadgroup"]:
            assert request.node.nodeid.endswith("@module:test_conformance"), request.node.nodeid


@pytest.fixture(scope="module")
def broken():
    """``tests.broken_backends`` imported the way ``--backend tests.broken_backends:X`` imports it."""
    sys.path.insert(0, str(REPO))
    try:
        yield importlib.import_module("tests.broken_backends")
    finally:
        sys.path.remove(str(REPO))


@pytest.fixture(scope="module", autouse=True)
def _weights_shared_by_the_suite_runs():
    """This module's ~30 suite runs (a backend and dtype each, the planted bugs) bind the same
    seeded whole models: drawn once (:func:`se_multi.conformance.sharing_model_weights`)."""
    with conformance.sharing_model_weights():
        yield


def _failures(result: conformance.SuiteResult) -> str:
    return "\n".join(f"{c.name}: rel {c.max_rel} tol {c.tol} {c.error or ''}" for c in result.checks if not c.passed)


# ----------------------------------------------------------------------------- the suite itself
def test_suite_covers_every_primitive_and_fused_op():
    abstract = {name for name, fn in inspect.getmembers(Backend, inspect.isfunction)
                if getattr(fn, "__isabstractmethod__", False)}
    ops = (abstract - {"asarray", "to_numpy"}) | set(Backend.FUSED_OPS)
    missing = ops - conformance.covered_ops()
    assert not missing, f"ops without a conformance check: {sorted(missing)}"


def test_check_names_are_unique():
    names = [c.name for c in conformance.build_checks()]
    assert len(names) == len(set(names)), "duplicate names would draw identical inputs"


def test_tolerance_table_covers_every_builtin_dtype():
    from se_multi.backends.torch_backend import TorchBackend  # importing it does not import torch
    from se_multi.dtypes import COMPUTE_DTYPES

    from se_multi.backends.onnxruntime_backend import OnnxRuntimeBackend
    from se_multi.backends.openvino_backend import OpenVinoBackend

    floating = {d for d, p in conformance.POLICY.items() if not p.models_only}
    assert set(TorchBackend.dtypes) | set(NumpyBackend.dtypes) <= floating == set(COMPUTE_DTYPES)
    # every dtype a built-in whole-graph engine offers has a row (int8: whole models only)
    assert set(OnnxRuntimeBackend.dtypes) | set(OpenVinoBackend.dtypes) <= set(conformance.POLICY)
    assert [d for d, p in conformance.POLICY.items() if p.models_only] == ["int8"]
    assert conformance.TOLERANCES["float64"] < conformance.TOLERANCES["float32"] < conformance.TOLERANCES["float16"]
    # the views are the table's
    assert all(conformance.TOLERANCES[d] == p.op for d, p in conformance.POLICY.items() if d in floating)
    assert all(conformance.MODEL_TOLERANCES[d] == p.model for d, p in conformance.POLICY.items())


def test_policy_bounds_follow_the_unit_roundoff():
    """The bias and precision bounds are multiples of u, computed from ml_dtypes/NumPy's own limits."""
    # u = 2^-(p) for p significand bits (implicit bit included): the formats' definitions
    for dtype, bits in (("float64", 53), ("float32", 24), ("float16", 11), ("bfloat16", 8)):
        row = conformance.POLICY[dtype]
        assert row.u == 2.0 ** -bits, dtype
        assert row.model_bias == conformance.MODEL_BIAS_U * 2.0 ** -bits
        assert row.elementwise_bias(400) == (None if dtype in ("float32", "float64")
                                             else conformance.ELEMENTWISE_BIAS_Z * 2.0 ** -bits / 20)
        assert row.precision_floor == (None if dtype == "float64" else conformance.PRECISION_FLOOR_U * 2.0 ** -bits)
    # a x1.01 output at bfloat16, and a float32 computation claimed as bfloat16, are outside the bounds
    assert conformance.POLICY["bfloat16"].model_bias < 0.01 / 2
    assert conformance.POLICY["bfloat16"].precision_floor > 1000 * conformance.POLICY["float32"].u



def test_bfloat16_rounding_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(0, 10, 10_000)
    x[:3] = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8)]  # ties: round to even
    want = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16).double().numpy()
    np.testing.assert_array_equal(conformance.round_to_dtype(x, "bfloat16"), want)


def test_non_finite_output_fails():
    check = conformance.Check("nan[1]", "relu", lambda t: (np.array([np.nan, 1.0]), np.array([0.0, 1.0])))
    result = conformance.run_check(check, NumpyBackend("float64"))
    assert not result.passed and result.error == "non-finite values in the output"


def test_an_op_that_raises_is_a_failed_check_not_a_crash():
    class RaisingConv(NumpyBackend):
        def conv2d(self, *args, **kwargs):
            raise RuntimeError("kernel\nlaunch failed")

    # the primitives (conv2d among them) and one whole model, which calls conv2d too: the whole
    # suite proved no more and took 6 s
    checks = conformance.primitive_checks() + [conformance.model_check("mobilenetv3_small_100", (1, 3, 33, 41))]
    result = conformance.run_suite(RaisingConv("float32"), checks=checks)
    conv = [c for c in result.checks if c.op == "conv2d"]
    assert conv and all(not c.passed and c.error == "RuntimeError: kernel launch failed" for c in conv)
    assert result.failed_ops[0] == "conv2d"
    assert any(c.passed for c in result.checks), "the rest of the suite still ran"
    (model,) = [c for c in result.checks if c.level == "model"]
    assert not model.passed and model.error == "RuntimeError: kernel launch failed"


# ----------------------------------------------------------------------------- every backend passes
#: the built-in backends; a third-party backend installed here (CI installs the "Writing a backend"
#: example, ``jax``) is validated by its own test through the command its users run
#: (tests/test_example_jax.py, every dtype it offers): running the same suite on it here too ran
#: JAX's float32 suite twice (82 s of a full run, 2026-12-02)
_BACKEND_DTYPES = [(name, dtype) for name in ALL_BACKENDS for dtype in ("float32", *EXTRA_DTYPES.get(name, ()))]


@pytest.mark.parametrize("name,dtype", _BACKEND_DTYPES, ids=[f"{n}-{d}" for n, d in _BACKEND_DTYPES])
def test_backend_conforms(name, dtype):
    require_backend(name, dtype)
    if (name, dtype) in NEEDS_CPU_DTYPE:
        require_native_cpu_dtype(dtype)
    result = conformance.run_suite(name, dtype=dtype)
    assert result.passed, f"{name} {dtype} failed: {result.failed_ops}\n{_failures(result)}"
    # every check, less whole models checked at other dtypes only (register_model(conformance_dtypes=...))
    run_here = [c for c in conformance.build_checks() if not c.dtypes or dtype in c.dtypes]
    assert len([c for c in result.checks if c.level != "suite"]) == len(run_here)
    assert [c.op for c in result.checks if c.level == "suite"] == (
        ["whole-model bias"] + ([] if dtype == "float64" else ["precision"]))


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_torch_cuda_conforms(dtype):
    """On a CUDA device: float32 must be IEEE float32 (PyTorch's default TF32 convolutions err by
    ~3e-4), and float64 activations exact (PyTorch's CUDA hard-sigmoid multiplies by a float 1/6)."""
    require_backend("torch")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    result = conformance.run_suite("torch", dtype=dtype, device="cuda")
    assert result.passed, f"torch cuda {dtype} failed: {result.failed_ops}\n{_failures(result)}"


# ----------------------------------------------------------------------------- planted bugs are caught
_PLANTED = [  # test_every_broken_backend_is_tested keeps this list complete
    "SigmoidGateAsHardSigmoid", "GlobalPoolDividesByHWPlusOne", "SqueezeKernelHWTransposed",
    "ExciteWeightsReshaped", "MaxPoolIgnoresCeilMode", "HardSigmoidUnclipped", "ConvPaddingFlipped",
    "BatchNormIgnoresEps", "RunModelScalesOutput", "GroupedConvDropsGroupOffsetAt32",
    "ClaimsBfloat16ComputesFloat32", "RunModelScalesOutputBfloat16", "SigmoidOffBfloat16",
]
_BF16_PLANTED = ("ClaimsBfloat16ComputesFloat32", "RunModelScalesOutputBfloat16", "SigmoidOffBfloat16")
_PLANTED_RUNS = [(c, d) for c in _PLANTED for d in (("bfloat16",) if c in _BF16_PLANTED else ("float32", "float64"))]


@pytest.mark.parametrize("cls_name,dtype", _PLANTED_RUNS, ids=[f"{c}-{d}" for c, d in _PLANTED_RUNS])
def test_planted_bug_fails_and_names_its_op(broken, cls_name, dtype):
    assert broken.DTYPES.get(cls_name, ("float32", "float64")) == (("bfloat16",) if cls_name in _BF16_PLANTED
                                                                    else ("float32", "float64"))
    result = conformance.run_suite(getattr(broken, cls_name)(dtype), fail_fast=True)
    assert not result.passed
    # the suite runs primitives, then fused ops, then blocks, models, and the whole-model verdicts:
    # the first failing op is the bug's
    assert result.failed_ops[0] == broken.EXPECTED_FAILED_OP[cls_name], result.failed_ops


def test_honest_bfloat16_backend_passes(broken):
    """The base of the bfloat16 bugs computes honestly in bfloat16: it passes, verdicts included
    (so each bug above fails for its bug alone)."""
    result = conformance.run_suite(broken.NumpyBfloat16("bfloat16"))
    assert result.passed, _failures(result)
    assert [c.op for c in result.checks if c.level == "suite"] == ["whole-model bias", "precision"]


def test_every_broken_backend_is_tested(broken):
    classes = {name for name, obj in vars(broken).items()
               if isinstance(obj, type) and issubclass(obj, NumpyBackend) and obj is not NumpyBackend}
    assert classes == set(broken.EXPECTED_FAILED_OP) | set(broken.HONEST)
    assert set(_PLANTED) == set(broken.EXPECTED_FAILED_OP)


def test_groups_32_bug_is_named_conv2d_before_any_model(broken):
    """Before the grouped cases at groups 32 and 64, only the SE-ResNeXt model check saw it."""
    result = conformance.run_suite(broken.GroupedConvDropsGroupOffsetAt32("float32"),
                                   checks=conformance.primitive_checks())
    failing = [c.name for c in result.checks if not c.passed]
    assert failing and all(" g32" in name for name in failing) and result.failed_ops == ["conv2d"]


def _whole_models_at(dtype: str) -> list[str]:
    """The models validate checks whole at ``dtype`` (a family may limit its check's dtypes)."""
    return [c.op.removeprefix("model ") for c in conformance.build_checks()
            if c.level == "model" and (not c.dtypes or dtype in c.dtypes)]


def test_validate_command_names_precision_and_bias(capsys):
    rc = cli.main(["validate", "--backend", "tests.broken_backends:ClaimsBfloat16ComputesFloat32",
                   "--dtype", "bfloat16"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "does not compute in bfloat16: whole-model errors are float32-sized (" in out
    assert all(f"{name} " in out.split("float32-sized (")[1] for name in _whole_models_at("bfloat16"))
    assert out.strip().splitlines()[-1].endswith("failing ops and models: precision")
    rc = cli.main(["validate", "--backend", "tests.broken_backends:RunModelScalesOutputBfloat16",
                   "--dtype", "bfloat16"])
    out = capsys.readouterr().out
    assert rc == 1 and "whole-model outputs are biased: mean signed rel err +9." in out
    assert out.strip().splitlines()[-1].endswith("failing ops and models: whole-model bias")


def test_validate_command_fails_naming_the_op(tmp_path):
    """The real command line, in a fresh interpreter, on a backend named as ``module:Class``."""
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "se_multi", "validate", "--backend", "tests.broken_backends:SqueezeKernelHWTransposed",
         "--json", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("FAILED") and "failing ops and models: squeeze," in last
    assert "validate:" in proc.stderr  # progress
    report = json.loads(out.read_text())
    assert report["passed"] is False and report["failed_ops"][0] == "squeeze"
    failing = [c for c in report["checks"] if not c["passed"]]
    assert failing and all(c["max_rel"] is None or c["max_rel"] > c["tol"] for c in failing)


def test_validate_ceil_mode_bug_reports_shape(broken, capsys):
    rc = cli.main(["validate", "--backend", "tests.broken_backends:MaxPoolIgnoresCeilMode"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "failing ops and models: max_pool2d" in out
    assert "FAIL  output shape (1, 4, 3, 4), reference (1, 4, 4, 5)" in out


def test_validate_passes_with_table_and_json(tmp_path, capsys):
    out = tmp_path / "numpy.json"
    rc = cli.main(["validate", "--backend", "numpy", "--dtype", "float64", "--json", str(out)])
    text = capsys.readouterr()
    assert rc == 0
    lines = text.out.splitlines()
    assert lines[0].split()[:4] == ["check", "max", "abs", "err"]
    # header, rule, checks, the whole-model bias verdict (float64 has no precision floor), summary
    assert len(lines) == len(conformance.build_checks()) + 4
    assert lines[-1].startswith("OK: all")
    report = json.loads(out.read_text())
    assert report["passed"] and report["dtype"] == "float64" and report["tolerance"] == 1e-12
    assert {c["name"] for c in report["checks"]} == {c.name for c in conformance.build_checks()} | {
        f"bias[mean of {len(_whole_models_at('float64'))} whole models]"}
    assert all(c["max_rel"] <= 1e-12 for c in report["checks"] if c["level"] != "suite")


def test_validate_unknown_backend_lists_known(capsys):
    assert cli.main(["validate", "--backend", "nosuch"]) == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert "unknown backend 'nosuch'" in err and "numpy" in err and "torch" in err


def test_validate_dtype_the_backend_lacks(capsys):
    assert cli.main(["validate", "--backend", "numpy", "--dtype", "float16"]) == cli.EXIT_INPUT
    assert "supports dtype float32, float64; got 'float16'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- generated shapes
def _torch_or_skip():
    require_backend("torch")
    return dispatch.get_backend("torch", "float32")


@st.composite
def conv_configs(draw):
    groups_kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    cg = 1 if groups_kind == "depthwise" else draw(st.integers(1, 4))
    groups = 1 if groups_kind == "dense" else draw(st.integers(2, 4))
    og = draw(st.integers(1, 2)) if groups_kind == "depthwise" else draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(4))
    # an input at least as large as the dilated kernel after padding
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - padding[0] - padding[1]), 11))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - padding[2] - padding[3]), 11))
    n = draw(st.integers(1, 2))
    return n, cg * groups, h, w, og * groups, (kh, kw), stride, padding, dilation, groups, draw(st.booleans())


@st.composite
def se_configs(draw):
    c = draw(st.integers(1, 40))
    return (draw(st.integers(1, 3)), c, draw(st.integers(1, 9)), draw(st.integers(1, 9)),
            draw(st.integers(1, c)), draw(st.booleans()), "relu", draw(st.sampled_from(["sigmoid", "hard_sigmoid"])),
            draw(st.booleans()))


@settings(max_examples=25, deadline=None)
@given(conv_configs())
def test_generated_conv2d_numpy_float32(config):
    result = conformance.run_check(conformance.conv2d_check(*config), NumpyBackend("float32"))
    assert result.passed, result


@settings(max_examples=25, deadline=None)
@given(conv_configs())
def test_generated_conv2d_torch(config):
    result = conformance.run_check(conformance.conv2d_check(*config), _torch_or_skip())
    assert result.passed, result


@settings(max_examples=25, deadline=None)
@given(se_configs())
def test_generated_se_block_torch(config):
    result = conformance.run_check(conformance.se_block_check(*config), _torch_or_skip())
    assert result.passed, result


def test_shared_model_weights_are_drawn_once_read_only_and_dropped_after_the_block(monkeypatch):
    """Inside a block, a model's seeded weights are drawn once and shared read-only, and a run gives
    the same result as one that draws its own; after the outermost block, each run draws again."""
    import se_multi.init

    draws = []
    real = se_multi.init.recipe_state
    monkeypatch.setattr(se_multi.init, "recipe_state", lambda *a, **k: draws.append(1) or real(*a, **k))
    monkeypatch.setattr(conformance, "_shared_weights", None)  # outside this module's block
    check = conformance.model_check("quicknat", (2, 1, 16, 24))
    alone = conformance.run_suite("numpy", checks=[check]).checks[0]
    assert len(draws) == 1
    with conformance.sharing_model_weights():
        with conformance.sharing_model_weights():  # a nested block shares the outer one's
            shared = [conformance.run_suite("numpy", dtype=d, checks=[check]).checks[0] for d in ("float32", "float64")]
        assert len(draws) == 2 and len(conformance._shared_weights) == 1
        (_, state), = conformance._shared_weights.values()
        assert not any(v.flags.writeable for v in state.values())
    assert conformance._shared_weights is None
    conformance.run_suite("numpy", checks=[check])
    assert len(draws) == 3
    assert shared[0].passed and (shared[0].max_abs, shared[0].max_rel, shared[0].bias) == (
        alone.max_abs, alone.max_rel, alone.bias)


def test_whole_model_references_are_remembered_read_only_and_bounded(monkeypatch):
    """A whole model's float64 reference is computed once per input and dtype in a process, shared
    read-only by later checks, and the cache keeps at most REFERENCE_CACHE_SIZE outputs."""
    from collections import OrderedDict

    monkeypatch.setattr(conformance, "REFERENCE_CACHE_SIZE", 1)
    monkeypatch.setattr(conformance, "_reference_outputs", OrderedDict())
    check = conformance.model_check("quicknat", (2, 1, 16, 24))
    for dtype in ("float32", "float32", "float64"):
        assert conformance.run_suite("numpy", dtype=dtype, checks=[check]).checks[0].passed
        (key, want), = conformance._reference_outputs.items()
        assert key[0] == "quicknat" and not want.flags.writeable
