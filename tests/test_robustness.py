"""No input crashes a backend, memory stays bounded, threads give the same answers and a clean exit.

Each check runs tests/robustness_worker.py in a fresh interpreter: a SIGFPE or an abort at exit
then fails one test (with the exit code) instead of ending the whole run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_backend
from se_multi.conformance import MODEL_TOLERANCES

WORKER = Path(__file__).with_name("robustness_worker.py")
ROOT = WORKER.parents[1]

#: RSS growth allowed over 30 new input sizes of MobileNetV3-Small (96..183 px), and over 10
#: create/call/drop cycles on one shared backend object. What the cache policy implies
#: (se_multi.cache): onnxruntime holds one size-generic session per model (~0 growth); mlx at
#: most 4 compiled shapes per model plus MLX's own buffer cache (measured: plateaus at 32 MiB);
#: openvino at most 4 static-shape compiled graphs per model, plus its oneDNN's process-wide primitive
#: cache (LRU, 1024 entries; measured: ~0.35 MiB per new size, 32 MiB over these 30, ~85 MiB plateau);
#: torch no cache of ours, but oneDNN's per-shape primitive caches (LRU, 1024 entries each;
#: measured: plateau ~30 MiB for this model); numpy none. Dropped models leave nothing.
#: Before the policy: onnxruntime +664 / +530 MiB, mlx +68 / +123 MiB.
SIZES_BOUND_MIB = 48
CYCLES_BOUND_MIB = 16


def _worker(*args, timeout=600) -> dict:
    proc = subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert proc.returncode == 0, f"worker {args} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_clear_error_or_correct(results: dict, tolerance: float) -> None:
    for case, r in results.items():
        model, size = case.split()
        if "error" in r:
            assert r["error"] == "ValueError", (case, r)
            assert r["message"].startswith(f"{model}: a {size} input does not fit: "), (case, r)
            assert "the smallest input that works is" in r["message"], (case, r)
        else:  # logits where the float64 reference refused the input: rel_err None, a failure
            assert r["finite"] and r["rel_err"] is not None and r["rel_err"] <= tolerance, (case, r)


@pytest.fixture(scope="module")
def tiny_references(tmp_path_factory) -> str:
    """The float64 reference's logits of every tiny and odd case (``robustness_worker.py``'s
    ``write_references``), computed once here for the children that compare with them."""
    import robustness_worker

    path = tmp_path_factory.mktemp("tiny_references") / "references.npz"
    robustness_worker.write_references(path)
    return str(path)


def test_tiny_and_odd_inputs_give_a_clear_error_or_correct_logits(any_backend, tiny_references):
    results = _worker("tiny", any_backend, tiny_references)
    _assert_clear_error_or_correct(results, MODEL_TOLERANCES["float32"])
    # the smallest valid input of each family runs, and what is refused is refused everywhere alike
    assert not any("error" in r for case, r in results.items() if case in (
        "seresnet50 1x1", "legacy_seresnet50 3x3", "unet_se_resnet50_scse 32x32"))
    assert all("error" in results[f"legacy_seresnet50 {s}"] for s in ("1x1", "2x2", "2x224", "31x2"))


def test_export_refuses_what_a_model_refuses_and_never_writes_an_empty_graph(tiny_references):
    require_backend("onnxruntime")
    results = _worker("export", tiny_references)
    _assert_clear_error_or_correct(results, MODEL_TOLERANCES["float32"])
    for case, r in results.items():
        assert r["file_written"] == ("error" not in r), case


def test_export_cli_refuses_a_too_small_input(tmp_path):
    require_backend("onnxruntime")
    out = tmp_path / "tiny.onnx"
    proc = subprocess.run([sys.executable, "-m", "se_multi", "export", "legacy_seresnet50", str(out),
                           "--input-size", "2", "2"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("\n") == 1 and "legacy_seresnet50: a 2x2 input does not fit" in proc.stderr
    assert not out.exists()


def test_predict_on_a_tiny_array_is_an_error_row_not_a_crash(tmp_path, cpu_backend):
    import numpy as np

    path = tmp_path / "tiny.npy"
    np.save(path, np.zeros((1, 3, 2, 224), np.float32))
    proc = subprocess.run([sys.executable, "-m", "se_multi", "predict", str(path), "--model", "legacy_seresnet50",
                           "--backend", cpu_backend], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stderr  # the run went on; one image failed
    assert "legacy_seresnet50: a 2x224 input does not fit" in proc.stdout
    assert "1 image, 1 failed" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.usefixtures("default_malloc")
def test_memory_stays_bounded_over_sizes_and_model_lifetimes(cpu_backend):
    growth = _worker("memory", cpu_backend)
    assert growth["sizes_growth_mib"] < SIZES_BOUND_MIB, growth
    assert growth["cycles_growth_mib"] < CYCLES_BOUND_MIB, growth


def test_threads_same_outputs_and_clean_exit_three_runs_in_a_row(cpu_backend):
    for run in range(3):
        result = _worker("threads", cpu_backend)
        assert result == {"mismatches": [], "errors": []}, (run, result)


@pytest.mark.parametrize("backend", ["onnxruntime", "mlx", "openvino"])
def test_a_dropped_model_frees_its_compiled_graphs(backend):
    """The compiled graphs live in the bound model, not the backend: a weak reference to the model
    dies with it even when the backend object lives on, shared."""
    import gc
    import weakref

    import numpy as np

    from se_multi.dispatch import get_backend
    from se_multi.models import create_model

    require_backend(backend)
    ops = get_backend(backend, graph_cache_size=2)
    model = create_model("mobilenetv3_small_100", backend=ops)
    for size in (32, 40, 48):
        model(np.zeros((1, 3, size, size), np.float32))
    graphs = model.module.graphs(ops.graph_cache_size)
    assert len(graphs) == (1 if backend == "onnxruntime" else 2)  # one size-generic graph / the 2 newest shapes
    alive = weakref.ref(model.module)
    del model, graphs
    gc.collect()
    assert alive() is None
