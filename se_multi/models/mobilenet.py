"""MobileNet family: MobileNetV1 (+ the SENet paper's SE-MobileNet) and MobileNetV3.

Every model here is one :class:`MobileNet`: a stem conv, ``blocks`` (a list of stages,
each a list of blocks, built from an architecture table of :class:`BlockRow` tuples —
the same idea as timm's architecture-definition strings) and a pooled classifier head.
Parameters are declared in timm's key layout (``conv_stem``/``bn1``,
``blocks.i.j.conv_dw``/``bn1``/``se.conv_reduce``/..., ``conv_head``, ``classifier``)
and in timm's declaration order, so ``weights=None`` numbers tensors as timm's
state dict does, and timm checkpoints load as they are.

Stages (``MobileNet.stage_names``): ``["conv_stem", "blocks.0", ..., "blocks.K", "head"]``.
Each name is an attribute path on the module (``blocks.0`` is ``model.blocks[0]``), and
running the stages in that order *is* the forward pass, so a caller can time or count
each stage by running them one by one (:meth:`MobileNet.stages`). ``head`` is global
average pooling, the optional ``conv_head`` (MobileNetV3) and ``classifier``.

Peers (verified by tests/test_parity_mobilenet.py):

- ``mobilenetv1_100`` = timm 1.0.31 ``mobilenetv1_100``: ReLU6 everywhere, ``dsa`` blocks
  (activation after the pointwise conv, no skip), no head conv.
- ``se_mobilenetv1_100``: the same with SE (r=16, ReLU, sigmoid, ``C // r`` channels) on every
  block's output, after the pointwise conv+BN+ReLU6 (SENet paper, Table 3: 4.72M params);
  ``se_position="depthwise"`` puts it after the depthwise conv+BN+ReLU6 instead (4.59M).
- ``mobilenetv3_large_100`` / ``mobilenetv3_small_100`` = timm: hard-swish / ReLU per block,
  SE after the depthwise conv with ``make_divisible(C / 4, 8)`` channels, ReLU and a
  hard-sigmoid gate; pooling *before* the 1x1 ``conv_head`` (with bias, no BN) + hard-swish.
  torchvision ``mobilenet_v3_large`` / ``_small`` checkpoints are mapped onto this layout
  (same maths, other names, BatchNorm eps 1e-3).

Each builder is registered with its pretrained configs (:data:`PRETRAINED`), its torchvision
layout where it has one, and, for one model of each kind, the input ``se-multi validate`` checks it at.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple

import numpy as np

from se_multi import reference as ref
from se_multi.models.registry import build_model, register_model
from se_multi.nn import ConvNormAct, Linear, Module, Sequential, SqueezeExcite, host_weight, same_padding
from se_multi.pretrained import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD, PretrainedCfg, timm_cfg

#: where SE sits in a block: after the depthwise conv (timm/EfficientNet/MobileNetV3), or on the
#: block's output after the last conv (+act) and before any residual add (the SENet paper's rule
#: for non-residual networks: after the non-linearity that ends each block)
SE_POSITIONS = ("output", "depthwise")
#: block kinds of an architecture table (timm's names)
BLOCK_KINDS = ("ds", "dsa", "ir", "cn")

SEFactory = Callable[[int], SqueezeExcite]


class BlockRow(NamedTuple):
    """One row of an architecture table: ``repeats`` blocks of one kind, like a timm
    arch-def string (``ir_r3_k5_s2_e3_c40_se0.25_nre`` = ``BlockRow("ir", 3, 5, 2, 40, 3, True, "relu")``).

    - ``kind``: ``"ds"`` depthwise separable (dw conv+BN+act, pw conv+BN, skip when shapes allow),
      ``"dsa"`` the same with an activation after the pw conv and never a skip (MobileNetV1),
      ``"ir"`` inverted residual (pw expand, dw, pw linear projection, skip when shapes allow),
      ``"cn"`` a plain conv+BN+act.
    - ``stride`` applies to the first block of the row; the others have stride 1.
    - ``act``: ``None`` = the model's default activation.
    """

    kind: str
    repeats: int
    kernel: int
    stride: int
    out_chs: int
    exp_ratio: float = 1.0
    se: bool = False
    act: str | None = None


# ============================================================================ blocks
class _Block(Module):
    """Shared SE placement and residual logic of the MobileNet blocks."""

    se: SqueezeExcite | None = None
    se_position = "depthwise"
    has_skip = False
    #: the block's conv parts and SE in checkpoint order (for mapping other layouts)
    parts: list

    def _se_if(self, ops, x, position: str):
        return self.se(ops, x) if self.se is not None and self.se_position == position else x

    def _finish(self, ops, out, x):
        out = self._se_if(ops, out, "output")
        return ops.add(out, x) if self.has_skip else out


class DepthwiseSeparable(_Block):
    """timm ``DepthwiseSeparableConv``: ``conv_dw``/``bn1`` (+act), [``se``], ``conv_pw``/``bn2`` [+act]."""

    def __init__(self, in_chs, out_chs, kernel, stride, act, pw_act: bool, skip: bool,
                 se_factory: SEFactory | None, se_position: str, eps: float):
        super().__init__()
        self.conv_dw = ConvNormAct(in_chs, in_chs, kernel, stride, same_padding(kernel, stride), groups=in_chs,
                                   act=act, conv="conv_dw", bn="bn1", eps=eps)
        if se_factory is not None:  # declared between the convs whatever its position, as timm orders keys
            self.se = se_factory(in_chs if se_position == "depthwise" else out_chs)
        self.conv_pw = ConvNormAct(in_chs, out_chs, 1, act=act if pw_act else None, conv="conv_pw", bn="bn2", eps=eps)
        self.se_position = se_position
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        self.parts = [self.conv_dw, *([self.se] if self.se is not None else []), self.conv_pw]

    def forward(self, ops, x):
        out = self._se_if(ops, self.conv_dw(ops, x), "depthwise")
        return self._finish(ops, self.conv_pw(ops, out), x)


class InvertedResidual(_Block):
    """timm ``InvertedResidual``: ``conv_pw``/``bn1`` expand (+act), ``conv_dw``/``bn2`` (+act),
    [``se``], ``conv_pwl``/``bn3`` linear projection, skip when stride 1 and in == out."""

    def __init__(self, in_chs, out_chs, kernel, stride, act, exp_ratio: float,
                 se_factory: SEFactory | None, se_position: str, eps: float):
        super().__init__()
        mid_chs = ref.make_divisible(in_chs * exp_ratio)  # timm's rounding of the expanded width
        self.conv_pw = ConvNormAct(in_chs, mid_chs, 1, act=act, conv="conv_pw", bn="bn1", eps=eps)
        self.conv_dw = ConvNormAct(mid_chs, mid_chs, kernel, stride, same_padding(kernel, stride), groups=mid_chs,
                                   act=act, conv="conv_dw", bn="bn2", eps=eps)
        if se_factory is not None:
            self.se = se_factory(mid_chs if se_position == "depthwise" else out_chs)
        self.conv_pwl = ConvNormAct(mid_chs, out_chs, 1, act=None, conv="conv_pwl", bn="bn3", eps=eps)
        self.se_position = se_position
        self.has_skip = stride == 1 and in_chs == out_chs
        self.parts = [self.conv_pw, self.conv_dw, *([self.se] if self.se is not None else []), self.conv_pwl]

    def forward(self, ops, x):
        out = self._se_if(ops, self.conv_dw(ops, self.conv_pw(ops, x)), "depthwise")
        return self._finish(ops, self.conv_pwl(ops, out), x)


class ConvBnAct(_Block):
    """timm ``ConvBnAct``: ``conv``/``bn1`` + act (the 1x1 conv that ends MobileNetV3's blocks)."""

    def __init__(self, in_chs, out_chs, kernel, stride, act, eps: float):
        super().__init__()
        self.conv = ConvNormAct(in_chs, out_chs, kernel, stride, same_padding(kernel, stride), act=act,
                                conv="conv", bn="bn1", eps=eps)
        self.parts = [self.conv]

    def forward(self, ops, x):
        return self.conv(ops, x)


def build_stages(rows_per_stage, in_chs: int, act: str, se_factory: SEFactory | None, se_position: str,
                 eps: float) -> tuple[Sequential, int]:
    """An architecture table (a list of stages, each a list of :class:`BlockRow`) -> the
    ``blocks`` Sequential of stages and the final channel count."""
    stages = []
    for rows in rows_per_stage:
        blocks = []
        for row in rows:
            if row.kind not in BLOCK_KINDS:
                raise ValueError(f"block kind must be one of {BLOCK_KINDS}; got {row.kind!r}")
            for i in range(row.repeats):
                stride, block_act = row.stride if i == 0 else 1, row.act or act
                se = se_factory if row.se else None
                if row.kind in ("ds", "dsa"):
                    block = DepthwiseSeparable(in_chs, row.out_chs, row.kernel, stride, block_act,
                                               pw_act=row.kind == "dsa", skip=row.kind == "ds",
                                               se_factory=se, se_position=se_position, eps=eps)
                elif row.kind == "ir":
                    block = InvertedResidual(in_chs, row.out_chs, row.kernel, stride, block_act, row.exp_ratio,
                                             se_factory=se, se_position=se_position, eps=eps)
                else:
                    block = ConvBnAct(in_chs, row.out_chs, row.kernel, stride, block_act, eps=eps)
                blocks.append(block)
                in_chs = row.out_chs
        stages.append(Sequential(*blocks))
    return Sequential(*stages), in_chs


# ============================================================================ head and model
class PooledConv1x1(Module):
    """A 1x1 conv (with bias) applied to globally pooled features, i.e. a linear layer whose
    checkpoint weight is declared 4-D ``(out, in, 1, 1)`` as timm's ``conv_head`` is."""

    flat = True

    def __init__(self, in_chs: int, out_chs: int, act: str | None, name: str = "conv_head"):
        super().__init__()
        self.name, self.act, self.out_chs = name, act, out_chs
        self.declare(f"{name}.weight", (out_chs, in_chs, 1, 1), "weight")
        self.declare(f"{name}.bias", (out_chs,), "bias")

    def _bind(self, local, ops):
        self.w = ops.param(host_weight(local[f"{self.name}.weight"], ops).reshape(self.out_chs, -1), "linear")
        self.b = ops.param(host_weight(local[f"{self.name}.bias"], ops), "vector")

    def forward(self, ops, z):
        return ops.act(self.act, ops.linear(z, self.w, self.b))


class ClassifierHead(Module):
    """Global average pool -> [``conv_head`` 1x1 + act] -> ``classifier`` (dropout is a no-op at inference)."""

    flat = True  # conv_head and classifier sit at the top level of the checkpoint

    def __init__(self, in_chs: int, num_classes: int, head_chs: int | None, head_act: str | None):
        super().__init__()
        self.conv_head = PooledConv1x1(in_chs, head_chs, head_act) if head_chs else None
        self.classifier = Linear(head_chs or in_chs, num_classes, name="classifier")

    def forward(self, ops, x):
        z = ops.global_avg_pool(x)
        if self.conv_head is not None:
            z = self.conv_head(ops, z)
        return self.classifier(ops, z)


class MobileNet(Module):
    """Stem conv -> ``blocks`` (stages of blocks) -> pooled classifier head.

    ``stage_names`` lists the stages in forward order as attribute paths: ``"conv_stem"``,
    ``"blocks.0"`` ... ``"blocks.K"``, ``"head"``; :meth:`stages` returns them with their modules,
    and the forward pass is exactly running them in order.
    """

    classifier_key = "classifier.weight"

    def __init__(self, stem: ConvNormAct, blocks: Sequential, head: ClassifierHead):
        super().__init__()
        self.conv_stem, self.blocks, self.head = stem, blocks, head
        self.stage_names = ["conv_stem", *(f"blocks.{i}" for i in range(len(blocks))), "head"]

    def stages(self) -> list[tuple[str, Module]]:
        out = []
        for name in self.stage_names:
            module = self
            for part in name.split("."):
                module = getattr(module, part)
            out.append((name, module))
        return out

    def units(self) -> list[_Block | ConvNormAct]:
        """The stem and every block, in order (torchvision's ``features.0``, ``features.1``, ...)."""
        return [self.conv_stem, *(block for stage in self.blocks for block in stage)]

    def forward_stages(self, ops, x) -> dict:
        """Every stage's output by stage name (the last one, ``head``, is the logits)."""
        outputs = {}
        for name, module in self.stages():
            x = outputs[name] = module(ops, x)
        return outputs

    def forward(self, ops, x):
        for _, module in self.stages():
            x = module(ops, x)
        return x


def mobilenet(rows_per_stage, stem_chs: int, act: str, num_classes: int, head_chs: int | None,
              se_factory: SEFactory | None = None, se_position: str = "depthwise", bn_eps: float = 1e-5,
              in_chans: int = 3) -> MobileNet:
    """Assemble a :class:`MobileNet` from an architecture table."""
    if se_position not in SE_POSITIONS:
        raise ValueError(f"se_position must be one of {SE_POSITIONS}; got {se_position!r}")
    _check_positive("num_classes", num_classes)
    _check_positive("bn_eps", bn_eps)
    stem = ConvNormAct(in_chans, stem_chs, 3, 2, same_padding(3, 2), act=act, conv="conv_stem", bn="bn1", eps=bn_eps)
    blocks, chs = build_stages(rows_per_stage, stem_chs, act, se_factory, se_position, bn_eps)
    return MobileNet(stem, blocks, ClassifierHead(chs, num_classes, head_chs, act))


def _check_positive(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive number; got {value!r}")


def se_module(rd_channels: Callable[[int], int], gate: str) -> SEFactory:
    """An SE factory in timm's key layout (``se.conv_reduce``/``se.conv_expand``, 1x1 convs with bias, ReLU)."""
    return lambda chs: SqueezeExcite(chs, rd_channels(chs), bias=True, act="relu", gate=gate,
                                     names=("conv_reduce", "conv_expand"), conv_fc=True)


# ============================================================================ architecture tables
B = BlockRow

#: timm ``_gen_mobilenet_v1``: ``dsa_r1_k3_s1_c64``, ``dsa_r2_k3_s2_c128``, ... (ReLU6, stem 32)
MOBILENETV1_100 = (
    (B("dsa", 1, 3, 1, 64),),
    (B("dsa", 2, 3, 2, 128),),
    (B("dsa", 2, 3, 2, 256),),
    (B("dsa", 6, 3, 2, 512),),
    (B("dsa", 2, 3, 2, 1024),),
)

#: timm ``_gen_mobilenet_v3`` (large, multiplier 1.0); ``act=None`` is hard-swish
MOBILENETV3_LARGE_100 = (
    (B("ds", 1, 3, 1, 16, act="relu"),),
    (B("ir", 1, 3, 2, 24, 4, act="relu"), B("ir", 1, 3, 1, 24, 3, act="relu")),
    (B("ir", 3, 5, 2, 40, 3, se=True, act="relu"),),
    (B("ir", 1, 3, 2, 80, 6), B("ir", 1, 3, 1, 80, 2.5), B("ir", 2, 3, 1, 80, 2.3)),
    (B("ir", 2, 3, 1, 112, 6, se=True),),
    (B("ir", 3, 5, 2, 160, 6, se=True),),
    (B("cn", 1, 1, 1, 960),),
)

#: timm ``_gen_mobilenet_v3`` (small, multiplier 1.0)
MOBILENETV3_SMALL_100 = (
    (B("ds", 1, 3, 2, 16, se=True, act="relu"),),
    (B("ir", 1, 3, 2, 24, 4.5, act="relu"), B("ir", 1, 3, 1, 24, 3.67, act="relu")),
    (B("ir", 1, 5, 2, 40, 4, se=True), B("ir", 2, 5, 1, 40, 6, se=True)),
    (B("ir", 2, 5, 1, 48, 3, se=True),),
    (B("ir", 3, 5, 2, 96, 6, se=True),),
    (B("cn", 1, 1, 1, 576),),
)


# ============================================================================ torchvision layout
#: torchvision's BatchNorm eps in MobileNetV3 (``partial(nn.BatchNorm2d, eps=0.001)``)
TORCHVISION_BN_EPS = 1e-3
_TV_BLOCK_KEY = re.compile(r"features\.(\d+)\.block\.(\d+)\.(.+)")
_TV_CONV_KEY = re.compile(r"features\.(\d+)\.([01])\.(.+)")
_TV_HEAD = {"classifier.0.": "conv_head.", "classifier.3.": "classifier."}


def _native_part_key(unit_prefix: str, part, rest: str) -> str | None:
    """torchvision's name inside one part (``0.weight``, ``1.running_var``, ``fc1.bias``) -> native key."""
    sub, _, param = rest.partition(".")
    if isinstance(part, SqueezeExcite):
        fc = {"fc1": part.names[0], "fc2": part.names[1]}.get(sub)
        return f"{unit_prefix}se.{fc}.{param}" if fc else None
    name = {"0": part.conv_name, "1": part.bn_name}.get(sub)
    return f"{unit_prefix}{name}.{param}" if name else None


def torchvision_to_timm(model_name: str, state: dict) -> dict:
    """Rename a torchvision MobileNetV3 state dict to timm's keys. ``features.k`` is the k-th unit
    (stem, then every block in order); ``block.j`` its j-th part (conv+BN pairs and the SE, in the
    same order in both libraries). Keys that do not map are kept, so the strict check names them."""
    module = build_model(model_name)
    units = module.units()
    prefixes = [""] + [f"blocks.{i}.{j}." for i, stage in enumerate(module.blocks) for j in range(len(stage))]
    native = {}
    for key, value in state.items():
        new = None
        if m := _TV_BLOCK_KEY.fullmatch(key):
            k, j, rest = int(m[1]), int(m[2]), m[3]
            if k < len(units) and isinstance(units[k], _Block) and j < len(units[k].parts):
                new = _native_part_key(prefixes[k], units[k].parts[j], rest)
        elif m := _TV_CONV_KEY.fullmatch(key):
            k, rest = int(m[1]), f"{m[2]}.{m[3]}"
            if k < len(units):
                part = units[k] if isinstance(units[k], ConvNormAct) else units[k].parts[0]
                new = _native_part_key(prefixes[k], part, rest)
        else:
            for tv, timm in _TV_HEAD.items():
                if key.startswith(tv):
                    new = timm + key[len(tv):]
        if new == "conv_head.weight" and np.ndim(value) == 2:
            value = np.reshape(value, (*np.shape(value), 1, 1))  # torchvision's Linear is timm's 1x1 conv
        native[new or key] = value
    return native


def _torchvision_converter(model_name: str):
    def convert(state: dict):
        if "features.0.0.weight" not in state or "classifier.3.weight" not in state:
            return None
        return torchvision_to_timm(model_name, state), {"bn_eps": TORCHVISION_BN_EPS}

    return convert


# ============================================================================ pretrained configs
# timm 1.0.31's default_cfgs (efficientnet.py for MobileNetV1: _cfg is bicubic 0.875; mobilenetv3.py:
# _cfg is bilinear 0.875, these tags override to bicubic). Tags timm does not publish: the paper's
# SE-MobileNet, which timm lacks, gets timm's MobileNetV1 defaults (``.untrained``); ``*.tv_in1k``
# is torchvision's ``MobileNet_V3_*_Weights.IMAGENET1K_V1`` eval transform (resize 256 bilinear,
# crop 224, ImageNet mean/std) for torchvision checkpoints loaded into se_multi's MobileNetV3.
_INCEPTION = dict(mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD)
#: every tag of the family, by model; a model's first is its default
PRETRAINED: dict[str, tuple[PretrainedCfg, ...]] = {
    "mobilenetv1_100": (timm_cfg("mobilenetv1_100.ra4_e3600_r224_in1k", interpolation="bicubic", **_INCEPTION),),
    "se_mobilenetv1_100": (PretrainedCfg("se_mobilenetv1_100.untrained", interpolation="bicubic"),),
    "mobilenetv3_large_100": (
        timm_cfg("mobilenetv3_large_100.ra_in1k", interpolation="bicubic"),
        timm_cfg("mobilenetv3_large_100.ra4_e3600_r224_in1k", interpolation="bicubic", crop_pct=0.95, **_INCEPTION),
        PretrainedCfg("mobilenetv3_large_100.tv_in1k", license="bsd-3-clause",
                      url="https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth"),
    ),
    "mobilenetv3_small_100": (
        timm_cfg("mobilenetv3_small_100.lamb_in1k", interpolation="bicubic"),
        PretrainedCfg("mobilenetv3_small_100.tv_in1k", license="bsd-3-clause",
                      url="https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth"),
    ),
}


# ============================================================================ builders
@register_model(pretrained=PRETRAINED["mobilenetv1_100"])
def mobilenetv1_100(num_classes: int = 1000, bn_eps: float = 1e-5) -> MobileNet:
    """MobileNetV1-1.0 as timm builds it (the SE-MobileNet baseline: 4.23M params)."""
    return mobilenet(MOBILENETV1_100, 32, "relu6", num_classes, head_chs=None, bn_eps=bn_eps)


@register_model(pretrained=PRETRAINED["se_mobilenetv1_100"],
                conformance_input=(2, 3, 35, 30))  # SE-MobileNet: depthwise, ReLU6
def se_mobilenetv1_100(num_classes: int = 1000, reduction: int = 16, se_position: str = "output",
                       bn_eps: float = 1e-5) -> MobileNet:
    """SE-MobileNet (SENet paper, Table 3): SE with ``C // reduction`` channels, ReLU and sigmoid
    on every depthwise-separable block; ``se_position="output"`` (after the pointwise conv+BN+ReLU6,
    4.72M params, the paper's) or ``"depthwise"`` (after the depthwise conv, 4.59M)."""
    _check_positive("reduction", reduction)
    rows = tuple(tuple(row._replace(se=True) for row in stage) for stage in MOBILENETV1_100)
    se = se_module(lambda chs: ref.reduced_channels(chs, reduction), gate="sigmoid")
    return mobilenet(rows, 32, "relu6", num_classes, head_chs=None, se_factory=se, se_position=se_position,
                     bn_eps=bn_eps)


def _mobilenetv3(rows, head_chs: int, num_classes: int, reduction: float, bn_eps: float) -> MobileNet:
    _check_positive("reduction", reduction)
    # timm: round_channels(C * 0.25) = make_divisible(C / 4, 8); torchvision: _make_divisible(C // 4, 8)
    se = se_module(lambda chs: ref.make_divisible(chs / reduction, 8), gate="hard_sigmoid")
    return mobilenet(rows, 16, "hard_swish", num_classes, head_chs=head_chs, se_factory=se,
                     se_position="depthwise", bn_eps=bn_eps)


@register_model(pretrained=PRETRAINED["mobilenetv3_large_100"],
                layouts=[("torchvision", _torchvision_converter("mobilenetv3_large_100"))])
def mobilenetv3_large_100(num_classes: int = 1000, reduction: float = 4, bn_eps: float = 1e-5) -> MobileNet:
    """MobileNetV3-Large 1.0 (timm layout; torchvision ``mobilenet_v3_large`` checkpoints load too)."""
    return _mobilenetv3(MOBILENETV3_LARGE_100, 1280, num_classes, reduction, bn_eps)


@register_model(pretrained=PRETRAINED["mobilenetv3_small_100"],
                layouts=[("torchvision", _torchvision_converter("mobilenetv3_small_100"))],
                conformance_input=(2, 3, 41, 33))  # MobileNetV3: hard-swish, hard-sigmoid gates
def mobilenetv3_small_100(num_classes: int = 1000, reduction: float = 4, bn_eps: float = 1e-5) -> MobileNet:
    """MobileNetV3-Small 1.0 (timm layout; torchvision ``mobilenet_v3_small`` checkpoints load too)."""
    return _mobilenetv3(MOBILENETV3_SMALL_100, 1024, num_classes, reduction, bn_eps)
