"""Post-training int8 quantization of every model, on the two engines fed se_multi's own ONNX
export: OpenVINO through NNCF (an IR ``.xml``/``.bin``) and ONNX Runtime's static quantizer (a QDQ
``.onnx``); ``se-multi quantize`` (:mod:`se_multi.cli.quantize`) is its command line, and the
``int8`` dtype of the ``openvino`` and ``onnxruntime`` backends quantizes a model in memory on its
first call (:func:`compile_int8`).

**The graph.** The model is traced by :class:`MarkingRecorder`, se_multi's ONNX recorder that also
marks the nodes of every SE op it records (the node's ``doc_string`` is ``se_multi.role=<role>``):
the squeeze (``GlobalAveragePool``), the excitation (two 1x1 ``Conv`` FCs and the ``Sigmoid`` or
``HardSigmoid`` gate), the channel scale (``Mul``), and in the U-Net the sSE gate (a 1x1 ``Conv`` to
one channel, ``Sigmoid``), its pixel scale and the scSE combine. The graph's batch, height and
width are symbolic, so one quantized graph serves every input size.

**SE kept in float** (the default): the squeeze, the gate and the scale (:func:`float_nodes`)
get no quantizer; only the small FCs are quantized. NNCF has an ``SE_BLOCK`` ignored pattern that
does this where it matches (ReduceMean -> linear -> ReLU/PReLU/Swish -> linear -> Sigmoid/HSigmoid
-> Multiply), but it misses MobileNetV3's hard-sigmoid gate (OpenVINO reads ONNX ``HardSigmoid``
as its ``HardSigmoid`` op, not ``HSigmoid``) and SE-MobileNet's ReLU6 excitation, and ONNX
Runtime's quantizer quantizes a whole SE block (``GlobalAveragePool``, ``Sigmoid``, ``Mul``), so
both engines get the node names from se_multi's own marks: NNCF as an ``IgnoredScope``, ONNX
Runtime as ``nodes_to_exclude``. ``quantize_se=True`` quantizes the SE ops too (for NNCF this
also switches its ``SE_BLOCK`` pattern off for that call).

**Calibration** (:func:`calibration_set`): images (a folder, a file, a glob or ``@list.txt``, as
``se-multi predict`` expands them) decoded and preprocessed with the model's own preprocessing
(:func:`se_multi.predict.resolve_config`), the first ``samples`` of them (default
:data:`DEFAULT_SAMPLES`, or all given); or, with no images (``None`` or a count), the embedded
default :func:`synthetic_images`: seeded random images (smooth random colour fields with pixel
noise) through the same preprocessing, with a :class:`CalibrationWarning` that real images
calibrate better. There are no real weights or images here: every error figure this module
gives is agreement with float64/float32 on data it makes.

**Engines.** NNCF: ``nncf.quantize`` on the model converted by ``openvino.convert_model`` with
its default (``performance``: symmetric) preset, ``subset_size`` the calibration count and
``fast_bias_correction`` off by default (NNCF's own default is on; published results drop 16
points of ImageNet top-1 with it on ``mobilenetv3_small_050`` against 1.4 without). ONNX
Runtime: ``quantize_static`` in QDQ format, per-channel int8 weights, uint8 activations (the
u8s8 pair its x86 VNNI kernels take), MinMax calibration.

**Errors** (:func:`error_report`): per model, max and mean relative error of the int8 output
against the NumPy float64 reference (:mod:`se_multi.metrics`' normalisation: by the reference's
largest magnitude), top-1 and top-5 agreement with the same engine at float32, on the parity
inputs (the parity fixtures' input recipe, :func:`se_multi.init.recipe_input`: never used to
calibrate) and on a held-out set of the calibration source; a segmentation model reports mask
agreement (the fraction of pixels with the same class) instead of top-k.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from se_multi.conformance import POLICY
from se_multi.onnx_export import OnnxRecorder

#: the engines that quantize, and the file each writes
ENGINES = {"openvino": ".xml", "onnxruntime": ".onnx"}
#: calibration images used when not told (or all given, when fewer)
DEFAULT_SAMPLES = 300
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
#: ``doc_string`` prefix of a node that belongs to an SE op
ROLE_PREFIX = "se_multi.role="
#: the SE op a fused op's nodes belong to (the outermost fused op names them)
ROLES = {
    "squeeze": "se_squeeze", "excite": "se_excite", "scale": "se_scale", "scale_add_relu": "se_scale",
    "mul_channel": "se_scale", "spatial_gate": "sse_gate", "mul_pixel": "sse_scale", "scse": "scse_combine",
}
#: (role, ONNX op type) of the nodes kept in float unless ``quantize_se``: the squeeze, the gate
#: and the scale; the FCs (``Conv`` in ``se_excite`` and ``sse_gate``) are quantized
FLOAT_ROLES = frozenset({
    ("se_squeeze", "GlobalAveragePool"),
    ("se_excite", "Sigmoid"), ("se_excite", "HardSigmoid"),
    ("se_scale", "Mul"),
    ("sse_gate", "Sigmoid"),
    ("sse_scale", "Mul"),
    ("scse_combine", "Mul"),
})


class CalibrationWarning(UserWarning):
    """The embedded calibration default is in use: real images calibrate better."""


# =========================================================================== the marked graph
class MarkingRecorder(OnnxRecorder):
    """:class:`~se_multi.onnx_export.OnnxRecorder` that marks the nodes of every SE op
    (:data:`ROLES`) with ``doc_string = "se_multi.role=<role>"``; the graph is otherwise the same."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._role: str | None = None

    def _node(self, op_type, inputs, shape, vec4d=False, **attrs):
        sym = super()._node(op_type, inputs, shape, vec4d, **attrs)
        if self._role is not None:
            self.nodes[-1].doc_string = ROLE_PREFIX + self._role
        return sym

    def _marked(self, op: str, *args, **kwargs):
        method = getattr(super(), op)
        if self._role is not None:  # inside another SE op: that one names the nodes
            return method(*args, **kwargs)
        self._role = ROLES[op]
        try:
            return method(*args, **kwargs)
        finally:
            self._role = None

    def squeeze(self, *a, **k):
        return self._marked("squeeze", *a, **k)

    def excite(self, *a, **k):
        return self._marked("excite", *a, **k)

    def scale(self, *a, **k):
        return self._marked("scale", *a, **k)

    def scale_add_relu(self, *a, **k):
        return self._marked("scale_add_relu", *a, **k)

    def mul_channel(self, *a, **k):
        return self._marked("mul_channel", *a, **k)

    def spatial_gate(self, *a, **k):
        return self._marked("spatial_gate", *a, **k)

    def mul_pixel(self, *a, **k):
        return self._marked("mul_pixel", *a, **k)

    def scse(self, *a, **k):
        return self._marked("scse", *a, **k)


def node_roles(proto) -> dict[str, tuple[str, str]]:
    """``{node name: (role, op type)}`` of the marked nodes of a :class:`MarkingRecorder` graph."""
    return {n.name: (n.doc_string[len(ROLE_PREFIX):], n.op_type) for n in proto.graph.node
            if n.doc_string.startswith(ROLE_PREFIX)}


def float_nodes(proto, quantize_se: bool = False) -> list[str]:
    """The names of the nodes kept in float: every SE squeeze, gate and scale (:data:`FLOAT_ROLES`),
    none with ``quantize_se``."""
    if quantize_se:
        return []
    return [name for name, role in node_roles(proto).items() if role in FLOAT_ROLES]


def se_counts(proto) -> dict[str, int]:
    """How many nodes of each (role, op type) the graph has: what a report says was kept in float."""
    counts: dict[str, int] = {}
    for role, op in node_roles(proto).values():
        counts[f"{role}:{op}"] = counts.get(f"{role}:{op}", 0) + 1
    return counts


def marked_graph(module, opset: int | None = None, workarounds=()) -> Any:
    """The ModelProto of a bound module (NumPy-array weights) with SE marks, float32, symbolic
    batch, height and width (traced at the module's smallest input size or 224x224)."""
    from se_multi.onnx_export import BATCH_DIM, DEFAULT_OPSET

    recorder = MarkingRecorder(dtype="float32", opset=DEFAULT_OPSET if opset is None else opset,
                               workarounds=workarounds)
    return recorder.trace(module, (BATCH_DIM, 3, 224, 224), symbolic_hw=True)


# =========================================================================== calibration data
@dataclass
class CalibrationSet:
    """Preprocessed NCHW float32 arrays (batch 1 each) for calibration, the held-out ones for the
    error report, and where they came from."""

    arrays: list[np.ndarray]
    held_out: list[np.ndarray]
    description: str
    default: bool


def synthetic_images(count: int, cfg, seed: int = 0, start: int = 0) -> list[np.ndarray]:
    """The embedded calibration default: ``count`` seeded RGB images (image ``i`` from
    ``PCG64([seed, start + i])``: a random ``g x g`` grid of colours, ``g`` in 2..16, upsampled
    bicubically to 256x256, plus Gaussian pixel noise of sd 8), each through the model's own
    preprocessing ``cfg`` (:func:`se_multi.preprocess.transform`)."""
    from PIL import Image

    from se_multi.preprocess import transform

    out = []
    for i in range(start, start + count):
        rng = np.random.Generator(np.random.PCG64([seed, 2_000_000 + i]))
        g = int(rng.integers(2, 17))
        grid = Image.fromarray(rng.integers(0, 256, (g, g, 3), dtype=np.uint8), "RGB")
        smooth = np.asarray(grid.resize((256, 256), Image.Resampling.BICUBIC), np.float64)
        pixels = np.clip(smooth + rng.normal(0.0, 8.0, smooth.shape), 0, 255).astype(np.uint8)
        out.append(np.ascontiguousarray(transform(Image.fromarray(pixels, "RGB"), cfg, f"synthetic[{i}]")[None],
                                        dtype=np.float32))
    return out


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
        description = (f"{n} seeded synthetic images (smooth random colour fields with pixel noise, seed {seed}) "
                       f"through the {cfg.tag} preprocessing")
        if warn:
            warnings.warn(f"calibrating on the embedded default ({description}); real images from the deployment's "
                          "own data calibrate better", CalibrationWarning, stacklevel=2)
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


# =========================================================================== the engines
#: NNCF's ignored-pattern registry is process-wide: switching SE_BLOCK off is serialised
_NNCF_LOCK = threading.Lock()


@contextlib.contextmanager
def _nncf_se_pattern(enabled: bool):
    """NNCF's SE_BLOCK ignored pattern on (its default) or off for the calls inside."""
    from nncf.common.graph.patterns.patterns import IgnoredPatternNames
    from nncf.openvino.quantization.ignored_patterns import OPENVINO_IGNORED_PATTERNS

    with _NNCF_LOCK:
        registry = OPENVINO_IGNORED_PATTERNS.registry_dict
        saved = registry.get(IgnoredPatternNames.SE_BLOCK)
        if not enabled and saved is not None:
            del registry[IgnoredPatternNames.SE_BLOCK]
        try:
            yield
        finally:
            if saved is not None:
                registry[IgnoredPatternNames.SE_BLOCK] = saved


def _need(module: str, extra: str) -> None:
    import importlib.util

    from se_multi.backend import BackendUnavailable

    if importlib.util.find_spec(module) is None:
        raise BackendUnavailable(f"int8 quantization on this engine needs {module}: pip install 'se-multi[{extra}]'")


def quantize_openvino(proto, arrays: Sequence[np.ndarray], quantize_se: bool = False,
                      fast_bias_correction: bool = False):
    """A marked float32 ModelProto -> the ``openvino.Model`` NNCF quantized on ``arrays``."""
    _need("nncf", "int8")
    import io

    import nncf
    import openvino as ov

    model = ov.convert_model(io.BytesIO(proto.SerializeToString()))
    ignored = nncf.IgnoredScope(names=float_nodes(proto, quantize_se), validate=False)
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf.set_log_level(logging.WARNING)  # no per-node INFO lines in se_multi's output (rich progress bars stay)
    try:
        with _nncf_se_pattern(not quantize_se):
            return nncf.quantize(model, nncf.Dataset(list(arrays)), subset_size=len(arrays),
                                 fast_bias_correction=fast_bias_correction, ignored_scope=ignored)
    finally:
        nncf.set_log_level(level)


class _Reader:
    """ONNX Runtime's calibration data reader over a list of arrays, read a stride at a time
    (``CalibStridedMinMax``: each stride's tensors are reduced to ranges and dropped before the
    next; ONNX Runtime otherwise keeps every intermediate tensor of every sample, ~100 MB per
    SE-ResNet-50 image; and its ``CalibMaxIntermediateOutputs`` drops them without reducing them)."""

    def __init__(self, arrays: Sequence[np.ndarray], input_name: str):
        self._arrays, self._name = list(arrays), input_name
        self._pos, self._end = 0, len(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pos, self._end = start_index, end_index

    def get_next(self):
        if self._pos >= self._end:
            return None
        self._pos += 1
        return {self._name: self._arrays[self._pos - 1]}


class _DropRecord(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.prefix)


#: calibration samples ONNX Runtime runs before reducing their tensors to ranges (at most)
ORT_CALIBRATION_STRIDE = 8


def quantize_onnxruntime(proto, arrays: Sequence[np.ndarray], quantize_se: bool = False):
    """A marked float32 ModelProto -> the QDQ ModelProto ONNX Runtime's static quantizer makes.
    ONNX Runtime's pre-processing step (shape inference, BN folding, constant folding) is not run:
    se_multi's graph has BN folded and no shape subgraphs, and the quantizer infers shapes itself
    (its "consider pre-processing" warning is left out)."""
    _need("onnxruntime", "onnx")
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    stride = max(d for d in range(1, ORT_CALIBRATION_STRIDE + 1) if len(arrays) % d == 0)
    quiet = _DropRecord("Please consider")
    root = logging.getLogger()
    with tempfile.TemporaryDirectory(prefix="se_multi-quantize-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(proto, str(src))
        root.addFilter(quiet)
        try:
            quantize_static(str(src), str(dst), _Reader(arrays, proto.graph.input[0].name),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=float_nodes(proto, quantize_se),
                            extra_options={"CalibStridedMinMax": stride})
        finally:
            root.removeFilter(quiet)
        return _float_inputs(onnx.load_model(str(dst)), set(float_nodes(proto, quantize_se)))


def _float_inputs(q, names: set[str]):
    """The QDQ graph ``q`` with the nodes ``names`` reading float tensors: ONNX Runtime quantizes a
    tensor once for all its consumers (``QuantizeLinear -> DequantizeLinear``), so an excluded node
    still reads the rounded values where a quantized node shares its input (MobileNetV3's first SE
    block reads a quantized ReLU output); each such input is rewired to the float tensor before the
    pair, and pairs no node reads any more are dropped."""
    made_by = {o: n for n in q.graph.node for o in n.output}
    for node in q.graph.node:
        if node.name not in names:
            continue
        for i, name in enumerate(node.input):
            dq = made_by.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear":
                qn = made_by.get(dq.input[0])
                if qn is not None and qn.op_type == "QuantizeLinear":
                    node.input[i] = qn.input[0]
    outputs = {o.name for o in q.graph.output}
    while True:  # drop Q/DQ nodes whose outputs nothing reads
        read = {i for n in q.graph.node for i in n.input} | outputs
        dead = [n for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            return q
        for n in dead:
            q.graph.node.remove(n)


def quantize_graph(engine: str, proto, arrays: Sequence[np.ndarray], quantize_se: bool = False,
                   fast_bias_correction: bool = False):
    """The quantized graph of ``engine``: an ``openvino.Model`` or a QDQ ModelProto."""
    if engine == "openvino":
        return quantize_openvino(proto, arrays, quantize_se, fast_bias_correction)
    if engine == "onnxruntime":
        return quantize_onnxruntime(proto, arrays, quantize_se)
    raise ValueError(f"quantize: engine must be one of {', '.join(ENGINES)}; got {engine!r}")


# =========================================================================== the int8 dtype
def int8_options(backend_name: str, dtype: str, calibration, quantize_se) -> tuple[Any, bool]:
    """The ``calibration`` and ``quantize_se`` options of an int8-capable backend, checked:
    ``calibration`` is ``None`` (the embedded default, :data:`DEFAULT_SAMPLES` images), a count
    of default images, or images (a path, folder, glob, ``@list.txt``, or a list of them)."""
    if not isinstance(quantize_se, bool):
        raise TypeError(f"{backend_name} backend: quantize_se must be True or False; got {quantize_se!r}")
    if calibration is not None:
        if isinstance(calibration, bool) or not isinstance(calibration, (int, np.integer, str, os.PathLike, list, tuple)):
            raise TypeError(f"{backend_name} backend: calibration must be None, a number of images, or images "
                            f"(a path, folder, glob, @list.txt, or a list of them); got {type(calibration).__name__}")
        if isinstance(calibration, (int, np.integer)):
            calibration = _count(calibration, f"{backend_name} backend: calibration")
        if isinstance(calibration, list):
            calibration = tuple(calibration)
    if dtype != "int8" and (calibration is not None or quantize_se):
        raise ValueError(f"{backend_name} backend: calibration and quantize_se apply to dtype='int8'; got dtype {dtype!r}")
    return calibration, quantize_se


def compile_int8(backend, module, input_shape: tuple):
    """What the ``openvino`` and ``onnxruntime`` backends compile at ``dtype="int8"``: the bound
    module quantized once (its marked graph, calibrated with the backend's ``calibration`` and
    ``quantize_se``; kept in the module's graph cache beside the compiled graphs), then compiled
    for ``input_shape`` (OpenVINO static shapes: the quantized model reshaped to it)."""
    engine = backend.name
    key = ("int8-model", repr(backend.calibration), bool(backend.quantize_se))

    def make():
        cal = calibration_set(_model_name(module), backend.calibration, held_out=0)
        proto = marked_graph(module, backend.opset, backend.workarounds)
        return quantize_graph(engine, proto, cal.arrays, backend.quantize_se)

    quantized = module.graphs(backend.graph_cache_size).get_or_create(key, make)
    if engine == "onnxruntime":
        return backend.engine(quantized)
    model = quantized.clone()
    if not backend.symbolic_shapes:
        model.reshape(list(input_shape))
    return backend.model_engine(model)


def _model_name(module) -> str:
    """The registered name a bound module was built as (its preprocessing is that model's)."""
    name = getattr(module, "model_name", None)  # set by se_multi.models.build_model
    if name:
        return name
    raise ValueError("int8: this module was not built by se_multi.models.build_model, so its preprocessing (which "
                     "calibrates it) is unknown; pass calibration= arrays to the backend")


# =========================================================================== errors
def mean_rel_error(ours, ref) -> float:
    """``mean |ours - ref| / max |ref|``: the mean counterpart of :func:`se_multi.metrics.max_rel_error`."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return float(np.abs(ours - ref).mean() / scale) if scale else 0.0


def topk_agreement(ours, ref, k: int) -> float:
    """The fraction of images whose ``ref`` top-1 class is among ``ours``' top ``k`` (k=1: top-1 agreement)."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    want = np.argmax(ref, axis=1)
    top = np.argsort(-ours, axis=1, kind="stable")[:, :k]
    return float(np.mean([w in t for w, t in zip(want, top)]))


def mask_agreement(ours, ref) -> float:
    """Segmentation: the fraction of pixels with the same class (:func:`se_multi.predict.class_map`)."""
    from se_multi.predict import class_map

    ours, ref = np.asarray(ours), np.asarray(ref)
    same = [np.mean(class_map(o) == class_map(r)) for o, r in zip(ours, ref)]
    return float(np.mean(same))


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
    from se_multi.metrics import max_rel_error

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
