"""The same predictions on a Ray cluster, through Ray Data: ``se-multi predict --ray [ADDRESS]``.

``ray.data.read_binary_files`` reads the images (read tasks, spread over the cluster), and
``map_batches`` runs :class:`RayPredictor` in an actor pool of ``workers`` actors: each actor
builds the model once (``create_model``) and turns each batch of image bytes into the rows
:func:`se_multi.predict.predict_batch` would give (decoding and preprocessing happen in the
actor, so a corrupt image is an error row, not a failed task). The driver collects the rows as
they complete (in completion order, not input order), one list per block of whole source files,
and writes them with the same results store. Files are read by their resolved real paths (their
identity, :func:`se_multi.predict.source_key`); the results keep the names as given.

Failures: everything a local run checks before it starts (model, weights, backend, dtype,
device) the command line checks before Ray starts, by building the model once in the driver; an
actor's own exception reaches the driver as ``RayTaskError`` and is re-raised as the exception
it wraps, so ``--ray`` fails with the same one line and exit code as a local run. A file name
that is not UTF-8 is an error row (Ray Data's reader takes UTF-8 paths only).

Resources: an actor asks for ``num_cpus`` below one CPU when the cluster is small, so that the
read tasks always find a CPU -- on a 2-core machine, two actors asking one CPU each starve the
readers and the dataset stalls, backpressured, with no error. Each actor asks for one GPU when
the backend computes on CUDA. Without an address a local Ray is started (and stopped at the end).
"""

from __future__ import annotations

import io
import os
from typing import Any, Iterator, Sequence

import numpy as np

from se_multi.predict import Prediction, printable, source_key


def _cuda(backend: Any, device: Any) -> bool:
    return (backend == "cupy" or str(device or "").startswith("cuda") or isinstance(device, int)
            or (backend == "auto" and _auto_is_cupy()))


def _auto_is_cupy() -> bool:
    from se_multi.dispatch import resolve_backend_name

    return resolve_backend_name("auto") == "cupy"


def actor_cpus(cluster_cpus: float, workers: int) -> float:
    """CPUs each actor asks for: one where the cluster has one to spare per actor and one more for
    the readers, else an even share of all but one CPU (never below a quarter)."""
    if cluster_cpus >= workers + 1:
        return 1.0
    return max(0.25, round((cluster_cpus - 1) / workers, 2))


class RayPredictor:
    """The ``map_batches`` callable class: one model per actor, built in ``__init__``."""

    def __init__(self, model: str, weights, backend, dtype, device, seed, topk, pretrained_cfg, output_dir):
        from se_multi.models import create_model
        from se_multi.predict import Runner, resolve_config

        net = create_model(model, weights=weights, backend=backend, dtype=dtype, device=device, seed=seed)
        self.cfg = resolve_config(model, pretrained_cfg, weights)
        self.runner = Runner(net, self.cfg, topk, output_dir)

    def __call__(self, batch: dict) -> dict:
        from se_multi.files import json_text
        from se_multi.predict import _error, decode_input, model_calls

        results, arrays = [], []
        for data, path in zip(batch["bytes"], batch["path"]):
            try:  # the same decoding and messages as a local run, from the bytes the read task gave
                arrays.append((path, decode_input(io.BytesIO(bytes(data)), path, self.cfg)))
            except (ValueError, TypeError, OSError) as exc:
                results.append(_error(path, exc))
        for call in model_calls(arrays):  # the model calls the single-process pipeline would make
            results += self.runner.run(call)
        return {"key": np.array([r.key for r in results], dtype=object),
                "origin": np.array([r.origin for r in results], dtype=object),
                "result": np.array([json_text(r.to_json()) for r in results], dtype=object)}


def predict_with_ray(paths: Sequence[str], model: str, *, address: str | None = None, workers: int = 2,
                     batch_size: int = 1, weights=None, backend: Any = "auto", dtype: str = "float32",
                     device=None, seed: int = 0, topk: int = 5, pretrained_cfg=None,
                     output_dir: str | None = None) -> Iterator[list[Prediction]]:
    """Predictions for ``paths`` computed by a Ray actor pool (see the module docstring), one list
    per block of whole files, in completion order. Missing files are error predictions first."""
    import json

    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray Data: pip install 'se-multi[ray]'") from None
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive int; got {workers!r}")
    names: dict[str, str] = {}  # source key -> the name as given
    early: list[Prediction] = []
    for p in paths:
        key = source_key(p)
        if not os.path.isfile(p):
            early.append(Prediction(p, error=f"image not found: {p}", key=key, origin=key))
        elif printable(key) != key:  # not UTF-8: shown escaped, unreadable for Ray Data
            early.append(Prediction(p, error="the file name is not UTF-8, and Ray Data reads UTF-8 paths only; "
                                             "predict it without --ray", key=key, origin=key))
        else:
            names[key] = p
    if early:
        yield early
    if not names:
        return
    started = not ray.is_initialized()
    if started:
        import logging

        # Ray's own INFO lines (executor plans, token auth, core worker notes) would bury the
        # command's one-line output: keep its warnings and errors only
        logging.getLogger("ray").setLevel(logging.WARNING)
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")  # Ray Data's own override of its log level
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = ctx.print_on_execution_start = ctx.enable_auto_log_stats = False
        cpus = ray.cluster_resources().get("CPU", 1.0)
        ds = ray.data.read_binary_files(list(names), include_paths=True)
        out = ds.map_batches(
            RayPredictor, batch_size=batch_size, batch_format="numpy",
            fn_constructor_kwargs=dict(model=model, weights=weights, backend=backend, dtype=dtype, device=device,
                                       seed=seed, topk=topk, pretrained_cfg=pretrained_cfg, output_dir=output_dir),
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=actor_cpus(cpus, workers),
            num_gpus=1 if _cuda(backend, device) else 0)
        try:
            for block in out.iter_batches(batch_size=None, batch_format="numpy"):
                yield [_named(Prediction.from_json(json.loads(result)), key, origin, names)
                       for key, origin, result in zip(block["key"], block["origin"], block["result"])]
        except ray.exceptions.RayError as exc:
            raise _unwrapped(exc) from None
    finally:
        if started:
            ray.shutdown()


def _named(p: Prediction, key: str, origin: str, names: dict[str, str]) -> Prediction:
    """An actor's prediction (named by real path) under the name the user gave, with its keys."""
    given = names.get(origin, origin)
    p.source = given + key[len(origin):]  # "" or "[i]" for an image of an .npy batch
    p.key, p.origin = key, origin
    return p


def _unwrapped(exc: BaseException) -> BaseException:
    """The exception an actor raised, out of Ray's wrappers (``RayTaskError`` and
    ``ActorDiedError`` carry it as ``cause``), so the command line reports it as a local run
    would; Ray's own failures (a node lost, the object store full) stay what they are."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None) or getattr(exc, "__cause__", None)
        if not isinstance(cause, BaseException):
            break
        exc = cause
    return exc
