"""The performance goals, measured side by side in one process (``python -m benchmarks.goals``).

Every configuration the README's goal table compares is built first, then all are timed
round-robin by :func:`se_multi.bench.time_interleaved` (the same loop as ``se-multi bench``), so a
noisy, shared machine slows them alike; the table gives medians and 10th percentiles, and the
ratios below it are of medians from this one run.

- se_multi: ``openvino`` float32 and bfloat16, ``onnxruntime``, ``torch`` float32 and bfloat16,
  ``numpy``, on SE-ResNet-50 and ResNet-50 (and, with ``--mobile``, MobileNetV3-Large,
  SE-MobileNet and MobileNet on ``openvino`` and ``onnxruntime``);
- the peers (``peers.py``): ONNX Runtime and OpenVINO (float32, bfloat16) on the PyTorch export
  of the timm-structured model, with the backends' own settings.

``--exec-graph`` prints, for SE-ResNet-50 and ResNet-50 on OpenVINO (ours and the peer's graph),
the compiled execution graph's node counts by type and OpenVINO's per-node counters summed by
type: where the SE blocks' time goes. ``--parity`` prints every parity fixture's max relative
error and top-1 agreement against the peer's float64 logits on openvino float32/bfloat16 and
torch bfloat16.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter

import numpy as np

import se_multi
from se_multi.bench import time_interleaved
from se_multi.cpu import cpu_info
from se_multi.init import recipe_input
from se_multi.metrics import max_rel_error, top1_agreement


def _configs(size: int, mobile: bool, bf16: bool, backends=("openvino", "onnxruntime", "torch", "numpy")):
    from benchmarks import peers

    reduced = ("bfloat16",) if bf16 else ()
    out = {}  # label -> (model name, fn, x)
    for model in ("seresnet50", "resnet50"):
        x = recipe_input((1, 3, size, size), seed=1)
        for backend, dtypes in (("openvino", ("float32", *reduced)), ("onnxruntime", ("float32",)),
                                ("torch", ("float32", *reduced)), ("numpy", ("float32",))):
            if backend not in backends:
                continue
            for dtype in dtypes:
                net = se_multi.create_model(model, backend=backend, dtype=dtype)
                xb = net.ops.asarray(x)
                out[f"se_multi {backend} {dtype} | {model}"] = (model, lambda n=net, xb=xb: n.ops.synchronize(n(xb)), x)
        out[f"peer onnxruntime float32 | {model}"] = (model, lambda r=peers.onnxruntime_peer(model, size), x=x: r(x), x)
        for dtype in ("float32", *reduced):
            out[f"peer openvino {dtype} | {model}"] = (model, lambda r=peers.openvino_peer(model, size, 1, dtype), x=x: r(x), x)
    if mobile:
        for model in ("mobilenetv3_large_100", "se_mobilenetv1_100", "mobilenetv1_100"):
            x = recipe_input((1, 3, size, size), seed=1)
            for backend, dtypes in (("openvino", ("float32", *reduced)), ("onnxruntime", ("float32",))):
                for dtype in dtypes:
                    net = se_multi.create_model(model, backend=backend, dtype=dtype)
                    out[f"se_multi {backend} {dtype} | {model}"] = (model, lambda n=net, x=x: n(x), x)
    return out


def run_goals(size=224, budget_s=6.0, min_runs=20, mobile=True, backends=("openvino", "onnxruntime", "torch", "numpy")):
    bf16 = cpu_info().bf16
    configs = _configs(size, mobile, bf16, backends)
    refs = {}
    errors = {}
    for label, (model, fn, x) in configs.items():
        if model not in refs:
            refs[model] = se_multi.create_model(model, backend="numpy", dtype="float64")(x.astype(np.float64))
        for _ in range(2):
            y = fn()
        y = se_multi.to_numpy(y)
        errors[label] = (max_rel_error(y, refs[model]), top1_agreement(y, refs[model]))
    times = {label: [] for label in configs}
    time_interleaved([(times[label], fn) for label, (_, fn, _) in configs.items()], min_runs, 200, budget_s)
    med = {label: statistics.median(t) for label, t in times.items()}
    p10 = {label: float(np.percentile(t, 10)) for label, t in times.items()}
    print(f"measured {time.strftime('%Y-%m-%d')}, {cpu_info().name} ({cpu_info().isa()}), batch 1, {size}x{size}, "
          f"interleaved, {min(len(t) for t in times.values())}+ runs each")
    print(f"{'configuration':<58} {'median ms':>9} {'p10 ms':>7} {'rel err':>8} {'top-1':>5}")
    for label, t in times.items():
        print(f"{label:<58} {med[label]:9.2f} {np.percentile(t, 10):7.2f} {errors[label][0]:8.1e} {errors[label][1]:5.2f}")

    def ratio(a, b, what):
        if a in med and b in med:
            print(f"  {what}: {med[a] / med[b]:.3f} ({med[a]:.2f} / {med[b]:.2f} ms); "
                  f"p10 {p10[a] / p10[b]:.3f}")

    print("ratios (medians of this run; p10: the same ratio of 10th percentiles, the least disturbed calls):")
    ours = [k for k in med if k.startswith("se_multi") and k.endswith("| seresnet50")]
    best = min(ours, key=med.get)
    ratio(best, "peer onnxruntime float32 | seresnet50",
          f"fastest se_multi SE-ResNet-50 ({best.split(' |')[0]}, rel err {errors[best][0]:.1e}) / ORT on timm export")
    for dtype in ("float32", "bfloat16"):
        for model in ("seresnet50", "resnet50"):
            ratio(f"se_multi openvino {dtype} | {model}", f"peer openvino {dtype} | {model}",
                  f"openvino {dtype} / OpenVINO on timm export, {model}")
        for who in ("se_multi openvino", "peer openvino", "se_multi onnxruntime", "se_multi torch"):
            ratio(f"{who} {dtype} | seresnet50", f"{who} {dtype} | resnet50", f"SE overhead {who} {dtype}")
    ratio("peer onnxruntime float32 | seresnet50", "peer onnxruntime float32 | resnet50",
          "SE overhead peer onnxruntime float32")
    for model in ("mobilenetv3_large_100", "se_mobilenetv1_100", "mobilenetv1_100"):
        for dtype in ("float32", "bfloat16"):
            ratio(f"se_multi openvino {dtype} | {model}", f"se_multi onnxruntime float32 | {model}",
                  f"{model}: openvino {dtype} / onnxruntime float32")
    for dtype in ("float32", "bfloat16"):
        ratio(f"se_multi openvino {dtype} | se_mobilenetv1_100", f"se_multi openvino {dtype} | mobilenetv1_100",
              f"SE overhead openvino {dtype}, SE-MobileNet / MobileNet")


def exec_graph(size=224, runs=30) -> None:
    """Execution-graph node counts and per-node counters (summed by type) for the SE question."""
    import openvino

    from benchmarks import peers

    core = openvino.Core()
    x = recipe_input((1, 3, size, size), seed=1)
    dtypes = ("float32", "bfloat16") if cpu_info().bf16 else ("float32",)
    for dtype in dtypes:
        for model in ("seresnet50", "resnet50"):
            ops = se_multi.get_backend("openvino", dtype=dtype)
            net = se_multi.create_model(model, backend=ops)
            graphs = {"ours": ops.export(net.module, x.shape, batch=1)}
            import onnx

            graphs["peer"] = onnx.load(peers.export(model, size, 1))
            for who, proto in graphs.items():
                cfg = {**ops.config(), "PERF_COUNT": True}
                compiled = core.compile_model(core.read_model(proto.SerializeToString(), b""), "CPU", cfg)
                request = compiled.create_infer_request()
                runtime = compiled.get_runtime_model().get_ordered_ops()
                # the excitation's 1x1 convolutions run on the squeezed (N, C, 1, 1) vector
                on_vector = {op.get_friendly_name() for op in runtime
                             if op.get_rt_info()["layerType"].astype(str) == "Convolution"
                             and list(op.get_output_partial_shape(0).to_shape())[2:] == [1, 1]}
                totals: Counter = Counter()
                for _ in range(runs):
                    request.infer({0: x})
                    for p in request.profiling_info:
                        if p.status == p.Status.EXECUTED:
                            kind = "Convolution on SE vector" if p.node_name in on_vector else p.node_type
                            totals[kind] += p.real_time.total_seconds() * 1e3 / runs
                info = [{k: op.get_rt_info()[k].astype(str) for k in ("layerType", "outputLayouts", "runtimePrecision")}
                        for op in runtime]
                types = Counter(i["layerType"] for i in info if i["layerType"] not in ("Const", "Input", "Output"))
                layouts = Counter((i["layerType"], i["outputLayouts"], i["runtimePrecision"]) for i in info
                                  if i["layerType"] in ("Subgraph", "Eltwise", "ReduceMean", "Reorder"))
                print(f"{model} {dtype} {who}: executed nodes by type {dict(types.most_common())}")
                print("    layouts and precision: " + ", ".join(f"{t} {lay} {prec} x{n}" for (t, lay, prec), n in
                                                               layouts.most_common()))
                print("    ms per call by node type: " + ", ".join(f"{k} {v:.2f}" for k, v in totals.most_common()))


def parity_table() -> None:
    """Max rel err and top-1 agreement against every parity fixture's float64 peer logits."""
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _parity import FIXTURE_MODELS, expected, rel_err, write_peer_checkpoint

    runs = [("openvino", "float32"), ("openvino", "bfloat16"), ("torch", "bfloat16")]
    print(f"{'fixture':<32}" + "".join(f"{b + ' ' + d:>36}" for b, d in runs))
    with tempfile.TemporaryDirectory() as tmp:
        for fixture in sorted(FIXTURE_MODELS):
            exp, path = expected(fixture), write_peer_checkpoint(fixture, Path(tmp))
            cells = []
            for backend, dtype in runs:
                model = se_multi.create_model(FIXTURE_MODELS[fixture], weights=str(path), backend=backend, dtype=dtype)
                y = se_multi.to_numpy(model(exp["x"])).astype(np.float64)
                cells.append(f"{rel_err(y, exp['logits']):.1e}, top-1 {top1_agreement(y, exp['logits']):.2f}")
            print(f"{fixture:<32}" + "".join(f"{c:>36}" for c in cells))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of timing per configuration")
    parser.add_argument("--min-runs", type=int, default=20)
    parser.add_argument("--no-mobile", action="store_true")
    parser.add_argument("--backends", default="openvino,onnxruntime,torch,numpy",
                        help="se_multi backends to time beside the peers")
    parser.add_argument("--exec-graph", action="store_true")
    parser.add_argument("--parity", action="store_true")
    args = parser.parse_args()
    if args.parity:
        parity_table()
    elif args.exec_graph:
        exec_graph(args.size)
    else:
        run_goals(args.size, args.budget, args.min_runs, not args.no_mobile, tuple(args.backends.split(",")))
