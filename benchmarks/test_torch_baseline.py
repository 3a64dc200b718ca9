"""The plain-PyTorch baseline (eager nn.Module, BN not folded, NCHW) on the same weights,
in the same groups as test_models.py so the table compares it with the torch backend."""

from __future__ import annotations

import pytest

from benchmarks.conftest import cached_input, cached_model, requires

pytestmark = requires("torch")


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("model", ["seresnet50", "resnet50"])
def test_torch_eager_baseline(benchmark, model, batch):
    import torch

    from benchmarks import torch_baseline
    from se_multi.init import recipe_state

    net = cached_model("numpy", model, "float32")  # for its declared keys only
    specs = net.module.param_specs()
    state = recipe_state(((k, s.shape, s.kind) for k, s in specs.items()), seed=0)
    eager = getattr(torch_baseline, model)(state)
    x = torch.from_numpy(cached_input(batch))
    benchmark.group = f"{model} batch {batch} float32"
    benchmark.extra_info.update(backend="torch-eager-baseline", model=model, batch=batch, dtype="float32")

    def run():
        with torch.inference_mode():
            return eager(x)

    benchmark(run)
