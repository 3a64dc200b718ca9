"""ResNet, SE-ResNet and SE-ResNeXt: one bottleneck builder, two checkpoint layouts.

Layouts (each model's *native* layout is its peer's ``state_dict`` key for key):

- ``timm`` (``resnet50``, ``seresnet50/101/152``, ``seresnext50_32x4d``): stem ``conv1``/``bn1``,
  max-pool 3x3 s2 pad 1; the stride sits on the bottleneck's 3x3 conv; SE is ``layerX.Y.se.fc1/fc2``
  (1x1 convs with bias) with ``C_r = make_divisible(C / r, 8, round_limit=0)``; classifier ``fc``.
  torchvision's ``resnet50`` checkpoints have exactly these keys.
- ``legacy`` (``legacy_seresnet50/101/152``): the original Caffe SENet as Cadene's
  ``pretrainedmodels.se_resnet50`` and timm's ``legacy_seresnet*`` define it: stem
  ``layer0.conv1``/``layer0.bn1``, max-pool 3x3 s2 pad 0 with ``ceil_mode=True``; the stride sits on
  the bottleneck's first 1x1 conv; SE is ``layerX.Y.se_module.fc1/fc2`` with ``C_r = C // r``;
  classifier ``last_linear``. Cadene's keys and timm's legacy keys are identical, so a
  pretrainedmodels checkpoint loads as the native layout.

SENet-paper ablations (builder keywords of every SE model, see :func:`se_multi.nn.residual_unit`):

- ``se_integration``: ``"standard"`` (timm's / Caffe's own placement, keys ``.se`` / ``.se_module``),
  ``"pre"``, ``"post"``, ``"identity"``, ``"conv3x3"``. timm publishes no layout for the last four,
  so their SE blocks are named ``se_pre``, ``se_post``, ``se_identity``, ``se_conv3x3`` (legacy:
  ``se_module_pre``, ...): a checkpoint of one placement can never load silently into another one
  whose tensor shapes happen to agree. SE widths: pre = the unit's input channels, post and
  identity = its output channels, conv3x3 = the bottleneck width (after the 3x3 conv+BN+ReLU).
- ``se_stages``: the stages (1-4) that get SE; blocks elsewhere are plain bottlenecks.
- ``se_bias``: biases in the two excitation FCs (default ``True``, as the checkpoints have).
- ``reduction``: the ratio r, one int or a tuple of four (per stage).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from se_multi import reference as ref
from se_multi.checkpoint import register_layout
from se_multi.models import register_model
from se_multi.nn import (SE_INTEGRATIONS, ConvNormAct, Linear, MaxPool2d, Module, Sequential, SqueezeExcite,
                         residual_unit)

STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")
STAGE_PLANES = (64, 128, 256, 512)
EXPANSION = 4  # bottleneck output channels = planes * 4


@dataclass(frozen=True)
class Layout:
    """Where a checkpoint family puts names, strides and pooling conventions."""

    stem_conv: str
    stem_bn: str
    stem_pool_padding: int
    stem_pool_ceil: bool
    stride_on_3x3: bool
    se_name: str
    classifier: str
    #: SE bottleneck rounding: timm rounds C/r to a multiple of 8, Caffe floors C // r
    se_divisor: int


TIMM = Layout("conv1", "bn1", 1, False, True, "se", "fc", 8)
LEGACY = Layout("layer0.conv1", "layer0.bn1", 0, True, False, "se_module", "last_linear", 1)


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
        return cls(_per_stage_reduction(reduction), _check_integration(se_integration),
                   _check_stages(se_stages), bool(se_bias))


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


class Bottleneck(Module):
    """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1, each conv+BN; optional SE; projection shortcut."""

    def __init__(self, in_chs: int, planes: int, stride: int, layout: Layout, cardinality: int = 1,
                 base_width: int = 64, se: SEConfig | None = None, reduction: float = 16):
        super().__init__()
        width = int(math.floor(planes * (base_width / 64)) * cardinality)
        out_chs = planes * EXPANSION
        self.in_chs, self.width, self.out_chs = in_chs, width, out_chs
        stride1, stride3 = (1, stride) if layout.stride_on_3x3 else (stride, 1)
        self.conv1 = ConvNormAct(in_chs, width, 1, stride1, conv="conv1", bn="bn1")
        self.conv2 = ConvNormAct(width, width, 3, stride3, groups=cardinality, conv="conv2", bn="bn2")
        self.conv3 = ConvNormAct(width, out_chs, 1, act=None, conv="conv3", bn="bn3")
        self.integration = se.integration if se else "standard"
        self.se_unit = None
        if se is not None:
            se_chs = {"pre": in_chs, "conv3x3": width}.get(se.integration, out_chs)
            rd = ref.reduced_channels(se_chs, reduction, divisor=layout.se_divisor, round_limit=0.0)
            name = layout.se_name if se.integration == "standard" else f"{layout.se_name}_{se.integration}"
            unit = SqueezeExcite(se_chs, rd, bias=se.bias)
            setattr(self, name, unit)  # registered under its checkpoint name
            object.__setattr__(self, "se_unit", unit)  # an alias, not a second child
        self.downsample = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = ConvNormAct(in_chs, out_chs, 1, stride, act=None, conv="downsample.0",
                                          bn="downsample.1")

    def branch(self, ops, x):
        """The residual branch without its final ReLU (SE inside it only for ``conv3x3``)."""
        out = self.conv2(ops, self.conv1(ops, x))
        if self.se_unit is not None and self.integration == "conv3x3":
            out = self.se_unit(ops, out)
        return self.conv3(ops, out)

    def forward(self, ops, x):
        return residual_unit(ops, x, self.branch, self.downsample, self.se_unit, self.integration)


class ResNet(Module):
    """Stem (7x7 conv+BN+ReLU, 3x3 max-pool), four bottleneck stages, global pool, classifier.

    ``num_classes=0`` drops the classifier: ``forward`` then returns the pooled (N, C) features
    (the U-Net uses the stages directly through :meth:`stage_outputs`).
    """

    stage_names = list(STAGE_NAMES)

    def __init__(self, layers: Sequence[int], layout: Layout, num_classes: int = 1000, cardinality: int = 1,
                 base_width: int = 64, se: SEConfig | None = None):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must give the block count of 4 stages; got {layers!r}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative int; got {num_classes!r}")
        self.layout, self.se_config, self.num_classes = layout, se, num_classes
        self.stem = ConvNormAct(3, 64, 7, 2, padding=3, conv=layout.stem_conv, bn=layout.stem_bn)
        self.maxpool = MaxPool2d(3, 2, layout.stem_pool_padding, layout.stem_pool_ceil)
        in_chs = 64
        for index, (name, planes, depth) in enumerate(zip(STAGE_NAMES, STAGE_PLANES, layers)):
            stage_se = se if se is not None and index + 1 in se.stages else None
            reduction = se.reduction[index] if se is not None else 16
            blocks = []
            for b in range(depth):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(Bottleneck(in_chs, planes, stride, layout, cardinality, base_width, stage_se, reduction))
                in_chs = planes * EXPANSION
            setattr(self, name, Sequential(*blocks))
        self.num_features = in_chs
        self.fc = Linear(in_chs, num_classes, name=layout.classifier) if num_classes else None
        self.classifier_key = f"{layout.classifier}.weight" if num_classes else None

    def stem_forward(self, ops, x):
        """conv+BN+ReLU (stride 2), before the max-pool: the U-Net's stride-2 skip."""
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


# =========================================================================== registered models
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def _se_resnet(depth: int, layout: Layout, num_classes: int = 1000, reduction=16, se_integration="standard",
               se_stages=(1, 2, 3, 4), se_bias=True, cardinality: int = 1, base_width: int = 64) -> ResNet:
    se = SEConfig.from_options(reduction, se_integration, se_stages, se_bias)
    return ResNet(DEPTHS[depth], layout, num_classes, cardinality, base_width, se)


@register_model
def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50 (timm / torchvision layout): the SE-free baseline for SE overhead."""
    return ResNet(DEPTHS[50], TIMM, num_classes)


def _register_se_model(name: str, depth: int, layout: Layout, doc: str, **arch) -> None:
    """Register one SE builder taking every SENet ablation keyword explicitly."""

    def builder(num_classes: int = 1000, reduction=16, se_integration: str = "standard",
                se_stages=(1, 2, 3, 4), se_bias: bool = True) -> ResNet:
        return _se_resnet(depth, layout, num_classes, reduction, se_integration, se_stages, se_bias, **arch)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    register_model(builder)


for _depth in (50, 101, 152):
    _register_se_model(f"seresnet{_depth}", _depth, TIMM,
                       f"SE-ResNet-{_depth}, timm layout (stride on the 3x3 conv), e.g. timm/seresnet50.a1_in1k.")
    _register_se_model(f"legacy_seresnet{_depth}", _depth, LEGACY,
                       f"SE-ResNet-{_depth} in the original Caffe layout (Cadene se_resnet{_depth}, "
                       f"timm legacy_seresnet{_depth}).")
_register_se_model("seresnext50_32x4d", 50, TIMM,
                   "SE-ResNeXt-50 (32x4d), timm layout: 32 groups, 4 channels each in the first stage.",
                   cardinality=32, base_width=4)


# =========================================================================== checkpoint layouts
# The native layouts cover timm, torchvision (resnet50: the same keys as timm) and Cadene /
# pretrainedmodels (the same keys as timm's legacy models). Two more things are read from keys:
#  - senet.pytorch (moskomule) SE-ResNets: torchvision ResNets whose SE is
#    ``se.fc.0`` / ``se.fc.2`` Linear layers without bias -> timm's seresnet with ``se_bias=False``;
#  - the ablation options of a native checkpoint (which SE placement, which stages, biases, r),
#    so that a checkpoint of any SE variant loads without restating how it was built.
SE_MODELS_TIMM = ("seresnet50", "seresnet101", "seresnet152", "seresnext50_32x4d")
SE_MODELS_LEGACY = ("legacy_seresnet50", "legacy_seresnet101", "legacy_seresnet152")
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


def _stage_reduction(pairs: list[tuple[int, int]], layout: Layout):
    """The r that reproduces every block's (C, C_r) in a stage under the layout's rounding."""
    for r in sorted({c / rd for c, rd in pairs}):
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


register_layout(SE_MODELS_TIMM, "senet.pytorch", _from_senet_pytorch)
register_layout(SE_MODELS_TIMM, "native (SE options from keys)", _native_with_options(TIMM))
register_layout(SE_MODELS_LEGACY, "native (SE options from keys)", _native_with_options(LEGACY))
