"""The "Writing a backend" example (``examples/se_multi_jax``), installed as a third party installs
it (its own package, its ``se_multi.backends`` entry point), passes ``se-multi validate`` at every
dtype it offers; its arrays, bfloat16 included, go through ``model(x)``, ``to_numpy`` and bench.
CI installs it (``.ci/run``: ``pip install jax ./examples/se_multi_jax``)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from se_multi import dispatch
from se_multi.dtypes import COMPUTE_DTYPES

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "se_multi_jax"


def _example_class():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install jax; CI installs it)")
    if "jax" not in dispatch.known_backends():
        pytest.skip("the example backend is not installed (pip install ./examples/se_multi_jax; CI installs it)")
    return dispatch.backend_class("jax")


def test_the_entry_point_names_the_example_class():
    cls = _example_class()
    assert dispatch.known_backends()["jax"] == "se_multi_jax.backend:JaxBackend"
    assert cls.__module__ == "se_multi_jax.backend" and cls.array_module == "jax"
    assert set(cls.dtypes) == set(COMPUTE_DTYPES)  # so the validate runs below cover every dtype it offers


#: What the validate runs below set for XLA: they test the adapter, not XLA's optimiser, and
#: compiling is nearly all of their time (every op at every shape, every model jitted at every
#: dtype). Hoisting the jitted models' weights out of the HLO as arguments (JAX's coming default,
#: docs.jax.dev/en/latest/internals/constants.html) instead of ~200 MB of constants per SE-ResNet-50
#: graph, and LLVM's cheap passes only: a float32 validate took 61 s -> 43 s on 2 cores (2026-12-03).
#: Where the worker's share of the cores is one thread (``OMP_NUM_THREADS=1``, tests/conftest.py),
#: XLA's own pool is one thread too: 104 s -> 88 s for that validate beside a busy core. XLA:CPU's
#: elemental IR emitters instead of its MLIR fusion emitters (both its own code generators): a whole
#: model compiles about 3x faster (SE-ResNet-50 1.6 s -> 0.6 s), a float32 validate 81 s -> 43 s
#: (2026-12-03, jax 0.10.2). Each program's LLVM module compiled whole, not split into parts for a
#: pool of compiler threads (the validate's ~200 programs are small): a float32 validate 18.3/18.9 s
#: -> 17.3/15.9 s of CPU, bfloat16 19.6/17.9 -> 17.0/16.6 s, float64 the same (2026-12-06, alone, 2 cores).
FAST_COMPILE = {"JAX_USE_SIMPLIFIED_JAXPR_CONSTANTS": "True",
                "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
                " --xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
                + (" --xla_cpu_multi_thread_eigen=false"
                   if os.environ.get("OMP_NUM_THREADS") == "1" else "")}


@pytest.fixture(scope="module", autouse=True)
def _fast_compile_in_process():
    """:data:`FAST_COMPILE` for the tests that compile in this interpreter too, where its XLA starts
    in this module (XLA reads its flags once, at JAX's first computation; started earlier, they
    compile as before): the two below took 10.6 s -> 4.8 s alone (2026-12-03)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAST_COMPILE.items():
            patch.setenv(name, value)
        yield


@pytest.mark.parametrize("dtype", COMPUTE_DTYPES)
def test_example_passes_validate(dtype):
    """The command a third party runs, in a fresh interpreter (with :data:`FAST_COMPILE`)."""
    _example_class()
    proc = subprocess.run([sys.executable, "-m", "se_multi", "validate", "--backend", "jax", "--dtype", dtype],
                          capture_output=True, text=True, timeout=900, cwd=ROOT, env={**os.environ, **FAST_COMPILE})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("OK: all") and f"backend 'jax', {dtype}" in last, last
    if dtype != "float64":
        assert f"computes in {dtype}" in last


def test_jax_arrays_bfloat16_included_are_arrays():
    cls = _example_class()
    import jax.numpy as jnp

    import se_multi

    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32))
    xb = jnp.asarray(x, jnp.bfloat16)
    assert dispatch.owner(xb) is cls  # array_module = "jax" owns a jaxlib array
    back = se_multi.to_numpy(xb)
    assert back.dtype.name == "bfloat16" and np.array_equal(back.astype(np.float64), np.asarray(xb, np.float64))
    for backend in ("numpy", "jax"):  # a JAX bfloat16 array into any backend's model
        model = se_multi.create_model("mobilenetv3_small_100", backend=backend)
        want = se_multi.to_numpy(model(np.asarray(xb, np.float32)))
        got = se_multi.to_numpy(model(xb))
        assert np.array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64)), backend


def test_bench_flags_the_example_without_its_synchronize():
    """JAX dispatches asynchronously: the example overrides synchronize; without it, bench's probe
    sees the forward still running when the call returns."""
    cls = _example_class()
    from se_multi import bench
    from se_multi.backend import Backend
    from se_multi.models import create_model

    class NoSync(cls):
        synchronize = Backend.synchronize

    x = np.zeros((1, 3, 96, 96), np.float32)
    for ops, early in ((cls("float32"), False), (NoSync("float32"), True)):
        model = create_model("seresnet50", backend=ops)
        xb = ops.asarray(x)
        ops.to_numpy(model(xb))  # compile first
        note = bench.synchronize_returns_early(ops, lambda: model(xb))
        assert (note is not None) is early, note


def test_the_page_shows_the_example_as_it_is():
    """docs/writing-a-backend.md embeds the example's files; they must not drift apart."""
    page = (ROOT / "docs" / "writing-a-backend.md").read_text()
    blocks = re.findall(r"```(?:python|toml)\n(.*?)```", page, re.S)
    for path in ("se_multi_jax/backend.py", "pyproject.toml"):
        assert (EXAMPLE / path).read_text() in blocks, f"{path} differs from its copy in docs/writing-a-backend.md"
