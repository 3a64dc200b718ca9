"""Benchmarks (``se-multi bench``, :mod:`se_multi.cli.bench`): does the same model run the same everywhere,
and how fast?

For every backend x model x batch x dtype it measures, on one seeded input:

- latency: warm-up calls, then timed calls (lazy results materialised by the backend's
  ``synchronize``), *interleaved* round-robin across configurations so that a noisy,
  shared machine slows every configuration alike; median and spread are reported. Before
  timing, each configuration is checked once for a ``synchronize`` that returns before the
  result is computed (an asynchronous framework that did not override it, which would be timed
  for its dispatch alone): :func:`synchronize_returns_early` times how long ``to_numpy`` (which
  must wait for the values) still waits after ``synchronize`` returned; such a row is timed
  through ``to_numpy`` and flagged with a footnote;
- images/s at the median;
- SE overhead: the SE model's median over its no-SE twin's, on the same backend
  (``seresnet50 / resnet50``, ``se_mobilenetv1_100 / mobilenetv1_100``);
- memory, in a separate pass, each configuration **in a fresh interpreter of its own**
  (:func:`measure_memory_isolated`): one process's peak RSS is cumulative (it only grows as
  configurations are built), and resetting it (``/proc/self/clear_refs``) is not permitted on
  every machine. The worker builds the model and makes one warm-up call (compiling what the
  backend compiles, creating the buffers the engine keeps), returns freed heap to the OS, and
  records the resident set (``RSS``: interpreter, framework, weights, compiled graphs, kept
  buffers); then three timed-alike calls, whose peak resident set is read from ``VmHWM`` reset
  after the warm-up where the kernel allows it, else sampled every millisecond; ``fwd`` is
  peak minus RSS: what a call needs beyond what stays resident (about 0 for an engine that
  keeps its working buffers allocated between calls). The method is recorded per row;
- accuracy: max relative error against the NumPy float64 reference on the same input,
  and top-1 agreement (per image, or per pixel for segmentation).

Weights are the seeded defaults unless ``--weights`` is given, so it runs offline.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np

#: SE model -> the same model without SE (the SE overhead baseline)
SE_BASELINES = {
    "seresnet50": "resnet50",
    "se_mobilenetv1_100": "mobilenetv1_100",
    "legacy_seresnext101_32x4d": "legacy_seresnext101_32x4d_plain",
    "legacy_senet154": "legacy_senet154_plain",
    "se_shufflenet_g3": "shufflenet_g3",
    "se_vgg16_bn": "vgg16_bn",
    "se_bninception": "bninception",
    "se_inception_resnet_v2": "inception_resnet_v2",
}
DEFAULT_MODELS = ("seresnet50", "resnet50")
#: idle seconds before each timed call (see the timing loop in run_bench)
SPIN_GAP_S = 0.2
#: probes :func:`synchronize_returns_early` makes per configuration (the fastest is compared)
SYNC_PROBE_CALLS = 3
#: ``to_numpy`` after ``synchronize`` waiting longer than this times the synchronized call itself
#: means ``synchronize`` returned early: after an honest one, ``to_numpy`` copies the output (a
#: thousandth of a forward for logits, a few hundredths for a segmentation map sent from a GPU);
#: after one that returned early, it waits for the forward (hundreds of times the dispatch)
SYNC_WAIT_RATIO = 1.0


@dataclass
class BenchRow:
    backend: str
    model: str
    batch: int
    dtype: str
    input_size: tuple[int, int]
    times_ms: list[float] = field(default_factory=list)
    #: resident MiB after build + one warm-up call, peak MiB during 3 calls, their difference;
    #: measured in a fresh process per configuration (``memory_method`` says how the peak was read)
    rss_mb: float | None = None
    peak_rss_mb: float | None = None
    forward_mb: float | None = None
    memory_method: str | None = None
    max_rel_err: float | None = None
    top1_agreement: float | None = None
    se_overhead: float | None = None
    #: why the configuration failed (the row then has no numbers; the table puts this in a footnote)
    error: str | None = None
    #: the backend instance's settings (dtype, device, layout, compiled or not)
    settings: str | None = None
    #: what each timed call waited on: ``"synchronize"``, or ``"to_numpy"`` where the backend's
    #: ``synchronize`` returned before the result was computed (``sync_note`` says by how much)
    timed_through: str = "synchronize"
    sync_note: str | None = None

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.times_ms) if self.times_ms else None

    @property
    def images_per_s(self) -> float | None:
        m = self.median_ms
        return None if not m else 1000.0 * self.batch / m

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(median_ms=self.median_ms, images_per_s=self.images_per_s)
        if self.times_ms:
            q = np.percentile(self.times_ms, [10, 90])
            d.update(p10_ms=float(q[0]), p90_ms=float(q[1]))
        return d


# --------------------------------------------------------------------------- memory
def _rss_mb(field_name: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0, where this process may write clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    before = _rss_mb("VmRSS")
    return before is not None and _rss_mb("VmHWM") is not None and _rss_mb("VmHWM") <= before + 1.0


def _trim_heap() -> None:
    """Collect garbage and give glibc's free heap back to the OS, so RSS is what is still held."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)
        if trim is not None:
            trim(0)


class _RssSampler:
    """Polls VmRSS every ``interval_s`` in a thread; ``peak`` is the largest value seen."""

    def __init__(self, interval_s: float = 0.001):
        import threading

        self.interval_s, self.peak = interval_s, _rss_mb("VmRSS") or 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb("VmRSS") or 0.0)
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb("VmRSS") or 0.0)


def _memory_worker(spec: dict) -> dict:
    """Run in a fresh interpreter by :func:`measure_memory_isolated` (see the module docstring)."""
    from se_multi.init import recipe_input
    from se_multi.models import create_model

    if _rss_mb("VmRSS") is None:
        return {"error": "no /proc/self/status: memory is measured on Linux only"}
    calibration = spec.get("calibration")
    if calibration is not None and not isinstance(calibration, int):
        from se_multi.quantize import backend_option

        calibration = backend_option(calibration)
    model = create_model(spec["model"], weights=spec["weights"],
                         backend=_backend(spec["backend"], spec["dtype"], spec["device"], calibration),
                         dtype=spec["dtype"], device=spec["device"])
    x = model.ops.asarray(recipe_input((spec["batch"], model.in_chans, *spec["input_size"]), seed=1))
    # to_numpy waits for the values even where synchronize does not (an asynchronous framework that
    # did not override it); the output's copy is small beside a forward's buffers
    call = lambda: model.ops.to_numpy(model.ops.synchronize(model(x)))  # noqa: E731
    call()  # warm-up: compiles, creates what the engine keeps
    _trim_heap()
    rss = _rss_mb("VmRSS")
    if spec.get("method", "auto") == "auto" and _reset_peak_rss():
        for _ in range(spec["calls"]):
            call()
        peak, method = _rss_mb("VmHWM"), "VmHWM reset after warm-up"
    else:
        with _RssSampler() as sampler:
            for _ in range(spec["calls"]):
                call()
        peak, method = sampler.peak, "VmRSS sampled every 1 ms"
    return {"rss_mb": rss, "peak_mb": peak, "forward_mb": max(0.0, peak - rss), "method": method}


def _backend(name: str, dtype: str, device, calibration):
    """A bench row's backend: its name, or at int8 with a ``calibration`` the backend made with it."""
    if calibration is None or dtype != "int8":
        return name
    from se_multi.dispatch import get_backend

    return get_backend(name, dtype=dtype, device=device, calibration=calibration)


def measure_memory_isolated(backend: str, model: str, batch: int = 1, dtype: str = "float32", device=None,
                            input_size=(224, 224), weights=None, calls: int = 3, timeout_s: float = 900,
                            method: str = "auto", calibration=None) -> dict:
    """``{"rss_mb", "peak_mb", "forward_mb", "method"}`` (or ``{"error"}``) for one configuration,
    measured in a fresh interpreter (``python -m se_multi.bench --memory-worker``): nothing another
    configuration built or freed is in its figures, in whichever order they are measured.
    ``method="sampled"`` samples RSS even where ``VmHWM`` can be reset (what a machine that does
    not permit the reset gets)."""
    if method not in ("auto", "sampled"):
        raise ValueError(f"memory method must be 'auto' or 'sampled'; got {method!r}")
    import json
    import subprocess
    import sys

    spec = dict(backend=backend, model=model, batch=int(batch), dtype=dtype, device=device,
                input_size=[int(v) for v in input_size], weights=weights, calls=int(calls), method=method,
                calibration=calibration if calibration is None or isinstance(calibration, int) else
                [os.fspath(c) for c in ([calibration] if isinstance(calibration, (str, os.PathLike)) else calibration)])
    try:
        proc = subprocess.run([sys.executable, "-m", "se_multi.bench", "--memory-worker", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"memory worker timed out after {timeout_s:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"memory worker exited {proc.returncode}: {last}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- running
def time_interleaved(runners, min_runs=5, max_runs=50, budget_s=2.0, progress=None) -> None:
    """Time ``(times_ms_list, call)`` pairs round-robin, appending each call's milliseconds to its
    list, until each has ``min_runs`` and ``budget_s`` per pair is spent (or ``max_runs``): a noisy,
    shared machine then slows every configuration alike. ``se-multi bench`` and the goal
    benchmark (``python -m benchmarks.goals``) both time this way."""
    deadline = time.perf_counter() + budget_s * max(1, len(runners))
    total = 0
    while runners:
        pending = [(t, c) for t, c in runners if len(t) < max_runs]
        if not pending or (time.perf_counter() > deadline and all(len(t) >= min_runs for t, _ in runners)):
            break
        for times, call in pending:
            # The previous call's framework may still have threads spin-waiting for work
            # (OpenMP, ONNX Runtime's pool): on a small machine they would steal cores from
            # this call. A short idle gap lets them park, so no backend pays for another.
            time.sleep(SPIN_GAP_S)
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1e3)
            total += 1
        if progress:
            progress(f"timed {total} calls")


def synchronize_returns_early(ops, forward, calls: int = SYNC_PROBE_CALLS) -> str | None:
    """Whether ``ops.synchronize`` returns before ``forward()``'s result is computed: a sentence
    saying by how much, or ``None``. Each of ``calls`` probes times ``synchronize(forward())``, then
    ``ops.to_numpy`` of that result, which cannot return before the values exist: after an honest
    ``synchronize`` it only copies the output (microseconds for logits), after one that returned
    early it waits for the whole forward. The fastest of each is compared (the fastest, because
    a shared machine only ever adds time): a wait in ``to_numpy`` longer than
    :data:`SYNC_WAIT_RATIO` times the call itself means ``synchronize`` timed the dispatch alone."""
    best_call = best_wait = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        result = ops.synchronize(forward())
        t1 = time.perf_counter()
        ops.to_numpy(result)
        t2 = time.perf_counter()
        best_call, best_wait = min(best_call, (t1 - t0) * 1e3), min(best_wait, (t2 - t1) * 1e3)
    if best_wait <= SYNC_WAIT_RATIO * best_call:
        return None
    return (f"{type(ops).__name__}.synchronize returned before the result was computed (a call "
            f"{best_call:.2f} ms, then {best_wait:.2f} ms waiting in to_numpy): timed through to_numpy; "
            "the backend should override Backend.synchronize")


def _dtypes(dtype) -> list[str]:
    return [d for d in ([dtype] if isinstance(dtype, str) else list(dtype))]


def run_bench(backends, models, batches=(1,), dtype="float32", device=None, input_size=(224, 224),
              warmup=2, min_runs=5, max_runs=50, budget_s=2.0, weights=None, progress=None,
              reference=True, memory=True, calibration=None) -> list[BenchRow]:
    """Build every configuration (backend x model x batch x dtype; ``dtype`` is one name or a list),
    time them all interleaved, then measure each one's memory in a fresh process (``memory``);
    see the module docstring. A backend that has no such dtype is left out of that dtype's rows.
    ``calibration``: the int8 rows' ``calibration`` backend option (``None``: the model's default;
    a count; or what :func:`se_multi.quantize.backend_option` makes of images); the memory pass's
    fresh process calibrates the same way (a count or ``None`` as is, images by their paths)."""
    from se_multi.dispatch import backend_class, get_backend, to_numpy
    from se_multi.init import recipe_input
    from se_multi.metrics import max_rel_error, top1_agreement
    from se_multi.models import build_model, create_model

    def has_dtype(backend: str, dt: str) -> bool:
        try:
            return dt in backend_class(backend).dtypes
        except Exception:  # an unknown backend: its row reports the error
            return True

    rows, runners = [], []
    refs: dict[tuple[str, int], np.ndarray] = {}
    for model_name in models:
        for batch in batches:
            # the model's input channels (QuickNAT's one MRI channel, else RGB), as Model takes them
            x = recipe_input((batch, getattr(build_model(model_name), "in_chans", 3), *input_size), seed=1)
            if reference:
                ref_model = create_model(model_name, weights=weights, backend=get_backend("numpy", "float64"))
                refs[(model_name, batch)] = to_numpy(ref_model(x.astype(np.float64)))
                del ref_model
            for backend in backends:
                for dt in _dtypes(dtype):
                    if not has_dtype(backend, dt):
                        continue
                    row = BenchRow(backend, model_name, batch, dt, tuple(input_size))
                    rows.append(row)
                    try:
                        model = create_model(model_name, weights=weights, backend=_backend(backend, dt, device,
                                                                                           calibration),
                                             dtype=dt, device=device)
                        row.settings = repr(model.ops)
                        xb = model.ops.asarray(x)  # input transfer is not part of the timed call
                        call = lambda m=model, xb=xb: m.ops.synchronize(m(xb))  # noqa: E731
                        for _ in range(warmup):
                            out = call()
                        row.sync_note = synchronize_returns_early(model.ops, lambda m=model, xb=xb: m(xb))
                        if row.sync_note:
                            row.timed_through = "to_numpy"
                            call = lambda m=model, xb=xb: m.ops.to_numpy(m(xb))  # noqa: E731
                        if reference:
                            ours, ref = model.ops.to_numpy(out), refs[(model_name, batch)]
                            row.max_rel_err, row.top1_agreement = max_rel_error(ours, ref), top1_agreement(ours, ref)
                        runners.append((row, call))
                    except Exception as exc:  # one broken configuration must not stop the table
                        row.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    if progress:
                        progress(f"built {backend} {model_name} b{batch} {dt}")

    time_interleaved([(row.times_ms, call) for row, call in runners], min_runs, max_runs, budget_s,
                     progress=progress)
    runners.clear()  # the models are no longer needed: the memory pass builds its own

    if memory:
        for i, row in enumerate(r for r in rows if not r.error):
            m = measure_memory_isolated(row.backend, row.model, row.batch, row.dtype, device, input_size, weights,
                                        calibration=getattr(calibration, "source", calibration))
            if "error" in m:
                row.memory_method = m["error"]
            else:
                row.rss_mb, row.peak_rss_mb, row.forward_mb = m["rss_mb"], m["peak_mb"], m["forward_mb"]
                row.memory_method = m["method"]
            if progress:
                progress(f"memory of {row.backend} {row.model} b{row.batch} {row.dtype} (fresh process)")

    by_key = {(r.backend, r.model, r.batch, r.dtype): r for r in rows}
    for r in rows:
        base = by_key.get((r.backend, SE_BASELINES.get(r.model), r.batch, r.dtype))
        if base and r.median_ms and base.median_ms:
            r.se_overhead = r.median_ms / base.median_ms
    return rows


# --------------------------------------------------------------------------- reporting
def environment(backends=()) -> dict:
    """Date, machine, Python, and each benchmarked backend's framework and version, asked of the
    backend class (:meth:`se_multi.backend.Backend.framework`), third-party backends included; the
    CPU's reduced-precision units and numpy's BLAS kernel (:mod:`se_multi.cpu`)."""
    from se_multi.cpu import blas_info, cpu_info
    from se_multi.dispatch import backend_class

    frameworks = {}
    for name in backends:
        try:
            frameworks[name] = backend_class(name).framework()
        except Exception as exc:  # an unknown backend: its rows say so
            frameworks[name] = f"unknown ({type(exc).__name__})"
    cpu = cpu_info()
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpus": os.cpu_count(),
        "cpu_features": cpu.isa(),
        "native_reduced_precision": list(cpu.native_reduced()),
        "python": platform.python_version(),
        "versions": frameworks,
        "blas": blas_info() if "numpy" in backends else [],
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: list[BenchRow]) -> str:
    """The results table, and under it its footnotes: why a configuration failed (its row has no
    numbers, and ``failed [n]`` in the ``note`` column), and which rows were timed through
    ``to_numpy`` because their backend's ``synchronize`` returned early."""
    head = ("backend", "model", "batch", "dtype", "median ms", "img/s", "SE ovh", "RSS MiB", "peak MiB", "fwd MiB",
            "rel err", "top-1 agr", "note")
    lines, notes = [head], []

    def footnote(text: str) -> str:
        notes.append(text)
        return f"[{len(notes)}]"

    for r in rows:
        where = (r.backend, r.model, str(r.batch), r.dtype)
        if r.error:
            lines.append((*where, *["-"] * 8, "failed " + footnote(f"{' '.join(where)}: failed: {r.error}")))
            continue
        note = "timed via to_numpy " + footnote(f"{' '.join(where)}: {r.sync_note}") if r.sync_note else ""
        lines.append((*where, _fmt(r.median_ms, ".1f"), _fmt(r.images_per_s, ".1f"),
                      _fmt(r.se_overhead, ".3f"), _fmt(r.rss_mb, ".0f"), _fmt(r.peak_rss_mb, ".0f"), _fmt(r.forward_mb, ".0f"),
                      _fmt(r.max_rel_err, ".1e"), _fmt(r.top1_agreement, ".3f"), note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out + [f"[{i}] {text}" for i, text in enumerate(notes, 1)])


def memory_note(rows: list[BenchRow]) -> str:
    """What the memory columns mean, with the method each row's peak was read by."""
    methods = sorted({r.memory_method for r in rows if r.memory_method and r.rss_mb is not None})
    failed = sorted({r.memory_method for r in rows if r.memory_method and r.rss_mb is None})
    if not methods and not failed:
        return "memory: not measured"
    text = ("memory: each configuration in a fresh process; RSS after build + one warm-up call, peak RSS over 3 "
            "calls (" + "; ".join(methods) + "), fwd = peak - RSS")
    return text + ("; not measured: " + "; ".join(failed) if failed else "")


def summary(rows: list[BenchRow]) -> list[str]:
    """Per model and batch: the fastest configuration, with its error against float64."""
    out = []
    for model, batch in dict.fromkeys((r.model, r.batch) for r in rows if r.median_ms):
        best = min((r for r in rows if (r.model, r.batch) == (model, batch) and r.median_ms), key=lambda r: r.median_ms)
        err = "" if best.max_rel_err is None else (f", max rel err vs float64 {best.max_rel_err:.1e}, "
                                                   f"top-1 agreement {best.top1_agreement:.3f}")
        out.append(f"fastest for {model} batch {batch}: {best.backend} {best.dtype}, {best.median_ms:.1f} ms{err}")
    return out


def plot(rows: list[BenchRow], path: str) -> None:
    """Grouped bar chart: one group per (model, batch), one bar per backend, median latency."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'se-multi[bench]'") from None
    ok = [r for r in rows if r.median_ms]
    groups = list(dict.fromkeys((r.model, r.batch) for r in ok))
    label = lambda r: f"{r.backend} {r.dtype}"  # noqa: E731  (one bar per backend and dtype)
    backends = list(dict.fromkeys(label(r) for r in ok))
    width = 0.8 / max(1, len(backends))
    fig, ax = plt.subplots(figsize=(max(6, min(14, 0.8 * len(groups) * max(1, len(backends)) / 2)), 4.5))
    for i, b in enumerate(backends):
        vals = [next((r.median_ms for r in ok if label(r) == b and (r.model, r.batch) == g), 0) for g in groups]
        bars = ax.bar([j + i * width for j in range(len(groups))], vals, width, label=b)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{m}\nbatch {b}" for m, b in groups], fontsize=8)
    ax.set_yscale("log")  # backends differ by 100x; a linear axis would flatten the fast ones
    ax.set_ylabel("median latency (ms, log scale), lower is better")
    dtypes = ", ".join(dict.fromkeys(r.dtype for r in ok))
    ax.set_title(f"se_multi backends, {dtypes}, {_cpu_name()}, {time.strftime('%Y-%m-%d')}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from se_multi.files import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


if __name__ == "__main__":  # the memory worker: python -m se_multi.bench --memory-worker SPEC_JSON
    import json
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "--memory-worker":
        sys.exit("usage: python -m se_multi.bench --memory-worker SPEC_JSON")
    print(json.dumps(_memory_worker(json.loads(sys.argv[2]))))
