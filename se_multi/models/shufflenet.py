"""ShuffleNet 1x (g = 3), Zhang et al. 2017, and the SENet paper's SE-ShuffleNet (Table 3).

Architecture (ShuffleNet paper, Table 1, "1x", g = 3): a 3x3/2 stem conv to 24 channels (+BN+ReLU),
a 3x3/2 max pool, then stages 2, 3 and 4 of 4, 8 and 4 ShuffleNet units with 240, 480 and 960
output channels, global average pooling and a 960 -> classes FC. A unit (the paper's Fig. 2):

- its branch: 1x1 group conv (g groups) to the bottleneck width ``out / 4`` + BN + ReLU, channel
  shuffle, 3x3 depthwise conv (stride 1 or 2) + BN (no ReLU), 1x1 group conv + BN;
- stride 1: ``relu(branch + x)``; stride 2 (each stage's first unit): the shortcut is a 3x3/2
  average pool (padding 1, counting the padding, as ``nn.AvgPool2d(3, 2, 1)``), concatenated with
  the branch (which then outputs ``out - in`` channels), then ReLU;
- stage 2's first unit does not group its first 1x1 conv (its input has only 24 channels).

There is no public checkpoint of either model, so the key layout is this module's own, named like the
common PyTorch reimplementations: ``conv1``/``bn1`` (stem), ``stage{2,3,4}.{i}.conv1``/``bn1``,
``conv2``/``bn2`` (depthwise), ``conv3``/``bn3``, ``se.fc1``/``se.fc2`` (1x1 convs with bias), ``fc``.
Weights are seeded (``create_model(..., seed=)``).

Counted on the running graph at 224x224 (``se-multi info``; the paper's convention, multiply-adds
plus SE gate multiplies): see :func:`se_shufflenet_g3`'s docstring for the SE placement.
"""

from __future__ import annotations

from se_multi import reference as ref
from se_multi.models.registry import register_model
from se_multi.nn import AvgPool2d, ConvNormAct, Linear, MaxPool2d, Module, Sequential, SqueezeExcite
from se_multi.pretrained import PretrainedCfg

#: ShuffleNet 1x, g = 3 (the paper's Table 1): stem width, and (units, output channels) per stage
STEM_CHANNELS = 24
STAGES_G3 = ((4, 240), (8, 480), (4, 960))
STAGE_NAMES = ("stage2", "stage3", "stage4")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


class ShuffleUnit(Module):
    """One ShuffleNet unit (see the module docstring); ``reduction``: SE (r) on the branch output,
    before the sum (stride 1) or the concatenation (stride 2); ``None``: no SE."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, groups: int, group_first: bool = True,
                 reduction: float | None = None):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"a ShuffleNet unit has stride 1 or 2; got {stride!r}")
        if stride == 1 and in_chs != out_chs:
            raise ValueError(f"a stride-1 ShuffleNet unit keeps its width; got {in_chs} -> {out_chs}")
        branch = out_chs - in_chs if stride == 2 else out_chs
        mid = out_chs // 4
        self.stride, self.groups = stride, groups
        first = groups if group_first else 1
        if mid % groups or branch % groups or in_chs % first:
            raise ValueError(f"ShuffleNet unit {in_chs} -> {out_chs}: the bottleneck ({mid}) and branch ({branch}) "
                             f"widths must be divisible by groups={groups}")
        self.conv1 = ConvNormAct(in_chs, mid, 1, groups=first, act="relu", conv="conv1", bn="bn1")
        self.conv2 = ConvNormAct(mid, mid, 3, stride=stride, padding=1, groups=mid, act=None, conv="conv2", bn="bn2")
        self.conv3 = ConvNormAct(mid, branch, 1, groups=groups, act=None, conv="conv3", bn="bn3")
        if reduction is not None:
            self.se = SqueezeExcite(branch, ref.reduced_channels(branch, reduction), bias=True)
        else:
            self.se = None
        if stride == 2:
            self.shortcut = AvgPool2d(3, 2, padding=1, count_include_pad=True)

    def forward(self, ops, x):
        y = self.conv1(ops, x)
        if self.groups > 1:
            y = ops.channel_shuffle(y, self.groups)
        y = self.conv3(ops, self.conv2(ops, y))
        if self.stride == 1:
            if self.se is not None:
                return ops.scale_add_relu(y, self.se.gates(ops, y), x)
            return ops.add_relu(y, x)
        if self.se is not None:
            y = self.se(ops, y)
        return ops.relu(ops.concat_channels([self.shortcut(ops, x), y]))


class ShuffleNet(Module):
    """ShuffleNet (v1): stem, stages of :class:`ShuffleUnit`, pooled FC classifier."""

    def __init__(self, stages=STAGES_G3, groups: int = 3, num_classes: int = 1000, reduction: float | None = None,
                 stem_chs: int = STEM_CHANNELS):
        super().__init__()
        _positive_int("num_classes", num_classes)
        _positive_int("groups", groups)
        if reduction is not None and (isinstance(reduction, bool) or not isinstance(reduction, (int, float))
                                      or reduction <= 0):
            raise ValueError(f"reduction must be a positive number; got {reduction!r}")
        self.num_classes = num_classes
        self.stem = ConvNormAct(3, stem_chs, 3, stride=2, padding=1, act="relu", conv="conv1", bn="bn1")
        self.maxpool = MaxPool2d(3, 2, padding=1)
        in_chs = stem_chs
        self.stage_names = ["stem"]
        for i, (units, out_chs) in enumerate(stages):
            blocks = []
            for j in range(units):
                blocks.append(ShuffleUnit(in_chs, out_chs, 2 if j == 0 else 1, groups,
                                          group_first=not (i == 0 and j == 0), reduction=reduction))
                in_chs = out_chs
            setattr(self, STAGE_NAMES[i], Sequential(*blocks))
            self.stage_names.append(STAGE_NAMES[i])
        self.num_features = in_chs
        self.fc = Linear(in_chs, num_classes, name="fc")
        self.classifier_key = "fc.weight"

    def forward(self, ops, x):
        x = self.maxpool(ops, self.stem(ops, x))
        for name in STAGE_NAMES[:len(self.stage_names) - 1]:
            x = getattr(self, name)(ops, x)
        return self.fc(ops, ops.global_avg_pool(x))


# ============================================================================ pretrained configs
#: no published weights: seeded ones, with the ImageNet eval transform of the usual reimplementations
PRETRAINED: dict[str, tuple[PretrainedCfg, ...]] = {
    "shufflenet_g3": (PretrainedCfg("shufflenet_g3.untrained"),),
    "se_shufflenet_g3": (PretrainedCfg("se_shufflenet_g3.untrained"),),
}


# ============================================================================ builders
@register_model(pretrained=PRETRAINED["shufflenet_g3"])
def shufflenet_g3(num_classes: int = 1000) -> ShuffleNet:
    """ShuffleNet 1x, g = 3 (Zhang et al. 2017, Table 1): 137.46 MFLOPs and 1.866 M parameters at
    224x224 (the papers: 140 and 1.8; see :func:`se_shufflenet_g3`)."""
    return ShuffleNet(STAGES_G3, 3, num_classes)


# checked at batch 2, odd unequal sides: every unit kind (the ungrouped first unit, stride-2 concat,
# stride-1 SE residual) at a few MFLOPs
@register_model(pretrained=PRETRAINED["se_shufflenet_g3"], conformance_input=(2, 3, 37, 29))
def se_shufflenet_g3(num_classes: int = 1000, reduction: float = 16) -> ShuffleNet:
    """SE-ShuffleNet 1x, g = 3 (SENet paper, Table 3: 140 -> 142 MFLOPs, 1.8 -> 2.4 M parameters).

    SE placement, chosen by the counts: SE (r = 16, ``C // r`` hidden units, ReLU, sigmoid, FCs with
    bias) on every unit's *branch output*, after its last 1x1 group conv + BN, before the sum with
    the identity (stride 1: the standard SE residual integration) or the concatenation with the
    average-pool shortcut (stride 2: there the branch has ``out - in`` channels, 216/240/480).
    Counted on the graph at 224x224 (``se-multi info``): 1.866 M -> 2.485 M parameters (+0.619 M;
    paper 1.8 -> 2.4, +0.6) and 137.46 -> 139.68 MFLOPs (+2.21: +0.61 M excitation multiply-adds,
    +1.60 M gate multiplies; paper 140 -> 142, +2). The alternatives miss the parameter step: SE on
    each unit's whole output (after the concatenation) adds +0.729 M, SE after the 3x3 depthwise conv
    (the ``out / 4`` bottleneck) +0.046 M. The baseline itself differs from the paper's figures:
    140 MFLOPs is the ShuffleNet paper's budget for every "1x" network (g = 1 to 8 alike, its
    Table 2), and the network as its Table 1 specifies costs 137.46 (-1.8%); its 1.866 M parameters
    (OpenMMLab's ShuffleNetV1 1.0x g = 3 lists 1.87 M) round to 1.9, not the SENet paper's 1.8, which
    no reading of Table 1 reproduces without also losing MFLOPs (a bottleneck of ``(out - in) / 4``
    in the stride-2 units counts 1.815 M but 127.06 MFLOPs).
    ``reduction``: r."""
    return ShuffleNet(STAGES_G3, 3, num_classes, reduction=reduction)
