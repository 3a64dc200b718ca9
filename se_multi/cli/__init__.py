"""The ``se-multi`` command. Each subcommand is one module of this package, which provides
``add_arguments(parser)`` and ``run(args) -> int``; the library modules hold no command-line
glue. Command modules import their library lazily where it is heavy."""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
COMMANDS = {
    "backends": ("se_multi.cli.backends", "list backends and whether each can run here"),
    "validate": ("se_multi.cli.validate", "check a backend against the NumPy float64 reference"),
    "bench": ("se_multi.cli.bench", "latency, throughput, SE overhead and accuracy per backend"),
    "predict": ("se_multi.cli.predict", "classify images (or segment them) with a model"),
    "info": ("se_multi.cli.info", "parameters and multiply-adds per stage; the SENet paper's tables"),
    "convert": ("se_multi.cli.convert", "rewrite a checkpoint in se_multi's native layout (.safetensors)"),
    "export": ("se_multi.cli.export", "write a model as an ONNX file"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="se-multi",
        description="Squeeze-and-Excitation networks on NumPy, PyTorch, MLX, CuPy and ONNX Runtime, "
                    "checked against a NumPy float64 reference.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # that part of the product is not installed in this build
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        # user errors (bad names, files, shapes) as one line, not a traceback
        print(f"se-multi {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
