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


#: recipe tensors larger than se_multi.init's chunk (65536 draws): their draws cross a chunk boundary
CHUNK_CROSSING = ((3, 2, 65536 // 6 + 5), (70001,), (65537,))


@pytest.mark.parametrize("kind,shape", [("weight", CHUNK_CROSSING[0]), ("weight", CHUNK_CROSSING[1]), ("bias", (3,)),
                                        ("bn_weight", CHUNK_CROSSING[2]), ("bn_running_var", (4,)), ("bn_bias", (0,)),
                                        ("bn_running_mean", ())])
def test_recipe_weights_are_the_fixture_readme_formula(kind, shape):
    """The recipe (shared/fixtures/parity README) written whole-array here, against se_multi's
    chunked, in-place version, bit for bit: tensors smaller than a chunk, larger, and empty."""
    from se_multi import init

    u = np.random.Generator(np.random.PCG64([7, 11])).random(shape)
    formula = {"weight": lambda: (2 * u - 1) * (np.sqrt(3.0 / np.prod(shape[1:])) if len(shape) >= 2 else 0.2),
               "bias": lambda: 0.2 * (2 * u - 1), "bn_bias": lambda: 0.2 * (2 * u - 1),
               "bn_running_mean": lambda: 0.2 * (2 * u - 1), "bn_weight": lambda: 0.5 + 0.5 * u,
               "bn_running_var": lambda: 0.5 + u}[kind]
    want = np.asarray(formula()).astype(np.float32)
    got = init.recipe_tensor(7, 11, shape, kind)
    assert got.dtype == np.float32 and got.shape == want.shape and got.tobytes() == want.tobytes()
    if shape in CHUNK_CROSSING:
        assert u.size > init._CHUNK, "these cases cross a chunk boundary"


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

