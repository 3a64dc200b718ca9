"""The shared base of the engines fed se_multi's own ONNX export (ONNX Runtime, OpenVINO).

Two ways in, one graph builder (:class:`se_multi.backends.onnx_recorder.OnnxRecorder`):

- **Whole graph** (:meth:`OnnxFedBackend.compile`): the bound module (its folded weights are
  NumPy arrays, made by :meth:`~OnnxFedBackend.param`) is traced into one ONNX graph and handed
  to the engine (:meth:`~OnnxFedBackend.engine`). With :attr:`~OnnxFedBackend.symbolic_shapes`
  the graph's batch, height and width are symbolic, so one compiled graph per model serves
  every input size (its :meth:`~OnnxFedBackend.graph_key` is the channel count alone);
  otherwise each input shape gets its own graph, at most ``graph_cache_size`` per model.
  Either way what is compiled lives in the bound model's cache (:mod:`se_multi.cache`).
- **Op by op** (every op-table method): the call is recorded as a one-op graph whose arrays
  are graph inputs, compiled by the same engine, run, and the result returned as a NumPy
  array. One-op graphs are cached by op signature (op, shapes, options), at most
  :data:`se_multi.cache.OP_GRAPHS_PER_BACKEND` per backend, so the conformance suite checks
  exactly the ONNX nodes the exporter writes, as the engine runs them.

A subclass names its package and implements :meth:`~OnnxFedBackend.engine`: ModelProto ->
``fn(*inputs) -> first output`` (NumPy in, NumPy out, safe to call from several threads).
No framework is imported here.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Callable

import numpy as np

from se_multi import op_table
from se_multi.backend import GraphBackend
from se_multi.cache import OP_GRAPHS_PER_BACKEND, BoundedCache
from se_multi.dispatch import to_numpy

#: op-table methods run as one-op graphs (the fused ops too: their ONNX form differs from the defaults)
OPS = op_table.NAMES


class _Slot:
    """Placeholder for the i-th array argument of an op call (the signature keeps shapes only)."""

    __slots__ = ("index", "shape")

    def __init__(self, index: int, shape: tuple):
        self.index, self.shape = index, shape

    def __repr__(self) -> str:
        return f"in{self.index}{self.shape}"


class OnnxFedBackend(GraphBackend):
    """A whole-graph backend whose engine compiles se_multi's ONNX export (see the module docstring)."""

    array_module = "numpy"  # its arrays are NumPy arrays
    #: whether the whole-model graph has symbolic batch, height and width (one graph per model)
    symbolic_shapes: bool = True
    #: equivalent graph forms the engine needs (:data:`se_multi.onnx_export.WORKAROUNDS`)
    workarounds: frozenset = frozenset()

    def __init__(self, dtype: str = "float32", device: str | None = None, opset: int | None = None,
                 threads: int | None = None, graph_cache_size: int | None = None):
        super().__init__(dtype, device, graph_cache_size)
        from se_multi.backends.onnx_recorder import DEFAULT_OPSET, OnnxRecorder, check_opset

        self.opset = check_opset(DEFAULT_OPSET if opset is None else opset)
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise TypeError(f"{self.name} backend: threads must be a positive int or None; got {threads!r}")
        #: intra-op threads asked for, taken as given: an explicit count is the caller's and is not
        #: clamped to the usable cores (``None``: the adapter's default, ``OMP_NUM_THREADS`` where set,
        #: at most the cores this process may use, :func:`se_multi.cpu.omp_threads`)
        self.threads = threads
        #: the dtype of the graph's tensors and of the arrays in and out: the compute dtype where
        #: ONNX export writes it, else float32 (an engine then computes it at reduced precision)
        self.graph_dtype = self.dtype if self.dtype in OnnxRecorder.dtypes else "float32"
        self._np_dtype = np.dtype(self.graph_dtype)
        self.param_dtype = self.graph_dtype  # param rounds with NumPy's own cast
        self._op_graphs = BoundedCache(OP_GRAPHS_PER_BACKEND)

    @abc.abstractmethod
    def engine(self, proto, threads: int | None = None, dtype: np.dtype | None = None) -> Callable[..., np.ndarray]:
        """A ModelProto, or one serialized (a file's bytes: :meth:`load`), -> ``fn(*inputs) -> first
        output`` (thread-safe); ``threads`` overrides :attr:`threads` (one-op graphs run on one
        thread); ``dtype`` is the inputs' dtype when it is not the backend's (a loaded file)."""

    # ------------------------------------------------------------------ arrays
    @property
    def input_dtype(self) -> str:
        """The dtype a model input's values must fit (``Model.check_input``): the compute dtype, but
        float32 at int8 (a quantized graph takes float32 and quantizes inside)."""
        return "float32" if self.dtype == "int8" else self.dtype

    def asarray(self, x):
        return np.ascontiguousarray(to_numpy(x), dtype=self._np_dtype)  # any backend's array

    @staticmethod
    def to_numpy(x):
        return np.asarray(x)

    def param(self, w, kind):
        # NumPy arrays in the graph dtype: constants of the traced graph, inputs of one-op graphs
        return self.asarray(w)

    # ------------------------------------------------------------------ whole graph
    def _recorder(self):
        from se_multi.backends.onnx_recorder import OnnxRecorder

        return OnnxRecorder(dtype=self.graph_dtype, opset=self.opset, workarounds=self.workarounds)

    def export(self, module, input_shape: tuple, batch="dynamic", symbolic_hw: bool = False, as_bytes: bool = False):
        """The ModelProto of a module bound on this backend, traced at an NCHW ``input_shape``; with
        ``as_bytes``, serialized (:meth:`OnnxRecorder.trace <se_multi.backends.onnx_recorder.OnnxRecorder.trace>`)."""
        from se_multi.backends.onnx_recorder import BATCH_DIM

        recorder = self._recorder()
        shape = (BATCH_DIM if batch == "dynamic" else int(batch), *input_shape[1:])
        return recorder.trace(module, shape, symbolic_hw=symbolic_hw, as_bytes=as_bytes)

    def compile(self, model, input_shape):
        """``fn(x_nchw) -> output``: the whole module as one graph of the engine (symbolic batch,
        height and width when :attr:`symbolic_shapes`, else this input shape's)."""
        module = getattr(model, "module", model)  # a se_multi Model or its bound Module
        shape = tuple(input_shape)
        if self.dtype == "int8":  # the float32 graph quantized once per model, then compiled
            from se_multi.backends.int8 import compile_int8

            return compile_int8(self, module, shape)
        size = dict(symbolic_hw=True) if self.symbolic_shapes else dict(batch=shape[0])
        # serialized as traced: the engine reads bytes, and the message would be one more copy of
        # every weight, and protobuf's serializing two more at its peak (OnnxRecorder.trace)
        return self.engine(self.export(module, shape, as_bytes=True, **size))

    def load(self, path) -> Callable[..., np.ndarray]:
        """An ``.onnx`` file -> ``fn(x_nchw) -> output`` with this backend's engine and options.

        Raises ``ValueError`` for a file that is not ONNX, or not a one-input NCHW float image model.
        """
        import onnx

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX file at {path}")
        data = path.read_bytes()
        try:  # parsed to check its input; the engine gets the file's bytes, not the proto serialized again
            proto = onnx.load_model_from_string(data)
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
        elem = inputs[0].type.tensor_type.elem_type
        dtype = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16}.get(elem)
        if dtype is None:
            raise ValueError(f"{path}: expected a float32 or float16 input; got {onnx.TensorProto.DataType.Name(elem)}")
        try:
            return self.engine(data, dtype=np.dtype(dtype))
        except Exception as exc:  # the engine's own error: unknown op, bad opset, type mismatch...
            raise ValueError(f"{path}: {self.name} cannot run this model: {str(exc).strip().splitlines()[0]}") from None

    def graph_key(self, input_shape: tuple) -> tuple:
        if self.symbolic_shapes:
            return (int(input_shape[1]),)  # one graph for every batch and size
        return tuple(int(d) for d in input_shape)

    # ------------------------------------------------------------------ op by op
    def _make_op_graph(self, op: str, args, kwargs, arrays: list[np.ndarray], part: int | None = None):
        rec = self._recorder()
        syms = [rec.graph_input(f"in{i}", a.shape) for i, a in enumerate(arrays)]
        fill = lambda v: _map_slots(v, lambda s: syms[s.index])  # noqa: E731
        out = getattr(rec, op)(*fill(args), **{k: fill(v) for k, v in kwargs.items()})
        if isinstance(out, tuple):  # several outputs (max_pool2d_indices): one graph each, run in turn
            if part is None:
                runs = [self._make_op_graph(op, args, kwargs, arrays, i) for i in range(len(out))]
                return lambda *xs: tuple(run(*xs) for run in runs)
            out = out[part]
        proto = rec.to_model([rec.output(out)], ["out"], graph_name=op)
        # one thread: a one-op graph is tiny, and hundreds of cached graphs must not each own a pool
        return self.engine(proto, threads=1)

    def _run_op(self, op: str, *args, **kwargs):
        arrays: list[np.ndarray] = []

        def slot(a):
            arrays.append(self.asarray(a))
            return _Slot(len(arrays) - 1, arrays[-1].shape)

        args = _map_arrays(args, slot)
        kwargs = {k: _map_arrays(v, slot) for k, v in kwargs.items()}
        key = (op, repr(args), repr(sorted(kwargs.items())))
        run = self._op_graphs.get_or_create(key, lambda: self._make_op_graph(op, args, kwargs, arrays))
        return run(*arrays)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for op in OPS:  # every op of the table is a one-op graph of the subclass's engine
            if op not in cls.__dict__:
                setattr(cls, op, _op_method(op, cls.name))  # before ABCMeta collects the abstract methods


def serialized(proto) -> bytes:
    """What an engine reads: a ModelProto serialized, or bytes as they came (a file's, :meth:`OnnxFedBackend.load`)."""
    return proto if isinstance(proto, bytes) else proto.SerializeToString()


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


def _op_method(op: str, engine_name: str):
    def method(self, *args, **kwargs):
        return self._run_op(op, *args, **kwargs)

    method.__name__ = op
    method.__doc__ = f"``{op}`` as a one-op ONNX graph run by {engine_name or 'the engine'}."
    return method
