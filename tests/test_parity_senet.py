"""Parity of the SE-ResNet/ResNeXt family and SENet-154 with timm 1.0.31 (``resnet.py`` and the
Caffe-layout ``senet.py``), on the six public fixtures.

Each fixture's weights are written once as a checkpoint in the peer's own key layout, loaded through
the public ``create_model(weights=path)`` on every backend, and compared with the peer's float64
logits. SENet-154 has 115M parameters: a bound model is dropped as soon as its logits (and stage
features) are taken, so one model at a time is alive, and each (fixture, backend, dtype) runs once.
"""

from __future__ import annotations

import numpy as np
import pytest

from _parity import FIXTURE_MODELS, RUNS, expected, manifest, peer_input, rel_err
from conftest import require_backend
from se_multi.conformance import MODEL_TOLERANCES

FIXTURES = ("legacy_senet154", "legacy_seresnet18", "legacy_seresnext50_32x4d", "seresnet152d",
            "seresnext26t_32x4d", "seresnext101_32x8d")


@pytest.mark.parametrize("fixture", FIXTURES)
def test_recipe_input_is_the_fixture_input(fixture):
    np.testing.assert_array_equal(peer_input(fixture), expected(fixture)["x"])


@pytest.mark.parametrize("fixture", FIXTURES)
def test_fixture_is_the_model_it_names(fixture):
    """The manifest records the peer's own model name: each fixture stands for that se_multi model."""
    assert manifest(fixture)["model"] == FIXTURE_MODELS[fixture] == fixture


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("backend,dtype,tol", RUNS, ids=[f"{b}-{d}" for b, d, _ in RUNS])
def test_logits_match_peer(peer_results, fixture, backend, dtype, tol):
    require_backend(backend)
    logits, _ = peer_results(fixture, backend, dtype)
    peer = expected(fixture)
    assert logits.shape == peer["logits"].shape
    err = rel_err(logits, peer["logits"])
    assert err <= tol, f"{fixture} on {backend}/{dtype}: max rel err {err:.3g} > {tol:g}"
    # the SE blocks run: without them the peer's output is > 100x the loosest tolerance away
    assert rel_err(logits, peer["logits_without_se"]) > 100 * MODEL_TOLERANCES["float32"]


def test_caffe_and_timm_senet154_differ_only_in_layout():
    """legacy_senet154 and senet154 are one architecture in two key layouts: the same parameter
    count (timm publishes 115.09M for both), and the Caffe checkpoint loads strictly into its own
    layout only (timm's has the other stem-pool convention: it must never load silently)."""
    from se_multi.models import build_model
    from se_multi.nn import StateDictError, check_state

    keys = manifest("legacy_senet154")["keys"]
    timm_layout, caffe_layout = build_model("senet154"), build_model("legacy_senet154")
    assert timm_layout.num_params() == caffe_layout.num_params() == sum(
        int(np.prod(k["shape"])) for k in keys if k["kind"] not in ("int", "bn_running_mean", "bn_running_var"))
    shapes_only = {k["name"]: np.broadcast_to(np.float32(0), k["shape"]) for k in keys}
    check_state(caffe_layout.param_specs(), shapes_only)  # its own layout: strict, no error
    with pytest.raises(StateDictError, match="missing key.*unexpected key"):
        check_state(timm_layout.param_specs(), shapes_only)
