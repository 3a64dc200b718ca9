"""Writing predictions as they come, and resuming: ``.jsonl``, ``.csv`` and ``.parquet``.

- ``.jsonl``: one object per image, :meth:`~se_multi.predict.Prediction.to_json` (``{"image",
  "topk": [...]}`` or ``{"image", "error"}``), appended and flushed as each batch completes: an
  interruption loses at most the line being written (a torn last line is dropped on resume).
- ``.csv``: one row per (image, rank), or one error row; columns :data:`ROW_FIELDS`; appended
  and flushed the same way.
- ``.parquet`` (pyarrow): the same rows and columns. A Parquet file is only readable once its
  footer is written, so rows stream into a temporary file beside the target, which replaces it
  when the run ends or is interrupted (Ctrl-C); a killed run leaves the previous file as it was.

Resume: :attr:`ResultWriter.done` holds the images an existing output already has (successes and
errors alike); a rerun with the same output skips them and appends the rest.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

from se_multi.files import json_text
from se_multi.predict import ROW_FIELDS, Prediction

def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that has no newline (a write interrupted mid-line)."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


class ResultWriter:
    """Base: ``done`` (images already in the output), ``write(predictions)``, ``close()``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.done: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, predictions: Iterable[Prediction]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _AppendingWriter(ResultWriter):
    """A text file (``self._file``) opened for appending and flushed after every batch, so a run
    that is killed keeps every line it wrote (the resume reads them back)."""

    def _write_one(self, p: Prediction) -> None:
        raise NotImplementedError

    def write(self, predictions):
        for p in predictions:
            self._write_one(p)
        self._file.flush()

    def close(self):
        self._file.close()


class JsonlWriter(_AppendingWriter):
    def __init__(self, path):
        super().__init__(path)
        if self.path.exists():
            _drop_torn_tail(self.path)
            for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    self.done.add(json.loads(line)["image"])
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"{self.path}:{n}: not a se_multi results line; "
                                     "use another --output to start afresh") from None
        self._file = open(self.path, "a", encoding="utf-8")

    def _write_one(self, p: Prediction) -> None:
        self._file.write(json_text(p.to_json()) + "\n")


class CsvWriter(_AppendingWriter):
    def __init__(self, path):
        super().__init__(path)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh:
            _drop_torn_tail(self.path)
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) != ROW_FIELDS:
                    raise ValueError(f"{self.path}: not a se_multi results CSV (columns {reader.fieldnames}); "
                                     "use another --output to start afresh")
                self.done = {row["image"] for row in reader}
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._file, fieldnames=ROW_FIELDS)
        if fresh:
            self._csv.writeheader()

    def _write_one(self, p: Prediction) -> None:
        self._csv.writerows(p.to_rows())


class ParquetWriter(ResultWriter):
    def __init__(self, path):
        super().__init__(path)
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("--output .parquet needs pyarrow: pip install pyarrow") from None
        self._pa, self._pq = pa, pq
        self._schema = pa.schema([("image", pa.string()), ("rank", pa.int32()), ("class", pa.int32()),
                                  ("label", pa.string()), ("prob", pa.float64()), ("fraction", pa.float64()),
                                  ("mask", pa.string()), ("error", pa.string())])
        old = None
        if self.path.exists():
            try:
                old = pq.read_table(self.path)
            except Exception as exc:  # pyarrow's own errors for a torn or foreign file
                raise ValueError(f"{self.path}: not a readable Parquet file ({type(exc).__name__}: {exc}); "
                                 "use another --output to start afresh") from None
            if old.schema.names != list(ROW_FIELDS):
                raise ValueError(f"{self.path}: not a se_multi results file (columns {old.schema.names})")
            self.done = set(old.column("image").to_pylist())
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".tmp.parquet", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._writer = pq.ParquetWriter(self._tmp, self._schema)
        if old is not None:
            self._writer.write_table(old.cast(self._schema))

    def write(self, predictions):
        rows = [row for p in predictions for row in p.to_rows()]
        if rows:
            self._writer.write_table(self._pa.Table.from_pylist(rows, schema=self._schema))

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            os.replace(self._tmp, self.path)


#: output extension -> its writer
WRITERS: dict[str, type[ResultWriter]] = {".jsonl": JsonlWriter, ".csv": CsvWriter, ".parquet": ParquetWriter}


def open_writer(path: str | os.PathLike) -> ResultWriter:
    """The writer for ``path``'s format (by extension)."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITERS:
        raise ValueError(f"--output {os.fspath(path)!r}: results are written as {', '.join(WRITERS)} "
                         "(segmentation masks go to --output-dir DIR)")
    return WRITERS[suffix](path)


def read_results(path: str | os.PathLike) -> list[dict]:
    """The rows of a results file (JSONL: one dict per image; CSV/Parquet: one per row)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if path.suffix == ".csv":
        return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()
