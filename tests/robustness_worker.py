"""Run by tests/test_robustness.py in a fresh interpreter, so that a crash (SIGFPE, abort) fails
one test instead of ending the run. Prints one JSON document on stdout.
REFS is the ``.npz`` :func:`write_references` made: the float64 reference's logits of every case,
computed once by the test module for its six children (each drew, bound and ran the same six
reference models: ~1.7 s a child, 2026-12-05).

    python robustness_worker.py tiny BACKEND REFS every family x tiny and odd sizes: error or logits
    python robustness_worker.py export REFS       the same sizes through export_onnx + ONNX Runtime
    python robustness_worker.py memory BACKEND    RSS over many input sizes and model lifetimes
    python robustness_worker.py threads BACKEND   4 threads on one model and on 4 models
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

#: one model of every family, with its smallest valid input (tests/test_shapes.py checks these)
FAMILIES = {
    "seresnet50": (1, 1),
    "legacy_seresnet50": (3, 3),
    "seresnext50_32x4d": (1, 1),
    "se_mobilenetv1_100": (1, 1),
    "mobilenetv3_small_100": (1, 1),
    "unet_se_resnet50_scse": (32, 32),
}
#: the issue's list of tiny and odd inputs
ODD_SIZES = ((1, 1), (2, 2), (2, 224), (5, 3), (31, 2))


def _declared(name):
    from se_multi.init import recipe_state
    from se_multi.models import build_model

    declaration = build_model(name)
    return declaration, recipe_state((k, s.shape, s.kind) for k, s in declaration.param_specs().items())


def _sizes(name):
    """The sizes each family is run at: the tiny and odd ones, then its smallest valid one."""
    return (*ODD_SIZES, FAMILIES[name])


def _case_input(size) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)


def _case_key(name, size) -> str:
    return f"{name} {size[0]}x{size[1]}"


def write_references(path) -> None:
    """The float64 NumPy reference's logits of every case the reference accepts, into ``path``
    (``.npz``, keyed by case); each family bound once."""
    from se_multi.dispatch import get_backend, to_numpy
    from se_multi.models import Model

    ops = get_backend("numpy", dtype="float64")
    out = {}
    for name in FAMILIES:
        declaration, state = _declared(name)
        model = Model(name, declaration.bind(state, ops), ops)
        for size in _sizes(name):
            try:
                out[_case_key(name, size)] = to_numpy(model(_case_input(size).astype(np.float64)))
            except ValueError:  # a size the model refuses: a backend must refuse it too (the test)
                pass
    np.savez(path, **out)


def _references(path) -> dict:
    with np.load(path) as refs:
        return {key: refs[key] for key in refs.files}


def _outcome(call, want):
    """{"error": type and message} or {"rel_err": ..., "finite": ...} against the float64 reference
    ``want`` (``None`` where the reference refused the input and the backend did not)."""
    from se_multi.metrics import max_rel_error

    try:
        got = np.asarray(call(), np.float64)
    except Exception as exc:  # the test decides which exceptions are acceptable
        return {"error": type(exc).__name__, "message": str(exc)}
    result = {"finite": bool(np.isfinite(got).all()), "shape": list(got.shape),
              "rel_err": None if want is None else max_rel_error(got, want)}
    if want is None:
        result["note"] = "the float64 reference refused this input"
    return result


def tiny(backend: str, refs: str) -> dict:
    from se_multi.dispatch import get_backend, to_numpy
    from se_multi.models import Model

    ops, want = get_backend(backend), _references(refs)
    out = {}
    for name in FAMILIES:
        declaration, state = _declared(name)
        model = Model(name, declaration.bind(state, ops), ops)
        for size in _sizes(name):
            x, key = _case_input(size), _case_key(name, size)
            out[key] = _outcome(lambda: to_numpy(model(x)), want.get(key))
    return out


def export(refs: str) -> dict:
    from se_multi.dispatch import get_backend
    from se_multi.models import Model
    from se_multi.onnx_export import export_onnx

    ort, numpy_ops, want = get_backend("onnxruntime"), get_backend("numpy"), _references(refs)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in FAMILIES:
            declaration, state = _declared(name)
            model = Model(name, declaration.bind(state, numpy_ops), numpy_ops)  # every size exports it
            for size in _sizes(name):
                path = Path(tmp) / f"{name}_{size[0]}x{size[1]}.onnx"
                x, key = _case_input(size), _case_key(name, size)

                def run(path=path, size=size, x=x, model=model):
                    export_onnx(model, path, input_size=size)
                    return ort.load(path)(x)

                result = _outcome(run, want.get(key))
                result["file_written"] = path.exists()
                # gone at once, so the next export writes into the page cache this one used: on a
                # VM where each fresh page is dear, this child took 22 s with the files kept to
                # the end and 10 s so (system time 13 s -> 3 s, 2026-12-04)
                path.unlink(missing_ok=True)
                out[key] = result
    return out


def _rss_mib() -> float:
    """Resident memory after a full collection and after glibc returns its free heap to the OS, so
    that what is measured is memory still held, not allocator fragmentation."""
    import ctypes
    import ctypes.util

    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc and hasattr(ctypes.CDLL(libc), "malloc_trim"):
        ctypes.CDLL(libc).malloc_trim(0)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def memory(backend: str) -> dict:
    """RSS growth (MiB) over 30 new input sizes of one model, and over 10 create/call/drop cycles
    of models sharing one backend object; each measured after a warm-up of the same kind."""
    from se_multi.dispatch import get_backend
    from se_multi.models import create_model

    ops = get_backend(backend)
    x_of = lambda s: np.random.default_rng(s).standard_normal((1, 3, s, s)).astype(np.float32)  # noqa: E731
    model = create_model("mobilenetv3_small_100", backend=ops)
    for s in (40, 44, 48, 52, 56):  # warm-up: allocator pools, first compilations, lazy imports
        model(x_of(s))
    gc.collect()
    before = _rss_mib()
    for s in range(96, 96 + 30 * 3, 3):
        model(x_of(s))
    gc.collect()
    sizes = _rss_mib() - before

    def cycle():
        m = create_model("mobilenetv3_small_100", backend=ops)
        m(x_of(64))
        m(x_of(72))
        del m
        gc.collect()

    del model
    for _ in range(3):
        cycle()
    before = _rss_mib()
    for _ in range(10):
        cycle()
    return {"sizes_growth_mib": sizes, "cycles_growth_mib": _rss_mib() - before}


def threads(backend: str) -> dict:
    """4 threads x 5 calls on one model, then 4 threads on 4 models (one shared backend): every
    output equal to the single-thread output of the same model and input."""
    from se_multi.dispatch import get_backend, to_numpy
    from se_multi.models import create_model

    ops = get_backend(backend)
    inputs = [np.random.default_rng(i).standard_normal((1, 3, 48 + 8 * i, 40)).astype(np.float32) for i in range(4)]
    one = create_model("mobilenetv3_small_100", backend=ops)
    many = [create_model(name, backend=ops, seed=i) for i, name in
            enumerate(("mobilenetv3_small_100", "se_mobilenetv1_100", "mobilenetv3_small_100", "seresnet50"))]
    want_one = [to_numpy(one(x)) for x in inputs]
    want_many = [to_numpy(m(x)) for m, x in zip(many, inputs)]
    mismatches, errors = [], []

    def work(i, model, x, want):
        try:
            for _ in range(5):
                if not np.array_equal(to_numpy(model(x)), want):
                    mismatches.append(i)
        except Exception as exc:  # reported, then the test fails
            errors.append(f"{type(exc).__name__}: {exc}")

    for jobs in ([(i, one, inputs[i], want_one[i]) for i in range(4)],
                 [(i, many[i], inputs[i], want_many[i]) for i in range(4)]):
        ts = [threading.Thread(target=work, args=job) for job in jobs]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    return {"mismatches": mismatches, "errors": errors}


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    result = {"tiny": tiny, "export": export, "memory": memory, "threads": threads}[what](*args)
    print(json.dumps(result))
