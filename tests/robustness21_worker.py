"""Run by tests/test_robustness_21.py in a fresh interpreter: the thread check under an environment
and a CPU affinity of its own, the zip bombs built where their builder's peak memory is its own to
report. Prints one JSON document on stdout.

    python robustness21_worker.py threads BACKEND [THREADS]   the thread count a model's compiled
                                                              graph runs with (THREADS: threads=)
    python robustness21_worker.py npz-bomb PATH KEY DIM...    add to a .npz a member KEY: float32
                                                              zeros of shape DIM...
    python robustness21_worker.py torch-bomb PATH GIB         write a torch-style zip (archive/
                                                              data.pkl, archive/data/0) of GIB GiB
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
import zlib

import numpy as np

#: bytes written per chunk: the builder never holds more than this of the bomb
CHUNK = 16 * 2**20


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


def _peak_rss_mib() -> float:
    """This process's own peak RSS: VmHWM, the high-water mark of the memory it has since exec.
    (getrusage's ru_maxrss keeps the largest of the whole lineage across fork and exec: a worker
    forked from a test run that had grown to 6.5 GB reported 6.5 GB.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class _ZerosOnce:
    """A deflate compressor that compresses a whole ``CHUNK`` of zeros once and writes that block
    again for every later one: after a full flush the compressor's history is empty, so each such
    chunk deflates to the same bytes. The member is the deflate stream zlib itself would write
    with a full flush per chunk (zipfile still counts the sizes and the CRC of every byte); the
    torch bomb's 4.25 GiB took 16 s to deflate, chunk by chunk."""

    def __init__(self, compressor, zeros: bytes):
        self._compressor, self._zeros, self._block = compressor, zeros, None

    def compress(self, data: bytes) -> bytes:
        if data != self._zeros:
            return self._compressor.compress(data)
        pending = self._compressor.flush(zlib.Z_FULL_FLUSH)  # what came before, ended on a byte boundary
        if self._block is None:
            self._block = self._compressor.compress(data) + self._compressor.flush(zlib.Z_FULL_FLUSH)
        return pending + self._block

    def flush(self, mode: int = zlib.Z_FINISH) -> bytes:
        return self._compressor.flush(mode)


def _stream_zeros(zf: zipfile.ZipFile, name: str, nbytes: int, head: bytes = b"") -> None:
    """One deflated member of ``head`` then zeros, ``nbytes`` in all, written ``CHUNK`` at a time
    (:class:`_ZerosOnce`)."""
    zeros = bytes(CHUNK)
    with zf.open(name, "w", force_zip64=True) as f:  # the archive's compression and level
        f._compressor = _ZerosOnce(f._compressor, zeros)
        f.write(head)
        left = nbytes - len(head)
        while left > 0:
            f.write(zeros[: min(left, CHUNK)])
            left -= CHUNK


def npz_bomb(path: str, key: str, *shape: str) -> dict:
    """Add to the ``.npz`` at ``path`` (made if missing) a member ``KEY.npy``: a float32 array of
    zeros of ``SHAPE``, deflated, written by streaming, so this process stays small."""
    dims = tuple(int(s) for s in shape)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(  # the magic string, then the header, as np.save writes them
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": dims})
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        _stream_zeros(zf, f"{key}.npy", len(buf.getvalue()) + 4 * int(np.prod(dims)), buf.getvalue())
    return {"peak_rss_mib": _peak_rss_mib()}


def torch_bomb(path: str, gib: str) -> dict:
    """The layout ``torch.save`` writes (``archive/data.pkl``, ``archive/data/0``, ...) with one
    storage of ``GIB`` GiB of zeros, deflated; written by streaming."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")  # an empty dict: torch never gets this far
        zf.writestr("archive/version", b"3\n")
        _stream_zeros(zf, "archive/data/0", int(float(gib) * 2**30))
    return {"peak_rss_mib": _peak_rss_mib()}


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    result = {"threads": threads, "npz-bomb": npz_bomb, "torch-bomb": torch_bomb}[what](*args)
    print(json.dumps(result))
