"""Pretrained configs: how each checkpoint expects its images, as its publisher evaluates it.

A *tag* names one set of trained weights (timm's ``model.pretrained_tag`` naming:
``seresnet50.a1_in1k``). Its :class:`PretrainedCfg` holds what the eval transform
needs (input size, resize filter, ``crop_pct``, normalisation) plus the class count
and where the weights live. timm resolves the eval transform from ``input_size`` and
``crop_pct`` (not the ``test_*`` sizes, which need ``use_test_size=True``), and so does se_multi.

Each model family declares its models' tags in its own module and registers them with the
model (``register_model(..., pretrained=(cfg, ...))``, :mod:`se_multi.models.registry`); the
first tag a model lists is its default (timm's rule), unless it names another. This module holds
the config class, the normalisation constants the families share, :func:`timm_cfg` and the
lookups (:func:`get_config`, :func:`default_tag`, :func:`list_pretrained`, :func:`tag_from_weights`),
which read the registry.

``hub_id`` is ``timm/<tag>`` where timm names the Hugging Face hub as the weights'
source (``hf_hub_id='timm/'``); tags timm does not put there have only a ``url`` or nothing.

ImageNet-1k labels (``se_multi/data/imagenet_labels.txt``, one per line in class-index
order) are the WordNet lemmas of the 1000 ILSVRC-2012 synsets, copied from timm 1.0.31
(``timm/data/_info/imagenet_synsets.txt`` mapped through ``imagenet_synset_to_lemma.txt``;
timm is Apache-2.0). timm is not a dependency: the file is data only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from se_multi.models import registry

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
IMAGENET_INCEPTION_MEAN = (0.5, 0.5, 0.5)
IMAGENET_INCEPTION_STD = (0.5, 0.5, 0.5)

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
CROP_MODES = ("center",)


@dataclass(frozen=True)
class PretrainedCfg:
    """One tag's eval preprocessing and weights source."""

    tag: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    mean: tuple[float, float, float] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, float, float] = IMAGENET_DEFAULT_STD
    num_classes: int = 1000
    hub_id: str | None = None
    url: str | None = None
    license: str | None = None
    #: channel order the checkpoint expects ("RGB", or "BGR" for Caffe conversions such as Cadene's
    #: BN-Inception) and the pixel range before normalisation ((0, 1), or (0, 255): Caffe's raw
    #: pixels, then mean 104/117/128 and std 1), as pretrainedmodels' ``input_space``/``input_range``
    input_space: str = "RGB"
    input_range: tuple[float, float] = (0.0, 1.0)

    @property
    def model_name(self) -> str:
        return self.tag.split(".", 1)[0]

    @property
    def resize_size(self) -> int:
        """The shorter side before the crop: timm's ``floor(img_size / crop_pct)``."""
        return math.floor(self.input_size[-1] / self.crop_pct)

    def data_config(self) -> dict:
        """The fields timm's ``resolve_data_config`` returns, for comparison and display."""
        return {"input_size": list(self.input_size), "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std), "crop_pct": self.crop_pct,
                "crop_mode": self.crop_mode}


def timm_cfg(tag: str, **kw) -> PretrainedCfg:
    """A tag timm publishes on the Hugging Face hub (``hf_hub_id='timm/'``): hub id ``timm/<tag>``,
    Apache-2.0 unless ``license`` says otherwise."""
    return PretrainedCfg(tag, hub_id=f"timm/{tag}", license=kw.pop("license", "apache-2.0"), **kw)


class _Registered(Mapping):
    """A read-only view of what the families registered (read when looked at, so that it holds
    every family's configs, whichever was imported first)."""

    def __init__(self, read):
        self._read = read

    def __getitem__(self, key):
        return self._read()[key]

    def __iter__(self):
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def __repr__(self) -> str:
        return repr(self._read())


#: tag -> :class:`PretrainedCfg`, every tag a family registered
PRETRAINED_CFGS: Mapping[str, PretrainedCfg] = _Registered(registry.pretrained_cfgs)
#: model name -> the tag ``preprocess(image, model_name)`` and ``se-multi predict`` use
#: (timm's default: the first tag it lists for the model)
DEFAULT_TAGS: Mapping[str, str] = _Registered(registry.default_tags)


def list_pretrained(model_name: str | None = None) -> list[str]:
    """Known tags, all or for one model."""
    return sorted(t for t, c in registry.pretrained_cfgs().items() if model_name is None or c.model_name == model_name)


def default_tag(model_name: str) -> str:
    """The tag whose preprocessing ``model_name`` uses when no tag is given."""
    tags = registry.default_tags()
    if model_name in tags:
        return tags[model_name]
    raise ValueError(f"no pretrained config for model {model_name!r}; models with one: "
                     f"{', '.join(sorted(tags))} (or pass a tag: {', '.join(list_pretrained())})")


def get_config(tag_or_model: "str | PretrainedCfg") -> PretrainedCfg:
    """A tag (``seresnet50.a1_in1k``), a model name (its default tag) or a config -> the config."""
    if isinstance(tag_or_model, PretrainedCfg):
        return tag_or_model
    if not isinstance(tag_or_model, str):
        raise TypeError(f"expected a pretrained tag or model name (str); got {type(tag_or_model).__name__}")
    cfgs, tags = registry.pretrained_cfgs(), registry.default_tags()
    name = tag_or_model.removeprefix("hf-hub:").removeprefix("timm/")  # accept a hub id as well
    if name in cfgs:
        return cfgs[name]
    if "." not in name and name in tags:
        return cfgs[tags[name]]
    raise ValueError(f"unknown pretrained config {tag_or_model!r}; known tags: {', '.join(sorted(cfgs))}; "
                     f"or a model name: {', '.join(sorted(tags))}")


def tag_from_weights(weights: str | None) -> str | None:
    """The tag a hub id or downloaded file names (``timm/seresnet50.a2_in1k``), if known."""
    if not weights:
        return None
    m = re.fullmatch(r"(?:hf-hub:)?(?:timm/)?([\w\-]+\.[\w\-]+)", str(weights))
    return m.group(1) if m and m.group(1) in registry.pretrained_cfgs() else None


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order (WordNet lemmas, e.g. ``tench, Tinca tinca``)."""
    text = resources.files("se_multi").joinpath("data/imagenet_labels.txt").read_text(encoding="utf-8")
    labels = tuple(line for line in text.splitlines() if line)
    if len(labels) != 1000:  # a damaged install would otherwise shift every label
        raise RuntimeError(f"se_multi/data/imagenet_labels.txt: expected 1000 labels, found {len(labels)}")
    return labels
