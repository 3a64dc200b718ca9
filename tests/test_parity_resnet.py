"""Parity of the ResNet family and the scSE U-Net with their peers (timm 1.0.31, smp 0.6.0).

Each fixture's weights are written as a checkpoint in the peer's own key layout, loaded through
the public ``create_model(weights=path)``, run on every backend se_multi knows of, and compared with
the peer's float64 logits. Unavailable backends are skipped with the reason ``backend_status`` gives.
"""

from __future__ import annotations

import numpy as np
import pytest

from _parity import FEATURE_RUNS, FEATURE_TOL, RUNS, expected, peer_input, peer_runs, rel_err
from conftest import require_backend

FIXTURES = ("seresnet50", "resnet50", "legacy_seresnet50", "smp.unet_se_resnet50_scse")
SE_FIXTURES = tuple(f for f in FIXTURES if f != "resnet50")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(fixture, backend, dtype) -> (logits, stage features or None), computed once each."""
    return peer_runs(tmp_path_factory.mktemp("peer_checkpoints"))


@pytest.mark.parametrize("fixture", FIXTURES)
def test_recipe_input_is_the_fixture_input(fixture):
    np.testing.assert_array_equal(peer_input(fixture), expected(fixture)["x"])


@pytest.mark.parametrize("backend,dtype,tol", RUNS, ids=[f"{b}-{d}" for b, d, _ in RUNS])
@pytest.mark.parametrize("fixture", FIXTURES)
def test_logits_match_peer(runs, fixture, backend, dtype, tol):
    require_backend(backend)
    logits, _ = runs(fixture, backend, dtype)
    peer = expected(fixture)["logits"]
    assert logits.shape == peer.shape
    err = rel_err(logits, peer)
    assert err <= tol, f"{fixture} on {backend}/{dtype}: max rel err {err:.3g} > {tol:g}"


@pytest.mark.parametrize("backend,dtype", FEATURE_RUNS)
@pytest.mark.parametrize("fixture", FIXTURES)
def test_stage_features_match_peer(runs, fixture, backend, dtype):
    require_backend(backend)
    _, ours = runs(fixture, backend, dtype)
    peer = {k.removeprefix("feature:"): v for k, v in expected(fixture).items() if k.startswith("feature:")}
    assert set(ours) == set(peer), "stage names differ from the peer's module names"
    for name, feature in ours.items():
        err = rel_err(feature, peer[name])
        assert err <= FEATURE_TOL[dtype], f"{fixture} {name} on {backend}/{dtype}: rel err {err:.3g}"


@pytest.mark.parametrize("fixture", SE_FIXTURES)
def test_se_path_is_exercised(runs, fixture):
    """Far from the peer's output with every SE block removed: the SE blocks really run."""
    logits, _ = runs(fixture, "numpy", "float64")
    assert rel_err(logits, expected(fixture)["logits_without_se"]) > 0.05

