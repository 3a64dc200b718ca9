"""Every cache se_multi keeps: bounded, least-recently-used, thread-safe, and stated here.

The policy, in one place (the Backends page's "Input sizes, caches and threads" section,
docs/backends.md, says the same):

- **Compiled graphs live with the bound model they were compiled from** (the module that
  :meth:`se_multi.nn.Module.bind` returned), never in a backend object: dropping a model
  frees its graphs, also when several models share one backend. A whole-graph backend keeps
  at most :data:`GRAPHS_PER_MODEL` of them per model (``graph_cache_size=`` on the backend
  changes it), keyed by what the engine needs to recompile for: ONNX Runtime compiles one
  graph with symbolic N, H and W, so it holds one session per model whatever the input
  sizes; OpenVINO compiles per input shape by default (static shapes ran 5-20% faster than
  symbolic ones, measured in :mod:`se_multi.backends.openvino_backend`), so it holds the last
  few shapes (``shapes="dynamic"``: one graph per model, as ONNX Runtime); MLX's
  ``mx.compile`` traces per input shape, so it holds the last few shapes.
- **One-op graphs** (the op-by-op path of a whole-graph backend, used by the conformance
  suite) are the backend's own: at most :data:`OP_GRAPHS_PER_BACKEND`.
- **Infer requests** (OpenVINO): a compiled graph runs each call on an infer request of its own
  (its intermediate buffers), made on demand for concurrent calls; at most
  :data:`INFER_REQUESTS_PER_GRAPH` idle ones are kept per graph, the rest dropped when they finish.
- **Input-size verdicts** (does an input size fit a model's graph): at most
  :data:`INPUT_SIZE_VERDICTS` per model; each is a few bytes.
- **Installed backends' entry points** (:func:`se_multi.dispatch._entry_points`): one reading per
  process, read again when a ``sys.path`` folder has changed since (installing or removing a
  package changes its folder), as Python's own path finder keeps a folder's listing.

Nothing is keyed by ``id()``: keys are shapes and op signatures.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

V = TypeVar("V")

#: compiled whole-model graphs (sessions, compiled functions) kept per bound model
GRAPHS_PER_MODEL = 4
#: one-op graphs a whole-graph backend keeps for op-by-op calls
OP_GRAPHS_PER_BACKEND = 256
#: idle OpenVINO infer requests kept per compiled graph (concurrent calls make more, then drop them)
INFER_REQUESTS_PER_GRAPH = 4
#: input sizes whose fit is remembered per model
INPUT_SIZE_VERDICTS = 64


class BoundedCache:
    """A least-recently-used mapping of at most ``maxsize`` entries, safe to share between threads.

    :meth:`get_or_create` builds a missing value under the cache's lock, so two threads asking
    for the same key at once build it once (compiling a graph twice would waste its memory
    and time); the evicted value is dropped, and with it whatever it held.
    """

    def __init__(self, maxsize: int):
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
            raise ValueError(f"cache size must be a positive int; got {maxsize!r}")
        self.maxsize = maxsize
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.RLock()

    def get_or_create(self, key: Hashable, create: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = create()
            self._items[key] = value
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
            return value

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items

    def keys(self) -> list:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __repr__(self) -> str:
        return f"<BoundedCache {len(self)}/{self.maxsize}>"


def graph_cache_size(value: int | None) -> int:
    """A backend's ``graph_cache_size=`` option, checked (``None``: the default)."""
    if value is None:
        return GRAPHS_PER_MODEL
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"graph_cache_size must be a positive int; got {value!r}")
    return value
