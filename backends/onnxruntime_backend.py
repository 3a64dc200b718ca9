"""ONNX Runtime backend: whole-graph execution of the exported model, op by op for conformance.

Two ways in, one graph builder (:class:`se_multi.onnx_export.OnnxRecorder`):

- **Whole graph** (:meth:`OnnxRuntimeBackend.compile`): the bound module (its folded
  weights are NumPy arrays, made by :meth:`param`) is traced into one ONNX graph whose
  batch, height and width are symbolic, and run by one InferenceSession: one session per
  model serves every input size, so memory does not grow with the sizes a model sees.
  Measured against one session per size (static H and W) on this project's 2-core CI
  machine, ORT 1.32, batch 1, 224x224, interleaved medians of 80 runs, two runs each:
  SE-ResNet-50 27.9 / 27.8 ms static vs 28.8 / 28.1 ms symbolic; MobileNetV3-Large
  3.80 / 4.63 ms vs 3.99 / 4.35 ms -- the same within noise, while static sessions cost
  ~230 MiB (SE-ResNet-50) per new size. The session lives in the bound model's cache
  (:mod:`se_multi.cache`) and is freed with the model. This is how
  ``create_model(..., backend="onnxruntime")`` runs a model; ``InferenceSession.run`` is
  thread-safe, so a model may be called from several threads at once.
- **Op by op** (every op-table method): the call is recorded as a one-op graph whose
  arrays are graph inputs, run, and the result returned as a NumPy array. Sessions are
  cached by op signature (op, shapes, options), at most
  :data:`se_multi.cache.OP_GRAPHS_PER_BACKEND`, so the conformance suite checks exactly
  the ONNX nodes the exporter writes against the float64 reference.

:meth:`OnnxRuntimeBackend.load` runs an existing ``.onnx`` file (se_multi's or another
NCHW image model's) with the same session options.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from se_multi.backend import Backend, BackendUnavailable, GraphBackend
from se_multi.cache import OP_GRAPHS_PER_BACKEND, BoundedCache
from se_multi.dispatch import to_numpy

#: op-table methods run as one-op graphs (the fused ops too: their ONNX form differs from the defaults)
_OPS = (
    "conv2d", "linear", "batch_norm", "relu", "relu6", "sigmoid", "hard_sigmoid", "hard_swish",
    "max_pool2d", "avg_pool2d", "global_avg_pool", "add", "maximum", "mul_channel", "mul_pixel",
    "upsample_nearest2x", "concat_channels", *Backend.FUSED_OPS,
)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class _Slot:
    """Placeholder for the i-th array argument of an op call (the signature keeps shapes only)."""

    __slots__ = ("index", "shape")

    def __init__(self, index: int, shape: tuple):
        self.index, self.shape = index, shape

    def __repr__(self) -> str:
        return f"in{self.index}{self.shape}"


class OnnxRuntimeBackend(GraphBackend):
    name = "onnxruntime"
    package = "onnxruntime"
    extra = "onnx"
    dtypes = ("float32", "float16")

    def __init__(self, dtype: str = "float32", device: str | None = None, opset: int | None = None,
                 threads: int | None = None, graph_cache_size: int | None = None):
        super().__init__(dtype, device, graph_cache_size)
        import onnxruntime

        from se_multi.onnx_export import DEFAULT_OPSET, check_opset

        self._ort = onnxruntime
        self._np_dtype = np.dtype(self.dtype)
        self.opset = check_opset(DEFAULT_OPSET if opset is None else opset)
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise TypeError(f"onnxruntime backend: threads must be a positive int or None; got {threads!r}")
        self.threads = threads or _cores()
        self.providers = self._providers(device)
        self._op_sessions = BoundedCache(OP_GRAPHS_PER_BACKEND)

    def __repr__(self) -> str:
        providers = ", ".join(p if isinstance(p, str) else p[0] for p in self.providers)
        return (f"<OnnxRuntimeBackend 'onnxruntime' dtype={self.dtype}, whole graph, opset {self.opset}, "
                f"{providers}, {self.threads} threads>")

    # ------------------------------------------------------------------ sessions
    def _providers(self, device: str | None) -> list:
        if device in (None, "cpu"):
            return ["CPUExecutionProvider"]
        if device == "cuda" or (isinstance(device, str) and device.startswith("cuda:")):
            available = self._ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailable(
                    f"onnxruntime device={device!r} needs the CUDAExecutionProvider (pip install onnxruntime-gpu); "
                    f"this onnxruntime has: {', '.join(available)}")
            device_id = int(device.partition(":")[2] or 0)
            return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        raise ValueError(f"onnxruntime backend: device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}")

    def session_options(self, threads: int | None = None):
        """Inference settings: every graph optimisation, one intra-op thread per core."""
        so = self._ort.SessionOptions()
        so.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3  # errors only: no per-initializer chatter
        return so

    def session(self, model_bytes: bytes, threads: int | None = None):
        return self._ort.InferenceSession(model_bytes, self.session_options(threads), providers=self.providers)

    # ------------------------------------------------------------------ arrays
    def asarray(self, x):
        return np.ascontiguousarray(to_numpy(x), dtype=self._np_dtype)  # any backend's array

    @staticmethod
    def to_numpy(x):
        return np.asarray(x)

    def param(self, w, kind):
        # NumPy arrays in the compute dtype: constants of the traced graph, inputs of one-op graphs
        return self.asarray(w)

    # ------------------------------------------------------------------ whole graph
    def export(self, module, input_shape: tuple, batch="dynamic", symbolic_hw: bool = False):
        """The ModelProto of a module bound on this backend, traced at an NCHW ``input_shape``."""
        from se_multi.onnx_export import BATCH_DIM, OnnxRecorder

        recorder = OnnxRecorder(dtype=self.dtype, opset=self.opset)
        shape = (BATCH_DIM if batch == "dynamic" else int(batch), *input_shape[1:])
        return recorder.trace(module, shape, symbolic_hw=symbolic_hw)

    def compile(self, model, input_shape):
        """``fn(x_nchw) -> output``: the whole module as one ONNX Runtime session whose batch,
        height and width are symbolic (see the module docstring for why one graph)."""
        module = getattr(model, "module", model)  # a se_multi Model or its bound Module
        proto = self.export(module, tuple(input_shape), symbolic_hw=True)
        return _SessionRunner(self.session(proto.SerializeToString()), self)

    def graph_key(self, input_shape: tuple) -> tuple:
        return (int(input_shape[1]),)  # one graph for every batch and size

    def load(self, path) -> "_SessionRunner":
        """An ``.onnx`` file -> ``fn(x_nchw) -> output`` with this backend's session options.

        Raises ``ValueError`` for a file that is not ONNX, or not a one-input NCHW image model.
        """
        import onnx

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX file at {path}")
        try:
            proto = onnx.load_model(str(path), load_external_data=False)
        except Exception as exc:  # protobuf DecodeError and friends: not an ONNX file
            raise ValueError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
        if not proto.graph.node:
            raise ValueError(f"{path}: not a readable ONNX model (empty graph)")
        initializer_names = {t.name for t in proto.graph.initializer}
        inputs = [i for i in proto.graph.input if i.name not in initializer_names]
        dims = [len(i.type.tensor_type.shape.dim) for i in inputs]
        if len(inputs) != 1 or dims[0] != 4:
            raise ValueError(f"{path}: expected an image model with one NCHW (rank-4) input; "
                             f"got {len(inputs)} input(s) of rank {dims}")
        try:
            session = self.session(proto.SerializeToString())
        except Exception as exc:  # ORT's own error: unknown op, bad opset, type mismatch...
            raise ValueError(f"{path}: onnxruntime cannot run this model: {str(exc).splitlines()[0]}") from None
        elem = session.get_inputs()[0].type  # 'tensor(float)' / 'tensor(float16)'
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(elem)
        if dtype is None:
            raise ValueError(f"{path}: expected a float32 or float16 input; got {elem}")
        return _SessionRunner(session, self, dtype=np.dtype(dtype))

    # ------------------------------------------------------------------ op by op
    def _op_session(self, op: str, args, kwargs, arrays: list[np.ndarray]):
        key = (op, repr(args), repr(sorted(kwargs.items())))
        return self._op_sessions.get_or_create(key, lambda: self._make_op_session(op, args, kwargs, arrays))

    def _make_op_session(self, op: str, args, kwargs, arrays: list[np.ndarray]):
        from se_multi.onnx_export import OnnxRecorder

        rec = OnnxRecorder(dtype=self.dtype, opset=self.opset)
        syms = [rec.graph_input(f"in{i}", a.shape) for i, a in enumerate(arrays)]
        fill = lambda v: _map_slots(v, lambda s: syms[s.index])  # noqa: E731
        out = getattr(rec, op)(*fill(args), **{k: fill(v) for k, v in kwargs.items()})
        proto = rec.to_model([rec.output(out)], ["out"], graph_name=op)
        # one thread: a one-op graph is tiny, and hundreds of cached sessions must not each own a pool
        return self.session(proto.SerializeToString(), threads=1)

    def _run_op(self, op: str, *args, **kwargs):
        arrays: list[np.ndarray] = []

        def slot(a):
            arrays.append(self.asarray(a))
            return _Slot(len(arrays) - 1, arrays[-1].shape)

        args = _map_arrays(args, slot)
        kwargs = {k: _map_arrays(v, slot) for k, v in kwargs.items()}
        sess = self._op_session(op, args, kwargs, arrays)
        return sess.run(None, {f"in{i}": a for i, a in enumerate(arrays)})[0]


def _is_array(v) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype") and not np.isscalar(v)


def _map_arrays(v, fn):
    """Replace every array inside ``v`` (lists/tuples included) with ``fn(array)``."""
    if _is_array(v):
        return fn(v)
    if isinstance(v, (list, tuple)):
        return type(v)(_map_arrays(x, fn) for x in v)
    return v


def _map_slots(v, fn):
    if isinstance(v, _Slot):
        return fn(v)
    if isinstance(v, (list, tuple)):
        return type(v)(_map_slots(x, fn) for x in v)
    return v


def _op_method(op: str):
    def method(self, *args, **kwargs):
        return self._run_op(op, *args, **kwargs)

    method.__name__ = op
    method.__doc__ = f"``{op}`` as a one-op ONNX graph run by ONNX Runtime."
    return method


for _op in _OPS:
    setattr(OnnxRuntimeBackend, _op, _op_method(_op))
OnnxRuntimeBackend.__abstractmethods__ = frozenset()  # the loop above implemented them


class _SessionRunner:
    """A compiled graph: ``runner(x_nchw)`` -> NumPy output; ``metadata`` from the file."""

    def __init__(self, session, backend: OnnxRuntimeBackend, dtype: np.dtype | None = None):
        self.session, self.backend = session, backend
        self.dtype = dtype or backend._np_dtype
        self.input_name = session.get_inputs()[0].name
        self.output_names = [o.name for o in session.get_outputs()]
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)

    def __call__(self, x):
        x = np.ascontiguousarray(to_numpy(x), dtype=self.dtype)
        return self.session.run(self.output_names[:1], {self.input_name: x})[0]
