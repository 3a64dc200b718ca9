"""Weights by hub id (from a hub cache the test writes, never the network), every bad checkpoint,
image, array and option as one clear error, CLI exit codes, and writes that cannot corrupt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import se_multi
from _parity import expected, peer_input, peer_state, rel_err
from conftest import require_backend
from se_multi import cli, hub
from se_multi.checkpoint import resolve_weights
from se_multi.files import json_text
from se_multi.models import build_model, create_model
from se_multi.nn import StateDictError

ROOT = Path(__file__).resolve().parents[1]
REVISION = "0123456789abcdef0123456789abcdef01234567"


def write_hub_cache(home: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """A model repo in huggingface_hub's cache layout under ``home`` (what ``HF_HOME`` names):
    ``hub/models--org--name/refs/main`` holds the revision, ``snapshots/<revision>/`` the files."""
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


@pytest.fixture(scope="module")
def seresnet50_file(peer_checkpoint) -> Path:
    """The seresnet50 parity fixture's weights in timm's layout, as a .safetensors file (the run's
    one copy, conftest's ``peer_checkpoint``: read, never changed)."""
    return peer_checkpoint("seresnet50")


@pytest.fixture
def hub_home(tmp_path, monkeypatch, seresnet50_file) -> Path:
    home = tmp_path / "hf_home"
    write_hub_cache(home, "timm/seresnet50.a1_in1k", {"model.safetensors": seresnet50_file.read_bytes()})
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


# =========================================================================== hub ids
@pytest.mark.parametrize("weights, repo", [
    ("timm/seresnet50.a1_in1k", "timm/seresnet50.a1_in1k"),
    ("hf-hub:timm/seresnet50.a1_in1k", "timm/seresnet50.a1_in1k"),
    ("org/name", "org/name"),
    ("model.safetensors", None), ("dir/model.safetensors", None), ("a/b/c", None), ("/abs/path", None),
    ("ckpt.pth", None),
])
def test_hub_ids_as_timm_spells_them(weights, repo):
    assert hub.parse_hub_id(weights) == repo
    with pytest.raises(hub.HubError, match="expected hf-hub:org/name"):
        hub.parse_hub_id("hf-hub:not an id")


def test_hub_id_loads_from_the_local_cache_like_the_same_file_by_path(hub_home, seresnet50_file):
    pytest.importorskip("huggingface_hub")
    x = peer_input("seresnet50")
    by_id = create_model("seresnet50", weights="timm/seresnet50.a1_in1k", backend="numpy")(x)
    by_prefix = create_model("seresnet50", weights="hf-hub:timm/seresnet50.a1_in1k", backend="numpy")(x)
    by_path = create_model("seresnet50", weights=str(seresnet50_file), backend="numpy")(x)
    np.testing.assert_array_equal(by_id, by_path)
    np.testing.assert_array_equal(by_prefix, by_path)
    assert rel_err(by_id, expected("seresnet50")["logits"]) < 1e-4  # and they are the peer's logits


def test_pytorch_model_bin_is_the_fallback(tmp_path, monkeypatch, seresnet50_file):
    pytest.importorskip("huggingface_hub")
    require_backend("torch")
    import torch

    blob = tmp_path / "pytorch_model.bin"
    torch.save({k: torch.from_numpy(v) for k, v in peer_state("seresnet50").items()}, blob)
    home = tmp_path / "home"
    write_hub_cache(home, "timm/seresnet50.ra2_in1k", {"pytorch_model.bin": blob.read_bytes()})
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    x = peer_input("seresnet50")
    np.testing.assert_array_equal(create_model("seresnet50", weights="timm/seresnet50.ra2_in1k", backend="numpy")(x),
                                  create_model("seresnet50", weights=str(seresnet50_file), backend="numpy")(x))


def test_a_local_path_always_wins(hub_home, tmp_path, monkeypatch, seresnet50_file):
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "seresnet50.a1_in1k").write_bytes(b"not a checkpoint")
    monkeypatch.chdir(tmp_path)
    assert resolve_weights("timm/seresnet50.a1_in1k") == "timm/seresnet50.a1_in1k"


def test_an_id_not_cached_offline_is_one_clear_error_at_once(hub_home):
    pytest.importorskip("huggingface_hub")
    t0 = time.perf_counter()
    with pytest.raises(hub.HubError, match=r"'timm/seresnet50.a2_in1k' is not in the local hub cache "
                                           r"\(.*\) and HF_HUB_OFFLINE is set"):
        create_model("seresnet50", weights="timm/seresnet50.a2_in1k", backend="numpy")
    assert time.perf_counter() - t0 < 5


def test_an_id_not_cached_and_unreachable_fails_within_seconds(tmp_path, monkeypatch):
    """Online mode, but the hub cannot be reached (a closed local port stands for no network)."""
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    t0 = time.perf_counter()
    with pytest.raises(hub.HubError, match=r"'a/b' is not in the local hub cache .* the hub cannot be reached: "
                                           r"127.0.0.1:9"):
        resolve_weights("a/b")
    assert time.perf_counter() - t0 < 2 * hub.PROBE_TIMEOUT_S


def test_predict_cli_with_a_hub_id_offline(hub_home, tmp_path, seresnet50_file):
    """The README's headline command, from the cache, in a fresh interpreter."""
    pytest.importorskip("huggingface_hub")
    image = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 280, 3), dtype=np.uint8)).save(image)
    env = {**os.environ, "HF_HOME": str(hub_home), "HF_HUB_OFFLINE": "1"}

    def run(weights):
        proc = subprocess.run([sys.executable, "-m", "se_multi", "predict", str(image), "--model", "seresnet50",
                               "--weights", weights, "--backend", "numpy", "--topk", "5", "--json"],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    by_id, by_path = run("timm/seresnet50.a1_in1k"), run(str(seresnet50_file))
    assert by_id["pretrained_cfg"] == "seresnet50.a1_in1k"  # the tag in the id picks the preprocessing
    assert by_id["results"] == by_path["results"]


# =========================================================================== checkpoint checks
def _bad_checkpoint(tmp_path, edit) -> Path:
    from safetensors.numpy import save_file

    state = dict(peer_state("resnet50"))
    edit(state)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.__setitem__("conv1.weight", s["conv1.weight"].astype(np.int64)),
     r"1 tensor\(s\) that are not floating point: conv1.weight \(int64\)"),
    (lambda s: s.__setitem__("fc.bias", s["fc.bias"] > 0), r"not floating point: fc.bias \(bool\)"),
    (lambda s: s["layer1.0.conv2.weight"].__setitem__((0, 0, 0, 0), np.nan),
     r"1 tensor\(s\) with NaN or Inf: layer1.0.conv2.weight"),
    (lambda s: s["fc.weight"].__setitem__((3, 3), np.inf), r"with NaN or Inf: fc.weight"),
    (lambda s: s["layer2.0.bn1.running_var"].__setitem__(5, -0.5),
     r"BatchNorm running variance\(s\) below 0: layer2.0.bn1.running_var \(min -0.5\)"),
])
def test_bad_weights_are_refused_at_load_naming_the_key(tmp_path, edit, message):
    path = _bad_checkpoint(tmp_path, edit)
    with pytest.raises(StateDictError, match=message):
        create_model("resnet50", weights=str(path), backend="numpy")
    with pytest.raises(StateDictError, match=message):  # and by convert, which writes nothing
        from se_multi.convert import convert_checkpoint

        convert_checkpoint(str(path), str(tmp_path / "out.safetensors"), model="resnet50")
    assert not (tmp_path / "out.safetensors").exists()


def test_broadcast_weights_are_checked_in_every_entry():
    """A state of broadcast views (as the input-size tracer binds) is checked on each distinct entry:
    a NaN along the one axis that is not broadcast is found, a negative running variance too."""
    declaration = build_model("mobilenetv3_small_100")
    ops = se_multi.get_backend("numpy")
    zeros = {k: np.broadcast_to(np.float32(0), s.shape) for k, s in declaration.param_specs().items()}
    declaration.bind({**zeros, "bn1.running_var": np.broadcast_to(np.float32(1), zeros["bn1.running_var"].shape)}, ops)
    row = np.zeros(zeros["conv_stem.weight"].shape[-1], np.float32)
    row[-1] = np.nan
    with pytest.raises(StateDictError, match=r"with NaN or Inf: conv_stem.weight"):
        declaration.bind({**zeros, "conv_stem.weight": np.broadcast_to(row, zeros["conv_stem.weight"].shape)}, ops)
    with pytest.raises(StateDictError, match=r"below 0: bn1.running_var \(min -2\)"):
        declaration.bind({**zeros, "bn1.running_var": np.broadcast_to(np.float32(-2), zeros["bn1.running_var"].shape)},
                         ops)


def test_complex_weights_are_refused(tmp_path):
    declaration = build_model("mobilenetv3_small_100")
    state = {k: np.zeros(s.shape, np.float32) + 1 for k, s in declaration.param_specs().items()}
    state["conv_stem.weight"] = state["conv_stem.weight"].astype(np.complex64)
    with pytest.raises(StateDictError, match=r"conv_stem.weight \(complex64\)"):
        declaration.bind(state, se_multi.get_backend("numpy"))


def test_integer_bookkeeping_buffers_are_fine(tmp_path):
    """An int64 ``num_batches_tracked`` (every PyTorch BatchNorm has one) loads, and the model
    computes what the same checkpoint without it computes."""
    with_counter = _bad_checkpoint(tmp_path, lambda s: s.__setitem__("bn1.num_batches_tracked", np.zeros((), np.int64)))
    (tmp_path / "plain").mkdir()
    plain = _bad_checkpoint(tmp_path / "plain", lambda s: None)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(create_model("resnet50", weights=str(with_counter), backend="numpy")(x),
                                  create_model("resnet50", weights=str(plain), backend="numpy")(x))


def test_a_corrupt_safetensors_file_is_one_line_input_error(tmp_path, capsys):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    assert cli.main(["convert", str(path), str(tmp_path / "o.safetensors")]) == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read checkpoint" in err and "Traceback" not in err


# =========================================================================== images
def test_an_extreme_aspect_ratio_is_refused_before_any_big_allocation(tmp_path):
    """Under a 1.5 GiB address-space cap, where the old ~12 GB resize would be a MemoryError."""
    import resource

    strip = tmp_path / "strip.png"
    Image.fromarray(np.zeros((1, 60000, 3), np.uint8)).save(strip)  # a few hundred bytes on disk
    assert strip.stat().st_size < 1000
    code = "import se_multi\ntry:\n    se_multi.preprocess(%r)\nexcept OSError as e:\n    print(e)\n" % str(strip)
    cap = lambda: resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))  # noqa: E731
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # thread stacks count against the cap
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          preexec_fn=cap, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "would be resized to 14100000x235 (3314 Mpx) before its 224x224 crop; the limit is 67 Mpx" in proc.stdout


def test_pillows_decompression_bomb_guard_stays_on():
    from PIL import Image as PILImage

    import se_multi.preprocess  # noqa: F401  (importing se_multi must not lift the guard)

    assert PILImage.MAX_IMAGE_PIXELS == 89_478_485


# =========================================================================== arrays and options
@pytest.fixture(scope="module")
def small_model():
    return create_model("mobilenetv3_small_100", backend="numpy")


def test_any_byte_order_is_accepted(small_model, cpu_backend):
    model = create_model("mobilenetv3_small_100", backend=cpu_backend)
    x = np.random.default_rng(0).standard_normal((1, 3, 40, 40)).astype(np.float32)
    np.testing.assert_array_equal(se_multi.to_numpy(model(x.astype(">f4"))), se_multi.to_numpy(model(x)))


def test_nan_in_a_native_array_is_refused_on_every_backend(cpu_backend):
    model = create_model("mobilenetv3_small_100", backend=cpu_backend)
    x = np.zeros((1, 3, 32, 32), np.float32)
    x[0, 1, 2, 3] = np.nan
    native = model.ops.asarray(x)
    with pytest.raises(ValueError, match="input contains NaN or Inf"):
        model(native)
    with pytest.raises(ValueError, match="input contains NaN or Inf"):
        model(x)


def test_values_beyond_the_compute_dtype_are_refused(small_model):
    with pytest.raises(ValueError, match=r"input values up to 1e\+39 overflow the compute dtype float32"):
        small_model(np.full((1, 3, 32, 32), 1e39))
    require_backend("torch")
    half = create_model("mobilenetv3_small_100", backend="torch", dtype="float16")
    with pytest.raises(ValueError, match=r"up to 7e\+04 overflow the compute dtype float16 \(largest finite 6\.55e\+04\)"):
        half(np.full((1, 3, 32, 32), 70000.0, np.float32))


@pytest.mark.parametrize("bad, error, message", [
    ([[1.0, 2.0]], TypeError, "expected an array .* got list"),
    (memoryview(b"abcd"), TypeError, "expected an array .* got memoryview"),
    (np.float32(1.0), TypeError, "expected an array .* got float32"),
    (np.zeros((1, 3, 32, 32), np.int32), TypeError, r"expected a floating-point array \(bfloat16, float16, float32 or float64\); got dtype int32"),
    (np.zeros((0, 3, 32, 32), np.float32), ValueError, "expected at least one image"),
])
def test_non_arrays_are_refused_clearly(small_model, bad, error, message):
    with pytest.raises(error, match=message):
        small_model(bad)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(backend=123), TypeError, "backend must be a backend name .* got int"),
    (dict(backend="numpy", dtype="foo"), ValueError, "supports dtype float32, float64; got 'foo'"),
    (dict(backend="numpy", seed="x"), TypeError, "seed must be a non-negative int; got 'x'"),
    (dict(backend="numpy", weights=3), TypeError, "weights must be a checkpoint path or a hub id"),
    (dict(backend="numpy", device=0), ValueError, "numpy backend runs on device 'cpu' only; got device=0"),
    (dict(backend="numpy", bn_eps="1e-3"), ValueError, "bn_eps must be a positive number; got '1e-3'"),
])
def test_bad_options_are_refused_clearly(kwargs, error, message):
    with pytest.raises(error, match=message):
        create_model("mobilenetv3_small_100", **kwargs)


def test_model_option_types():
    with pytest.raises(TypeError, match="se_bias must be True or False; got 'no'"):
        create_model("seresnet50", backend="numpy", se_bias="no")


def test_backend_option_types(cpu_backend):
    bad = {"torch": dict(channels_last="yes"), "mlx": dict(compile="no"), "onnxruntime": dict(threads="2"),
           "numpy": dict(device=1), "openvino": dict(hint=2)}[cpu_backend]
    with pytest.raises((TypeError, ValueError), match="must be|only"):
        se_multi.get_backend(cpu_backend, **bad)


def test_torch_device_0_means_cuda_0_never_the_cpu():
    require_backend("torch")
    import torch

    if torch.cuda.is_available():
        assert se_multi.get_backend("torch", device=0).device == "cuda:0"
    else:
        with pytest.raises(se_multi.BackendUnavailable, match="torch device 'cuda:0' requested"):
            se_multi.get_backend("torch", device=0)


# =========================================================================== CLI
def test_version_and_exit_codes_in_help(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"se-multi {se_multi.__version__}"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for code in (1, 2, 3, 4, 5, 70):
        assert f"  {code:>3}  " in out


def test_an_unexpected_exception_is_one_line_with_the_version(capsys, monkeypatch):
    from se_multi.cli import info as info_command

    class Surprise(Exception):
        pass

    def boom(args):
        raise Surprise("something we did not foresee")

    monkeypatch.setattr(info_command, "run", boom)
    assert cli.main(["info", "seresnet50"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"se-multi {se_multi.__version__} info: internal error: Surprise" in err
    assert "please report it" in err and "Traceback" not in err
    assert cli.main(["--debug", "info", "seresnet50"]) == cli.EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err


def test_library_errors_are_input_errors():
    from safetensors import SafetensorError

    assert cli.exit_code(SafetensorError("bad header")) == cli.EXIT_INPUT
    assert cli.exit_code(MemoryError()) == cli.EXIT_MEMORY
    assert cli.exit_code(se_multi.BackendUnavailable("no cupy")) == cli.EXIT_UNAVAILABLE
    assert cli.exit_code(RuntimeError("a bug")) == cli.EXIT_INTERNAL


def test_json_output_is_always_strict_json():
    text = json_text({"a": float("nan"), "b": [1.0, float("inf")], "c": Path("x")})
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": "x"}


# =========================================================================== writes
def test_convert_creates_missing_directories(tmp_path, seresnet50_file, capsys):
    out = tmp_path / "missing" / "dir" / "native.safetensors"
    assert cli.main(["convert", str(seresnet50_file), str(out), "--model", "seresnet50"]) == 0
    assert create_model("seresnet50", weights=str(out), backend="numpy").module.bound_to is not None
    assert [p.name for p in out.parent.iterdir()] == ["native.safetensors"]  # no temporary left behind


def test_a_failed_export_leaves_the_old_file_as_it_was(tmp_path):
    """A real write error (RLIMIT_FSIZE in a child process: EFBIG, as a full disk gives ENOSPC)
    while the new file is half written: exit 3 with the error, the old file as it was."""
    import resource

    pytest.importorskip("onnx")
    out = tmp_path / "model.onnx"
    assert cli.main(["export", "mobilenetv3_small_100", str(out), "--input-size", "64", "64"]) == 0
    before = out.read_bytes()
    limit = len(before) // 2
    proc = subprocess.run([sys.executable, "-m", "se_multi", "export", "mobilenetv3_small_100", str(out),
                           "--input-size", "96", "96"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert proc.returncode == cli.EXIT_INPUT, proc.stderr
    assert "File too large" in proc.stderr and "Traceback" not in proc.stderr
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_failed_convert_leaves_the_old_file_as_it_was(tmp_path, monkeypatch, seresnet50_file):
    import safetensors.numpy

    from se_multi.convert import convert_checkpoint

    out = tmp_path / "native.safetensors"
    out.write_bytes(b"the old file")

    def fail(tensors, path, metadata=None):
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", fail)
    with pytest.raises(OSError, match="No space left"):
        convert_checkpoint(str(seresnet50_file), str(out), model="seresnet50")
    assert out.read_bytes() == b"the old file"
    assert [p.name for p in tmp_path.iterdir()] == ["native.safetensors"]
