"""ONNX Runtime backend: whole-graph execution of the exported model, op by op for conformance.

Both ways in (the whole graph, one-op graphs for the conformance suite) come from the shared
base :class:`se_multi.backends.onnx_fed.OnnxFedBackend`; this module makes the engine, an
InferenceSession with inference options.

- **Whole graph**: one session per model whose batch, height and width are symbolic serves
  every input size, so memory does not grow with the sizes a model sees.
  Measured against one session per size (static H and W) on this project's 2-core CI
  machine, ORT 1.32, batch 1, 224x224, interleaved medians of 80 runs, two runs each:
  SE-ResNet-50 27.9 / 27.8 ms static vs 28.8 / 28.1 ms symbolic; MobileNetV3-Large
  3.80 / 4.63 ms vs 3.99 / 4.35 ms -- the same within noise, while static sessions cost
  ~230 MiB (SE-ResNet-50) per new size. The session lives in the bound model's cache
  (:mod:`se_multi.cache`) and is freed with the model. ``InferenceSession.run`` is
  thread-safe, so a model may be called from several threads at once.
- **bfloat16**: not offered. ONNX's Conv takes bfloat16 only from opset 22, and ONNX
  Runtime 1.32's CPU execution provider has no bfloat16 kernel for Conv, Relu or MatMul
  (checked 2026-11-24: "Could not find an implementation for Conv(22)"); its bfloat16
  fast-math GEMM option (``mlas.enable_gemm_fastmath_arm64_bfloat16``) is for ARM64 only.
  On a CPU, bfloat16 runs on ``openvino`` or ``torch``.

:meth:`~se_multi.backends.onnx_fed.OnnxFedBackend.load` runs an existing ``.onnx`` file
(se_multi's or another NCHW image model's) with the same session options.
"""

from __future__ import annotations

import numpy as np

from se_multi.backend import BackendUnavailable
from se_multi.backends.onnx_fed import OnnxFedBackend, serialized
from se_multi.cpu import omp_threads, usable_cores
from se_multi.dispatch import to_numpy


class OnnxRuntimeBackend(OnnxFedBackend):
    name = "onnxruntime"
    package = "onnxruntime"
    extra = "onnx"
    #: int8: the model quantized by ONNX Runtime's static quantizer, QDQ (se_multi.quantize)
    dtypes = ("float32", "float16", "int8")

    def __init__(self, dtype: str = "float32", device: str | None = None, opset: int | None = None,
                 threads: int | None = None, graph_cache_size: int | None = None, calibration=None,
                 quantize_se: bool = False):
        super().__init__(dtype, device, opset, threads, graph_cache_size)
        from se_multi.backends.int8 import check_options

        #: int8: what calibrates the model and whether SE blocks are quantized too (se_multi.backends.int8)
        self.calibration, self.quantize_se = check_options(self.name, self.dtype, calibration, quantize_se)
        import onnxruntime

        self._ort = onnxruntime
        self.threads = self.threads or omp_threads() or usable_cores()
        self.providers = self._providers(device)

    def __repr__(self) -> str:
        providers = ", ".join(p if isinstance(p, str) else p[0] for p in self.providers)
        return (f"<OnnxRuntimeBackend 'onnxruntime' dtype={self.dtype}, whole graph, opset {self.opset}, "
                f"{providers}, {self.threads} thread{'s' if self.threads != 1 else ''}>")

    @classmethod
    def native_dtypes(cls) -> tuple[str, ...]:
        from se_multi.cpu import cpu_info

        return (*super().native_dtypes(), *(("int8",) if cpu_info().int8 else ()))  # MLAS's VNNI/AMX int8 kernels

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
        """An ``InferenceSession`` of a serialized model that does not keep the bytes it was made from."""
        session = self._ort.InferenceSession(model_bytes, self.session_options(threads), providers=self.providers)
        if self.providers == ["CPUExecutionProvider"]:
            # ONNX Runtime keeps the bytes for the session's life ("TODO: This is bad as we're holding
            # the memory indefinitely", onnxruntime_inference_collection.py), a second copy of every
            # weight beside the session's own. It reads them again only to rebuild the session on
            # another provider after a provider failure, which a CPU-only session has none to go to.
            session._model_bytes = None
        return session

    def engine(self, proto, threads: int | None = None, dtype: np.dtype | None = None) -> "_SessionRunner":
        """A ModelProto, or one serialized: a message passed on and not kept
        (:meth:`~se_multi.backends.onnx_fed.OnnxFedBackend.compile`) is freed once serialized."""
        data = serialized(proto)
        del proto
        return _SessionRunner(self.session(data, threads), self, dtype)


class _SessionRunner:
    """A compiled graph: ``runner(*inputs)`` (a model: ``runner(x_nchw)``) -> NumPy output;
    ``metadata`` from the file."""

    def __init__(self, session, backend: OnnxRuntimeBackend, dtype: np.dtype | None = None):
        self.session, self.backend = session, backend
        self.dtype = dtype or backend._np_dtype
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)

    def __call__(self, *inputs):
        feed = {name: np.ascontiguousarray(to_numpy(x), dtype=self.dtype) for name, x in zip(self.input_names, inputs)}
        return self.session.run(self.output_names[:1], feed)[0]
