"""CuPy backend checks that need no GPU, and the GPU checks a CUDA box runs.

Without a GPU (CI): every kernel source compiles with NVRTC for sm_80 and sm_90
(and a planted error is reported), the availability rules (not installed /
installed without a device / driver too old), and the host-side maths the kernels
rely on (shapes, launch geometry, argument packing, the im2col and pooling index
formulas emulated in NumPy against the reference). With a CUDA device the
``gpu`` tests run the kernels against the NumPy reference and the composed ops.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import se_multi
from se_multi import reference as ref
from se_multi import shapes
from se_multi.backend import ACTIVATIONS, Backend, BackendUnavailable
from se_multi.backends import cupy_backend as cb
from se_multi.backends import cupy_kernels as K
from se_multi.conformance import tolerance_for

HAVE_CUPY = importlib.util.find_spec("cupy") is not None
CUPY_OK, CUPY_REASON = cb.CupyBackend.availability()
ARCHS = ("sm_80", "sm_90")

needs_cupy = pytest.mark.skipif(not HAVE_CUPY, reason="cupy not installed (pip install 'se-multi[cupy]')")
gpu = pytest.mark.skipif(not CUPY_OK, reason=f"no usable CUDA device for cupy: {CUPY_REASON}")


@pytest.fixture(scope="module")
def nvrtc_version():
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="cupy not installed")
    try:
        return nvrtc.getVersion()
    except Exception as exc:  # libnvrtc not found: the nvidia-cuda-nvrtc wheel is missing
        pytest.skip(f"NVRTC not loadable ({exc}); pip install nvidia-cuda-nvrtc")


# =========================================================================== (a) NVRTC compile
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kernel", sorted(K.KERNELS))
def test_kernel_compiles_with_nvrtc_for_both_dtypes(nvrtc_version, kernel, arch):
    names = K.name_expressions(names=[kernel])
    out = K.compile_with_nvrtc(K.kernel_source(kernel), arch, names)
    assert out.binary, f"{kernel}: empty CUBIN for {arch}"
    assert set(out.lowered_names) == set(names)
    for expr, mangled in out.lowered_names.items():
        assert kernel in mangled and mangled.startswith("_Z"), f"{expr} lowered to {mangled!r}"


@pytest.mark.parametrize("arch", ("compute_80", "compute_90"))
def test_whole_module_as_the_backend_loads_it_compiles_to_ptx(nvrtc_version, arch):
    out = K.compile_with_nvrtc(K.SOURCE, arch, K.name_expressions())
    ptx = out.binary.decode()
    assert f".target sm_{arch[-2:]}" in ptx
    for expr, mangled in out.lowered_names.items():
        assert f".entry {mangled}(" in ptx, f"{expr} ({mangled}) missing from the PTX"
    assert len(out.lowered_names) == 2 * len(K.KERNELS)


def test_sources_are_self_contained_translation_units():
    # no #include: cuda_fp16.h etc. ship with the toolkit, not the NVRTC wheel
    assert "#include" not in K.SOURCE
    for name in K.KERNELS:
        assert K.kernel_source(name).startswith(K.PRELUDE)


# =========================================================================== (b) the check can fail
def test_planted_syntax_error_is_reported(nvrtc_version):
    broken = K.kernel_source("se_scale").replace("store(out, i, load(x, i)", "store(out, i load(x, i)")
    assert broken != K.kernel_source("se_scale")
    with pytest.raises(K.KernelCompileError, match=r"sm_80.*\n(.|\n)*error"):
        K.compile_with_nvrtc(broken, "sm_80", K.name_expressions(names=["se_scale"]))


def test_instantiating_for_an_unsupported_type_is_reported(nvrtc_version):
    # there is no load(const double*): a double instantiation must fail, not pass silently
    with pytest.raises(K.KernelCompileError, match="load"):
        K.compile_with_nvrtc(K.kernel_source("se_squeeze"), "sm_90", ["se_squeeze<double>"])


# =========================================================================== (c, d) availability
NO_DEVICE_HERE = HAVE_CUPY and cb.cuda_driver_probe()[0] == 0


@pytest.mark.skipif(not NO_DEVICE_HERE, reason="needs cupy installed on a machine without a CUDA device")
def test_installed_without_device_reports_it_and_imports_no_cupy():
    code = (
        "import sys, se_multi;"
        "from se_multi.dispatch import get_backend;"
        "status = se_multi.backend_status()['cupy']; avail = se_multi.available_backends();"
        "loaded = 'cupy' in sys.modules\n"
        "try:\n get_backend('cupy'); err = 'no error'\n"
        "except se_multi.backend.BackendUnavailable as e:\n err = str(e)\n"
        "print(repr((status, 'cupy' in avail, loaded, err)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    status, listed, loaded, err = eval(out.stdout.strip())
    assert status == (False, "installed, no CUDA device")
    assert not listed and not loaded
    assert err == "backend 'cupy' is unavailable: installed, no CUDA device"


@pytest.mark.skipif(not NO_DEVICE_HERE, reason="needs cupy installed on a machine without a CUDA device")
def test_get_backend_raises_backend_unavailable_in_process():
    from se_multi.dispatch import get_backend

    with pytest.raises(BackendUnavailable, match="installed, no CUDA device"):
        get_backend("cupy")


def test_not_installed_names_the_extra():
    # sys.modules[name] = None makes find_spec return None: cupy looks uninstalled
    code = (
        "import sys; sys.modules['cupy'] = None; import se_multi;"
        "from se_multi.dispatch import get_backend\n"
        "try:\n get_backend('cupy'); err = 'no error'\n"
        "except se_multi.backend.BackendUnavailable as e:\n err = str(e)\n"
        "print(repr((se_multi.backend_status()['cupy'], 'cupy' in se_multi.available_backends(), err)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    status, listed, err = eval(out.stdout.strip())
    assert status == (False, "not installed: pip install 'se-multi[cupy]'")
    assert not listed and err.endswith("not installed: pip install 'se-multi[cupy]'")


@pytest.mark.parametrize("probe, major, expected", [
    ((0, 0), 13, (False, "installed, no CUDA device")),
    ((1, 12040), 13, (False, "installed for CUDA 13, but the CUDA driver supports only 12.4: "
                             "update the driver or install cupy-cuda12x")),
    ((1, 13000), 13, (True, "available (1 CUDA device)")),
    ((2, 13020), None, (True, "available (2 CUDA devices)")),
])
def test_availability_rules(monkeypatch, probe, major, expected):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "cupy" else None)
    monkeypatch.setattr(cb, "cuda_driver_probe", lambda: probe)
    monkeypatch.setattr(cb, "cupy_cuda_major", lambda: major)
    assert cb.CupyBackend.availability() == expected


def test_driver_probe_without_a_driver_library(monkeypatch):
    monkeypatch.setattr(cb, "_driver_library_names", lambda: ["/nonexistent/libcuda.so.1"])
    assert cb.cuda_driver_probe.__wrapped__() == (0, 0)


@needs_cupy
def test_installed_wheel_cuda_major_is_read_from_its_name():
    assert cb.cupy_cuda_major() in (11, 12, 13)


def test_unsupported_dtype_is_refused_before_cupy_is_needed():
    with pytest.raises(ValueError, match="supports dtype float32, float16; got 'float64'"):
        cb.CupyBackend(dtype="float64")


# =========================================================================== (e) host-side logic
def test_dtype_selection():
    assert K.ctype("float32") == "float" and K.ctype(np.float16) == "half_t"
    assert K.name_expression("se_excite", "float16") == "se_excite<half_t>"
    with pytest.raises(ValueError, match="support dtype float32, float16; got 'float64'"):
        K.ctype("float64")
    assert cb.CupyBackend.dtypes == ("float32", "float16")


def test_activation_codes_match_the_c_switch():
    # the C switch labels each case with its activation's name: the two tables must agree
    cases = {int(code): name for code, name in re.findall(r"case (\d+): .*// (\w+)", K.PRELUDE)}
    assert cases == {code: name for name, code in K.ACT_CODES.items() if name}
    assert set(cases.values()) == set(ACTIVATIONS) and K.ACT_CODES[None] == 0
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        K.act_code("gelu")


@pytest.mark.parametrize("n", [0, 1, 31, 256, 257, 10**6, 256 * K.MAX_BLOCKS + 1])
def test_launch_config_covers_every_element(n):
    (grid,), (block,) = K.launch_config(n)
    assert block % 32 == 0 and 1 <= grid <= K.MAX_BLOCKS
    # a grid-stride loop visits every index below n exactly once
    assert grid * block >= n or grid == K.MAX_BLOCKS
    if n <= 256 * K.MAX_BLOCKS:
        assert (grid - 1) * block < max(n, 1)  # no fully idle block


def test_launch_config_rejects_bad_block_sizes():
    for threads in (0, 48, 2048):
        with pytest.raises(ValueError, match="multiple of 32"):
            K.launch_config(10, threads)


@pytest.mark.parametrize("length, threads", [(1, 32), (49, 64), (64, 64), (65, 128), (196, 256), (3136, 256)])
def test_reduction_threads(length, threads):
    assert K.reduction_threads(length) == threads


def test_squeeze_and_excite_geometry():
    assert K.squeeze_config(32 * 2048, 49) == ((65536,), (64,))
    grid, block, shared = K.excite_config(32, 2048, 128)
    assert grid == (32,) and block[0] % 32 == 0 and shared == 4 * (2048 + 128)
    with pytest.raises(ValueError, match="shared-memory"):
        K.excite_config(1, 12000, 1000)


CONV_CASES = [  # x shape, w shape, stride, padding (t, b, l, r), dilation, groups
    ((2, 3, 9, 7), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((1, 4, 11, 8), (6, 4, 3, 3), (2, 2), (1, 0, 2, 1), (1, 1), 1),
    ((2, 3, 17, 15), (5, 3, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),
    ((1, 4, 12, 10), (4, 2, 3, 3), (1, 2), (2, 2, 2, 2), (2, 2), 2),
    ((2, 8, 6, 5), (8, 1, 3, 3), (2, 1), (1, 1, 1, 1), (1, 1), 8),
    ((1, 3, 5, 5), (2, 3, 5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1),
]


def test_conv_algorithm_selection():
    assert K.conv_algorithm((8, 4, 1, 1), 1) == "gemm_1x1"
    assert K.conv_algorithm((8, 1, 3, 3), 8) == "depthwise"
    assert K.conv_algorithm((16, 1, 3, 3), 8) == "im2col_gemm"  # channel multiplier 2
    assert K.conv_algorithm((8, 4, 3, 3), 2) == "im2col_gemm"


def reference_columns(x, kernel, stride, padding, dilation):
    """im2col the reference's way (pad + sliding_window_view), independent of the kernel's formula."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    pt, pb, pl, pr = padding
    n, c = x.shape[:2]
    _, _, ho, wo = shapes.conv2d(x.shape, (1, c, kh, kw), stride, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    win = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, ::dh, ::dw]  # N C Ho Wo kh kw
    return win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, ho * wo)


def gather(x, indices):
    """What the im2col kernel writes: x at each index, 0 where the index is -1 (padding)."""
    return np.where(indices >= 0, x.ravel()[np.maximum(indices, 0)], 0.0)


@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", CONV_CASES)
def test_im2col_index_maths_matches_sliding_window(xs, ws, stride, padding, dilation, groups):
    x = np.random.default_rng(1).standard_normal(xs)
    idx = K.im2col_indices(xs, ws[2:], stride, padding, dilation)
    np.testing.assert_array_equal(gather(x, idx), reference_columns(x, ws[2:], stride, padding, dilation))


@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", CONV_CASES)
def test_im2col_then_grouped_gemm_is_the_reference_conv(xs, ws, stride, padding, dilation, groups):
    # the backend's conv algorithm end to end on CPU: kernel index formula + the same GEMM function
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    n, o, ho, wo = shapes.conv2d(xs, ws, stride, padding, dilation, groups)
    cols = gather(x, K.im2col_indices(xs, ws[2:], stride, padding, dilation))
    got = K.grouped_gemm(np, w, cols, groups).reshape(n, o, ho, wo)
    tol = tolerance_for("float64")
    np.testing.assert_allclose(got, ref.conv2d(x, w, None, stride, padding, dilation, groups), rtol=tol, atol=tol)


@pytest.mark.parametrize("xs, o, stride, padding, groups", [
    ((2, 6, 7, 9), 4, (1, 1), (0, 0, 0, 0), 1),
    ((2, 6, 7, 9), 4, (2, 2), (0, 0, 0, 0), 1),
    ((1, 6, 8, 8), 6, (2, 1), (1, 0, 0, 1), 3),
])
def test_1x1_conv_is_one_gemm_on_the_feature_map(xs, o, stride, padding, groups):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(xs), rng.standard_normal((o, xs[1] // groups, 1, 1))
    n, o, ho, wo = shapes.conv2d(xs, w.shape, stride, padding, (1, 1), groups)
    got = K.grouped_gemm(np, w, K.conv1x1_columns(np, x, (ho, wo), stride, padding), groups).reshape(n, o, ho, wo)
    tol = tolerance_for("float64")
    np.testing.assert_allclose(got, ref.conv2d(x, w, None, stride, padding, (1, 1), groups), rtol=tol, atol=tol)


POOL_CASES = [  # shape, kernel, stride, padding, ceil_mode
    ((1, 2, 7, 9), (3, 3), (2, 2), (1, 1), False),
    ((1, 2, 7, 9), (3, 3), (2, 2), (1, 1), True),
    ((2, 1, 8, 6), (2, 2), (2, 2), (0, 0), True),
    ((1, 1, 5, 10), (3, 2), (2, 3), (1, 1), True),
    ((1, 1, 6, 6), (2, 2), (2, 2), (0, 0), False),
]


def emulate_pool(x, kernel, stride, padding, ceil_mode, op, count_include_pad=True):
    """The max_pool / avg_pool kernels' window maths (pool_window) applied in NumPy."""
    n, c, h, w = x.shape
    _, _, ho, wo = shapes.pool2d(x.shape, kernel, stride, padding, ceil_mode)
    hs, he, hd = K.pool_window(np.arange(ho), h, kernel[0], stride[0], padding[0], count_include_pad)
    ws, we, wd = K.pool_window(np.arange(wo), w, kernel[1], stride[1], padding[1], count_include_pad)
    out = np.empty((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            win = x[:, :, hs[i]:he[i], ws[j]:we[j]]
            out[:, :, i, j] = win.max(axis=(2, 3)) if op == "max" else win.sum(axis=(2, 3)) / (hd[i] * wd[j])
    return out


@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", POOL_CASES)
def test_pool_window_maths_matches_the_reference(shape, kernel, stride, padding, ceil_mode):
    x = np.random.default_rng(4).standard_normal(shape)
    # tighter than the float64 row of the tolerance table: a max is exact, a window mean of at most
    # 9 float64 values is a few ulps from any other order of summing
    np.testing.assert_allclose(emulate_pool(x, kernel, stride, padding, ceil_mode, "max"),
                               ref.max_pool2d(x, kernel, stride, padding, ceil_mode), rtol=1e-14)
    for cip in (True, False):
        np.testing.assert_allclose(emulate_pool(x, kernel, stride, padding, ceil_mode, "avg", cip),
                                   ref.avg_pool2d(x, kernel, stride, padding, ceil_mode, cip), rtol=1e-14)


# ------------------------------------------------------------------ argument packing
def test_pack_args_orders_and_widens_by_the_c_signature():
    x, s = np.zeros((2, 3, 4, 4), np.float16), np.zeros((2, 3), np.float16)
    out = np.empty_like(x)
    packed = K.pack_args("se_scale", "float16", dict(n=x.size, hw=16, out=out, s=s, x=x))
    assert packed[0] is x and packed[1] is s and packed[2] is out
    assert type(packed[3]) is np.int64 and type(packed[4]) is np.int64
    packed = K.pack_args("sse_gate", "float16", dict(x=x, w=s.ravel(), bias=s.ravel(), out=out,
                                                   pixels=32, hw=16, channels=3, has_bias=1))
    assert [type(v) for v in packed[4:]] == [np.int64, np.int64, np.int32, np.int32]


def test_pack_args_refuses_what_the_device_would_misread():
    x = np.zeros((2, 3, 4, 4), np.float32)
    good = dict(x=x, s=np.zeros((2, 3), np.float32), out=x, n=x.size, hw=16)
    with pytest.raises(ValueError, match="argument s must be a C-contiguous float32 array; got float64"):
        K.pack_args("se_scale", "float32", {**good, "s": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="argument x must be a C-contiguous"):
        K.pack_args("se_scale", "float32", {**good, "x": x.transpose(0, 1, 3, 2)})
    with pytest.raises(TypeError, match=r"missing \['hw'\], unexpected \['h_w'\]"):
        K.pack_args("se_scale", "float32", {**{k: v for k, v in good.items() if k != "hw"}, "h_w": 16})
    with pytest.raises(ValueError, match="does not fit in a C int"):
        K.pack_args("sse_gate", "float32", dict(x=x, w=x.ravel(), bias=x.ravel(), out=x, pixels=1, hw=1,
                                                channels=2**31, has_bias=0))


# ------------------------------------------------------------------ the backend's host path, on a fake CuPy
class RecordingModule:
    """Stands in for cupy.RawModule: records each launch after packing checked it."""

    launches: list = []

    def __init__(self, code, options, name_expressions):
        assert code == K.SOURCE and tuple(options) == K.NVRTC_OPTIONS
        self.names = set(name_expressions)

    def get_function(self, expr):
        assert expr in self.names, f"{expr} was not requested as a name expression"

        def launch(grid, block, args, shared_mem=0):
            assert all(1 <= g <= K.MAX_GRID_X for g in grid) and block[0] % 32 == 0 and block[0] <= 1024
            RecordingModule.launches.append((expr, grid, block, args, shared_mem))
        return launch


@pytest.fixture
def fake_cupy_backend(monkeypatch):
    """A CupyBackend whose 'cupy' is NumPy plus a launch recorder: exercises every host-side
    line (shapes, packing, geometry) without a device. Kernel outputs stay uninitialised."""
    device = types.SimpleNamespace(use=lambda: None)
    fake = types.SimpleNamespace(
        ndarray=np.ndarray, empty=np.zeros, asarray=np.asarray, ascontiguousarray=np.ascontiguousarray,
        asnumpy=np.asarray, matmul=np.matmul, pad=np.pad, maximum=np.maximum, concatenate=np.concatenate,
        sqrt=np.sqrt, stack=np.stack, argmax=np.argmax, take_along_axis=np.take_along_axis, arange=np.arange,
        zeros=np.zeros, int64=np.int64, where=np.where, abs=np.abs, RawModule=RecordingModule,
        cuda=types.SimpleNamespace(Device=lambda index: device),
    )
    monkeypatch.setitem(sys.modules, "cupy", fake)
    RecordingModule.launches = []
    return lambda dtype="float32": cb.CupyBackend(dtype=dtype, device="cuda:0")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_every_op_launches_with_a_valid_signature_and_output_shape(fake_cupy_backend, dtype):
    ops = fake_cupy_backend(dtype)
    rng = np.random.default_rng(5)
    arr = lambda *shape: ops.asarray(rng.standard_normal(shape))  # noqa: E731
    x, s, q, r = arr(2, 8, 7, 5), arr(2, 8), arr(2, 1, 7, 5), arr(2, 8, 7, 5)
    w1, w2, b1, b2 = arr(3, 8), arr(8, 3), arr(3), arr(8)
    expect = {
        "conv2d_act(3x3)": (ops.conv2d_act(x, arr(4, 8, 3, 3), arr(4), "relu", (2, 2), (1, 1, 1, 1)), (2, 4, 4, 3)),
        "conv2d(depthwise)": (ops.conv2d(x, arr(8, 1, 3, 3), None, (1, 1), (1, 1, 1, 1), (1, 1), 8), (2, 8, 7, 5)),
        "conv2d(1x1)": (ops.conv2d(x, arr(4, 8, 1, 1), arr(4), (2, 2)), (2, 4, 4, 3)),
        "linear": (ops.linear(s, w1, b1), (2, 3)),
        "squeeze": (ops.squeeze(x), (2, 8)),
        "excite": (ops.excite(s, w1, b1, w2, None, "relu", "hard_sigmoid"), (2, 8)),
        "scale": (ops.scale(x, s), (2, 8, 7, 5)),
        "scale_add_relu": (ops.scale_add_relu(x, s, r), (2, 8, 7, 5)),
        "add_relu": (ops.add_relu(x, r), (2, 8, 7, 5)),
        "spatial_gate": (ops.spatial_gate(x, arr(1, 8, 1, 1), arr(1)), (2, 1, 7, 5)),
        "scse": (ops.scse(x, s, q, "max"), (2, 8, 7, 5)),
        "max_pool2d": (ops.max_pool2d(x, (3, 3), (2, 2), (1, 1), True), (2, 8, 4, 3)),
        "avg_pool2d": (ops.avg_pool2d(x, (2, 2), (2, 2), (0, 0), True, False), (2, 8, 4, 3)),
        "hard_swish": (ops.hard_swish(x), (2, 8, 7, 5)),
    }
    for op, (got, shape) in expect.items():
        assert got.shape == shape and got.dtype == np.dtype(dtype), f"{op}: {got.shape} {got.dtype}"
    launched = {expr.split("<")[0] for expr, *_ in RecordingModule.launches}
    assert launched == set(K.KERNELS), f"kernels never launched: {set(K.KERNELS) - launched}"
    assert all(expr.endswith(f"<{K.ctype(dtype)}>") for expr, *_ in RecordingModule.launches)


def test_1x1_conv_without_bias_is_one_gemm_and_no_kernel(fake_cupy_backend):
    ops = fake_cupy_backend("float32")
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 6, 5, 5)).astype(np.float32), rng.standard_normal((3, 6, 1, 1)).astype(np.float32)
    got = ops.conv2d(x, w, None, (2, 2))
    assert RecordingModule.launches == []
    np.testing.assert_allclose(got, ref.conv2d(x.astype(np.float64), w.astype(np.float64), None, (2, 2)),
                               rtol=tolerance_for("float32"))


def test_bad_device_name_is_refused(fake_cupy_backend):
    with pytest.raises(ValueError, match="device must be 'cuda' or 'cuda:<index>'; got device='cpu'"):
        cb.CupyBackend(device="cpu")


def test_excite_rejects_mismatched_weights(fake_cupy_backend):
    ops = fake_cupy_backend()
    z = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match=r"expected w1 \(3, 8\) and w2 \(8, 3\), got \(3, 8\) and \(3, 8\)"):
        ops.excite(z, np.zeros((3, 8), np.float32), None, np.zeros((3, 8), np.float32), None)


# ------------------------------------------------------------------ the kernels themselves, on the host
# The grid-stride kernels are plain C++ once the CUDA keywords are stubbed and the grid is
# one thread: g++ compiles the very source NVRTC compiles, the backend's host path launches
# it through ctypes, and the conformance suite checks the values (float32 only: the float16
# conversions are PTX). The block reductions (squeeze, excite) run on one fiber per CUDA
# thread with barriers for __syncthreads and the warp shuffles.
HOST_SHIM = r"""
#include <algorithm>
#include <cmath>
#include <cstring>
struct emu_dim3 { unsigned x; };
static const emu_dim3 threadIdx{0}, blockIdx{0}, blockDim{1}, gridDim{1};
using std::max;
using std::min;
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __shfl_xor_sync(unsigned, float v, int) { return v; }
inline void __syncthreads() {}
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) alignas(n)
#define asm(...) ((void)0)
"""
#: the block-cooperative kernels need a thread of control per CUDA thread: each is a fiber
#: (ucontext) of one host thread, __syncthreads a block barrier and __shfl_xor_sync a warp barrier +
#: exchange; a fiber that reaches a barrier yields, and the scheduler resumes the fibers whose
#: barrier has opened. One std::thread per CUDA thread did the same with the OS as scheduler: a
#: thousand context switches a barrier, and beside a busy core this test took 14.6 s in place of
#: 2.1 s, its 256 threads taking the other core's share too (2026-12-05)
BLOCK_SHIM = r"""
#if defined(__APPLE__)
#define _XOPEN_SOURCE 600  // macOS declares the (deprecated) ucontext routines only so
#endif
#include <algorithm>
#include <cmath>
#include <ucontext.h>
#include <vector>
struct emu_dim3 { unsigned x; };
static emu_dim3 threadIdx{0}, blockIdx{0}, blockDim{32}, gridDim{1};  // threadIdx: the running fiber's
struct emu_barrier { unsigned expected = 0, arrived = 0; unsigned long phase = 0; };
static emu_barrier emu_block_barrier, emu_warp_barriers[32];
static ucontext_t emu_scheduler;
static std::vector<ucontext_t> emu_fibers;
static std::vector<emu_barrier*> emu_waits_on;
static std::vector<unsigned long> emu_waits_for;
static float emu_lanes[1024];
static float emu_dynamic_shared[48 * 1024 / 4];
inline void emu_arrive_and_wait(emu_barrier& b) {
    const unsigned me = threadIdx.x;
    if (++b.arrived == b.expected) { b.arrived = 0; ++b.phase; return; }  // the last one opens it
    emu_waits_on[me] = &b;
    emu_waits_for[me] = b.phase + 1;
    swapcontext(&emu_fibers[me], &emu_scheduler);
}
inline void __syncthreads() { emu_arrive_and_wait(emu_block_barrier); }
inline float __shfl_xor_sync(unsigned, float v, int offset) {
    const unsigned lane_of = threadIdx.x;
    emu_lanes[lane_of] = v;
    emu_arrive_and_wait(emu_warp_barriers[lane_of >> 5]);
    float other = emu_lanes[lane_of ^ offset];
    emu_arrive_and_wait(emu_warp_barriers[lane_of >> 5]);
    return other;
}
static void (*emu_body)(void*);
static void* emu_body_arg;
static std::vector<char> emu_finished;
static void emu_fiber_main() {
    emu_body(emu_body_arg);
    emu_finished[threadIdx.x] = 1;  // then back to the scheduler (uc_link)
}
// 1 where this C library switches fibers (a platform may declare the routines and fail them)
static int emu_probe_ran = 0;
static void emu_probe() { emu_probe_ran = 1; }
extern "C" int emu_fibers_work() {
    static char stack[64 * 1024];
    ucontext_t probe;
    if (getcontext(&probe) != 0) return 0;
    probe.uc_stack.ss_sp = stack;
    probe.uc_stack.ss_size = sizeof stack;
    probe.uc_link = &emu_scheduler;
    makecontext(&probe, emu_probe, 0);
    if (swapcontext(&emu_scheduler, &probe) != 0) return 0;
    return emu_probe_ran;
}
// 0, or -1 where the fibers of a block wait on barriers that can no longer open (a kernel whose
// threads reach different barriers: a hang on a GPU)
template <typename F> int emu_launch(unsigned grid, unsigned block, F kernel) {
    const size_t stack = 64 * 1024;
    std::vector<char> stacks(block * stack);
    emu_fibers.assign(block, ucontext_t{});
    emu_waits_on.assign(block, nullptr);
    emu_waits_for.assign(block, 0);
    emu_body = [](void* k) { (*static_cast<F*>(k))(); };
    emu_body_arg = &kernel;
    gridDim.x = grid;
    blockDim.x = block;
    emu_block_barrier = emu_barrier{block};
    for (unsigned w = 0; w < 32; ++w) emu_warp_barriers[w] = emu_barrier{32};
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        emu_finished.assign(block, 0);
        for (unsigned t = 0; t < block; ++t) {
            getcontext(&emu_fibers[t]);
            emu_fibers[t].uc_stack.ss_sp = stacks.data() + t * stack;
            emu_fibers[t].uc_stack.ss_size = stack;
            emu_fibers[t].uc_link = &emu_scheduler;
            makecontext(&emu_fibers[t], emu_fiber_main, 0);
        }
        for (unsigned done = 0; done < block;) {
            bool resumed = false;
            done = 0;
            for (unsigned t = 0; t < block; ++t) {
                if (emu_finished[t]) { ++done; continue; }
                if (emu_waits_on[t] && emu_waits_on[t]->phase < emu_waits_for[t]) continue;
                emu_waits_on[t] = nullptr;
                threadIdx.x = t;
                resumed = true;
                swapcontext(&emu_scheduler, &emu_fibers[t]);
            }
            if (!resumed && done < block) return -1;
        }
    }
    return 0;
}
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) alignas(n)
#define asm(...) ((void)0)
"""
BLOCK_KERNELS = ("se_squeeze", "se_excite")
HOST_KERNELS = tuple(n for n in K.KERNELS if n not in BLOCK_KERNELS)


def _c_params(name):
    spec = K.KERNELS[name]
    return (", ".join(f"{c.replace('T*', 'float*')} {p}" for c, p in spec.params),
            ", ".join(p for _, p in spec.params))


def host_source() -> str:
    """The grid-stride kernels, one host thread each, callable as ``host_<name>(args)``."""
    wrappers = []
    for name in HOST_KERNELS:
        params, args = _c_params(name)
        wrappers.append(f'extern "C" void host_{name}({params}) {{ {name}<float>({args}); }}')
    return HOST_SHIM + K.PRELUDE + "".join(K.KERNELS[n].source() for n in HOST_KERNELS) + "\n".join(wrappers)


def block_source() -> str:
    """The block-cooperative kernels on fibers, callable as ``host_<name>(grid, block, args)`` (0,
    or -1 where the block's threads deadlocked on barriers)."""
    wrappers = []
    for name in BLOCK_KERNELS:
        params, args = _c_params(name)
        wrappers.append(f'extern "C" int host_{name}(unsigned grid, unsigned block, {params}) '
                        f'{{ return emu_launch(grid, block, [&] {{ {name}<float>({args}); }}); }}')
    body = "".join(K.KERNELS[n].source() for n in BLOCK_KERNELS)
    body = body.replace("extern __shared__ float smem[];", "float* smem = emu_dynamic_shared;")
    return BLOCK_SHIM + K.PRELUDE + body + "\n".join(wrappers)


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    """``(grid-stride library, block library)`` built with the host C++ compiler."""
    import ctypes
    import shutil

    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler (g++/clang++) to run the kernels on the CPU")
    tmp = tmp_path_factory.mktemp("cupy_host_kernels")
    libs = []
    for stem, source in (("grid", host_source()), ("block", block_source())):
        (tmp / f"{stem}.cpp").write_text(source)
        build = subprocess.run([cxx, "-std=c++17", "-O1", "-shared", "-fPIC", "-w", "-o",
                                str(tmp / f"{stem}.so"), str(tmp / f"{stem}.cpp")], capture_output=True, text=True)
        # a failed build is our kernel source failing to compile: on a machine without a GPU this is
        # the only place the kernels run, so it must fail the suite, never skip
        assert build.returncode == 0, f"host C++ build of the {stem} kernels failed: {build.stderr[-2000:]}"
        libs.append(ctypes.CDLL(str(tmp / f"{stem}.so")))
    if not libs[1].emu_fibers_work():
        pytest.skip("this C library cannot switch ucontext fibers (getcontext/swapcontext), which the "
                    "block kernels' host emulation runs on")
    return tuple(libs)


class HostModule(RecordingModule):
    """cupy.RawModule stand-in that runs each launch on the host build of the same source."""

    libs = None

    def get_function(self, expr):
        import ctypes

        name = expr.split("<")[0]
        record = super().get_function(expr)
        grid_lib, block_lib = self.libs

        def launch(grid, block, args, shared_mem=0):
            record(grid, block, args, shared_mem)
            c_args = [a.ctypes.data_as(ctypes.c_void_p) if isinstance(a, np.ndarray)
                      else (ctypes.c_longlong if isinstance(a, np.int64) else ctypes.c_int)(int(a)) for a in args]
            if name in BLOCK_KERNELS:
                assert 4 * K.SHARED_MEMORY_BYTES // 4 >= shared_mem
                status = getattr(block_lib, f"host_{name}")(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), *c_args)
                assert status == 0, f"{name}: the threads of a block wait on barriers that cannot open"
            else:
                getattr(grid_lib, f"host_{name}")(*c_args)
        return launch


@pytest.fixture
def host_backend(fake_cupy_backend, host_kernels, monkeypatch):
    monkeypatch.setattr(sys.modules["cupy"], "RawModule", HostModule)
    monkeypatch.setattr(HostModule, "libs", host_kernels)
    return fake_cupy_backend("float32")


def test_host_built_kernels_pass_the_conformance_suite(host_backend):
    from se_multi import conformance

    # every op and block check; the whole-model checks run on a GPU (test_gpu_*): here each kernel
    # launch is a serial C++ loop, which would make a 50-layer model take minutes
    checks = conformance.primitive_checks() + conformance.fused_checks() + conformance.block_checks()
    result = conformance.run_suite(host_backend, checks=checks)
    failed = [(c.name, c.max_rel, c.error) for c in result.checks if not c.passed]
    assert not failed, failed
    assert {"squeeze", "excite", "scale_add_relu", "spatial_gate", "scse", "conv2d_act"} <= {c.op for c in result.checks}
    launched = {expr.split("<")[0] for expr, *_ in RecordingModule.launches}
    assert launched == set(K.KERNELS), set(K.KERNELS) - launched


# =========================================================================== (f) on a CUDA device
#: the dtypes the GPU checks run at; each held to its row of the one tolerance table
GPU_DTYPES = ("float32", "float16")


def gpu_rel_err(ops, got, want) -> float:
    got = np.asarray(ops.to_numpy(got), np.float64)
    assert got.shape == want.shape
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def rounded(x, dtype):
    """Inputs rounded to the compute dtype, then float64: the reference sees what the GPU sees."""
    return np.asarray(x, dtype).astype(np.float64)


@gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
def test_conformance_suite_passes_on_the_gpu(dtype):
    from se_multi.conformance import run_suite

    result = run_suite("cupy", dtype=dtype)
    assert result.passed, f"failed ops: {result.failed_ops}"


@gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", CONV_CASES)
@pytest.mark.parametrize("act", [None, *ACTIVATIONS])
def test_gpu_conv2d_act_matches_the_reference(dtype, xs, ws, stride, padding, dilation, groups, act):
    ops = cb.CupyBackend(dtype)
    rng = np.random.default_rng(7)
    x, w, b = (rounded(rng.standard_normal(s), dtype) for s in (xs, ws, (ws[0],)))
    want = ref.conv2d(x, w, b, stride, padding, dilation, groups)
    want = want if act is None else getattr(ref, act)(want)
    got = ops.conv2d_act(ops.asarray(x), ops.param(w, "conv"), ops.param(b, "vector"), act,
                         stride, padding, dilation, groups)
    assert gpu_rel_err(ops, got, want) <= tolerance_for(dtype)


@gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("shape", [(1, 64, 7, 7), (4, 256, 14, 14), (2, 2048, 7, 7), (2, 3, 1, 1), (1, 8, 56, 57)])
def test_gpu_fused_se_ops_match_the_composed_definitions_and_the_reference(dtype, shape):
    ops = cb.CupyBackend(dtype)
    n, c, h, w = shape
    hidden = max(1, c // 16)
    rng = np.random.default_rng(8)
    x, res = rounded(rng.standard_normal(shape), dtype), rounded(rng.standard_normal(shape), dtype)
    w1, b1 = rounded(rng.standard_normal((hidden, c)) / np.sqrt(c), dtype), rounded(rng.standard_normal(hidden), dtype)
    w2, b2 = rounded(rng.standard_normal((c, hidden)) / np.sqrt(hidden), dtype), rounded(rng.standard_normal(c), dtype)
    ws, bs = rounded(rng.standard_normal((1, c, 1, 1)) / np.sqrt(c), dtype), rounded(rng.standard_normal(1), dtype)
    gx, gres = ops.asarray(x), ops.asarray(res)
    gw1, gb1, gw2, gb2 = ops.param(w1, "linear"), ops.param(b1, "vector"), ops.param(w2, "linear"), ops.param(b2, "vector")
    gws, gbs = ops.param(ws, "conv"), ops.param(bs, "vector")
    tol = tolerance_for(dtype)

    z = ref.global_avg_pool(x)
    assert gpu_rel_err(ops, ops.squeeze(gx), z) <= tol
    for act, gate in [("relu", "sigmoid"), ("hard_swish", "hard_sigmoid")]:
        want = getattr(ref, gate)(ref.linear(getattr(ref, act)(ref.linear(z, w1, b1)), w2, b2))
        gz = ops.asarray(z)
        assert gpu_rel_err(ops, ops.excite(gz, gw1, gb1, gw2, gb2, act, gate), want) <= tol
        assert gpu_rel_err(ops, ops.excite(gz, gw1, None, gw2, None, act, gate),
                           getattr(ref, gate)(ref.linear(getattr(ref, act)(ref.linear(z, w1)), w2))) <= tol
    s = rounded(ref.sigmoid(rng.standard_normal((n, c))), dtype)
    q = rounded(ref.sigmoid(rng.standard_normal((n, 1, h, w))), dtype)
    gs, gq = ops.asarray(s), ops.asarray(q)
    cases = {
        "scale": (ops.scale(gx, gs), Backend.scale(ops, gx, gs), ref.mul_channel(x, s)),
        "scale_add_relu": (ops.scale_add_relu(gx, gs, gres), Backend.scale_add_relu(ops, gx, gs, gres),
                           ref.relu(ref.mul_channel(x, s) + res)),
        "add_relu": (ops.add_relu(gx, gres), Backend.add_relu(ops, gx, gres), ref.relu(x + res)),
        "spatial_gate": (ops.spatial_gate(gx, gws, gbs), ops.sigmoid(ops.conv2d(gx, gws, gbs)),
                         ref.sigmoid(ref.conv2d(x, ws, bs))),
        "scse_add": (ops.scse(gx, gs, gq, "add"), Backend.scse(ops, gx, gs, gq, "add"),
                     ref.mul_channel(x, s) + ref.mul_pixel(x, q)),
        "scse_max": (ops.scse(gx, gs, gq, "max"), Backend.scse(ops, gx, gs, gq, "max"),
                     np.maximum(ref.mul_channel(x, s), ref.mul_pixel(x, q))),
    }
    for name, (fused, composed, want) in cases.items():
        assert gpu_rel_err(ops, fused, want) <= tol, name
        assert gpu_rel_err(ops, fused, np.asarray(ops.to_numpy(composed), np.float64)) <= tol, name


@gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", POOL_CASES)
def test_gpu_pools_match_the_reference(dtype, shape, kernel, stride, padding, ceil_mode):
    ops = cb.CupyBackend(dtype)
    x = rounded(np.random.default_rng(9).standard_normal(shape), dtype)
    gx = ops.asarray(x)
    assert gpu_rel_err(ops, ops.max_pool2d(gx, kernel, stride, padding, ceil_mode),
                       ref.max_pool2d(x, kernel, stride, padding, ceil_mode)) == 0.0
    for cip in (True, False):
        assert gpu_rel_err(ops, ops.avg_pool2d(gx, kernel, stride, padding, ceil_mode, cip),
                           ref.avg_pool2d(x, kernel, stride, padding, ceil_mode, cip)) <= tolerance_for(dtype)


@gpu
def test_gpu_float16_accumulates_in_float32():
    # 4096 ones summed in float16 would stall at 2048; a float32 accumulator gets the mean exactly
    ops = cb.CupyBackend("float16")
    x = np.ones((1, 2, 64, 64))
    np.testing.assert_array_equal(ops.to_numpy(ops.squeeze(ops.asarray(x))), np.ones((1, 2)))
    np.testing.assert_array_equal(ops.to_numpy(ops.avg_pool2d(ops.asarray(x), (64, 64), (64, 64))), np.ones((1, 2, 1, 1)))


@gpu
def test_gpu_se_model_matches_numpy():
    from se_multi.models import create_model

    name = "seresnet50"
    x = np.random.default_rng(10).standard_normal((2, 3, 64, 64)).astype(np.float32)
    want = create_model(name, backend="numpy", dtype="float64")(x)
    got = se_multi.to_numpy(create_model(name, backend="cupy", dtype="float32")(x)).astype(np.float64)
    assert np.abs(got - want).max() / np.abs(want).max() <= tolerance_for("float32", "model")
