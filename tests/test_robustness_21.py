"""Issue 21: third-party backends that fail, checkpoints that inflate, thread counts from the
environment, models that pickle, sizes that are not ints.

The fault tests run the command as users do, in a child process: ``se-multi`` (the console
script, whose ``sys.path`` does not hold the current directory) for plugins, under an
address-space limit for zip bombs, under an environment and a CPU affinity of its own for threads.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import resource
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import require_backend
from se_multi.backends.numpy_backend import NumpyBackend

WORKER = Path(__file__).with_name("robustness21_worker.py")
ROOT = WORKER.parents[1]
SE_MULTI = Path(sys.executable).with_name("se-multi")  # the console script of this environment
#: small and quick: 2.5 M parameters
MODEL = "mobilenetv3_small_100"


def _worker(*args, env=None, preexec_fn=None, timeout=300) -> dict:
    proc = subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env, preexec_fn=preexec_fn)
    assert proc.returncode == 0, f"worker {args} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _env(**extra) -> dict:
    """This environment without PYTHONPATH (a plugin must be found without it), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **extra}


def _one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr
    assert "Traceback" not in stderr, stderr
    return stderr.rstrip("\n")


# =========================================================================== 1. third-party backends
GOOD_PLUGIN = '''
import tqdm  # an installed package: the tqdm.py in the current directory must not shadow it
from se_multi.backends.numpy_backend import NumpyBackend


class Backend(NumpyBackend):
    name = "cwd-plugin"
'''
SHADOW = 'raise ImportError("the current directory shadowed an installed package")\n'

#: plugin module source -> the one line `se-multi predict --backend <module>:Backend` must print
BROKEN_PLUGINS = {
    "plugin_import_raises": ("1 / 0\n", "failed to import: ZeroDivisionError: division by zero"),
    "plugin_exits_at_import": ("import sys\nsys.exit(0)\n", "failed to import: it called sys.exit(0)"),
    "plugin_missing_dependency": ("import se_multi_no_such_dependency_xyz\n",
                                  "failed to import: ModuleNotFoundError: No module named 'se_multi_no_such_dependency_xyz'"),
    "plugin_init_raises": (
        "from se_multi.backends.numpy_backend import NumpyBackend\n\n"
        "class Backend(NumpyBackend):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        raise RuntimeError('licence server unreachable')\n",
        "failed to start: RuntimeError: licence server unreachable"),
    "plugin_init_exits": (
        "import sys\nfrom se_multi.backends.numpy_backend import NumpyBackend\n\n"
        "class Backend(NumpyBackend):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        sys.exit(3)\n",
        "failed to start: it called sys.exit(3)"),
}


def _predict_with(tmp_path: Path, backend: str, *extra: str) -> subprocess.CompletedProcess:
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    return subprocess.run([str(SE_MULTI), *extra, "predict", "x.npy", "--model", MODEL, "--backend", backend,
                           "--quiet"], capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=300)


@pytest.mark.parametrize("module", sorted(BROKEN_PLUGINS))
def test_a_broken_plugin_is_exit_4_and_one_line_naming_it(tmp_path, module):
    source, said = BROKEN_PLUGINS[module]
    (tmp_path / f"{module}.py").write_text(source)
    proc = _predict_with(tmp_path, f"{module}:Backend")
    assert proc.returncode == 4, proc.stderr
    assert _one_line(proc.stderr) == f"se-multi predict: error: third-party backend '{module}:Backend' {said}"


def test_debug_shows_where_the_plugin_failed(tmp_path):
    (tmp_path / "plugin_import_raises.py").write_text("x = 1\n1 / 0\n")
    proc = _predict_with(tmp_path, "plugin_import_raises:Backend", "--debug")
    assert proc.returncode == 4, proc.stderr
    assert f'File "{tmp_path / "plugin_import_raises.py"}", line 2' in proc.stderr
    assert "ZeroDivisionError: division by zero" in proc.stderr
    assert proc.stderr.endswith("se-multi predict: error: third-party backend 'plugin_import_raises:Backend' "
                                "failed to import: ZeroDivisionError: division by zero\n")


def test_a_plugin_in_the_current_directory_runs_without_pythonpath(tmp_path):
    (tmp_path / "cwd_plugin.py").write_text(GOOD_PLUGIN)
    (tmp_path / "tqdm.py").write_text(SHADOW)
    proc = _predict_with(tmp_path, "cwd_plugin:Backend")
    assert proc.returncode == 0, proc.stderr
    assert "rank" in proc.stdout and "class" in proc.stdout


def test_a_module_that_does_not_exist_stays_bad_input(tmp_path):
    proc = _predict_with(tmp_path, "no_such_plugin_module_xyz:Backend")
    assert proc.returncode == 3, proc.stderr
    assert "cannot import module 'no_such_plugin_module_xyz'" in _one_line(proc.stderr)


# =========================================================================== 2. checkpoints that inflate
#: the child's address space: a few hundred MiB are what `se-multi predict` needs on numpy with
#: this model; the bombs inflate to more than all of it, so a child that inflated one would die
#: of MemoryError (exit 5) instead of refusing it (exit 3)
CHILD_ADDRESS_SPACE = 2**30
#: what building a bomb may cost its builder (it writes 16 MiB chunks)
BUILDER_RSS_MIB = 150


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))


def _predict_weights(tmp_path: Path, weights: Path) -> subprocess.CompletedProcess:
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32), np.float32))
    # a timeout, not a time: that it finishes at all under the limit is the claim
    return subprocess.run([str(SE_MULTI), "predict", "x.npy", "--model", MODEL, "--weights", str(weights),
                           "--backend", "numpy", "--quiet"], capture_output=True, text=True, cwd=tmp_path,
                          env=_env(), timeout=300, preexec_fn=_limited)


def _model_state() -> dict[str, np.ndarray]:
    from se_multi.init import recipe_state
    from se_multi.models import build_model

    return recipe_state((k, s.shape, s.kind) for k, s in build_model(MODEL).param_specs().items())


@pytest.mark.usefixtures("default_malloc")  # the builder's peak RSS is measured
def test_an_npz_bomb_with_a_misshaped_key_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.npz"
    built = _worker("npz-bomb", str(bomb), "classifier.weight", "1000", "262144")  # 0.98 GiB of zeros
    assert built["peak_rss_mib"] < BUILDER_RSS_MIB, built
    assert bomb.stat().st_size < 16 * 2**20  # what makes it a bomb: small on disk
    proc = _predict_weights(tmp_path, bomb)
    assert proc.returncode == 3, proc.stderr
    line = _one_line(proc.stderr)
    assert line.startswith(f"se-multi predict: error: checkpoint {bomb} does not match the model: "), line
    assert "classifier.weight: expected (1000, 1024), got (1000, 262144)" in line


@pytest.mark.usefixtures("default_malloc")  # the builder's peak RSS is measured
def test_an_npz_bomb_under_a_key_the_model_ignores_is_refused_by_the_size_limit(tmp_path):
    from se_multi.checkpoint import NPZ_SLACK_BYTES

    state = _model_state()
    bomb = tmp_path / "bomb.npz"
    np.savez(bomb, **state)  # every tensor the model needs, right
    # a training counter, which the key check lets through, of 1 GiB
    built = _worker("npz-bomb", str(bomb), "bn1.num_batches_tracked", str(2**28))
    assert built["peak_rss_mib"] < BUILDER_RSS_MIB, built
    proc = _predict_weights(tmp_path, bomb)
    assert proc.returncode == 3, proc.stderr
    line = _one_line(proc.stderr)
    tensors = sum(v.nbytes for v in state.values())
    mib = lambda n: f"{n / 2**20:.1f} MiB"  # noqa: E731
    assert "'bn1.num_batches_tracked.npy' alone 1.00 GiB" in line, line
    assert (f"over the limit of {mib(tensors + NPZ_SLACK_BYTES)} (this model's tensors, {mib(tensors)}, plus "
            f"se_multi.checkpoint.NPZ_SLACK_BYTES, {mib(NPZ_SLACK_BYTES)}); refused before inflating anything") in line


def test_the_same_npz_without_the_bomb_loads(tmp_path):
    """The control of the two tests above: the limit leaves a right checkpoint alone."""
    from se_multi.dispatch import get_backend
    from se_multi.models import Model, build_model, create_model

    state = _model_state()
    np.savez_compressed(tmp_path / "ok.npz", **state, **{"bn1.num_batches_tracked": np.array(7)})
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    got = create_model(MODEL, weights=str(tmp_path / "ok.npz"), backend="numpy").predict_numpy(x)
    ops = get_backend("numpy")
    want = Model(MODEL, build_model(MODEL).bind(state, ops), ops).predict_numpy(x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.usefixtures("default_malloc")  # the builder's peak RSS is measured
def test_a_torch_zip_declaring_more_than_the_cap_is_refused_before_torch_loads_it(tmp_path):
    from se_multi.checkpoint import MAX_INFLATED_BYTES

    bomb = tmp_path / "bomb.pth"
    gib = MAX_INFLATED_BYTES / 2**30 + 0.25
    built = _worker("torch-bomb", str(bomb), str(gib))
    assert built["peak_rss_mib"] < BUILDER_RSS_MIB, built
    proc = _predict_weights(tmp_path, bomb)
    assert proc.returncode == 3, proc.stderr
    line = _one_line(proc.stderr)
    assert f"'archive/data/0' alone {gib:.2f} GiB" in line, line
    assert (f"over the limit of {MAX_INFLATED_BYTES / 2**30:.2f} GiB (se_multi.checkpoint.MAX_INFLATED_BYTES, "
            "the most it inflates from any checkpoint); refused before inflating anything") in line


# =========================================================================== 3. threads from the environment
def _affinity(cores: set):
    return lambda: os.sched_setaffinity(0, cores)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_omp_num_threads_is_clamped_to_the_cores_this_process_may_use(backend):
    require_backend(backend)
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity API on this platform")
    mine = sorted(os.sched_getaffinity(0))
    env = {**os.environ, "OMP_NUM_THREADS": "64"}
    one_core = _worker("threads", backend, env=env, preexec_fn=_affinity({mine[0]}))
    assert one_core == {"backend_threads": 1, "compiled_threads": 1}
    inherited = _worker("threads", backend, env=env)
    assert inherited == {"backend_threads": len(mine), "compiled_threads": len(mine)}
    # an explicit threads= is the caller's: se_multi passes it on unclamped (OpenVINO itself
    # then runs at most one thread per usable core; ONNX Runtime runs what it is given)
    asked = _worker("threads", backend, "3", env=env, preexec_fn=_affinity({mine[0]}))
    assert asked == {"backend_threads": 3, "compiled_threads": 3 if backend == "onnxruntime" else 1}


# =========================================================================== 4. models pickle
X = np.random.default_rng(21).standard_normal((2, 3, 40, 48)).astype(np.float32)


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_a_model_pickles_and_deep_copies_to_an_equal_model_with_caches_of_its_own(backend):
    from se_multi.models import create_model

    require_backend(backend)
    model = create_model(MODEL, backend=backend, seed=3)
    want = model.predict_numpy(X)  # compiled graphs and input-size verdicts exist now
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert twin.ops is not model.ops and twin.module.bound_to is twin.ops
        assert (twin.ops.name, twin.ops.dtype) == (model.ops.name, model.ops.dtype)
        assert twin.module.__dict__.get("_graphs") is None and twin._input_sizes is None  # caches not copied
        np.testing.assert_array_equal(twin.predict_numpy(X), want)
        assert twin._input_sizes is not model._input_sizes
        if backend == "onnxruntime":  # a graph cache and a session of its own
            graphs = lambda m: m.module.graphs(m.ops.graph_cache_size)  # noqa: E731
            (key,) = graphs(model).keys()
            assert graphs(twin) is not graphs(model) and graphs(twin).keys() == [key]
            assert graphs(twin).get_or_create(key, None).session is not graphs(model).get_or_create(key, None).session
    shallow = copy.copy(model)
    assert shallow.ops is model.ops and shallow.module is model.module


class LockedBackend(NumpyBackend):
    """A third-party backend whose objects hold a lock (so they do not pickle), made directly."""

    name = "locked"

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()


def test_a_model_on_a_backend_that_cannot_be_made_again_is_one_type_error():
    from se_multi.init import recipe_state
    from se_multi.models import Model, build_model

    ops = LockedBackend()
    declaration = build_model(MODEL)
    state = recipe_state((k, s.shape, s.kind) for k, s in declaration.param_specs().items())
    model = Model(MODEL, declaration.bind(state, ops), ops)
    for copier in (pickle.dumps, copy.deepcopy):
        with pytest.raises(TypeError, match=r"cannot pickle a model bound on <LockedBackend 'locked' dtype=float32>: "
                                            r"se_multi.get_backend did not make that backend object.*"
                                            r"TypeError: cannot pickle '_thread.lock' object"):
            copier(model)
    assert pickle.loads(pickle.dumps(NumpyBackend()))  # the same class without the lock would pickle itself


# =========================================================================== 5. sizes that are not ints
@pytest.mark.parametrize("size,named", [((224.5, 224), "224.5 is a float"), ((True, 224), "True is a bool"),
                                        ("224", "'224' is a str"), (224.0, "224.0 is a float")])
def test_model_info_refuses_a_size_that_is_not_an_int(size, named):
    from se_multi.info import model_info

    with pytest.raises(TypeError, match=f"input_size must be \\(H, W\\) of positive ints; got .*{named}"):
        model_info(MODEL, input_size=size)


def test_model_info_takes_numpy_ints_as_ints():
    from se_multi.info import model_info

    assert model_info(MODEL, (np.int64(64), np.int32(48))) == model_info(MODEL, (64, 48))
    assert model_info(MODEL, 64)["input_size"] == [64, 64]
