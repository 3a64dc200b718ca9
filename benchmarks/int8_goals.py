"""The int8 goals of issue #23, side by side in one process (``python -m benchmarks.int8_goals``).

Every configuration is built (and quantized) first, then all are timed round-robin by
:func:`se_multi.bench.time_interleaved`; medians and 10th percentiles, ratios of medians of this
one run. On a CPU without int8 dot-product units (``se_multi.cpu``: VNNI or AMX-INT8) it says so
and stops: int8 speed means nothing there.

- SE-ResNet-50 and ResNet-50 on ``openvino`` float32, bfloat16 (where the CPU has it) and int8
  (SE kept in float, and ``quantize_se``), ``onnxruntime`` float32 and int8 (both ways); the peer:
  OpenVINO on timm's export (``peers.py``) quantized by NNCF with its defaults (its ``SE_BLOCK``
  ignored pattern) on the same calibration images, the same bias correction;
- MobileNetV3-Large, SE-MobileNet and MobileNet: f32 / bf16 / int8 on both engines.

Calibration: ``--calibration N`` seeded synthetic images through each model's preprocessing
(the embedded default, :func:`se_multi.calibration.synthetic_images`); top-1 agreement with the same
engine at float32 on ``--agreement`` held-out images of that source; max rel err against the NumPy
float64 reference on the benchmark input. Seeded weights and generated inputs: agreement, not
ImageNet accuracy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import se_multi
from se_multi.bench import time_interleaved
from se_multi.cpu import cpu_info
from se_multi.init import recipe_input
from se_multi.metrics import max_rel_error, topk_agreement
from se_multi.quantize import calibration_set


def _peer_int8(model: str, size: int, arrays):
    """OpenVINO int8 on timm's export: NNCF's defaults on the same calibration arrays."""
    import nncf
    import openvino as ov

    from benchmarks.peers import export

    ov_model = ov.convert_model(export(model, size, 1))
    q = nncf.quantize(ov_model, nncf.Dataset(list(arrays)), subset_size=len(arrays), fast_bias_correction=False)
    return se_multi.get_backend("openvino", dtype="int8").model_engine(q, np.float32)


def build(size: int, calibration: int, agreement: int, mobile: bool, peer: bool):
    bf16 = cpu_info().bf16
    configs, info = {}, {}
    models = ["seresnet50", "resnet50"] + (["mobilenetv3_large_100", "se_mobilenetv1_100", "mobilenetv1_100"]
                                           if mobile else [])
    for model in models:
        x = recipe_input((1, 3, size, size), seed=1)
        ref = se_multi.create_model(model, backend="numpy", dtype="float64").predict_numpy(x.astype(np.float64))
        held = calibration_set(model, calibration, held_out=agreement, warn=False).held_out
        float32 = {}
        runs = [("openvino", "float32", {}), *((("openvino", "bfloat16", {}),) if bf16 else ()),
                ("openvino", "int8", {}), ("openvino", "int8", {"quantize_se": True}),
                ("onnxruntime", "float32", {}), ("onnxruntime", "int8", {}),
                ("onnxruntime", "int8", {"quantize_se": True})]
        for backend, dtype, opts in runs:
            if dtype == "int8":
                opts = {"calibration": calibration, **opts}
            t0 = time.perf_counter()
            net = se_multi.create_model(model, backend=se_multi.get_backend(backend, dtype=dtype, **opts))
            y = net.predict_numpy(x)
            label = f"{backend} {dtype}{' SE int8' if opts.get('quantize_se') else ''} | {model}"
            entry = {"err": max_rel_error(y, ref), "build_s": time.perf_counter() - t0}
            if dtype == "float32":
                float32[backend] = np.concatenate([net.predict_numpy(h) for h in held])
            elif dtype == "int8" and held:
                q = np.concatenate([net.predict_numpy(h) for h in held])
                entry["top1"] = topk_agreement(q, float32[backend], 1)
                entry["top5"] = topk_agreement(q, float32[backend], 5)
            configs[label] = lambda n=net, x=x: n(x)
            info[label] = entry
            print(f"built {label} in {entry['build_s']:.0f} s", flush=True)
        if peer and model in ("seresnet50", "resnet50"):
            t0 = time.perf_counter()
            run = _peer_int8(model, size, calibration_set(model, calibration, held_out=0, warn=False).arrays)
            label = f"peer openvino int8 (timm export, NNCF defaults) | {model}"
            entry = {"err": max_rel_error(run(x), ref), "build_s": time.perf_counter() - t0}
            if held:
                from benchmarks.peers import openvino_peer

                f = np.concatenate([openvino_peer(model, size, 1)(h) for h in held])
                q = np.concatenate([run(h) for h in held])
                entry["top1"], entry["top5"] = topk_agreement(q, f, 1), topk_agreement(q, f, 5)
            configs[label], info[label] = (lambda r=run, x=x: r(x)), entry
            print(f"built {label} in {entry['build_s']:.0f} s", flush=True)
    return configs, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calibration", type=int, default=64, help="synthetic calibration images per model")
    parser.add_argument("--agreement", type=int, default=100, help="held-out images for top-1 agreement")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds of timing per configuration")
    parser.add_argument("--min-runs", type=int, default=20)
    parser.add_argument("--no-mobile", action="store_true")
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    cpu = cpu_info()
    if not cpu.int8:
        print(f"int8 goals not measured: {cpu.why_no('int8')}")
        return
    configs, info = build(args.size, args.calibration, args.agreement, not args.no_mobile, not args.no_peer)
    times = {label: [] for label in configs}
    time_interleaved([(times[label], fn) for label, fn in configs.items()], args.min_runs, 200, args.budget)
    med = {k: statistics.median(v) for k, v in times.items()}
    p10 = {k: float(np.percentile(v, 10)) for k, v in times.items()}
    print(f"\nmeasured {time.strftime('%Y-%m-%d')}, {cpu.name} ({cpu.isa()}), batch 1, {args.size}x{args.size}, "
          f"{args.calibration} synthetic calibration images, top-1/top-5 agreement with float32 on "
          f"{args.agreement} held-out ones, {min(len(v) for v in times.values())}+ calls each")
    print(f"{'configuration':<64} {'median ms':>9} {'p10 ms':>8} {'rel err f64':>11} {'top-1':>6} {'top-5':>6} "
          f"{'build s':>7}")
    for label in configs:
        e = info[label]
        top1 = f"{e['top1']:.2f}" if "top1" in e else "-"
        top5 = f"{e['top5']:.2f}" if "top5" in e else "-"
        print(f"{label:<64} {med[label]:>9.2f} {p10[label]:>8.2f} {e['err']:>11.1e} {top1:>6} {top5:>6} "
              f"{e['build_s']:>7.0f}")
    print("\nratios (medians; p10 in brackets):")

    def ratio(a, b, text):
        if a in med and b in med:
            print(f"  {text}: {med[a] / med[b]:.3f} ({p10[a] / p10[b]:.3f})")

    for m in ("seresnet50", "resnet50", "mobilenetv3_large_100", "se_mobilenetv1_100", "mobilenetv1_100"):
        ratio(f"openvino int8 | {m}", f"openvino bfloat16 | {m}", f"{m}: openvino int8 / openvino bfloat16")
        ratio(f"openvino int8 | {m}", f"openvino float32 | {m}", f"{m}: openvino int8 / openvino float32")
        ratio(f"onnxruntime int8 | {m}", f"onnxruntime float32 | {m}", f"{m}: onnxruntime int8 / onnxruntime float32")
        ratio(f"openvino int8 SE int8 | {m}", f"openvino int8 | {m}", f"{m}: openvino int8 SE quantized / SE float")
        ratio(f"onnxruntime int8 SE int8 | {m}", f"onnxruntime int8 | {m}",
              f"{m}: onnxruntime int8 SE quantized / SE float")
        ratio(f"openvino int8 | {m}", f"peer openvino int8 (timm export, NNCF defaults) | {m}",
              f"{m}: openvino int8 / the peer's int8")
    for tag in ("openvino float32", "openvino bfloat16", "openvino int8", "openvino int8 SE int8", "onnxruntime float32",
                "onnxruntime int8", "onnxruntime int8 SE int8", "peer openvino int8 (timm export, NNCF defaults)"):
        ratio(f"{tag} | seresnet50", f"{tag} | resnet50", f"SE overhead, {tag}")
        ratio(f"{tag} | se_mobilenetv1_100", f"{tag} | mobilenetv1_100", f"SE-MobileNet overhead, {tag}")


if __name__ == "__main__":
    main()
