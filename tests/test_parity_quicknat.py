"""Parity of QuickNAT (the scSE authors' ai-med quickNAT_pytorch, nn-common-modules 590df23,
squeeze_and_excitation HEAD) with the authors' own code, on every backend (issue 25).

tests/data/parity_fcnn/aimed.quicknat_csse holds the shared fixture's manifest (seed, input shape,
the authors' keys) and the peer's logits, kept small: its float64 logits rounded to float32 (the
float32 runs are held to 1e-4, 1000x that rounding) and every 4th row and column of them in float64
(the float64 run, ~1e-9). Its own folder, not tests/data/parity, whose folders are the fixture table
of tests/_parity.py. The weights are the fixture README's recipe (se_multi.init, as _parity uses it),
written once as a checkpoint in the authors' layout and read through the public loader.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest

from _parity import rel_err
from conftest import require_backend
from se_multi.conformance import MODEL_TOLERANCES
from se_multi.init import recipe_input, recipe_state

FIXTURE = Path(__file__).parent / "data" / "parity_fcnn" / "aimed.quicknat_csse"
RUNS = (("numpy", "float64"), ("numpy", "float32"), ("torch", "float32"), ("mlx", "float32"), ("cupy", "float32"),
        ("onnxruntime", "float32"), ("openvino", "float32"))


def _manifest() -> dict:
    return json.loads((FIXTURE / "manifest.json").read_text())


def _expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def _input() -> np.ndarray:
    m = _manifest()
    return recipe_input(m["input_shape"], seed=m["seed"])


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    """(checkpoint path, declaration, native state): the recipe's weights in the authors' layout,
    written once and read once through the public loader (layout detection, strict key check)."""
    from safetensors.numpy import save_file

    from se_multi.models.loading import load_declared

    m = _manifest()
    path = tmp_path_factory.mktemp("quicknat") / "quicknat_csse.safetensors"
    save_file(recipe_state(((k["name"], k["shape"], k["kind"]) for k in m["keys"]), seed=m["seed"]), str(path))
    declaration, native, options = load_declared("quicknat", str(path))
    assert options == {}, "the authors' checkpoint is the native layout"
    return path, declaration, native


def _declared(**kwargs):
    from se_multi.models import build_model

    return build_model("quicknat", **kwargs)


def test_declares_the_authors_layout_key_for_key():
    peer = [(k["name"], tuple(k["shape"])) for k in _manifest()["keys"] if k["kind"] != "int"]
    assert [(key, spec.shape) for key, spec in _declared().param_specs().items()] == peer


@pytest.mark.parametrize("se,keys", [("cse", ["SELayer.fc1.weight", "SELayer.fc1.bias", "SELayer.fc2.weight",
                                               "SELayer.fc2.bias"]),
                                     ("sse", ["SELayer.conv.weight", "SELayer.conv.bias"]), ("none", [])])
def test_each_se_option_is_the_authors_selayer(se, keys):
    """ChannelSELayer (nn.Linear, r = 2), SpatialSELayer, none: the plain layout plus each block's
    SELayer under the authors' names, marked SE; 9 blocks declare one (the bottleneck's is never run)."""
    plain, ours = _declared(se="none").param_specs(), _declared(se=se).param_specs()
    extra = {k: s for k, s in ours.items() if k not in plain}
    blocks = [f"encode{i}" for i in (1, 2, 3, 4)] + ["bottleneck"] + [f"decode{i}" for i in (1, 2, 3, 4)]
    assert sorted(extra) == sorted(f"{b}.{k}" for b in blocks for k in keys)
    assert all(s.se for s in extra.values()) and not any(s.se for s in plain.values())
    if se == "cse":
        assert ours["encode1.SELayer.fc1.weight"].shape == (32, 64)


@pytest.mark.parametrize("backend,dtype", RUNS, ids=[f"{b}-{d}" for b, d in RUNS])
def test_logits_match_the_authors_code(peer, backend, dtype):
    from se_multi.dispatch import get_backend

    require_backend(backend, dtype)
    _, declaration, native = peer
    ops = get_backend(backend, dtype=dtype)
    # op by op (eager): the whole graphs of ONNX Runtime and OpenVINO are the export test's
    module = declaration.bind(native, ops)
    logits = np.asarray(ops.to_numpy(ops.output(module(ops, ops.input(_input())))), np.float64)
    del module
    gc.collect()
    want = _expected()
    assert logits.shape == want["logits_float32"].shape == (1, 28, 64, 96)
    if dtype == "float64":  # the same function in the same precision (measured 2e-15)
        err, tol = rel_err(logits[..., ::4, ::4], want["logits_every4"]), 1e-9
    else:
        err, tol = rel_err(logits, want["logits_float32"]), MODEL_TOLERANCES[dtype]
    assert err <= tol, f"quicknat on {backend}/{dtype}: max rel err {err:.3g} > {tol:g}"


def test_the_se_blocks_and_the_combination_matter(peer):
    """The fixture would catch a missing SE block (its logits move by ~100% without them), and the
    paper's ``add`` is another function than the authors' ``max``."""
    from se_multi.dispatch import get_backend

    assert _manifest()["without_se_rel_diff"] > 0.5
    _, declaration, native = peer
    ops = get_backend("numpy", dtype="float64")
    x = ops.input(_input()[..., :32, :48])
    ours = ops.to_numpy(declaration.bind(native, ops)(ops, x))
    added = ops.to_numpy(_declared(scse_mode="add").bind(native, ops)(ops, x))
    assert rel_err(added, ours) > 1e-2


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_onnx_export_runs_on_the_engines(peer, engine):
    """se_multi's export of QuickNAT (MaxPool's indices, ScatterElements unpool) run by the engine
    as one size-generic graph: the fixture's 64x96 and a 40x56 input, whose 5-row map pools to 2
    rows and unpools back to 5, against float64 NumPy."""
    from se_multi.dispatch import get_backend, to_numpy
    from se_multi.models import Model
    from se_multi.onnx_export import build_onnx

    require_backend(engine, "float32")
    path, declaration, native = peer
    proto = build_onnx("quicknat", weights=str(path), input_size=(64, 96))
    assert {"MaxPool", "ScatterElements"} <= {n.op_type for n in proto.graph.node}
    assert [len(n.output) for n in proto.graph.node if n.op_type == "MaxPool"] == [2] * 4
    ops = get_backend(engine, dtype="float32")
    model = Model("quicknat", declaration.bind(native, ops), ops)
    reference = get_backend("numpy", dtype="float64")
    bound = declaration.bind(native, reference)
    assert model.in_chans == 1
    for x in (_input(), _input()[..., :40, :56]):
        want = reference.to_numpy(bound(reference, reference.input(x.astype(np.float64))))
        err = rel_err(to_numpy(model(x)), want)
        assert err <= MODEL_TOLERANCES["float32"], f"{engine} at {x.shape}: {err:.3g}"


def test_validate_checks_the_whole_model_in_float64_and_float32_only():
    """A max-pool window whose two largest values lie within float16's rounding picks either, and
    the unpool moves the value: the whole model is checked where that is rare (its ops everywhere)."""
    from se_multi import conformance

    check = conformance.model_check("quicknat", (2, 1, 16, 24))
    assert check.dtypes == ("float64", "float32")
    assert conformance.run_suite("numpy", dtype="float32", checks=[check]).checks[0].passed
    require_backend("torch", "float16")
    assert conformance.run_suite("torch", dtype="float16", checks=[check]).checks == []
