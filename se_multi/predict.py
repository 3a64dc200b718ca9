"""Classifying images (top-k ImageNet labels) or segmenting them (class-map PNG); ``se-multi predict``
(:mod:`se_multi.cli.predict`) is its command line.

Each image is preprocessed with the pretrained config of the weights (``--pretrained-cfg``,
else the tag a hub id names, else the model's default tag; see :mod:`se_multi.pretrained`),
run through the model, and reported per image:

- classifier (output N x K): softmax, top-k classes with probabilities; ImageNet labels
  when K is 1000, ``class <k>`` otherwise.
- segmentation model (output N x K x H x W): the class map, argmax over K (K = 1: the
  binary map ``logit > 0``), sized like the network input (``input_size`` of the config,
  after resize and centre crop, not the original image size). ``--output mask.png``
  writes it as a palette PNG whose pixel values are the class ids; with several
  images, ``{stem}`` / ``{index}`` in the name are filled in, otherwise ``_<index>`` is
  appended. The report lists the classes by the fraction of pixels they cover.

An ``.npy`` argument is taken as an already-preprocessed NCHW float array and given to the
model as is (the model's input checks apply: rank, channels, dtype, layout, NaN/Inf).

Without ``--weights`` the model gets the deterministic seeded weights (offline demo);
the predictions are then meaningless, which a one-line note on stderr says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from se_multi.files import atomic_output
from se_multi.pretrained import PretrainedCfg, get_config, imagenet_labels, tag_from_weights
from se_multi.preprocess import ImageError, preprocess


@dataclass
class Prediction:
    """One image's result. ``topk``: ``[(class, label, probability)]`` (classifier) or
    ``[(class, label, pixel fraction)]`` (segmentation, with ``class_map``)."""

    source: str
    topk: list[tuple[int, str, float]]
    class_map: np.ndarray | None = None
    mask_path: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def is_segmentation(self) -> bool:
        return self.class_map is not None

    def to_json(self) -> dict:
        key = "fraction" if self.is_segmentation else "prob"
        out: dict[str, Any] = {"image": self.source,
                               "topk": [{"rank": r + 1, "class": k, "label": lab, key: p}
                                        for r, (k, lab, p) in enumerate(self.topk)]}
        if self.is_segmentation:
            out["mask"] = self.mask_path
            out["mask_size"] = list(self.class_map.shape)
        return out


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


def write_mask(path: str, classes: np.ndarray) -> None:
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


def mask_paths(template: str, names: Sequence[str]) -> list[str]:
    """One output path per input: the template itself for one input, else ``{stem}``/``{index}``
    filled in, else ``_<index>`` appended to the stem."""
    if len(names) == 1 and "{" not in template:
        return [template]
    root, ext = os.path.splitext(template)
    out = []
    for i, name in enumerate(names):
        stem = os.path.splitext(os.path.basename(name))[0]
        if "{stem}" in template or "{index}" in template:
            out.append(template.format(stem=stem, index=i))
        else:
            out.append(f"{root}_{i}{ext}")
    if len(set(out)) != len(out):
        raise ValueError(f"--output {template!r} gives the same file for several images; use {{index}} in it")
    return out


# ------------------------------------------------------------------------------ inputs
def load_inputs(sources: Sequence[str], cfg: PretrainedCfg) -> list[tuple[str, np.ndarray]]:
    """``[(name, NCHW array)]``: images preprocessed with ``cfg``; ``.npy`` files as stored."""
    inputs = []
    for src in sources:
        if str(src).lower().endswith(".npy"):
            inputs.append((str(src), _load_npy(src)))
        else:
            inputs.append((str(src), preprocess(src, cfg)))
    return inputs


def _load_npy(path: str) -> np.ndarray:
    if not os.path.exists(path):
        raise ImageError(f"input not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ImageError(f"{path}: cannot read as a NumPy .npy array ({type(exc).__name__}: {exc})") from None


def resolve_config(model_name: str, pretrained_cfg: str | PretrainedCfg | None = None,
                   weights: str | None = None) -> PretrainedCfg:
    """The preprocessing for a run: the tag given, else the tag a hub id names, else the model's default."""
    return get_config(pretrained_cfg or tag_from_weights(weights) or model_name)


# ------------------------------------------------------------------------------ running
def predict_arrays(model, inputs: Sequence[tuple[str, np.ndarray]], topk: int = 5) -> list[Prediction]:
    """Run ``model`` on each NCHW array and turn the outputs into :class:`Prediction`s."""
    if topk < 1:
        raise ValueError(f"topk must be >= 1; got {topk}")
    results = []
    for name, x in inputs:
        y = np.asarray(model.predict_numpy(x), np.float64)
        if not np.isfinite(y).all():  # e.g. a float16 overflow inside the network
            raise ValueError(f"{name}: the model's output holds NaN or Inf ({model.name} on {model.ops!r}); "
                             "try float32")
        for i in range(y.shape[0]):
            source = name if y.shape[0] == 1 else f"{name}[{i}]"
            results.append(_interpret(source, y[i]))
    for r in results:
        r.topk = r.topk[:topk]
    return results


def _interpret(source: str, y: np.ndarray) -> Prediction:
    if y.ndim == 1:
        labels = class_labels(y.shape[0])
        return Prediction(source, top_classes(softmax(y), y.shape[0], labels))
    if y.ndim == 3:
        classes = class_map(y)
        num_classes = max(y.shape[0], 2)
        fractions = np.bincount(classes.reshape(-1), minlength=num_classes) / classes.size
        present = top_classes(fractions, num_classes, class_labels(num_classes))
        return Prediction(source, [c for c in present if c[2] > 0], class_map=classes)
    raise RuntimeError(f"model output per image has shape {y.shape}; expected (K,) logits or (K, H, W) segmentation")


def prepare(images: Sequence[str], model: str, weights: str | None = None, pretrained_cfg: str | None = None,
            backend: Any = "auto", dtype: str = "float32", device: str | None = None, seed: int = 0):
    """Check the names, load the inputs, then build the model (cheap failures first)
    -> ``(config, [(name, NCHW array)], Model)``."""
    from se_multi.models import create_model, list_models

    if model not in list_models():
        raise ValueError(f"unknown model {model!r}; known models: {', '.join(list_models())}")
    cfg = resolve_config(model, pretrained_cfg, weights)
    inputs = load_inputs(images, cfg)
    net = create_model(model, weights=weights, backend=backend, dtype=dtype, device=device, seed=seed)
    return cfg, inputs, net


def predict(images: Sequence[str] | str, model: str = "seresnet50", weights: str | None = None,
            pretrained_cfg: str | None = None, backend: Any = "auto", dtype: str = "float32",
            device: str | None = None, topk: int = 5, seed: int = 0) -> list[Prediction]:
    """Python form of ``se-multi predict``: image paths (or ``.npy`` NCHW arrays) -> predictions."""
    images = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    _, inputs, net = prepare(images, model, weights, pretrained_cfg, backend, dtype, device, seed)
    return predict_arrays(net, inputs, topk)
