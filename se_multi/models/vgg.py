"""VGG-16 with BatchNorm, and the SENet paper's SE-VGG-16 (Table 2: 15.47 / 15.48 GFLOPs at 224²).

Native layout: torchvision 0.28 ``models.vgg16_bn()``'s state dict, key for key:

- ``features.N``: the 13 3x3 convs (padding 1, *with* bias) each followed by BatchNorm (eps 1e-5) and
  ReLU, numbered as torchvision's ``nn.Sequential`` numbers them (conv ``N``, BN ``N+1``, ReLU ``N+2``),
  with a 2x2/2 max-pool after each of the five blocks (at ``features.6``, ``.13``, ``.23``, ``.33``,
  ``.43``: the block outputs :meth:`VGG.forward_features` returns, by those names);
- ``classifier.0`` (25088 -> 4096, ReLU, dropout), ``classifier.3`` (4096 -> 4096, ReLU, dropout),
  ``classifier.6`` (4096 -> classes); dropout is the identity at inference.

torchvision puts ``AdaptiveAvgPool2d((7, 7))`` between the two, then flattens. se_multi has no
adaptive pool (nor a flatten): ``adaptive pool -> flatten -> classifier.0`` is one linear map of the
last feature map, so it runs as one conv whose kernel is the whole map. With a 7x7 map (inputs of
224 to 255 pixels a side) the pool is the identity and the kernel is ``classifier.0.weight`` reshaped
to (4096, 512, 7, 7). For another map size h x w the pool's bins (PyTorch's: rows
``floor(i*h/7)`` to ``ceil((i+1)*h/7)``) are folded into that kernel once, at load, in float64:
``K[o, c, y, x] = sum_ij W[o, c, i, j] * P_h[i, y] * P_w[j, x]`` (``P`` the bins' averaging weights).
That is exact, but the folded weights fit one map size, so a model is built for one input size:
``img_size=(H, W)`` (default 224 x 224), and it accepts exactly the inputs that give the same map
(``32*h <= H < 32*(h+1)``, the same for W); any other input is refused before a backend runs, with
an error that names the sizes that fit and the option that changes them.

SE-VGG-16 (``se_vgg16_bn``, no public checkpoint: this layout is the native one): the paper puts SE
"after the non-linearity that ends each block" of a non-residual network. In VGG every conv+BN+ReLU
is such a block: SE (r = 16, ``C // r`` hidden units, ReLU, sigmoid, 1x1-conv FCs with bias, keys
``features.{R}.se.fc1`` / ``.fc2`` where ``R`` is the index of the ReLU it follows) goes after each of
the 13 ReLUs. Counted on the graph at 224² (``se-multi info``, multiply-adds plus SE gate
multiplies, the paper's convention): VGG-16-BN 15.470 G (paper 15.47); SE after every conv 15.484 G
(paper 15.48: +13.5 M gate multiplies, +0.2 M excitation multiply-adds) and +0.231 M parameters
over 138.366 M. SE after the last conv of each of the five stages only (``se_placement="stage"``)
gives 15.477 G and +0.078 M, which also rounds to 15.48: Table 2 cannot tell the two apart, so the
default follows the paper's wording for non-residual networks applied to VGG's unit (conv+BN+ReLU),
and the other placement is an option.
"""

from __future__ import annotations

import numpy as np

from se_multi import reference as ref
from se_multi.models.registry import register_model
from se_multi.nn import ConvNormAct, Linear, MaxPool2d, Module, SqueezeExcite, host_weight
from se_multi.pretrained import PretrainedCfg
from se_multi.shapes import ShapeError

#: VGG-16's convs per block and their widths (torchvision ``cfgs["D"]``)
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
#: torchvision's adaptive pool output, and the stride of the five max-pools together
POOL_SIZE = 7
STRIDE = 32
HIDDEN = 4096
SE_PLACEMENTS = ("conv", "stage")


def adaptive_avg_matrix(size: int, out: int = POOL_SIZE) -> np.ndarray:
    """PyTorch's ``adaptive_avg_pool`` along one axis as an (out, size) matrix: row ``i`` averages
    inputs ``floor(i*size/out)`` to ``ceil((i+1)*size/out) - 1``."""
    m = np.zeros((out, size))
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def map_size(img_size: tuple[int, int]) -> tuple[int, int]:
    """The last feature map (h, w) for an input (H, W): five 2x2/2 floor-mode pools."""
    return img_size[0] // STRIDE, img_size[1] // STRIDE


def _img_size(value) -> tuple[int, int]:
    sides = list(value) if isinstance(value, (tuple, list)) else [value]
    if len(sides) not in (1, 2) or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in sides):
        raise ValueError(f"img_size must be one side or (H, W) of ints; got {value!r}")
    h, w = int(sides[0]), int(sides[-1])
    if min(h, w) < STRIDE:
        raise ValueError(f"img_size {h}x{w}: VGG needs at least {STRIDE} pixels a side (five 2x2 max-pools)")
    return h, w


class PooledClassifierConv(Module):
    """``AdaptiveAvgPool2d((7, 7))`` + flatten + ``Linear(512*7*7, 4096)`` + ReLU as one conv, its
    kernel the whole (h, w) feature map (see the module docstring). Declares ``{name}.weight``
    (out, C*7*7) and ``{name}.bias`` as the checkpoint holds them."""

    flat = True

    def __init__(self, channels: int, out_features: int, img_size: tuple[int, int], name: str = "0"):
        super().__init__()
        self.channels, self.out_features, self.name = channels, out_features, name
        self.img_size = img_size
        self.map = map_size(img_size)
        self.declare(f"{name}.weight", (out_features, channels * POOL_SIZE * POOL_SIZE), "weight")
        self.declare(f"{name}.bias", (out_features,), "bias")

    def layer_name(self, prefix: str) -> str:
        return prefix + self.name

    def accepted(self) -> str:
        (h, w), (H, W) = self.map, self.img_size
        return (f"inputs of {STRIDE * h} to {STRIDE * h + STRIDE - 1} rows and {STRIDE * w} to "
                f"{STRIDE * w + STRIDE - 1} columns (a {h}x{w} last feature map; built with img_size=({H}, {W}))")

    def _bind(self, local, ops):
        h, w = self.map
        weight = local[f"{self.name}.weight"]
        if (h, w) == (POOL_SIZE, POOL_SIZE):
            kernel = host_weight(weight, ops).reshape(self.out_features, self.channels, h, w)
        else:
            # K[o, c, y, x] = sum_ij W[o, c, i, j] P_h[i, y] P_w[j, x]: a float64 GEMM with the Kronecker
            # product of the two axes' bins (49 x h*w), by blocks of rows (no float64 copy of all of W),
            # each block rounded once into the backend's param_dtype (host_weight)
            bins = np.kron(adaptive_avg_matrix(h), adaptive_avg_matrix(w))
            rows = np.asarray(weight).reshape(self.out_features, -1)
            kernel = np.empty((self.out_features, self.channels * h * w), ops.param_dtype)
            for start in range(0, self.out_features, 256):
                block = rows[start:start + 256].astype(np.float64).reshape(-1, POOL_SIZE * POOL_SIZE)
                kernel[start:start + 256] = (block @ bins).reshape(-1, self.channels * h * w)
            kernel = kernel.reshape(self.out_features, self.channels, h, w)
        self.w = ops.param(kernel, "conv")
        self.b = ops.param(host_weight(local[f"{self.name}.bias"], ops), "vector")

    def forward(self, ops, x):
        shape = tuple(ops.shape(x))
        if shape[2:] != self.map:
            raise ShapeError("adaptive_avg_pool2d", f"a {shape[2]}x{shape[3]} last feature map; this model's "
                                                    f"classifier is folded for {self.accepted()}: build the model "
                                                    "with img_size=(H, W) for another input size")
        return ops.global_avg_pool(ops.conv2d_act(x, self.w, self.b, "relu"))


class VGG(Module):
    """VGG with BatchNorm (torchvision layout), optionally with SE after the ReLUs (see module docstring)."""

    def __init__(self, blocks=VGG16_BLOCKS, num_classes: int = 1000, img_size=(224, 224), se: bool = False,
                 reduction: float = 16, se_placement: str = "conv", hidden_features: int = HIDDEN):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
        if se_placement not in SE_PLACEMENTS:
            raise ValueError(f"se_placement must be one of {SE_PLACEMENTS}; got {se_placement!r}")
        if isinstance(reduction, bool) or not isinstance(reduction, (int, float)) or reduction <= 0:
            raise ValueError(f"reduction must be a positive number; got {reduction!r}")
        if isinstance(hidden_features, bool) or not isinstance(hidden_features, int) or hidden_features < 1:
            raise ValueError(f"hidden_features must be a positive int; got {hidden_features!r}")
        self.num_classes, self.img_size = num_classes, _img_size(img_size)
        features = Module()
        self.features = features
        self.layers: list = []           # (module, is a block end) in forward order
        self.stage_names = []
        index, in_chs = 0, 3
        for widths in blocks:
            for k, width in enumerate(widths):
                conv = ConvNormAct(in_chs, width, 3, padding=1, bias=True, conv=str(index), bn=str(index + 1))
                setattr(features, f"conv{index}", conv)
                self.layers.append(conv)
                relu = index + 2
                if se and (se_placement == "conv" or k == len(widths) - 1):
                    block = SqueezeExcite(width, ref.reduced_channels(width, reduction), bias=True)
                    setattr(features, str(relu), Module())
                    getattr(features, str(relu)).se = block
                    self.layers.append(block)
                index, in_chs = index + 3, width
            pool = MaxPool2d(2, 2)
            setattr(features, str(index), pool)
            self.layers.append(pool)
            self.stage_names.append(f"features.{index}")
            index += 1
        self.num_features = in_chs
        classifier = Module()
        self.classifier = classifier
        classifier.fc0 = PooledClassifierConv(in_chs, hidden_features, self.img_size, name="0")
        classifier.fc3 = Linear(hidden_features, hidden_features, name="3", act="relu")
        classifier.fc6 = Linear(hidden_features, num_classes, name="6")
        self.classifier_key = "classifier.6.weight"

    def forward_features(self, ops, x) -> dict:
        """Each block's output after its max-pool, by torchvision's module name (``features.6`` ...)."""
        out, names = {}, iter(self.stage_names)
        for layer in self.layers:
            x = layer(ops, x)
            if isinstance(layer, MaxPool2d):
                out[next(names)] = x
        return out

    def forward(self, ops, x):
        x = list(self.forward_features(ops, x).values())[-1]
        c = self.classifier
        return c.fc6(ops, c.fc3(ops, c.fc0(ops, x)))


# ============================================================================ pretrained configs
#: torchvision's ``VGG16_BN_Weights.IMAGENET1K_V1`` eval transform (resize 256 bilinear, crop 224,
#: ImageNet mean/std); SE-VGG-16 has no published weights and takes the same transform
PRETRAINED: dict[str, tuple[PretrainedCfg, ...]] = {
    "vgg16_bn": (PretrainedCfg("vgg16_bn.tv_in1k", license="bsd-3-clause",
                               url="https://download.pytorch.org/models/vgg16_bn-6c64b313.pth"),),
    "se_vgg16_bn": (PretrainedCfg("se_vgg16_bn.untrained"),),
}


# ============================================================================ builders
@register_model(pretrained=PRETRAINED["vgg16_bn"])
def vgg16_bn(num_classes: int = 1000, img_size=(224, 224), hidden_features: int = HIDDEN) -> VGG:
    """VGG-16 with BatchNorm, torchvision layout (``torchvision.models.vgg16_bn``); ``img_size``: the
    input size the classifier's adaptive pool is folded for (224: the identity); ``hidden_features``:
    the classifier's width (torchvision: 4096)."""
    return VGG(VGG16_BLOCKS, num_classes, img_size, hidden_features=hidden_features)


# checked built for 32x32 inputs with a 64-wide classifier: the same code paths (every conv, SE and
# pool; the adaptive pool folded, here from a 1x1 map into the classifier's 7x7 kernel) without the
# 138M parameters and 15 GMACs of the default build, which cost a minute per backend and dtype;
# batch 2, odd, unequal sides within the 32-63 that build takes
@register_model(pretrained=PRETRAINED["se_vgg16_bn"], conformance_input=(2, 3, 35, 47),
                conformance_options={"img_size": (32, 32), "hidden_features": 64})
def se_vgg16_bn(num_classes: int = 1000, img_size=(224, 224), reduction=16, se_placement: str = "conv",
                hidden_features: int = HIDDEN) -> VGG:
    """SE-VGG-16 (SENet paper, Table 2): torchvision's VGG-16-BN with SE (r = 16) after the ReLU of
    every conv (``se_placement="conv"``) or after the last ReLU of each stage (``"stage"``);
    ``hidden_features``: the classifier's width (torchvision: 4096)."""
    return VGG(VGG16_BLOCKS, num_classes, img_size, se=True, reduction=reduction, se_placement=se_placement,
               hidden_features=hidden_features)
