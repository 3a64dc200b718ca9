"""The ResNet family beyond the fixtures: key layouts, depth/ResNeXt variants, parameter counts,
and the SENet paper's ablation options (SE placement, per-stage SE, bias-free excitation, r)."""

from __future__ import annotations

import numpy as np
import pytest

import se_multi
from _parity import FIXTURE_MODELS, manifest, rel_err
from se_multi import reference as ref
from se_multi.init import recipe_input, recipe_state
from se_multi.models import build_model, create_model
from se_multi.models.resnet import TIMM, Bottleneck, SEConfig

BUFFERS = ("bn_running_mean", "bn_running_var")
RESNET_FIXTURES = ("seresnet50", "resnet50", "legacy_seresnet50", "smp.unet_se_resnet50_scse")


# ----------------------------------------------------------------------------- layouts and counts
@pytest.mark.parametrize("fixture", RESNET_FIXTURES)
def test_declared_keys_are_the_peer_state_dict_in_order(fixture):
    peer = [(k["name"], tuple(k["shape"]), k["kind"]) for k in manifest(fixture)["keys"] if k["kind"] != "int"]
    ours = [(k, s.shape, s.kind) for k, s in build_model(FIXTURE_MODELS[fixture]).param_specs().items()]
    assert ours == peer


@pytest.mark.parametrize("fixture", RESNET_FIXTURES)
def test_param_count_equals_the_peer_manifest(fixture):
    expected = sum(int(np.prod(k["shape"])) for k in manifest(fixture)["keys"] if k["kind"] not in BUFFERS + ("int",))
    assert build_model(FIXTURE_MODELS[fixture]).num_params() == expected


def _bottleneck_resnet_params(layers, cardinality=1, base_width=64, se_rd=None, num_classes=1000) -> int:
    """Counted by hand from the architecture: conv weights, BN weight+bias, SE FCs with bias, fc."""
    total, cin = 3 * 64 * 7 * 7 + 2 * 64, 64
    for stage, (depth, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
        width, cout = planes * base_width // 64 * cardinality, planes * 4
        for b in range(depth):
            total += cin * width + 9 * width * width // cardinality + width * cout + 2 * (2 * width + cout)
            if b == 0:
                total += cin * cout + 2 * cout  # projection shortcut
            if se_rd:
                rd = se_rd(cout)
                total += 2 * cout * rd + rd + cout
            cin = cout
    return total + 2048 * num_classes + num_classes


def test_hand_count_agrees_with_the_manifests():
    """The hand count is right for the fixtures, so it can vouch for the models without one."""
    def manifest_count(f):
        return sum(int(np.prod(k["shape"])) for k in manifest(f)["keys"] if k["kind"] not in BUFFERS + ("int",))

    assert _bottleneck_resnet_params((3, 4, 6, 3)) == manifest_count("resnet50") == 25_557_032
    assert _bottleneck_resnet_params((3, 4, 6, 3), se_rd=lambda c: c // 16) == manifest_count("seresnet50")


@pytest.mark.parametrize("name,layers,cardinality,base_width", [
    ("seresnet101", (3, 4, 23, 3), 1, 64),
    ("seresnet152", (3, 8, 36, 3), 1, 64),
    ("legacy_seresnet101", (3, 4, 23, 3), 1, 64),
    ("legacy_seresnet152", (3, 8, 36, 3), 1, 64),
    ("seresnext50_32x4d", (3, 4, 6, 3), 32, 4),
])
def test_deeper_and_resnext_variants_count_and_run(name, layers, cardinality, base_width):
    module = build_model(name)
    assert module.num_params() == _bottleneck_resnet_params(layers, cardinality, base_width, lambda c: c // 16)
    model = create_model(name, backend="numpy", dtype="float32")
    out = model.predict_numpy(recipe_input((1, 3, 64, 64)))
    assert out.shape == (1, 1000) and np.isfinite(out).all()


def test_published_sizes():
    """timm's model cards: 49.3M, 66.8M (SE-ResNet-101/152), 27.6M (SE-ResNeXt-50 32x4d)."""
    assert round(build_model("seresnet101").num_params() / 1e6, 1) == 49.3
    assert round(build_model("seresnet152").num_params() / 1e6, 1) == 66.8
    assert round(build_model("seresnext50_32x4d").num_params() / 1e6, 1) == 27.6


# ----------------------------------------------------------------------------- ablation structure
def _se_specs(module):
    return {k: s for k, s in module.param_specs().items() if s.se}


def test_se_stages_4_has_only_stage_4_se():
    se = _se_specs(build_model("seresnet50", se_stages=(4,)))
    assert se and all(k.startswith("layer4.") for k in se)
    assert sum(int(np.prod(s.shape)) for s in se.values()) == 3 * (2 * 2048 * 128 + 128 + 2048)


@pytest.mark.parametrize("name", ["seresnet50", "legacy_seresnet50", "seresnext50_32x4d"])
def test_conv3x3_se_has_the_bottleneck_width(name):
    specs = build_model(name, se_integration="conv3x3").param_specs()
    fc1 = {k: s for k, s in specs.items() if k.endswith(".fc1.weight")}
    assert len(fc1) == 16
    for key, spec in fc1.items():
        block = key.split(".se")[0]
        width, out = specs[f"{block}.conv2.weight"].shape[0], specs[f"{block}.conv3.weight"].shape[0]
        assert spec.shape[1] == width
        if name != "seresnext50_32x4d":
            assert width == out // 4


def test_pre_se_has_the_block_input_channels():
    specs = build_model("seresnet50", se_integration="pre").param_specs()
    assert specs["layer2.0.se_pre.fc1.weight"].shape[1] == 256  # layer1's output enters layer2.0
    assert specs["layer2.1.se_pre.fc1.weight"].shape[1] == 512


def test_reduction_per_stage():
    specs = build_model("legacy_seresnet50", reduction=(4, 8, 16, 32)).param_specs()
    for layer, channels, r in (("layer1", 256, 4), ("layer2", 512, 8), ("layer3", 1024, 16), ("layer4", 2048, 32)):
        assert specs[f"{layer}.0.se_module.fc1.weight"].shape[:2] == (channels // r, channels)


def test_bias_free_excitation_declares_no_se_bias():
    specs = build_model("seresnet50", se_bias=False).param_specs()
    assert not [k for k, s in specs.items() if s.se and k.endswith(".bias")]
    dropped = build_model("seresnet50").num_params() - build_model("seresnet50", se_bias=False).num_params()
    assert dropped == sum(blocks * (c // 16 + c) for blocks, c in ((3, 256), (4, 512), (6, 1024), (3, 2048)))


@pytest.mark.parametrize("kwargs,message", [
    ({"se_integration": "middle"}, "se_integration must be one of"),
    ({"reduction": (4, 8)}, "tuple of 4"),
    ({"reduction": 0}, "positive"),
    ({"se_stages": (5,)}, "subset of (1, 2, 3, 4)"),
    ({"se_stages": ()}, "non-empty"),
])
def test_bad_ablation_options_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model("seresnet50", **kwargs)


def test_unet_rejects_sizes_not_multiple_of_32():
    model = create_model("unet_se_resnet50_scse", backend="numpy", dtype="float32")
    with pytest.raises(ValueError, match="multiples of 32"):
        model(np.zeros((1, 3, 64, 80), np.float32))


# ----------------------------------------------------------------------------- ablation maths
def _hand_bottleneck(state, x, integration, stride):
    """One SE bottleneck composed from the NumPy reference with unfolded BN: the paper's Fig. 5."""
    def conv_bn(t, conv, bn, stride=1, pad=0, relu=True):
        y = ref.batch_norm(ref.conv2d(t, state[f"{conv}.weight"], None, (stride,) * 2, (pad,) * 4),
                           state[f"{bn}.running_mean"], state[f"{bn}.running_var"], state[f"{bn}.weight"],
                           state[f"{bn}.bias"], 1e-5)
        return ref.relu(y) if relu else y

    name = "se" if integration == "standard" else f"se_{integration}"

    def se(t):
        w1, w2 = state[f"{name}.fc1.weight"][:, :, 0, 0], state[f"{name}.fc2.weight"][:, :, 0, 0]
        z = ref.relu(ref.linear(ref.global_avg_pool(t), w1, state[f"{name}.fc1.bias"]))
        return t * ref.sigmoid(ref.linear(z, w2, state[f"{name}.fc2.bias"]))[:, :, None, None]

    if integration == "pre":
        x = se(x)
    mid = conv_bn(conv_bn(x, "conv1", "bn1"), "conv2", "bn2", stride, 1)
    if integration == "conv3x3":
        mid = se(mid)
    branch = conv_bn(mid, "conv3", "bn3", relu=False)
    shortcut = conv_bn(x, "downsample.0", "downsample.1", stride, relu=False)
    if integration == "standard":
        branch = se(branch)
    if integration == "identity":
        shortcut = se(shortcut)
    out = ref.relu(branch + shortcut)
    return se(out) if integration == "post" else out


@pytest.mark.parametrize("integration", ["standard", "pre", "post", "identity", "conv3x3"])
def test_se_integration_matches_the_paper_definition(integration):
    block = Bottleneck(32, 8, 2, TIMM, se=SEConfig(integration=integration), reduction=4)
    specs = block.param_specs()
    state = {k: v.astype(np.float64) for k, v in recipe_state((k, s.shape, s.kind) for k, s in specs.items()).items()}
    x = recipe_input((2, 32, 9, 11)).astype(np.float64)
    ops = se_multi.get_backend("numpy", dtype="float64")
    ours = block.bind(state, ops)(ops, ops.input(x))
    assert rel_err(ours, _hand_bottleneck(state, x, integration, 2)) < 1e-12


ABLATIONS = [
    ("seresnet50", {"se_integration": "pre"}),
    ("seresnet50", {"se_integration": "post"}),
    ("seresnet50", {"se_integration": "identity"}),
    ("seresnet50", {"se_integration": "conv3x3"}),
    ("seresnet50", {"se_stages": (4,)}),
    ("seresnet50", {"se_stages": (2, 3), "se_bias": False}),
    ("legacy_seresnet50", {"reduction": (4, 8, 16, 32), "se_integration": "pre"}),
    ("seresnext50_32x4d", {"se_integration": "conv3x3", "se_bias": False}),
]


def _bound_output(name, kwargs, state, backend, dtype, x):
    ops = se_multi.get_backend(backend, dtype=dtype)
    module = build_model(name, **kwargs).bind(state, ops)
    return se_multi.to_numpy(ops.output(module(ops, ops.input(x))))


@pytest.mark.parametrize("name,kwargs", ABLATIONS, ids=[f"{n}-{'-'.join(map(str, k.values()))}" for n, k in ABLATIONS])
def test_ablation_runs_on_every_backend_like_the_float64_reference(name, kwargs):
    specs = build_model(name, **kwargs).param_specs()
    state = recipe_state((k, s.shape, s.kind) for k, s in specs.items())  # drawn once, bound per backend
    x = recipe_input((1, 3, 32, 64))
    reference = _bound_output(name, kwargs, state, "numpy", "float64", x)
    assert reference.shape == (1, 1000) and np.isfinite(reference).all()
    status = se_multi.backend_status()
    for backend in ("numpy", "torch", "mlx", "cupy"):
        if status.get(backend, (False,))[0]:
            out = _bound_output(name, kwargs, state, backend, "float32", x)
            assert rel_err(out, reference) <= 1e-4, f"{name} {kwargs} on {backend}"
