"""``se-multi predict``: classify images (top-k ImageNet labels) or segment them (class-map PNGs),
from files, folders, globs and ``@list.txt``; batched, with progress, streamed to ``--output``
(``.jsonl``/``.csv``/``.parquet``, resumable), on one machine or a Ray cluster (``--ray``)."""

from __future__ import annotations

import argparse
import sys
import time

from se_multi.dispatch import BUILTIN_BACKENDS
from se_multi.files import json_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="PATH",
                   help="image files (PNG, JPEG, ...), folders (recursive), globs ('photos/**/*.jpg'), "
                        "@list.txt (one path per line), or .npy arrays already preprocessed as NCHW float")
    p.add_argument("--model", default="seresnet50", help="model name (default: seresnet50; see `se-multi info`)")
    p.add_argument("--pretrained-cfg", metavar="TAG",
                   help="preprocessing of this pretrained tag, e.g. legacy_seresnet50.in1k "
                        "(default: the tag a timm/ hub id names, else the model's default tag)")
    p.add_argument("--weights", metavar="W",
                   help="checkpoint file or hub id (default: deterministic seeded weights, untrained)")
    p.add_argument("--backend", default="auto",
                   help=f"{', '.join(BUILTIN_BACKENDS)}, an installed third-party backend, or auto (default)")
    p.add_argument("--dtype", default="float32", help="compute dtype (default: float32; see `se-multi backends`)")
    p.add_argument("--device", default=None, help="the backend's device, e.g. cpu, cuda, cuda:1, mps, GPU")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained weights when --weights is not given")
    p.add_argument("--topk", type=int, default=5, help="classes to show per image (default: 5)")
    p.add_argument("--batch-size", type=int, default=1, metavar="N", help="images per model call (default: 1)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads decoding and preprocessing ahead of the model (default: min(4, the CPUs this process may use))")
    p.add_argument("--output", metavar="FILE",
                   help="write results to FILE: .jsonl (one object per image), .csv or .parquet (one row per "
                        "image and rank), kept in the transactional store FILE.sqlite beside it; a rerun with the "
                        "same FILE and settings skips the images already in it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --output holds (results of other settings, or a file se_multi did not write)")
    p.add_argument("--refresh", type=float, default=None, metavar="SECONDS",
                   help="rewrite --output during the run at most this often (default: 10; it is always complete "
                        "at the end of a run)")
    from se_multi.cli.quantize import add_int8_calibration_argument

    add_int8_calibration_argument(p)
    p.add_argument("--output-dir", metavar="DIR", help="segmentation models: write one class-map PNG per image here")
    p.add_argument("--json", action="store_true", help="print all results as one JSON document on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster through Ray Data (no ADDRESS: start a local Ray)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="Ray actors, each holding one model (default 2)")


def _check(args) -> None:
    for name in ("topk", "batch_size", "workers"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1; got {args.threads}")
    if args.output is not None and args.json:
        raise ValueError("--json prints results on stdout and --output writes them to a file: choose one")
    if args.output is None and (args.overwrite or args.refresh is not None):
        raise ValueError(f"--{'overwrite' if args.overwrite else 'refresh'} applies to --output FILE, which is not given")
    if args.refresh is not None and not args.refresh >= 0:
        raise ValueError(f"--refresh must be a number of seconds >= 0; got {args.refresh}")


def _progress(total: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                disable=quiet or not sys.stderr.isatty())


def run_identity(args: argparse.Namespace, cfg) -> dict:
    """What the results of this command depend on (compared on resume: see se_multi.results), and
    what it ran on (recorded)."""
    import os

    from se_multi import __version__
    from se_multi.results import weights_identity

    return {"model": args.model, "weights": weights_identity(args.weights),
            "seed": args.seed if args.weights is None else None, "pretrained_cfg": cfg.tag,
            "dtype": args.dtype.lower(), "topk": args.topk,
            "output_dir": os.path.realpath(args.output_dir) if args.output_dir else None, "se_multi": __version__,
            "weights_given": args.weights, "backend": args.backend, "device": args.device,
            "calibration": _calibration_identity(args.calibration, args.dtype),
            "batch_size": args.batch_size, "ray": args.ray,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _calibration_identity(calibration: str | None, dtype: str) -> str | None:
    """What an int8 run was calibrated on, as the results store compares it (int8 results of two
    calibrations differ): ``None`` off int8, the default's name, a count, or a folder's or list's
    real path."""
    if dtype.lower() != "int8":
        return None
    if calibration is None:
        return "default"
    if calibration.isdigit():
        return f"{int(calibration)} synthetic"
    if calibration.startswith("@"):
        return "@" + os.path.realpath(calibration[1:])
    return os.path.realpath(calibration)


def run(args: argparse.Namespace) -> int:
    from se_multi.cli import EXIT_FAILED
    from se_multi.models import check_model_name, create_model
    from se_multi.predict import Runner, expand_sources, resolve_config, run_batches, source_key
    from se_multi.results import REFRESH_S, ResultStore

    _check(args)
    # each resolved once, cheap failures first: names, sources, the output and its run; then the model
    check_model_name(args.model)
    cfg = resolve_config(args.model, args.pretrained_cfg, args.weights)
    paths = expand_sources(args.images)
    store = None
    if args.output:
        store = ResultStore(args.output, run_identity(args, cfg), overwrite=args.overwrite,
                            refresh_s=REFRESH_S if args.refresh is None else args.refresh)
    try:
        todo = [p for p in paths if store is None or source_key(p) not in store.done]
        # built here for --ray too: a bad model, weights, backend, dtype or device is then this
        # one line and exit code before Ray starts, not an actor's traceback
        from se_multi.cli.quantize import calibration_warnings, int8_calibration

        say = lambda msg: print(f"se-multi predict: {msg}", file=sys.stderr)  # noqa: E731
        calibration = int8_calibration(args, [args.dtype], say)
        backend = args.backend
        if calibration is not None and args.ray is not None:
            raise ValueError("--calibration with --ray: each Ray actor builds its model with the default calibration; "
                             "quantize once with se-multi quantize instead")
        if calibration is not None:  # int8 with --calibration: the backend made with it
            from se_multi.dispatch import get_backend

            backend = get_backend(args.backend, dtype=args.dtype, device=args.device, calibration=calibration)
        model = create_model(args.model, weights=args.weights, backend=backend, dtype=args.dtype,
                             device=args.device, seed=args.seed)
        if args.dtype.lower() == "int8" and args.ray is None:  # quantized now, not inside the progress bar
            import numpy as np

            with calibration_warnings(say):
                model(np.zeros((1, 3, *cfg.input_size[-2:]), np.float32))
        _check_output_dir(model, cfg, args.output_dir)
        backend, dtype = model.ops.name, str(model.dtype)
        if args.ray is None:
            batches = run_batches(todo, Runner(model, cfg, args.topk, args.output_dir), args.batch_size, args.threads)
            where = f"{backend} {dtype}"
        else:
            from se_multi.ray_predict import predict_with_ray

            del model  # each actor builds its own
            batches = predict_with_ray(todo, args.model, address=args.ray or None, workers=args.workers,
                                       batch_size=args.batch_size, weights=args.weights, backend=args.backend,
                                       dtype=args.dtype, device=args.device, seed=args.seed, topk=args.topk,
                                       pretrained_cfg=cfg, output_dir=args.output_dir)
            where = f"Ray ({args.workers} workers), {backend} {dtype}"
        done, failed, collected = 0, 0, []
        started = time.perf_counter()
        header = {"model": args.model, "pretrained_cfg": cfg.tag, "weights": args.weights, "backend": backend,
                  "dtype": dtype, "ray": args.ray is not None}
        if not args.json and store is None:
            print(f"{args.model} ({cfg.tag}) on {where}")
        with _progress(len(todo), args.quiet) as bar:
            for batch in batches:
                if store is not None:
                    store.add(batch)
                done, failed = done + len(batch), failed + sum(not r.ok for r in batch)
                if args.json:
                    collected += batch
                elif store is None:
                    for r in batch:
                        print(format_prediction(r), flush=True)
                bar.update(len({r.origin for r in batch}))
    finally:
        if store is not None:
            store.close()
    elapsed = time.perf_counter() - started
    if args.weights is None:  # after the run, so a failed run prints only its error line
        print(f"note: predictions are from untrained seeded weights (seed {args.seed}); "
              "pass --weights for a trained checkpoint", file=sys.stderr)
    if args.json:
        print(json_text({**header, "seeded_weights": args.weights is None,
                         "results": [r.to_json() for r in collected]}, indent=1))
    skipped = len(paths) - len(todo)
    if failed or (not args.quiet and len(paths) > 1):
        rate = f", {done / elapsed:.1f} images/s" if elapsed > 0 and done else ""
        extra = f", {skipped} already in {args.output}" if skipped else ""
        see = f" (their rows in {args.output} say why)" if failed and store is not None else ""
        print(f"se-multi predict: {done} image{'s' if done != 1 else ''}, {failed} failed{see}{extra}{rate}",
              file=sys.stderr)
    return EXIT_FAILED if failed else 0


def _check_output_dir(model, cfg, output_dir) -> None:
    if output_dir is None:
        return
    _, h, w = cfg.input_size
    if len(model.input_sizes.trace((1, model.in_chans, h, w)).shape) != 4:
        raise ValueError(f"--output-dir writes segmentation class maps, but {model.name} is a classifier "
                         "(output N x K); leave --output-dir out")


def format_prediction(r) -> str:
    """One image's report as text lines."""
    if r.error is not None:
        return f"\n{r.source}\n  error: {r.error}"
    what = "pixels" if r.is_segmentation else "prob"
    size = f"  class map {r.class_map.shape[0]}x{r.class_map.shape[1]}" if r.class_map is not None else ""
    lines = ["", f"{r.source}{size}" + (f" -> {r.mask_path}" if r.mask_path else ""),
             f"  {'rank':>4}  {what:>8}  {'class':>5}  label"]
    lines += [f"  {rank:>4}  {p:8.4f}  {k:>5}  {label}" for rank, (k, label, p) in enumerate(r.topk, 1)]
    return "\n".join(lines)
