"""Post-training int8 quantization of every model, on the two engines fed se_multi's own ONNX
export: OpenVINO through NNCF (an IR ``.xml``/``.bin``) and ONNX Runtime's static quantizer (a QDQ
``.onnx``); ``se-multi quantize`` (:mod:`se_multi.cli.quantize`) is its command line, and the
``int8`` dtype of the ``openvino`` and ``onnxruntime`` backends quantizes a model in memory on its
first call (:func:`se_multi.backends.int8.compile_int8`, with the calibration this module's
:func:`calibration` or the model's default gives).

**The graph and the engines** are the adapter layer's (:mod:`se_multi.backends.int8`): se_multi's
ONNX graph with every SE op marked, NNCF or ONNX Runtime's static quantizer called on it with the
SE squeeze, gate and scale (and the U-Net's sSE gate, pixel scale and scSE combine) kept in float
unless ``quantize_se``. This module gives them calibration arrays and measures the result.

**Calibration** (:func:`calibration_set`): images (a folder, a file, a glob or ``@list.txt``, as
``se-multi predict`` expands them) decoded and preprocessed with the model's own preprocessing
(:func:`se_multi.predict.resolve_config`), the first ``samples`` of them (default
:data:`DEFAULT_SAMPLES`, or all given); or, with no images (``None`` or a count), the embedded
default :func:`se_multi.calibration.synthetic_images`: seeded random images (smooth random colour fields with pixel
noise) through the same preprocessing, with a :class:`CalibrationWarning` that real images
calibrate better. There are no real weights or images here: every error figure this module
gives is agreement with float64/float32 on data it makes.

**Errors** (:func:`error_report`): per model, max and mean relative error of the int8 output
against the NumPy float64 reference (:mod:`se_multi.metrics`' normalisation: by the reference's
largest magnitude), top-1 and top-5 agreement with the same engine at float32, on the parity
inputs (the parity fixtures' input recipe, :func:`se_multi.init.recipe_input`: never used to
calibrate) and on a held-out set of the calibration source; a segmentation model reports mask
agreement (the fraction of pixels with the same class) instead of top-k.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from se_multi.backends import int8
from se_multi.backends.int8 import FLOAT_ROLES, marked_graph, quantize_graph, se_counts
from se_multi.calibration import DEFAULT_SAMPLES, CalibrationWarning, describe, synthetic_images, warn_default
from se_multi.conformance import POLICY
from se_multi.metrics import mask_agreement, max_rel_error, mean_rel_error, topk_agreement

__all__ = ["CalibrationSet", "CalibrationWarning", "DEFAULT_SAMPLES", "ENGINES", "QuantizeResult", "backend_option",
           "calibration", "calibration_set", "error_report", "format_report", "quantize"]

#: the engines that quantize, and the file each writes
ENGINES = {"openvino": ".xml", "onnxruntime": ".onnx"}
assert tuple(ENGINES) == int8.ENGINES
#: held-out images of the calibration source the error report uses (when the source has them)
DEFAULT_HELD_OUT = 100
#: parity inputs the error report uses (the parity fixtures' recipe, seeds 1.., batch 1 each)
PARITY_INPUTS = 8
#: Largest ``max_rel`` (:func:`se_multi.metrics.max_rel_error`: by the reference's largest
#: magnitude) of an int8 model's output against the float64 reference, what the tests and the int8
#: benchmark hold a quantized model to. Per-tensor uint8 activations (ONNX Runtime) or int8 ones
#: (NNCF's symmetric preset) step by range/255 or range/127, ~1e-3 of a tensor's range in rounding
#: per layer (step/sqrt(12)); ~50 layers add that in quadrature to ~1e-2, and the largest of 1000
#: logits is ~3x the typical one. Measured 2026-12-02 (seeded weights, generated inputs, 4-64
#: calibration images): MobileNetV3-Small 0.9e-2 (OpenVINO) / 1.2e-2 (ONNX Runtime), SE-ResNet-50
#: 1.0e-2; issue #23 measured 6.5e-2 for timm's SE-ResNet-50 through NNCF. The bound is 1e-1, as for
#: bfloat16 models: a wrong SE gate or a dropped scale errs by O(1e-1) to O(1).
MODEL_TOLERANCE = POLICY["int8"].model  # the int8 row of validate's one tolerance table


# =========================================================================== calibration data
@dataclass
class CalibrationSet:
    """Preprocessed NCHW float32 arrays (batch 1 each) for calibration, the held-out ones for the
    error report, and where they came from."""

    arrays: list[np.ndarray]
    held_out: list[np.ndarray]
    description: str
    default: bool


def _count(value, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def calibration_set(model_name: str, source=None, samples: int | None = None, held_out: int = DEFAULT_HELD_OUT,
                    cfg=None, seed: int = 0, warn: bool = True) -> CalibrationSet:
    """Calibration arrays for ``model_name`` (see the module docstring). ``source``: ``None``
    (the embedded default, :data:`DEFAULT_SAMPLES` images), an int (that many default images), or
    images (paths, folders, globs, ``@list.txt``: :func:`se_multi.predict.expand_sources`),
    preprocessed with ``cfg`` (default: the model's). The held-out arrays are the next
    ``held_out`` images of the same source after the calibration ones (for images: those left)."""
    from se_multi.predict import expand_sources, load_input, resolve_config

    cfg = cfg if cfg is not None else resolve_config(model_name)
    if held_out is None or isinstance(held_out, bool) or not isinstance(held_out, (int, np.integer)) or held_out < 0:
        raise ValueError(f"held_out must be an int >= 0; got {held_out!r}")
    if source is None or (isinstance(source, (int, np.integer)) and not isinstance(source, bool)):
        n = _count(samples if source is None and samples is not None else (source or DEFAULT_SAMPLES),
                   "calibration samples")
        description = describe(n, cfg, seed)
        if warn:
            warn_default(description)
        return CalibrationSet(synthetic_images(n, cfg, seed), synthetic_images(int(held_out), cfg, seed, start=n),
                              description, True)
    paths = expand_sources(source)
    n = min(len(paths), DEFAULT_SAMPLES) if samples is None else _count(samples, "calibration samples")
    if n > len(paths):
        raise ValueError(f"calibration: {n} samples asked for, but the source holds {len(paths)} images")
    arrays = []
    for path in paths[:n + int(held_out)]:
        for _, x in load_input(path, cfg):  # an image, or an .npy batch split into its images
            arrays.extend(np.ascontiguousarray(x[i:i + 1], dtype=np.float32) for i in range(len(x)))
    calib, rest = arrays[:n], arrays[n:n + int(held_out)]
    description = f"{len(calib)} images from {_describe(source)} through the {cfg.tag} preprocessing"
    return CalibrationSet(calib, rest, description, False)


def _describe(source) -> str:
    if isinstance(source, (str, bytes, os.PathLike)):
        return os.fsdecode(source)
    items = [os.fsdecode(s) for s in source]
    return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")


class calibration:  # noqa: N801 (a callable, used like a function)
    """``calibration(source, samples=None, seed=0)``: the ``calibration`` option of an int8 backend
    (``OpenVinoBackend(dtype="int8", calibration=calibration("photos/"))``) that calibrates a model
    on ``source`` (:func:`calibration_set`: images, or a count of default images) through that
    model's own preprocessing: ``module -> arrays``, called by the adapter with the bound module it
    quantizes. Plain data: it pickles with the backend's recipe."""

    def __init__(self, source=None, samples: int | None = None, seed: int = 0):
        self.source, self.samples, self.seed = source, samples, seed

    def __call__(self, module) -> list[np.ndarray]:
        name = getattr(module, "model_name", None)  # set by se_multi.models.build_model
        if not name:
            raise ValueError("int8: this module was not built by se_multi.models.build_model, so its preprocessing "
                             "(which calibrates it) is unknown; pass calibration= arrays to the backend")
        return calibration_set(name, self.source, self.samples, held_out=0, seed=self.seed).arrays

    def __repr__(self) -> str:
        return f"calibration({self.source!r}, samples={self.samples!r}, seed={self.seed})"


def backend_option(source):
    """What a command's ``--calibration`` (:func:`se_multi.cli.quantize.calibration_source`: a count
    or images) gives an int8 backend's ``calibration`` option: ``None`` stays the model's default,
    a count asks the model's default for that many images, images become :class:`calibration`."""
    if source is None or (isinstance(source, (int, np.integer)) and not isinstance(source, bool)):
        return source
    return calibration(source)


# =========================================================================== errors
@dataclass
class ErrorStats:
    """One input set's figures: the int8 output against float64 and the engine's float32."""

    inputs: str
    count: int
    max_rel_err_f64: float
    mean_rel_err_f64: float
    top1_agreement_f32: float | None = None
    top5_agreement_f32: float | None = None
    mask_agreement_f32: float | None = None
    max_rel_err_f32_f64: float | None = None


def _stats(label: str, xs: list[np.ndarray], run_int8, run_f32, run_f64) -> ErrorStats:
    q = np.concatenate([np.asarray(run_int8(x), np.float64) for x in xs])
    f = np.concatenate([np.asarray(run_f32(x), np.float64) for x in xs])
    d = np.concatenate([np.asarray(run_f64(x), np.float64) for x in xs])
    s = ErrorStats(label, len(xs), max_rel_error(q, d), mean_rel_error(q, d), max_rel_err_f32_f64=max_rel_error(f, d))
    if q.ndim == 2:
        s.top1_agreement_f32, s.top5_agreement_f32 = topk_agreement(q, f, 1), topk_agreement(q, f, min(5, q.shape[1]))
    else:
        s.mask_agreement_f32 = mask_agreement(q, f)
    return s


def error_report(model_name: str, run_int8, run_f32, module_f64, held_out: list[np.ndarray],
                 input_size: tuple[int, int] = (224, 224), parity: int = PARITY_INPUTS) -> list[ErrorStats]:
    """The int8 model's errors on the parity inputs and on ``held_out`` (see the module docstring):
    ``run_int8``/``run_f32`` map an NCHW float32 array to outputs, ``module_f64`` is the model on
    the NumPy float64 reference."""
    from se_multi.init import recipe_input

    run_f64 = lambda x: module_f64(np.asarray(x, np.float64))  # noqa: E731
    sets = []
    if parity:
        xs = [recipe_input((1, 3, *input_size), seed=s) for s in range(1, parity + 1)]
        sets.append(_stats(f"parity inputs (recipe 4u-2, seeds 1-{parity})", xs, run_int8, run_f32, run_f64))
    if held_out:
        sets.append(_stats("held-out calibration source", held_out, run_int8, run_f32, run_f64))
    return sets


# =========================================================================== se_multi.quantize
@dataclass
class QuantizeResult:
    model: str
    engine: str
    path: str | None
    calibration: str
    calibration_default: bool
    samples: int
    quantize_se: bool
    float_nodes: dict[str, int]
    seconds: float
    errors: list[ErrorStats] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def output_engine(output, engine: str | None) -> str:
    """The engine an output path asks for (``.xml``: openvino, ``.onnx``: onnxruntime), checked against ``engine``."""
    suffix = Path(output).suffix.lower() if output is not None else None
    by_suffix = {v: k for k, v in ENGINES.items()}.get(suffix)
    if engine is None:
        if output is not None and by_suffix is None:
            raise ValueError(f"quantize: the output must end in .xml (OpenVINO IR) or .onnx (QDQ ONNX); got {output}")
        return by_suffix or "openvino"
    if engine not in ENGINES:
        raise ValueError(f"quantize: engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if output is not None and suffix != ENGINES[engine]:
        raise ValueError(f"quantize: engine {engine} writes a {ENGINES[engine]} file; got output {output}")
    return engine


def quantize(model: str, output=None, *, weights: str | None = None, calibration=None, samples: int | None = None,
             engine: str | None = None, quantize_se: bool = False, fast_bias_correction: bool = False,
             held_out: int = DEFAULT_HELD_OUT, parity: int = PARITY_INPUTS, pretrained_cfg=None,
             seed: int = 0, report: bool = True, progress=None) -> QuantizeResult:
    """Quantize the registered model ``model`` (``weights``: a checkpoint or hub id; default the
    seeded weights) to int8 on ``engine`` and write it to ``output`` (``.xml`` + ``.bin``: an
    OpenVINO IR; ``.onnx``: a QDQ ONNX file), calibrated on ``calibration`` (see
    :func:`calibration_set`); with ``report``, measure its errors (:func:`error_report`).
    Returns a :class:`QuantizeResult`."""
    import time

    from se_multi.files import atomic_output
    from se_multi.models import check_model_name, create_model
    from se_multi.predict import resolve_config

    check_model_name(model)
    engine = output_engine(output, engine)
    cfg = resolve_config(model, pretrained_cfg, weights)
    say = progress or (lambda msg: None)
    float_model = create_model(model, weights=weights, backend=engine, dtype="float32", seed=seed)
    cal = calibration_set(model, calibration, samples, held_out if report else 0, cfg)
    proto = marked_graph(float_model.module, float_model.ops.opset, float_model.ops.workarounds)
    say(f"calibrating on {cal.description}")
    t0 = time.perf_counter()
    quantized = quantize_graph(engine, proto, cal.arrays, quantize_se, fast_bias_correction)
    seconds = time.perf_counter() - t0
    if output is not None:
        if engine == "openvino":
            import openvino as ov

            out = Path(output)
            out.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=f".{out.stem}.", dir=out.parent) as tmp:
                ov.save_model(quantized, str(Path(tmp) / out.name), compress_to_fp16=False)
                os.replace(Path(tmp) / out.with_suffix(".bin").name, out.with_suffix(".bin"))
                os.replace(Path(tmp) / out.name, out)  # the .xml last: once it is there, the IR is whole
        else:
            import onnx

            with atomic_output(output) as tmp:
                onnx.save_model(quantized, str(tmp))
    kept = {} if quantize_se else {k: v for k, v in se_counts(proto).items() if tuple(k.split(":")) in FLOAT_ROLES}
    result = QuantizeResult(model, engine, None if output is None else str(output), cal.description, cal.default,
                            len(cal.arrays), quantize_se, kept, seconds)
    if report:
        say("measuring errors against float64 and float32")
        run_int8 = engine_runner(engine, quantized, float_model.ops)
        reference = create_model(model, weights=weights, backend="numpy", dtype="float64", seed=seed)
        size = tuple(cfg.input_size[-2:])
        result.errors = error_report(model, run_int8, float_model.predict_numpy, reference.predict_numpy,
                                     cal.held_out, size, parity)
    return result


def engine_runner(engine: str, quantized, ops):
    """``fn(x) -> NumPy output`` for a quantized graph, with the settings of the float32 backend ``ops``."""
    if engine == "onnxruntime":
        return ops.engine(quantized)
    return ops.model_engine(quantized.clone(), np.float32)


def format_report(result: QuantizeResult) -> str:
    lines = [f"{result.model} int8 on {result.engine}: calibrated on {result.calibration} in {result.seconds:.1f} s"]
    if result.path:
        lines.append(f"wrote {result.path}" + (f" (+ {Path(result.path).with_suffix('.bin').name})"
                                               if result.engine == "openvino" else ""))
    if result.quantize_se:
        lines.append("SE blocks quantized too (--quantize-se)")
    else:
        kept = ", ".join(f"{v} {k.split(':')[1]}" for k, v in result.float_nodes.items()) or "none (no SE blocks)"
        lines.append(f"kept in float (SE squeeze, gate, scale): {kept}")
    for e in result.errors:
        agree = (f"top-1 {e.top1_agreement_f32:.3f}, top-5 {e.top5_agreement_f32:.3f}" if e.top1_agreement_f32 is not None
                 else f"mask agreement {e.mask_agreement_f32:.4f}")
        lines.append(f"  {e.inputs}, {e.count} images: max rel err vs float64 {e.max_rel_err_f64:.2e} "
                     f"(float32: {e.max_rel_err_f32_f64:.1e}), mean {e.mean_rel_err_f64:.2e}; agreement with float32: "
                     f"{agree}")
    if result.errors:
        lines.append("  (seeded weights and generated inputs unless --weights and images were given: agreement, not "
                     "ImageNet accuracy)")
    return "\n".join(lines)
