"""bfloat16 wherever the CPU has it: parity on openvino and torch, and the kernels used (validate at
bfloat16 on both is tests/test_conformance.py's ``test_backend_conforms``: it ran here a second time).

A test skips only where this CPU has no bfloat16 units (AVX512_BF16 or AMX-BF16 on x86, BF16 on ARM;
detected by se_multi.cpu, the reason names what is missing). Top-1 agreement with the peer is
recorded per fixture (``record_property``): the README's parity table reports it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import se_multi
from _parity import FIXTURE_MODELS, expected, rel_err
from conftest import require_backend, require_native_cpu_dtype
from se_multi.conformance import MODEL_TOLERANCES
from se_multi.metrics import top1_agreement

BACKENDS = ("openvino", "torch")


@pytest.fixture(autouse=True)
def _native_bfloat16():
    require_native_cpu_dtype("bfloat16")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fixture", sorted(FIXTURE_MODELS))
def test_parity_at_bfloat16(peer_checkpoint, record_property, fixture, backend):
    require_backend(backend, "bfloat16")
    exp = expected(fixture)
    model = se_multi.create_model(FIXTURE_MODELS[fixture], weights=str(peer_checkpoint(fixture)), backend=backend,
                                  dtype="bfloat16")
    logits = se_multi.to_numpy(model(exp["x"])).astype(np.float64)
    err, agree = rel_err(logits, exp["logits"]), top1_agreement(logits, exp["logits"])
    record_property("max_rel_err", err)
    record_property("top1_agreement", agree)
    assert err <= MODEL_TOLERANCES["bfloat16"], f"{fixture} on {backend}/bfloat16: rel err {err:.3g}"


def test_torch_bfloat16_runs_onednn_bfloat16_convolutions():
    """The torch backend's CPU bf16 path (channels_last) reaches oneDNN's bfloat16 convolution
    kernels, not a float32 fallback: oneDNN's verbose log names each primitive it runs."""
    require_backend("torch", "bfloat16")
    code = ("import numpy as np, se_multi;"
            "m = se_multi.create_model('seresnet50', backend='torch', dtype='bfloat16');"
            "m(np.ones((1, 3, 64, 64), np.float32))")
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "DNNL_VERBOSE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    convs = [line for line in out.stdout.splitlines() if ",exec," in line and ",convolution," in line]
    assert convs, "oneDNN ran no convolution (verbose log empty)"
    bf16 = [line for line in convs if "src:bf16" in line or "src_bf16" in line]
    assert len(bf16) == len(convs), f"{len(convs) - len(bf16)} convolutions not in bfloat16: {convs[:2]}"
    assert all("acdb" in line or "nhwc" in line for line in bf16), "not channels_last"  # NHWC memory format


#: strided 3x3 convolutions whose output is one column wide and 2+ rows high (N, C_in, H, W, C_out,
#: groups): oneDNN's AMX bfloat16 kernel returned uninitialised memory (1e30 after a buffer of 1e30
#: was freed) for each of these on torch 2.13 CPU, 2026-12-03 (AMX Xeon); the last is a 2x2 output,
#: which was right, for contrast
ONE_COLUMN_CONVS = [(2, 256, 3, 2, 256, 1), (1, 512, 3, 2, 512, 1), (2, 1024, 3, 2, 1024, 32), (2, 256, 5, 1, 256, 1),
                    (2, 2048, 3, 2, 2048, 1), (2, 3, 33, 1, 32, 1), (2, 512, 4, 4, 512, 1)]


@pytest.mark.parametrize("n,cin,h,w,cout,groups", ONE_COLUMN_CONVS)
def test_torch_bfloat16_strided_conv_with_one_output_column(n, cin, h, w, cout, groups):
    require_backend("torch", "bfloat16")
    import torch

    from se_multi import reference as ref

    ops = se_multi.get_backend("torch", dtype="bfloat16")
    rng = np.random.default_rng(cin + h)
    x, wt = rng.standard_normal((n, cin, h, w)), rng.standard_normal((cout, cin // groups, 3, 3)) * 0.02
    want = ref.conv2d(x, wt, None, (2, 2), (1, 1, 1, 1), (1, 1), groups)
    for _ in range(5):
        torch.full((n * cin * 64,), 1e30, dtype=torch.bfloat16)  # freed at once: the buggy kernel read it back
        got = se_multi.to_numpy(ops.conv2d(ops.input(x), ops.param(wt, "conv"), None, (2, 2), (1, 1, 1, 1), (1, 1),
                                           groups)).astype(np.float64)
        assert got.shape == want.shape and rel_err(got, want) <= 5e-2, (n, cin, h, w, rel_err(got, want))
