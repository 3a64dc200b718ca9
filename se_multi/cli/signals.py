"""SIGTERM and SIGHUP end a command the way Ctrl-C does.

``kill``, ``timeout``, Kubernetes, Slurm and a closed terminal stop a process with SIGTERM or
SIGHUP, whose default action ends Python at once: no ``finally`` runs, so a results file is not
written and temporary files stay. Inside :func:`graceful_termination` either signal raises
:class:`Terminated` (a ``KeyboardInterrupt``) in the main thread instead, so every cleanup that
Ctrl-C runs runs too (the results store writes its output and releases its lock, atomic writes
remove their temporary files), and the command exits ``128 + signal number`` (143, 129), as a
shell reports a process the signal killed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

#: the signals that end a command gracefully (SIGINT already raises KeyboardInterrupt)
GRACEFUL = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """The command was stopped by ``signum``; it ends as on Ctrl-C, with exit code ``128 + signum``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


def _raise(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def graceful_termination() -> Iterator[None]:
    """Within the block, :data:`GRACEFUL` signals raise :class:`Terminated` (main thread only:
    Python runs handlers there), except a signal the process was started ignoring (``nohup``);
    the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    try:
        for sig in GRACEFUL:
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue  # ignored on purpose (`nohup` ignores SIGHUP): stays ignored
            previous[sig] = signal.signal(sig, _raise)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
