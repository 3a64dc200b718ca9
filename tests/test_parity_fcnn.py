"""Parity of the scSE authors' F-CNNs with the authors' own code, on every backend (issue 25):
QuickNAT (ai-med quickNAT_pytorch, nn-common-modules 590df23, squeeze_and_excitation HEAD) and
SD-Net (the same blocks as the authors' SDnetSegmentor composes them).

tests/data/parity_fcnn/<fixture> holds each fixture's manifest (seed, input shape, the authors' keys)
and the peer's logits, kept small: its float64 logits rounded to float32 (the float32 runs are held
to 1e-4, 1000x that rounding) and every 4th row and column of them in float64 (the float64 run,
~1e-9). QuickNAT's is the shared fixture cut down; SD-Net's was made here from the authors' code
(the manifest's ``source`` says how). Their own folder, not tests/data/parity, whose folders are the
fixture table of tests/_parity.py. The weights are the fixture README's recipe (se_multi.init, as
_parity uses it), written once as a checkpoint in the authors' layout and read through the public
loader.
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

DATA = Path(__file__).parent / "data" / "parity_fcnn"
#: model -> (fixture folder, its logits' shape, the options its checkpoint implies)
FIXTURES = {"quicknat": ("aimed.quicknat_csse", (1, 28, 64, 96), {}),
            "sdnet": ("aimed.sdnet_sse", (1, 28, 40, 56), {"num_filters": 64, "in_chans": 1, "se": "sse", "kernel": 7})}
RUNS = (("numpy", "float64"), ("numpy", "float32"), ("torch", "float32"), ("mlx", "float32"), ("cupy", "float32"),
        ("onnxruntime", "float32"), ("openvino", "float32"))


def _manifest(model: str) -> dict:
    return json.loads((DATA / FIXTURES[model][0] / "manifest.json").read_text())


def _expected(model: str) -> dict[str, np.ndarray]:
    with np.load(DATA / FIXTURES[model][0] / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def _input(model: str) -> np.ndarray:
    m = _manifest(model)
    return recipe_input(m["input_shape"], seed=m["seed"])


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def peer(request, tmp_path_factory):
    """(model, checkpoint path, declaration, native state): the recipe's weights in the authors'
    layout, written once and read once through the public loader (layout detection, strict key check)."""
    from safetensors.numpy import save_file

    from se_multi.models.loading import load_declared

    model = request.param
    m = _manifest(model)
    path = tmp_path_factory.mktemp(model) / f"{FIXTURES[model][0]}.safetensors"
    save_file(recipe_state(((k["name"], k["shape"], k["kind"]) for k in m["keys"]), seed=m["seed"]), str(path))
    declaration, native, options = load_declared(model, str(path))
    assert options == FIXTURES[model][2], "what the authors' checkpoint implies about the model"
    return model, path, declaration, native


def _declared(model: str, **kwargs):
    from se_multi.models import build_model

    return build_model(model, **kwargs)


@pytest.mark.parametrize("model", sorted(FIXTURES))
def test_declares_the_authors_layout_key_for_key(model):
    peer = [(k["name"], tuple(k["shape"])) for k in _manifest(model)["keys"] if k["kind"] != "int"]
    options = {"se": "scse"} if model == "quicknat" else {"se": "sse"}  # each fixture's SE layer
    assert [(key, spec.shape) for key, spec in _declared(model, **options).param_specs().items()] == peer


#: the blocks that declare an SELayer (the bottleneck's is never run)
_SE_BLOCKS = {"quicknat": [f"encode{i}" for i in (1, 2, 3, 4)] + ["bottleneck"] + [f"decode{i}" for i in (1, 2, 3, 4)],
              "sdnet": [f"encode{i}" for i in (1, 2, 3)] + ["bottleneck"] + [f"decode{i}" for i in (1, 2, 3)]}


@pytest.mark.parametrize("model", sorted(FIXTURES))
@pytest.mark.parametrize("se,keys", [("cse", ["SELayer.fc1.weight", "SELayer.fc1.bias", "SELayer.fc2.weight",
                                               "SELayer.fc2.bias"]),
                                     ("sse", ["SELayer.conv.weight", "SELayer.conv.bias"]),
                                     ("scse", [f"SELayer.{k}" for k in ("cSE.fc1.weight", "cSE.fc1.bias", "cSE.fc2.weight",
                                                                         "cSE.fc2.bias", "sSE.conv.weight", "sSE.conv.bias")]),
                                     ("none", [])])
def test_each_se_option_is_the_authors_selayer(model, se, keys):
    """ChannelSELayer (nn.Linear, r = 2), SpatialSELayer, ChannelSpatialSELayer, none: the plain
    layout plus each block's SELayer under the authors' names, marked SE."""
    plain, ours = _declared(model, se="none").param_specs(), _declared(model, se=se).param_specs()
    extra = {k: s for k, s in ours.items() if k not in plain}
    assert sorted(extra) == sorted(f"{b}.{k}" for b in _SE_BLOCKS[model] for k in keys)
    assert all(s.se for s in extra.values()) and not any(s.se for s in plain.values())
    if se == "cse":
        assert ours["encode1.SELayer.fc1.weight"].shape == (32, 64)


@pytest.mark.parametrize("backend,dtype", RUNS, ids=[f"{b}-{d}" for b, d in RUNS])
def test_logits_match_the_authors_code(peer, backend, dtype):
    from se_multi.dispatch import get_backend

    require_backend(backend, dtype)
    model, _, declaration, native = peer
    ops = get_backend(backend, dtype=dtype)
    # op by op (eager): the whole graphs of ONNX Runtime and OpenVINO are the export test's
    module = declaration.bind(native, ops)
    logits = np.asarray(ops.to_numpy(ops.output(module(ops, ops.input(_input(model))))), np.float64)
    del module
    gc.collect()
    want = _expected(model)
    assert logits.shape == want["logits_float32"].shape == FIXTURES[model][1]
    if dtype == "float64":  # the same function in the same precision (measured 2e-15)
        err, tol = rel_err(logits[..., ::4, ::4], want["logits_every4"]), 1e-9
    else:
        err, tol = rel_err(logits, want["logits_float32"]), MODEL_TOLERANCES[dtype]
    assert err <= tol, f"{model} on {backend}/{dtype}: max rel err {err:.3g} > {tol:g}"


def test_the_se_blocks_and_the_combination_matter(peer):
    """The fixture would catch a missing SE block (its logits move by over 50% without them), and
    the paper's ``add`` is another function than the authors' ``max``."""
    from se_multi.dispatch import get_backend

    model, _, declaration, native = peer
    assert _manifest(model)["without_se_rel_diff"] > 0.5
    ops = get_backend("numpy", dtype="float64")
    x = ops.input(_input(model)[..., :32, :48])
    plain = {k: v for k, v in native.items() if ".SELayer." not in k}
    without = ops.to_numpy(_declared(model, se="none").bind(plain, ops)(ops, x))
    ours = ops.to_numpy(declaration.bind(native, ops)(ops, x))
    assert rel_err(without, ours) > 0.5
    if model == "quicknat":
        added = ops.to_numpy(_declared(model, scse_mode="add").bind(native, ops)(ops, x))
        assert rel_err(added, ours) > 1e-2


def test_sdnet_reads_each_checkpoints_settings(tmp_path):
    """An SD-Net checkpoint says which SE layer, kernel, width and input channels it was built with;
    one asked to load as something else gets the key check's error, naming the keys."""
    from safetensors.numpy import save_file

    from se_multi.dispatch import get_backend
    from se_multi.models.loading import load_declared
    from se_multi.nn import StateDictError

    for se, kernel, width, chans in (("scse", 5, 8, 1), ("cse", 3, 16, 2), ("none", 7, 8, 1)):
        specs = _declared("sdnet", se=se, kernel=kernel, num_filters=width, in_chans=chans, num_classes=4).param_specs()
        path = tmp_path / f"{se}.safetensors"
        save_file({k: np.zeros(s.shape, np.float32) for k, s in specs.items()}, str(path))
        declaration, _, options = load_declared("sdnet", str(path))
        assert options == {"se": se, "kernel": kernel, "num_filters": width, "in_chans": chans}
        assert declaration.param_specs().keys() == specs.keys() and declaration.num_classes == 4
    declaration, native, _ = load_declared("sdnet", str(tmp_path / "none.safetensors"), se="sse")
    with pytest.raises(StateDictError, match="missing key.*encode1.SELayer.conv.weight"):
        declaration.bind(native, get_backend("numpy"))


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_onnx_export_runs_on_the_engines(peer, engine):
    """se_multi's export (MaxPool's indices, ScatterElements unpool) run by the engine as one
    size-generic graph: the fixture's input and a smaller odd-sized one, whose 5-row map pools to
    2 rows and unpools back to 5, against float64 NumPy."""
    from se_multi.dispatch import get_backend, to_numpy
    from se_multi.models import Model
    from se_multi.onnx_export import build_onnx

    require_backend(engine, "float32")
    model_name, path, declaration, native = peer
    x = _input(model_name)
    proto = build_onnx(model_name, weights=str(path), input_size=x.shape[2:])
    assert {"MaxPool", "ScatterElements"} <= {n.op_type for n in proto.graph.node}
    pools = 4 if model_name == "quicknat" else 3
    assert [len(n.output) for n in proto.graph.node if n.op_type == "MaxPool"] == [2] * pools
    ops = get_backend(engine, dtype="float32")
    model = Model(model_name, declaration.bind(native, ops), ops)
    reference = get_backend("numpy", dtype="float64")
    bound = declaration.bind(native, reference)
    assert model.in_chans == 1
    small = (40, 56) if model_name == "quicknat" else (40, 24)  # 40 = 5 * 2**3: a 5-row map pools to 2
    for x in (x, x[..., :small[0], :small[1]]):
        want = reference.to_numpy(bound(reference, reference.input(x.astype(np.float64))))
        err = rel_err(to_numpy(model(x)), want)
        assert err <= MODEL_TOLERANCES["float32"], f"{model_name} on {engine} at {x.shape}: {err:.3g}"


@pytest.mark.parametrize("model", sorted(FIXTURES))
def test_validate_checks_the_whole_model_in_float64_and_float32_only(model):
    """A max-pool window whose two largest values lie within float16's rounding picks either, and
    the unpool moves the value: the whole model is checked where that is rare (its ops everywhere)."""
    from se_multi import conformance

    check = conformance.model_check(model, (2, 1, 16, 24))
    assert check.dtypes == ("float64", "float32")
    assert conformance.run_suite("numpy", dtype="float32", checks=[check]).checks[0].passed
    require_backend("torch", "float16")
    assert conformance.run_suite("torch", dtype="float16", checks=[check]).checks == []


@pytest.mark.parametrize("model,options,message", [
    ("quicknat", {"se": "both"}, "quicknat: se must be one of none, cse, sse, scse; got 'both'"),
    ("sdnet", {"kernel": 4}, "sdnet: kernel must be a positive odd int"),
    ("sdnet", {"num_filters": 0}, "sdnet: num_filters must be a positive int; got 0"),
    ("quicknat", {"scse_mode": "min"}, "quicknat: scse_mode must be 'max' .* or 'add' .*; got 'min'")])
def test_bad_options_are_one_clear_error(model, options, message):
    with pytest.raises(ValueError, match=message):
        _declared(model, **options)
