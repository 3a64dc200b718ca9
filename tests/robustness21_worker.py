"""Run by tests/test_robustness_21.py in a fresh interpreter: the thread check under an environment
and a CPU affinity of its own. Prints one JSON document on stdout.

    python robustness21_worker.py threads BACKEND [THREADS]   the thread count a model's compiled
                                                              graph runs with (THREADS: threads=)
"""

from __future__ import annotations

import json
import sys

import numpy as np


def threads(backend: str, asked: str | None = None) -> dict:
    """The intra-op threads the backend object chose and those its compiled graph reports."""
    from se_multi.dispatch import get_backend
    from se_multi.models import create_model

    ops = get_backend(backend, **({"threads": int(asked)} if asked else {}))
    model = create_model("mobilenetv3_small_100", backend=ops)
    model(np.zeros((1, 3, 32, 32), np.float32))
    graphs = model.module.graphs(ops.graph_cache_size)
    (key,) = graphs.keys()
    graph = graphs.get_or_create(key, None)
    if backend == "onnxruntime":
        compiled = graph.session.get_session_options().intra_op_num_threads
    else:  # openvino: what the compiled model reports
        compiled = int(graph.compiled.get_property("INFERENCE_NUM_THREADS"))
    return {"backend_threads": ops.threads, "compiled_threads": compiled}


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    result = {"threads": threads}[what](*args)
    print(json.dumps(result))
