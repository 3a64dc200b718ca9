"""A planted asynchronous backend for the bench tests: ``run_model`` returns at once, with the
forward still running in a thread (as JAX or a CUDA stream dispatch), and ``to_numpy`` waits for
it; ``synchronize`` is *not* overridden, so the base class's returns before the work is done."""

from __future__ import annotations

import threading
import time

import numpy as np

from se_multi.backends.numpy_backend import NumpyBackend

#: seconds each forward takes at least ("device" time), so that dispatch and work differ plainly
WORK_S = 0.05


class Pending:
    """A result being computed in a thread; :meth:`result` waits for it."""

    def __init__(self, compute):
        self._value, self._done = None, threading.Event()

        def work():
            time.sleep(WORK_S)
            self._value = compute()
            self._done.set()

        threading.Thread(target=work, daemon=True).start()

    def result(self):
        self._done.wait()
        return self._value


class AsyncNumpy(NumpyBackend):
    name = "async-numpy"

    def run_model(self, module, x):
        return Pending(lambda: NumpyBackend.run_model(self, module, x))

    @staticmethod
    def to_numpy(x):
        return np.asarray(x.result() if isinstance(x, Pending) else x)


class SyncedAsyncNumpy(AsyncNumpy):
    """The same backend with ``synchronize`` overridden as the contract asks."""

    name = "async-numpy-synced"

    def synchronize(self, x):
        if isinstance(x, Pending):
            x.result()
        return x
