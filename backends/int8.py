"""int8 at the adapter layer: what the ``openvino`` and ``onnxruntime`` backends need to run a
model quantized after training, given the model and its calibration arrays; it imports nothing
above the backend floor (no model, no preprocessing, no tool). :mod:`se_multi.quantize` (and
``se-multi quantize``) builds on it: calibration from images, files, error reports.

**The graph.** The model is traced by :class:`MarkingRecorder`, se_multi's ONNX recorder that also
marks the nodes of every SE op it records (the node's ``doc_string`` is ``se_multi.role=<role>``):
the squeeze (``GlobalAveragePool``), the excitation (two 1x1 ``Conv`` FCs and the ``Sigmoid`` or
``HardSigmoid`` gate), the channel scale (``Mul``), and in the U-Net the sSE gate (a 1x1 ``Conv`` to
one channel, ``Sigmoid``), its pixel scale and the scSE combine. The graph's batch, height and
width are symbolic, so one quantized graph serves every input size.

**SE kept in float** (the default): the squeeze, the gate and the scale (:func:`float_nodes`), and
the U-Net's sSE gate, pixel scale and scSE combine, get no quantizer; the small FCs are quantized,
except where NNCF's own ``SE_BLOCK`` ignored pattern matches (ReduceMean -> linear ->
ReLU/PReLU/Swish -> linear -> Sigmoid/HSigmoid -> Multiply: the SE-ResNet/ResNeXt/SENet blocks),
which is left on and keeps that block's FCs in float too (read back from the quantized models on
2026-12-02: SE-ResNet-18's excitation convs read float inputs, MobileNetV3-Small's a FakeQuantize).
The pattern misses MobileNetV3's hard-sigmoid gate (OpenVINO reads ONNX ``HardSigmoid`` as its
``HardSigmoid`` op, not ``HSigmoid``) and SE-MobileNet's ReLU6 excitation, and ONNX Runtime's
quantizer quantizes a whole SE block (``GlobalAveragePool``, ``Sigmoid``, ``Mul``), so both engines
get the node names from se_multi's own marks: NNCF as an ``IgnoredScope``, ONNX Runtime as
``nodes_to_exclude``. ``quantize_se=True`` quantizes the SE ops too (for NNCF this also switches
its ``SE_BLOCK`` pattern off for that call).

**Engines.** NNCF: ``nncf.quantize`` on the model converted by ``openvino.convert_model`` with
its default (``performance``: symmetric) preset, ``subset_size`` the calibration count and
``fast_bias_correction`` off by default (NNCF's own default is on; published results drop 16
points of ImageNet top-1 with it on ``mobilenetv3_small_050`` against 1.4 without). ONNX
Runtime: ``quantize_static`` in QDQ format, per-channel int8 weights, uint8 activations (the
u8s8 pair its x86 VNNI kernels take), MinMax calibration.

**The int8 dtype** (:func:`compile_int8`): a backend at ``dtype="int8"`` quantizes a bound model
once, on its first call, with its ``calibration`` option (:func:`check_options`): NCHW float
arrays, a callable ``module -> arrays`` (what :func:`se_multi.quantize.calibration` makes from
images), or ``None``/a count, which asks the bound module for its default
(``module.calibration_default(count)``, which a :class:`se_multi.models.Model` gives its bound
module: :mod:`se_multi.calibration`). The calibration data comes from above; this layer
never preprocesses an image.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from se_multi.backends.onnx_recorder import BATCH_DIM, DEFAULT_OPSET, OnnxRecorder

#: the engines that quantize
ENGINES = ("openvino", "onnxruntime")
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


# =========================================================================== the marked graph
class MarkingRecorder(OnnxRecorder):
    """:class:`~se_multi.backends.onnx_recorder.OnnxRecorder` that marks the nodes of every SE op
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


def _marking(op: str):
    def method(self, *args, **kwargs):
        return self._marked(op, *args, **kwargs)

    method.__name__ = method.__qualname__ = op
    return method


# every SE op of ROLES runs marked: the methods are made from the table, not written out one by one
for _op in ROLES:
    setattr(MarkingRecorder, _op, _marking(_op))


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
    batch, height and width (traced at the module's smallest input size or 224x224), with the
    module's input channels (QuickNAT's and SD-Net's one MRI channel; RGB unless it says)."""
    recorder = MarkingRecorder(dtype="float32", opset=DEFAULT_OPSET if opset is None else opset,
                               workarounds=workarounds)
    return recorder.trace(module, (BATCH_DIM, getattr(module, "in_chans", 3), 224, 224), symbolic_hw=True)


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
        # NNCF's progress bars (rich) print to stdout: they go to stderr, so a command's stdout
        # (predict --json, a table) stays its output
        with _nncf_se_pattern(not quantize_se), contextlib.redirect_stdout(sys.stderr):
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
    raise ValueError(f"int8: engine must be one of {', '.join(ENGINES)}; got {engine!r}")


# =========================================================================== the int8 dtype
def check_options(backend_name: str, dtype: str, calibration, quantize_se) -> tuple[Any, bool]:
    """The ``calibration`` and ``quantize_se`` options of an int8-capable backend, checked.
    ``calibration``: ``None`` (the model's default calibration), a count (that many of the
    model's default calibration images), a list or tuple of NCHW float arrays, or a callable
    ``module -> arrays`` (images: :func:`se_multi.quantize.calibration`)."""
    if not isinstance(quantize_se, bool):
        raise TypeError(f"{backend_name} backend: quantize_se must be True or False; got {quantize_se!r}")
    if calibration is not None and not callable(calibration):
        if isinstance(calibration, (int, np.integer)) and not isinstance(calibration, bool):
            if calibration < 1:
                raise ValueError(f"{backend_name} backend: calibration count must be >= 1; got {calibration!r}")
            calibration = int(calibration)
        elif isinstance(calibration, (list, tuple)) and calibration and all(
                isinstance(a, np.ndarray) and a.ndim == 4 and a.dtype.kind == "f" for a in calibration):
            calibration = tuple(np.ascontiguousarray(a, dtype=np.float32) for a in calibration)
        else:
            raise TypeError(f"{backend_name} backend: calibration must be None (the model's default), a number of "
                            "default images, a non-empty list of NCHW float arrays, or a callable module -> arrays "
                            "(images: se_multi.quantize.calibration(paths)); got "
                            f"{type(calibration).__name__}")
    if dtype != "int8" and (calibration is not None or quantize_se):
        raise ValueError(f"{backend_name} backend: calibration and quantize_se apply to dtype='int8'; got dtype {dtype!r}")
    return calibration, quantize_se


def calibration_arrays(calibration, module) -> list[np.ndarray]:
    """The arrays a backend's ``calibration`` option (:func:`check_options`) gives for ``module``."""
    if isinstance(calibration, tuple):
        return list(calibration)
    if callable(calibration):
        arrays = list(calibration(module))
    else:
        default = getattr(module, "calibration_default", None)
        if default is None:
            raise ValueError("int8: this module has no default calibration (it is not the module of "
                             "a se_multi.models.Model); pass the backend calibration= arrays or a callable")
        arrays = list(default(calibration))
    if not arrays:
        raise ValueError("int8: the calibration gave no arrays")
    return [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]


def _cache_key(calibration) -> tuple:
    if isinstance(calibration, tuple):  # arrays: by identity of their contents
        import hashlib

        digest = hashlib.sha1()
        for a in calibration:
            digest.update(repr(a.shape).encode())
            digest.update(a.tobytes())
        return ("arrays", digest.hexdigest())
    return ("spec", repr(calibration))


def compile_int8(backend, module, input_shape: tuple):
    """What the ``openvino`` and ``onnxruntime`` backends compile at ``dtype="int8"``: the bound
    module quantized once (its marked graph, calibrated with the backend's ``calibration`` and
    ``quantize_se``; kept in the module's graph cache beside the compiled graphs), then compiled
    for ``input_shape`` (OpenVINO static shapes: the quantized model reshaped to it)."""
    engine = backend.name
    key = ("int8-model", _cache_key(backend.calibration), bool(backend.quantize_se))

    def make():
        arrays = calibration_arrays(backend.calibration, module)
        proto = marked_graph(module, backend.opset, backend.workarounds)
        return quantize_graph(engine, proto, arrays, backend.quantize_se)

    quantized = module.graphs(backend.graph_cache_size).get_or_create(key, make)
    if engine == "onnxruntime":
        return backend.engine(quantized)
    model = quantized.clone()
    if not backend.symbolic_shapes:
        model.reshape(list(input_shape))
    return backend.model_engine(model)
