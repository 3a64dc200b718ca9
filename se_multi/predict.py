"""Classifying images (top-k ImageNet labels) or segmenting them (class-map PNG), one image or a
hundred thousand; ``se-multi predict`` (:mod:`se_multi.cli.predict`) is its command line and
:func:`predict_batch` its Python form.

Sources (:func:`expand_sources`): image files, folders (recursive, by extension), globs
(``photos/**/*.jpg``) and ``@list.txt`` (one source per line, relative to the list file's
folder; blank lines and ``#`` comments ignored; a list that includes itself is an error). An
``.npy`` source is an already-preprocessed NCHW float array given to the model as is (the
model's input checks apply); one holding several images gives ``name[i]`` for each.

Identity: a source is its resolved real path (:func:`source_key`), so ``imgs/a.jpg``,
``./imgs/a.jpg``, an absolute spelling and a symlink to it are one image, run once; an image of
an ``.npy`` batch is ``<real path>[i]`` (:func:`unit_key`). Results keep the name as given (a
name that is not UTF-8 is shown with each undecodable byte as ``\\xNN``: :func:`printable`).

Each image is preprocessed with the pretrained config of the weights (``pretrained_cfg``, else
the tag a hub id names, else the model's default tag; see :mod:`se_multi.pretrained`), batched
``batch_size`` at a time, run, and reported per image as a :class:`Prediction`:

- classifier (output N x K): softmax, top-k classes with probabilities; ImageNet labels
  when K is 1000, ``class <k>`` otherwise;
- segmentation model (output N x K x H x W): the class map, argmax over K (K = 1: the
  binary map ``logit > 0``), sized like the network input; with ``output_dir`` it is written
  there as a palette PNG whose pixel values are the class ids, named from the image's identity
  (:func:`mask_file`: one file per image, the same in every run). The
  report lists the classes by the fraction of pixels they cover;
- an image that cannot be read or run: a :class:`Prediction` with ``error`` (its path and the
  reason); the run goes on.

Pipeline: a small thread pool decodes and preprocesses the next images while the model runs
the current batch (Pillow and NumPy release the GIL), at most ``batch_size * (prefetch + 1)``
images ahead, so memory stays bounded however many images there are. Results are yielded in
input order, as each batch completes.

Without weights the model gets the deterministic seeded weights (offline demo); the
predictions are then meaningless, which the command line says on stderr.
"""

from __future__ import annotations

import collections
import glob
import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from se_multi.cpu import usable_cores
from se_multi.files import atomic_output
from se_multi.preprocess import ImageError, decode_image, preprocess, transform
from se_multi.pretrained import PretrainedCfg, get_config, imagenet_labels, tag_from_weights

#: file extensions a folder or glob contributes (case-insensitive)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
INPUT_EXTENSIONS = (*IMAGE_EXTENSIONS, ".npy")
#: batches decoded ahead of the model
PREFETCH_BATCHES = 2
#: columns of the tabular outputs (CSV, Parquet): one row per (image, rank), or one error row
ROW_FIELDS = ("image", "rank", "class", "label", "prob", "fraction", "mask", "error")


@dataclass
class Prediction:
    """One image's result. ``topk``: ``[(class, label, probability)]`` (classifier) or
    ``[(class, label, pixel fraction)]`` (segmentation, with ``class_map``); or ``error``."""

    source: str
    topk: list[tuple[int, str, float]] = field(default_factory=list)
    class_map: np.ndarray | None = None
    mask_path: str | None = None
    error: str | None = None
    segmentation: bool = False
    #: the exception behind ``error`` (not serialised): what :func:`predict` re-raises
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    #: the image's identity (:func:`unit_key`) and its source file's (:func:`source_key`); what a
    #: results store keys rows by (not serialised: the name is ``source``)
    key: str | None = field(default=None, compare=False)
    origin: str | None = field(default=None, compare=False)

    @property
    def is_segmentation(self) -> bool:
        return self.segmentation or self.class_map is not None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict:
        """``{"image", "topk": [{"rank", "class", "label", "prob"|"fraction"}]}`` (segmentation
        adds ``mask`` and ``mask_size``), or ``{"image", "error"}``."""
        if self.error is not None:
            return {"image": printable(self.source), "error": self.error}
        key = "fraction" if self.is_segmentation else "prob"
        out: dict[str, Any] = {"image": printable(self.source),
                               "topk": [{"rank": r + 1, "class": k, "label": lab, key: p}
                                        for r, (k, lab, p) in enumerate(self.topk)]}
        if self.is_segmentation:
            out["mask"] = self.mask_path
            if self.class_map is not None:
                out["mask_size"] = list(self.class_map.shape)
        return out

    def to_rows(self) -> list[dict]:
        """The tabular form (:data:`ROW_FIELDS`): one row per rank, or one error row."""
        empty = dict.fromkeys(ROW_FIELDS)
        if self.error is not None:
            return [{**empty, "image": printable(self.source), "error": self.error}]
        key = "fraction" if self.is_segmentation else "prob"
        return [{**empty, "image": printable(self.source), "rank": r + 1, "class": k, "label": lab, key: p,
                 "mask": self.mask_path} for r, (k, lab, p) in enumerate(self.topk)]

    @classmethod
    def from_json(cls, obj: dict) -> "Prediction":
        if "error" in obj:
            return cls(obj["image"], error=obj["error"])
        topk = obj["topk"]
        segmentation = bool(topk) and "fraction" in topk[0] or "mask" in obj
        key = "fraction" if segmentation else "prob"
        return cls(obj["image"], [(t["class"], t["label"], t[key]) for t in topk], mask_path=obj.get("mask"),
                   segmentation=segmentation)


# ------------------------------------------------------------------------------ maths
def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def class_labels(num_classes: int) -> list[str]:
    return list(imagenet_labels()) if num_classes == 1000 else [f"class {k}" for k in range(num_classes)]


def top_classes(probs: np.ndarray, k: int, labels: Sequence[str]) -> list[tuple[int, str, float]]:
    """The ``k`` largest entries of a 1-D vector, largest first (ties: lower index first)."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), labels[i], float(probs[i])) for i in order]


def class_map(output: np.ndarray) -> np.ndarray:
    """(K, H, W) segmentation logits -> (H, W) class ids; one channel is a binary map (logit > 0)."""
    if output.shape[0] == 1:
        return (output[0] > 0).astype(np.int64)
    return np.argmax(output, axis=0)


def write_mask(path: str | os.PathLike, classes: np.ndarray) -> None:
    """A class map as a PNG whose pixel values are the class ids (a palette PNG for up to 256
    classes, so viewers show colours and ``np.array(Image.open(path))`` gives the ids back;
    16-bit grayscale beyond that)."""
    from PIL import Image

    if classes.max(initial=0) < 256:
        img = Image.fromarray(classes.astype(np.uint8), mode="P")
        rng = np.random.Generator(np.random.PCG64(0))  # fixed, well-spread colours; class 0 black
        palette = rng.integers(64, 256, size=(256, 3), dtype=np.uint8)
        palette[0] = 0
        img.putpalette(palette.reshape(-1).tolist())
    else:
        img = Image.fromarray(classes.astype(np.uint16))
    with atomic_output(path) as tmp:
        img.save(tmp, format="PNG")


def interpret(source: str, y: np.ndarray, topk: int) -> Prediction:
    """One image's model output -> its :class:`Prediction` (top-k classes, or the class map)."""
    if not np.isfinite(y).all():  # e.g. a float16 overflow inside the network
        return Prediction(source, error="the model's output holds NaN or Inf (float16 overflow? try float32)")
    if y.ndim == 1:
        labels = class_labels(y.shape[0])
        return Prediction(source, top_classes(softmax(y), topk, labels))
    if y.ndim == 3:
        classes = class_map(y)
        num_classes = max(y.shape[0], 2)
        fractions = np.bincount(classes.reshape(-1), minlength=num_classes) / classes.size
        present = [c for c in top_classes(fractions, num_classes, class_labels(num_classes)) if c[2] > 0]
        return Prediction(source, present[:topk], class_map=classes, segmentation=True)
    raise RuntimeError(f"model output per image has shape {y.shape}; expected (K,) logits or (K, H, W) segmentation")


# ------------------------------------------------------------------------------ sources
def _is_input(path: str) -> bool:
    return path.lower().endswith(INPUT_EXTENSIONS)


def printable(name: str) -> str:
    """``name`` as valid UTF-8 text: a file name whose bytes are not UTF-8 (Python holds them as
    surrogate escapes) shows each undecodable byte as ``\\xNN``, so JSON, CSV and Parquet can hold
    it; other names are returned unchanged."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def source_key(path: str | os.PathLike) -> str:
    """A source file's identity: its resolved real path (relative spellings, ``./``, trailing
    slashes and symlinks all resolve to one key; a missing file keys by where it would be)."""
    return os.path.realpath(os.fsdecode(path))


def unit_key(origin: str, index: int | None = None) -> str:
    """An image's identity: its source's key, or ``<key>[i]`` for image ``i`` of an ``.npy`` batch."""
    return origin if index is None else f"{origin}[{index}]"


def mask_file(key: str) -> str:
    """The class-map PNG name of the image keyed ``key``: ``<stem>[_<i>]-<10 hex>.png``, the hash of
    the key, so two images never share a mask and an image's mask is named the same in every run,
    whatever else the run holds or skips."""
    m = re.fullmatch(r"(.*)\[(\d+)\]", key)
    origin, index = (m.group(1), f"_{m.group(2)}") if m and m.group(1).lower().endswith(".npy") else (key, "")
    digest = hashlib.sha1(os.fsencode(key)).hexdigest()[:10]
    return f"{printable(Path(origin).stem)}{index}-{digest}.png"


def expand_sources(sources: Iterable[str | os.PathLike] | str | bytes | os.PathLike) -> list[str]:
    """Files (existing or not: a missing one becomes an error result), folders (recursive,
    sorted), globs and ``@list.txt`` -> the image paths, in order, each file once (by
    :func:`source_key`: the first spelling is kept). A folder, glob or list that yields nothing is
    an error (it is almost always a typo), and so is a list that includes itself."""
    if isinstance(sources, (str, bytes, os.PathLike)):
        sources = [sources]
    elif not isinstance(sources, Iterable):
        raise TypeError(f"sources must be a path or an iterable of paths; got {type(sources).__name__}")
    unique: dict[str, str] = {}
    for path in _expand(sources, ()):
        unique.setdefault(source_key(path), path)
    return list(unique.values())


def _expand(sources: Iterable, lists: tuple[str, ...]) -> Iterator[str]:
    for source in sources:
        if not isinstance(source, (str, bytes, os.PathLike)):
            raise TypeError(f"a source must be a path (str or os.PathLike); got {type(source).__name__}")
        text = os.fsdecode(source)
        if text.startswith("@"):
            yield from _listed(text[1:], lists)
        elif os.path.isdir(text):
            found = sorted(os.path.join(root, f) for root, _, files in os.walk(text) for f in files if _is_input(f))
            if not found:
                raise ValueError(f"{text}: no images in this folder (looked for {', '.join(INPUT_EXTENSIONS)})")
            yield from found
        elif glob.has_magic(text):
            # a `**` glob follows directory symlinks, so a symlink loop repeats files under ever
            # longer names until the OS's limit: expand_sources keeps each real file once
            found = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p) and _is_input(p))
            if not found:
                raise ValueError(f"no image files match {text!r}")
            yield from found
        else:
            yield text


def _listed(list_path: str, lists: tuple[str, ...]) -> Iterator[str]:
    key = source_key(list_path)
    if key in lists:
        chain = " -> ".join(f"@{p}" for p in (*lists[lists.index(key):], key))
        raise ValueError(f"@{list_path}: the list includes itself ({chain})")
    try:
        lines = Path(list_path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"@{list_path}: cannot read the list of images ({getattr(exc, 'strerror', None) or exc})") from None
    base = os.path.dirname(list_path)
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise ValueError(f"@{list_path}: the list is empty")
    yield from _expand((_relative_to(base, e) for e in entries), (*lists, key))


def _relative_to(base: str, entry: str) -> str:
    """A list entry (a path, or ``@`` and a list's path) relative to the listing file's folder."""
    at, path = ("@", entry[1:]) if entry.startswith("@") else ("", entry)
    return at + (path if os.path.isabs(path) else os.path.join(base, path))


# ------------------------------------------------------------------------------ inputs
def load_input(path: str, cfg: PretrainedCfg) -> list[tuple[str, np.ndarray]]:
    """``[(path, NCHW array)]`` for one source file: an image (one 1x3xHxW array), or an ``.npy``
    array (:class:`Runner` names its images ``path[i]`` when it holds several)."""
    if path.lower().endswith(".npy"):
        if not os.path.exists(path):
            raise ImageError(f"input not found: {path}")
        return [(path, decode_input(path, path, cfg))]
    return [(path, preprocess(path, cfg))]


def decode_input(source, name: str, cfg: PretrainedCfg) -> np.ndarray:
    """The NCHW array of ``source`` (a path or a binary file object, such as the bytes a Ray read
    task hands an actor) named ``name``: an ``.npy`` array as stored, or an image decoded and
    preprocessed with ``cfg``; a failure is an :class:`ImageError` naming ``name``."""
    if name.lower().endswith(".npy"):
        try:
            return np.load(source, allow_pickle=False)
        except Exception as exc:
            raise ImageError(f"{name}: cannot read as a NumPy .npy array ({type(exc).__name__}: {exc})") from None
    return transform(decode_image(source, name), cfg, name)[None]


def resolve_config(model_name: str, pretrained_cfg: str | PretrainedCfg | None = None,
                   weights: str | None = None) -> PretrainedCfg:
    """The preprocessing for a run: the tag given, else the tag a hub id names, else the model's default."""
    return get_config(pretrained_cfg or tag_from_weights(weights) or model_name)


# ------------------------------------------------------------------------------ running
def _error(source: str, exc: BaseException) -> Prediction:
    origin = source_key(source)
    return Prediction(source, error=" ".join(str(exc).split()) or type(exc).__name__, exception=exc,
                      key=origin, origin=origin)


def _positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


class Runner:
    """A model and its preprocessing, turning batches of arrays into predictions (the part a
    Ray actor holds too); masks go to ``output_dir``, named by :func:`mask_file`."""

    def __init__(self, model, cfg: PretrainedCfg, topk: int = 5, output_dir: str | None = None):
        self.model, self.cfg, self.topk = model, cfg, _positive_int("topk", topk)
        self.output_dir = output_dir

    def run(self, batch: list[tuple[str, np.ndarray]]) -> list[Prediction]:
        """Predictions for ``[(name, NCHW array)]``, one model call for the whole batch; a failed
        call fails each image of the batch, with the reason. Masks are written before the
        predictions are returned, so a stored row never names a mask that is not there."""
        if not batch:
            return []
        try:
            y = np.asarray(self.model.predict_numpy(np.concatenate([x for _, x in batch])), np.float64)
        except (ValueError, TypeError, OSError, MemoryError) as exc:
            return [_error(name, exc) for name, _ in batch]
        units = [(f"{name}[{i}]", unit_key(origin, i), origin) if len(x) > 1 else (name, origin, origin)
                 for name, x in batch for origin in (source_key(name),) for i in range(len(x))]
        results = []
        for (name, key, origin), out in zip(units, y):
            r = interpret(name, out, self.topk)
            r.key, r.origin = key, origin
            if r.class_map is not None and self.output_dir is not None:
                r.mask_path = os.path.join(self.output_dir, mask_file(key))
                write_mask(r.mask_path, r.class_map)
            results.append(r)
        return results


def model_calls(arrays: Iterable[tuple[str, np.ndarray]], batch_size: int | None = None
                ) -> Iterator[list[tuple[str, np.ndarray]]]:
    """``(name, NCHW array)`` pairs grouped into the batches one model call each takes, in order:
    consecutive single images of one shape, at most ``batch_size`` (None: no limit); an array
    holding several images (an ``.npy`` batch) or of another rank is a call of its own. A batch is
    yielded as soon as it is complete, before the next array is asked for."""
    batch: list[tuple[str, np.ndarray]] = []
    for name, x in arrays:
        shape = getattr(x, "shape", ())
        single = len(shape) == 4 and shape[0] == 1
        if batch and (not single or shape != batch[0][1].shape):
            yield batch
            batch = []
        batch.append((name, x))
        if not single or (batch_size is not None and len(batch) >= batch_size):
            yield batch
            batch = []
    if batch:
        yield batch


def iter_batches(paths: Sequence[str], cfg: PretrainedCfg, batch_size: int, threads: int | None = None,
                 prefetch: int = PREFETCH_BATCHES) -> Iterator[tuple[list[tuple[str, np.ndarray]], list[Prediction]]]:
    """``(batch, errors)`` in input order: the batches of :func:`model_calls`, decoded by a thread
    pool at most ``batch_size * (prefetch + 1)`` images ahead, each with the sources before it
    that could not be read (as error predictions)."""
    threads = threads or min(4, usable_cores())
    window = batch_size * (prefetch + 1)
    errors: list[Prediction] = []
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="se_multi-decode") as pool:
        queue: collections.deque = collections.deque()
        todo = iter(paths)

        def fill():
            while len(queue) < window:
                path = next(todo, None)
                if path is None:
                    return
                queue.append((path, pool.submit(load_input, path, cfg)))

        def decoded() -> Iterator[tuple[str, np.ndarray]]:
            fill()
            while queue:
                path, future = queue.popleft()
                fill()
                try:
                    units = future.result()
                except (ValueError, TypeError, OSError, MemoryError) as exc:
                    errors.append(_error(path, exc))
                    continue
                yield from units

        for batch in model_calls(decoded(), batch_size):
            yield batch, errors[:]
            errors.clear()
        if errors:
            yield [], errors


def predict_batch(sources, model: Any = "seresnet50", *, weights: str | None = None, backend: Any = "auto",
                  dtype: str = "float32", device: str | None = None, batch_size: int = 1, topk: int = 5,
                  pretrained_cfg: str | PretrainedCfg | None = None, seed: int = 0, output_dir: str | None = None,
                  threads: int | None = None, skip: Iterable[str] = ()) -> Iterator[Prediction]:
    """Predictions for every source (see the module docstring), yielded as each batch completes,
    in input order. ``model``: a name (built with ``weights``/``backend``/``dtype``/``device``) or
    a :class:`~se_multi.models.Model`. Sources in ``skip`` (already done; paths in any spelling,
    or :func:`source_key` keys) are left out."""
    for predictions in prediction_batches(sources, model, weights=weights, backend=backend, dtype=dtype,
                                          device=device, batch_size=batch_size, topk=topk,
                                          pretrained_cfg=pretrained_cfg, seed=seed, output_dir=output_dir,
                                          threads=threads, skip=skip):
        yield from predictions


def prediction_batches(sources, model: Any = "seresnet50", *, weights: str | None = None, backend: Any = "auto",
                       dtype: str = "float32", device: str | None = None, batch_size: int = 1, topk: int = 5,
                       pretrained_cfg: str | PretrainedCfg | None = None, seed: int = 0,
                       output_dir: str | None = None, threads: int | None = None,
                       skip: Iterable[str] = ()) -> Iterator[list[Prediction]]:
    """:func:`predict_batch` one list per model call (with the sources before it that could not
    be read): each list holds whole source files, the unit a results store commits at once."""
    from se_multi.models import Model, check_model_name, create_model

    _positive_int("batch_size", batch_size)
    _positive_int("topk", topk)
    paths = expand_sources(sources)
    done = {source_key(p) for p in skip}
    paths = [p for p in paths if source_key(p) not in done]
    name = model.name if isinstance(model, Model) else check_model_name(model)
    cfg = resolve_config(name, pretrained_cfg, weights)
    net = model if isinstance(model, Model) else create_model(name, weights=weights, backend=backend, dtype=dtype,
                                                               device=device, seed=seed)
    yield from run_batches(paths, Runner(net, cfg, topk, output_dir), batch_size, threads)


def run_batches(paths: Sequence[str], runner: Runner, batch_size: int = 1,
                threads: int | None = None) -> Iterator[list[Prediction]]:
    """The pipeline alone, for sources already expanded (:func:`expand_sources`) and a
    :class:`Runner` already built (what the command line resolved once): one list per model
    call, with the sources before it that could not be read."""
    for batch, errors in iter_batches(paths, runner.cfg, _positive_int("batch_size", batch_size), threads):
        yield errors + runner.run(batch)


def predict(images: Sequence[str] | str, model: str = "seresnet50", weights: str | None = None,
            pretrained_cfg: str | None = None, backend: Any = "auto", dtype: str = "float32",
            device: str | None = None, topk: int = 5, seed: int = 0) -> list[Prediction]:
    """Every prediction as a list (:func:`predict_batch` one image at a time); an image that
    cannot be read raises its error here (a script asking for one image wants the exception)."""
    results = list(predict_batch(images, model, weights=weights, backend=backend, dtype=dtype, device=device,
                                 topk=topk, pretrained_cfg=pretrained_cfg, seed=seed))
    for r in results:
        if r.error is not None:
            raise r.exception if r.exception is not None else ValueError(r.error)
    return results
