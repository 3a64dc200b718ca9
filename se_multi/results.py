"""``se-multi predict --output``: a transactional results store, and the file it writes.

Design. The results of a run live in a SQLite database beside the output, ``<output>.sqlite``
(the *store*); the output file (``.jsonl``, ``.csv`` or ``.parquet``) is written from it. SQLite
was chosen because it is the most trusted embedded transactional store there is (in the
standard library, with its own crash recovery and locking), and because Parquet cannot be
appended to: a Parquet file is only readable once its footer is written, so any design that
streams into one loses the run on a crash. The rules:

- **One transaction per batch.** The predictions of one model call (whole source files: an
  ``.npy`` batch is never split) are committed together or not at all (WAL journal,
  ``synchronous=FULL``: durable once committed, also across power loss). A crash (an exception,
  ENOSPC/EFBIG, SIGKILL, power loss) costs at most the batch in flight; the next run resumes.
- **The output is a view, written atomically.** :meth:`ResultStore.export` writes the whole file
  from the store into a temporary file beside it and renames it over the target
  (:func:`se_multi.files.atomic_output`), at the end of every run (also one that failed or was
  interrupted), and during a run at most every ``refresh_s`` seconds (never more than about a
  tenth of the run's time). So the output is always a whole, readable file: the previous one
  if a write fails (a full disk leaves it exactly as it was), or the newer one. A torn,
  truncated or deleted output is rewritten from the store by the next run, without recomputing.
- **Resume knows the run.** The store records what produced its rows (:data:`IDENTITY`: model,
  weights -- a checkpoint file by its SHA-256, a hub id by name -- or the seed, preprocessing
  tag, dtype, top-k, mask folder, int8 calibration, se_multi version); a run with other settings is refused with
  one line naming each difference (``overwrite=True`` / ``--overwrite`` starts over). Images
  are keyed by resolved real path (:func:`se_multi.predict.source_key`; ``[i]`` for an image of
  an ``.npy`` batch): a source file whose images are in the store is never run again, whatever
  its spelling.
- **One writer.** The store is opened in SQLite's exclusive locking mode and locked for the whole
  run: a second process on the same output is refused at once (:class:`OutputInUse`), never
  duplicates rows or loses a run. The lock is the kernel's (POSIX advisory), so a killed run
  releases it.
- **Nothing temporary survives.** Temporary outputs of a run killed mid-write are removed by the
  next run (under the lock); the store's ``-wal`` file exists only while a run holds it (or after
  a crash, when it holds committed batches: never delete it by hand). Files take the umask.

Formats of the view:

- ``.jsonl``: one object per image, :meth:`~se_multi.predict.Prediction.to_json` (``{"image",
  "topk": [...]}`` or ``{"image", "error"}``), in the order images were committed.
- ``.csv``: one row per (image, rank), or one error row; columns :data:`ROW_FIELDS`.
- ``.parquet`` (pyarrow): the same rows and columns, written in row groups (memory bounded);
  the run's identity is in the file's key-value metadata under ``se_multi.run``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from se_multi.files import atomic_output, json_text
from se_multi.predict import ROW_FIELDS, Prediction

#: the store of ``OUTPUT`` is ``OUTPUT`` + this
STORE_SUFFIX = ".sqlite"
#: what a run's results depend on: a resume must match each of these
IDENTITY = ("model", "weights", "seed", "pretrained_cfg", "dtype", "topk", "output_dir", "calibration", "se_multi")
#: the output is rewritten during a run at most this often (seconds); ``refresh_s`` overrides
REFRESH_S = 10.0
#: ...and never for more than this share of the run's time (a view of a million rows costs seconds)
REFRESH_SHARE = 0.1
#: rows per Parquet row group and per read from the store, so exporting holds this many at once
CHUNK_ROWS = 10_000
_SCHEMA_VERSION = "1"


class OutputInUse(ValueError):
    """Another process holds the store of this output (a run is writing it)."""


class RunMismatch(ValueError):
    """The output holds the results of a run with other settings."""


def store_path(output: str | os.PathLike) -> Path:
    """The store beside ``output``: ``results.jsonl`` -> ``results.jsonl.sqlite``."""
    output = Path(output)
    return output.with_name(output.name + STORE_SUFFIX)


def weights_identity(weights: str | None) -> str | None:
    """What identifies a checkpoint: a local file by its content (``sha256:<hex>``: a renamed copy
    is the same weights, a retrained file at the same path is not), a hub id by its name."""
    if weights is None or not os.path.isfile(weights):
        return weights
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _key(text: str) -> bytes:
    return os.fsencode(text)  # exact bytes: a name that is not UTF-8 is still one distinct key


def _sqlite_error(store: Path, exc: sqlite3.Error, doing: str) -> OSError:
    """A SQLite failure as the one-line OSError the command line reports (exit 3). SQLite does not
    pass the errno on: a failed write (ENOSPC, EFBIG) is SQLITE_FULL or SQLITE_IOERR_WRITE."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or name.startswith("SQLITE_IOERR_WRITE") or name.startswith("SQLITE_IOERR_TRUNCATE"):
        why = f"{exc}: the disk is full, or a file size limit (ulimit -f) was reached"
    else:
        why = f"{exc}; {name}" if name else str(exc)
    return OSError(f"{store}: cannot {doing} ({why})")


class ResultStore:
    """The results of runs writing ``output`` (see the module docstring): ``done`` (source keys
    already there), :meth:`add` (one transaction), :meth:`export`, :meth:`close`.

    ``run``: the run's settings (:data:`IDENTITY` keys are compared with the store's; others,
    such as backend and batch size, are recorded). Opening takes the lock, checks the run,
    and removes temporary files a killed run left. Use as a context manager: closing writes the
    output a last time and releases the lock, also when the run failed or was interrupted."""

    def __init__(self, output: str | os.PathLike, run: dict[str, Any], *, overwrite: bool = False,
                 refresh_s: float = REFRESH_S):
        self.output = Path(output)
        self.path = store_path(self.output)
        self.run = {k: run.get(k) for k in IDENTITY} | {k: v for k, v in run.items() if k not in IDENTITY}
        self.refresh_s = refresh_s
        self._format = _FORMATS.get(self.output.suffix.lower())
        if self._format is None:
            raise ValueError(f"--output {os.fspath(output)!r}: results are written as {', '.join(_FORMATS)} "
                             "(segmentation masks go to --output-dir DIR)")
        if self._format is _write_parquet:
            _pyarrow()
        if self.output.is_dir():
            raise ValueError(f"--output {self.output}: is a directory; expected a results file")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = None
        self._exported_at = time.monotonic()
        self._export_cost = 0.0
        self._dirty = False
        fresh = not self.path.exists()
        if fresh and not overwrite and self.output.exists() and self.output.stat().st_size:
            raise RunMismatch(f"{self.output} exists, but its results store {self.path.name} does not (it was "
                              "written by se_multi 0.1, or the store was removed), so which run made it is "
                              "unknown: pass --overwrite to replace it, or choose another --output")
        self._created = fresh
        self._open(overwrite)
        try:
            self._check_run(overwrite)
            self._remove_stale_temporaries()
        except BaseException:
            self._release()
            raise
        self.done: set[str] = {os.fsdecode(k) for (k,) in self._db.execute("SELECT DISTINCT source FROM results")}

    # ------------------------------------------------------------------ opening
    def _open(self, overwrite: bool) -> None:
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            if "locked" in str(exc):
                raise OutputInUse(f"{self.output} is being written by another process (its store {self.path.name} "
                                  "is locked): wait for that run to end, or choose another --output") from None
            if not overwrite:
                raise ValueError(f"{self.path}: not a se_multi results store ({exc}); pass --overwrite to "
                                 "replace it and its output, or choose another --output") from None
            for extra in ("", "-wal", "-journal", "-shm"):  # a foreign or damaged file, replaced on request
                Path(f"{self.path}{extra}").unlink(missing_ok=True)
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        # timeout=0: a second writer is refused at once instead of waiting for a run of hours
        db = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            # exclusive locking mode: the first write takes the lock and keeps it until close (no
            # -shm file; another process cannot read or write meanwhile); WAL: a commit is one
            # append, recovered after a crash; FULL: each commit synced to disk
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE IF NOT EXISTS run (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS results (seq INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, "
                       "source BLOB NOT NULL, result TEXT NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS results_source ON results (source)")
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    def _check_run(self, overwrite: bool) -> None:
        stored = {name: json.loads(value) for name, value in self._db.execute("SELECT name, value FROM run")}
        if stored.get("schema") not in (None, _SCHEMA_VERSION):
            if not overwrite:
                raise RunMismatch(f"{self.path}: a results store of another se_multi format "
                                  f"({stored.get('schema')}); pass --overwrite to start over")
        mine = {k: self.run[k] for k in IDENTITY}
        has_rows = self._db.execute("SELECT EXISTS (SELECT 1 FROM results)").fetchone()[0]
        if stored and has_rows and not overwrite:
            theirs = stored.get("identity", {})
            differ = [k for k in IDENTITY if theirs.get(k) != mine[k]]
            if differ:
                shown = "; ".join(f"{k}: {_shown(theirs.get(k))} there, {_shown(mine[k])} here" for k in differ)
                raise RunMismatch(f"{self.output} holds the results of a run with other settings ({shown}): pass "
                                  "--overwrite to replace them, or choose another --output")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            if overwrite:
                self._db.execute("DELETE FROM results")
                self._dirty = True  # the old output goes too, even if this run adds nothing
            if overwrite or not has_rows:
                self._db.execute("DELETE FROM run")
                self._db.executemany("INSERT INTO run VALUES (?, ?)",
                                     [("schema", json.dumps(_SCHEMA_VERSION)), ("identity", json.dumps(mine))])
            self._db.execute("INSERT OR REPLACE INTO run VALUES ('last_run', ?)",
                             (json.dumps({k: v for k, v in self.run.items() if k not in IDENTITY}, default=str),))
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise _sqlite_error(self.path, exc, "record the run") from None
        except BaseException:
            self._rollback()
            raise

    def _remove_stale_temporaries(self) -> None:
        """Temporary outputs left by a run killed while writing (SIGKILL, power loss): only this
        output's and its masks', recognised by the exact names atomic_output gives them, and only
        under the lock, so no other run's file is touched."""
        out = self.output
        own = re.compile(rf"\.{re.escape(out.stem)}\.[a-z0-9_]{{8}}\.tmp{re.escape(out.suffix)}")
        folders = [(out.parent, own)]
        mask_dir = self.run.get("output_dir")
        if mask_dir and os.path.isdir(mask_dir):
            folders.append((Path(mask_dir), re.compile(r"\..*-[0-9a-f]{10}\.[a-z0-9_]{8}\.tmp\.png")))
        for folder, pattern in folders:
            for entry in os.scandir(folder):
                if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)

    # ------------------------------------------------------------------ writing
    def add(self, predictions: Iterable[Prediction]) -> None:
        """Commit ``predictions`` (whole source files) in one transaction, then rewrite the output
        if it is due (see ``refresh_s``)."""
        rows = [(_key(p.key or p.source), _key(p.origin or p.key or p.source), json_text(p.to_json()))
                for p in predictions]
        if not rows:
            return
        self._dirty = True  # set first: a signal right after COMMIT must still get the rows exported
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO results (key, source, result) VALUES (?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise _sqlite_error(self.path, exc, f"store a batch of {len(rows)} image(s); the "
                                f"{self.count()} stored before it are kept") from None
        except BaseException:  # a signal between BEGIN and COMMIT: the batch is not half-kept
            self._rollback()
            raise
        self.done.update(os.fsdecode(source) for _, source, _ in rows)
        now = time.monotonic()
        if now - self._exported_at >= max(self.refresh_s, self._export_cost / REFRESH_SHARE):
            self.export()

    def count(self) -> int:
        """Images in the store."""
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def _chunks(self) -> Iterator[list[str]]:
        last = 0
        while True:
            rows = self._db.execute("SELECT seq, result FROM results WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (last, CHUNK_ROWS)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [text for _, text in rows]

    def export(self) -> None:
        """Write the output from the store, atomically: on any failure (a full disk, a signal) the
        previous output stays exactly as it was."""
        started = time.monotonic()
        try:
            with atomic_output(self.output, durable=True) as tmp:
                self._format(tmp, self._chunks(), self.run)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OSError(exc.errno, f"{self.output}: cannot write the results ({reason}); the file is left as it "
                          f"was, and the {self.count()} image(s) in {self.path.name} are written by the next run "
                          "with this --output") from None
        self._exported_at = time.monotonic()
        self._export_cost = self._exported_at - started
        self._dirty = False

    def close(self, export: bool = True) -> None:
        """Write the output a last time (when something changed, or it is missing) and release
        the lock; the lock is released even if the write fails."""
        if self._db is None:
            return
        if self._created and self.count() == 0:  # a run that stored nothing leaves nothing behind
            self._release()
            for extra in ("", "-wal", "-journal"):
                Path(f"{self.path}{extra}").unlink(missing_ok=True)
            return
        try:
            if export and (self._dirty or not self.output.exists() or self._view_differs()):
                self.export()
        finally:
            self._release()

    def _view_differs(self) -> bool:
        """Whether the output may not be the store's view (a run killed before writing it, or a
        file truncated or replaced since): cheap checks, then rewrite rather than trust it."""
        recorded = self._db.execute("SELECT value FROM run WHERE name = 'view'").fetchone()
        return recorded is None or json.loads(recorded[0]) != _stat(self.output)

    def _release(self) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        try:
            if self.output.exists():
                db.execute("INSERT OR REPLACE INTO run VALUES ('view', ?)", (json.dumps(_stat(self.output)),))
        except sqlite3.Error:
            pass  # only a hint for the next run, which then rewrites the view
        finally:
            db.close()  # checkpoints the WAL into the database and removes it

    def _rollback(self) -> None:
        if self._db is not None and self._db.in_transaction:  # SQLite may have rolled back itself (SQLITE_FULL)
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # nothing left to undo

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stat(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _shown(value) -> str:
    return "none" if value is None else str(value)


# ------------------------------------------------------------------------------ views
def _write_jsonl(tmp: Path, chunks: Iterator[list[str]], run: dict) -> None:
    with open(tmp, "w", encoding="utf-8") as f:
        for chunk in chunks:
            f.writelines(text + "\n" for text in chunk)


def _write_csv(tmp: Path, chunks: Iterator[list[str]], run: dict) -> None:
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        writer.writeheader()
        for chunk in chunks:
            writer.writerows(row for text in chunk for row in Prediction.from_json(json.loads(text)).to_rows())


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("--output .parquet needs pyarrow: pip install pyarrow") from None
    return pa, pq


def _write_parquet(tmp: Path, chunks: Iterator[list[str]], run: dict) -> None:
    pa, pq = _pyarrow()
    schema = pa.schema([("image", pa.string()), ("rank", pa.int32()), ("class", pa.int32()), ("label", pa.string()),
                        ("prob", pa.float64()), ("fraction", pa.float64()), ("mask", pa.string()),
                        ("error", pa.string())],
                       metadata={"se_multi.run": json_text({k: run.get(k) for k in IDENTITY})})
    with pq.ParquetWriter(tmp, schema) as writer:
        wrote = False
        for chunk in chunks:
            rows = [row for text in chunk for row in Prediction.from_json(json.loads(text)).to_rows()]
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            wrote = True
        if not wrote:
            writer.write_table(schema.empty_table())


_FORMATS = {".jsonl": _write_jsonl, ".csv": _write_csv, ".parquet": _write_parquet}
#: the output formats (by extension)
FORMATS = tuple(_FORMATS)


def read_results(path: str | os.PathLike) -> list[dict]:
    """The rows of a results file (JSONL: one dict per image; CSV/Parquet: one per row)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if path.suffix == ".csv":
        return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    _, pq = _pyarrow()
    return pq.read_table(path).to_pylist()
