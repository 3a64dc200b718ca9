"""se_multi.shapes: the one definition of output shapes and their errors, against PyTorch's own
shape rules (meta tensors: shapes without data), and each model's input-size check."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_backend
from se_multi import shapes, tracing
from se_multi.models import build_model, create_model, list_models


@pytest.fixture(scope="module")
def torch():
    require_backend("torch")
    import torch

    return torch


def _torch_shape(fn):
    """PyTorch's output shape, or None where PyTorch refuses the input."""
    try:
        return tuple(fn().shape)
    except RuntimeError:
        return None


def _ours(fn):
    try:
        return fn()
    except shapes.ShapeError:
        return None


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), k=st.integers(1, 5), kw=st.integers(1, 5),
       s=st.integers(1, 3), p=st.integers(0, 3), d=st.integers(1, 2), g=st.sampled_from([1, 2]))
def test_conv2d_shapes_and_refusals_are_pytorchs(torch, h, w, k, kw, s, p, d, g):
    x, wt = torch.empty(1, 2 * g, h, w, device="meta"), torch.empty(4, 2, k, kw, device="meta")
    want = _torch_shape(lambda: torch.nn.functional.conv2d(x, wt, None, s, p, d, g))
    assert _ours(lambda: shapes.conv2d((1, 2 * g, h, w), (4, 2, k, kw), (s, s), (p, p, p, p), (d, d), g)) == want


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), k=st.integers(1, 4), s=st.integers(1, 3),
       p=st.integers(0, 2), ceil=st.booleans())
def test_pool_shapes_and_refusals_are_pytorchs(torch, h, w, k, s, p, ceil):
    x = torch.empty(1, 3, h, w, device="meta")
    want = _torch_shape(lambda: torch.nn.functional.max_pool2d(x, k, s, p, ceil_mode=ceil))
    assert _ours(lambda: shapes.pool2d((1, 3, h, w), (k, k), (s, s), (p, p), ceil)) == want
    want = _torch_shape(lambda: torch.nn.functional.avg_pool2d(x, k, s, p, ceil_mode=ceil))
    assert _ours(lambda: shapes.pool2d((1, 3, h, w), (k, k), (s, s), (p, p), ceil, "avg_pool2d")) == want


def test_errors_name_the_op_and_what_came():
    with pytest.raises(shapes.ShapeError, match=r"conv2d: input has 3 channels; weight 4x2x3x3 with groups=2"):
        shapes.conv2d((1, 3, 8, 8), (4, 2, 3, 3), groups=2)
    with pytest.raises(shapes.ShapeError, match=r"max_pool2d: a 1x1 input with kernel 3x3.*empty 0x0 output"):
        shapes.pool2d((1, 3, 1, 1), (3, 3), (2, 2), (0, 0), True)
    with pytest.raises(shapes.ShapeError, match="at most half the kernel"):
        shapes.pool2d((1, 1, 8, 8), (3, 3), (1, 1), (2, 2), False)
    with pytest.raises(shapes.ShapeError, match=r"mul_channel: gates of shape \(2, 3\)"):
        shapes.mul_channel((1, 3, 4, 4), (2, 3))
    with pytest.raises(shapes.ShapeError, match="concat_channels: N, H and W must agree"):
        shapes.concat_channels([(1, 2, 4, 4), (1, 2, 4, 5)])
    assert shapes.linear(("batch", 8), (3, 8)) == ("batch", 3)  # a symbolic batch passes through


# ------------------------------------------------------------------------------ a model's input sizes
#: smallest (H, W) each family accepts, worked out by hand from its layers:
#: - timm ResNets: 7x7/2 p3 stem then 3x3/2 p1 pools and convs: every stage maps 1 -> 1
#: - Caffe ResNets: the stem pool is 3x3/2, p0, ceil_mode: a 2x2 stem output still gives one window
#:   (ceil_mode lets it overhang), a 1x1 gives none; a 2x2 stem output needs a 3x3 input
#: - MobileNets: 3x3/2 "same"-padded convs only: 1x1
#: - the U-Net: multiples of its output stride 32
#: - deep stems (three 3x3 convs, the first /2 p1) map 1 -> 1 as the 7x7 stem does; an avg_down
#:   shortcut's 2x2/2 ceil-mode pool maps 1 -> 1 (one window, overhanging); SENet-154's 3x3/2 p1
#:   shortcut convs map 1 -> 1; the Caffe SENet-154's deep stem gives 2x2 from 3x3 (1x1 from 2x2)
SMALLEST = {
    "seresnet50": (1, 1), "resnet50": (1, 1), "seresnext50_32x4d": (1, 1),
    "seresnet18": (1, 1), "seresnet50t": (1, 1), "seresnext26d_32x4d": (1, 1), "senet154": (1, 1),
    "legacy_seresnet50": (3, 3), "legacy_seresnet101": (3, 3),
    "legacy_seresnet18": (3, 3), "legacy_seresnext26_32x4d": (3, 3), "legacy_senet154": (3, 3),
    "mobilenetv1_100": (1, 1), "se_mobilenetv1_100": (1, 1), "mobilenetv3_small_100": (1, 1),
    "unet_se_resnet50_scse": (32, 32),
}


@pytest.mark.parametrize("name", sorted(SMALLEST))
def test_smallest_input_is_derived_from_the_graph(name):
    model = create_model(name, backend="numpy")
    h, w = SMALLEST[name]
    assert model.smallest_input_size() == (h, w)
    y = model(np.zeros((1, 3, h, w), np.float32))  # it runs
    assert np.all(np.isfinite(y))
    if (h, w) != (1, 1):
        for shape in ((h - 1, w), (h, w - 1)):
            with pytest.raises(ValueError, match=rf"^{name}: a {shape[0]}x{shape[1]} input does not fit: .*"
                                                 rf"the smallest input that works is {h}x{w}$"):
                model(np.zeros((1, 3, *shape), np.float32))


def test_every_model_has_a_smallest_input():
    """A fact of the declared graph: ``Model.smallest_input_size`` traces the declaration
    (``InputSizes(model.declaration, model.in_chans)``), so no weights are needed here (binding
    every model's seeded weights was 26 s of a full run; tests/test_openvino_small.py calls
    ``smallest_input_size()`` on bound models and runs each at it)."""
    for name in list_models():
        declaration = build_model(name)
        sizes = tracing.InputSizes(declaration, getattr(declaration, "in_chans", 3))
        assert sizes.smallest() is not None, name


def test_too_small_input_names_the_layer_whose_output_would_be_empty():
    model = create_model("legacy_seresnet50", backend="numpy")
    with pytest.raises(ValueError) as info:
        model(np.zeros((1, 3, 2, 224), np.float32))
    msg = str(info.value)
    assert msg.startswith("legacy_seresnet50: a 2x224 input does not fit: at layer maxpool, max_pool2d: "
                          "a 1x112 input with kernel 3x3")
    assert "empty 0x56 output" in msg and msg.endswith("the smallest input that works is 3x3")


def test_layer_names_are_checkpoint_paths():
    from se_multi import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.ConvNormAct(3, 4, 3, padding=0, conv="conv1", bn="bn1"),
                                          nn.ConvNormAct(4, 4, 3, padding=0, conv="conv2", bn="bn2"))

        def forward(self, ops, x):
            return self.features(ops, x)

    sizes = tracing.InputSizes(Net())
    assert sizes.error(3, 5, 9) is None  # 5 -> 3 -> 1
    error = sizes.error(3, 4, 9)  # 4 -> 2 -> empty, in the second conv
    assert isinstance(error, shapes.ShapeError) and error.layer == "features.conv2"  # checkpoint path
    assert sizes.smallest() == (5, 5)


def test_a_declaration_stays_a_declaration():
    declaration = build_model("mobilenetv3_small_100")
    model = create_model("mobilenetv3_small_100", backend="numpy")
    assert declaration.bound_to is None and model.module.bound_to is model.ops
    with pytest.raises(AttributeError, match="declaration, and weights exist only on the bound copy"):
        declaration.conv_stem.w
    with pytest.raises(TypeError, match="already bound"):
        model.module.bind({}, model.ops)
