"""Parity of the ResNet family and the scSE U-Net with their peers (timm 1.0.31, smp 0.6.0).

Each fixture's weights are written as a checkpoint in the peer's own key layout, loaded through
the public ``create_model(weights=path)``, run on every backend se_multi knows of, and compared with
the peer's float64 logits. Unavailable backends are skipped with the reason ``backend_status`` gives.
"""

from __future__ import annotations

import numpy as np
import pytest

from _parity import RUNS, expected, peer_input, rel_err
from conftest import require_backend

FIXTURES = ("seresnet50", "resnet50", "legacy_seresnet50", "smp.unet_se_resnet50_scse")
SE_FIXTURES = tuple(f for f in FIXTURES if f != "resnet50")


@pytest.mark.parametrize("fixture", FIXTURES)
def test_recipe_input_is_the_fixture_input(fixture):
    np.testing.assert_array_equal(peer_input(fixture), expected(fixture)["x"])


@pytest.mark.parametrize("backend,dtype,tol", RUNS, ids=[f"{b}-{d}" for b, d, _ in RUNS])
@pytest.mark.parametrize("fixture", FIXTURES)
def test_logits_match_peer(peer_results, fixture, backend, dtype, tol):
    require_backend(backend)
    logits, _ = peer_results(fixture, backend, dtype)
    peer = expected(fixture)["logits"]
    assert logits.shape == peer.shape
    err = rel_err(logits, peer)
    assert err <= tol, f"{fixture} on {backend}/{dtype}: max rel err {err:.3g} > {tol:g}"


@pytest.mark.parametrize("fixture", SE_FIXTURES)
def test_se_path_is_exercised(peer_results, fixture):
    """Far from the peer's output with every SE block removed: the SE blocks really run."""
    logits, _ = peer_results(fixture, "numpy", "float64")
    assert rel_err(logits, expected(fixture)["logits_without_se"]) > 0.05

