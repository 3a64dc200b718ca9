"""SE-block microbenchmarks at SE-ResNet-50's stage shapes: the backend's fused ops
(squeeze, excite, scale + residual add + ReLU) against the same maths composed from
primitives (the Backend base class defaults)."""

from __future__ import annotations

import numpy as np
import pytest

import se_multi
from se_multi.backend import Backend
from se_multi.reference import reduced_channels
from benchmarks.conftest import BACKENDS, skip_unless_available

STAGES = [(256, 56), (512, 28), (1024, 14), (2048, 7)]


def se_unit(ops, composed: bool):
    """One standard SE residual tail: relu(x * excite(squeeze(x)) + residual)."""
    impl = Backend if composed else type(ops)  # composed = the base-class definitions

    def run(x, residual, w1, b1, w2, b2):
        s = impl.excite(ops, impl.squeeze(ops, x), w1, b1, w2, b2, "relu", "sigmoid")
        return ops.synchronize(impl.scale_add_relu(ops, x, s, residual))

    return run


@pytest.mark.parametrize("variant", ["fused", "composed"])
@pytest.mark.parametrize("channels,size", STAGES, ids=[f"{c}x{s}" for c, s in STAGES])
@pytest.mark.parametrize("backend", BACKENDS)
def test_se_block(benchmark, backend, channels, size, variant):
    skip_unless_available(backend)
    ops = se_multi.get_backend(backend, dtype="float32")
    rng = np.random.default_rng(0)
    rd = reduced_channels(channels, 16, divisor=8)
    x = ops.input(rng.standard_normal((1, channels, size, size)).astype(np.float32))
    residual = ops.input(rng.standard_normal((1, channels, size, size)).astype(np.float32))
    w1 = ops.param(rng.standard_normal((rd, channels)) * 0.05, "linear")
    w2 = ops.param(rng.standard_normal((channels, rd)) * 0.05, "linear")
    b1, b2 = ops.param(np.zeros(rd), "vector"), ops.param(np.zeros(channels), "vector")
    benchmark.group = f"SE block {channels}x{size}x{size}"
    benchmark.extra_info.update(backend=backend, variant=variant)
    benchmark(se_unit(ops, composed=variant == "composed"), x, residual, w1, b1, w2, b2)
