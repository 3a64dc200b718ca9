"""``se-multi export NAME OUT.onnx``: write a model as an ONNX file."""

from __future__ import annotations

import argparse

from se_multi.onnx_export import DEFAULT_OPSET, OnnxExportError, export_onnx


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model name (se-multi info lists them)")
    parser.add_argument("output", help="path of the .onnx file to write")
    parser.add_argument("--weights", default=None, help="checkpoint path or hub id (default: seeded weights)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--fp16", action="store_true", help="store weights and I/O as float16")
    parser.add_argument("--input-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--batch", default="dynamic", help="'dynamic' (default) or a fixed batch size")
    parser.add_argument("--num-classes", type=int, default=None)


def run(args) -> int:
    batch = args.batch if args.batch == "dynamic" else _parse_batch(args.batch)
    path = export_onnx(args.model, args.output, weights=args.weights, input_size=tuple(args.input_size),
                       batch=batch, opset=args.opset, dtype="float16" if args.fp16 else "float32",
                       num_classes=args.num_classes)
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.1f} MB, opset {args.opset}, {'float16' if args.fp16 else 'float32'})")
    return 0


def _parse_batch(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise OnnxExportError(f"--batch must be 'dynamic' or a positive integer; got {text!r}") from None
