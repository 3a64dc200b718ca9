"""Whole-model latency: backend x model x batch x dtype, one table per (model, batch, dtype),
so the backends are compared on the same work."""

from __future__ import annotations

import pytest

from benchmarks.conftest import (BACKENDS, MODELS as CHOSEN, cached_input, cached_model, skip_unless_available,
                                 skip_unless_native)
from se_multi.dispatch import backend_class

#: the default set; ``SE_MULTI_BENCH_MODELS=legacy_senet154,legacy_senet154_plain`` (any registered
#: names, e.g. the whole SE-ResNet/ResNeXt family) replaces it
MODELS = CHOSEN or ("seresnet50", "resnet50", "se_mobilenetv1_100", "mobilenetv1_100", "mobilenetv3_large_100")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_model_latency(benchmark, backend, model, batch, dtype):
    skip_unless_available(backend)
    if dtype not in backend_class(backend).dtypes:
        pytest.skip(f"{backend} has no {dtype}")
    skip_unless_native(dtype)
    net = cached_model(backend, model, dtype)
    x = net.ops.asarray(cached_input(batch))
    benchmark.group = f"{model} batch {batch} {dtype}"
    benchmark.extra_info.update(backend=backend, model=model, batch=batch, dtype=dtype)
    benchmark(lambda: net.ops.synchronize(net(x)))
