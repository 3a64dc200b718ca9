"""Finding backends by name, the errors for bad names and missing packages, and the
torch backend's array conversion and device handling."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import se_multi
from se_multi import cli, dispatch
from se_multi.backend import BackendUnavailable
from se_multi.backends.numpy_backend import NumpyBackend


class MissingPackageBackend(NumpyBackend):
    """A backend whose framework is not installed (the package name exists nowhere)."""

    name = "imaginary"
    package = "se_multi_imaginary_framework_xyz"
    extra = "imaginary"


MISSING = f"{__name__}:MissingPackageBackend"


# ----------------------------------------------------------------------------- names
def test_unknown_name_lists_the_known_backends():
    with pytest.raises(ValueError) as info:
        se_multi.get_backend("tensorflow")
    msg = str(info.value)
    assert "unknown backend 'tensorflow'" in msg
    for name in dispatch.BUILTIN_BACKENDS:
        assert name in msg


def test_a_plugin_installed_or_removed_is_seen_by_the_next_lookup(tmp_path, monkeypatch):
    """The ``se_multi.backends`` entry points are read once per state of the import path: a
    distribution installed (its ``.dist-info`` folder appears in a ``sys.path`` folder) or removed
    after a lookup is seen by the next one, and lookups in between read no metadata."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    reads = []
    entry_points = dispatch.metadata.entry_points
    monkeypatch.setattr(dispatch.metadata, "entry_points", lambda **kw: reads.append(kw) or entry_points(**kw))

    def changed_long_ago():  # the folder's time differs from the next change's, whatever the clock's tick
        then = time.time() - 3600 - len(reads)
        os.utime(site, (then, then))

    changed_long_ago()
    assert "imaginary_ep" not in dispatch.known_backends()
    assert "imaginary_ep" not in dispatch.known_backends() and len(reads) == 1
    info = site / "imaginary_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: imaginary-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[se_multi.backends]\nimaginary_ep = {MISSING}\n")
    assert dispatch.known_backends()["imaginary_ep"] == MISSING
    with pytest.raises(BackendUnavailable, match="not installed"):
        se_multi.get_backend("imaginary_ep")
    assert len(reads) == 2
    changed_long_ago()
    assert "imaginary_ep" in dispatch.backend_status()
    shutil.rmtree(info)
    assert "imaginary_ep" not in dispatch.known_backends() and len(reads) == 4


def test_module_class_path_must_name_a_backend_class():
    with pytest.raises(ValueError, match="not a se_multi.backend.Backend subclass"):
        se_multi.get_backend("numpy.linalg:norm")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        se_multi.get_backend("no_such_module_xyz:Backend")


def test_missing_package_hint_comes_from_the_backend():
    """A third-party backend's hint is its own ``install``, else the distribution that ships it;
    only a built-in backend's hint names an se-multi extra."""
    with pytest.raises(BackendUnavailable, match=r"not installed: install the 'se_multi_imaginary_framework_xyz'"):
        se_multi.get_backend(MISSING)  # this test module belongs to no distribution
    own = type("OwnHint", (MissingPackageBackend,), {"install": "pip install imaginary-backend"})
    assert own.availability() == (False, "not installed: pip install imaginary-backend")
    shipped = type("Shipped", (MissingPackageBackend,), {"__module__": "pytest_benchmark.backend"})
    assert shipped.availability() == (False, "not installed: pip install pytest-benchmark")
    builtin = type("Builtin", (MissingPackageBackend,), {"__module__": "se_multi.backends.imaginary"})
    assert builtin.availability() == (False, "not installed: pip install 'se-multi[imaginary]'")


def test_missing_package_in_the_cli_is_one_line(capsys):
    assert cli.main(["validate", "--backend", MISSING]) == cli.EXIT_UNAVAILABLE
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "install the 'se_multi_imaginary_framework_xyz' package" in err


def test_a_module_class_backend_runs():
    ops = se_multi.get_backend("se_multi.backends.numpy_backend:NumpyBackend", dtype="float64")
    assert isinstance(ops, NumpyBackend) and ops.dtype == "float64"


# ----------------------------------------------------------------------------- auto and the env var
def test_env_var_picks_the_backend(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "numpy")
    assert se_multi.get_backend().name == "numpy"
    assert se_multi.get_backend("auto").name == "numpy"
    monkeypatch.setenv(dispatch.ENV_VAR, MISSING)
    with pytest.raises(BackendUnavailable, match="imaginary"):
        se_multi.get_backend()


def test_env_var_does_not_override_an_explicit_name(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "no-such-backend")
    assert se_multi.get_backend("numpy").name == "numpy"
    with pytest.raises(ValueError, match="unknown backend 'no-such-backend'"):
        se_multi.get_backend("auto")


@pytest.mark.parametrize("usable,platform_,expected", [
    ({"numpy"}, ("linux", "x86_64"), "numpy"),
    ({"numpy", "torch"}, ("linux", "x86_64"), "torch"),
    ({"numpy", "torch", "mlx"}, ("linux", "x86_64"), "torch"),       # mlx[cpu] on Linux is not preferred
    ({"numpy", "torch", "mlx"}, ("darwin", "arm64"), "mlx"),
    ({"numpy", "torch", "mlx", "cupy"}, ("darwin", "arm64"), "cupy"),
    ({"numpy", "torch", "cupy"}, ("linux", "x86_64"), "cupy"),
])
def test_auto_preference(monkeypatch, usable, platform_, expected):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    monkeypatch.setattr(dispatch, "backend_status",
                        lambda: {n: (n in usable, "test") for n in dispatch.BUILTIN_BACKENDS})
    monkeypatch.setattr(dispatch.sys, "platform", platform_[0])
    monkeypatch.setattr(dispatch.platform, "machine", lambda: platform_[1])
    assert dispatch.resolve_backend_name("auto") == expected


def test_auto_on_this_machine_is_usable(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    ops = se_multi.get_backend("auto")
    assert ops.name in se_multi.available_backends()


# ----------------------------------------------------------------------------- torch: arrays
def test_torch_backend_module_imports_no_torch():
    code = ("import sys; from se_multi.backends.torch_backend import TorchBackend;"
            "print(TorchBackend.availability()[0], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(dispatch.backend_status()["torch"][0]), "False"]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_to_numpy_converts_torch_tensors(torch):
    values = [1.5, -2.25, 0.0078125, 3.0]  # exact in bfloat16 and float16
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        t = torch.tensor(values, dtype=dtype, requires_grad=dtype.is_floating_point)
        got = se_multi.to_numpy(t)
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, np.array(values, np.float32))


def test_torch_backend_to_numpy_bfloat16_and_channels_last(torch):
    ops = se_multi.get_backend("torch", dtype="bfloat16")
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5) / 8  # exact in bfloat16
    y = ops.input(x)
    assert y.dtype == torch.bfloat16
    got = ops.to_numpy(ops.output(y))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(se_multi.to_numpy(y), x)


def test_torch_asarray_accepts_numpy_and_tensors(torch):
    ops = se_multi.get_backend("torch", dtype="float64")
    from_numpy = ops.asarray(np.ones((2, 3), np.float32))
    from_tensor = ops.asarray(torch.ones(2, 3, dtype=torch.float16))
    from_list = ops.asarray([[1.0, 1.0, 1.0]] * 2)
    for t in (from_numpy, from_tensor, from_list):
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.device.type == "cpu"


def test_torch_params_are_contiguous_in_the_compute_dtype(torch):
    ops = se_multi.get_backend("torch", dtype="float16")
    w = ops.param(np.ones((4, 3, 3, 3)).transpose(0, 1, 3, 2), "conv")  # a non-contiguous view
    v = ops.param(np.ones((5, 2)).T, "linear")
    assert w.dtype == v.dtype == torch.float16
    assert v.is_contiguous()
    assert w.is_contiguous() or w.is_contiguous(memory_format=torch.channels_last)


def test_torch_feature_maps_channels_last_outputs_nchw(torch):
    ops = se_multi.get_backend("torch")
    x = ops.input(np.zeros((1, 8, 5, 7)))
    assert x.is_contiguous(memory_format=torch.channels_last) == ops.channels_last
    y = ops.output(ops.conv2d_act(x, ops.param(np.ones((4, 8, 3, 3)), "conv"), None, "relu", padding=(1, 1, 1, 1)))
    assert y.shape == (1, 4, 5, 7) and y.is_contiguous()


def test_torch_forward_runs_under_one_inference_guard(torch):
    """run_model enters inference mode once per forward, not once per op."""
    model = se_multi.create_model("mobilenetv3_small_100", backend="torch")
    entered = []
    guard = model.ops._inference_mode

    def counting():
        entered.append(torch.is_inference_mode_enabled())
        return guard()

    model.ops._inference_mode = counting
    y = model(np.ones((1, 3, 32, 32), np.float32))
    assert entered == [False] and y.is_inference()
    assert not torch.is_inference_mode_enabled(), "the mode is scoped to the forward"
    ops = model.ops  # an op on its own needs no guard: nothing requires grad
    assert not ops.add(ops.asarray(np.ones(2)), ops.asarray(np.ones(2))).requires_grad


# ----------------------------------------------------------------------------- torch: devices
def test_torch_unavailable_cuda_is_a_clear_error(torch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(BackendUnavailable, match=r"torch device 'cuda' requested but torch.cuda.is_available\(\) is False"):
        se_multi.get_backend("torch", device="cuda")


def test_torch_cuda_index_beyond_the_devices(torch):
    with pytest.raises(BackendUnavailable, match="cuda:99"):
        se_multi.get_backend("torch", device="cuda:99")


def test_torch_unavailable_mps_is_a_clear_error(torch):
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(BackendUnavailable, match="mps"):
        se_multi.get_backend("torch", device="mps")


def test_torch_tf32_option_is_a_bool(torch):
    with pytest.raises(TypeError, match="tf32 must be True or False"):
        se_multi.get_backend("torch", tf32="no")
    assert se_multi.get_backend("torch").tf32 is False


def test_torch_unknown_device_names_the_choices(torch):
    with pytest.raises(ValueError, match="expected device 'cpu', 'cuda', 'cuda:N' or 'mps'; got 'tpu'"):
        se_multi.get_backend("torch", device="tpu")


def test_validate_on_a_missing_device_exits_2(torch, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert cli.main(["validate", "--backend", "torch", "--device", "cuda"]) == cli.EXIT_UNAVAILABLE
    assert "torch device 'cuda' requested" in capsys.readouterr().err
