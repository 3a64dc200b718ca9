"""SD-Net, the scSE paper's second F-CNN, built from the scSE authors' own blocks, in their key layout.

The scSE paper (Roy, Navab, Wachinger) evaluates cSE/sSE/scSE inside U-Net, SD-Net and FC-DenseNet.
SD-Net (Roy et al., MICCAI 2017) is an encoder-decoder with no dense connections: three encoder
blocks, a bottleneck, three decoder blocks, max-pooling indices passed to the decoder's unpooling.
The authors publish its blocks in ai-med ``nn-common-modules`` (commit 590df23, as QuickNAT's
fixture; the blocks are unchanged at HEAD) and compose them in their ``SDnetSegmentor``
(ai-med few-shot-segmentation); this module declares that composition, key for key:

- ``encode1``-``encode3`` (``SDnetEncoderBlock``): ``conv`` (k x k, bias, padding (k - 1) / 2) ->
  ``prelu`` (one shared slope) -> ``batchnorm``, then the block's SE layer, then a 2x2/2 max pool
  keeping its indices (``GenericBlock``'s order: the BatchNorm comes *after* the PReLU, so it is
  an op of its own, not folded into the conv);
- ``bottleneck`` (``GenericBlock``): conv -> PReLU -> BN. Like QuickNAT's, it declares an SE layer
  that its ``forward`` never runs;
- ``decode1``-``decode3`` (``SDnetDecoderBlock``): max-unpool with the matching encoder's indices to
  that encoder's size, concatenate (skip first, 2F channels), conv -> PReLU -> BN, SE layer.
  ``decode1`` pairs with ``encode3``, ``decode3`` with ``encode1``, as ``SDnetSegmentor.forward``;
- ``classifier.conv`` (``ClassifierBlock``): 1x1 conv with bias to the classes (logits N x K x H x W).

Each block declares its ``SELayer`` first (the checkpoint's key order), with the authors' names:
``se="sse"``: ``SpatialSELayer`` (``SELayer.conv``); ``"cse"``: ``ChannelSELayer``
(``SELayer.fc1/fc2``, ``nn.Linear``, r = 2); ``"scse"``: ``ChannelSpatialSELayer`` (``SELayer.cSE.*``,
``SELayer.sSE.*``; ``max`` as their code, or the paper's ``add``); ``"none"``. Two facts of the
authors' code a user of their checkpoints needs: ``GenericBlock`` builds a
``ChannelSpatialSELayer`` for ``se_block="CSE"`` too (so their "CSE" checkpoints carry scSE keys:
load them as ``se="scse"``; this module's ``"cse"`` is the paper's channel SE), and the SD-Net
blocks call their SE layer with a second argument that only ``SpatialSELayer.forward`` accepts, so
their code runs SD-Net with ``"SSE"`` or ``"NONE"`` only (the fixture is ``"SSE"``; cSE and scSE
here are QuickNAT's layers, checked against the authors' code there).

A checkpoint's own settings are read from it (:func:`_read_settings`): which SE layer, kernel
size, width and input channels, so the authors' checkpoints load with no options.

Input: one channel (an MRI slice), any size whose three 2x2/2 pools leave a pixel (>= 8x8).
Kernels default to 7x7, SD-Net's published setting (the blocks' docstrings show 5x5, QuickNAT's).
"""

from __future__ import annotations

import numpy as np

from se_multi.models.quicknat import BatchNorm2d, PoolingEncoder, PReLU, UnpoolingDecoder, check_options, se_layer
from se_multi.models.registry import register_model
from se_multi.nn import ConvNormAct, Module
from se_multi.pretrained import PretrainedCfg


class GenericBlock(Module):
    """nn-common-modules' ``GenericBlock``: conv (bias) -> PReLU -> BatchNorm (no SE run)."""

    def __init__(self, in_chs: int, filters: int, kernel: int, se: str, reduction: int, scse_mode: str):
        super().__init__()
        layer = se_layer(se, filters, reduction, scse_mode)
        if layer is not None:  # declared first, as the authors' __init__ does
            self.SELayer = layer
        self.has_se = layer is not None
        self.conv = ConvNormAct(in_chs, filters, kernel, bias=True, act=None, bn=None, conv="conv")
        self.prelu = PReLU()
        self.batchnorm = BatchNorm2d(filters, "batchnorm")

    def body(self, ops, x):
        return self.batchnorm(ops, self.prelu(ops, self.conv(ops, x)))

    def forward(self, ops, x):
        return self.body(ops, x)


class EncoderBlock(PoolingEncoder, GenericBlock):
    """``SDnetEncoderBlock``: the generic block, its SE layer, a 2x2/2 max pool with indices."""


class DecoderBlock(UnpoolingDecoder, GenericBlock):
    """``SDnetDecoderBlock``: unpool to the skip's size, concatenate (skip first), block, SE layer."""


class SDNet(Module):
    """SD-Net as the authors' ``SDnetSegmentor`` composes their blocks (see the module docstring)."""

    def __init__(self, num_classes: int = 28, in_chans: int = 1, num_filters: int = 64, kernel: int = 7,
                 se: str = "sse", scse_mode: str = "max", reduction: int = 2):
        super().__init__()
        check_options("sdnet", se, scse_mode, kernel, num_classes=num_classes, in_chans=in_chans,
                      num_filters=num_filters, reduction=reduction)
        self.num_classes, self.se, self.in_chans = num_classes, se, in_chans
        f = num_filters
        opts = dict(filters=f, kernel=kernel, se=se, reduction=reduction, scse_mode=scse_mode)
        self.encode1 = EncoderBlock(in_chans, **opts)
        self.encode2 = EncoderBlock(f, **opts)
        self.encode3 = EncoderBlock(f, **opts)
        self.bottleneck = GenericBlock(f, **opts)
        for i in (1, 2, 3):
            setattr(self, f"decode{i}", DecoderBlock(2 * f, **opts))
        self.classifier = ConvNormAct(f, num_classes, 1, bias=True, act=None, bn=None, conv="classifier.conv")
        self.classifier_key = "classifier.conv.weight"
        self.stage_names = ["encode1", "encode2", "encode3", "bottleneck", "decode1", "decode2", "decode3"]

    def forward_features(self, ops, x) -> dict:
        """Each block's output by its module name, in the order they run."""
        out, skips = {}, []
        for i in (1, 2, 3):
            x, skip, indices = getattr(self, f"encode{i}")(ops, x)
            out[f"encode{i}"] = skip
            skips.append((skip, indices))
        x = out["bottleneck"] = self.bottleneck(ops, x)
        for name, (skip, indices) in zip(("decode1", "decode2", "decode3"), reversed(skips)):
            x = out[name] = getattr(self, name)(ops, x, skip, indices)
        return out

    def forward(self, ops, x):
        return self.classifier(ops, self.forward_features(ops, x)["decode3"])


#: the keys that tell a block's SE layer apart, in the authors' names
_SE_KEYS = (("scse", "encode1.SELayer.cSE.fc1.weight"), ("cse", "encode1.SELayer.fc1.weight"),
            ("sse", "encode1.SELayer.conv.weight"))


def _read_settings(state: dict):
    """The authors' layout is the native one; what it implies about the model: its SE layer, kernel
    size, width and input channels, read from the keys and the first conv's shape. Declines (``None``)
    a state that is not an SD-Net checkpoint, so the loader reports the key mismatch itself."""
    first = state.get("encode1.conv.weight")
    if first is None or len(np.shape(first)) != 4:
        return None
    filters, in_chans, kh, kw = (int(d) for d in np.shape(first))
    options = {"num_filters": filters, "in_chans": in_chans,
               "se": next((se for se, key in _SE_KEYS if key in state), "none")}
    if kh == kw:  # a non-square kernel is no SD-Net: the declaration's shape check reports it
        options["kernel"] = kh
    return state, options


#: SD-Net's input: one MRI slice, as QuickNAT's (no ImageNet normalisation: mean 0, std 1), 28
#: classes (the authors' whole-brain setting). No public SD-Net checkpoint exists: untrained here.
PRETRAINED = (PretrainedCfg("sdnet.untrained", input_size=(1, 256, 256), crop_pct=1.0, mean=(0.0,), std=(1.0,),
                            num_classes=28),)


#: validate checks the whole model in float64 and float32 only, for QuickNAT's reason (a max-pool
#: near-tie in a coarser dtype picks the other pixel and the unpool moves it); every op is checked at
#: every dtype
@register_model(pretrained=PRETRAINED, layouts=[("ai-med", _read_settings)], conformance_input=(2, 1, 16, 24),
                conformance_options={"num_filters": 16, "se": "scse"}, conformance_dtypes=("float64", "float32"))
def sdnet(num_classes: int = 28, se: str = "sse", scse_mode: str = "max", in_chans: int = 1, num_filters: int = 64,
          kernel: int = 7, reduction: int = 2) -> SDNet:
    """SD-Net from the scSE authors' blocks: 1 input channel, ``num_filters`` 64, 7x7 kernels, ``se``
    one of ``none``/``cse``/``sse``/``scse`` (default ``sse``: the one their SD-Net blocks run), scSE
    combined by ``max`` (their code) or ``add`` (the paper)."""
    return SDNet(num_classes, in_chans, num_filters, kernel, se, scse_mode, reduction)
