"""Writing files that can never be left half-written.

:func:`atomic_output` hands out a temporary path in the target's own directory (so the final
rename never crosses a file system) and renames it over the target only when writing succeeded;
on any failure the temporary file is removed and an existing target stays exactly as it was.
Missing parent directories are created. Every file se_multi writes (ONNX exports, converted
checkpoints, masks, JSON reports, plots) goes through it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """``with atomic_output("out.onnx") as tmp: write(tmp)``: ``out.onnx`` appears complete, or not
    at all. The temporary name keeps the target's extension (libraries pick formats by it).
    ``durable``: the file's data and the rename are synced to disk before returning, so a power
    loss right after cannot leave an empty file under the target's name (results files)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory; expected a file path to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what a plain open() would have given
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def json_text(obj, **kwargs) -> str:
    """``obj`` as strict JSON: non-finite floats become ``null`` (JSON has no NaN or Infinity),
    other objects their ``str``."""
    return json.dumps(_finite_or_none(obj), allow_nan=False, default=str, **kwargs)
