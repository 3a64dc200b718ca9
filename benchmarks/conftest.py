"""Shared fixtures for the benchmark suite (`pytest benchmarks --benchmark-only`).

Models are built once per (backend, model, dtype) and cached for the session. The input
size defaults to 224x224; ``SE_MULTI_BENCH_SIZE=64`` shrinks it (the test suite's smoke
run uses that, so collecting and running one round stays fast). ``SE_MULTI_BENCH_MODELS``
(comma-separated names) replaces the whole-model benchmark's default models."""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
import pytest

import se_multi
from se_multi.init import recipe_input

SIZE = int(os.environ.get("SE_MULTI_BENCH_SIZE", "224"))
#: ``SE_MULTI_BENCH_MODELS=legacy_senet154,legacy_senet154_plain`` times those registered models
#: instead of the default set (any name of ``se_multi.list_models()``)
MODELS = tuple(m.strip() for m in os.environ.get("SE_MULTI_BENCH_MODELS", "").split(",") if m.strip())
BACKENDS = ("numpy", "torch", "mlx", "cupy", "onnxruntime", "openvino")


def requires(*packages: str):
    """A benchmark module's ``pytestmark``: its tests skip where a package is not installed, found
    without importing it. ``pytest.importorskip`` at module level imported torch (1.5 s) in every
    collection of the benchmarks, also in runs that select none of the module's tests."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)}")


def skip_unless_available(backend: str) -> None:
    ok, reason = se_multi.backend_status().get(backend, (False, "unknown backend"))
    if not ok:
        pytest.skip(f"{backend}: {reason}")


def skip_unless_native(dtype: str) -> None:
    """Reduced precision is benchmarked where the CPU has hardware for it (se_multi.cpu)."""
    from se_multi.cpu import cpu_info

    if dtype not in ("float32", "float64") and dtype not in cpu_info().native_reduced():
        pytest.skip(cpu_info().why_no(dtype))


@functools.lru_cache(maxsize=None)
def cached_model(backend: str, model: str, dtype: str):
    return se_multi.create_model(model, backend=backend, dtype=dtype)


@functools.lru_cache(maxsize=None)
def cached_input(batch: int, size: int = SIZE) -> np.ndarray:
    return recipe_input((batch, 3, size, size), seed=1)
