"""Every stage feature each parity fixture records (``feature:<module>`` in its expected.npz),
against ours on the op-by-op runs of :data:`_parity.FEATURE_RUNS` (a whole graph exposes no
intermediates): a logits mismatch in test_parity_*.py is localised here to the first stage that
differs. One test for every family (ResNet, SENet, the scSE U-Net, MobileNet); the runs are the
same session-wide ones the logits tests read (``peer_results``)."""

from __future__ import annotations

import pytest

from _parity import FEATURE_RUNS, FIXTURE_MODELS, expected, feature_tolerance, rel_err
from conftest import require_backend

#: every parity fixture (each records stage features)
FIXTURES = tuple(FIXTURE_MODELS)


@pytest.mark.parametrize("backend,dtype", FEATURE_RUNS)
@pytest.mark.parametrize("fixture", FIXTURES)
def test_stage_features_match_peer(peer_results, fixture, backend, dtype):
    require_backend(backend)
    _, ours = peer_results(fixture, backend, dtype)
    peer = {k.removeprefix("feature:"): v for k, v in expected(fixture).items() if k.startswith("feature:")}
    assert peer, f"{fixture}: no features recorded"
    assert set(ours) == set(peer), "stage names differ from the peer's module names"
    tol = feature_tolerance(dtype)
    for name, feature in ours.items():
        err = rel_err(feature, peer[name])
        assert err <= tol, f"{fixture} {name} on {backend}/{dtype}: rel err {err:.3g} > {tol:g}"
