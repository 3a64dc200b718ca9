"""MobileNet family: declared layouts, parameter counts, options, and MobileNetV3-Small
against a PyTorch re-implementation of torchvision's definition (no fixture exists for it)."""

from __future__ import annotations

import numpy as np
import pytest
from _parity import manifest, rel_err

import se_multi
from se_multi.init import recipe_input, recipe_state
from se_multi.models import build_model
from se_multi.nn import BUFFER_KINDS

FIXTURE_MODELS = {"mobilenetv1_100": "mobilenetv1_100", "se_mobilenetv1_100": "se_mobilenetv1_100",
                  "mobilenetv3_large_100": "mobilenetv3_large_100"}
#: published parameter counts of the same graph (torchvision's MobileNet_V3_Small_Weights and
#: timm's mobilenetv3_small_100 both list 2,542,856)
MOBILENETV3_SMALL_PARAMS = 2_542_856


def _manifest_entries(fixture):
    """The peer's state-dict entries less the int counters (num_batches_tracked)."""
    return [k for k in manifest(fixture)["keys"] if k["kind"] != "int"]


@pytest.mark.parametrize("fixture", FIXTURE_MODELS)
def test_declared_layout_is_the_peer_state_dict(fixture):
    """Same names, order, shapes and kinds: weights=None then numbers tensors as the peer does."""
    specs = build_model(FIXTURE_MODELS[fixture]).param_specs()
    ours = [(name, spec.shape, spec.kind) for name, spec in specs.items()]
    peer = [(k["name"], tuple(k["shape"]), k["kind"]) for k in _manifest_entries(fixture)]
    assert ours == peer


@pytest.mark.parametrize("fixture", FIXTURE_MODELS)
def test_param_count_equals_peer_float_entries(fixture):
    peer = sum(int(np.prod(k["shape"])) for k in _manifest_entries(fixture) if k["kind"] not in BUFFER_KINDS)
    assert build_model(FIXTURE_MODELS[fixture]).num_params() == peer


def test_se_mobilenet_param_counts_match_the_senet_paper():
    """Table 3: MobileNet 4.2M -> SE-MobileNet 4.7M (fixture README: 4.23M / 4.72M); SE after the
    depthwise conv would give 4.59M, which the table rules out."""
    millions = lambda name, **kw: round(build_model(name, **kw).num_params() / 1e6, 2)  # noqa: E731
    assert millions("mobilenetv1_100") == 4.23
    assert millions("se_mobilenetv1_100") == 4.72
    assert millions("se_mobilenetv1_100", se_position="depthwise") == 4.59


@pytest.mark.parametrize("reduction", [4, 16, 32])
def test_se_weights_follow_the_paper_formula(reduction):
    """SE weight count (2/r) * sum_blocks C^2 (biases aside), C = each block's output channels,
    read from the baseline's pointwise convs in the timm manifest."""
    out_channels = [k["shape"][0] for k in manifest("mobilenetv1_100")["keys"] if k["name"].endswith("conv_pw.weight")]
    specs = build_model("se_mobilenetv1_100", reduction=reduction).param_specs()
    se_weights = sum(int(np.prod(s.shape)) for name, s in specs.items() if s.se and name.endswith(".weight"))
    assert se_weights == sum(2 * (c // reduction) * c for c in out_channels)


def test_reduction_sets_se_widths():
    se_shape = lambda model, key, **kw: build_model(model, **kw).param_specs()[key].shape  # noqa: E731
    key = "blocks.0.0.se.conv_reduce.weight"  # SE-MobileNet block 0: 64 output channels
    assert [se_shape("se_mobilenetv1_100", key, reduction=r)[0] for r in (4, 8, 16, 32)] == [16, 8, 4, 2]
    assert se_shape("se_mobilenetv1_100", key, se_position="depthwise")[1] == 32  # the depthwise width
    v3 = "blocks.5.0.se.conv_reduce.weight"  # MobileNetV3-Large, 672 expanded channels
    assert se_shape("mobilenetv3_large_100", v3) == (168, 672, 1, 1)
    assert se_shape("mobilenetv3_large_100", v3, reduction=8) == (88, 672, 1, 1)  # 672/8 = 84 -> multiple of 8


@pytest.mark.parametrize("bad, match", [
    (dict(se_position="after"), "se_position must be one of"),
    (dict(reduction=0), "reduction must be a positive number"),
    (dict(num_classes=-1), "num_classes must be a positive number"),
])
def test_bad_options_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        build_model("se_mobilenetv1_100", **bad)


@pytest.mark.parametrize("name", ["mobilenetv1_100", "mobilenetv3_small_100"])
def test_stages_run_in_order_are_the_forward_pass(name):
    model = se_multi.create_model(name, backend="numpy", dtype="float64")
    module, ops = model.module, model.ops
    assert module.stage_names[0] == "conv_stem" and module.stage_names[-1] == "head"
    assert module.stage_names[1:-1] == [f"blocks.{i}" for i in range(len(module.blocks))]
    x = recipe_input((1, 3, 64, 80))
    staged = module.forward_stages(ops, x)
    assert list(staged) == module.stage_names
    np.testing.assert_array_equal(staged["head"], model(x))
    assert staged["conv_stem"].shape[2:] == (32, 40)  # the stride-2 stem


def test_num_classes_from_argument_and_from_checkpoint(tmp_path):
    from safetensors.numpy import save_file

    assert se_multi.create_model("mobilenetv3_small_100", num_classes=7, backend="numpy")(
        recipe_input((1, 3, 32, 32))).shape == (1, 7)
    specs = build_model("mobilenetv1_100", num_classes=10).param_specs()
    path = tmp_path / "ten_classes.safetensors"
    save_file(recipe_state((k, s.shape, s.kind) for k, s in specs.items()), str(path))
    model = se_multi.create_model("mobilenetv1_100", weights=str(path), backend="numpy")
    assert model(recipe_input((2, 3, 32, 32))).shape == (2, 10)


# ============================================================================ MobileNetV1: ReLU6
def _timm_mobilenetv1(torch):
    """timm's ``mobilenetv1_100`` written out from its definition (``_gen_mobilenet_v1``: ``dsa``
    blocks, ``act_layer='relu6'``), with timm's state-dict names."""
    nn = torch.nn

    class DepthwiseSeparable(nn.Module):
        def __init__(self, i, o, s):
            super().__init__()
            self.conv_dw, self.bn1 = nn.Conv2d(i, i, 3, s, 1, groups=i, bias=False), nn.BatchNorm2d(i)
            self.conv_pw, self.bn2 = nn.Conv2d(i, o, 1, bias=False), nn.BatchNorm2d(o)

        def forward(self, x):
            return F.relu6(self.bn2(self.conv_pw(F.relu6(self.bn1(self.conv_dw(x))))))

    F = nn.functional
    stages, chs = [], 32
    for out, repeats, stride in ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2)):
        blocks = []
        for r in range(repeats):
            blocks.append(DepthwiseSeparable(chs, out, stride if r == 0 else 1))
            chs = out
        stages.append(nn.Sequential(*blocks))

    class MobileNetV1(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_stem, self.bn1 = nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32)
            self.blocks, self.classifier = nn.Sequential(*stages), nn.Linear(1024, 1000)

        def forward(self, x):
            x = self.blocks(F.relu6(self.bn1(self.conv_stem(x))))
            return self.classifier(x.mean((2, 3)))

    return MobileNetV1().eval()


def test_mobilenetv1_clips_at_six_like_timm(tmp_path):
    """The parity fixture never reaches 6 (its largest pre-activation is 5.6), so ReLU and ReLU6
    agree on it; a scaled-up input makes the clip matter, against a torch transcription of timm."""
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file

    peer = _timm_mobilenetv1(torch)
    state = _recipe_for_torch_module(torch, peer)
    peer.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    save_file(state, str(tmp_path / "v1.safetensors"))
    x = 8 * recipe_input((1, 3, 64, 64), seed=5)
    with torch.no_grad():
        xt = torch.from_numpy(x).double()
        expected = peer.double()(xt).numpy()
        stem = peer.bn1(peer.conv_stem(xt))
    assert float(stem.max()) > 6  # the clip is exercised
    model = se_multi.create_model("mobilenetv1_100", weights=str(tmp_path / "v1.safetensors"), backend="numpy",
                                  dtype="float64")
    assert rel_err(model(x), expected) <= 1e-8


# ============================================================================ MobileNetV3-Small
def _torchvision_mobilenet_v3_small(torch, num_classes=1000):
    """torchvision's ``mobilenet_v3_small`` written out from its definition (config table,
    ``_make_divisible``, BN eps 1e-3, SE fc1/fc2 + hardsigmoid), with its state-dict names."""
    nn, F = torch.nn, torch.nn.functional

    def make_divisible(v, divisor=8):
        new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
        return new_v + divisor if new_v < 0.9 * v else new_v

    def conv_bn(i, o, k, s, groups, act):
        layers = [nn.Conv2d(i, o, k, s, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(o, eps=1e-3)]
        return nn.Sequential(*layers, *([act()] if act else []))

    class SqueezeExcitation(nn.Module):
        def __init__(self, c, squeeze):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)

        def forward(self, x):
            return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))

    class InvertedResidual(nn.Module):
        def __init__(self, i, k, e, o, se, act, s):
            super().__init__()
            layers = [conv_bn(i, e, 1, 1, 1, act)] if e != i else []
            layers.append(conv_bn(e, e, k, s, e, act))
            if se:
                layers.append(SqueezeExcitation(e, make_divisible(e // 4)))
            layers.append(conv_bn(e, o, 1, 1, 1, None))
            self.block, self.use_res = nn.Sequential(*layers), s == 1 and i == o

        def forward(self, x):
            return x + self.block(x) if self.use_res else self.block(x)

    RE, HS = nn.ReLU, nn.Hardswish
    config = [(16, 3, 16, 16, True, RE, 2), (16, 3, 72, 24, False, RE, 2), (24, 3, 88, 24, False, RE, 1),
              (24, 5, 96, 40, True, HS, 2), (40, 5, 240, 40, True, HS, 1), (40, 5, 240, 40, True, HS, 1),
              (40, 5, 120, 48, True, HS, 1), (48, 5, 144, 48, True, HS, 1), (48, 5, 288, 96, True, HS, 2),
              (96, 5, 576, 96, True, HS, 1), (96, 5, 576, 96, True, HS, 1)]

    class MobileNetV3(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(conv_bn(3, 16, 3, 2, 1, HS), *(InvertedResidual(*c) for c in config),
                                          conv_bn(96, 576, 1, 1, 1, HS))
            self.classifier = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2),
                                            nn.Linear(1024, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))

    return MobileNetV3().eval()


def _recipe_for_torch_module(torch, module) -> dict[str, np.ndarray]:
    """The fixtures' weight recipe over a torch module's state dict (kinds from the owning layer)."""
    def kind(name, tensor):
        owner = module.get_submodule(name.rpartition(".")[0])
        if not tensor.is_floating_point():
            return "int"
        if isinstance(owner, torch.nn.BatchNorm2d):
            return "bn_" + name.rpartition(".")[2]
        return "weight" if name.endswith("weight") else "bias"

    return recipe_state((name, tuple(t.shape), kind(name, t)) for name, t in module.state_dict().items())


def test_mobilenetv3_small_param_count_is_published_count():
    assert build_model("mobilenetv3_small_100").num_params() == MOBILENETV3_SMALL_PARAMS


def test_mobilenetv3_small_equals_torchvision_definition(tmp_path):
    """Loads a torchvision-layout checkpoint (the layout converter) and matches torch float64."""
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file

    peer = _torchvision_mobilenet_v3_small(torch)
    assert sum(p.numel() for p in peer.parameters()) == MOBILENETV3_SMALL_PARAMS  # the reference is faithful
    state = _recipe_for_torch_module(torch, peer)
    peer.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    path = tmp_path / "tv_small.safetensors"
    save_file(state, str(path))
    x = recipe_input((2, 3, 96, 80), seed=3)
    with torch.no_grad():
        expected = peer.double()(torch.from_numpy(x).double()).numpy()
    model = se_multi.create_model("mobilenetv3_small_100", weights=str(path), backend="numpy", dtype="float64")
    assert rel_err(model(x), expected) <= 1e-8


def test_checkpoint_of_another_mobilenet_is_refused(tmp_path):
    """A MobileNetV3-Large torchvision checkpoint given to the Small model: one error, no partial load."""
    from safetensors.numpy import save_file

    entries = [(k["name"], k["shape"], k["kind"]) for k in manifest("torchvision.mobilenet_v3_large")["keys"]]
    path = tmp_path / "tv_large.safetensors"
    save_file(recipe_state(entries), str(path))
    with pytest.raises(ValueError, match=r"does not match the model: .*(missing|unexpected|mis-shaped)"):
        se_multi.create_model("mobilenetv3_small_100", weights=str(path), backend="numpy")
