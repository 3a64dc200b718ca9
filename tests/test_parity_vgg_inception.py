"""Parity of VGG-16-BN (torchvision 0.28), Inception-ResNet-v2 (timm 1.0.31) and BN-Inception
(Cadene pretrainedmodels 0.7.4) with their peers, and their SE versions (issue 25).

tests/data/parity/<fixture> holds each fixture's manifest (seed, input shape, the peer's keys) and
the peer's float64 logits only: the weights are the fixture README's recipe (``_parity``), written
once per fixture as a checkpoint in the peer's own key layout, read once through the public loader
(``load_declared``, what ``create_model(weights=path)`` calls) and bound on each backend; the input
is the recipe's, from the seed. One image (the first of
the fixture's batch: a peer's logits for it do not depend on the others), float64 on NumPy only,
float32 on every other backend (ONNX Runtime and OpenVINO run the graph se_multi exports).
"""

from __future__ import annotations

import gc
import re

import numpy as np
import pytest

from _parity import TWIN_FIXTURES as FIXTURES
from _parity import manifest, expected, peer_input, rel_err, write_peer_checkpoint
from conftest import require_backend
from se_multi.conformance import MODEL_TOLERANCES

#: plain twin -> its SE version (the paper's Table 2 pairs)
SE_TWINS = {"vgg16_bn": "se_vgg16_bn", "inception_resnet_v2": "se_inception_resnet_v2",
            "bninception": "se_bninception"}
RUNS = (("numpy", "float64"), ("torch", "float32"), ("mlx", "float32"), ("cupy", "float32"),
        ("onnxruntime", "float32"), ("openvino", "float32"))


@pytest.fixture(scope="module")
def peer_declared(tmp_path_factory):
    """fixture -> (declaration, native state): the recipe's checkpoint written once in the peer's
    layout and read once through the public loader (``load_declared``: layout detection, the strict
    key and shape check), then bound on each backend. One fixture is held at a time (VGG's
    checkpoint is 553 MB)."""
    from se_multi.models.loading import load_declared

    directory, held = tmp_path_factory.mktemp("vgg_inception_peers"), {}

    def get(fixture):
        if fixture not in held:
            held.clear()
            gc.collect()
            name, kwargs = FIXTURES[fixture]
            path = write_peer_checkpoint(fixture, directory)
            declaration, native, options = load_declared(name, str(path), **kwargs)
            path.unlink()
            assert options == {}, "the peer's checkpoint is the native layout"
            held[fixture] = declaration, native
        return held[fixture]

    return get


def _declared(name, **kwargs):
    from se_multi.models import build_model

    return build_model(name, **kwargs)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_declares_the_peer_layout_key_for_key(fixture):
    """Every tensor of the peer's state dict, in its order and shape, and nothing else (the
    peer's integer ``num_batches_tracked`` counters are bookkeeping no model reads)."""
    name, kwargs = FIXTURES[fixture]
    peer = [(k["name"], tuple(k["shape"])) for k in manifest(fixture)["keys"] if k["kind"] != "int"]
    ours = [(key, spec.shape) for key, spec in _declared(name, **kwargs).param_specs().items()]
    assert ours == peer


@pytest.mark.parametrize("fixture", FIXTURES)
def test_se_twin_is_the_plain_layout_plus_se(fixture):
    """The SE version declares the plain twin's keys (same shapes) plus SE blocks only, so a plain
    checkpoint never loads silently into it: the strict check names the missing SE tensors."""
    from se_multi.nn import StateDictError, check_state

    name, kwargs = FIXTURES[fixture]
    plain, se = _declared(name, **kwargs).param_specs(), _declared(SE_TWINS[name], **kwargs).param_specs()
    extra = {k: s for k, s in se.items() if k not in plain}
    assert {k: s.shape for k, s in se.items() if k in plain} == {k: s.shape for k, s in plain.items()}
    assert extra and all(s.se for s in extra.values()) and not any(s.se for s in plain.values())
    stand_ins = {k: np.broadcast_to(np.float32(1), s.shape) for k, s in plain.items()}
    with pytest.raises(StateDictError, match=r"missing key\(s\): \S*se\.fc1"):
        check_state(se, stand_ins)


@pytest.mark.parametrize("backend,dtype", RUNS, ids=[f"{b}-{d}" for b, d in RUNS])
# the inner loop is the backends (one checkpoint held at a time); under pytest-xdist each fixture's
# runs share one worker, where its checkpoint is written and read once
@pytest.mark.parametrize("fixture", [pytest.param(f, marks=pytest.mark.xdist_group(f"vgg_inception:{f}"))
                                     for f in FIXTURES])
def test_logits_match_peer(peer_declared, fixture, backend, dtype):
    from se_multi.dispatch import get_backend, to_numpy
    from se_multi.models import Model

    require_backend(backend, dtype)
    name, _ = FIXTURES[fixture]
    declaration, native = peer_declared(fixture)
    ops = get_backend(backend, dtype=dtype)
    model = Model(name, declaration.bind(native, ops), ops)
    logits = to_numpy(model(peer_input(fixture)[:1])).astype(np.float64)
    del model
    gc.collect()
    peer = expected(fixture)["logits"][:1]
    assert logits.shape == peer.shape
    err = rel_err(logits, peer)
    # float64: the reference is the same function in the same precision (measured ~1e-15)
    tol = 1e-9 if dtype == "float64" else MODEL_TOLERANCES[dtype]
    assert err <= tol, f"{fixture} on {backend}/{dtype}: max rel err {err:.3g} > {tol:g}"


def test_vgg_refuses_an_input_its_classifier_is_not_folded_for():
    """torchvision's adaptive 7x7 pool is folded into classifier.0 for one input size: another
    size is refused before any backend runs, naming the sizes that fit and the option."""
    from se_multi.tracing import InputSizes

    # error() is what check() raises, less the search for the smallest size that fits (slow on VGG)
    sizes = InputSizes(_declared("vgg16_bn"))
    assert sizes.error(3, 224, 255) is None  # 224..255 a side: the 7x7 map the default is built for
    error = sizes.error(3, 112, 144)
    assert isinstance(error, ValueError) and error.layer == "classifier.0"
    assert re.search(r"3x4 last feature map.*224 to 255 rows and 224 to 255 columns.*img_size=\(H, W\)", str(error))
    folded = InputSizes(_declared("vgg16_bn", img_size=(112, 144)))
    assert folded.error(3, 96, 159) is None and folded.error(3, 128, 144) is not None
    with pytest.raises(ValueError, match="img_size"):
        _declared("vgg16_bn", img_size=(16, 16))


def test_bninception_refuses_sizes_other_than_its_fixed_pool():
    from se_multi.tracing import InputSizes

    sizes = InputSizes(_declared("bninception"))
    assert sizes.error(3, 223, 230) is None
    with pytest.raises(ValueError, match=r"256x256 input does not fit.*fixed 7x7 average pool.*223 to 230"):
        sizes.check("bninception", (1, 3, 256, 256))


def test_vgg_fold_is_torchs_adaptive_pool():
    """The fold's bins are PyTorch's adaptive_avg_pool2d (upsampling 3 -> 7 and shrinking 9 -> 7)."""
    torch = pytest.importorskip("torch")
    from se_multi.models.vgg import adaptive_avg_matrix

    x = np.random.default_rng(0).random((1, 2, 3, 9))
    ours = np.einsum("nchw,ih,jw->ncij", x, adaptive_avg_matrix(3), adaptive_avg_matrix(9))
    peer = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), (7, 7)).numpy()
    np.testing.assert_allclose(ours, peer, rtol=1e-12, atol=0)


def test_se_vgg_gates_every_conv_output():
    """SE-VGG-16 runs an SE gate on every conv's output: the gate multiplies counted on the graph
    that runs are the 13 conv outputs' C*H*W at 224x224 (three 3x3 convs keep the size, each pool
    halves it), and only the stage ends with se_placement="stage". (Its values on every backend
    are the conformance case it declares: se-multi validate runs it against the float64 reference.)"""
    from se_multi.info import model_info

    outputs = [(c, 224 >> stage) for stage, widths in enumerate(((64,) * 2, (128,) * 2, (256,) * 3, (512,) * 3,
                                                                  (512,) * 3)) for c in widths]
    assert model_info("se_vgg16_bn")["se_scale_mults"] == sum(c * s * s for c, s in outputs)
    ends = [outputs[i] for i in (1, 3, 6, 9, 12)]
    assert model_info("se_vgg16_bn", se_placement="stage")["se_scale_mults"] == sum(c * s * s for c, s in ends)


#: SE twins on seeded native weights, at a cheap input (SE-VGG-16: test_se_vgg_gates_every_conv_output)
SE_RUNS = {"se_inception_resnet_v2": ({}, (75, 75)), "se_bninception": ({}, (224, 224))}


@pytest.mark.parametrize("name", SE_RUNS)
def test_se_twin_runs_the_same_on_onnx_export_and_its_se_blocks_matter(name, tmp_path):
    """Seeded SE twin: the ONNX file se_multi exports (checked by onnx's full checker), run by
    ONNX Runtime, agrees with the NumPy reference (both float32); the same weights less the SE blocks (the
    plain twin) give another answer, so every SE block runs. The seeded weights are made once
    (the recipe over the SE twin's keys, as ``create_model(weights=None, seed=3)`` makes them)."""
    from se_multi.dispatch import get_backend
    from se_multi.init import recipe_state
    from se_multi.models import Model
    from se_multi.onnx_export import export_onnx

    require_backend("onnxruntime")
    import onnxruntime as ort

    kwargs, (h, w) = SE_RUNS[name]
    x = np.random.default_rng(1).uniform(-2, 2, (1, 3, h, w)).astype(np.float32)
    declaration = _declared(name, **kwargs)
    specs = declaration.param_specs()
    state = recipe_state(((k, s.shape, s.kind) for k, s in specs.items()), seed=3)
    ops = get_backend("numpy", dtype="float32")  # one bind serves the reference run and the export
    model = Model(name, declaration.bind(state, ops), ops)
    want = model.predict_numpy(x)
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_size=(h, w))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert rel_err(got, want) <= MODEL_TOLERANCES["float32"]
    plain_name = {v: k for k, v in SE_TWINS.items()}[name]
    plain = _declared(plain_name, **kwargs)
    plain_state = {k: state[k] for k in plain.param_specs()}
    without_se = Model(plain_name, plain.bind(plain_state, ops), ops).predict_numpy(x)
    assert rel_err(without_se, want) > 100 * MODEL_TOLERANCES["float32"]


def test_bninception_preprocessing_is_caffe_bgr_0_255():
    """Cadene's checkpoint takes BGR pixels in 0-255 minus 104/117/128: a flat RGB (10, 20, 30)
    image becomes the planes B 30 - 104, G 20 - 117, R 10 - 128."""
    from PIL import Image

    import se_multi

    x = se_multi.preprocess(Image.new("RGB", (300, 260), (10, 20, 30)), "bninception")
    assert x.shape == (1, 3, 224, 224)
    for plane, value in zip(x[0], (30 - 104, 20 - 117, 10 - 128)):
        np.testing.assert_allclose(plane, value, rtol=0, atol=1e-4)
    rgb = se_multi.preprocess(Image.new("RGB", (300, 260), (10, 20, 30)), "vgg16_bn")  # an RGB [0, 1] config
    np.testing.assert_allclose(rgb[0, :, 0, 0], (np.array([10, 20, 30]) / 255 - (0.485, 0.456, 0.406))
                               / (0.229, 0.224, 0.225), rtol=1e-5)


@pytest.mark.parametrize("plain,size", [("vgg16_bn", 224), ("inception_resnet_v2", 224), ("bninception", 224)])
def test_plain_twin_is_its_se_model_less_se(plain, size):
    """The SE-overhead pair: the plain twin has exactly its SE model's non-SE parameters and
    multiply-adds (counted on the graphs that run), so a timing ratio of the two is SE's cost."""
    from se_multi.info import model_info

    se, base = model_info(SE_TWINS[plain], (size, size)), model_info(plain, (size, size))
    assert se["se_params"] > 0 and base["se_params"] == 0
    assert base["params"] == se["params"] - se["se_params"]
    assert base["macs"] == se["macs"] - se["se_macs"]
