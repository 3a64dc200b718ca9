"""Parity of FC-DenseNet (the Tiramisu) with the best-known public PyTorch code, bfortuner
pytorch_tiramisu (commit c1cf079), plain and with the scSE authors' ChannelSpatialSELayer (ai-med
squeeze_and_excitation acdd26e) after every dense block, on every backend (issue 25); and the two
primitives it brought, ``conv_transpose2d`` and ``center_crop``, against torch and the public code.

tests/data/parity_fcnn/bfortuner.* were made here by torch running the public code (float64 and
float32) on the shared fixtures' recipe (se_multi.init; seed 0): ``FCDenseNet67`` plain and with
scSE at 1 x 3 x 40 x 56 (an odd pooled size, so the transposed convs' 2h + 1 rows are cropped by
one or by none), ``FCDenseNet103`` plain at 32 x 32. Each manifest's ``source`` and ``peer`` say
how; the logits are ``finalConv``'s output (the public forward's LogSoftmax input: the manifest's
``log_softmax_check`` is 0). Kept small: the float64 logits rounded to float32 (the float32 runs
are held to 1e-4, 1000x that rounding) and every 4th (103: 2nd) row and column in float64 (the
float64 run, ~1e-9). The weights are written once as a checkpoint in the public layout and read
through the public loader.
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
#: fixture -> (model, the options its checkpoint implies, its logits' shape)
FIXTURES = {
    "bfortuner.fcdensenet67": ("fcdensenet67", {"se": "none"}, (1, 12, 40, 56)),
    "bfortuner.fcdensenet67_scse": ("fcdensenet67", {"se": "scse"}, (1, 12, 40, 56)),
    "bfortuner.fcdensenet103": ("fcdensenet103", {"se": "none"}, (1, 12, 32, 32)),
}
#: ONNX Runtime and OpenVINO run the whole model as one size-generic graph (Model(x), run_model):
#: op by op, OpenVINO compiles ~300 one-op graphs (~9 s); the export test runs that graph at another size
RUNS = (("numpy", "float64"), ("numpy", "float32"), ("torch", "float32"), ("mlx", "float32"), ("cupy", "float32"),
        ("onnxruntime", "float32"), ("openvino", "float32"))
CASES = [(f, b, d) for f in FIXTURES for b, d in RUNS
         if f != "bfortuner.fcdensenet103" or (b, d) == ("numpy", "float64")]
#: learnable parameters of the public models, measured from pytorch_tiramisu c1cf079 in torch
#: (sum of p.numel() over FCDenseNet57/67/103(n_classes).parameters()); the paper (Jégou et al.,
#: Table 2, CamVid's 11 classes) rounds them to 1.5 M, 3.5 M and 9.4 M
PEER_PARAMS = {("fcdensenet56", 12): 1_376_988, ("fcdensenet67", 12): 3_463_532, ("fcdensenet103", 12): 9_322_348,
               ("fcdensenet56", 11): 1_376_795, ("fcdensenet67", 11): 3_463_243, ("fcdensenet103", 11): 9_322_091}
DENSE_BLOCKS = [f"denseBlocksDown.{i}" for i in range(5)] + ["bottleneck.bottleneck"] + [f"denseBlocksUp.{i}"
                                                                                         for i in range(5)]


def _manifest(fixture: str) -> dict:
    return json.loads((DATA / fixture / "manifest.json").read_text())


def _expected(fixture: str) -> dict[str, np.ndarray]:
    with np.load(DATA / fixture / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def _input(fixture: str) -> np.ndarray:
    m = _manifest(fixture)
    return recipe_input(m["input_shape"], seed=m["seed"])


def _declared(model: str, **kwargs):
    from se_multi.models import build_model

    return build_model(model, **kwargs)


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    """fixture -> (checkpoint path, declaration, native state), each made on first use: the recipe's
    weights in the public layout, written once and read through the public loader (layout detection,
    the options the checkpoint implies, strict key check)."""
    from safetensors.numpy import save_file

    from se_multi.models.loading import load_declared

    made = {}

    def get(fixture: str):
        if fixture not in made:
            model, implied, _ = FIXTURES[fixture]
            m = _manifest(fixture)
            path = tmp_path_factory.mktemp("fcdensenet") / f"{fixture}.safetensors"
            save_file(recipe_state(((k["name"], k["shape"], k["kind"]) for k in m["keys"]), seed=m["seed"]), str(path))
            declaration, native, options = load_declared(model, str(path))
            assert options == {"in_chans": 3, "first_conv_channels": 48, "growth_rate": 16, **implied}
            made[fixture] = path, declaration, native
        return made[fixture]

    return get


# ----------------------------------------------------------------------------- the declaration
@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_declares_the_public_layout_key_for_key(fixture):
    model, implied, _ = FIXTURES[fixture]
    peer = [(k["name"], tuple(k["shape"])) for k in _manifest(fixture)["keys"] if k["kind"] != "int"]
    assert [(key, spec.shape) for key, spec in _declared(model, **implied).param_specs().items()] == peer


@pytest.mark.parametrize("model,classes", sorted(PEER_PARAMS))
def test_parameter_counts_are_the_public_models(model, classes):
    assert _declared(model, num_classes=classes).num_params() == PEER_PARAMS[model, classes]


@pytest.mark.parametrize("se,keys", [("cse", ["SELayer.fc1.weight", "SELayer.fc1.bias", "SELayer.fc2.weight",
                                               "SELayer.fc2.bias"]),
                                     ("sse", ["SELayer.conv.weight", "SELayer.conv.bias"]),
                                     ("scse", ["SELayer.cSE.fc1.weight", "SELayer.cSE.fc1.bias",
                                               "SELayer.cSE.fc2.weight", "SELayer.cSE.fc2.bias",
                                               "SELayer.sSE.conv.weight", "SELayer.sSE.conv.bias"]),
                                     ("none", [])])
def test_each_se_option_adds_the_authors_selayer_to_every_dense_block(se, keys):
    """The plain layout plus, in each of the 11 dense blocks (the bottleneck's included), the scSE
    authors' layer after the block's layers, marked SE, on the channels the block returns."""
    plain, ours = _declared("fcdensenet56", se="none").param_specs(), _declared("fcdensenet56", se=se).param_specs()
    extra = [k for k in ours if k not in plain]
    assert extra == [f"{b}.{k}" for b in DENSE_BLOCKS for k in keys]
    assert all(ours[k].se for k in extra) and not any(s.se for s in plain.values())
    assert [k for k in ours if k in plain] == list(plain)
    if se == "cse":  # r = 2 on: down 0, the whole concatenation 48 + 4 * 12; the bottleneck, its 4 * 12
        assert ours["denseBlocksDown.0.SELayer.fc1.weight"].shape == (48, 96)
        assert ours["bottleneck.bottleneck.SELayer.fc1.weight"].shape == (24, 48)
        assert ours["denseBlocksUp.4.SELayer.fc2.weight"].shape == (48 + 96 + 48, (48 + 96 + 48) // 2)


def test_options_are_checked_with_one_line_errors():
    with pytest.raises(ValueError, match="fcdensenet67: se must be one of none, cse, sse, scse; got 'csse'"):
        _declared("fcdensenet67", se="csse")
    with pytest.raises(ValueError, match="fcdensenet103: growth_rate must be a positive int; got 0"):
        _declared("fcdensenet103", growth_rate=0)
    assert _declared("fcdensenet56", in_chans=1).param_specs()["firstconv.weight"].shape == (48, 1, 3, 3)


# ----------------------------------------------------------------------------- the two primitives
@pytest.mark.parametrize("xs,ws,stride,padding", [
    ((2, 6, 5, 4), (6, 4, 3, 3), (2, 2), (0, 0, 0, 0)),
    ((1, 5, 3, 4), (5, 3, 4, 4), (2, 2), (1, 1, 1, 1)),
    ((1, 4, 5, 6), (4, 6, 3, 2), (2, 3), (1, 0, 0, 1)),  # asymmetric: the full output cropped
    ((1, 3, 1, 1), (3, 2, 3, 3), (1, 1), (0, 0, 0, 0)),
])
def test_the_reference_conv_transpose2d_is_torch_in_float64(xs, ws, stride, padding):
    torch = pytest.importorskip("torch")
    from se_multi import reference as ref

    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[1])
    top, bottom, left, right = padding
    want = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                                stride).numpy()
    want = want[:, :, top : want.shape[2] - bottom, left : want.shape[3] - right]
    got = ref.conv_transpose2d(x, w, b, stride, padding)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    if top == bottom and left == right:  # torch's own padding crops the same
        np.testing.assert_allclose(got, torch.nn.functional.conv_transpose2d(
            torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride, (top, left)).numpy(),
            rtol=1e-13, atol=1e-13)


def test_center_crop_is_the_public_codes():
    """pytorch_tiramisu's ``center_crop(layer, max_height, max_width)``: ``layer[:, :, (h - H) // 2 :
    ..., (w - W) // 2 : ...]``, written out here from its source."""
    from se_multi import reference as ref

    x = np.arange(2 * 3 * 9 * 8, dtype=np.float64).reshape(2, 3, 9, 8)
    for h, w in ((9, 8), (8, 7), (6, 5), (1, 1)):
        xy1, xy2 = (8 - w) // 2, (9 - h) // 2
        np.testing.assert_array_equal(ref.center_crop(x, np.zeros((2, 1, h, w))), x[:, :, xy2 : xy2 + h, xy1 : xy1 + w])
    from se_multi.shapes import ShapeError

    with pytest.raises(ShapeError, match="center_crop: cannot crop a 2x3x9x8 map to the size of a 2x1x10x8 one"):
        ref.center_crop(x, np.zeros((2, 1, 10, 8)))


# ----------------------------------------------------------------------------- the logits
@pytest.mark.parametrize("fixture,backend,dtype", CASES, ids=[f"{f.split('.')[1]}-{b}-{d}" for f, b, d in CASES])
def test_logits_match_the_public_code(peers, fixture, backend, dtype):
    from se_multi.dispatch import get_backend, to_numpy
    from se_multi.models import Model

    require_backend(backend, dtype)
    _, declaration, native = peers(fixture)
    ops = get_backend(backend, dtype=dtype)
    module = declaration.bind(native, ops)
    if backend in ("onnxruntime", "openvino"):  # the whole graph (module comment of RUNS)
        logits = np.asarray(to_numpy(Model(FIXTURES[fixture][0], module, ops)(_input(fixture))), np.float64)
    else:  # op by op (eager)
        logits = np.asarray(ops.to_numpy(ops.output(module(ops, ops.input(_input(fixture))))), np.float64)
    del module
    gc.collect()
    want = _expected(fixture)
    every = next(k for k in want if k.startswith("logits_every"))
    step = int(every.removeprefix("logits_every"))
    assert logits.shape == FIXTURES[fixture][2]
    # float64: the same function in the same precision (measured 1.2e-15 to 1.5e-15); float32: measured
    # 2.6e-7 (onnxruntime) to 1.0e-6 (mlx); 103's fixture keeps every 2nd row and column alone
    tol = 1e-9 if dtype == "float64" else MODEL_TOLERANCES[dtype]
    if dtype == "float64" or "logits_float32" not in want:
        err = rel_err(logits[..., ::step, ::step], want[every])
    else:
        err = rel_err(logits, want["logits_float32"])
    assert err <= tol, f"{fixture} on {backend}/{dtype}: max rel err {err:.3g} > {tol:g}"


def test_the_se_blocks_and_the_combination_matter(peers):
    """The SE fixture would catch a missing SE block (its logits move by ~190% without them), and the
    paper's ``add`` is another function than the authors' ``max``."""
    from se_multi.dispatch import get_backend

    assert _manifest("bfortuner.fcdensenet67_scse")["without_se_rel_diff"] > 0.5
    _, declaration, native = peers("bfortuner.fcdensenet67_scse")
    ops = get_backend("numpy", dtype="float32")
    x = ops.input(_input("bfortuner.fcdensenet67_scse")[..., :32, :32])
    ours = ops.to_numpy(declaration.bind(native, ops)(ops, x))
    added = ops.to_numpy(_declared("fcdensenet67", se="scse", scse_mode="add").bind(native, ops)(ops, x))
    assert rel_err(added, ours) > 1e-2


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_onnx_export_runs_on_the_engines(peers, engine):
    """se_multi's export of FC-DenseNet67 with scSE (ConvTranspose; the crop a Slice whose window is
    read from the skip's Shape at run time): the file at the fixture's 40x56, run by the engine,
    against the peer; and the engine's own size-generic graph (traced at 40x56) at 37x45, whose crops
    drop other rows and columns, against float64 NumPy."""
    from onnx import checker

    from se_multi.dispatch import get_backend, to_numpy
    from se_multi.models import Model
    from se_multi.onnx_export import build_onnx

    require_backend(engine, "float32")
    fixture = "bfortuner.fcdensenet67_scse"
    path, declaration, native = peers(fixture)
    proto = build_onnx("fcdensenet67", weights=str(path), input_size=(40, 56))
    checker.check_model(proto)
    types = [n.op_type for n in proto.graph.node]
    assert types.count("ConvTranspose") == 5 and {"Shape", "Slice", "Div"} <= set(types)
    ops = get_backend(engine, dtype="float32")
    err = rel_err(ops.engine(proto, threads=1)(_input(fixture)), _expected(fixture)["logits_float32"])
    assert err <= MODEL_TOLERANCES["float32"], f"{engine}, the exported file: {err:.3g}"

    model = Model("fcdensenet67", declaration.bind(native, ops), ops)
    model(_input(fixture))  # traced at 40x56
    reference = get_backend("numpy", dtype="float64")
    x = recipe_input((1, 3, 37, 45), seed=1)
    want = reference.to_numpy(declaration.bind(native, reference)(reference, reference.input(x.astype(np.float64))))
    got = to_numpy(model(x))
    assert got.shape == want.shape == (1, 12, 37, 45)
    err = rel_err(got, want)
    assert err <= MODEL_TOLERANCES["float32"], f"{engine} at 37x45: {err:.3g}"


def test_validate_checks_the_family_at_every_float_dtype_not_int8():
    """The narrowed FC-DenseNet56 with scSE is validate's case of the family; int8 is left out
    (quantized, the plain model errs past int8's bound on both engines: the registration's note)."""
    from se_multi import conformance

    assert ("fcdensenet56", (2, 3, 37, 45)) in conformance.model_cases()
    check = conformance.model_check("fcdensenet56", (2, 3, 37, 45))
    assert check.dtypes == ("float64", "float32", "float16", "bfloat16")
    assert "growth_rate=4" in check.name and "se='scse'" in check.name
    assert conformance.run_suite("numpy", dtype="float32", checks=[check]).checks[0].passed
