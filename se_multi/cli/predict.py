"""``se-multi predict``: classify images (top-k ImageNet labels) or segment them (class-map PNG)."""

from __future__ import annotations

import argparse
import sys

from se_multi.cli import json_text
from se_multi.predict import Prediction, predict_arrays, prepare, write_mask, mask_paths


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (PNG, JPEG, ...), or .npy arrays already preprocessed as NCHW float")
    p.add_argument("--model", default="seresnet50", help="model name (default: seresnet50; see `se-multi info`)")
    p.add_argument("--pretrained-cfg", metavar="TAG",
                   help="preprocessing of this pretrained tag, e.g. legacy_seresnet50.in1k "
                        "(default: the tag a timm/ hub id names, else the model's default tag)")
    p.add_argument("--weights", metavar="W",
                   help="checkpoint file or hub id (default: deterministic seeded weights, untrained)")
    p.add_argument("--backend", default="auto", help="numpy, torch, mlx, cupy or auto (default)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained weights when --weights is not given")
    p.add_argument("--topk", type=int, default=5, help="classes to show per image (default: 5)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    p.add_argument("--output", metavar="MASK.png",
                   help="segmentation models: write the class map as a PNG (several images: "
                        "{stem}/{index} in the name, else _<index> is appended)")


def run(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise ValueError(f"--topk must be >= 1; got {args.topk}")
    cfg, inputs, model = prepare(args.images, args.model, args.weights, args.pretrained_cfg,
                                 args.backend, args.dtype, args.device, args.seed)
    results = predict_arrays(model, inputs, args.topk)
    _write_masks(results, args.output, args.model)
    if args.weights is None:  # after the run, so a failed run prints only its error line
        print(f"note: predictions are from untrained seeded weights (seed {args.seed}); "
              "pass --weights for a trained checkpoint", file=sys.stderr)
    header = {"model": args.model, "pretrained_cfg": cfg.tag, "weights": args.weights,
              "backend": model.ops.name, "dtype": str(model.dtype)}
    if args.json:
        print(json_text({**header, "seeded_weights": args.weights is None,
                          "results": [r.to_json() for r in results]}, indent=1))
    else:
        print(format_table(results, header))
    return 0


def _write_masks(results: list[Prediction], output: str | None, model_name: str) -> None:
    if output is None:
        return
    if not all(r.is_segmentation for r in results):
        raise ValueError(f"--output writes a segmentation class map, but {model_name} is a classifier "
                         "(output N x K); leave --output out")
    for r, path in zip(results, mask_paths(output, [r.source for r in results])):
        write_mask(path, r.class_map)
        r.mask_path = path


def format_table(results: list[Prediction], header: dict) -> str:
    lines = [f"{header['model']} ({header['pretrained_cfg']}) on {header['backend']} {header['dtype']}"]
    for r in results:
        what = "pixels" if r.is_segmentation else "prob"
        lines.append("")
        size = f"  class map {r.class_map.shape[0]}x{r.class_map.shape[1]}" if r.is_segmentation else ""
        lines.append(f"{r.source}{size}" + (f" -> {r.mask_path}" if r.mask_path else ""))
        lines.append(f"  {'rank':>4}  {what:>8}  {'class':>5}  label")
        for rank, (k, label, p) in enumerate(r.topk, 1):
            lines.append(f"  {rank:>4}  {p:8.4f}  {k:>5}  {label}")
    return "\n".join(lines)
