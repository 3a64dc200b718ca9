"""``se-multi quantize MODEL OUT --calibration DIR|@list|N``: post-training int8 (:mod:`se_multi.quantize`):
an OpenVINO IR (``OUT.xml`` + ``OUT.bin``, through NNCF) or a QDQ ONNX file (``OUT.onnx``, ONNX
Runtime's quantizer), and its errors against float64 and float32."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

from se_multi.files import json_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    from se_multi.quantize import DEFAULT_HELD_OUT, DEFAULT_SAMPLES, ENGINES, PARITY_INPUTS

    p.add_argument("model", help="model name (se-multi info lists them)")
    p.add_argument("output", help="the file to write: OUT.xml (OpenVINO IR, with OUT.bin) or OUT.onnx (QDQ ONNX)")
    p.add_argument("--calibration", required=True, nargs="+", metavar="DIR|@list|N",
                   help="calibration images (folders, files, globs, @list.txt), preprocessed as the model's own "
                        "preprocessing does; or N: N seeded synthetic images (the embedded default; real images "
                        "calibrate better)")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help=f"calibration images used from the source (default: {DEFAULT_SAMPLES}, or all given)")
    p.add_argument("--engine", choices=tuple(ENGINES), default=None,
                   help="openvino (NNCF) or onnxruntime (QDQ); default: from OUT's suffix")
    p.add_argument("--quantize-se", action="store_true",
                   help="quantize the SE squeeze, gate and scale too (default: kept in float)")
    p.add_argument("--fast-bias-correction", action="store_true",
                   help="openvino: NNCF's fast bias correction (quicker; less accurate on small MobileNets)")
    p.add_argument("--weights", default=None, metavar="W", help="checkpoint path or hub id (default: seeded weights)")
    p.add_argument("--pretrained-cfg", default=None, metavar="TAG", help="preprocessing of this pretrained tag")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained weights when --weights is not given")
    p.add_argument("--held-out", type=int, default=DEFAULT_HELD_OUT, metavar="N",
                   help=f"images of the calibration source after the calibration ones, for the error report "
                        f"(default {DEFAULT_HELD_OUT}; 0: none)")
    p.add_argument("--parity", type=int, default=PARITY_INPUTS, metavar="N",
                   help=f"parity-recipe inputs for the error report (default {PARITY_INPUTS}; 0: none)")
    p.add_argument("--no-report", action="store_true", help="write the model only: no error report")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the result as JSON to PATH")


def calibration_source(values: list[str]):
    """``--calibration``: one integer is a count of default images; anything else is images."""
    if len(values) == 1 and values[0].strip().lstrip("+").isdigit():
        n = int(values[0])
        if n < 1:
            raise ValueError(f"--calibration N must be >= 1; got {values[0]}")
        return n
    return values[0] if len(values) == 1 else values


def add_int8_calibration_argument(p: argparse.ArgumentParser) -> None:
    """``--calibration`` of the commands that quantize implicitly at ``--dtype int8`` (bench, predict)."""
    from se_multi.calibration import DEFAULT_SAMPLES

    p.add_argument("--calibration", default=None, metavar="N|DIR|@list",
                   help=f"--dtype int8 only: what calibrates the model when it is quantized on its first call: N "
                        f"seeded synthetic images (the embedded default; real images calibrate better), or images "
                        f"(a folder, file, glob or @list.txt) through the model's own preprocessing. Default: "
                        f"{DEFAULT_SAMPLES} synthetic images, the post-training default for accuracy, which takes "
                        f"minutes per model on a small CPU; --calibration 16 is quick for a look")


def int8_calibration(args: argparse.Namespace, dtypes, say) -> object:
    """The int8 backends' ``calibration`` option from ``--calibration``, with the one-line note on
    stderr (``say``) when the slow default is in use; ``--calibration`` without int8 is refused."""
    from se_multi.calibration import DEFAULT_SAMPLES
    from se_multi.quantize import backend_option

    int8 = "int8" in [d.lower() for d in dtypes]
    if args.calibration is None:
        if int8:
            say(f"int8: each model is calibrated on its first call on {DEFAULT_SAMPLES} seeded synthetic images (the "
                "default, for accuracy; minutes per model on a small CPU); --calibration N or images to choose")
        return None
    if not int8:
        raise ValueError("--calibration applies to --dtype int8")
    return backend_option(calibration_source([args.calibration]))


@contextlib.contextmanager
def calibration_warnings(say):
    """:class:`~se_multi.calibration.CalibrationWarning` as one ``warning:`` line each on stderr
    (``say``); other libraries' warnings as Python would have shown them."""
    from se_multi.calibration import CalibrationWarning

    recorded: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CalibrationWarning)
            try:
                yield
            finally:
                recorded = list(caught)
    finally:
        # shown once recording has stopped: re-emitted inside the recording context, a warning that
        # the filters let through was recorded again, onto the list being read, without end (the
        # process grew until the OOM killer stopped it, whenever e.g. JAX had been imported first)
        seen = set()
        for w in recorded:
            if issubclass(w.category, CalibrationWarning):
                if str(w.message) not in seen:
                    seen.add(str(w.message))
                    say(f"warning: {w.message}")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def run(args: argparse.Namespace) -> int:
    from se_multi.files import write_text
    from se_multi.quantize import format_report, quantize

    for name in ("held_out", "parity"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0; got {getattr(args, name)}")
    say = lambda msg: print(f"se-multi quantize: {msg}", file=sys.stderr)  # noqa: E731
    with calibration_warnings(say):
        result = quantize(args.model, args.output, weights=args.weights,
                          calibration=calibration_source(args.calibration), samples=args.samples,
                          engine=args.engine, quantize_se=args.quantize_se,
                          fast_bias_correction=args.fast_bias_correction, held_out=args.held_out,
                          parity=args.parity, pretrained_cfg=args.pretrained_cfg, seed=args.seed,
                          report=not args.no_report, progress=say)
    if args.weights is None:
        say("warning: no --weights: the model has seeded (untrained) weights")
    print(format_report(result))
    if args.json:
        write_text(args.json, json_text(result.to_dict(), indent=2))
    return 0
