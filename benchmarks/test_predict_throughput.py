"""Images/s of ``se-multi predict`` over a folder: batch 1 against 8 and 16, one process against a
local Ray with 2 workers (``SE_MULTI_BENCH_BACKEND``, default onnxruntime, the fastest CPU backend
here; ``SE_MULTI_BENCH_IMAGES`` images, default 64, 320x240 JPEGs). Each round is one whole CLI
run in a fresh interpreter, as a user runs it: model build, decoding and, for Ray, its start.
``extra_info`` holds images/s; the summary line's own images/s (decode + model, after the build)
is ``run_images_per_s``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.conftest import skip_unless_available

BACKEND = os.environ.get("SE_MULTI_BENCH_BACKEND", "onnxruntime")
IMAGES = int(os.environ.get("SE_MULTI_BENCH_IMAGES", "64"))
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench_images")
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(root / f"{i:04d}.jpg", quality=90)
    return root


@pytest.mark.parametrize("ray", [False, True], ids=["one-process", "ray-2-workers"])
@pytest.mark.parametrize("batch", [1, 8, 16])
def test_predict_throughput(benchmark, folder, tmp_path, batch, ray):
    skip_unless_available(BACKEND)
    if ray:
        pytest.importorskip("ray", reason="pip install 'se-multi[ray]'")
    argv = [sys.executable, "-m", "se_multi", "predict", str(folder), "--model", "seresnet50", "--backend",
            BACKEND, "--batch-size", str(batch), "--output", str(tmp_path / "r.jsonl"), *(["--ray"] if ray else [])]
    rates, walls = [], []

    def run():
        (tmp_path / "r.jsonl").unlink(missing_ok=True)
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=1200)
        walls.append(time.perf_counter() - t0)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rates.append(float(re.search(r"([\d.]+) images/s", proc.stderr).group(1)))

    benchmark.group = f"predict seresnet50 {BACKEND}, {IMAGES} images"
    benchmark.pedantic(run, rounds=2, iterations=1)
    benchmark.extra_info.update(batch=batch, ray=ray, images=IMAGES, images_per_s=IMAGES / float(np.median(walls)),
                                run_images_per_s=float(np.median(rates)))
