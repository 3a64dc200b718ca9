"""Parity of the ResNet family and the scSE U-Net with their peers (timm 1.0.31, smp 0.6.0).

Each fixture's weights are written as a checkpoint in the peer's own key layout, loaded through
the public ``create_model(weights=path)``, run on every backend se_multi knows of, and compared with
the peer's float64 logits. Unavailable backends are skipped with the reason ``backend_status`` gives.
"""

from __future__ import annotations

import numpy as np
import pytest

import se_multi
from _parity import FEATURE_TOL, FIXTURE_MODELS, RUNS, expected, peer_input, rel_err, write_peer_checkpoint
from conftest import require_backend
from se_multi.backend import GraphBackend

FIXTURES = ("seresnet50", "resnet50", "legacy_seresnet50", "smp.unet_se_resnet50_scse")
SE_FIXTURES = tuple(f for f in FIXTURES if f != "resnet50")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    directory = tmp_path_factory.mktemp("peer_checkpoints")
    return {fixture: write_peer_checkpoint(fixture, directory) for fixture in FIXTURES}


@pytest.fixture(scope="module")
def runs(checkpoints):
    """(fixture, backend, dtype) -> (model, logits as NumPy): each model is built and run once."""
    cache = {}

    def get(fixture, backend, dtype):
        key = (fixture, backend, dtype)
        if key not in cache:
            model = se_multi.create_model(FIXTURE_MODELS[fixture], weights=str(checkpoints[fixture]),
                                          backend=backend, dtype=dtype)
            cache[key] = model, se_multi.to_numpy(model(peer_input(fixture))).astype(np.float64)
        return cache[key]

    yield get
    cache.clear()


@pytest.mark.parametrize("fixture", FIXTURES)
def test_recipe_input_is_the_fixture_input(fixture):
    np.testing.assert_array_equal(peer_input(fixture), expected(fixture)["x"])


@pytest.mark.parametrize("backend,dtype,tol", RUNS, ids=[f"{b}-{d}" for b, d, _ in RUNS])
@pytest.mark.parametrize("fixture", FIXTURES)
def test_logits_match_peer(runs, fixture, backend, dtype, tol):
    require_backend(backend)
    _, logits = runs(fixture, backend, dtype)
    peer = expected(fixture)["logits"]
    assert logits.shape == peer.shape
    err = rel_err(logits, peer)
    assert err <= tol, f"{fixture} on {backend}/{dtype}: max rel err {err:.3g} > {tol:g}"


@pytest.mark.parametrize("backend,dtype,tol", RUNS[:3], ids=[f"{b}-{d}" for b, d, _ in RUNS[:3]])
@pytest.mark.parametrize("fixture", FIXTURES)
def test_stage_features_match_peer(runs, fixture, backend, dtype, tol):
    require_backend(backend)
    model, _ = runs(fixture, backend, dtype)
    if isinstance(model.ops, GraphBackend):
        pytest.skip("a whole-graph backend exposes no intermediate features")
    peer = {k.removeprefix("feature:"): v for k, v in expected(fixture).items() if k.startswith("feature:")}
    ours = model.module.forward_features(model.ops, model.ops.input(peer_input(fixture)))
    assert set(ours) == set(peer), "stage names differ from the peer's module names"
    for name, feature in ours.items():
        err = rel_err(se_multi.to_numpy(model.ops.output(feature)), peer[name])
        assert err <= FEATURE_TOL[dtype], f"{fixture} {name} on {backend}/{dtype}: rel err {err:.3g}"


@pytest.mark.parametrize("fixture", SE_FIXTURES)
def test_se_path_is_exercised(runs, fixture):
    """Far from the peer's output with every SE block removed: the SE blocks really run."""
    _, logits = runs(fixture, "numpy", "float64")
    assert rel_err(logits, expected(fixture)["logits_without_se"]) > 0.05

