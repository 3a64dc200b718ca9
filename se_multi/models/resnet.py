"""The ResNet family: SE-ResNet, SE-ResNeXt and SENet-154, one builder, one config table.

Every model is one row of :data:`ARCHS` (a :class:`ResNetArch`) built by :class:`ResNet`, as timm's
``ResNet`` builds its whole family from ``_create_resnet`` options:

- ``block``: ``"basic"`` (two 3x3 convs, ResNet-18/34) or ``"bottleneck"`` (1x1, 3x3, 1x1, x4);
- ``layers``: blocks per stage (4 stages of 64/128/256/512 planes);
- ``stem_type``: ``""`` (7x7/2 conv, 64 wide), ``"deep"`` (three 3x3 convs, ``stem_width``,
  ``stem_width``, ``2*stem_width``: the "c"/"d" stems and SENet-154's) or ``"deep_tiered"``
  (``3*(stem_width//4)``, ``stem_width``, ``2*stem_width``: the "t" stems);
- ``avg_down``: the projection shortcut of a strided block is a 2x2 average pool (stride 2,
  ``ceil_mode``, ``count_include_pad=False``) then a 1x1 conv + BN (the "d" shortcut);
- ``cardinality`` / ``base_width``: the 3x3 conv is grouped, ``width = floor(planes * base_width
  / 64) * cardinality`` (ResNeXt ``32x4d``: 32 groups of 4 channels in the first stage);
- ``reduce_first``: the first 1x1 conv has ``width // reduce_first`` channels (SENet-154: 2);
- ``down_kernel_size``: the strided projection conv's kernel (SENet-154: 3x3, padding 1);
- ``stride_in_1x1``: the Caffe ResNet bottleneck strides in its first 1x1 conv (timm and the
  Caffe ResNeXts stride in the 3x3 conv);
- ``se``: SE in every block (the SENet-paper ablations below then apply), or a plain ResNet.

Layouts (each model's *native* layout is its peer's ``state_dict`` key for key):

- ``timm`` (timm's ``resnet.py``: ``resnet50``, ``seresnet*``, ``seresnext*``, ``senet154``): stem
  ``conv1``/``bn1``, or a deep stem ``conv1.0/.1/.3/.4/.6`` + ``bn1``; max-pool 3x3 s2 pad 1; SE is
  ``layerX.Y.se.fc1/fc2`` (1x1 convs with bias) with ``C_r = make_divisible(C / r, 8, round_limit=0)``;
  shortcut ``downsample.0/.1`` (conv, BN) or, with ``avg_down``, ``downsample.1/.2`` after the pool
  (``downsample.0``, no parameters); classifier ``fc``. torchvision's ``resnet50`` has the same keys.
- ``legacy`` (timm's ``senet.py`` = Cadene's ``pretrainedmodels`` ``senet.py``, the original Caffe
  SENet release: ``legacy_*``): stem ``layer0.conv1``/``layer0.bn1`` (SENet-154: ``layer0.conv1-3`` /
  ``bn1-3``, 64, 64, 128 wide), max-pool 3x3 s2 pad 0 with ``ceil_mode=True``; SE is
  ``layerX.Y.se_module.fc1/fc2`` with ``C_r = C // r``; shortcut ``downsample.0/.1``; classifier
  ``last_linear``. The basic block (``legacy_seresnet18/34``) applies ReLU after its second BN,
  before SE (timm's ``SEResNetBlock``); timm's ``BasicBlock`` does not. Cadene's keys and timm's
  legacy keys are identical, so a pretrainedmodels checkpoint loads as the native layout.

Also declared here and registered with each model (:func:`se_multi.models.register_model`): the
layouts other than the native one (senet.pytorch's keys; a native checkpoint's ablation options,
read from its keys), the pretrained configs (:data:`PRETRAINED`, timm's) and the models
``se-multi validate`` checks whole (:data:`CONFORMANCE_INPUTS`).

SENet-paper ablations (builder keywords of every SE model, see :func:`se_multi.nn.residual_unit`):

- ``se_integration``: ``"standard"`` (timm's / Caffe's own placement, keys ``.se`` / ``.se_module``),
  ``"pre"``, ``"post"``, ``"identity"``, ``"conv3x3"``. timm publishes no layout for the last four,
  so their SE blocks are named ``se_pre``, ``se_post``, ``se_identity``, ``se_conv3x3`` (legacy:
  ``se_module_pre``, ...): a checkpoint of one placement can never load silently into another one
  whose tensor shapes happen to agree. SE widths: pre = the unit's input channels, post and
  identity = its output channels, conv3x3 = the output of the block's (first) 3x3 conv+BN+ReLU
  (a bottleneck's width; a basic block's planes).
- ``se_stages``: the stages (1-4) that get SE; blocks elsewhere are plain.
- ``se_bias``: biases in the two excitation FCs (default ``True``, as the checkpoints have).
- ``reduction``: the ratio r, one int or a tuple of four (per stage).

The architecture columns (``block``, ``layers``, ``stem_type``, ``stem_width``, ``avg_down``,
``cardinality``, ``base_width``, ``reduce_first``, ``down_kernel_size``) are builder keywords too,
as in timm's ``create_model(name, **kwargs)``; a value that makes no network is one ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Sequence

from se_multi import reference as ref
from se_multi.models.registry import register_model
from se_multi.pretrained import PretrainedCfg, timm_cfg
from se_multi.nn import (SE_INTEGRATIONS, AvgPool2d, ConvNormAct, Linear, MaxPool2d, Module, Sequential,
                         SqueezeExcite, residual_unit)

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")
STAGE_PLANES = (64, 128, 256, 512)
BLOCK_TYPES = ("basic", "bottleneck")
STEM_TYPES = ("", "deep", "deep_tiered")
#: a block's output channels = planes * expansion
EXPANSION = {"basic": 1, "bottleneck": 4}


@dataclass(frozen=True)
class Layout:
    """Where a checkpoint family puts names, and its stem pooling and SE rounding conventions."""

    name: str
    #: (conv, bn) checkpoint names of the 7x7 stem and of the three convs of a deep stem
    stem_7x7: tuple[tuple[str, str], ...]
    stem_deep: tuple[tuple[str, str], ...]
    stem_pool_padding: int
    stem_pool_ceil: bool
    se_name: str
    classifier: str
    #: SE bottleneck rounding: timm rounds C/r to a multiple of 8, Caffe floors C // r
    se_divisor: int
    #: the basic block's ReLU after its second BN, before SE (timm's legacy SEResNetBlock)
    basic_act_before_se: bool


TIMM = Layout("timm", (("conv1", "bn1"),), (("conv1.0", "conv1.1"), ("conv1.3", "conv1.4"), ("conv1.6", "bn1")),
              1, False, "se", "fc", 8, False)
LEGACY = Layout("legacy", (("layer0.conv1", "layer0.bn1"),),
                (("layer0.conv1", "layer0.bn1"), ("layer0.conv2", "layer0.bn2"), ("layer0.conv3", "layer0.bn3")),
                0, True, "se_module", "last_linear", 1, True)


@dataclass(frozen=True)
class ResNetArch:
    """One row of the config table: everything that differs between the family's networks
    (see the module docstring for each field). Invalid combinations raise ``ValueError``."""

    block: str
    layers: tuple[int, int, int, int]
    layout: Layout = TIMM
    stem_type: str = ""
    stem_width: int = 64
    avg_down: bool = False
    cardinality: int = 1
    base_width: int = 64
    reduce_first: int = 1
    down_kernel_size: int = 1
    stride_in_1x1: bool = False
    se: bool = True

    #: the fields a builder keyword may override (the layout and SE switch are the model's identity)
    OPTIONS = ("block", "layers", "stem_type", "stem_width", "avg_down", "cardinality", "base_width",
               "reduce_first", "down_kernel_size")

    def __post_init__(self):
        def positive_int(name, v):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}")

        if self.block not in BLOCK_TYPES:
            raise ValueError(f"block must be one of {BLOCK_TYPES}; got {self.block!r}")
        if self.stem_type not in STEM_TYPES:
            raise ValueError(f"stem_type must be one of {STEM_TYPES} ('' = one 7x7 conv); got {self.stem_type!r}")
        layers = self.layers
        if not isinstance(layers, (tuple, list)) or len(layers) != 4 or any(
                isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers):
            raise ValueError(f"layers must give the block count (a positive int) of each of 4 stages; got {layers!r}")
        object.__setattr__(self, "layers", tuple(layers))
        for name in ("stem_width", "cardinality", "base_width", "reduce_first", "down_kernel_size"):
            positive_int(name, getattr(self, name))
        if not isinstance(self.avg_down, bool):
            raise ValueError(f"avg_down must be True or False; got {self.avg_down!r}")
        if self.down_kernel_size % 2 == 0:
            raise ValueError("down_kernel_size must be odd (a centred, size-keeping kernel); "
                             f"got {self.down_kernel_size}")
        if self.avg_down and self.down_kernel_size != 1:
            raise ValueError("avg_down shortcuts are a pool and a 1x1 conv: down_kernel_size must be 1 with avg_down")
        if self.stem_type == "" and self.stem_width != 64:
            raise ValueError(f"stem_width sets the deep stems' widths; the 7x7 stem is 64 wide (got stem_width="
                             f"{self.stem_width}: use stem_type='deep' or 'deep_tiered')")
        if self.stem_type == "deep_tiered" and self.stem_width < 4:
            raise ValueError(f"a tiered stem's first conv is 3 * (stem_width // 4) wide: stem_width must be >= 4; "
                             f"got {self.stem_width}")
        if self.block == "basic" and (self.cardinality, self.base_width, self.reduce_first) != (1, 64, 1):
            raise ValueError("a basic block has no grouped bottleneck: cardinality=1, base_width=64 and "
                             f"reduce_first=1 only; got {self.cardinality}, {self.base_width}, {self.reduce_first}")
        for planes in STAGE_PLANES:
            width = self.width(planes)
            if width < self.cardinality or width % self.cardinality or (width // self.reduce_first) % self.cardinality:
                raise ValueError(f"cardinality={self.cardinality}, base_width={self.base_width}, reduce_first="
                                 f"{self.reduce_first} give a {width // self.reduce_first}->{width} grouped 3x3 "
                                 f"conv at {planes} planes, not divisible into {self.cardinality} groups")

    @property
    def expansion(self) -> int:
        return EXPANSION[self.block]

    def width(self, planes: int) -> int:
        """The bottleneck width (the grouped 3x3 conv's channels), timm's formula."""
        if self.block == "basic":
            return planes
        return int(math.floor(planes * (self.base_width / 64)) * self.cardinality)

    def stem_channels(self) -> tuple[int, ...]:
        """Output channels of each stem conv."""
        w = self.stem_width
        if self.stem_type == "":
            return (64,)
        first = 3 * (w // 4) if self.stem_type == "deep_tiered" else w
        return first, w, 2 * w

    def with_options(self, **options) -> "ResNetArch":
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(map(repr, unknown))}; architecture options: "
                            f"{', '.join(self.OPTIONS)}")
        return dataclasses.replace(self, **options) if options else self


@dataclass(frozen=True)
class SEConfig:
    """How SE enters the network (``None`` anywhere means a plain ResNet)."""

    reduction: tuple[float, float, float, float] = (16, 16, 16, 16)
    integration: str = "standard"
    stages: tuple[int, ...] = (1, 2, 3, 4)
    bias: bool = True

    @classmethod
    def from_options(cls, reduction=16, se_integration="standard", se_stages=(1, 2, 3, 4),
                     se_bias=True) -> "SEConfig":
        if not isinstance(se_bias, bool):  # bool("no") is True: a string must not pass for a flag
            raise TypeError(f"se_bias must be True or False; got {se_bias!r}")
        return cls(_per_stage_reduction(reduction), _check_integration(se_integration),
                   _check_stages(se_stages), se_bias)


def _per_stage_reduction(reduction) -> tuple[float, float, float, float]:
    values = tuple(reduction) if isinstance(reduction, (tuple, list)) else (reduction,) * 4
    if len(values) != 4 or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0
                                   for r in values):
        raise ValueError(f"reduction must be a positive number or a tuple of 4 (one per stage); got {reduction!r}")
    return values


def _check_integration(integration: str) -> str:
    if integration not in SE_INTEGRATIONS:
        raise ValueError(f"se_integration must be one of {SE_INTEGRATIONS}; got {integration!r}")
    return integration


def _check_stages(stages) -> tuple[int, ...]:
    stages = tuple(stages) if isinstance(stages, (tuple, list, set, frozenset)) else (stages,)
    if not stages or any(s not in (1, 2, 3, 4) for s in stages):
        raise ValueError(f"se_stages must be a non-empty subset of (1, 2, 3, 4); got {stages!r}")
    return tuple(sorted(set(stages)))


# =========================================================================== blocks
class Downsample(Module):
    """The projection shortcut, keys ``downsample.N`` as timm's ``nn.Sequential`` numbers them:
    conv (1x1, or ``kernel_size`` when strided) + BN at ``.0``/``.1``; with ``avg_down``, a 2x2
    average pool at ``.0`` (stride-1 blocks: an identity, still counted) and a 1x1 conv + BN at
    ``.1``/``.2``."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, kernel_size: int = 1, avg_down: bool = False):
        super().__init__()
        object.__setattr__(self, "pool", None)
        if avg_down:
            if stride != 1:
                pool = AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
                setattr(self, "0", pool)  # registered under its nn.Sequential index
                object.__setattr__(self, "pool", pool)
            self.conv = ConvNormAct(in_chs, out_chs, 1, act=None, conv="1", bn="2")
        else:
            kernel = kernel_size if stride != 1 else 1  # timm: a stride-1 projection is always 1x1
            self.conv = ConvNormAct(in_chs, out_chs, kernel, stride, act=None, conv="0", bn="1")

    def forward(self, ops, x):
        return self.conv(ops, x if self.pool is None else self.pool(ops, x))


class _ResidualBlock(Module):
    """What basic and bottleneck blocks share: SE in the configured place, the shortcut, the unit."""

    def _declare_se(self, se: "SEConfig | None", layout: Layout, reduction: float, in_chs: int, mid_chs: int,
                    out_chs: int) -> None:
        self.integration = se.integration if se else "standard"
        object.__setattr__(self, "se_unit", None)
        if se is None:
            return
        se_chs = {"pre": in_chs, "conv3x3": mid_chs}.get(se.integration, out_chs)
        rd = ref.reduced_channels(se_chs, reduction, divisor=layout.se_divisor, round_limit=0.0)
        name = layout.se_name if se.integration == "standard" else f"{layout.se_name}_{se.integration}"
        unit = SqueezeExcite(se_chs, rd, bias=se.bias)
        setattr(self, name, unit)  # registered under its checkpoint name
        object.__setattr__(self, "se_unit", unit)  # an alias, not a second child

    def _declare_shortcut(self, in_chs: int, out_chs: int, stride: int, down_kernel_size: int,
                          avg_down: bool) -> None:
        self.downsample = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = Downsample(in_chs, out_chs, stride, down_kernel_size, avg_down)

    def forward(self, ops, x):
        return residual_unit(ops, x, self.branch, self.downsample, self.se_unit, self.integration)


class Bottleneck(_ResidualBlock):
    """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1, each conv+BN; optional SE; projection shortcut.

    ``width = floor(planes * base_width / 64) * cardinality``; the first conv has
    ``width // reduce_first`` channels; the stride sits on the 3x3 conv, or on the first 1x1 conv
    with ``stride_in_1x1`` (the Caffe ResNet)."""

    def __init__(self, in_chs: int, planes: int, stride: int, layout: Layout, cardinality: int = 1,
                 base_width: int = 64, se: SEConfig | None = None, reduction: float = 16, *, reduce_first: int = 1,
                 stride_in_1x1: bool = False, down_kernel_size: int = 1, avg_down: bool = False):
        super().__init__()
        width = int(math.floor(planes * (base_width / 64)) * cardinality)
        first = width // reduce_first
        out_chs = planes * EXPANSION["bottleneck"]
        self.in_chs, self.width, self.out_chs = in_chs, width, out_chs
        stride1, stride3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvNormAct(in_chs, first, 1, stride1, conv="conv1", bn="bn1")
        self.conv2 = ConvNormAct(first, width, 3, stride3, groups=cardinality, conv="conv2", bn="bn2")
        self.conv3 = ConvNormAct(width, out_chs, 1, act=None, conv="conv3", bn="bn3")
        self._declare_se(se, layout, reduction, in_chs, width, out_chs)
        self._declare_shortcut(in_chs, out_chs, stride, down_kernel_size, avg_down)

    def branch(self, ops, x):
        """The residual branch without its final ReLU (SE inside it only for ``conv3x3``)."""
        out = self.conv2(ops, self.conv1(ops, x))
        if self.se_unit is not None and self.integration == "conv3x3":
            out = self.se_unit(ops, out)
        return self.conv3(ops, out)


class BasicBlock(_ResidualBlock):
    """3x3 (strided) -> 3x3, each conv+BN; optional SE; projection shortcut. The Caffe layout
    (``layout.basic_act_before_se``) applies ReLU after the second BN too, before SE and the sum."""

    def __init__(self, in_chs: int, planes: int, stride: int, layout: Layout, se: SEConfig | None = None,
                 reduction: float = 16, *, down_kernel_size: int = 1, avg_down: bool = False):
        super().__init__()
        out_chs = planes * EXPANSION["basic"]
        self.in_chs, self.width, self.out_chs = in_chs, planes, out_chs
        self.conv1 = ConvNormAct(in_chs, planes, 3, stride, conv="conv1", bn="bn1")
        act2 = "relu" if layout.basic_act_before_se else None
        self.conv2 = ConvNormAct(planes, out_chs, 3, act=act2, conv="conv2", bn="bn2")
        self._declare_se(se, layout, reduction, in_chs, planes, out_chs)
        self._declare_shortcut(in_chs, out_chs, stride, down_kernel_size, avg_down)

    def branch(self, ops, x):
        """The residual branch without the unit's final ReLU (SE inside it only for ``conv3x3``)."""
        out = self.conv1(ops, x)
        if self.se_unit is not None and self.integration == "conv3x3":
            out = self.se_unit(ops, out)
        return self.conv2(ops, out)


def make_block(arch: ResNetArch, in_chs: int, planes: int, stride: int, se: SEConfig | None,
               reduction: float) -> _ResidualBlock:
    shortcut = dict(down_kernel_size=arch.down_kernel_size, avg_down=arch.avg_down)
    if arch.block == "basic":
        return BasicBlock(in_chs, planes, stride, arch.layout, se, reduction, **shortcut)
    return Bottleneck(in_chs, planes, stride, arch.layout, arch.cardinality, arch.base_width, se, reduction,
                      reduce_first=arch.reduce_first, stride_in_1x1=arch.stride_in_1x1, **shortcut)


# =========================================================================== the network
class ResNet(Module):
    """Stem (one 7x7 or three 3x3 conv+BN+ReLU, 3x3 max-pool), four stages of residual blocks,
    global average pool, classifier; everything else from ``arch`` (a :class:`ResNetArch`).

    ``num_classes=0`` drops the classifier: ``forward`` then returns the pooled (N, C) features
    (the U-Net uses the stages directly through :meth:`stage_outputs`).
    """

    stage_names = list(STAGE_NAMES)

    def __init__(self, arch: ResNetArch, num_classes: int = 1000, se: SEConfig | None = None):
        super().__init__()
        if not isinstance(arch, ResNetArch):
            raise TypeError(f"ResNet takes a ResNetArch (a row of the config table); got {type(arch).__name__}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative int; got {num_classes!r}")
        layout = arch.layout
        self.arch, self.layout, self.se_config, self.num_classes = arch, layout, se, num_classes
        chs = arch.stem_channels()
        if arch.stem_type == "":
            (conv, bn), = layout.stem_7x7
            self.stem = ConvNormAct(3, chs[0], 7, 2, padding=3, conv=conv, bn=bn)
        else:
            ins = (3,) + chs[:-1]
            convs = [ConvNormAct(i, o, 3, 2 if k == 0 else 1, conv=conv, bn=bn)
                     for k, (i, o, (conv, bn)) in enumerate(zip(ins, chs, layout.stem_deep))]
            stem = Sequential(*convs)
            stem.flat = True  # its convs name themselves (conv1.0 ... / layer0.conv1 ...)
            self.stem = stem
        self.maxpool = MaxPool2d(3, 2, layout.stem_pool_padding, layout.stem_pool_ceil)
        in_chs = chs[-1]
        for index, (name, planes, depth) in enumerate(zip(STAGE_NAMES, STAGE_PLANES, arch.layers)):
            stage_se = se if se is not None and index + 1 in se.stages else None
            reduction = se.reduction[index] if se is not None else 16
            blocks = []
            for b in range(depth):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(make_block(arch, in_chs, planes, stride, stage_se, reduction))
                in_chs = planes * arch.expansion
            setattr(self, name, Sequential(*blocks))
        self.num_features = in_chs
        self.fc = Linear(in_chs, num_classes, name=layout.classifier) if num_classes else None
        self.classifier_key = f"{layout.classifier}.weight" if num_classes else None

    def stem_forward(self, ops, x):
        """The stem's convs+BN+ReLU (stride 2), before the max-pool: the U-Net's stride-2 skip."""
        return self.stem(ops, x)

    def stage_outputs(self, ops, x) -> list:
        """``[stem (before pool), layer1, layer2, layer3, layer4]`` feature maps."""
        stem = self.stem_forward(ops, x)
        x = self.maxpool(ops, stem)
        outs = [stem]
        for name in self.stage_names:
            x = getattr(self, name)(ops, x)
            outs.append(x)
        return outs

    def forward_features(self, ops, x) -> dict:
        """The four stage outputs by module name (``layer1`` ... ``layer4``), as timm names them."""
        return dict(zip(self.stage_names, self.stage_outputs(ops, x)[1:]))

    def forward(self, ops, x):
        pooled = ops.global_avg_pool(self.stage_outputs(ops, x)[-1])
        return pooled if self.fc is None else self.fc(ops, pooled)


# =========================================================================== the config table
def _arch(block, layers, layout=TIMM, **kw) -> ResNetArch:
    return ResNetArch(block, tuple(layers), layout, **kw)


_D = dict(stem_type="deep", stem_width=32, avg_down=True)           # ResNet-D: deep stem, avg-pool shortcut
_T = dict(stem_type="deep_tiered", stem_width=32, avg_down=True)    # the tiered "t" stem (24, 32, 64)
_SENET154 = dict(cardinality=64, base_width=4, stem_type="deep", stem_width=64, reduce_first=2, down_kernel_size=3)
_R18, _R34, _R50, _R101, _R152 = (2, 2, 2, 2), (3, 4, 6, 3), (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3)

#: model name -> (architecture, one-line description). The timm rows are timm 1.0.31 ``resnet.py``'s
#: model_args; the legacy rows its ``senet.py`` (Cadene's pretrainedmodels).
ARCHS: dict[str, tuple[ResNetArch, str]] = {
    # ---- timm layout (timm/models/resnet.py)
    "resnet50": (_arch("bottleneck", _R50, se=False),
                 "ResNet-50 (timm / torchvision layout): the SE-free baseline for SE overhead."),
    "seresnet18": (_arch("basic", _R18), "SE-ResNet-18, timm layout: SE in a basic block."),
    "seresnet34": (_arch("basic", _R34), "SE-ResNet-34, timm layout: SE in a basic block."),
    "seresnet50": (_arch("bottleneck", _R50),
                   "SE-ResNet-50, timm layout (stride on the 3x3 conv), e.g. timm/seresnet50.a1_in1k."),
    "seresnet50t": (_arch("bottleneck", _R50, **_T), "SE-ResNet-50-T: tiered deep stem, avg-pool shortcut."),
    "seresnet101": (_arch("bottleneck", _R101), "SE-ResNet-101, timm layout (stride on the 3x3 conv)."),
    "seresnet152": (_arch("bottleneck", _R152), "SE-ResNet-152, timm layout (stride on the 3x3 conv)."),
    "seresnet152d": (_arch("bottleneck", _R152, **_D),
                     "SE-ResNet-152-D: deep stem, avg-pool shortcut, e.g. timm/seresnet152d.ra2_in1k."),
    "seresnet200d": (_arch("bottleneck", (3, 24, 36, 3), **_D), "SE-ResNet-200-D: deep stem, avg-pool shortcut."),
    "seresnet269d": (_arch("bottleneck", (3, 30, 48, 8), **_D), "SE-ResNet-269-D: deep stem, avg-pool shortcut."),
    "seresnext26d_32x4d": (_arch("bottleneck", _R18, cardinality=32, base_width=4, **_D),
                           "SE-ResNeXt-26-D (32x4d): deep stem, avg-pool shortcut."),
    "seresnext26t_32x4d": (_arch("bottleneck", _R18, cardinality=32, base_width=4, **_T),
                           "SE-ResNeXt-26-T (32x4d): tiered deep stem (24, 32, 64), avg-pool shortcut."),
    "seresnext50_32x4d": (_arch("bottleneck", _R50, cardinality=32, base_width=4),
                          "SE-ResNeXt-50 (32x4d), timm layout: 32 groups, 4 channels each in the first stage."),
    "seresnext101_32x4d": (_arch("bottleneck", _R101, cardinality=32, base_width=4),
                           "SE-ResNeXt-101 (32x4d), timm layout (e.g. timm/seresnext101_32x4d.gluon_in1k)."),
    "seresnext101_32x8d": (_arch("bottleneck", _R101, cardinality=32, base_width=8),
                           "SE-ResNeXt-101 (32x8d), timm layout."),
    "seresnext101d_32x8d": (_arch("bottleneck", _R101, cardinality=32, base_width=8, **_D),
                            "SE-ResNeXt-101-D (32x8d): deep stem, avg-pool shortcut."),
    "seresnext101_64x4d": (_arch("bottleneck", _R101, cardinality=64, base_width=4),
                           "SE-ResNeXt-101 (64x4d), timm layout."),
    "senet154": (_arch("bottleneck", _R152, **_SENET154),
                 "SENet-154 in timm's layout (Gluon weights): 64x4d, deep 64-64-128 stem, first conv at half "
                 "width, 3x3 shortcut convs."),
    # ---- original Caffe SENet layout (timm/models/senet.py = Cadene pretrainedmodels)
    "legacy_seresnet18": (_arch("basic", _R18, LEGACY), "SE-ResNet-18, Caffe/Cadene layout (timm legacy_seresnet18)."),
    "legacy_seresnet34": (_arch("basic", _R34, LEGACY), "SE-ResNet-34, Caffe/Cadene layout (timm legacy_seresnet34)."),
    **{f"legacy_seresnet{d}": (_arch("bottleneck", layers, LEGACY, stride_in_1x1=True),
                               f"SE-ResNet-{d} in the original Caffe layout (Cadene se_resnet{d}, "
                               f"timm legacy_seresnet{d}).")
       for d, layers in ((50, _R50), (101, _R101), (152, _R152))},
    **{f"legacy_seresnext{d}_32x4d": (_arch("bottleneck", layers, LEGACY, cardinality=32, base_width=4),
                                      f"SE-ResNeXt-{d} (32x4d) in the original Caffe layout (timm "
                                      f"legacy_seresnext{d}_32x4d" + (f", Cadene se_resnext{d}_32x4d)." if d > 26
                                                                      else ")."))
       for d, layers in ((26, _R18), (50, _R50), (101, _R101))},
    "legacy_senet154": (_arch("bottleneck", _R152, LEGACY, **_SENET154),
                        "SENet-154, the ILSVRC 2017 winner, original Caffe layout (Cadene senet154, timm "
                        "legacy_senet154)."),
}
#: the SE-overhead twins: the same rows with SE off (timm turns SE off the same way: an option of
#: the same builder, ``block_args=dict(attn_layer=None)``; a twin differs from its SE model in SE only)
PLAIN_TWINS = {f"{name}_plain": name for name in ("legacy_seresnext101_32x4d", "legacy_senet154")}
ARCHS.update({twin: (dataclasses.replace(ARCHS[name][0], se=False),
                     f"{name} with SE off: the same graph less its SE blocks (the SE-overhead baseline).")
              for twin, name in PLAIN_TWINS.items()})

#: SE models by layout (for the layout converters below)
SE_MODELS = {layout.name: tuple(n for n, (a, _) in ARCHS.items() if a.se and a.layout is layout)
             for layout in (TIMM, LEGACY)}


# =========================================================================== checkpoint layouts
# The native layouts cover timm, torchvision (resnet50: the same keys as timm) and Cadene /
# pretrainedmodels (the same keys as timm's legacy models). Two more things are read from keys:
#  - senet.pytorch (moskomule) SE-ResNets: torchvision ResNets whose SE is
#    ``se.fc.0`` / ``se.fc.2`` Linear layers without bias -> timm's seresnet with ``se_bias=False``;
#  - the ablation options of a native checkpoint (which SE placement, which stages, biases, r),
#    so that a checkpoint of any SE variant loads without restating how it was built.
SE_MODELS_TIMM = SE_MODELS["timm"]
SE_MODELS_LEGACY = SE_MODELS["legacy"]
#: senet.pytorch publishes torchvision-structured se_resnet18/34/50/101/152 (7x7 stem, no groups)
SENET_PYTORCH_MODELS = tuple(n for n in SE_MODELS_TIMM if ARCHS[n][0].stem_type == "" and ARCHS[n][0].cardinality == 1)
_SENET_PYTORCH_KEY = re.compile(r"^(layer[1-4]\.\d+\.se)\.fc\.([02])\.weight$")
_FC_NAMES = {"0": "fc1", "2": "fc2"}


def _from_senet_pytorch(state: dict):
    """``layerX.Y.se.fc.0.weight`` (C_r, C) -> ``layerX.Y.se.fc1.weight`` (C_r, C, 1, 1); declines others."""
    if not any(_SENET_PYTORCH_KEY.match(k) for k in state):
        return None
    native = {}
    for key, value in state.items():
        m = _SENET_PYTORCH_KEY.match(key)
        if m:
            key, value = f"{m.group(1)}.{_FC_NAMES[m.group(2)]}.weight", value.reshape(*value.shape, 1, 1)
        native[key] = value
    return native, se_options_from_keys(native, TIMM)


def _se_block_pattern(layout: Layout) -> re.Pattern:
    integrations = "|".join(i for i in SE_INTEGRATIONS if i != "standard")
    return re.compile(rf"^layer([1-4])\.(\d+)\.{re.escape(layout.se_name)}(?:_({integrations}))?\.fc1\.weight$")


def _stage_reduction(pairs: list[tuple[int, int]], layout: Layout, default: float = 16):
    """The r that reproduces every block's (C, C_r) in a stage under the layout's rounding: the
    default first (timm's rounding maps several r to one width, e.g. 64 channels -> 8 at r = 8 or 16)."""
    for r in [default] + sorted({c / rd for c, rd in pairs}):
        r = int(r) if float(r).is_integer() else r
        if all(ref.reduced_channels(c, r, divisor=layout.se_divisor, round_limit=0.0) == rd for c, rd in pairs):
            return r
    return None


def se_options_from_keys(state: dict, layout: Layout) -> dict:
    """Builder options (only those that differ from the defaults) implied by a native SE state dict."""
    pattern = _se_block_pattern(layout)
    integrations, per_stage = set(), {}
    for key, value in state.items():
        m = pattern.match(key)
        if m:
            integrations.add(m.group(3) or "standard")
            per_stage.setdefault(int(m.group(1)), []).append((int(value.shape[1]), int(value.shape[0])))
    if len(integrations) != 1:
        return {}  # no SE keys, or a mixture: leave it to the strict key check to report
    reductions = {stage: _stage_reduction(pairs, layout) for stage, pairs in per_stage.items()}
    options = {"se_integration": integrations.pop(), "se_stages": tuple(sorted(per_stage)),
               "se_bias": any(k.endswith(".fc1.bias") and pattern.match(k[: -len("bias")] + "weight")
                              for k in state)}
    if None not in reductions.values():  # else: leave r at its default; the shape check will say why
        distinct = set(reductions.values())
        options["reduction"] = distinct.pop() if len(distinct) == 1 else \
            tuple(reductions.get(stage, 16) for stage in (1, 2, 3, 4))
    defaults = {"se_integration": "standard", "se_stages": (1, 2, 3, 4), "se_bias": True, "reduction": 16}
    return {k: v for k, v in options.items() if v != defaults[k]}


def _native_with_options(layout: Layout):
    def convert(state: dict):
        options = se_options_from_keys(state, layout)
        return (state, options) if options else None  # None: plain native, nothing to say

    return convert


#: the layouts tried before the native one, as their converters: a native checkpoint with
#: ablation options (every SE model), senet.pytorch's keys (its five torchvision-structured models)
_NATIVE_WITH_OPTIONS = {layout.name: _native_with_options(layout) for layout in (TIMM, LEGACY)}


def _layouts_of(name: str, arch: ResNetArch) -> tuple:
    if not arch.se:
        return ()
    senet_pytorch = (("senet.pytorch", _from_senet_pytorch),) if name in SENET_PYTORCH_MODELS else ()
    return senet_pytorch + (("native (SE options from keys)", _NATIVE_WITH_OPTIONS[arch.layout.name]),)


# =========================================================================== pretrained configs
# Copied from timm 1.0.31's default_cfgs (timm/models/resnet.py and senet.py): _cfg / _tcfg / _ttcfg /
# _rcfg / _r3cfg plus each tag's overrides. Tags timm does not publish: ``*.untrained`` for models with
# no published ImageNet weights (timm's own ``untrained`` configs for SE-ResNet-18/34/50-T/101/152/
# 200-D/269-D; the SE-overhead twins ``legacy_*_plain`` get their SE model's ``_cfg``). The legacy
# (Caffe/Cadene) models have only the GitHub release ``url`` in timm 1.0.31, no hub id.
_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download"
_LEGACY_URL = f"{_RELEASES}/v0.1-weights"  # timm's re-hosted SENet release weights (senet.py)
# timm's cfg helpers, as keyword sets (timm/models/resnet.py):
_TT = dict(interpolation="bicubic")                                  # _ttcfg / _tcfg / _gcfg
_R = dict(interpolation="bicubic", crop_pct=0.95)                    # _rcfg
_R3 = dict(interpolation="bicubic", crop_pct=0.95, input_size=(3, 160, 160))  # _r3cfg


def _legacy(tag: str, url: str, **kw) -> PretrainedCfg:
    """A ``legacy_*`` tag (senet.py: ``_cfg``, bilinear 0.875, ImageNet mean/std): only a release url."""
    return PretrainedCfg(tag, url=url, license="apache-2.0", **kw)


#: every tag of the family; a model's first is its default (timm lists a tag with weights first)
PRETRAINED: tuple[PretrainedCfg, ...] = (
    # SE-ResNet, timm layout (resnet.py); a1/a2 use _rcfg, a3 _r3cfg, each with crop_pct=0.95
    timm_cfg("seresnet50.a1_in1k", **_R),
    timm_cfg("seresnet50.a2_in1k", **_R),
    timm_cfg("seresnet50.a3_in1k", **_R3),
    timm_cfg("seresnet50.ra2_in1k", **_TT),
    PretrainedCfg("seresnet18.untrained", **_TT),
    PretrainedCfg("seresnet34.untrained", **_TT),
    PretrainedCfg("seresnet50t.untrained", **_TT),
    PretrainedCfg("seresnet101.untrained", **_TT),
    PretrainedCfg("seresnet152.untrained", **_TT),
    # ResNet-D models: _ttcfg with a 256 input (seresnet152d.ra2_in1k also crop_pct=0.95)
    timm_cfg("seresnet152d.ra2_in1k", interpolation="bicubic", input_size=(3, 256, 256), crop_pct=0.95),
    PretrainedCfg("seresnet200d.untrained", interpolation="bicubic", input_size=(3, 256, 256)),
    PretrainedCfg("seresnet269d.untrained", interpolation="bicubic", input_size=(3, 256, 256)),
    # SE-ResNeXt, timm layout: _ttcfg (bt, racm), _rcfg (ah), _gcfg (gluon: bicubic 0.875)
    timm_cfg("seresnext26d_32x4d.bt_in1k", **_TT),
    timm_cfg("seresnext26t_32x4d.bt_in1k", **_TT),
    timm_cfg("seresnext50_32x4d.racm_in1k", **_TT),
    timm_cfg("seresnext50_32x4d.gluon_in1k", **_TT),
    timm_cfg("seresnext101_32x4d.gluon_in1k", **_TT),
    PretrainedCfg("seresnext101_32x4d.untrained", **_TT),
    timm_cfg("seresnext101_32x8d.ah_in1k", **_R),
    timm_cfg("seresnext101d_32x8d.ah_in1k", **_R),
    timm_cfg("seresnext101_64x4d.gluon_in1k", **_TT),
    timm_cfg("senet154.gluon_in1k", **_TT),
    # the ResNet-50 baseline
    timm_cfg("resnet50.a1_in1k", **_R),
    timm_cfg("resnet50.tv_in1k", license="bsd-3-clause"),  # torchvision's weights: plain _cfg (bilinear 0.875)
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
)

# =========================================================================== conformance cases
#: the models ``se-multi validate`` checks whole, at a small input with odd, unequal H and W
CONFORMANCE_INPUTS = {
    "seresnet50": (2, 3, 37, 29),          # SE-ResNet, timm layout
    "legacy_seresnet50": (2, 3, 31, 40),   # Caffe layout: the ceil-mode stem pool sees an even 16x20 map
    "seresnext50_32x4d": (2, 3, 33, 27),   # SE-ResNeXt: grouped 3x3
}


# =========================================================================== registration
def _register(name: str, arch: ResNetArch, doc: str) -> None:
    """Register one builder: SE models take every SENet ablation keyword explicitly; every model
    takes the architecture columns as keywords (timm's ``create_model(name, **kwargs)``)."""
    if arch.se:
        def builder(num_classes: int = 1000, reduction=16, se_integration: str = "standard",
                    se_stages=(1, 2, 3, 4), se_bias: bool = True, **arch_options) -> ResNet:
            se = SEConfig.from_options(reduction, se_integration, se_stages, se_bias)
            return ResNet(arch.with_options(**arch_options), num_classes, se)
    else:
        def builder(num_classes: int = 1000, **arch_options) -> ResNet:
            return ResNet(arch.with_options(**arch_options), num_classes)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    register_model(builder, pretrained=[c for c in PRETRAINED if c.model_name == name],
                   layouts=_layouts_of(name, arch), conformance_input=CONFORMANCE_INPUTS.get(name))


_strays = sorted(({c.model_name for c in PRETRAINED} | set(CONFORMANCE_INPUTS)) - set(ARCHS))
if _strays:  # a config for a model the table does not have would never be registered
    raise ValueError(f"resnet: pretrained configs or conformance inputs for models not in ARCHS: {_strays}")
for _name, (_a, _doc) in ARCHS.items():
    _register(_name, _a, _doc)
