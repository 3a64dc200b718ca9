"""OpenVINO backend: se_multi's own ONNX export compiled by OpenVINO (CPU, GPU, NPU, AUTO).

The graph and the one-op graphs of the conformance suite come from the shared base
:class:`se_multi.backends.onnx_fed.OnnxFedBackend`, exactly as for ``onnxruntime``; this module
makes the engine: OpenVINO's ONNX frontend reads the serialized ModelProto (no file), and the
graph is compiled with explicit settings. Building the graph through OpenVINO's own model API instead would be a second
recorder for no gain: after the CPU plugin's transformations this graph and the timm-structured
PyTorch export compile to the same execution graph node for node (``python -m benchmarks.goals
--exec-graph``) and run at the same speed (README, goal table); the ONNX route costs only
the read at compile time (0.14 s for SE-ResNet-50).

- **Precision.** ``dtype`` sets OpenVINO's ``INFERENCE_PRECISION_HINT`` explicitly: ``float32``
  is ``f32``, ``bfloat16`` is ``bf16``, ``float16`` is ``f16``. The graph, its weights and the
  arrays in and out stay float32; the plugin computes at the hinted precision. This matters:
  OpenVINO's CPU plugin *defaults* to bf16 on CPUs with bfloat16 units (AVX512_BF16, AMX), so
  left alone "float32" would silently be bfloat16 (max rel err 3e-3 instead of 7e-7 on
  SE-ResNet-50). A dtype runs where the device lists it in ``OPTIMIZATION_CAPABILITIES``
  (``BF16``, ``FP16``); every compiled graph's precision is read back and checked.
- **Shapes.** ``shapes="static"`` (the default) compiles one graph per input shape, at most
  ``graph_cache_size`` (4) per model; ``shapes="dynamic"`` one graph with symbolic batch, height
  and width for every size, as ``onnxruntime`` does. Measured 2026-11-24 on this project's
  machine (OpenVINO 2026.4, 2 threads, batch 1, 224x224, interleaved medians of 60 runs):
  SE-ResNet-50 f32 49.7 static vs 53.8 ms dynamic (p10 27.9 vs 30.4), bf16 15.3 vs 18.8 (p10
  9.4 vs 10.5); MobileNetV3-Large f32 11.4 vs 12.6 (p10 8.2 vs 9.6), bf16 7.9 vs 8.6 (p10 4.0
  vs 4.8): static graphs are 5-20% faster (shapes are folded into the kernels and memory is
  planned once), and a static batch with them ~5% more than a symbolic one. A graph compiles
  in ~0.2 s (SE-ResNet-50), so a model seeing ever-new sizes should use ``shapes="dynamic"``.
- **Threads.** ``threads=`` sets ``INFERENCE_NUM_THREADS`` (CPU; default: ``OMP_NUM_THREADS``
  where set, as in a Ray actor, else OpenVINO's, one per core) and ``hint=`` the ``PERFORMANCE_HINT``: ``"latency"`` (default; one stream using every
  core for one call) or ``"throughput"``/``"cumulative_throughput"`` (several streams, for many
  concurrent calls). A compiled graph is run through a small pool of infer requests (one per
  concurrent call, at most :data:`se_multi.cache.INFER_REQUESTS_PER_GRAPH` kept idle), so a
  model may be called from several threads at once.
"""

from __future__ import annotations

import io
import threading

import numpy as np

from se_multi.backend import BackendUnavailable
from se_multi.backends.onnx_fed import OnnxFedBackend, serialized
from se_multi.cpu import omp_threads
from se_multi.dispatch import to_numpy

#: se_multi dtype -> OpenVINO's inference precision, and the capability a device lists for it
#: (int8: the model quantized by NNCF, se_multi.quantize; what stays float -- the SE squeeze, gate
#: and scale, the head -- computes in f32, so "kept in float" means float32)
PRECISIONS = {"float32": ("f32", "FP32"), "bfloat16": ("bf16", "BF16"), "float16": ("f16", "FP16"),
              "int8": ("f32", "INT8")}
#: performance hints by their se_multi name
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT", "cumulative_throughput": "CUMULATIVE_THROUGHPUT"}
#: device families (a device name is one of these, optionally ``.N`` for GPU/NPU, or ``AUTO:...``)
DEVICES = ("CPU", "GPU", "NPU", "AUTO")
SHAPES = ("static", "dynamic")


class OpenVinoBackend(OnnxFedBackend):
    name = "openvino"
    package = "openvino"
    extra = "openvino"
    dtypes = tuple(PRECISIONS)  # each with its inference precision

    def __init__(self, dtype: str = "float32", device: str | None = None, opset: int | None = None,
                 threads: int | None = None, hint: str = "latency", shapes: str = "static",
                 graph_cache_size: int | None = None, calibration=None, quantize_se: bool = False):
        super().__init__(dtype, device, opset, threads, graph_cache_size)
        from se_multi.backends.int8 import check_options

        #: int8: what calibrates the model and whether SE blocks are quantized too (se_multi.backends.int8)
        self.calibration, self.quantize_se = check_options(self.name, self.dtype, calibration, quantize_se)
        if not isinstance(hint, str) or hint.lower() not in HINTS:
            raise ValueError(f"openvino backend: hint must be one of {', '.join(map(repr, HINTS))}; got {hint!r}")
        if shapes not in SHAPES:
            raise ValueError(f"openvino backend: shapes must be 'static' or 'dynamic'; got {shapes!r}")
        self.hint = hint.lower()
        self.shapes = shapes
        self.symbolic_shapes = shapes == "dynamic"
        import openvino

        self._ov = openvino
        self._core = openvino.Core()
        self._frontend = None  # OpenVINO's ONNX frontend, loaded on the first read (read_proto)
        self.device = self._resolve_device(device)
        if self.threads is not None and not self.device.startswith("CPU"):
            raise ValueError(f"openvino backend: threads= applies to the CPU device; got device {self.device!r}")
        if self.threads is None and self.device.startswith("CPU"):
            self.threads = omp_threads()
        self.precision = self._check_precision()
        #: graph forms that OpenVINO computes right where it gets the plain ONNX form wrong
        #: (:data:`se_multi.onnx_export.WORKAROUNDS`): it divides a ceil-mode average pool's
        #: overhanging window by the whole kernel; its AMX bfloat16 convolution fails on one-column
        #: outputs of strided 3x3 convolutions; it refuses a pool window (max or average) larger
        #: than its padded input, which PyTorch (and so se_multi's shapes) allows with ceil_mode,
        #: so every ceil-mode pool is written as a floor-mode one with longer end pads, in static
        #: and dynamic graphs (``smallest_input_size()`` runs on both); it keeps a ceil-mode window
        #: that starts in the right padding, which PyTorch drops. The strided-convolution form only
        #: where the buggy kernel can run (AMX, ``brgconv_avx512_amx_bf16``): elsewhere the plain
        #: convolution is right, and the padded one is not at one-column inputs (segfault, garbage)
        self.workarounds = frozenset({"ceil_avg_pool_pads", "ceil_pool_end_pads", "ceil_pool_slice",
                                      *(("strided_conv_pad",) if self.dtype == "bfloat16" and _amx() else ())})

    def __repr__(self) -> str:
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}" if self.threads else "default threads"
        return (f"<OpenVinoBackend 'openvino' dtype={self.dtype} (inference precision {self.precision}), "
                f"whole graph, {self.device}, {self.shapes} shapes, {self.hint} hint, {threads}, "
                f"opset {self.opset}, OpenVINO {self._ov.__version__.split('-')[0]}>")

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        import importlib.util

        missing = [m for m in ("openvino", "onnx") if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"not installed ({', '.join(missing)}): {cls.install_hint()}"
        return True, "available"

    @classmethod
    def native_dtypes(cls) -> tuple[str, ...]:
        from se_multi.cpu import cpu_info

        return ("float32", *cpu_info().native_reduced())

    # ------------------------------------------------------------------ settings
    def _resolve_device(self, device) -> str:
        if device is None:
            return "CPU"
        if not isinstance(device, str):
            raise TypeError(f"openvino backend: device must be a string such as 'CPU', 'GPU', 'GPU.1', 'NPU' "
                            f"or 'AUTO'; got {type(device).__name__} {device!r}")
        name = device.strip().upper()
        family = name.partition(":")[0].partition(".")[0]
        if family not in DEVICES or (":" in name and family != "AUTO"):
            raise ValueError(f"openvino backend: device must be one of {', '.join(DEVICES)} (GPU.N, NPU.N, "
                             f"'AUTO:GPU,CPU' included); got {device!r}")
        if family == "AUTO":
            return name
        available = list(self._core.available_devices)
        if name not in available and not (name == family and any(d.startswith(family + ".") for d in available)):
            raise BackendUnavailable(f"openvino device {device!r} requested but OpenVINO sees only: "
                                     f"{', '.join(available) or 'no device'}")
        return name

    def _check_precision(self) -> str:
        precision, capability = PRECISIONS[self.dtype]
        if self.device.startswith("AUTO"):
            return precision  # the device AUTO picks is asked at compile time
        caps = self._core.get_property(self.device, "OPTIMIZATION_CAPABILITIES")
        if capability not in caps:
            supported = [d for d, (_, c) in PRECISIONS.items() if c in caps]
            raise ValueError(f"openvino backend: device {self.device} has no {self.dtype} (its OPTIMIZATION_CAPABILITIES: "
                             f"{', '.join(caps)}); dtypes it runs: {', '.join(supported)}")
        return precision

    def config(self, threads: int | None = None) -> dict:
        """The compile settings: explicit precision and hint; threads on the CPU."""
        cfg = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": HINTS[self.hint]}
        threads = threads or self.threads
        if threads and self.device.startswith("CPU"):
            cfg["INFERENCE_NUM_THREADS"] = int(threads)
        return cfg

    # ------------------------------------------------------------------ engine
    def read_proto(self, proto):
        """A ModelProto, or one serialized, -> ``openvino.Model``, read by OpenVINO's ONNX frontend
        from the bytes themselves. ``Core.read_model(bytes)`` reads the same graph, but copies the
        bytes into a string, into a stream, and once more for its IR reader's look at the format
        before the ONNX reader makes its own copy: reading VGG-16 (553 MB) faulted in 1.3-1.8 GB
        of fresh memory that way, 0.77 GB this way (2026-12-05)."""
        name = _graph_name(proto)
        data = io.BytesIO(serialized(proto))
        del proto
        try:
            frontend = self._onnx_frontend()
            return frontend.convert(frontend.load(data))
        except (RuntimeError, *self._frontend_failures()) as exc:  # one line, OpenVINO's gist
            what = f"graph {name!r}" if name else "the serialized graph"
            raise RuntimeError(f"openvino {self._ov.__version__.split('-')[0]} cannot read {what}: "
                               f"{_gist(exc)}") from None

    def _onnx_frontend(self):
        """OpenVINO's ONNX frontend (loaded once per backend object)."""
        if self._frontend is None:
            from openvino.frontend import FrontEndManager

            self._frontend = FrontEndManager().load_by_framework("onnx")
        return self._frontend

    def _frontend_failures(self) -> tuple[type, ...]:
        """The frontend's own exceptions, which are not RuntimeErrors (a node it cannot convert)."""
        import openvino.frontend as frontend

        return (frontend.GeneralFailure, frontend.OpConversionFailure, frontend.InitializationFailure,
                frontend.NotImplementedFailure, frontend.OpValidationFailure)

    def compile_model(self, model, threads: int | None = None, name: str | None = None):
        """An ``openvino.Model`` (a read graph, or one NNCF quantized) -> ``CompiledModel`` with
        :meth:`config`, its precision checked."""
        try:
            compiled = self._core.compile_model(model, self.device, self.config(threads))
        except RuntimeError as exc:  # OpenVINO's multi-line report: keep its gist, on one line
            raise RuntimeError(f"openvino {self._ov.__version__.split('-')[0]} cannot compile graph "
                               f"{name or model.get_friendly_name()!r} on {self.device}: {_gist(exc)}") from None
        if not self.device.startswith("AUTO"):  # float32 must mean float32: read the precision back
            got = compiled.get_property("INFERENCE_PRECISION_HINT")
            if got != getattr(self._ov.Type, self.precision):
                raise RuntimeError(f"openvino compiled a {self.dtype} graph at inference precision {got}")
        return compiled

    def engine(self, proto, threads: int | None = None, dtype: np.dtype | None = None) -> "_InferPool":
        """A ModelProto, or one serialized, compiled with :meth:`config`. A message passed on and not
        kept (:meth:`~se_multi.backends.onnx_fed.OnnxFedBackend.compile`) is freed once read, and the
        read graph once compiled: each holds a copy of every weight (VGG-16's 550 MB)."""
        name = _graph_name(proto)
        model = self.read_proto(proto)
        del proto
        compiled = self.compile_model(model, threads, name)
        del model
        return _InferPool(compiled, dtype or self._np_dtype)

    def model_engine(self, model, dtype: np.dtype | None = None) -> "_InferPool":
        """:meth:`engine` for an ``openvino.Model`` already built (one NNCF quantized): compiled
        with this backend's settings, ``runner(*inputs)`` -> NumPy output."""
        return _InferPool(self.compile_model(model), dtype or self._np_dtype)


def _graph_name(proto) -> str | None:
    """A ModelProto's graph name, for errors; ``None`` for bytes (OpenVINO names those itself)."""
    return None if isinstance(proto, bytes) else proto.graph.name


def _amx() -> bool:
    """Whether this CPU has AMX bfloat16 tiles, where OpenVINO's AMX convolution bug can strike."""
    from se_multi.cpu import cpu_info

    return "amx_bf16" in cpu_info().flags


def _gist(exc: BaseException) -> str:
    """The informative lines of an OpenVINO exception (it prefixes source locations and banners)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("Exception from", "Check 'false'", "Summary:", "FrontEnd API"))]
    return " ".join(keep or lines)[:400]


class _InferPool:
    """A compiled graph: ``runner(*inputs)`` -> NumPy output (a copy), thread-safe. Each call takes
    an idle infer request or makes one; at most ``INFER_REQUESTS_PER_GRAPH`` are kept idle."""

    def __init__(self, compiled, dtype: np.dtype):
        from se_multi.cache import INFER_REQUESTS_PER_GRAPH

        self.compiled, self.dtype = compiled, np.dtype(dtype)
        self._idle: list = []
        self._keep = INFER_REQUESTS_PER_GRAPH
        self._lock = threading.Lock()

    def __call__(self, *inputs):
        with self._lock:
            request = self._idle.pop() if self._idle else None
        if request is None:
            request = self.compiled.create_infer_request()
        try:
            feed = {i: np.ascontiguousarray(to_numpy(x), dtype=self.dtype) for i, x in enumerate(inputs)}
            try:
                return request.infer(feed, share_inputs=True, share_outputs=False)[0]
            except RuntimeError as exc:  # e.g. a size a size-generic graph cannot take
                shapes = ", ".join("x".join(map(str, a.shape)) for a in feed.values())
                raise RuntimeError(f"openvino cannot run a {shapes} input: {_gist(exc)}") from None
        finally:
            with self._lock:
                if len(self._idle) < self._keep:
                    self._idle.append(request)
