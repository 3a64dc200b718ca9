"""ONNX export (se_multi.onnx_export) and the onnxruntime backend.

Expected values come from the NumPy float64 reference backend and the peer fixtures,
never from the exporter itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

import se_multi  # noqa: E402
from se_multi import nn  # noqa: E402
from se_multi import reference as ref  # noqa: E402
from se_multi.backend import BackendUnavailable  # noqa: E402
from se_multi.backends.onnx_fed import serialized  # noqa: E402
from se_multi.models import build_model, create_model, list_models  # noqa: E402
from se_multi.onnx_export import OnnxExportError, OnnxRecorder, build_onnx, export_onnx  # noqa: E402

from _parity import FIXTURE_MODELS, expected, rel_err  # noqa: E402
from conftest import require_backend  # noqa: E402

#: small enough to keep the whole file fast, divisible by 32 as the U-Net needs
SIZE = (64, 64)


def _x(shape=(2, 3, *SIZE), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, shape).astype(np.float32)


def _ort():
    return se_multi.get_backend("onnxruntime")


def _run(proto, x, dtype="float32"):
    """``proto`` (a ModelProto, or one serialized) run on an ONNX Runtime session."""
    sess = se_multi.get_backend("onnxruntime", dtype=dtype).session(serialized(proto))
    return sess.run(None, {"input": x})[0]


def _reference(name, x, **kwargs):
    return create_model(name, backend="numpy", dtype="float64", **kwargs)(x.astype(np.float64))


# =========================================================================== every model
@pytest.mark.parametrize("name", list_models())
def test_every_model_exports_checks_and_matches_the_reference(seeded_model, name):
    """Every model, deep ones included (the ResNet family's names without a parity fixture get
    their onnxruntime check here): the export's cost is paid anyway, a run at 64x64 adds little."""
    *_, reference = seeded_model(name)  # one bind serves both sides
    # 64x64, or the one size a model takes (BN-Inception's fixed 7x7 pool, VGG's folded classifier)
    size = SIZE if reference.input_sizes.error(reference.in_chans, *SIZE) is None else reference.input_sizes.smallest()
    # serialized as built (what export_onnx writes), once for the checker and the session: the
    # message and protobuf's serializing were 2.5x VGG-16's 550 MB of weights at their peak, and
    # the largest memory peak of the test command's workers (2026-12-05)
    data = build_onnx(reference, input_size=size, as_bytes=True)
    # full_check: the checker also runs strict shape inference with type checks
    # (infer_shapes(check_type=True, strict_mode=True)), which this test ran a second time
    onnx.checker.check_model(data, full_check=True)
    x = _x((2, reference.in_chans, *size))  # RGB, or QuickNAT's one MRI channel
    y = _run(data, x)
    assert not any(n.domain for n in onnx.ModelProto.FromString(data).graph.node), "custom-domain op in the graph"
    del data
    expect = reference(x.astype(np.float64))
    assert y.shape == expect.shape
    assert rel_err(y, expect) <= 1e-4


ABLATIONS = [
    ("seresnet50", dict(se_integration=mode)) for mode in ("pre", "post", "identity", "conv3x3")
] + [
    ("seresnet50", dict(reduction=8, se_stages=(3, 4), se_bias=False)),
    ("se_mobilenetv1_100", dict(se_position="depthwise")),
]


@pytest.mark.parametrize("name,kwargs", ABLATIONS, ids=[f"{n}-{'-'.join(map(str, k.values()))}" for n, k in ABLATIONS])
def test_ablation_options_export(name, kwargs):
    proto = build_onnx(name, input_size=(32, 32), batch=1, **kwargs)
    onnx.checker.check_model(proto, full_check=True)
    x = _x((1, 3, 32, 32))
    assert rel_err(_run(proto, x), _reference(name, x, **kwargs)) <= 1e-4


def test_se_is_standard_ops_in_4d_form():
    proto = build_onnx("seresnet50", input_size=(32, 32))
    consumers = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    chains = []
    for pool in (n for n in proto.graph.node if n.op_type == "GlobalAveragePool"):
        chain, node = [pool.op_type], pool
        while len(chain) < 6 and len(consumers.get(node.output[0], [])) == 1:
            node = consumers[node.output[0]][0]
            chain.append(node.op_type)
        chains.append(chain)
    # squeeze -> 1x1 conv -> relu -> 1x1 conv -> sigmoid -> channel scale: no Flatten/Gemm/Unsqueeze
    se_chain = ["GlobalAveragePool", "Conv", "Relu", "Conv", "Sigmoid", "Mul"]
    assert chains.count(se_chain) == 16  # one per bottleneck unit
    assert chains.count(["GlobalAveragePool", "Flatten", "Gemm", "Identity"]) == 1  # the classifier


# =========================================================================== parity with the peers
@pytest.mark.parametrize("fixture", sorted(FIXTURE_MODELS))
def test_whole_graph_matches_peer_logits(peer_results, fixture):
    """The fixture's checkpoint loaded through ``create_model(weights=path)`` on ONNX Runtime: the
    session-wide run the parity modules' onnxruntime tests read (``peer_results``), not a second one."""
    require_backend("onnxruntime")
    exp = expected(fixture)
    logits, _ = peer_results(fixture, "onnxruntime", "float32")
    # the model call took the whole-graph path: one session, held by the model, no one-op graphs
    assert peer_results.graphs(fixture, "onnxruntime", "float32") == (1, 0)
    assert logits.shape == exp["logits"].shape
    assert rel_err(logits, exp["logits"]) <= 1e-4
    if "logits_without_se" in exp:  # the SE path is in the graph: dropping it is far outside tolerance
        assert rel_err(logits, exp["logits_without_se"]) > 1e-2


def test_exported_file_matches_peer_logits(tmp_path, peer_checkpoint):
    exp = expected("seresnet50")
    path = export_onnx("seresnet50", tmp_path / "m.onnx", weights=str(peer_checkpoint("seresnet50")),
                       input_size=exp["x"].shape[2:])
    runner = _ort().load(path)
    assert rel_err(runner(exp["x"]), exp["logits"]) <= 1e-4
    assert runner.metadata["se_multi.model"] == "seresnet50"


# =========================================================================== op by op
# (the whole conformance suite on onnxruntime, float32 and float16: tests/test_conformance.py's
# test_backend_conforms, which also checks that every check ran; it ran here a second time)
@pytest.mark.parametrize("size,kernel,stride,pad", [(10, 3, 2, 0), (11, 3, 2, 1), (7, 2, 2, 1), (12, 3, 3, 1),
                                                    (8, 3, 2, 1), (5, 3, 3, 1)])
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_ceil_mode_pools_follow_pytorch(backend, size, kernel, stride, pad, count_include_pad):
    """Both ONNX engines, PyTorch's rules: OpenVINO needs the backend's Pad/Slice forms for the
    overhanging window's divisor and for a last window starting in the right padding."""
    require_backend(backend)
    x = np.random.default_rng(1).standard_normal((1, 3, size, size + 1))
    ops = se_multi.get_backend(backend)
    k, s, p = (kernel, kernel), (stride, stride), (pad, pad)
    np.testing.assert_allclose(ops.avg_pool2d(x, k, s, p, True, count_include_pad),
                               ref.avg_pool2d(x, k, s, p, True, count_include_pad), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.max_pool2d(x, k, s, p, True), ref.max_pool2d(x, k, s, p, True), rtol=1e-6)


@pytest.mark.parametrize("name,dtype,symbolic_hw", [
    ("seresnet50", "float32", True),  # scalars, int lists, a linear weight used as a 1x1 conv
    ("quicknat", "float32", False),   # int64 max-pool indices, max-unpool, PReLU slopes
    ("mobilenetv3_small_100", "float16", True),
])
def test_a_graph_traced_as_bytes_parses_as_the_traced_message(name, dtype, symbolic_hw):
    """What the engines read (the model serialized as traced, its weights never in a message) is
    the ModelProto :meth:`OnnxRecorder.trace` gives, field for field, read back by protobuf."""
    model = create_model(name, backend="onnxruntime", dtype=dtype)
    shape = ("batch", model.in_chans, 64, 64)
    traced = OnnxRecorder(dtype).trace(model.module, shape, symbolic_hw=symbolic_hw)
    data = OnnxRecorder(dtype).trace(model.module, shape, symbolic_hw=symbolic_hw, as_bytes=True)
    assert len(traced.graph.initializer) > 10
    assert onnx.ModelProto.FromString(data) == traced
    # what export_onnx writes: the model with its metadata, serialized as built
    kwargs = dict(input_size=(64, 64), dtype=dtype)
    assert onnx.ModelProto.FromString(build_onnx(model, **kwargs, as_bytes=True)) == build_onnx(model, **kwargs)
    # no weight written twice: beyond the message's own size, only each weight's graph-field framing
    assert traced.ByteSize() < len(data) < traced.ByteSize() + 8 * len(traced.graph.initializer)


def test_a_model_past_protobuf_s_limit_is_one_clear_error_and_no_file(tmp_path, monkeypatch):
    """Bytes past 2 GiB are no ONNX file any reader parses (protobuf's own serializer refuses them):
    export names the limit and writes nothing. The limit is lowered to seresnet18's size here."""
    from se_multi.backends import onnx_recorder

    monkeypatch.setattr(onnx_recorder, "MAX_MODEL_BYTES", 10 * 2**20)
    out = tmp_path / "big.onnx"
    with pytest.raises(OnnxExportError, match=r"the model is 0\.04 GiB serialized; an ONNX file holds at most 0\.01 GiB"):
        export_onnx("seresnet18", out, input_size=(32, 32), check=False)
    assert not out.exists()


def test_a_model_s_session_keeps_no_copy_of_its_serialized_graph():
    """ONNX Runtime keeps the bytes a session is made from for the session's life; the session of a
    bound model lets them go, so a model's memory is its weights and the session, not the weights
    twice more. tracemalloc sees Python's bytes, so a kept copy shows as the graph's size."""
    import tracemalloc

    model = create_model("seresnet18", backend="onnxruntime")  # 11.8M weights: 47 MB in float32
    graph_bytes = 4 * sum(int(np.prod(p.shape)) for p in build_model("seresnet18").param_specs().values())
    tracemalloc.start()
    try:
        model(_x((1, 3, 64, 64)))  # exports, serializes and makes the session
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak >= graph_bytes, "the serialized graph was never made: the test measures nothing"
    assert kept < graph_bytes / 4, f"{kept / 2**20:.0f} MiB kept after the session was made"


def test_op_sessions_are_cached_by_signature():
    ops = _ort()
    x = np.ones((1, 4, 5, 5), np.float32)
    ops.relu(x), ops.relu(x * 2), ops.relu(np.ones((1, 4, 6, 5)))
    assert len(ops._op_graphs) == 2


def test_session_options_are_for_inference():
    ops = _ort()
    so = ops.session_options()
    import onnxruntime

    assert so.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.intra_op_num_threads == ops.threads >= 1


def test_omp_num_threads_is_the_default_thread_count(monkeypatch):
    """Ray sets OMP_NUM_THREADS to each actor's CPU share; an explicit threads= still wins."""
    from se_multi.cpu import usable_cores as cores

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _ort().session_options().intra_op_num_threads == 1
    assert se_multi.get_backend("onnxruntime", threads=3).session_options().intra_op_num_threads == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "0")
    assert _ort().threads == cores()


def test_cuda_device_needs_the_cuda_provider():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert se_multi.get_backend("onnxruntime", device="cuda").providers[0][0] == "CUDAExecutionProvider"
    else:
        with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider"):
            se_multi.get_backend("onnxruntime", device="cuda")


# =========================================================================== a tiny model from se_multi.nn
class _Tiny(nn.Module):
    """Every op family the exporter maps, in one small graph."""

    def __init__(self):
        super().__init__()
        self.stem = nn.ConvNormAct(3, 8, 3, stride=2, act="hard_swish", conv="conv1", bn="bn1")
        self.se = nn.SqueezeExcite(8, 4, gate="hard_sigmoid", conv_fc=False)
        self.scse = nn.SCSE(8, reduction=4, mode="max")
        self.head = nn.ConvNormAct(16, 4, 1, act="relu6", bias=True, bn=None, conv="head")

    def forward(self, ops, x):
        y = self.stem(ops, x)
        y = ops.avg_pool2d(self.se(ops, y), (3, 3), (2, 2), (1, 1), True, False)
        y = ops.upsample_nearest2x(ops.max_pool2d(self.scse(ops, y), (2, 2), (2, 2), (0, 0), True))
        y = ops.concat_channels([y, y])
        return self.head(ops, y)


def _bind_tiny(ops, seed=0):
    from se_multi.init import recipe_state

    module = _Tiny()
    specs = module.param_specs()
    return module.bind(recipe_state(((k, s.shape, s.kind) for k, s in specs.items()), seed=seed), ops)


def test_tiny_model_whole_graph_and_op_by_op_equal_the_reference():
    x = _x((2, 3, 20, 18))
    expect = _bind_tiny(se_multi.get_backend("numpy", dtype="float64"))(
        se_multi.get_backend("numpy", dtype="float64"), x.astype(np.float64))
    ops = _ort()
    module = _bind_tiny(ops)
    assert rel_err(ops.run_model(module, x), expect) <= 1e-5
    assert rel_err(module(ops, ops.input(x)), expect) <= 1e-5  # op by op, one-op graphs


def test_fp16_export(tmp_path):
    path = export_onnx("mobilenetv3_large_100", tmp_path / "m16.onnx", input_size=SIZE, dtype="float16")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {t.data_type for t in proto.graph.initializer if t.dims and len(t.dims) > 1} == {onnx.TensorProto.FLOAT16}
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    x = _x()
    y = _ort().load(path)(x.astype(np.float16))
    assert y.dtype == np.float16
    assert rel_err(y, _reference("mobilenetv3_large_100", x)) <= 1e-2


def test_fixed_batch_and_dynamic_batch():
    fixed = build_onnx("mobilenetv1_100", input_size=(32, 32), batch=3)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [3, 3, 32, 32]
    dynamic = build_onnx("mobilenetv1_100", input_size=(32, 32))
    assert dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for n in (1, 4):
        assert _run(dynamic, _x((n, 3, 32, 32))).shape == (n, 1000)


def test_metadata_carries_preprocessing_and_labels():
    from se_multi.pretrained import get_config, imagenet_labels

    proto = build_onnx("seresnet50", input_size=(32, 32))
    meta = {p.key: p.value for p in proto.metadata_props}
    cfg = get_config("seresnet50")
    assert json.loads(meta["input_names"]) == [proto.graph.input[0].name]
    assert json.loads(meta["output_names"]) == [proto.graph.output[0].name]
    assert json.loads(meta["mean"]) == list(cfg.mean) and json.loads(meta["std"]) == list(cfg.std)
    assert json.loads(meta["input_size"]) == list(cfg.input_size)
    assert meta["interpolation"] == cfg.interpolation
    assert meta["label_set"] == "imagenet-1k"
    assert tuple(meta["labels"].split("\n")) == imagenet_labels()


def test_segmentation_model_has_no_imagenet_labels():
    meta = {p.key: p.value for p in build_onnx("unet_se_resnet50_scse", input_size=(32, 32)).metadata_props}
    assert "labels" not in meta


def test_cli_export(tmp_path, capsys):
    from se_multi.cli import main

    out = tmp_path / "m.onnx"
    assert main(["export", "se_mobilenetv1_100", str(out), "--input-size", "32", "32", "--fp16"]) == 0
    assert "float16" in capsys.readouterr().out
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert main(["export", "se_mobilenetv1_100", str(out), "--opset", "3"]) == 3
    assert "opset" in capsys.readouterr().err


# =========================================================================== bad inputs
def test_opset_too_old_for_an_op_names_the_minimum():
    with pytest.raises(OnnxExportError, match=r"HardSwish needs opset >= 14; got opset 13"):
        build_onnx("mobilenetv3_large_100", input_size=(32, 32), opset=13)
    build_onnx("mobilenetv1_100", input_size=(32, 32), opset=13)  # no HardSwish: 13 is fine


@pytest.mark.parametrize("kwargs,match", [
    (dict(opset=9), r"opset must be an integer in \[13, "),
    (dict(dtype="bfloat16"), "dtype float32, float16"),
    (dict(batch=0), "batch must be 'dynamic' or a positive integer"),
    (dict(input_size=(32,)), r"input_size must be \(H, W\)"),
])
def test_bad_export_options(kwargs, match):
    with pytest.raises(OnnxExportError, match=match):
        build_onnx("mobilenetv1_100", **{"input_size": (32, 32), **kwargs})


def test_unsupported_op_use_names_the_op():
    rec = OnnxRecorder()
    vector = rec.global_avg_pool(rec.graph_input("input", (1, 4, 8, 8)))
    with pytest.raises(OnnxExportError, match="MaxPool needs an NCHW feature map"):
        rec.max_pool2d(vector, (2, 2), (2, 2))
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        rec.act("gelu", vector)
    with pytest.raises(OnnxExportError, match="param kind"):
        rec.param(np.zeros(3), "embedding")


def test_corrupt_and_foreign_onnx_files_give_clear_errors(tmp_path):
    ops = _ort()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage that is not protobuf" * 10)
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        ops.load(corrupt)
    h = onnx.helper
    foreign = h.make_model(h.make_graph(
        [h.make_node("Add", ["a", "b"], ["c"])], "adder",
        [h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [3]) for n in "ab"],
        [h.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [3])]))
    onnx.save(foreign, str(tmp_path / "adder.onnx"))
    with pytest.raises(ValueError, match="one NCHW"):
        ops.load(tmp_path / "adder.onnx")
    with pytest.raises(FileNotFoundError):
        ops.load(tmp_path / "missing.onnx")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_loaded_file_goes_to_the_engine_as_its_own_bytes(tmp_path, backend):
    """``load`` parses a file to check its input, then compiles the file's bytes as they are (it
    compiled the parsed proto serialized again: a second copy of every weight)."""
    require_backend(backend)
    from se_multi.dispatch import backend_class

    given = []

    class Recording(backend_class(backend)):
        def engine(self, proto, *args, **kwargs):
            given.append(proto)
            return super().engine(proto, *args, **kwargs)

    path = export_onnx("se_mobilenetv1_100", tmp_path / "m.onnx", input_size=(32, 32))
    x = _x((1, 3, 32, 32))
    y = Recording().load(path)(x)
    assert given == [path.read_bytes()]
    assert rel_err(y, _reference("se_mobilenetv1_100", x)) <= 1e-4
