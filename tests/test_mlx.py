"""MLX-specific checks: NHWC layout, the CPU conv formulations, half precision, devices,
lazy evaluation, ``mx.compile``. Every expected value comes from the NumPy reference
(float64); the op-by-op conformance suite covers the rest for every backend."""

import os
import subprocess
import sys

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from se_multi import nn  # noqa: E402
from se_multi import reference as ref  # noqa: E402
from se_multi.backend import BackendUnavailable  # noqa: E402
from se_multi.backends.mlx_backend import MlxBackend  # noqa: E402
from se_multi.backends.numpy_backend import NumpyBackend  # noqa: E402
from se_multi.init import recipe_input, recipe_state  # noqa: E402

CONV_IMPLS = ("im2col", "conv2d")


def rel(ours, expected) -> float:
    return float(np.abs(np.asarray(ours, np.float64) - expected).max() / np.abs(expected).max())


def run_op(ops, op, x, *args):
    """Call a feature-map op the way a model does: public NCHW in, NCHW NumPy out."""
    return ops.to_numpy(ops.output(getattr(ops, op)(ops.input(x), *args)))


# ------------------------------------------------------------------------- a small SE model
class SEBottleneck(nn.Module):
    """An SE-ResNet bottleneck (1x1, 3x3/stride, 1x1, SE, projection) from se_multi.nn."""

    def __init__(self, cin, mid, cout, stride=1):
        super().__init__()
        self.conv1 = nn.ConvNormAct(cin, mid, 1, conv="conv1", bn="bn1")
        self.conv2 = nn.ConvNormAct(mid, mid, 3, stride=stride, conv="conv2", bn="bn2")
        self.conv3 = nn.ConvNormAct(mid, cout, 1, act=None, conv="conv3", bn="bn3")
        self.se = nn.SqueezeExcite(cout, ref.reduced_channels(cout, 4))
        self.downsample = nn.ConvNormAct(cin, cout, 1, stride=stride, act=None, conv="0", bn="1")

    def branch(self, ops, x):
        return self.conv3(ops, self.conv2(ops, self.conv1(ops, x)))

    def forward(self, ops, x):
        return nn.residual_unit(ops, x, self.branch, self.downsample, self.se)


def bound_block(ops, cin=8, mid=8, cout=16, stride=2):
    block = SEBottleneck(cin, mid, cout, stride)
    specs = block.param_specs()
    return block.bind(recipe_state((k, s.shape, s.kind) for k, s in specs.items()), ops)


def block_reference(x):
    ops = NumpyBackend("float64")
    return ops.output(bound_block(ops)(ops, ops.input(x)))


# ------------------------------------------------------------------------- import and layout
def test_importing_the_backend_module_does_not_import_mlx():
    code = (
        "import sys; from se_multi.backends.mlx_backend import MlxBackend;"
        "ok, why = MlxBackend.availability();"
        "print(ok, any(m == 'mlx' or m.startswith('mlx.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"], out.stdout + out.stderr


def test_input_is_nhwc_and_output_round_trips_to_nchw():
    ops = MlxBackend()
    x = recipe_input((2, 3, 5, 7))
    internal = ops.input(x)
    assert tuple(internal.shape) == (2, 5, 7, 3)
    np.testing.assert_array_equal(np.array(internal), x.transpose(0, 2, 3, 1))
    assert ops.shape(internal) == (2, 3, 5, 7)
    out = ops.output(internal)
    assert isinstance(out, mx.array)
    np.testing.assert_array_equal(ops.to_numpy(out), x)


def test_logits_pass_through_output_unchanged():
    ops = MlxBackend()
    z = recipe_input((2, 10))
    np.testing.assert_array_equal(ops.to_numpy(ops.output(ops.asarray(z))), z)


@pytest.mark.parametrize("conv, layout", [("im2col", (2, 3, 1, 0)), ("conv2d", (0, 2, 3, 1))])
def test_param_rearranges_weights_once_at_load(conv, layout):
    ops = MlxBackend(conv=conv)
    w = recipe_input((4, 3, 2, 5))
    np.testing.assert_array_equal(ops.to_numpy(ops.param(w, "conv")), w.transpose(layout))
    lin = recipe_input((6, 4))
    np.testing.assert_array_equal(ops.to_numpy(ops.param(lin, "linear")), lin.T)
    with pytest.raises(ValueError, match="param kind"):
        ops.param(lin, "matrix")


def test_auto_conv_formulation_is_im2col_on_cpu_and_conv2d_on_gpu():
    assert MlxBackend(device="cpu").conv_impl == "im2col"
    if mx.is_available(mx.gpu):
        assert MlxBackend(device="gpu").conv_impl == "conv2d"
    with pytest.raises(ValueError, match="conv must be one of"):
        MlxBackend(conv="winograd")


# ------------------------------------------------------------------------- the conv formulations
CONV_CASES = [
    # cin, cout, kernel, stride, padding (t, b, l, r), dilation, groups
    (5, 7, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (5, 7, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (5, 7, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    (3, 8, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),
    (4, 6, (3, 2), (2, 1), (0, 1, 2, 0), (2, 1), 1),  # asymmetric everything
    (6, 6, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),  # dilated
    (8, 8, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 8),  # depthwise, strided
    (8, 8, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 8),  # depthwise 5x5
    (8, 8, (3, 3), (1, 1), (0, 1, 1, 0), (1, 1), 8),  # depthwise, TF-"same" style padding
    (6, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),  # grouped
    (4, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),  # depthwise with channel multiplier 2
]


@pytest.mark.parametrize("conv", CONV_IMPLS)
@pytest.mark.parametrize("cin, cout, kernel, stride, padding, dilation, groups", CONV_CASES)
def test_conv_formulation_matches_reference(conv, cin, cout, kernel, stride, padding, dilation, groups):
    rng = np.random.default_rng(cin * 100 + cout + groups)
    x = rng.standard_normal((2, cin, 11, 10))
    w = rng.standard_normal((cout, cin // groups, *kernel))
    b = rng.standard_normal(cout)
    expected = ref.conv2d(x, w, b, stride, padding, dilation, groups)
    ops = MlxBackend(conv=conv)
    got = run_op(ops, "conv2d", x, ops.param(w, "conv"), ops.param(b, "vector"), stride, padding, dilation, groups)
    assert got.shape == expected.shape
    assert rel(got, expected) < 1e-5


def test_conv_rejects_channel_mismatch():
    ops = MlxBackend()
    w = ops.param(np.ones((4, 3, 3, 3)), "conv")
    with pytest.raises(ValueError, match="expects 3"):
        ops.conv2d(ops.input(np.ones((1, 5, 8, 8))), w)


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", [
    ((3, 3), (2, 2), (1, 1), False), ((3, 3), (2, 2), (0, 0), True), ((2, 3), (2, 2), (1, 1), True),
])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_pooling_follows_pytorch_rules(kernel, stride, padding, ceil_mode, count_include_pad):
    x = np.random.default_rng(1).standard_normal((2, 3, 10, 9))
    ops = MlxBackend()
    expected = ref.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad)
    got = run_op(ops, "avg_pool2d", x, kernel, stride, padding, ceil_mode, count_include_pad)
    assert got.shape == expected.shape and rel(got, expected) < 1e-6
    expected = ref.max_pool2d(x, kernel, stride, padding, ceil_mode)
    got = run_op(ops, "max_pool2d", x, kernel, stride, padding, ceil_mode)
    assert got.shape == expected.shape and rel(got, expected) < 1e-6


def test_nhwc_channel_ops_match_reference():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 2, 4, 5))
    s, q = rng.standard_normal((2, 3)), rng.standard_normal((2, 1, 4, 5))
    ops = MlxBackend()
    xi = ops.input(x)
    checks = {
        "mul_channel": (ops.mul_channel(xi, ops.asarray(s)), ref.mul_channel(x, s)),
        "mul_pixel": (ops.mul_pixel(xi, ops.input(q)), ref.mul_pixel(x, q)),
        "upsample": (ops.upsample_nearest2x(xi), ref.upsample_nearest2x(x)),
        "concat": (ops.concat_channels([xi, ops.input(y)]), ref.concat_channels([x, y])),
    }
    for name, (got, expected) in checks.items():
        got = ops.to_numpy(ops.output(got))
        assert got.shape == expected.shape and rel(got, expected) < 1e-6, name
    got = ops.to_numpy(ops.global_avg_pool(xi))
    assert rel(got, ref.global_avg_pool(x)) < 1e-6


# ------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float16", 1e-2), ("bfloat16", 5e-2)])
def test_se_block_in_each_dtype_is_close_to_float64_reference(dtype, tol):
    x = recipe_input((2, 8, 12, 12))
    ops = MlxBackend(dtype)
    out = ops.output(bound_block(ops)(ops, ops.input(x)))
    assert out.dtype == getattr(mx, dtype)
    got = ops.to_numpy(out)
    assert got.dtype == (np.float16 if dtype == "float16" else np.float32)  # bfloat16 comes back as float32
    assert rel(got, block_reference(x)) < tol


def test_unsupported_dtype_is_rejected():
    with pytest.raises(ValueError, match="float32, float16, bfloat16"):
        MlxBackend("float64")


# ------------------------------------------------------------------------- devices
def test_cpu_device_is_accepted():
    ops = MlxBackend(device="cpu")
    assert "cpu" in repr(ops)


def test_gpu_without_a_gpu_backend_is_a_clear_error():
    if mx.is_available(mx.gpu):
        pytest.skip("this mlx build has a GPU")
    with pytest.raises(BackendUnavailable, match="device 'gpu' is not available.*device='cpu'"):
        MlxBackend(device="gpu")


def test_unknown_device_names_are_rejected():
    with pytest.raises(ValueError, match="got device='cuda'"):
        MlxBackend(device="cuda")


# ------------------------------------------------------------------------- lazy evaluation
class EvalSpy:
    """Stands in for ``mlx.core`` inside a backend and records what was ``eval``-ed."""

    def __init__(self):
        self.evaluated = []

    def __getattr__(self, name):
        return getattr(mx, name)

    def eval(self, *arrays):
        self.evaluated.extend(arrays)
        mx.eval(*arrays)


def test_output_and_synchronize_materialise_the_lazy_graph():
    ops = MlxBackend()
    block = bound_block(ops)
    ops._mx = spy = EvalSpy()
    y = block(ops, ops.input(recipe_input((1, 8, 8, 8))))
    assert spy.evaluated == []  # building the graph computes nothing
    out = ops.output(y)
    assert isinstance(out, mx.array) and any(a is out for a in spy.evaluated)
    synced = ops.synchronize(y)
    assert synced is y and any(a is y for a in spy.evaluated)


# ------------------------------------------------------------------------- mx.compile
def test_compile_is_on_by_default_and_can_be_turned_off(monkeypatch):
    monkeypatch.delenv("SE_MULTI_MLX_COMPILE", raising=False)
    fn = lambda x: x  # noqa: E731
    assert MlxBackend().compile is True
    assert MlxBackend(compile=False).compile_forward(fn) is fn
    monkeypatch.setenv("SE_MULTI_MLX_COMPILE", "0")
    assert MlxBackend().compile is False
    assert MlxBackend().compile_forward(fn) is fn


def test_compiled_forward_matches_reference():
    ops = MlxBackend(compile=True)
    block = bound_block(ops)
    forward = ops.compile_forward(lambda x: block(ops, x))
    x = recipe_input((2, 8, 12, 12))
    for _ in range(2):  # the second call runs the cached compiled graph
        assert rel(ops.to_numpy(ops.output(forward(ops.input(x)))), block_reference(x)) < 1e-5


# ------------------------------------------------------------------------- whole models
@pytest.mark.parametrize("name", ["seresnet50", "se_mobilenetv1_100"])
def test_model_on_mlx_matches_numpy_float64(name):
    from se_multi.models import create_model

    x = recipe_input((1, 3, 64, 64))
    got = create_model(name, backend="mlx").predict_numpy(x)
    expected = create_model(name, backend="numpy", dtype="float64").predict_numpy(x)
    assert got.shape == expected.shape
    assert rel(got, expected) < 1e-4


def test_compiled_backend_runs_the_whole_model_through_mx_compile(monkeypatch):
    from se_multi.models import create_model

    ops = MlxBackend(compile=True)
    calls = []
    real_compile = ops._mx.compile
    monkeypatch.setattr(ops._mx, "compile", lambda fn, **kw: calls.append(fn) or real_compile(fn, **kw))
    model = create_model("se_mobilenetv1_100", backend=ops)
    x = recipe_input((1, 3, 32, 32))
    expected = create_model("se_mobilenetv1_100", backend="numpy", dtype="float64").predict_numpy(x)
    for _ in range(2):  # the second call reuses the compiled forward
        assert rel(model.predict_numpy(x), expected) < 1e-4
    assert len(calls) == 1


#: a child process: a scSE model compiled on MLX's CPU at one input size and seed, then another
#: seed's weights at another size; prints how many kernels MLX built (its cache: $TMPDIR/mlx)
_KERNELS_BUILT = """
import os
from pathlib import Path
import numpy as np
from se_multi.models import create_model
from se_multi.backends.mlx_backend import MlxBackend
def built():
    return len(list(Path(os.environ["TMPDIR"], "mlx").rglob("*.so")))
counts = []
for seed, (h, w) in ((0, (16, 24)), (1, (24, 32))):
    model = create_model("sdnet", backend=MlxBackend(compile=True), seed=seed, num_filters=16, se="scse")
    model.predict_numpy(np.zeros((1, 1, h, w), np.float32))
    counts.append(built())
print(*counts)
"""


def test_compiled_kernels_depend_on_the_graph_not_on_weights_or_sizes(tmp_path):
    """MLX compiles each fused kernel with g++ on the CPU (~0.5 s) and writes a captured scalar
    into its source: sSE's one-entry bias and global pooling's 1/(H*W) as scalars made a kernel
    per weight value and per feature-map size. Passed as arrays, they are read at run time: a
    second seed's weights at a second input size build nothing new."""
    if mx.default_device().type != mx.DeviceType.cpu:
        pytest.skip("MLX's default device is not its CPU: no C++ kernels are built")
    proc = subprocess.run([sys.executable, "-c", _KERNELS_BUILT], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = map(int, proc.stdout.split())
    assert first > 0, "the compiled forward built no kernel: this test no longer sees MLX's cache"
    assert second == first, f"{second - first} kernels built again for new weights and a new size"
