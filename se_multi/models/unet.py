"""U-Net with an SE-ResNet-50 encoder and scSE in the decoder, in segmentation-models-pytorch's layout.

The native layout is smp 0.6.0's ``Unet(encoder_name="se_resnet50", decoder_attention_type="scse",
classes=K)`` state dict, key for key:

- ``encoder.*``: the Caffe-layout SE-ResNet-50 (Cadene ``se_resnet50`` without its classifier);
  the skips are the stem before its max-pool (stride 2) and the outputs of ``layer1``-``layer3``;
- ``decoder.blocks.i`` (i = 0..4, no ``decoder.center`` for ResNet encoders): nearest 2x upsample,
  concatenate the skip, ``attention1`` (scSE, only where there is a skip -- block 4 declares it, as
  smp does, but never runs it), ``conv1`` and ``conv2`` (3x3 conv+BN+ReLU, keys ``convN.0``/``convN.1``),
  ``attention2`` (scSE); each scSE is ``attention.cSE.1/3`` + ``attention.sSE.0`` with ``C // 16``;
- ``segmentation_head.0``: 3x3 conv with bias to K classes, no activation (logits).

The output is N x K x H x W. Like smp, H and W must be multiples of 32 (the encoder's stride), so
every upsample is exactly 2x.
"""

from __future__ import annotations

from se_multi.models.registry import register_model
from se_multi.models.resnet import ARCHS, ResNet, SEConfig
from se_multi.nn import SCSE, ConvNormAct, Module, Sequential
from se_multi.pretrained import PretrainedCfg

ENCODER_CHANNELS = (64, 256, 512, 1024, 2048)  # stem, layer1..layer4
DECODER_CHANNELS = (256, 128, 64, 32, 16)
OUTPUT_STRIDE = 32


def _scse(channels: int, reduction: float) -> SCSE:
    # smp wraps SCSEModule in an Attention module: keys attentionN.attention.cSE.1 ...
    return SCSE(channels, reduction, cse_names=("attention.cSE.1", "attention.cSE.3"), sse_name="attention.sSE.0")


class DecoderBlock(Module):
    def __init__(self, in_chs: int, skip_chs: int, out_chs: int, reduction: float):
        super().__init__()
        self.has_skip = skip_chs > 0
        # declared in smp's order (the checkpoint's key order): conv1, attention1, conv2, attention2
        self.conv1 = ConvNormAct(in_chs + skip_chs, out_chs, 3, conv="conv1.0", bn="conv1.1")
        self.attention1 = _scse(in_chs + skip_chs, reduction)
        self.conv2 = ConvNormAct(out_chs, out_chs, 3, conv="conv2.0", bn="conv2.1")
        self.attention2 = _scse(out_chs, reduction)

    def forward(self, ops, x, skip=None):
        x = ops.upsample_nearest2x(x)
        if skip is not None:
            x = self.attention1(ops, ops.concat_channels([x, skip]))
        return self.attention2(ops, self.conv2(ops, self.conv1(ops, x)))


class UnetSCSE(Module):
    """Encoder (SE-ResNet-50, Caffe layout) -> 5 scSE decoder blocks -> 3x3 segmentation head."""

    def __init__(self, num_classes: int = 21, reduction: float = 16):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
        if isinstance(reduction, bool) or not isinstance(reduction, (int, float)) or reduction <= 0:
            raise ValueError(f"reduction must be a positive number (encoder SE and decoder scSE); got {reduction!r}")
        self.num_classes = num_classes
        self.encoder = ResNet(ARCHS["legacy_seresnet50"][0], num_classes=0, se=SEConfig.from_options(reduction))
        skips = tuple(reversed(ENCODER_CHANNELS[:-1])) + (0,)  # 1024, 512, 256, 64, none
        ins = (ENCODER_CHANNELS[-1],) + DECODER_CHANNELS[:-1]
        blocks = [DecoderBlock(i, s, o, reduction) for i, s, o in zip(ins, skips, DECODER_CHANNELS)]
        self.decoder = Module()
        self.decoder.blocks = Sequential(*blocks)
        self.head = ConvNormAct(DECODER_CHANNELS[-1], num_classes, 3, bias=True, act=None, bn=None,
                                conv="segmentation_head.0")
        self.classifier_key = "segmentation_head.0.weight"
        self.stage_names = [f"decoder.blocks.{i}" for i in range(len(blocks))]

    def check_size(self, ops, x) -> None:
        h, w = ops.shape(x)[2:]
        if h % OUTPUT_STRIDE or w % OUTPUT_STRIDE:
            raise ValueError(f"height and width must be multiples of {OUTPUT_STRIDE} (the encoder's output "
                             f"stride, so that every decoder upsample meets its skip); got {h}x{w}")

    def forward_features(self, ops, x) -> dict:
        """Each decoder block's output by its module name (``decoder.blocks.0`` ... ``.4``)."""
        self.check_size(ops, x)
        feats = self.encoder.stage_outputs(ops, x)
        skips = list(reversed(feats[:-1])) + [None]
        out, y = {}, feats[-1]
        for name, block, skip in zip(self.stage_names, self.decoder.blocks, skips):
            y = out[name] = block(ops, y, skip)
        return out

    def forward(self, ops, x):
        return self.head(ops, list(self.forward_features(ops, x).values())[-1])


#: smp Unet(se_resnet50): the encoder's 'imagenet' preprocessing (RGB, [0, 1], ImageNet mean/std)
#: with a 224 input, divisible by 32 as the U-Net needs; crop_pct 1.0 resizes the shorter side to
#: 224 and crops the square; 21 classes as the builder's default. No published weights: untrained.
PRETRAINED = (PretrainedCfg("unet_se_resnet50_scse.untrained", crop_pct=1.0, num_classes=21),)


@register_model(pretrained=PRETRAINED, conformance_input=(1, 3, 64, 32))  # segmentation output, sides of 32
def unet_se_resnet50_scse(num_classes: int = 21, reduction=16) -> UnetSCSE:
    """smp ``Unet("se_resnet50", decoder_attention_type="scse")``; ``num_classes`` defaults to
    Pascal VOC's 21 (the fixture's), and a checkpoint's own head sets it when one is loaded."""
    return UnetSCSE(num_classes, reduction)
