"""MobileNet parity with the peers (timm 1.0.31, torchvision 0.28) on every available backend.

Each fixture's recipe weights are written as a .safetensors checkpoint in the peer's own key
layout and loaded through the public loader, exactly as a real checkpoint would be; the
logits are compared with the peer's float64 logits as max|ours - peer| / max|peer|.
"""

from __future__ import annotations

import numpy as np
import pytest
from _parity import FIXTURE_MODELS, expected, peer_input, rel_err, write_peer_checkpoint
from conftest import ALL_BACKENDS, require_backend

import se_multi
from se_multi.models import loading
from se_multi.conformance import MODEL_TOLERANCES
from se_multi.models import build_model

FIXTURES = ("mobilenetv1_100", "se_mobilenetv1_100", "mobilenetv3_large_100", "torchvision.mobilenet_v3_large")
BACKENDS = ALL_BACKENDS
#: (backend, dtype, max relative error vs the float64 peer); float64 runs where the backend has it
RUNS = [(b, d, MODEL_TOLERANCES[d]) for d in ("float64", "float32") for b in BACKENDS]
#: a feature map is stored in float32 by the peer: compare at float32 resolution
FEATURE_TOL = 1e-5


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    """fixture name -> (checkpoint path in the peer layout, expected outputs), written once."""
    directory = tmp_path_factory.mktemp("mobilenet_peer_checkpoints")
    cache = {}

    def get(fixture):
        if fixture not in cache:
            cache[fixture] = write_peer_checkpoint(fixture, directory), expected(fixture)
        return cache[fixture]

    return get


def test_recipe_input_is_the_fixture_input():
    for fixture in FIXTURES:
        np.testing.assert_array_equal(peer_input(fixture), expected(fixture)["x"])


@pytest.mark.parametrize("backend,dtype,tol", RUNS, ids=[f"{b}-{d}" for b, d, _ in RUNS])
@pytest.mark.parametrize("fixture", FIXTURES)
def test_logits_match_peer(peer, fixture, backend, dtype, tol):
    require_backend(backend, dtype)
    path, exp = peer(fixture)
    model = se_multi.create_model(FIXTURE_MODELS[fixture], weights=str(path), backend=backend, dtype=dtype)
    logits = se_multi.to_numpy(model(exp["x"]))
    assert logits.shape == exp["logits"].shape
    err = rel_err(logits, exp["logits"])
    assert err <= tol, f"{fixture} on {backend}/{dtype}: rel err {err:.3g} > {tol:g}"
    if "logits_without_se" in exp:  # the SE path is exercised: dropping it is far outside the tolerance
        assert rel_err(logits, exp["logits_without_se"]) > 100 * tol


def _unit_and_stage_outputs(module, ops, x) -> dict:
    """Outputs named as the fixtures name them: ``blocks.i`` (timm stages) and ``features.k``
    (torchvision units: the stem, then every block in order)."""
    x = module.conv_stem(ops, x)
    out, k = {"features.0": x}, 1
    for i, stage in enumerate(module.blocks):
        for block in stage:
            x = out[f"features.{k}"] = block(ops, x)
            k += 1
        out[f"blocks.{i}"] = x
    return out


@pytest.mark.parametrize("fixture", FIXTURES)
def test_stage_features_match_peer(peer, fixture):
    """Every intermediate the peer recorded, on the float64 reference (localises a mismatch)."""
    path, exp = peer(fixture)
    model = se_multi.create_model(FIXTURE_MODELS[fixture], weights=str(path), backend="numpy", dtype="float64")
    ours = _unit_and_stage_outputs(model.module, model.ops, exp["x"].astype(np.float64))
    names = [k.removeprefix("feature:") for k in exp if k.startswith("feature:")]
    assert names, f"{fixture}: no features recorded"
    for name in names:
        err = rel_err(ours[name], exp[f"feature:{name}"])
        assert err <= FEATURE_TOL, f"{fixture} {name}: rel err {err:.3g}"


def test_torchvision_batchnorm_eps_is_load_bearing(peer):
    """The torchvision layout carries BN eps 1e-3: loaded with timm's 1e-5 the logits move outside
    the float32 tolerance (and 10^4 x the float64 one), so the parity above proves the eps is
    taken from the layout."""
    path, exp = peer("torchvision.mobilenet_v3_large")
    state, opts = loading.load_for_model("mobilenetv3_large_100", str(path))
    assert opts == {"bn_eps": 1e-3}
    ops = se_multi.get_backend("numpy", dtype="float64")
    wrong = build_model("mobilenetv3_large_100", bn_eps=1e-5).bind(state, ops)
    assert rel_err(wrong(ops, exp["x"].astype(np.float64)), exp["logits"]) > 1e-4


def test_se_position_is_load_bearing(peer):
    """The SE-MobileNet fixture fixes SE on the block output: the EfficientNet placement (after
    the depthwise conv) declares other SE widths, so the checkpoint is refused, never half-loaded."""
    path, _ = peer("se_mobilenetv1_100")
    with pytest.raises(ValueError, match="mis-shaped"):
        se_multi.create_model("se_mobilenetv1_100", weights=str(path), backend="numpy", se_position="depthwise")
