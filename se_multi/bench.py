"""Benchmarks (``se-multi bench``, :mod:`se_multi.cli.bench`): does the same model run the same everywhere,
and how fast?

For every backend x model x batch x dtype it measures, on one seeded input:

- latency: warm-up calls, then timed calls (lazy results materialised by the backend's
  ``synchronize``), *interleaved* round-robin across configurations so that a noisy,
  shared machine slows every configuration alike; median and spread are reported;
- images/s at the median;
- SE overhead: the SE model's median over its no-SE twin's, on the same backend
  (``seresnet50 / resnet50``, ``se_mobilenetv1_100 / mobilenetv1_100``);
- memory: the process's peak resident set during that configuration's forward
  (Linux resets the high-water mark through ``/proc/self/clear_refs``), and the part of
  it above the resident size just before the call (the forward's working memory);
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
}
DEFAULT_MODELS = ("seresnet50", "resnet50")
#: idle seconds before each timed call (see the timing loop in run_bench)
SPIN_GAP_S = 0.2


@dataclass
class BenchRow:
    backend: str
    model: str
    batch: int
    dtype: str
    input_size: tuple[int, int]
    times_ms: list[float] = field(default_factory=list)
    peak_rss_mb: float | None = None
    forward_mb: float | None = None
    max_rel_err: float | None = None
    top1_agreement: float | None = None
    se_overhead: float | None = None
    error: str | None = None
    #: the backend instance's settings (dtype, device, layout, compiled or not)
    settings: str | None = None

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
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_memory(fn) -> tuple[float | None, float | None]:
    """(process peak RSS during ``fn()``, peak minus RSS before) in MiB; ``None`` off Linux."""
    before = _rss_mb("VmRSS")
    if before is None or not _reset_peak_rss():
        fn()
        return None, None
    fn()
    peak = _rss_mb("VmHWM")
    return peak, (peak - before) if peak is not None else None


# --------------------------------------------------------------------------- running
def run_bench(backends, models, batches=(1,), dtype="float32", device=None, input_size=(224, 224),
              warmup=2, min_runs=5, max_runs=50, budget_s=2.0, weights=None, progress=None,
              reference=True) -> list[BenchRow]:
    """Build every configuration, then time them interleaved; see the module docstring."""
    from se_multi.dispatch import get_backend, to_numpy
    from se_multi.init import recipe_input
    from se_multi.metrics import max_rel_error, top1_agreement
    from se_multi.models import create_model

    rows, runners = [], []
    refs: dict[tuple[str, int], np.ndarray] = {}
    for model_name in models:
        for batch in batches:
            x = recipe_input((batch, 3, *input_size), seed=1)
            if reference:
                ref_model = create_model(model_name, weights=weights, backend=get_backend("numpy", "float64"))
                refs[(model_name, batch)] = to_numpy(ref_model(x.astype(np.float64)))
                del ref_model
            for backend in backends:
                row = BenchRow(backend, model_name, batch, dtype, tuple(input_size))
                rows.append(row)
                try:
                    model = create_model(model_name, weights=weights, backend=backend, dtype=dtype, device=device)
                    row.settings = repr(model.ops)
                    xb = model.ops.asarray(x)  # input transfer is not part of the timed call
                    call = lambda m=model, xb=xb: m.ops.synchronize(m(xb))  # noqa: E731
                    for _ in range(warmup):
                        out = call()
                    row.peak_rss_mb, row.forward_mb = measure_memory(call)
                    if reference:
                        ours, ref = to_numpy(out), refs[(model_name, batch)]
                        row.max_rel_err, row.top1_agreement = max_rel_error(ours, ref), top1_agreement(ours, ref)
                    runners.append((row, call))
                except Exception as exc:  # one broken configuration must not stop the table
                    row.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                if progress:
                    progress(f"built {backend} {model_name} b{batch}")

    # interleaved timing: round-robin until every config has min_runs and the budget is spent
    deadline = time.perf_counter() + budget_s * max(1, len(runners))
    total = 0
    while runners:
        pending = [(r, c) for r, c in runners if len(r.times_ms) < max_runs]
        if not pending or (time.perf_counter() > deadline and all(len(r.times_ms) >= min_runs for r, _ in runners)):
            break
        for row, call in pending:
            # The previous call's framework may still have threads spin-waiting for work
            # (OpenMP, ONNX Runtime's pool): on a small machine they would steal cores from
            # this call. A short idle gap lets them park, so no backend pays for another.
            time.sleep(SPIN_GAP_S)
            t0 = time.perf_counter()
            call()
            row.times_ms.append((time.perf_counter() - t0) * 1e3)
            total += 1
        if progress:
            progress(f"timed {total} calls")

    by_key = {(r.backend, r.model, r.batch): r for r in rows}
    for r in rows:
        base = by_key.get((r.backend, SE_BASELINES.get(r.model), r.batch))
        if base and r.median_ms and base.median_ms:
            r.se_overhead = r.median_ms / base.median_ms
    return rows


# --------------------------------------------------------------------------- reporting
def environment() -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("numpy", "torch", "mlx", "cupy-cuda13x", "onnxruntime"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
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
    head = ("backend", "model", "batch", "dtype", "median ms", "img/s", "SE ovh", "peak MiB", "fwd MiB",
            "rel err", "top-1 agr")
    lines = [head]
    for r in rows:
        if r.error:
            lines.append((r.backend, r.model, str(r.batch), r.dtype, "error: " + r.error, *[""] * 6))
            continue
        lines.append((r.backend, r.model, str(r.batch), r.dtype, _fmt(r.median_ms, ".1f"), _fmt(r.images_per_s, ".1f"),
                      _fmt(r.se_overhead, ".3f"), _fmt(r.peak_rss_mb, ".0f"), _fmt(r.forward_mb, ".0f"),
                      _fmt(r.max_rel_err, ".1e"), _fmt(r.top1_agreement, ".3f")))
    widths = [max(len(line[i]) for line in lines if len(line) > i) for i in range(len(head))]
    out = []
    for i, line in enumerate(lines):
        if line[4].startswith("error:"):
            out.append("  ".join(c.ljust(w) for c, w in zip(line[:4], widths)) + "  " + line[4])
        else:
            out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


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
    backends = list(dict.fromkeys(r.backend for r in ok))
    width = 0.8 / max(1, len(backends))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) * max(1, len(backends)) / 2), 4.5))
    for i, b in enumerate(backends):
        vals = [next((r.median_ms for r in ok if r.backend == b and (r.model, r.batch) == g), 0) for g in groups]
        bars = ax.bar([j + i * width for j in range(len(groups))], vals, width, label=b)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{m}\nbatch {b}" for m, b in groups], fontsize=8)
    ax.set_yscale("log")  # backends differ by 100x; a linear axis would flatten the fast ones
    ax.set_ylabel("median latency (ms, log scale), lower is better")
    dtype = ok[0].dtype if ok else ""
    ax.set_title(f"se_multi backends, {dtype}, {_cpu_name()}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from se_multi.files import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
