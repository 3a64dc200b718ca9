"""The Inception family: Inception-ResNet-v2 and BN-Inception, with the SENet paper's SE versions
(Table 2: Inception-ResNet-v2 11.75 / 11.76 GFLOPs, BN-Inception 2.03 / 2.04).

``inception_resnet_v2`` -- native layout: timm 1.0.31 ``inception_resnet_v2`` (= Cadene's
``inceptionresnetv2``, ported from TF-slim), key for key. Every conv is a ``BasicConv2d`` (conv
without bias, BatchNorm with eps 1e-3, ReLU: keys ``<name>.conv`` / ``<name>.bn``); the stem
(``conv2d_1a`` 3x3/2, ``conv2d_2a`` 3x3, ``conv2d_2b`` 3x3 pad 1, ``maxpool_3a``, ``conv2d_3b``
1x1, ``conv2d_4a`` 3x3, ``maxpool_5a``) uses *valid* (unpadded) convs and 3x3/2 max-pools, as do
the reduction modules ``mixed_6a`` / ``mixed_7a``. ``mixed_5b`` has an average-pool branch
(3x3/1 pad 1, ``count_include_pad=False``). The residual modules ``repeat.i`` (Block35, x10, scale
0.17), ``repeat_1.i`` (Block17, x20, scale 0.10, asymmetric 1x7 / 7x1 convs) and ``repeat_2.i`` +
``block8`` (Block8, x9 at scale 0.20 and one at 1.0 without the final ReLU, 1x3 / 3x1 convs)
concatenate their branches, project with ``conv2d`` (1x1 with bias, no BN) and add the scaled
projection to their input: ``relu(x + scale * conv2d(cat))``. The residual scale is folded into
``conv2d``'s weights and bias at load (float64), so the graph is the plain ``add_relu``. Then
``conv2d_7b`` (1x1 to 1536), global average pool, ``classif``. Any input of 75 pixels a side or more.

``se_inception_resnet_v2`` (no public checkpoint: native layout): SE (r = 16, ``C // r``, ReLU,
sigmoid, 1x1-conv FCs with bias, keys ``<block>.se.fc1`` / ``.fc2``) on the residual branch of every
residual module, before the sum, as in an SE-ResNet module (the paper's Fig. 3): the branch as it is
added (``scale * conv2d(cat)``) is squeezed, excited and rescaled, then
``relu(x + se(branch))`` (``block8``: no ReLU). The stem and the three non-residual
modules (``mixed_5b``, ``mixed_6a``, ``mixed_7a``) have no SE.

``bninception`` -- native layout: Cadene pretrainedmodels 0.7.4 ``bninception`` (BN-Inception as
converted from Caffe), key for key: flat names, every conv with a bias and a BatchNorm (eps 1e-5)
named ``<conv>_bn`` (``conv1_7x7_s2``/``conv1_7x7_s2_bn``, ``inception_3a_1x1``,
``inception_3a_3x3_reduce``, ``inception_3a_double_3x3_1``, ``inception_3a_pool_proj``, ...),
``last_linear``. Cadene's forward applies in-place ReLUs to the BN outputs it later reads, so every
conv is conv+BN+ReLU. Pools are Caffe's ceil-mode: 3x3/2 max after the two stem stages and in the
reduction modules (3c, 4e, which have no 1x1 and no pool projection), 3x3/1 pad 1 average
(``count_include_pad=True``) before the pool projections (5b: max), and a fixed 7x7 average pool
before ``last_linear``. That pool makes it a 224-only network (inputs of 223 to 230 pixels a side give
the 7x7 map; anything else is refused, naming those sizes); its checkpoint expects BGR input in 0-255
minus the means 104/117/128 (its pretrained config below).

``se_bninception`` (native layout): SE (r = 16, ``C // r``) on each Inception module's
concatenated output, the SE-Inception module of the paper's Fig. 2, for all ten modules (3a-5b),
keys ``inception_<m>_se.fc1`` / ``.fc2``.

Complexity counted on the graphs that run (``se-multi info``: multiply-adds plus SE gate multiplies,
the paper's convention; 2026-12-02): BN-Inception 2.033 G at 224 (paper 2.03), SE-BN-Inception
2.034 G (paper 2.04), 11.30 M / 11.94 M parameters. Inception-ResNet-v2 6.469 G at 224 and 13.156 G
at 299 (its checkpoints' size), SE 6.483 G / 13.176 G, 55.84 M / 64.39 M parameters. The paper's
11.75 / 11.76 (its Table 2 says 224) is this graph with 34 / 16 / 7 grids in place of the 35 / 17 / 8
it has at 299: 11.732 G / 11.751 G at 297 or 298 pixels (within 0.2% and 0.1%), so the paper's Caffe
model is one row smaller than TF-slim's after the stem at 299; neither 224 nor 299 gives it.
"""

from __future__ import annotations

import functools

import numpy as np

from se_multi import reference as ref
from se_multi.models.registry import register_model
from se_multi.nn import AvgPool2d, ConvNormAct, Linear, MaxPool2d, Module, Sequential, SqueezeExcite
from se_multi.pretrained import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD, PretrainedCfg, timm_cfg
from se_multi.shapes import ShapeError, conv_output_size, pool_output_size


def _se(channels: int, reduction: float) -> SqueezeExcite:
    return SqueezeExcite(channels, ref.reduced_channels(channels, reduction), bias=True)


def _check_reduction(reduction) -> None:
    if isinstance(reduction, bool) or not isinstance(reduction, (int, float)) or reduction <= 0:
        raise ValueError(f"reduction must be a positive number; got {reduction!r}")


def _check_classes(num_classes) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")


# =========================================================================== pretrained configs
#: timm 1.0.31 ``inception_resnet_v2.py`` ``_cfg``: 299x299, crop_pct 0.8975, bicubic, Inception
#: mean/std (0.5); Cadene's ``bninception``: 224x224 BGR in 0-255 minus 104/117/128, std 1, and
#: pretrainedmodels' ``TransformImage`` (resize to floor(224 / 0.875) = 256, bilinear, centre crop).
#: The SE versions have no published weights and take their plain twin's transform.
_IRV2 = dict(input_size=(3, 299, 299), crop_pct=0.8975, interpolation="bicubic", mean=IMAGENET_INCEPTION_MEAN,
             std=IMAGENET_INCEPTION_STD)
_CAFFE_BGR = dict(input_space="BGR", input_range=(0, 255), mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0))
PRETRAINED: dict[str, tuple[PretrainedCfg, ...]] = {
    "inception_resnet_v2": (timm_cfg("inception_resnet_v2.tf_in1k", **_IRV2),
                            timm_cfg("inception_resnet_v2.tf_ens_adv_in1k", **_IRV2)),
    "se_inception_resnet_v2": (PretrainedCfg("se_inception_resnet_v2.untrained", **_IRV2),),
    "bninception": (PretrainedCfg("bninception.imagenet", **_CAFFE_BGR,
                                  url="http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-239d2248.pth"),),
    "se_bninception": (PretrainedCfg("se_bninception.untrained", **_CAFFE_BGR),),
}


# =========================================================================== Inception-ResNet-v2
class BasicConv(Module):
    """timm's ``BasicConv2d``: conv (no bias) + BN (eps 1e-3) + ReLU, keys ``conv`` / ``bn``."""

    def __init__(self, in_chs: int, out_chs: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = ConvNormAct(in_chs, out_chs, kernel, stride, padding=padding, conv="conv", bn="bn", eps=1e-3)

    def forward(self, ops, x):
        return self.conv(ops, x)


def _seq(*layers) -> Sequential:
    return Sequential(*layers)


class ScaledProjection(Module):
    """A residual module's ``conv2d`` (1x1, bias, no BN) times the residual scale, folded at load."""

    flat = True

    def __init__(self, in_chs: int, out_chs: int, scale: float, name: str = "conv2d"):
        super().__init__()
        self.name, self.scale = name, float(scale)
        self.declare(f"{name}.weight", (out_chs, in_chs, 1, 1), "weight")
        self.declare(f"{name}.bias", (out_chs,), "bias")

    def layer_name(self, prefix: str) -> str:
        return prefix + self.name

    def _bind(self, local, ops):
        self.w = ops.param(np.asarray(local[f"{self.name}.weight"], np.float64) * self.scale, "conv")
        self.b = ops.param(np.asarray(local[f"{self.name}.bias"], np.float64) * self.scale, "vector")

    def forward(self, ops, x):
        return ops.conv2d_act(x, self.w, self.b, None)


class Mixed5b(Module):
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv(192, 96, 1)
        self.branch1 = _seq(BasicConv(192, 48, 1), BasicConv(48, 64, 5, padding=2))
        self.branch2 = _seq(BasicConv(192, 64, 1), BasicConv(64, 96, 3, padding=1), BasicConv(96, 96, 3, padding=1))
        self.branch3 = _seq(AvgPool2d(3, 1, 1, count_include_pad=False), BasicConv(192, 64, 1))

    def forward(self, ops, x):
        return ops.concat_channels([self.branch0(ops, x), self.branch1(ops, x), self.branch2(ops, x),
                                    self.branch3(ops, x)])


class Mixed6a(Module):
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv(320, 384, 3, stride=2)
        self.branch1 = _seq(BasicConv(320, 256, 1), BasicConv(256, 256, 3, padding=1), BasicConv(256, 384, 3, stride=2))
        self.branch2 = MaxPool2d(3, 2)

    def forward(self, ops, x):
        return ops.concat_channels([self.branch0(ops, x), self.branch1(ops, x), self.branch2(ops, x)])


class Mixed7a(Module):
    def __init__(self):
        super().__init__()
        self.branch0 = _seq(BasicConv(1088, 256, 1), BasicConv(256, 384, 3, stride=2))
        self.branch1 = _seq(BasicConv(1088, 256, 1), BasicConv(256, 288, 3, stride=2))
        self.branch2 = _seq(BasicConv(1088, 256, 1), BasicConv(256, 288, 3, padding=1),
                            BasicConv(288, 320, 3, stride=2))
        self.branch3 = MaxPool2d(3, 2)

    def forward(self, ops, x):
        return ops.concat_channels([self.branch0(ops, x), self.branch1(ops, x), self.branch2(ops, x),
                                    self.branch3(ops, x)])


class ResidualInception(Module):
    """Block35 / Block17 / Block8: branches, concat, scaled ``conv2d``, (SE,) sum, ReLU."""

    def __init__(self, kind: str, scale: float, relu: bool = True, se_reduction: float | None = None):
        super().__init__()
        if kind == "block35":
            channels, cat = 320, 128
            self.branch0 = BasicConv(320, 32, 1)
            self.branch1 = _seq(BasicConv(320, 32, 1), BasicConv(32, 32, 3, padding=1))
            self.branch2 = _seq(BasicConv(320, 32, 1), BasicConv(32, 48, 3, padding=1), BasicConv(48, 64, 3, padding=1))
        elif kind == "block17":
            channels, cat = 1088, 384
            self.branch0 = BasicConv(1088, 192, 1)
            self.branch1 = _seq(BasicConv(1088, 128, 1), BasicConv(128, 160, (1, 7), padding=(0, 3)),
                                BasicConv(160, 192, (7, 1), padding=(3, 0)))
        elif kind == "block8":
            channels, cat = 2080, 448
            self.branch0 = BasicConv(2080, 192, 1)
            self.branch1 = _seq(BasicConv(2080, 192, 1), BasicConv(192, 224, (1, 3), padding=(0, 1)),
                                BasicConv(224, 256, (3, 1), padding=(1, 0)))
        else:
            raise ValueError(f"unknown residual Inception module {kind!r}")
        self.branches = [m for m in (getattr(self, f"branch{i}", None) for i in range(3)) if m is not None]
        self.conv2d = ScaledProjection(cat, channels, scale)
        self.relu = relu
        self.se = _se(channels, se_reduction) if se_reduction else None

    def forward(self, ops, x):
        out = self.conv2d(ops, ops.concat_channels([b(ops, x) for b in self.branches]))
        if self.se is None:
            return ops.add_relu(out, x) if self.relu else ops.add(out, x)
        gates = self.se.gates(ops, out)
        return ops.scale_add_relu(out, gates, x) if self.relu else ops.add(ops.scale(out, gates), x)


class InceptionResNetV2(Module):
    """timm's ``InceptionResnetV2`` (see the module docstring); ``se_reduction``: SE in every
    residual module (``None``: the plain network)."""

    def __init__(self, num_classes: int = 1000, se_reduction: float | None = None):
        super().__init__()
        _check_classes(num_classes)
        if se_reduction is not None:
            _check_reduction(se_reduction)
        self.num_classes = num_classes
        self.conv2d_1a = BasicConv(3, 32, 3, stride=2)
        self.conv2d_2a = BasicConv(32, 32, 3)
        self.conv2d_2b = BasicConv(32, 64, 3, padding=1)
        self.maxpool_3a = MaxPool2d(3, 2)
        self.conv2d_3b = BasicConv(64, 80, 1)
        self.conv2d_4a = BasicConv(80, 192, 3)
        self.maxpool_5a = MaxPool2d(3, 2)
        self.mixed_5b = Mixed5b()
        self.repeat = Sequential(*(ResidualInception("block35", 0.17, se_reduction=se_reduction) for _ in range(10)))
        self.mixed_6a = Mixed6a()
        self.repeat_1 = Sequential(*(ResidualInception("block17", 0.10, se_reduction=se_reduction) for _ in range(20)))
        self.mixed_7a = Mixed7a()
        self.repeat_2 = Sequential(*(ResidualInception("block8", 0.20, se_reduction=se_reduction) for _ in range(9)))
        self.block8 = ResidualInception("block8", 1.0, relu=False, se_reduction=se_reduction)
        self.conv2d_7b = BasicConv(2080, 1536, 1)
        self.num_features = 1536
        self.classif = Linear(1536, num_classes, name="classif")
        self.classifier_key = "classif.weight"
        self.stage_names = ["conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a",
                            "maxpool_5a", "mixed_5b", "repeat", "mixed_6a", "repeat_1", "mixed_7a", "repeat_2",
                            "block8", "conv2d_7b"]

    def forward_features(self, ops, x) -> dict:
        """Each stage's output by timm's module name (``conv2d_1a`` ... ``conv2d_7b``)."""
        out = {}
        for name in self.stage_names:
            x = out[name] = getattr(self, name)(ops, x)
        return out

    def forward(self, ops, x):
        x = list(self.forward_features(ops, x).values())[-1]
        return self.classif(ops, ops.global_avg_pool(x))


@register_model(pretrained=PRETRAINED["inception_resnet_v2"])
def inception_resnet_v2(num_classes: int = 1000) -> InceptionResNetV2:
    """Inception-ResNet-v2, timm layout (``timm/inception_resnet_v2.tf_in1k``, 299x299 by default)."""
    return InceptionResNetV2(num_classes)


@register_model(pretrained=PRETRAINED["se_inception_resnet_v2"])
def se_inception_resnet_v2(num_classes: int = 1000, reduction=16) -> InceptionResNetV2:
    """SE-Inception-ResNet-v2 (SENet paper, Table 2): SE on the residual branch of every residual
    module, before the sum; timm's layout plus ``<block>.se.fc1/fc2``."""
    return InceptionResNetV2(num_classes, se_reduction=reduction)


# =========================================================================== BN-Inception
class InceptionRow:
    """One BN-Inception module (Caffe's widths): input channels, 1x1 (0: none), 3x3 reduce -> 3x3,
    double-3x3 reduce -> 3x3 -> 3x3, the pool (``avg``/``max``) and its projection (0: none), stride."""

    def __init__(self, name, in_chs, n1x1, r3, n3, rd, d1, d2, pool, proj, stride=1):
        self.name, self.in_chs, self.n1x1, self.r3, self.n3 = name, in_chs, n1x1, r3, n3
        self.rd, self.d1, self.d2, self.pool, self.proj, self.stride = rd, d1, d2, pool, proj, stride

    @property
    def out_chs(self) -> int:
        return self.n1x1 + self.n3 + self.d2 + (self.proj or self.in_chs)


#: Cadene's ``BNInception`` (from the Caffe prototxt): 3c and 4e are the strided reduction modules
BNINCEPTION_MODULES = (
    InceptionRow("3a", 192, 64, 64, 64, 64, 96, 96, "avg", 32),
    InceptionRow("3b", 256, 64, 64, 96, 64, 96, 96, "avg", 64),
    InceptionRow("3c", 320, 0, 128, 160, 64, 96, 96, "max", 0, stride=2),
    InceptionRow("4a", 576, 224, 64, 96, 96, 128, 128, "avg", 128),
    InceptionRow("4b", 576, 192, 96, 128, 96, 128, 128, "avg", 128),
    InceptionRow("4c", 576, 160, 128, 160, 128, 160, 160, "avg", 128),
    InceptionRow("4d", 608, 96, 128, 192, 160, 192, 192, "avg", 128),
    InceptionRow("4e", 608, 0, 128, 192, 192, 256, 256, "max", 0, stride=2),
    InceptionRow("5a", 1056, 352, 192, 320, 160, 224, 224, "avg", 128),
    InceptionRow("5b", 1024, 352, 192, 320, 192, 224, 224, "max", 128),
)
#: the fixed average pool before ``last_linear`` (Cadene: ``AvgPool2d(7, stride=1, ceil_mode=True)``)
BNINCEPTION_POOL = 7


def _cbr(in_chs, out_chs, kernel, name, stride=1):
    """Caffe conv (with bias) + ``<name>_bn`` (eps 1e-5) + ReLU, flat keys."""
    return ConvNormAct(in_chs, out_chs, kernel, stride, padding=kernel // 2, bias=True, conv=name, bn=f"{name}_bn")


class BNInceptionModule(Module):
    """One Inception module (Cadene's flat keys), concatenated output, optional SE on it (Fig. 2)."""

    flat = True

    def __init__(self, row: InceptionRow, se_reduction: float | None = None):
        super().__init__()
        p, s = f"inception_{row.name}", row.stride
        self.row = row
        self.branches = []
        if row.n1x1:
            self.b1x1 = _cbr(row.in_chs, row.n1x1, 1, f"{p}_1x1")
            self.branches.append([self.b1x1])
        self.b3x3_reduce = _cbr(row.in_chs, row.r3, 1, f"{p}_3x3_reduce")
        self.b3x3 = _cbr(row.r3, row.n3, 3, f"{p}_3x3", stride=s)
        self.branches.append([self.b3x3_reduce, self.b3x3])
        self.bd_reduce = _cbr(row.in_chs, row.rd, 1, f"{p}_double_3x3_reduce")
        self.bd1 = _cbr(row.rd, row.d1, 3, f"{p}_double_3x3_1")
        self.bd2 = _cbr(row.d1, row.d2, 3, f"{p}_double_3x3_2", stride=s)
        self.branches.append([self.bd_reduce, self.bd1, self.bd2])
        if s == 2:
            self.pool = MaxPool2d(3, 2, 0, ceil_mode=True)
        elif row.pool == "avg":
            self.pool = AvgPool2d(3, 1, 1, ceil_mode=True, count_include_pad=True)
        else:
            self.pool = MaxPool2d(3, 1, 1, ceil_mode=True)
        pool_branch = [self.pool]
        if row.proj:
            self.pool_proj = _cbr(row.in_chs, row.proj, 1, f"{p}_pool_proj")
            pool_branch.append(self.pool_proj)
        self.branches.append(pool_branch)
        self.out_chs = row.out_chs
        if se_reduction:
            # a named (non-flat) child: keys inception_<m>_se.fc1 / .fc2
            setattr(self, f"{p}_se", _se(row.out_chs, se_reduction))
        object.__setattr__(self, "se", getattr(self, f"{p}_se", None))  # an alias, not a second child

    def layer_name(self, prefix: str) -> str:
        return f"{prefix}inception_{self.row.name}"

    def forward(self, ops, x):
        outs = []
        for branch in self.branches:
            y = x
            for layer in branch:
                y = layer(ops, y)
            outs.append(y)
        out = ops.concat_channels(outs)
        return out if self.se is None else self.se(ops, out)


def _bninception_map(side: int) -> int | None:
    """The last feature map's side for an input side, or ``None`` where the reduction modules'
    conv and pool branches disagree (Caffe's ceil-mode pools)."""
    s = conv_output_size(side, 7, 2, 6)                    # conv1 7x7/2 pad 3
    for _ in range(2):                                     # pool1, (conv2,) pool2: 3x3/2 ceil
        s = pool_output_size(s, 3, 2, 0, True)
    for _ in range(2):                                     # 3c, 4e
        conv, pool = conv_output_size(s, 3, 2, 2), pool_output_size(s, 3, 2, 0, True)
        if conv != pool or conv < 1:
            return None
        s = conv
    return s


@functools.cache  # a pure function of nothing; the size search calls it on every refused size
def bninception_sides() -> tuple[int, int]:
    """The input sides (smallest, largest) that give BN-Inception's 7x7 last map."""
    sides = [s for s in range(32, 1024) if _bninception_map(s) == BNINCEPTION_POOL]
    return sides[0], sides[-1]


class BNInception(Module):
    """Cadene's ``BNInception`` (see the module docstring); ``se_reduction``: SE on every module."""

    def __init__(self, num_classes: int = 1000, se_reduction: float | None = None):
        super().__init__()
        _check_classes(num_classes)
        if se_reduction is not None:
            _check_reduction(se_reduction)
        self.num_classes = num_classes
        self.conv1 = _cbr(3, 64, 7, "conv1_7x7_s2", stride=2)
        self.pool1 = MaxPool2d(3, 2, 0, ceil_mode=True)
        self.conv2_reduce = _cbr(64, 64, 1, "conv2_3x3_reduce")
        self.conv2 = _cbr(64, 192, 3, "conv2_3x3")
        self.pool2 = MaxPool2d(3, 2, 0, ceil_mode=True)
        self.stage_names = []
        for row in BNINCEPTION_MODULES:
            setattr(self, f"inception_{row.name}", BNInceptionModule(row, se_reduction))
            self.stage_names.append(f"inception_{row.name}")
        self.global_pool = AvgPool2d(BNINCEPTION_POOL, 1, 0, ceil_mode=True, count_include_pad=True)
        self.num_features = BNINCEPTION_MODULES[-1].out_chs
        self.last_linear = Linear(self.num_features, num_classes, name="last_linear")
        self.classifier_key = "last_linear.weight"

    def forward_features(self, ops, x) -> dict:
        """Each Inception module's output by its name (``inception_3a`` ... ``inception_5b``)."""
        x = self.pool1(ops, self.conv1(ops, x))
        x = self.pool2(ops, self.conv2(ops, self.conv2_reduce(ops, x)))
        out = {}
        for name in self.stage_names:
            x = out[name] = getattr(self, name)(ops, x)
        return out

    def forward(self, ops, x):
        h, w = ops.shape(x)[2:]
        if _bninception_map(h) != BNINCEPTION_POOL or _bninception_map(w) != BNINCEPTION_POOL:
            lo, hi = bninception_sides()
            raise ShapeError("avg_pool2d", f"BN-Inception ends in a fixed {BNINCEPTION_POOL}x{BNINCEPTION_POOL} "
                                           f"average pool (Cadene's global_pool): it takes inputs of {lo} to {hi} "
                                           f"pixels a side (224 is its size); got {h}x{w}")
        x = list(self.forward_features(ops, x).values())[-1]
        return self.last_linear(ops, ops.global_avg_pool(self.global_pool(ops, x)))


@register_model(pretrained=PRETRAINED["bninception"])
def bninception(num_classes: int = 1000) -> BNInception:
    """BN-Inception, Cadene pretrainedmodels layout (224x224, BGR 0-255 input minus 104/117/128)."""
    return BNInception(num_classes)


# the family's conformance case: the cheaper of its two networks (11.9M parameters; SE-Inception-
# ResNet-v2 has 64M, whose seeded weights cost more than its run at 79x77); ceil-mode pools and a
# fixed 7x7 pool, so 223 to 230 pixels a side; one image (4 GMACs at batch 2 on the float64
# reference for every backend and dtype; the other families check batches)
@register_model(pretrained=PRETRAINED["se_bninception"], conformance_input=(1, 3, 225, 229))
def se_bninception(num_classes: int = 1000, reduction=16) -> BNInception:
    """SE-BN-Inception (SENet paper, Fig. 2 and Table 2): SE on every Inception module's output."""
    return BNInception(num_classes, se_reduction=reduction)
