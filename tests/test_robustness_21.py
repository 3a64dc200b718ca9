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
