"""MobileNet parity with the peers (timm 1.0.31, torchvision 0.28) on every available backend.

Each fixture's recipe weights are written as a .safetensors checkpoint in the peer's own key
layout and loaded through the public loader, exactly as a real checkpoint would be (the runs
are ``_parity.peer_runs``, shared with the other parity modules); the logits are compared with
the peer's float64 logits as max|ours - peer| / max|peer|. The stage features are compared in
test_parity_features.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from _parity import FIXTURE_MODELS, expected, peer_input, rel_err
from conftest import ALL_BACKENDS, require_backend

import se_multi
from se_multi.conformance import MODEL_TOLERANCES
from se_multi.models import build_model, loading

FIXTURES = ("mobilenetv1_100", "se_mobilenetv1_100", "mobilenetv3_large_100", "torchvision.mobilenet_v3_large")
#: (backend, dtype, max relative error vs the float64 peer); float64 runs where the backend has it
RUNS = [(b, d, MODEL_TOLERANCES[d]) for d in ("float64", "float32") for b in ALL_BACKENDS]


def test_recipe_input_is_the_fixture_input():
    for fixture in FIXTURES:
        np.testing.assert_array_equal(peer_input(fixture), expected(fixture)["x"])


@pytest.mark.parametrize("backend,dtype,tol", RUNS, ids=[f"{b}-{d}" for b, d, _ in RUNS])
@pytest.mark.parametrize("fixture", FIXTURES)
def test_logits_match_peer(peer_results, fixture, backend, dtype, tol):
    require_backend(backend, dtype)
    logits, _ = peer_results(fixture, backend, dtype)
    exp = expected(fixture)
    assert logits.shape == exp["logits"].shape
    err = rel_err(logits, exp["logits"])
    assert err <= tol, f"{fixture} on {backend}/{dtype}: rel err {err:.3g} > {tol:g}"
    if "logits_without_se" in exp:  # the SE path is exercised: dropping it is far outside the tolerance
        assert rel_err(logits, exp["logits_without_se"]) > 100 * tol


def test_torchvision_batchnorm_eps_is_load_bearing(peer_checkpoint):
    """The torchvision layout carries BN eps 1e-3: loaded with timm's 1e-5 the logits move outside
    the float32 tolerance (and 10^4 x the float64 one), so the parity above proves the eps is
    taken from the layout."""
    fixture = "torchvision.mobilenet_v3_large"
    exp = expected(fixture)
    state, opts = loading.load_for_model("mobilenetv3_large_100", str(peer_checkpoint(fixture)))
    assert opts == {"bn_eps": 1e-3}
    ops = se_multi.get_backend("numpy", dtype="float64")
    wrong = build_model("mobilenetv3_large_100", bn_eps=1e-5).bind(state, ops)
    assert rel_err(wrong(ops, exp["x"].astype(np.float64)), exp["logits"]) > MODEL_TOLERANCES["float32"]


def test_se_position_is_load_bearing(peer_checkpoint):
    """The SE-MobileNet fixture fixes SE on the block output: the EfficientNet placement (after
    the depthwise conv) declares other SE widths, so the checkpoint is refused, never half-loaded."""
    path = peer_checkpoint("se_mobilenetv1_100")
    with pytest.raises(ValueError, match="mis-shaped"):
        se_multi.create_model("se_mobilenetv1_100", weights=str(path), backend="numpy", se_position="depthwise")
