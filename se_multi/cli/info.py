"""``se-multi info``: parameters and multiply-adds per stage; ``--paper``: the SENet paper's tables."""

from __future__ import annotations

import argparse

from se_multi.files import json_text
from se_multi.info import format_info, model_info


def _number(text: str) -> int | float:
    v = float(text)
    return int(v) if v.is_integer() else v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="model name (see `se-multi info --list`)")
    p.add_argument("--paper", action="store_true",
                   help="the SENet paper's Tables 2, 3, 7 beside se_multi's counts, and the ablations' cost")
    p.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), default=(224, 224))
    p.add_argument("--json", action="store_true", help="print the model_info dict as JSON")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--reduction", nargs="+", type=_number, metavar="R",
                   help="SE reduction ratio: one value, or one per stage")
    p.add_argument("--se-integration", default=None,
                   help="standard | pre | post | identity | conv3x3 (SE-ResNet/ResNeXt)")
    p.add_argument("--se-stages", nargs="*", type=int, default=None, metavar="S",
                   help="stages that get SE, e.g. --se-stages 2 3 (none: no SE)")
    p.add_argument("--no-se-bias", dest="se_bias", action="store_const", const=False, default=None,
                   help="excitation FCs without biases")
    p.add_argument("--se-position", default=None, help="where SE sits in a block (models that offer it)")


def _model_kwargs(args) -> dict:
    kwargs = {"num_classes": args.num_classes, "se_integration": args.se_integration,
              "se_bias": args.se_bias, "se_position": args.se_position}
    if args.reduction is not None:
        kwargs["reduction"] = args.reduction[0] if len(args.reduction) == 1 else tuple(args.reduction)
    if args.se_stages is not None:
        kwargs["se_stages"] = tuple(args.se_stages)
    return {k: v for k, v in kwargs.items() if v is not None}


def run(args) -> int:
    if args.paper:
        if args.name:
            raise ValueError("--paper prints fixed tables; give either a model name or --paper")
        from se_multi.paper import paper_tables

        print(paper_tables(tuple(args.input_size)), end="")
        return 0
    if not args.name:
        from se_multi.models import list_models

        raise ValueError(f"give a model name (one of: {', '.join(list_models())}) or --paper")
    info = model_info(args.name, tuple(args.input_size), **_model_kwargs(args))
    print(json_text(info, indent=2) if args.json else format_info(info))
    return 0
