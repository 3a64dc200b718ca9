"""The ResNet family beyond the fixtures: key layouts, depth/ResNeXt/stem/shortcut variants, parameter
counts (by hand and timm's published ones), every name on every backend, and the SENet paper's
ablation options (SE placement, per-stage SE, bias-free excitation, r)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import se_multi
from _parity import FIXTURE_MODELS, manifest, rel_err
from se_multi import reference as ref
from se_multi.models.loading import load_for_model
from se_multi.init import recipe_input, recipe_state
from se_multi.models import build_model, create_model
from se_multi.models.resnet import SE_MODELS, TIMM, Bottleneck, SEConfig

BUFFERS = ("bn_running_mean", "bn_running_var")
RESNET_FIXTURES = ("seresnet50", "resnet50", "legacy_seresnet50", "smp.unet_se_resnet50_scse", "legacy_senet154",
                   "legacy_seresnet18", "legacy_seresnext50_32x4d", "seresnet152d", "seresnext26t_32x4d",
                   "seresnext101_32x8d")
#: the issue's names that no public fixture covers: checked from their definitions below
WITHOUT_FIXTURE = ("legacy_seresnet34", "legacy_seresnext26_32x4d", "legacy_seresnext101_32x4d", "senet154",
                   "seresnet18", "seresnet34", "seresnet50t", "seresnet200d", "seresnet269d", "seresnext26d_32x4d",
                   "seresnext101_32x4d", "seresnext101_64x4d", "seresnext101d_32x8d")


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


# ----------------------------------------------------------------------------- the whole family
def _family_hand_params(block, layers, stem=(64,), cardinality=1, base_width=64, reduce_first=1,
                        down_kernel=1, se_rd=None, num_classes=1000) -> int:
    """Counted by hand from timm's / Caffe's definitions (not from se_multi's builder): stem convs
    (7x7, or three 3x3) each with BN; per block its convs and BNs, the strided or widening block's
    projection (k x k when strided; an average-pool shortcut adds no parameters), SE FCs with bias;
    the classifier."""
    total, cin = 0, 3
    for c in stem:
        total += cin * c * (49 if len(stem) == 1 else 9) + 2 * c
        cin = c
    for stage, (depth, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
        for b in range(depth):
            stride = 2 if stage > 0 and b == 0 else 1
            if block == "basic":
                cout = planes
                total += 9 * cin * planes + 9 * planes * planes + 4 * planes
            else:
                width, cout = planes * base_width // 64 * cardinality, planes * 4
                first = width // reduce_first
                total += cin * first + 9 * first * width // cardinality + width * cout + 2 * (first + width + cout)
            if stride != 1 or cin != cout:
                k = down_kernel if stride != 1 else 1
                total += k * k * cin * cout + 2 * cout
            if se_rd:
                rd = se_rd(cout)
                total += 2 * cout * rd + rd + cout
            cin = cout
    return total + cin * num_classes + num_classes


def _timm_rd(c):  # timm: make_divisible(C / 16, 8), never below 8
    return max(8, (c // 16 + 4) // 8 * 8)


def _caffe_rd(c):
    return c // 16


_R18, _R34, _R101, _R152 = (2, 2, 2, 2), (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3)
_DEEP32, _TIERED32, _DEEP64 = (32, 32, 64), (24, 32, 64), (64, 64, 128)
#: name -> the architecture written out by hand (timm resnet.py model_args / senet.py model defs)
HAND = {
    "legacy_senet154": ("bottleneck", _R152, _DEEP64, 64, 4, 2, 3, _caffe_rd),
    "senet154": ("bottleneck", _R152, _DEEP64, 64, 4, 2, 3, _timm_rd),
    "legacy_seresnet18": ("basic", _R18, (64,), 1, 64, 1, 1, _caffe_rd),
    "legacy_seresnet34": ("basic", _R34, (64,), 1, 64, 1, 1, _caffe_rd),
    "seresnet18": ("basic", _R18, (64,), 1, 64, 1, 1, _timm_rd),
    "seresnet34": ("basic", _R34, (64,), 1, 64, 1, 1, _timm_rd),
    "seresnet50t": ("bottleneck", _R34, _TIERED32, 1, 64, 1, 1, _timm_rd),
    "seresnet152d": ("bottleneck", _R152, _DEEP32, 1, 64, 1, 1, _timm_rd),
    "seresnet200d": ("bottleneck", (3, 24, 36, 3), _DEEP32, 1, 64, 1, 1, _timm_rd),
    "seresnet269d": ("bottleneck", (3, 30, 48, 8), _DEEP32, 1, 64, 1, 1, _timm_rd),
    "seresnext26d_32x4d": ("bottleneck", _R18, _DEEP32, 32, 4, 1, 1, _timm_rd),
    "seresnext26t_32x4d": ("bottleneck", _R18, _TIERED32, 32, 4, 1, 1, _timm_rd),
    "legacy_seresnext26_32x4d": ("bottleneck", _R18, (64,), 32, 4, 1, 1, _caffe_rd),
    "legacy_seresnext50_32x4d": ("bottleneck", _R34, (64,), 32, 4, 1, 1, _caffe_rd),
    "legacy_seresnext101_32x4d": ("bottleneck", _R101, (64,), 32, 4, 1, 1, _caffe_rd),
    "seresnext101_32x4d": ("bottleneck", _R101, (64,), 32, 4, 1, 1, _timm_rd),
    "seresnext101_32x8d": ("bottleneck", _R101, (64,), 32, 8, 1, 1, _timm_rd),
    "seresnext101d_32x8d": ("bottleneck", _R101, _DEEP32, 32, 8, 1, 1, _timm_rd),
    "seresnext101_64x4d": ("bottleneck", _R101, (64,), 64, 4, 1, 1, _timm_rd),
}
#: timm's published parameter counts, M (timm results/benchmark-infer-*.csv and results-imagenet.csv)
TIMM_MPARAMS = {
    "legacy_senet154": 115.09, "senet154": 115.09, "legacy_seresnet18": 11.78, "seresnet18": 11.78,
    "legacy_seresnet34": 21.96, "seresnet34": 21.96, "seresnet50t": 28.10, "seresnet152d": 66.84,
    "seresnet200d": 71.86, "seresnet269d": 113.67, "seresnext26d_32x4d": 16.81, "seresnext26t_32x4d": 16.81,
    "legacy_seresnext26_32x4d": 16.79, "legacy_seresnext50_32x4d": 27.56, "legacy_seresnext101_32x4d": 48.96,
    "seresnext101_32x4d": 48.96, "seresnext101_32x8d": 93.57, "seresnext101d_32x8d": 93.59,
    "seresnext101_64x4d": 88.23,
}


def test_every_issue_name_is_registered_and_counted():
    assert set(HAND) == set(TIMM_MPARAMS) == set(WITHOUT_FIXTURE) | {
        FIXTURE_MODELS[f] for f in RESNET_FIXTURES[4:]}
    assert set(HAND) <= set(se_multi.list_models())


@pytest.mark.parametrize("fixture", RESNET_FIXTURES[4:])
def test_family_hand_count_agrees_with_the_manifests(fixture):
    """The hand count is right wherever a peer's state dict exists, so it vouches for the rest."""
    name = FIXTURE_MODELS[fixture]
    peer = sum(int(np.prod(k["shape"])) for k in manifest(fixture)["keys"] if k["kind"] not in BUFFERS + ("int",))
    assert _family_hand_params(*HAND[name][:7], se_rd=HAND[name][7]) == peer


@pytest.mark.parametrize("name", sorted(HAND))
def test_family_counts_equal_the_hand_count_and_timms(name):
    params = build_model(name).num_params()
    assert params == _family_hand_params(*HAND[name][:7], se_rd=HAND[name][7])
    assert round(params / 1e6, 2) == TIMM_MPARAMS[name]


@pytest.mark.parametrize("name", WITHOUT_FIXTURE)
def test_family_model_runs_and_matches_the_float64_reference(seeded_model, name):
    """Each name without a fixture: seeded weights bound once per backend, a batch of 2 at an odd,
    unequal small size; numpy float32 and torch against the float64 reference (onnxruntime: every
    registered model in test_onnx, which draws and binds the same weights: ``seeded_model``). The
    declared state is loaded strictly on each bind."""
    _, state, reference_model = seeded_model(name)
    x = recipe_input((2, 3, 35, 29))
    reference = se_multi.to_numpy(reference_model(x.astype(np.float64)))
    assert reference.shape == (2, 1000) and np.isfinite(reference).all()
    runs = [("numpy", "float32"), ("torch", "float32")]
    status = se_multi.backend_status()
    for backend, dtype in runs:
        if status[backend][0]:
            out = _bound_output(name, {}, state, backend, dtype, x)
            assert rel_err(out, reference) <= 1e-4, f"{name} on {backend}"


def test_a_checkpoint_written_in_the_declared_layout_loads_strictly(tmp_path):
    """A file in the native layout loads with no options and the same numbers; one key renamed or
    one tensor dropped is refused with the key named."""
    from safetensors.numpy import save_file

    name = "seresnext26d_32x4d"
    specs = build_model(name).param_specs()
    state = recipe_state(((k, s.shape, s.kind) for k, s in specs.items()), seed=3)
    save_file(state, str(tmp_path / "ok.safetensors"))
    native, options = load_for_model(name, str(tmp_path / "ok.safetensors"))
    assert options == {} and set(native) == set(specs)  # (safetensors stores keys sorted)
    x = recipe_input((1, 3, 32, 32))
    loaded = create_model(name, weights=str(tmp_path / "ok.safetensors"), backend="numpy").predict_numpy(x)
    np.testing.assert_array_equal(loaded, create_model(name, backend="numpy", seed=3).predict_numpy(x))
    renamed = {k.replace("downsample.1.", "downsample.0."): v for k, v in state.items()}  # a non-avg_down name
    save_file(renamed, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"missing key\(s\): .*layer1\.0\.downsample\.1\.weight"):
        create_model(name, weights=str(tmp_path / "bad.safetensors"), backend="numpy")


@pytest.mark.parametrize("name,h,w", [("seresnet50t", 8, 8), ("legacy_senet154", 96, 64), ("seresnet18", 224, 160)])
def test_model_info_stage_shapes(name, h, w):
    """Stage outputs at strides 4, 8, 16, 32 (the sizes here divide exactly or round up in every
    layout) with planes x expansion channels, then the logits."""
    from se_multi.info import model_info

    info = model_info(name, (h, w))
    expansion = 1 if name == "seresnet18" else 4
    rows = {r["name"]: r["output_shape"] for r in info["stages"]}
    for i, layer in enumerate(("layer1", "layer2", "layer3", "layer4")):
        stride = 4 * 2 ** i
        assert rows[layer] == [1, 64 * 2 ** i * expansion, -(-h // stride), -(-w // stride)], layer
    assert info["output_shape"] == [1, 1000]


# ----------------------------------------------------------------------------- builder options
@pytest.mark.parametrize("kwargs,error,message", [
    ({"block": "wide"}, ValueError, "block must be one of ('basic', 'bottleneck')"),
    ({"stem_type": "deeper"}, ValueError, "stem_type must be one of ('', 'deep', 'deep_tiered')"),
    ({"layers": (3, 4, 6)}, ValueError, "block count (a positive int) of each of 4 stages"),
    ({"layers": (3, 4, 0, 3)}, ValueError, "block count (a positive int) of each of 4 stages"),
    ({"layers": "3463"}, ValueError, "block count"),
    ({"cardinality": 0}, ValueError, "cardinality must be a positive int"),
    ({"reduce_first": 3}, ValueError, "give a 42->128 grouped 3x3 conv at 64 planes, not divisible into 32 groups"),
    ({"block": "basic"}, ValueError, "a basic block has no grouped bottleneck"),
    ({"stem_width": 32}, ValueError, "the 7x7 stem is 64 wide"),
    ({"down_kernel_size": 2}, ValueError, "down_kernel_size must be odd"),
    ({"avg_down": "yes"}, ValueError, "avg_down must be True or False"),
    ({"stem_depth": 3}, TypeError, "unknown option(s) 'stem_depth'; architecture options: block, layers"),
])
def test_bad_architecture_options_are_one_line_errors(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build_model("seresnext50_32x4d", **kwargs)


def test_architecture_options_build_timms_variants():
    """The builder options are timm's: seresnet50 with the tiered stem and average-pool shortcut
    is seresnet50t, key for key; seresnext26d with a tiered stem is seresnext26t."""
    def keys(name, **kw):
        return [(k, s.shape) for k, s in build_model(name, **kw).param_specs().items()]

    assert keys("seresnet50", stem_type="deep_tiered", stem_width=32, avg_down=True) == keys("seresnet50t")
    assert keys("seresnext26d_32x4d", stem_type="deep_tiered") == keys("seresnext26t_32x4d")
    assert keys("seresnet18", layers=(3, 4, 6, 3)) == keys("seresnet34")


def test_avg_down_shortcut_is_pool_then_1x1_conv():
    """seresnet152d's strided shortcut: 2x2 average pool (ceil_mode, padding not counted) then 1x1
    conv + BN, composed here from the float64 reference with BN unfolded."""
    from se_multi.models.resnet import Downsample

    down = Downsample(8, 16, 2, avg_down=True)
    assert list(down.param_specs())[:2] == ["1.weight", "2.weight"]
    state = {k: v.astype(np.float64) for k, v in
             recipe_state((k, s.shape, s.kind) for k, s in down.param_specs().items()).items()}
    x = recipe_input((2, 8, 7, 9)).astype(np.float64)  # odd: the last windows overhang (ceil_mode)
    ops = se_multi.get_backend("numpy", dtype="float64")
    ours = down.bind(state, ops)(ops, ops.input(x))
    pooled = ref.avg_pool2d(x, (2, 2), (2, 2), (0, 0), ceil_mode=True, count_include_pad=False)
    assert pooled.shape == (2, 8, 4, 5) and np.allclose(pooled[..., -1, -1], x[..., -1, -1])
    want = ref.batch_norm(ref.conv2d(pooled, state["1.weight"]), state["2.running_mean"], state["2.running_var"],
                          state["2.weight"], state["2.bias"], 1e-5)
    assert rel_err(ours, want) < 1e-12


@pytest.mark.parametrize("caffe", [False, True])
def test_basic_block_matches_its_definition(caffe):
    """timm's BasicBlock: conv-BN-ReLU, conv-BN, SE, + shortcut, ReLU; the Caffe layout's
    (timm SEResNetBlock) has a ReLU after the second BN as well, before SE."""
    from se_multi.models.resnet import LEGACY, TIMM, BasicBlock

    layout = LEGACY if caffe else TIMM
    block = BasicBlock(6, 12, 2, layout, se=SEConfig(), reduction=4)
    specs = block.param_specs()
    state = {k: v.astype(np.float64) for k, v in recipe_state((k, s.shape, s.kind) for k, s in specs.items()).items()}
    x = recipe_input((2, 6, 9, 8)).astype(np.float64)
    ops = se_multi.get_backend("numpy", dtype="float64")
    ours = block.bind(state, ops)(ops, ops.input(x))

    def conv_bn(t, conv, bn, stride=1, pad=1):
        return ref.batch_norm(ref.conv2d(t, state[f"{conv}.weight"], None, (stride,) * 2, (pad,) * 4),
                              state[f"{bn}.running_mean"], state[f"{bn}.running_var"], state[f"{bn}.weight"],
                              state[f"{bn}.bias"], 1e-5)

    se = layout.se_name
    out = conv_bn(ref.relu(conv_bn(x, "conv1", "bn1", 2)), "conv2", "bn2")
    if caffe:
        out = ref.relu(out)
    w1, w2 = state[f"{se}.fc1.weight"][:, :, 0, 0], state[f"{se}.fc2.weight"][:, :, 0, 0]
    assert w1.shape == ((3, 12) if caffe else (8, 12))  # C // r; timm rounds C / r up to a multiple of 8
    gate = ref.sigmoid(ref.linear(ref.relu(ref.linear(ref.global_avg_pool(out), w1, state[f"{se}.fc1.bias"])), w2,
                                  state[f"{se}.fc2.bias"]))
    want = ref.relu(out * gate[:, :, None, None] + conv_bn(x, "downsample.0", "downsample.1", 2, 0))
    assert rel_err(ours, want) < 1e-12


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
    ("seresnext26t_32x4d", {"se_integration": "pre"}),
    ("legacy_seresnext26_32x4d", {"reduction": 8, "se_stages": (3, 4)}),
    ("legacy_seresnet18", {"se_integration": "conv3x3"}),
    ("seresnet18", {"se_integration": "identity", "se_bias": False}),
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


# ----------------------------------------------------------------------------- every SE model
SE_NAMES = sorted(SE_MODELS["timm"] + SE_MODELS["legacy"])


@pytest.mark.parametrize("name", SE_NAMES)
def test_every_se_model_takes_every_ablation_option(name):
    """Each placement names its SE blocks apart and gives them the paper's widths: pre = the
    block's input, conv3x3 = its (first) 3x3 conv's output, the others = its output; per-stage r
    and se_stages apply to every model of the family."""
    default = build_model(name).param_specs()
    se_name = "se_module" if name.startswith("legacy_") else "se"
    for integration in ("standard", "pre", "post", "identity", "conv3x3"):
        specs = build_model(name, se_integration=integration).param_specs()
        suffix = "" if integration == "standard" else f"_{integration}"
        fc1 = {k[: -len(f".{se_name}{suffix}.fc1.weight")]: s.shape for k, s in specs.items()
               if k.endswith(f".{se_name}{suffix}.fc1.weight")}
        assert len(fc1) == sum(1 for k in default if k.endswith(".fc1.weight")), integration
        for block, (rd, channels) in ((b, shape[:2]) for b, shape in fc1.items()):
            last = f"{block}.conv3.weight" if f"{block}.conv3.weight" in specs else f"{block}.conv2.weight"
            expected = {"pre": specs[f"{block}.conv1.weight"].shape[1],
                        "conv3x3": specs[f"{block}.conv2.weight"].shape[0] if last.endswith("conv3.weight")
                        else specs[f"{block}.conv1.weight"].shape[0]}.get(integration, specs[last].shape[0])
            assert channels == expected, (integration, block)
    only3 = build_model(name, se_stages=(3,), reduction=(4, 8, 8, 32)).param_specs()
    fc1 = {k: s.shape for k, s in only3.items() if k.endswith(".fc1.weight")}
    assert fc1 and all(k.startswith("layer3.") for k in fc1)
    divisor = 1 if se_name == "se_module" else 8
    assert all(rd == ref.reduced_channels(c, 8, divisor=divisor) for rd, c, *_ in fc1.values())


@pytest.mark.parametrize("name", SE_NAMES)
def test_checkpoint_options_are_read_from_its_keys(name):
    """A native checkpoint of any SE variant loads without restating how it was built; a default
    one is plain native (timm's rounding maps several r to one width: the default wins)."""
    from se_multi.models.loading import convert_layout
    from se_multi.tracing import shape_state

    _, options, layout = convert_layout(name, shape_state(build_model(name)))
    assert (options, layout) == ({}, "native")
    variant = {"se_integration": "pre", "se_stages": (2, 4), "se_bias": False, "reduction": 8}
    _, options, layout = convert_layout(name, shape_state(build_model(name, **variant)))
    assert options == variant and layout == "native (SE options from keys)"
