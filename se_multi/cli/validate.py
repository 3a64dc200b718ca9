"""``se-multi validate``: a backend against the NumPy float64 reference, op by op and whole models."""

from __future__ import annotations

import sys

from se_multi.files import json_text
from se_multi.conformance import POLICY, format_table, run_suite
from se_multi.files import write_text


def _stderr_progress(stream=None):
    """A one-line counter on a terminal; on a pipe, a line every 10% (logs stay readable)."""
    stream = stream or sys.stderr  # looked up now: tests and tools swap sys.stderr
    tty = stream.isatty()

    def show(done: int, total: int, name: str) -> None:
        if tty:
            bar = "#" * (20 * done // total)
            stream.write(f"\r[{bar:<20}] {done}/{total} {name[:60]:<60}")
            if done == total:
                stream.write("\n")
        elif done == total or done % max(1, total // 10) == 0:
            stream.write(f"validate: {done}/{total} checks\n")
        stream.flush()

    return show


def add_arguments(parser) -> None:
    parser.add_argument("--backend", default="auto",
                        help="backend name, 'auto', or 'package.module:ClassName' (default: auto)")
    parser.add_argument("--dtype", default="float32", help=f"compute dtype: {', '.join(POLICY)} (default: float32)")
    parser.add_argument("--device", default=None, help="the backend's device, e.g. cpu, cuda, cuda:1, mps, gpu")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH")


def run(args) -> int:
    result = run_suite(args.backend, dtype=args.dtype, device=args.device, progress=_stderr_progress())
    print(format_table(result))
    if args.json:
        write_text(args.json, json_text(result.to_dict(), indent=2))
    failed = [c for c in result.checks if not c.passed]
    where = f"backend {result.backend!r}, {result.dtype}" + (f", device {result.device}" if result.device else "")
    if failed:
        for check in failed:  # the whole-model verdicts say in words what failed
            if check.level == "suite":
                print(check.error)
        print(f"FAILED: {len(failed)} of {len(result.checks)} checks ({where}); "
              f"failing ops and models: {', '.join(result.failed_ops)}")
        return 1
    from se_multi.conformance import policy_for

    if policy_for(result.dtype).models_only:  # a quantized dtype: whole models only, no bias bound
        held = f"whole models only, max rel err <= {result.model_tolerance:.0e}"
    else:
        held = (f"max rel err <= {result.tolerance:.0e} per op, <= {result.model_tolerance:.0e} per whole model; "
                "unbiased")
    print(f"OK: all {len(result.checks)} checks passed ({where}; {held}"
          + ("" if result.dtype == "float64" else f"; computes in {result.dtype}") + ")")
    return 0
