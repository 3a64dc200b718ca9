"""``se-multi convert IN OUT.safetensors [--model NAME]``: any supported checkpoint -> the native layout."""

from __future__ import annotations

from se_multi.convert import convert_checkpoint


def add_arguments(parser) -> None:
    parser.add_argument("input", metavar="IN", help="checkpoint: .safetensors, .npz, .pth/.pt, or a hub id")
    parser.add_argument("output", metavar="OUT.safetensors", help="where to write the native layout")
    parser.add_argument("--model", default=None, help="model name (default: detected from the keys)")


def run(args) -> int:
    summary = convert_checkpoint(args.input, args.output, args.model)
    print(f"{args.output}: {summary['model']} (read as {summary['layout']} layout), "
          f"{summary['tensors']} tensors, {summary['params'] / 1e6:.2f}M params, "
          f"num_classes={summary['options']['num_classes']}")
    if summary["restate_on_load"]:
        options = "".join(f", {k}={v!r}" for k, v in summary["restate_on_load"].items())
        print(f"load it with create_model({summary['model']!r}, weights={args.output!r}{options})")
    return 0
