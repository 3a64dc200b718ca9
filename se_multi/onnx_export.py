"""ONNX export by tracing the op graph: the model's own ``forward`` runs on the recording
backend (:mod:`se_multi.backends.onnx_recorder`, with the adapters; its names are re-exported
here), and this module writes what it recorded as a file with se_multi's metadata.

Command line: ``se-multi export NAME OUT.onnx [--weights W] [--opset N] [--fp16] [--input-size H W]``
(:mod:`se_multi.cli.export`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from se_multi._version import __version__
from se_multi.backends.onnx_recorder import (
    BATCH_DIM, DEFAULT_OPSET, INPUT_NAME, MIN_OPSET, OP_MIN_OPSET, OUTPUT_NAME, SPATIAL_DIMS, WORKAROUNDS,
    OnnxExportError, OnnxRecorder, Sym, _onnx, check_opset)
from se_multi.dtypes import canonical

#: the recorder's names are the exporter's public names too (``se_multi.onnx_export.OnnxRecorder``)
__all__ = ["BATCH_DIM", "DEFAULT_OPSET", "INPUT_NAME", "MIN_OPSET", "OP_MIN_OPSET", "OUTPUT_NAME", "SPATIAL_DIMS",
           "WORKAROUNDS", "OnnxExportError", "OnnxRecorder", "Sym", "build_onnx", "check_opset", "export_onnx",
           "pretrained_metadata"]

# =========================================================================== metadata
def pretrained_metadata(model_name: str, num_classes: int | None) -> dict[str, str]:
    """Preprocessing a consumer needs (mean, std, input size, interpolation, crop) and the
    class labels: the 1000 ImageNet names, newline-joined, when the head is ImageNet-1k, so
    the file is self-contained (a browser or TensorRT consumer has no se_multi)."""
    try:
        from se_multi.pretrained import get_config, imagenet_labels
        cfg = get_config(model_name)
    except (ImportError, ValueError):
        return {"pretrained_config": "none"}  # a model without a published preprocessing recipe
    meta = {
        "pretrained_tag": cfg.tag,
        "mean": json.dumps(list(cfg.mean)),
        "std": json.dumps(list(cfg.std)),
        "input_size": json.dumps(list(cfg.input_size)),
        "interpolation": cfg.interpolation,
        "crop_pct": repr(cfg.crop_pct),
        "crop_mode": cfg.crop_mode,
    }
    if num_classes == 1000 and cfg.num_classes == 1000:
        meta["label_set"] = "imagenet-1k"
        meta["labels"] = "\n".join(imagenet_labels())
    return meta


def _num_classes(output_shape: tuple) -> int | None:
    return int(output_shape[1]) if len(output_shape) >= 2 and isinstance(output_shape[1], (int, np.integer)) else None


def _batch_dim(batch) -> str | int:
    if batch == "dynamic":
        return BATCH_DIM
    if isinstance(batch, (int, np.integer)) and not isinstance(batch, bool) and batch >= 1:
        return int(batch)
    raise OnnxExportError(f"ONNX export: batch must be 'dynamic' or a positive integer; got {batch!r}")


def build_onnx(model_or_name, weights=None, input_size=(224, 224), batch="dynamic",
               opset: int = DEFAULT_OPSET, dtype: str = "float32", as_bytes: bool = False, **model_kwargs):
    """The ONNX ModelProto for a model name (bound with ``weights``) or a bound ``Model``
    whose weights are NumPy arrays (numpy or onnxruntime backend); with ``as_bytes``, that
    model serialized, its weights never held in a message (a third of the memory at the peak:
    ``OnnxRecorder.with_weights``)."""
    from se_multi.models import Model, create_model

    dtype = canonical(dtype) or str(dtype)  # an alias ("fp16", "half") -> its name; anything else refused below
    recorder = OnnxRecorder(dtype=dtype, opset=opset)
    if isinstance(model_or_name, Model):
        if weights is not None or model_kwargs:
            raise OnnxExportError("ONNX export: weights/model options apply to a model name, not a built Model")
        model = model_or_name
    elif isinstance(model_or_name, str):
        model = create_model(model_or_name, weights=weights, backend=recorder, **model_kwargs)
    else:
        raise OnnxExportError(f"ONNX export: expected a model name or a se_multi Model; got {type(model_or_name).__name__}")
    h, w = _input_size(input_size)
    shape = (_batch_dim(batch), model.in_chans, h, w)
    model.check_input_size((1, model.in_chans, h, w))  # a graph with an empty output must never be written
    proto = recorder.trace_graph(model.module, shape, graph_name=f"se_multi_{model.name}")
    out_shape = [d.dim_value or d.dim_param for d in proto.graph.output[0].type.tensor_type.shape.dim]
    meta = {
        "se_multi.model": model.name,
        "se_multi.version": __version__,
        "input_names": json.dumps([INPUT_NAME]),
        "output_names": json.dumps([OUTPUT_NAME]),
        "input_layout": "NCHW",
        "dtype": dtype,
        **pretrained_metadata(model.name, _num_classes(tuple(out_shape))),
    }
    _onnx().helper.set_model_props(proto, meta)
    return recorder.with_weights(proto, as_bytes)


def _input_size(input_size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise OnnxExportError(f"ONNX export: input_size must be (H, W); got {input_size!r}") from None
    if h < 1 or w < 1:
        raise OnnxExportError(f"ONNX export: input_size must be positive; got {input_size!r}")
    return h, w


def export_onnx(model_or_name, path, weights=None, input_size=(224, 224), batch="dynamic",
                opset: int = DEFAULT_OPSET, dtype: str = "float32", check: bool = True, **model_kwargs):
    """Write ``model_or_name`` as an ONNX file at ``path`` and return the path.

    ``batch="dynamic"`` leaves the batch dimension symbolic; an int fixes it. ``dtype``
    ``"float16"`` stores weights and I/O in half precision. ``check`` runs
    ``onnx.checker.check_model(full_check=True)`` (which includes strict shape inference).
    """
    onnx = _onnx()
    # serialized as built, once: the checker and the file take the same bytes. onnx.save_model
    # would serialize the message (2.5x the weights at protobuf's peak), parse the bytes back and
    # serialize them again (for external data, which a built graph never has)
    data = build_onnx(model_or_name, weights, input_size, batch, opset, dtype, as_bytes=True, **model_kwargs)
    if check:
        onnx.checker.check_model(data, full_check=True)
    from se_multi.files import atomic_output

    with atomic_output(path) as tmp:  # a failed write leaves no half file, and an old one as it was
        tmp.write_bytes(data)
    return Path(path)
