"""int8 post-training quantization (se_multi.quantize, se-multi quantize, dtype="int8"): the SE
marks, what each engine keeps in float, calibration, the error report, and a small model end to
end on each installed engine (calibrate, run, error bound). Calibration here is a few images, so
the tests stay short; speed is measured by benchmarks/test_int8.py, not here."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import se_multi
from se_multi.init import recipe_input
from se_multi.backends.int8 import MarkingRecorder, float_nodes, marked_graph, node_roles, quantize_graph
from se_multi.metrics import mask_agreement, max_rel_error, mean_rel_error, topk_agreement
from se_multi.models import create_model
from se_multi.quantize import MODEL_TOLERANCE, CalibrationWarning, calibration_set, output_engine

ENGINES = {"openvino": "nncf", "onnxruntime": "onnxruntime"}
SMALL = "mobilenetv3_small_100"


def _need(engine: str) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip(engine)
    pytest.importorskip(ENGINES[engine])


def _se_calls(name: str) -> dict[str, int]:
    """How often a forward on the NumPy backend calls each SE op (outermost calls only): counted by
    running the model, not from its graph (the U-Net declares one scSE block its forward never runs)."""
    from se_multi.backends.numpy_backend import NumpyBackend

    counts: dict[str, int] = {}
    depth = [0]

    class Counting(NumpyBackend):
        pass

    for op in ("squeeze", "excite", "scale", "scale_add_relu", "mul_channel", "spatial_gate", "mul_pixel", "scse"):
        def wrapped(self, *a, _op=op, **k):
            if depth[0] == 0:
                counts[_op] = counts.get(_op, 0) + 1
            depth[0] += 1
            try:
                return getattr(super(Counting, self), _op)(*a, **k)
            finally:
                depth[0] -= 1
        setattr(Counting, op, wrapped)
    model = create_model(name, backend=Counting("float32"))
    model(recipe_input((1, 3, 64, 64), seed=0))
    return counts


def _graph(name: str):
    pytest.importorskip("onnx")
    return marked_graph(create_model(name, backend="numpy").module)


# ------------------------------------------------------------------ layering
#: what an adapter (a module under backends/) must never import: the models, what preprocesses or
#: calibrates them, and the tools above them
ABOVE_THE_ADAPTERS = ("se_multi.models", "se_multi.quantize", "se_multi.calibration", "se_multi.preprocess",
                      "se_multi.pretrained", "se_multi.predict", "se_multi.bench", "se_multi.conformance",
                      "se_multi.onnx_export", "se_multi.cli", "se_multi.ray_predict", "se_multi.info")


def test_the_int8_adapters_import_no_model_and_no_tool():
    """The int8 engine hooks are adapters (se_multi.backends.int8); calibration data comes from
    above (the module's own default, or se_multi.quantize.calibration): read from the source."""
    from test_layers import import_map

    edges = import_map()
    assert "se_multi.backends.int8" in edges["se_multi.backends.onnx_fed"]
    wrong = {m: sorted(d for d in deps if d.startswith(ABOVE_THE_ADAPTERS))
             for m, deps in edges.items() if m.startswith("se_multi.backends")}
    assert {m: d for m, d in wrong.items() if d} == {}


# ------------------------------------------------------------------ the marks
@pytest.mark.parametrize("name", ["seresnet50", SMALL, "unet_se_resnet50_scse", "resnet50"])
def test_float_nodes_are_every_se_squeeze_gate_and_scale(name):
    calls = _se_calls(name)
    proto = _graph(name)
    kept = float_nodes(proto)
    types = [n.op_type for n in proto.graph.node if n.name in kept]
    c = lambda op: calls.get(op, 0)  # noqa: E731
    gate = "HardSigmoid" if name.startswith("mobilenetv3") else "Sigmoid"
    expected = {"GlobalAveragePool": c("squeeze"), gate: c("excite") + c("spatial_gate"),
                "Mul": c("scale") + c("scale_add_relu") + c("mul_channel") + c("mul_pixel") + 2 * c("scse")}
    expected = {k: v for k, v in expected.items() if v}
    if name == "unet_se_resnet50_scse":
        assert c("scse") > 0 and c("scale_add_relu") == 16  # the encoder's 16 SE blocks and the decoder's scSE
    assert {t: types.count(t) for t in set(types)} == expected
    assert float_nodes(proto, quantize_se=True) == []
    if name == "resnet50":
        assert not node_roles(proto)


def test_marks_change_nothing_but_doc_strings():
    pytest.importorskip("onnx")
    from se_multi.onnx_export import OnnxRecorder

    module = create_model(SMALL, backend="numpy").module
    plain = OnnxRecorder().trace(module, ("batch", 3, 64, 64), symbolic_hw=True)
    marked = MarkingRecorder().trace(module, ("batch", 3, 64, 64), symbolic_hw=True)
    for a, b in zip(plain.graph.node, marked.graph.node, strict=True):
        b.ClearField("doc_string")
        assert a == b
    assert plain.graph.initializer == marked.graph.initializer


# ------------------------------------------------------------------ what each engine keeps in float
def _float_inputs_onnx(q, names) -> dict[str, bool]:
    """For each named node of a QDQ graph: whether none of its activation inputs is a DequantizeLinear output."""
    made_by = {o: n.op_type for n in q.graph.node for o in n.output}
    return {n.name: all(made_by.get(i) != "DequantizeLinear" for i in n.input[:2] if i in made_by)
            for n in q.graph.node if n.name in names}


def _float_inputs_openvino(q, names) -> dict[str, bool]:
    """For each named node of an NNCF-quantized model: whether none of its inputs is a FakeQuantize."""
    out = {}
    for op in q.get_ordered_ops():
        if op.get_friendly_name() in names:
            sources = [i.get_source_output().get_node().get_type_name() for i in op.inputs()]
            out[op.get_friendly_name()] = "FakeQuantize" not in sources
    return out


@pytest.mark.parametrize("engine", list(ENGINES))
def test_se_kept_in_float_by_default_and_quantized_on_request(engine):
    _need(engine)
    proto = _graph(SMALL)
    squeeze_and_scale = [n.name for n in proto.graph.node if n.name in float_nodes(proto)
                         and n.op_type in ("GlobalAveragePool", "Mul")]
    cal = calibration_set(SMALL, 2, held_out=0, warn=False).arrays
    check = _float_inputs_onnx if engine == "onnxruntime" else _float_inputs_openvino
    # where quantizers go is decided before bias correction, which only moves biases: the fast one
    # (NNCF's) serves this test as well: 14.3 s -> 9.9 s on OpenVINO, alone (2026-12-02)
    fast = {"fast_bias_correction": True}
    kept = check(quantize_graph(engine, proto, cal, quantize_se=False, **fast), squeeze_and_scale)
    assert len(kept) == len(squeeze_and_scale) == 18 and all(kept.values())
    quantized = check(quantize_graph(engine, proto, cal, quantize_se=True, **fast), squeeze_and_scale)
    assert len(quantized) == 18 and not any(quantized.values())


# ------------------------------------------------------------------ calibration
def test_calibration_images_go_through_the_models_preprocessing(tmp_path):
    from PIL import Image

    from se_multi.predict import resolve_config
    from se_multi.preprocess import preprocess

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)  # images: no warning
        cal = calibration_set(SMALL, str(tmp_path), samples=2, held_out=5)
    cfg = resolve_config(SMALL)
    want = [preprocess(str(tmp_path / f"{i}.png"), cfg) for i in range(3)]
    assert len(cal.arrays) == 2 and len(cal.held_out) == 1 and not cal.default
    for got, exp in zip(cal.arrays + cal.held_out, want):
        np.testing.assert_array_equal(got, exp)
    with pytest.raises(ValueError, match="5 samples asked for, but the source holds 3"):
        calibration_set(SMALL, str(tmp_path), samples=5)


def test_default_calibration_warns_and_follows_the_preprocessing_statistics():
    from se_multi.predict import resolve_config

    with pytest.warns(CalibrationWarning, match="real images"):
        cal = calibration_set("se_mobilenetv1_100", 3, held_out=2)
    assert cal.default and len(cal.arrays) == 3 and len(cal.held_out) == 2
    cfg = resolve_config("se_mobilenetv1_100")
    assert cal.arrays[0].shape == (1, 3, *cfg.input_size[-2:]) and cal.arrays[0].dtype == np.float32
    # normalised pixels: within [(0 - mean) / std, (1 - mean) / std] per channel
    lo, hi = (-np.asarray(cfg.mean) / cfg.std), ((1 - np.asarray(cfg.mean)) / cfg.std)
    x = np.concatenate(cal.arrays)
    assert np.all(x.min(axis=(0, 2, 3)) >= lo - 1e-5) and np.all(x.max(axis=(0, 2, 3)) <= hi + 1e-5)
    held = {a.tobytes() for a in cal.held_out}
    assert not held & {a.tobytes() for a in cal.arrays}  # held out means not calibrated on


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_bad_calibration_counts_are_one_clear_error(bad):
    pytest.importorskip("onnxruntime")
    with pytest.raises((ValueError, TypeError), match="calibration"):
        se_multi.get_backend("onnxruntime", dtype="int8", calibration=bad)


def test_int8_options_on_another_dtype_and_output_suffixes_are_refused():
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match="apply to dtype='int8'"):
        se_multi.get_backend("onnxruntime", dtype="float32", quantize_se=True)
    assert output_engine("m.xml", None) == "openvino" and output_engine("m.onnx", None) == "onnxruntime"
    with pytest.raises(ValueError, match="must end in .xml"):
        output_engine("m.bin", None)
    with pytest.raises(ValueError, match="engine onnxruntime writes a .onnx file"):
        output_engine("m.xml", "onnxruntime")


# ------------------------------------------------------------------ error metrics
def test_topk_and_mask_agreement():
    ref = np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 1.0, 2.0]])
    ours = np.array([[0.0, 2.0, 1.0, 3.0], [0.0, 1.0, 2.0, 3.0]])  # image 0: ref's top-1 is ours' 2nd; image 1: 4th
    assert topk_agreement(ours, ref, 1) == 0.0
    assert topk_agreement(ours, ref, 2) == 0.5
    assert topk_agreement(ours, ref, 4) == 1.0
    a = np.zeros((1, 3, 2, 2))
    b = a.copy()
    a[0, 1, 0, 0] = 1.0  # pixel (0, 0): class 1 against class 0
    assert mask_agreement(a, b) == 0.75
    one = np.array([[[[0.5, -1.0]]]])  # one channel: a binary map, logit > 0
    assert mask_agreement(one, -one) == 0.0 and mask_agreement(one, 2 * one) == 1.0
    ref, ours = np.array([[4.0, -2.0]]), np.array([[4.5, -1.0]])  # errors 0.5 and 1.0; max |ref| 4
    assert mean_rel_error(ours, ref) == pytest.approx(0.75 / 4)
    assert mean_rel_error(np.array([[np.nan, 0.0]]), ref) == np.inf
    with pytest.raises(ValueError, match="k must be an int in 1..4"):
        topk_agreement(ours[:, :1].repeat(4, 1), ours[:, :1].repeat(4, 1), 5)


# ------------------------------------------------------------------ end to end
@pytest.mark.parametrize("engine", list(ENGINES))
def test_dtype_int8_end_to_end(engine):
    """A small model quantized in memory (calibrate), run at two sizes (one quantization), against float64."""
    _need(engine)
    calls = []
    import se_multi.backends.int8 as q

    real = q.quantize_graph
    q.quantize_graph = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        model = create_model(SMALL, backend=se_multi.get_backend(engine, dtype="int8", calibration=4))
        ref = create_model(SMALL, backend="numpy", dtype="float64")
        tol = MODEL_TOLERANCE
        with pytest.warns(CalibrationWarning):
            for shape, seed in (((2, 3, 224, 224), 1), ((1, 3, 97, 75), 2)):
                x = recipe_input(shape, seed=seed)
                y, want = se_multi.to_numpy(model(x)), ref.predict_numpy(x.astype(np.float64))
                assert y.shape == want.shape and max_rel_error(y, want) <= tol
    finally:
        q.quantize_graph = real
    assert len(calls) == 1  # quantized once, kept with the model


@pytest.mark.parametrize("engine,suffix", [("openvino", ".xml"), ("onnxruntime", ".onnx")])
def test_quantize_command_writes_a_model_that_runs(engine, suffix, tmp_path, capsys):
    _need(engine)
    from se_multi.cli import main

    out, report = tmp_path / f"m{suffix}", tmp_path / "r.json"
    assert main(["quantize", SMALL, str(out), "--calibration", "3", "--held-out", "2", "--parity", "1",
                 "--fast-bias-correction", "--json", str(report)]) == 0
    text = capsys.readouterr()
    assert "warning: calibrating on the embedded default" in text.err and "kept in float" in text.out
    result = json.loads(report.read_text())
    assert result["samples"] == 3 and result["engine"] == engine and [e["count"] for e in result["errors"]] == [1, 2]
    # the written file, loaded by the engine itself, against float64 on the same input
    x = recipe_input((1, 3, 224, 224), seed=1)
    if engine == "openvino":
        import openvino as ov

        assert out.with_suffix(".bin").is_file()
        y = ov.Core().compile_model(str(out), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    else:
        y = se_multi.get_backend("onnxruntime").load(out)(x)
    want = create_model(SMALL, backend="numpy", dtype="float64").predict_numpy(x.astype(np.float64))
    err = max_rel_error(y, want)
    assert err <= MODEL_TOLERANCE
    assert abs(err - result["errors"][0]["max_rel_err_f64"]) <= 1e-6  # the report measured this same input


def test_quantize_refuses_a_wrong_output_before_calibrating(tmp_path, capsys):
    from se_multi.cli import main

    assert main(["quantize", SMALL, str(tmp_path / "m.bin"), "--calibration", "3"]) == 3
    assert "must end in .xml (OpenVINO IR) or .onnx" in capsys.readouterr().err
    assert main(["quantize", SMALL, str(tmp_path / "m.xml"), "--calibration", "0"]) == 3


def test_validate_at_int8_checks_whole_models_only_and_their_precision():
    """int8 is a row of validate's one tolerance table: whole models against 1e-1, a precision
    floor (a backend that says int8 and computes in float32 fails it), no op checks."""
    from se_multi import conformance as C

    row = C.policy_for("int8")
    assert row.models_only and row.model == MODEL_TOLERANCE and "int8" not in C.TOLERANCES
    with pytest.raises(ValueError, match="int8 has no op tolerance"):
        C.tolerance_for("int8", "op")
    engine = "onnxruntime"  # the quicker to calibrate
    _need(engine)
    ops = se_multi.get_backend(engine, dtype="int8", calibration=4)
    checks = [C.model_check(SMALL, (1, 3, 41, 33)), C.conv2d_check(*C.CONV_CASES[0])]
    with pytest.warns(CalibrationWarning):
        result = C.run_suite(ops, checks=checks)
    assert [c.op for c in result.checks] == [f"model {SMALL}", "precision"] and result.passed, result.checks
    honest = result.checks[0].max_rel
    # the same model computed in float32 but called int8: its errors are float32-sized
    fake = C.whole_model_checks([C.CheckResult("m", f"model {SMALL}", 1e-7, 3e-7, 1e-1, True, bias=0.0,
                                               level="model")], "int8")
    assert [c.passed for c in fake] == [False] and "does not compute in int8" in fake[0].error
    assert C.POLICY["int8"].floor < honest


# ------------------------------------------------------------------ bench and predict at int8, end to end
def _image(tmp_path):
    from PIL import Image

    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (230, 250, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("engine", list(ENGINES))
def test_predict_at_int8_with_a_chosen_calibration(engine, tmp_path, capsys):
    """``predict --dtype int8 --calibration 2``: the model quantized on two default images (the
    warning names them), its probabilities those of float64 within what the int8 bound allows."""
    _need(engine)
    from se_multi.cli import main
    from se_multi.predict import resolve_config, softmax
    from se_multi.preprocess import preprocess

    image = _image(tmp_path)
    assert main(["predict", str(image), "--model", SMALL, "--backend", engine, "--dtype", "int8",
                 "--calibration", "2", "--json"]) == 0
    out = capsys.readouterr()
    assert "calibrating on the embedded default (2 seeded synthetic images" in out.err
    assert "--calibration N or images to choose" not in out.err  # the slow-default note: not when chosen
    doc = json.loads(out.out)
    assert doc["dtype"] == "int8" and doc["backend"] == engine
    (row,) = doc["results"]
    logits = create_model(SMALL, backend="numpy", dtype="float64").predict_numpy(
        preprocess(str(image), resolve_config(SMALL)).astype(np.float64))
    want = softmax(logits)[0]
    # logits within MODEL_TOLERANCE * max|logit| of float64 move each log-probability by at most twice that
    bound = 2 * MODEL_TOLERANCE * float(np.abs(logits).max())
    assert len(row["topk"]) == 5
    for entry in row["topk"]:
        assert abs(np.log(entry["prob"]) - np.log(want[entry["class"]])) <= bound


def test_resuming_int8_results_with_another_calibration_is_refused(tmp_path, capsys):
    """int8 results depend on what the model was calibrated on: the results store compares it like
    the dtype, so a resume never mixes two calibrations' rows (and a rerun with the same one adds none)."""
    _need("onnxruntime")
    from se_multi.cli import main

    image, out = _image(tmp_path), tmp_path / "r.jsonl"
    run = ["predict", str(image), "--model", SMALL, "--backend", "onnxruntime", "--dtype", "int8", "--quiet",
           "--output", str(out)]
    assert main(run + ["--calibration", "2"]) == 0
    rows = out.read_text()
    assert main(run + ["--calibration", "3"]) == 3
    assert "(calibration: 2 synthetic there, 3 synthetic here): pass --overwrite" in capsys.readouterr().err
    assert main(run + ["--calibration", "2"]) == 0
    assert out.read_text() == rows


@pytest.mark.parametrize("engine", list(ENGINES))
def test_bench_at_int8_with_a_chosen_calibration(engine, tmp_path, capsys):
    _need(engine)
    from se_multi.cli import main

    report = tmp_path / "bench.json"
    memory = [] if engine == "onnxruntime" else ["--no-memory"]  # the memory pass calibrates again, in a fresh process
    assert main(["bench", "--backends", engine, "--models", SMALL, "--dtype", "int8", "--calibration", "2",
                 "--budget", "0.05", "--min-runs", "2", "--json", str(report), *memory]) == 0
    err = capsys.readouterr().err
    assert "calibrating on the embedded default (2 seeded synthetic images" in err
    (row,) = json.loads(report.read_text())["rows"]
    assert row["dtype"] == "int8" and row["error"] is None and len(row["times_ms"]) >= 2
    assert 0 < row["max_rel_err"] <= MODEL_TOLERANCE and row["top1_agreement"] is not None
    if not memory:
        assert row["rss_mb"] and "error" not in (row["memory_method"] or "")


def test_calibration_option_says_the_default_and_needs_int8(capsys):
    import argparse

    from se_multi.calibration import DEFAULT_SAMPLES
    from se_multi.cli import main
    from se_multi.cli.quantize import int8_calibration
    from se_multi.quantize import calibration

    notes = []
    assert int8_calibration(argparse.Namespace(calibration=None), ["float32", "int8"], notes.append) is None
    assert len(notes) == 1 and f"{DEFAULT_SAMPLES} seeded synthetic images" in notes[0]
    assert int8_calibration(argparse.Namespace(calibration="7"), ["int8"], notes.append) == 7
    made = int8_calibration(argparse.Namespace(calibration="photos/"), ["int8"], notes.append)
    assert isinstance(made, calibration) and made.source == "photos/" and len(notes) == 1
    assert main(["predict", "x.png", "--calibration", "4"]) == 3
    assert "--calibration applies to --dtype int8" in capsys.readouterr().err


def test_other_libraries_warnings_are_shown_once_after_quantizing():
    """The quantize command records warnings while it runs and shows them after: another library's
    warning comes out once on stderr, after the run. It was re-emitted inside the recording, so a
    filter that lets it through (set by any library imported before, e.g. JAX) recorded it again,
    onto the list being read, without end: the process grew until the OOM killer stopped it. Run in
    a child with a memory cap, so that a regression fails instead of taking the machine down."""
    import resource
    import subprocess
    import sys

    child = ("import warnings\n"
             "from se_multi.cli.quantize import calibration_warnings\n"
             "with calibration_warnings(print):\n"
             "    warnings.simplefilter('always')\n"
             "    warnings.warn('from another library', UserWarning)\n"
             "print('done')\n")
    cap = lambda: resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # noqa: E731
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, preexec_fn=cap)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert proc.stdout.strip() == "done" and proc.stderr.count("from another library") == 1, proc.stderr


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_one_channel_model_quantizes(engine):
    """SD-Net and QuickNAT take one MRI channel: the int8 graph is traced with the model's channels
    (it was traced with three, and quantizing refused the model's first conv)."""
    _need(engine)
    from se_multi.metrics import mask_agreement

    model = create_model("sdnet", backend=se_multi.get_backend(engine, dtype="int8", calibration=4), num_filters=8)
    ref = create_model("sdnet", backend="numpy", dtype="float64", num_filters=8)
    # in the calibrated range: SD-Net's preprocessing (mean 0, std 1) gives a slice's intensities in
    # [0, 1]; the recipe's [-2, 2] would lie mostly outside what the int8 graph was calibrated on
    x = (recipe_input((1, 1, 32, 48), seed=1) + 2) / 4
    with pytest.warns(CalibrationWarning):
        y = se_multi.to_numpy(model(x))
    want = ref.predict_numpy(x.astype(np.float64))
    assert y.shape == want.shape == (1, 28, 32, 48)
    # measured 2026-12-02: 6.5e-2 / 4.7e-2 (onnxruntime / openvino), masks 0.990 / 0.995
    assert max_rel_error(y, want) <= MODEL_TOLERANCE and mask_agreement(y, want) >= 0.95
