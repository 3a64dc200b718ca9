"""The ``se-multi`` command. Each subcommand is one module of this package, which provides
``add_arguments(parser)`` and ``run(args) -> int``; the library modules hold no command-line
glue. Command modules import their library lazily where it is heavy.

Every failure se_multi anticipates is one line on stderr and an exit code that says which kind
(:data:`EXIT_CODES`, also in ``se-multi --help``); anything else is a bug, reported in one line
with the version and a request to report it (``--debug`` or ``SE_MULTI_DEBUG=1`` shows the
traceback). ``--json`` output is always valid JSON (:func:`se_multi.files.json_text`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from se_multi.cli.signals import Terminated, graceful_termination


#: subcommand -> (module, one-line help)
COMMANDS = {
    "backends": ("se_multi.cli.backends", "list backends and whether each can run here"),
    "validate": ("se_multi.cli.validate", "check a backend against the NumPy float64 reference"),
    "bench": ("se_multi.cli.bench", "latency, throughput, SE overhead and accuracy per backend"),
    "predict": ("se_multi.cli.predict", "classify images (or segment them) with a model"),
    "info": ("se_multi.cli.info", "parameters and multiply-adds per stage; the SENet paper's tables"),
    "convert": ("se_multi.cli.convert", "rewrite a checkpoint in se_multi's native layout (.safetensors)"),
    "export": ("se_multi.cli.export", "write a model as an ONNX file"),
    "quantize": ("se_multi.cli.quantize", "post-training int8: an OpenVINO IR (NNCF) or a QDQ ONNX file, and its errors"),
}

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran, and what it checked failed (validate, bench, predict)
EXIT_USAGE = 2  # bad command line (argparse's own code)
EXIT_INPUT = 3  # a file, checkpoint, image, array, model name or option value that cannot be used
EXIT_UNAVAILABLE = 4  # a backend, package or device this machine does not have
EXIT_MEMORY = 5  # out of memory
EXIT_INTERNAL = 70  # a bug in se_multi (EX_SOFTWARE): please report it
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILED: "the command ran and what it checked failed (a validate check, a bench configuration, an image)",
    EXIT_USAGE: "usage error (unknown command or option)",
    EXIT_INPUT: "bad input: a file, checkpoint, hub id, image, array, model name or option value",
    EXIT_UNAVAILABLE: "a backend, package or device is not available here",
    EXIT_MEMORY: "out of memory",
    EXIT_INTERNAL: "internal error: a bug in se_multi, please report it",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); SIGTERM and SIGHUP end a command the same way, exiting 143 and 129",
}

#: libraries whose own exceptions mean "this file/checkpoint/graph is unusable", not a bug of ours
_INPUT_ERROR_LIBRARIES = ("safetensors", "onnx", "onnxruntime", "PIL")


def _version() -> str:
    from se_multi import __version__

    return __version__


def exit_code(exc: BaseException) -> int:
    """Which :data:`EXIT_CODES` entry an exception is."""
    from se_multi.backend import BackendUnavailable

    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C; SIGTERM/SIGHUP: 128 + the signal (cli.signals)
        return getattr(exc, "exit_code", EXIT_INTERRUPTED)
    if isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__:
        return EXIT_MEMORY
    if isinstance(exc, BackendUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, (ValueError, TypeError, OSError)):
        return EXIT_INPUT
    if type(exc).__module__.partition(".")[0] in _INPUT_ERROR_LIBRARIES:
        return EXIT_INPUT
    return EXIT_INTERNAL


def build_parser() -> argparse.ArgumentParser:
    from se_multi.dispatch import BUILTIN_BACKENDS

    codes = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="se-multi",
        description=f"Squeeze-and-Excitation networks on the backends {', '.join(BUILTIN_BACKENDS)} (and "
                    "third-party ones), checked against a NumPy float64 reference.",
        epilog=f"exit codes:\n{codes}\n\nerrors are one line on stderr; --debug (or SE_MULTI_DEBUG=1) "
               "adds the traceback",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"se-multi {_version()}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
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
    debug = args.debug or os.environ.get("SE_MULTI_DEBUG", "") not in ("", "0")
    try:
        with graceful_termination():
            return int(args._run(args) or 0)
    except BaseException as exc:  # every failure ends here, as one line and an exit code
        if isinstance(exc, SystemExit):
            raise
        from se_multi.backend import BackendUnavailable

        code = exit_code(exc)
        if debug:
            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, KeyboardInterrupt):
            print(f"se-multi {args.command}: {exc if isinstance(exc, Terminated) else 'interrupted'}", file=sys.stderr)
        elif code == EXIT_INTERNAL:
            print(f"se-multi {_version()} {args.command}: internal error: {type(exc).__name__}: {message} -- "
                  "this is a bug; please report it with the command line (SE_MULTI_DEBUG=1 shows the "
                  "traceback)", file=sys.stderr)
        else:
            # se_multi's own messages (and those of ValueError, TypeError, OSError) say what failed
            # without the class name; another library's exception keeps it
            plain = isinstance(exc, (ValueError, TypeError, OSError, BackendUnavailable))
            prefix = "" if plain else f"{type(exc).__name__}: "
            print(f"se-multi {args.command}: error: {prefix}{message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
