"""``se-multi bench``: latency, throughput, SE overhead, memory and accuracy per backend."""

from __future__ import annotations

import sys

from se_multi.bench import DEFAULT_MODELS, environment, format_table, memory_note, plot, run_bench, summary
from se_multi.files import json_text
from se_multi.files import write_text


def _csv(text: str) -> list[str]:
    return [t for t in (s.strip() for s in text.split(",")) if t]


def add_arguments(parser) -> None:
    parser.add_argument("--backends", default="available",
                        help="comma-separated backend names, or 'available' (default: every backend that runs here)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes (default 1)")
    parser.add_argument("--dtype", default="float32",
                        help="comma-separated compute dtypes, timed in one interleaved run, e.g. float32,bfloat16 "
                             "(a backend without a dtype is left out of its rows)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--input-size", nargs=2, type=int, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--weights", default=None, help="checkpoint for every model (default: seeded weights)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per configuration (default 2)")
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--no-reference", action="store_true", help="skip the float64 accuracy check")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the memory pass (one fresh process per configuration)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write results and environment as JSON")
    from se_multi.cli.quantize import add_int8_calibration_argument

    add_int8_calibration_argument(parser)
    parser.add_argument("--plot", default=None, metavar="PATH", help="write a bar chart PNG")


def run(args) -> int:
    from se_multi.dispatch import available_backends

    backends = available_backends() if args.backends == "available" else _csv(args.backends)
    models = _csv(args.models)
    batches = [int(b) for b in _csv(args.batch)]
    dtypes = _csv(args.dtype)

    def progress(msg: str) -> None:
        print(f"\r\033[K[bench] {msg}", end="", file=sys.stderr, flush=True)

    from se_multi.cli.quantize import calibration_warnings, int8_calibration

    say = lambda msg: print(f"se-multi bench: {msg}", file=sys.stderr)  # noqa: E731
    calibration = int8_calibration(args, dtypes, say)
    env = environment(backends)
    reduced = ", ".join(env["native_reduced_precision"]) or "none"
    print(f"se-multi bench: {env['processor']} ({env['cpu_features']}; native reduced precision: {reduced}), "
          f"{env['cpus']} CPUs, {env['date']}; " + ", ".join(f"{k}: {v}" for k, v in env["versions"].items()),
          file=sys.stderr)
    with calibration_warnings(say):
        rows = run_bench(backends, models, batches, dtypes, args.device, tuple(args.input_size),
                         min_runs=args.min_runs, budget_s=args.budget, weights=args.weights,
                         progress=progress if sys.stderr.isatty() else None, reference=not args.no_reference,
                         memory=not args.no_memory, calibration=calibration)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(format_table(rows))
    print(memory_note(rows))
    if any(r.backend == "numpy" for r in rows):
        from se_multi.cpu import describe_blas

        print(f"numpy rows: BLAS {describe_blas()}")
    for line in summary(rows):
        print(line)
    for settings in dict.fromkeys(r.settings for r in rows if r.settings):
        print(f"  {settings}")
    if args.json:
        write_text(args.json, json_text({"environment": env, "rows": [r.to_dict() for r in rows]}, indent=1))
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 1 if any(r.error for r in rows) else 0
