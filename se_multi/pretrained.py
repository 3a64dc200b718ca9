"""Pretrained configs: how each checkpoint expects its images, as its publisher evaluates it.

A *tag* names one set of trained weights (timm's ``model.pretrained_tag`` naming:
``seresnet50.a1_in1k``). Its :class:`PretrainedCfg` holds what the eval transform
needs (input size, resize filter, ``crop_pct``, normalisation) plus the class count
and where the weights live. The values are copied from timm 1.0.31's ``default_cfgs``
(``timm/models/resnet.py``, ``senet.py``, ``mobilenetv3.py``, ``efficientnet.py``):
``_cfg`` / ``_tcfg`` / ``_ttcfg`` / ``_rcfg`` / ``_r3cfg`` plus each tag's overrides.
timm resolves the eval transform from ``input_size`` and ``crop_pct`` (not the
``test_*`` sizes, which need ``use_test_size=True``), and so does se_multi.

Tags that timm does not publish:

- ``*.tv_in1k`` for MobileNetV3: torchvision's ``MobileNet_V3_*_Weights.IMAGENET1K_V1``
  eval transform (resize 256 bilinear, crop 224, ImageNet mean/std) for torchvision
  checkpoints loaded into se_multi's MobileNetV3.
- ``*.untrained``: models with no published ImageNet weights (timm's own ``untrained``
  configs for SE-ResNet-18/34/50-T/101/152/200-D/269-D; the SE-overhead twins
  ``legacy_*_plain`` get their SE model's ``_cfg``; the paper's SE-MobileNet, which timm lacks, gets
  timm's MobileNetV1 defaults; the scSE U-Net gets segmentation_models_pytorch's
  ``se_resnet50`` encoder normalisation with a 224 input, divisible by 32 as the U-Net needs).

``hub_id`` is ``timm/<tag>`` where timm names the Hugging Face hub as the weights'
source (``hf_hub_id='timm/'``); the legacy (Caffe/Cadene) models have only the GitHub
release ``url`` in timm 1.0.31, and torchvision/untrained tags have no hub id.

ImageNet-1k labels (``se_multi/data/imagenet_labels.txt``, one per line in class-index
order) are the WordNet lemmas of the 1000 ILSVRC-2012 synsets, copied from timm 1.0.31
(``timm/data/_info/imagenet_synsets.txt`` mapped through ``imagenet_synset_to_lemma.txt``;
timm is Apache-2.0). timm is not a dependency: the file is data only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

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


_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download"


def _timm(tag: str, **kw) -> PretrainedCfg:
    """A tag timm publishes on the Hugging Face hub (``hf_hub_id='timm/'``)."""
    return PretrainedCfg(tag, hub_id=f"timm/{tag}", license=kw.pop("license", "apache-2.0"), **kw)


# timm's cfg helpers, as keyword sets (timm/models/resnet.py):
_TT = dict(interpolation="bicubic")                                  # _ttcfg / _tcfg / _gcfg
_R = dict(interpolation="bicubic", crop_pct=0.95)                    # _rcfg
_R3 = dict(interpolation="bicubic", crop_pct=0.95, input_size=(3, 160, 160))  # _r3cfg
_INCEPTION = dict(mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD)

_LEGACY_URL = f"{_RELEASES}/v0.1-weights"  # timm's re-hosted SENet release weights (senet.py)


def _legacy(tag: str, url: str, **kw) -> PretrainedCfg:
    """A ``legacy_*`` tag (senet.py: ``_cfg``, bilinear 0.875, ImageNet mean/std): only a release url."""
    return PretrainedCfg(tag, url=url, license="apache-2.0", **kw)


_CFGS: tuple[PretrainedCfg, ...] = (
    # SE-ResNet, timm layout (resnet.py); a1/a2 use _rcfg, a3 _r3cfg, each with crop_pct=0.95
    _timm("seresnet50.a1_in1k", **_R),
    _timm("seresnet50.a2_in1k", **_R),
    _timm("seresnet50.a3_in1k", **_R3),
    _timm("seresnet50.ra2_in1k", **_TT),
    PretrainedCfg("seresnet18.untrained", **_TT),
    PretrainedCfg("seresnet34.untrained", **_TT),
    PretrainedCfg("seresnet50t.untrained", **_TT),
    PretrainedCfg("seresnet101.untrained", **_TT),
    PretrainedCfg("seresnet152.untrained", **_TT),
    # ResNet-D models: _ttcfg with a 256 input (seresnet152d.ra2_in1k also crop_pct=0.95)
    _timm("seresnet152d.ra2_in1k", interpolation="bicubic", input_size=(3, 256, 256), crop_pct=0.95),
    PretrainedCfg("seresnet200d.untrained", interpolation="bicubic", input_size=(3, 256, 256)),
    PretrainedCfg("seresnet269d.untrained", interpolation="bicubic", input_size=(3, 256, 256)),
    # SE-ResNeXt, timm layout: _ttcfg (bt, racm), _rcfg (ah), _gcfg (gluon: bicubic 0.875)
    _timm("seresnext26d_32x4d.bt_in1k", **_TT),
    _timm("seresnext26t_32x4d.bt_in1k", **_TT),
    _timm("seresnext50_32x4d.racm_in1k", **_TT),
    _timm("seresnext50_32x4d.gluon_in1k", **_TT),
    _timm("seresnext101_32x4d.gluon_in1k", **_TT),
    PretrainedCfg("seresnext101_32x4d.untrained", **_TT),
    _timm("seresnext101_32x8d.ah_in1k", **_R),
    _timm("seresnext101d_32x8d.ah_in1k", **_R),
    _timm("seresnext101_64x4d.gluon_in1k", **_TT),
    _timm("senet154.gluon_in1k", **_TT),
    # the ResNet-50 baseline
    _timm("resnet50.a1_in1k", **_R),
    _timm("resnet50.tv_in1k", license="bsd-3-clause"),  # torchvision's weights: plain _cfg (bilinear 0.875)
    # SE-ResNet/ResNeXt and SENet-154, original Caffe/Cadene layout (senet.py: _cfg, bilinear 0.875,
    # no hub id in timm; the Cadene se_resnet* urls, the others timm's re-hosted release weights)
    _legacy("legacy_senet154.in1k", f"{_LEGACY_URL}/legacy_senet154-e9eb9fe6.pth"),
    _legacy("legacy_seresnet18.in1k", f"{_LEGACY_URL}/seresnet18-4bb0ce65.pth", interpolation="bicubic"),
    _legacy("legacy_seresnet34.in1k", f"{_LEGACY_URL}/seresnet34-a4004e63.pth"),
    _legacy("legacy_seresnet50.in1k", f"{_RELEASES}/v0.1-cadene/se_resnet50-ce0d4300.pth"),
    _legacy("legacy_seresnet101.in1k", f"{_RELEASES}/v0.1-cadene/se_resnet101-7e38fcc6.pth"),
    _legacy("legacy_seresnet152.in1k", f"{_RELEASES}/v0.1-cadene/se_resnet152-d17c99b7.pth"),
    _legacy("legacy_seresnext26_32x4d.in1k", f"{_LEGACY_URL}/seresnext26_32x4d-65ebdb501.pth",
            interpolation="bicubic"),
    _legacy("legacy_seresnext50_32x4d.in1k", f"{_LEGACY_URL}/legacy_se_resnext50_32x4d-f3651bad.pth"),
    _legacy("legacy_seresnext101_32x4d.in1k", f"{_LEGACY_URL}/legacy_se_resnext101_32x4d-37725eac.pth"),
    # the SE-overhead twins (se_multi's, no weights anywhere): their SE model's eval transform
    PretrainedCfg("legacy_seresnext101_32x4d_plain.untrained"),
    PretrainedCfg("legacy_senet154_plain.untrained"),
    # MobileNetV1 (efficientnet.py: _cfg is bicubic 0.875; this tag uses Inception mean/std)
    _timm("mobilenetv1_100.ra4_e3600_r224_in1k", interpolation="bicubic", **_INCEPTION),
    PretrainedCfg("se_mobilenetv1_100.untrained", interpolation="bicubic"),
    # MobileNetV3 (mobilenetv3.py: _cfg is bilinear 0.875; these tags override to bicubic)
    _timm("mobilenetv3_large_100.ra_in1k", interpolation="bicubic"),
    _timm("mobilenetv3_large_100.ra4_e3600_r224_in1k", interpolation="bicubic", crop_pct=0.95, **_INCEPTION),
    _timm("mobilenetv3_small_100.lamb_in1k", interpolation="bicubic"),
    # torchvision MobileNet_V3_{Large,Small}_Weights.IMAGENET1K_V1: resize 256, crop 224, bilinear
    PretrainedCfg("mobilenetv3_large_100.tv_in1k", license="bsd-3-clause",
                  url="https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth"),
    PretrainedCfg("mobilenetv3_small_100.tv_in1k", license="bsd-3-clause",
                  url="https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth"),
    # smp Unet(se_resnet50): encoder 'imagenet' preprocessing (RGB, [0, 1], ImageNet mean/std);
    # crop_pct 1.0 resizes the shorter side to 224 and crops the square; 21 classes as the builder's default
    PretrainedCfg("unet_se_resnet50_scse.untrained", crop_pct=1.0, num_classes=21),
)

PRETRAINED_CFGS: dict[str, PretrainedCfg] = {c.tag: c for c in _CFGS}

#: model name -> the tag ``preprocess(image, model_name)`` and ``se-multi predict`` use
#: (timm's default: the first tag it lists for the model)
DEFAULT_TAGS: dict[str, str] = {
    "seresnet18": "seresnet18.untrained",
    "seresnet34": "seresnet34.untrained",
    "seresnet50": "seresnet50.a1_in1k",
    "seresnet50t": "seresnet50t.untrained",
    "seresnet101": "seresnet101.untrained",
    "seresnet152": "seresnet152.untrained",
    "seresnet152d": "seresnet152d.ra2_in1k",
    "seresnet200d": "seresnet200d.untrained",
    "seresnet269d": "seresnet269d.untrained",
    "seresnext26d_32x4d": "seresnext26d_32x4d.bt_in1k",
    "seresnext26t_32x4d": "seresnext26t_32x4d.bt_in1k",
    "seresnext50_32x4d": "seresnext50_32x4d.racm_in1k",
    "seresnext101_32x4d": "seresnext101_32x4d.gluon_in1k",  # timm lists a tag with weights first
    "seresnext101_32x8d": "seresnext101_32x8d.ah_in1k",
    "seresnext101d_32x8d": "seresnext101d_32x8d.ah_in1k",
    "seresnext101_64x4d": "seresnext101_64x4d.gluon_in1k",
    "senet154": "senet154.gluon_in1k",
    "resnet50": "resnet50.a1_in1k",
    "legacy_senet154": "legacy_senet154.in1k",
    "legacy_seresnet18": "legacy_seresnet18.in1k",
    "legacy_seresnet34": "legacy_seresnet34.in1k",
    "legacy_seresnet50": "legacy_seresnet50.in1k",
    "legacy_seresnet101": "legacy_seresnet101.in1k",
    "legacy_seresnet152": "legacy_seresnet152.in1k",
    "legacy_seresnext26_32x4d": "legacy_seresnext26_32x4d.in1k",
    "legacy_seresnext50_32x4d": "legacy_seresnext50_32x4d.in1k",
    "legacy_seresnext101_32x4d": "legacy_seresnext101_32x4d.in1k",
    "legacy_seresnext101_32x4d_plain": "legacy_seresnext101_32x4d_plain.untrained",
    "legacy_senet154_plain": "legacy_senet154_plain.untrained",
    "mobilenetv1_100": "mobilenetv1_100.ra4_e3600_r224_in1k",
    "se_mobilenetv1_100": "se_mobilenetv1_100.untrained",
    "mobilenetv3_large_100": "mobilenetv3_large_100.ra_in1k",
    "mobilenetv3_small_100": "mobilenetv3_small_100.lamb_in1k",
    "unet_se_resnet50_scse": "unet_se_resnet50_scse.untrained",
}


def list_pretrained(model_name: str | None = None) -> list[str]:
    """Known tags, all or for one model."""
    return sorted(t for t, c in PRETRAINED_CFGS.items() if model_name is None or c.model_name == model_name)


def default_tag(model_name: str) -> str:
    """The tag whose preprocessing ``model_name`` uses when no tag is given."""
    if model_name in DEFAULT_TAGS:
        return DEFAULT_TAGS[model_name]
    raise ValueError(f"no pretrained config for model {model_name!r}; models with one: "
                     f"{', '.join(sorted(DEFAULT_TAGS))} (or pass a tag: {', '.join(list_pretrained())})")


def get_config(tag_or_model: "str | PretrainedCfg") -> PretrainedCfg:
    """A tag (``seresnet50.a1_in1k``), a model name (its default tag) or a config -> the config."""
    if isinstance(tag_or_model, PretrainedCfg):
        return tag_or_model
    if not isinstance(tag_or_model, str):
        raise TypeError(f"expected a pretrained tag or model name (str); got {type(tag_or_model).__name__}")
    name = tag_or_model.removeprefix("hf-hub:").removeprefix("timm/")  # accept a hub id as well
    if name in PRETRAINED_CFGS:
        return PRETRAINED_CFGS[name]
    if "." not in name and name in DEFAULT_TAGS:
        return PRETRAINED_CFGS[DEFAULT_TAGS[name]]
    raise ValueError(f"unknown pretrained config {tag_or_model!r}; known tags: {', '.join(list_pretrained())}; "
                     f"or a model name: {', '.join(sorted(DEFAULT_TAGS))}")


def tag_from_weights(weights: str | None) -> str | None:
    """The tag a hub id or downloaded file names (``timm/seresnet50.a2_in1k``), if known."""
    if not weights:
        return None
    m = re.fullmatch(r"(?:hf-hub:)?(?:timm/)?([\w\-]+\.[\w\-]+)", str(weights))
    return m.group(1) if m and m.group(1) in PRETRAINED_CFGS else None


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order (WordNet lemmas, e.g. ``tench, Tinca tinca``)."""
    text = resources.files("se_multi").joinpath("data/imagenet_labels.txt").read_text(encoding="utf-8")
    labels = tuple(line for line in text.splitlines() if line)
    if len(labels) != 1000:  # a damaged install would otherwise shift every label
        raise RuntimeError(f"se_multi/data/imagenet_labels.txt: expected 1000 labels, found {len(labels)}")
    return labels
