"""The benchmark suite and `se-multi bench` collect and run (one round, small inputs).
Speed itself is measured by the benchmarks, never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from se_multi import bench, metrics

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_collect_and_run_one_round():
    env = dict(os.environ, SE_MULTI_BENCH_SIZE="64")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
         "-k", "numpy and (se_block or (mobilenetv1_100 and batch1) or ((test_torch_eager_baseline) and 1))"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout


def test_the_documented_benchmark_commands_start():
    """Every ``pytest benchmarks ...`` line of the README and the docs starts as written (collected,
    not timed): a project option that conflicts with ``--benchmark-only`` once stopped them all."""
    import re
    import shlex

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    lines = [ln.split("#")[0].strip() for page in pages for ln in page.read_text().splitlines()]
    commands = [ln for ln in lines if re.match(r"^([A-Z_]+=\S+ )*pytest benchmarks", ln)]
    assert len(commands) >= 3, commands
    for command in commands:
        words = shlex.split(command)
        at = words.index("pytest")  # VAR=value words before it set the environment
        # as a user's shell runs it: without this test run's own PYTEST_* variables (an xdist
        # worker's, which make pytest-benchmark turn itself off)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update(w.split("=", 1) for w in words[:at])
        argv = words[at + 1:]
        out = subprocess.run([sys.executable, "-m", "pytest", *argv, "--collect-only", "-q", "-p", "no:cacheprovider"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (command, out.stdout[-2000:] + out.stderr[-2000:])
        assert re.search(r"\d+(/\d+)? tests? (collected|selected)", out.stdout), (command, out.stdout[-2000:])


def test_bench_cli_offline_table_json_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from se_multi.cli import main

    js, png = tmp_path / "b.json", tmp_path / "b.png"
    rc = main(["bench", "--backends", "numpy", "--models", "se_mobilenetv1_100,mobilenetv1_100",
               "--input-size", "64", "64", "--budget", "0", "--min-runs", "2", "--json", str(js), "--plot", str(png),
               "--no-memory"])
    assert rc == 0
    data = json.loads(js.read_text())
    rows = {r["model"]: r for r in data["rows"]}
    assert rows["se_mobilenetv1_100"]["se_overhead"] > 0
    # numpy float32 against the numpy float64 reference: close, and the same top-1
    assert rows["se_mobilenetv1_100"]["max_rel_err"] < 1e-4
    assert rows["se_mobilenetv1_100"]["top1_agreement"] == 1.0
    assert len(rows["mobilenetv1_100"]["times_ms"]) >= 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_suite_takes_any_registered_model():
    """SE_MULTI_BENCH_MODELS swaps the whole-model benchmark's models (here a small member of the
    SE-ResNet family, the Caffe SE-ResNet-18)."""
    env = dict(os.environ, SE_MULTI_BENCH_SIZE="32", SE_MULTI_BENCH_MODELS="legacy_seresnet18")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/test_models.py", "-q", "-p", "no:cacheprovider",
         "--benchmark-disable", "-k", "numpy and 1-float32", "-rA"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "PASSED benchmarks/test_models.py::test_model_latency[numpy-legacy_seresnet18-1-float32]" in out.stdout
    assert "seresnet50" not in out.stdout


def test_bench_se_overhead_of_the_family_against_its_plain_twin():
    """`se-multi bench` on SE-ResNeXt-101 (Caffe layout) and its SE-free twin: the overhead is their
    ratio on the same backend (only the SE models with a twin in the run get one)."""
    rows = bench.run_bench(["numpy"], ["legacy_seresnext101_32x4d", "legacy_seresnext101_32x4d_plain"],
                           input_size=(32, 32), budget_s=0, min_runs=1)
    by_model = {r.model: r for r in rows}
    se, plain = by_model["legacy_seresnext101_32x4d"], by_model["legacy_seresnext101_32x4d_plain"]
    assert not se.error and not plain.error
    assert se.se_overhead == pytest.approx(se.median_ms / plain.median_ms) and plain.se_overhead is None
    assert se.max_rel_err < 1e-4 and se.top1_agreement == 1.0



def test_every_se_baseline_is_its_model_less_se():
    """Each twin in SE_BASELINES is a registered model with exactly its SE model's non-SE parameters
    (counted at the model's own input size: VGG's folded classifier and BN-Inception's fixed pool take
    no other)."""
    from se_multi.info import model_info
    from se_multi.pretrained import get_config

    assert {"legacy_senet154", "legacy_seresnext101_32x4d", "se_vgg16_bn"} <= set(bench.SE_BASELINES)
    for se_model, twin in bench.SE_BASELINES.items():
        size = tuple(get_config(se_model).input_size[-2:])
        se, plain = model_info(se_model, size), model_info(twin, size)
        assert se["se_params"] > 0 and plain["se_params"] == 0
        assert plain["params"] == se["params"] - se["se_params"], (se_model, twin)
        assert plain["macs"] == se["macs"] - se["se_macs"], (se_model, twin)


def test_metrics_catch_disagreement():
    """bench and validate share one metric (se_multi.metrics): written out by hand here."""
    ref = np.array([[0.0, 1.0, 2.0], [3.0, 1.0, 0.0]])
    flipped = ref[:, ::-1]  # |diff| max is 3 (row 2), max |ref| is 3
    assert metrics.max_errors(flipped, ref) == (3.0, 1.0)
    assert metrics.top1_agreement(flipped, ref) == 0.0
    assert metrics.max_errors(ref, ref) == (0.0, 0.0) and metrics.top1_agreement(ref, ref) == 1.0
    assert metrics.max_errors(np.array([[np.nan, 0.0, 0.0]]), ref[:1]) == (float("inf"), float("inf"))
    with pytest.raises(ValueError, match="shape"):
        metrics.max_errors(ref[:1], ref)


def test_bench_reports_a_broken_configuration_instead_of_crashing():
    rows = bench.run_bench(["no_such_backend", "numpy"], ["mobilenetv1_100"], input_size=(32, 32), budget_s=0,
                           min_runs=1, reference=False, memory=False)
    assert rows[0].error and "no_such_backend" in rows[0].error
    table = bench.format_table(rows).splitlines()
    header = table[0].split()
    failed = table[2].split()
    # a row marked failed: no text in a number column, the reason in a footnote under the table
    assert failed[:4] == ["no_such_backend", "mobilenetv1_100", "1", "float32"]
    assert failed[4:12] == ["-"] * 8 and failed[12:] == ["failed", "[1]"] and header[-1] == "note"
    assert table[-1].startswith("[1] no_such_backend mobilenetv1_100 1 float32: failed: ValueError: unknown backend")
    assert table[3].split()[4] not in ("-", "failed")  # the numpy row has its numbers


@pytest.fixture
def async_backends():
    sys.path.insert(0, str(ROOT))
    try:
        yield "tests.async_backend:AsyncNumpy", "tests.async_backend:SyncedAsyncNumpy"
    finally:
        sys.path.remove(str(ROOT))


def test_bench_is_not_fooled_by_an_asynchronous_backend(async_backends):
    """A backend whose calls return before the result exists and whose synchronize is the base
    class's no-op: bench finds it out, times it through to_numpy, and says so under the table."""
    from tests.async_backend import WORK_S

    lazy, synced = async_backends
    rows = bench.run_bench([lazy, synced, "numpy"], ["mobilenetv3_small_100"], input_size=(32, 32), budget_s=0,
                           min_runs=3, memory=False)
    by = {r.backend: r for r in rows}
    assert not any(r.error for r in rows), [r.error for r in rows]
    assert by[lazy].timed_through == "to_numpy" and "AsyncNumpy.synchronize returned before" in by[lazy].sync_note
    assert by[lazy].median_ms >= 1e3 * WORK_S  # the work was timed, not the dispatch (~0.1 ms)
    assert by[lazy].max_rel_err < 1e-5  # compared on the computed values
    for honest in (synced, "numpy"):
        assert by[honest].timed_through == "synchronize" and by[honest].sync_note is None
    assert by[synced].median_ms >= 1e3 * WORK_S
    table = bench.format_table(rows)
    assert "timed via to_numpy [1]" in table
    assert table.splitlines()[-1].startswith(f"[1] {lazy} mobilenetv3_small_100 1 float32: AsyncNumpy.synchronize")


def test_synchronize_probe_on_its_own(async_backends):
    from tests.async_backend import AsyncNumpy, SyncedAsyncNumpy
    from se_multi.models import create_model

    x = np.zeros((1, 3, 32, 32), np.float32)
    for cls, early in ((AsyncNumpy, True), (SyncedAsyncNumpy, False)):
        model = create_model("mobilenetv3_small_100", backend=cls("float32"))
        assert (bench.synchronize_returns_early(model.ops, lambda: model(x)) is not None) is early, cls


@pytest.mark.usefixtures("default_malloc")
@pytest.mark.parametrize("method", ["auto", "sampled"])
def test_memory_is_per_configuration_and_independent_of_order(method):
    """Each configuration's memory is measured in a fresh process: two configurations measured in
    either order give the same figures (within 10%), and every figure is above zero."""
    if not sys.platform.startswith("linux"):
        pytest.skip("memory is read from /proc (Linux)")
    configs = (("numpy", "se_mobilenetv1_100"), ("numpy", "mobilenetv1_100"))
    runs = {}
    for order in (configs, configs[::-1]):
        for backend, model in order:
            m = bench.measure_memory_isolated(backend, model, batch=4, input_size=(224, 224), method=method)
            assert "error" not in m, m
            runs.setdefault((backend, model), []).append(m)
    for config, (first, second) in runs.items():
        for key in ("rss_mb", "peak_mb", "forward_mb"):
            assert first[key] > 0 and second[key] > 0, (config, key, first, second)
            assert abs(first[key] - second[key]) <= 0.1 * max(first[key], second[key]), (config, key, first, second)
        assert first["method"] == second["method"] == (
            "VmRSS sampled every 1 ms" if method == "sampled" else first["method"])


def test_bench_table_has_dtype_rows_memory_note_and_fastest_summary():
    rows = [bench.BenchRow("numpy", "m", 1, "float32", (8, 8), times_ms=[4.0], max_rel_err=1e-7, top1_agreement=1.0,
                           rss_mb=100.0, peak_rss_mb=120.0, forward_mb=20.0, memory_method="VmHWM reset after warm-up"),
            bench.BenchRow("torch", "m", 1, "bfloat16", (8, 8), times_ms=[2.0], max_rel_err=4e-3, top1_agreement=1.0,
                           rss_mb=300.0, peak_rss_mb=310.0, forward_mb=10.0, memory_method="VmHWM reset after warm-up")]
    table = bench.format_table(rows)
    assert "bfloat16" in table and "RSS MiB" in table and " 120 " in table
    assert "fresh process" in bench.memory_note(rows)
    assert bench.summary(rows) == ["fastest for m batch 1: torch bfloat16, 2.0 ms, max rel err vs float64 4.0e-03, "
                                   "top-1 agreement 1.000"]


def test_environment_asks_each_backend_for_its_framework(monkeypatch):
    from se_multi import dispatch
    from se_multi.backends.numpy_backend import NumpyBackend

    class ThirdParty(NumpyBackend):
        name, package = "thirdparty", "pytest"  # a plugin whose framework is some installed package

    monkeypatch.setattr(dispatch, "backend_class", lambda name: ThirdParty if name == "thirdparty" else NumpyBackend)
    env = bench.environment(["numpy", "thirdparty"])
    assert env["versions"]["numpy"] == f"numpy {np.__version__}"
    assert env["versions"]["thirdparty"] == f"pytest {pytest.__version__}"
    assert env["blas"] == [] or env["blas"][0]["library"]


def test_bench_feeds_a_one_channel_model_its_channels():
    """QuickNAT and SD-Net take one MRI channel: bench (and its memory pass) build their input from
    the model's channels, not RGB, and check it against the float64 reference."""
    rows = bench.run_bench(["numpy"], ["sdnet"], input_size=(16, 16), budget_s=0, min_runs=1, memory=False)
    assert not rows[0].error, rows[0].error
    assert rows[0].max_rel_err < 1e-4
