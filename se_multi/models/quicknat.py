"""QuickNAT, the scSE authors' dense F-CNN for brain segmentation, in their own key layout.

The native layout is ai-med ``quickNAT_pytorch``'s ``QuickNat(params)`` state dict, built from
ai-med ``nn-common-modules`` (commit 590df23) and ``squeeze_and_excitation``, key for key:

- ``encode1``-``encode4`` (``EncoderBlock``), ``bottleneck`` (``DenseBlock``), ``decode1``-``decode4``
  (``DecoderBlock``): each a dense block, ``BN -> PReLU -> conv`` three times with the block's input
  and every conv output concatenated before the next (``batchnorm1/2/3``, ``conv1/2`` 5x5 and
  ``conv3`` 1x1 with bias, and **one** ``prelu``, a single shared slope, used all three times);
- an encoder block ends with its SE block and a 2x2/2 max pool that keeps its indices; a decoder
  block max-unpools with its encoder's indices to that encoder's size, concatenates the encoder's
  output (skip first), runs its dense block, then its SE block. As the authors' ``forward`` does,
  ``decode4`` runs first (on the bottleneck, with ``encode4``'s skip), then ``decode1``, ``decode2``,
  ``decode3`` (with ``encode3``'s, ``encode2``'s, ``encode1``'s);
- the SE block is each block's ``SELayer``: ``se="cse"``: ``ChannelSELayer`` (``SELayer.fc1/fc2``,
  ``nn.Linear`` layers, r = 2); ``"sse"``: ``SpatialSELayer`` (``SELayer.conv``, 1x1 conv C -> 1);
  ``"scse"``: ``ChannelSpatialSELayer`` (``SELayer.cSE.*`` and ``SELayer.sSE.*``), combined as the
  authors' code does, ``max(cSE(x), sSE(x))`` (``scse_mode="max"``), or as the scSE paper writes
  it, ``cSE(x) + sSE(x)`` (``scse_mode="add"``); ``"none"``: no ``SELayer``. The bottleneck declares
  its ``SELayer`` too, but ``DenseBlock.forward`` never runs it (nor dropout, off at inference);
- ``classifier.conv``: 1x1 conv with bias to the classes (logits, N x K x H x W).

Input: one channel (an MRI slice); any size whose four 2x2/2 pools leave at least one pixel
(>= 16x16): each unpool restores its encoder's size, so odd sizes work as in the authors' code.
"""

from __future__ import annotations

from se_multi.models.registry import register_model
from se_multi.nn import ConvNormAct, Module, SpatialSE, SqueezeExcite, host_weight
from se_multi.pretrained import PretrainedCfg

SE_TYPES = ("none", "cse", "sse", "scse")
SCSE_MODES = ("max", "add")
POOL = (2, 2)


class BatchNorm2d(Module):
    """Inference BatchNorm as its own op (it cannot fold into the conv: a PReLU sits between)."""

    flat = True

    def __init__(self, channels: int, name: str, eps: float = 1e-5):
        super().__init__()
        self.name, self.eps = name, eps
        self.declare_batch_norm(name, channels)

    def layer_name(self, prefix: str) -> str:
        return prefix + self.name

    def _bind(self, local, ops):
        self.stats = [ops.param(host_weight(local[f"{self.name}.{p}"], ops), "vector")
                      for p in ("running_mean", "running_var", "weight", "bias")]

    def forward(self, ops, x):
        mean, var, weight, bias = self.stats
        return ops.batch_norm(x, mean, var, weight, bias, self.eps)


class PReLU(Module):
    """``nn.PReLU()``: one learnt slope shared by every channel (``prelu.weight``, shape (1,))."""

    flat = True

    def __init__(self, name: str = "prelu", channels: int = 1):
        super().__init__()
        self.name = name
        self.declare(f"{name}.weight", (channels,), "bias")  # the fixtures' recipe draws it as a bias

    def layer_name(self, prefix: str) -> str:
        return prefix + self.name

    def _bind(self, local, ops):
        self.slope = ops.param(host_weight(local[f"{self.name}.weight"], ops), "vector")

    def forward(self, ops, x):
        return ops.prelu(x, self.slope)


class ChannelSpatialSE(Module):
    """The authors' ``ChannelSpatialSELayer``: ``cSE`` (``nn.Linear`` fc1/fc2, ReLU, sigmoid) and
    ``sSE`` (``conv``), combined by ``mode``: ``"max"`` (their code) or ``"add"`` (the paper)."""

    is_se = True

    def __init__(self, channels: int, reduction: int = 2, mode: str = "max"):
        super().__init__()
        self.mode = mode
        self.cSE = SqueezeExcite(channels, channels // reduction, conv_fc=False, names=("fc1", "fc2"))
        self.sSE = SpatialSE(channels, name="conv")

    def forward(self, ops, x):
        return ops.scse(x, self.cSE.gates(ops, x), self.sSE.gates(ops, x), self.mode)


def check_options(model: str, se: str, scse_mode: str, kernel: int | None = None, **counts) -> None:
    """The argument checks the scSE authors' F-CNNs share (QuickNAT, SD-Net, FC-DenseNet): each of
    ``counts`` a positive int, ``kernel`` (where given) a positive odd int, ``se`` and ``scse_mode``
    known; a bad one is a ``ValueError`` naming the model, the argument and what came."""
    for label, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{model}: {label} must be a positive int; got {v!r}")
    if kernel is not None and (isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0):
        raise ValueError(f"{model}: kernel must be a positive odd int (the authors pad (k - 1) / 2); got {kernel!r}")
    if se not in SE_TYPES:
        raise ValueError(f"{model}: se must be one of {', '.join(SE_TYPES)}; got {se!r}")
    if scse_mode not in SCSE_MODES:
        raise ValueError(f"{model}: scse_mode must be 'max' (the authors' code) or 'add' (the paper); got {scse_mode!r}")


def se_layer(se: str, channels: int, reduction: int, scse_mode: str) -> Module | None:
    """The authors' ``SELayer`` of a block, or ``None``."""
    if se == "cse":
        return SqueezeExcite(channels, channels // reduction, conv_fc=False, names=("fc1", "fc2"))
    if se == "sse":
        return SpatialSE(channels, name="conv")
    if se == "scse":
        return ChannelSpatialSE(channels, reduction, scse_mode)
    return None


class DenseBlock(Module):
    """nn-common-modules' ``DenseBlock``: BN -> PReLU -> conv, three times, with concatenations."""

    def __init__(self, in_chs: int, filters: int, kernel: int, se: str, reduction: int, scse_mode: str):
        super().__init__()
        layer = se_layer(se, filters, reduction, scse_mode)
        if layer is not None:  # declared first, as the authors' __init__ does (the checkpoint's key order)
            self.SELayer = layer
        self.has_se = layer is not None
        conv = dict(bias=True, act=None, bn=None)
        self.conv1 = ConvNormAct(in_chs, filters, kernel, conv="conv1", **conv)
        self.conv2 = ConvNormAct(in_chs + filters, filters, kernel, conv="conv2", **conv)
        self.conv3 = ConvNormAct(in_chs + 2 * filters, filters, 1, conv="conv3", **conv)
        self.batchnorm1 = BatchNorm2d(in_chs, "batchnorm1")
        self.batchnorm2 = BatchNorm2d(in_chs + filters, "batchnorm2")
        self.batchnorm3 = BatchNorm2d(in_chs + 2 * filters, "batchnorm3")
        self.prelu = PReLU()

    def body(self, ops, x):
        o3 = self.conv1(ops, self.prelu(ops, self.batchnorm1(ops, x)))
        o4 = ops.concat_channels([x, o3])
        o7 = self.conv2(ops, self.prelu(ops, self.batchnorm2(ops, o4)))
        o8 = ops.concat_channels([x, o3, o7])
        return self.conv3(ops, self.prelu(ops, self.batchnorm3(ops, o8)))

    def forward(self, ops, x):
        return self.body(ops, x)  # the bottleneck: the authors' DenseBlock.forward runs no SELayer


class PoolingEncoder:
    """The authors' encoder blocks (QuickNAT's, SD-Net's), around their block's ``body``: the body,
    its SE layer, a 2x2/2 max pool keeping its indices -> ``(pooled, skip, indices)``."""

    def forward(self, ops, x):
        out = self.body(ops, x)
        if self.has_se:
            out = self.SELayer(ops, out)
        pooled, indices = ops.max_pool2d_indices(out, POOL, POOL)
        return pooled, out, indices


class UnpoolingDecoder:
    """The authors' decoder blocks: unpool with the encoder's indices to its skip's size, concatenate
    (skip first), the block's ``body``, its SE layer."""

    def forward(self, ops, x, skip, indices):
        up = ops.max_unpool2d(x, indices, tuple(ops.shape(skip)[2:]))
        out = self.body(ops, ops.concat_channels([skip, up]))
        return self.SELayer(ops, out) if self.has_se else out


class EncoderBlock(PoolingEncoder, DenseBlock):
    """nn-common-modules' ``EncoderBlock``."""


class DecoderBlock(UnpoolingDecoder, DenseBlock):
    """nn-common-modules' ``DecoderBlock``."""


class QuickNat(Module):
    """``QuickNat(params)`` of ai-med quickNAT_pytorch (see the module docstring)."""

    def __init__(self, num_classes: int = 28, in_chans: int = 1, num_filters: int = 64, kernel: int = 5,
                 se: str = "scse", scse_mode: str = "max", reduction: int = 2):
        super().__init__()
        check_options("quicknat", se, scse_mode, kernel, num_classes=num_classes, in_chans=in_chans,
                      num_filters=num_filters, reduction=reduction)
        self.num_classes, self.se, self.in_chans = num_classes, se, in_chans
        f = num_filters
        opts = dict(filters=f, kernel=kernel, se=se, reduction=reduction, scse_mode=scse_mode)
        self.encode1 = EncoderBlock(in_chans, **opts)
        for i in (2, 3, 4):
            setattr(self, f"encode{i}", EncoderBlock(f, **opts))
        self.bottleneck = DenseBlock(f, **opts)
        for i in (1, 2, 3, 4):
            setattr(self, f"decode{i}", DecoderBlock(2 * f, **opts))
        self.classifier = ConvNormAct(f, num_classes, 1, bias=True, act=None, bn=None, conv="classifier.conv")
        self.classifier_key = "classifier.conv.weight"
        self.stage_names = ["encode1", "encode2", "encode3", "encode4", "bottleneck",
                            "decode4", "decode1", "decode2", "decode3"]

    def forward_features(self, ops, x) -> dict:
        """Each block's output by its module name, in the order they run."""
        out, skips = {}, []
        for i in (1, 2, 3, 4):
            x, skip, indices = getattr(self, f"encode{i}")(ops, x)
            out[f"encode{i}"] = skip
            skips.append((skip, indices))
        x = out["bottleneck"] = self.bottleneck(ops, x)
        for name, (skip, indices) in zip(("decode4", "decode1", "decode2", "decode3"), reversed(skips)):
            x = out[name] = getattr(self, name)(ops, x, skip, indices)
        return out

    def forward(self, ops, x):
        return self.classifier(ops, self.forward_features(ops, x)["decode3"])


#: QuickNAT's input: one MRI slice (one channel, intensities as the model was trained on them, no
#: ImageNet normalisation: mean 0, std 1), 256x256 slices, 28 classes (the authors' setting). The
#: authors publish whole-model pickles (quickNAT_pytorch/saved_models), not state dicts: untrained here.
PRETRAINED = (PretrainedCfg("quicknat.untrained", input_size=(1, 256, 256), crop_pct=1.0, mean=(0.0,), std=(1.0,),
                            num_classes=28),)


#: validate checks the whole model in float64 and float32 only: a max-pool window whose two largest
#: values lie within a coarser dtype's rounding picks either, and the unpool moves that value, so a
#: float16 output jumps where such a tie falls (measured: 1e-3 to 2e-2 on torch/onnxruntime/mlx
#: float16, by input); every op, unpool included, is still checked at every dtype
@register_model(pretrained=PRETRAINED, conformance_input=(2, 1, 16, 24),
                conformance_options={"num_filters": 16}, conformance_dtypes=("float64", "float32"))
def quicknat(num_classes: int = 28, se: str = "scse", scse_mode: str = "max", in_chans: int = 1,
             num_filters: int = 64, reduction: int = 2) -> QuickNat:
    """ai-med ``QuickNat``: 1 input channel, ``num_filters`` 64, 5x5 kernels, ``se`` one of
    ``none``/``cse``/``sse``/``scse`` (the authors' ``se_block`` NONE/CSE/SSE/CSSE), scSE combined by
    ``max`` (their code) or ``add`` (the paper)."""
    return QuickNat(num_classes, in_chans, num_filters, 5, se, scse_mode, reduction)
