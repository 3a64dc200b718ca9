"""The SENet paper's complexity tables beside se_multi's counts (``se-multi info --paper``).

Hu et al., *Squeeze-and-Excitation Networks* (TPAMI), Tables 2, 3 and 7
(``../shared/paper/README.md``), the cost of the paper's ablations, which it reports only as
errors, and the cost of the scSE paper's blocks (Roy et al.) in each F-CNN. Every se_multi figure
is counted by :func:`se_multi.info.model_info` from the graph that runs.
"""

from __future__ import annotations

from typing import NamedTuple

from se_multi.info import model_info, paper_flops


class PaperRow(NamedTuple):
    table: str
    label: str
    model: str  # the se_multi model counted
    kwargs: dict  # its builder options
    gflops: float | None  # the paper's figure (multiply-adds incl. gate multiplies)
    mparams: float | None  # the paper's figure, millions
    without_se: bool = False  # count the model less its SE blocks (the paper's baseline)
    input_size: tuple[int, int] | None = None  # where the table's 224x224 is not the model's input


#: Hu et al., SENet (TPAMI), the complexity columns of Tables 2, 3 and 7 (../shared/paper/README.md).
#: Table 2's models are the original Caffe layouts (the ResNets stride in the first 1x1 conv, the
#: ResNeXts in the 3x3): se_multi's ``legacy_seresnet*`` and ``legacy_seresnext*``. Its baselines
#: are the same graphs without SE, counted as the SE model less its SE blocks (exact: removing SE
#: leaves the plain graph; ``test_info`` checks it against ``resnet50`` and the ``*_plain`` twins).
PAPER = (
    PaperRow("2", "ResNet-50", "legacy_seresnet50", {}, 3.86, None, without_se=True),
    PaperRow("2", "SE-ResNet-50", "legacy_seresnet50", {}, 3.87, None),
    PaperRow("2", "ResNet-101", "legacy_seresnet101", {}, 7.58, None, without_se=True),
    PaperRow("2", "SE-ResNet-101", "legacy_seresnet101", {}, 7.60, None),
    PaperRow("2", "ResNet-152", "legacy_seresnet152", {}, 11.30, None, without_se=True),
    PaperRow("2", "SE-ResNet-152", "legacy_seresnet152", {}, 11.32, None),
    PaperRow("2", "ResNeXt-50 (32x4d)", "legacy_seresnext50_32x4d", {}, 4.24, None, without_se=True),
    PaperRow("2", "SE-ResNeXt-50 (32x4d)", "legacy_seresnext50_32x4d", {}, 4.25, None),
    PaperRow("2", "ResNeXt-101 (32x4d)", "legacy_seresnext101_32x4d", {}, 7.99, None, without_se=True),
    PaperRow("2", "SE-ResNeXt-101 (32x4d)", "legacy_seresnext101_32x4d", {}, 8.00, None),
    PaperRow("2", "VGG-16 (BN)", "se_vgg16_bn", {}, 15.47, None, without_se=True),
    PaperRow("2", "SE-VGG-16 (BN)", "se_vgg16_bn", {}, 15.48, None),
    PaperRow("2", "BN-Inception", "se_bninception", {}, 2.03, None, without_se=True),
    PaperRow("2", "SE-BN-Inception", "se_bninception", {}, 2.04, None),
    PaperRow("2", "Inception-ResNet-v2", "se_inception_resnet_v2", {}, 11.75, None, without_se=True,
             input_size=(299, 299)),
    PaperRow("2", "SE-Inception-ResNet-v2", "se_inception_resnet_v2", {}, 11.76, None, input_size=(299, 299)),
    # not in Table 2: the paper gives no complexity for SENet-154 (the ILSVRC 2017 winner); se_multi's count
    PaperRow("2", "SENet-154", "legacy_senet154", {}, None, None),
    PaperRow("3", "MobileNet", "mobilenetv1_100", {}, 0.569, 4.2),
    PaperRow("3", "SE-MobileNet", "se_mobilenetv1_100", {}, 0.572, 4.7),
    PaperRow("3", "ShuffleNet", "se_shufflenet_g3", {}, 0.140, 1.8, without_se=True),
    PaperRow("3", "SE-ShuffleNet", "se_shufflenet_g3", {}, 0.142, 2.4),
    PaperRow("7", "SE-ResNet-50, r = 4", "legacy_seresnet50", {"reduction": 4}, None, 35.7),
    PaperRow("7", "SE-ResNet-50, r = 8", "legacy_seresnet50", {"reduction": 8}, None, 30.7),
    PaperRow("7", "SE-ResNet-50, r = 16", "legacy_seresnet50", {"reduction": 16}, None, 28.1),
    PaperRow("7", "SE-ResNet-50, r = 32", "legacy_seresnet50", {"reduction": 32}, None, 26.9),
    PaperRow("7", "ResNet-50", "resnet50", {}, None, 25.6),
)


def without_se(info: dict) -> dict:
    """The totals of ``info`` less its SE blocks: the same network with SE removed."""
    return dict(info, params=info["params"] - info["se_params"], macs=info["macs"] - info["se_macs"],
                se_params=0, se_macs=0, se_scale_mults=0, stages=[])


#: the paper's ablations (it reports only their errors); se_multi counts their cost
ABLATION_MODEL = "legacy_seresnet50"
ABLATIONS = (
    ("standard (SE before the sum)", {}),
    ("SE-PRE", {"se_integration": "pre"}),
    ("SE-POST", {"se_integration": "post"}),
    ("SE-Identity", {"se_integration": "identity"}),
    ("SE 3x3 (after the 3x3 conv)", {"se_integration": "conv3x3"}),
    ("SE in stage 2 only", {"se_stages": (2,)}),
    ("SE in stage 3 only", {"se_stages": (3,)}),
    ("SE in stage 4 only", {"se_stages": (4,)}),
    ("SE in all stages", {"se_stages": (1, 2, 3, 4)}),
    ("no excitation biases", {"se_bias": False}),
)

#: notes printed under the tables, by the se_multi model a row counts
_NOTES = {
    "legacy_seresnext50_32x4d": "the Caffe SE-ResNeXt (Cadene's `se_resnext*_32x4d`) strides in the 3x3 conv "
                                "like timm's `seresnext*_32x4d` and has the same SE widths at r = 16, so the two "
                                "layouts cost the same: only key names and the stem pool's padding convention "
                                "differ (56x56 either way at 224x224)",
    "se_vgg16_bn": "SE-VGG-16 puts SE (r = 16) after the ReLU of every conv; SE only after each stage's last "
                   "ReLU (`se_placement='stage'`) costs 15.477 G, which also rounds to the paper's 15.48: "
                   "Table 2 cannot tell the two apart, and the paper's rule for non-residual networks "
                   "(SE after the non-linearity following each convolution) decides",
    "se_bninception": "SE-BN-Inception puts SE on each Inception module's concatenated output (the paper's "
                      "Fig. 2); BN-Inception (Cadene's `bninception`) runs at 224x224 only",
    "se_inception_resnet_v2": "Inception-ResNet-v2 is counted at its own input, 299x299 (at 224x224 it costs "
                              "6.47 G): neither size gives the paper's 11.75. The same graph at 298x298 costs "
                              "11.75 G (grids 34/16/7 after the stem instead of 35/17/8), so the paper's Caffe "
                              "model most likely lost one row in its stem (an inference: the paper does not say); "
                              "SE sits on each of the 40 residual branches before the sum",
    "se_shufflenet_g3": "SE-ShuffleNet (1x, g = 3) puts SE (r = 16) on each unit's branch output, before the "
                        "sum or the concatenation with the pooled shortcut: +0.62 M parameters and +2.2 MFLOPs "
                        "(paper +0.6 M, +2); SE on the whole unit output would add +0.73 M. The baseline "
                        "counts 137.5 MFLOPs (-1.8%: the paper's 140 is the ShuffleNet paper's budget for every "
                        "1x network) and 1.87 M parameters (which round to 1.9, not 1.8)",
    "legacy_senet154": "SENet-154 is not in Table 2 and the paper gives no complexity figure for it: the row "
                       "is se_multi's count alone (64x4d grouped bottlenecks with the first 1x1 conv at half "
                       "width, a 3-conv 3x3 stem, 3x3 shortcut convs; timm's `senet154` costs the same)",
}


#: Roy, Navab, Wachinger (scSE): cSE, sSE and scSE after every encoder and decoder block of an
#: F-CNN; the paper's one complexity figure is that scSE adds about 1.5% compute to its U-Net
#: (../shared/paper/README.md). se_multi counts each F-CNN with each SE block against itself with
#: none, at the input its authors use: 256x256 MRI slices (QuickNAT, SD-Net), 224x224 RGB
#: (FC-DenseNet; CamVid's 360x480 needs a crop to a multiple of 32).
SCSE_PAPER_OVERHEAD = 0.015
FCNN_ROWS = (("QuickNAT", "quicknat", (256, 256)), ("SD-Net", "sdnet", (256, 256)),
             ("FC-DenseNet-103", "fcdensenet103", (224, 224)))
FCNN_SE = ("cse", "sse", "scse")


def fcnn_table() -> list[str]:
    """The scSE paper's blocks in each F-CNN: their parameters and compute beside the same network
    with none (the paper's "about 1.5%" for scSE in its U-Net)."""
    out = [f"### scSE paper: SE blocks in F-CNNs (Roy et al.; the paper: scSE adds about "
           f"{100 * SCSE_PAPER_OVERHEAD:.1f}% compute to its U-Net)", "",
           "| network | se_multi model | input | SE block | params (M) | SE params (M) | params over no SE "
           "| GFLOPs (paper convention) | compute over no SE |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, name, size in FCNN_ROWS:
        plain, why = _try_info(name, {"se": "none"}, size)
        if plain is None:
            out.append(f"| {label} | `{name}` | {size[0]}x{size[1]} | - | n/a | n/a | n/a | n/a | {why} |")
            continue
        base = paper_flops(plain)
        out.append(f"| {label} | `{name}` | {size[0]}x{size[1]} | none | {plain['params'] / 1e6:.3f} | 0 | 1 | "
                   f"{base / 1e9:.3f} | 1 |")
        for se in FCNN_SE:
            info, _ = _try_info(name, {"se": se}, size)
            g = paper_flops(info)
            out.append(f"| {label} | `{name}` | {size[0]}x{size[1]} | {se} | {info['params'] / 1e6:.3f} | "
                       f"{info['se_params'] / 1e6:.4f} | {info['params'] / plain['params']:.4f} | {g / 1e9:.3f} | "
                       f"{g / base:.4f} |")
    return out + ["", "Counted, scSE adds 0.06-0.08% compute to QuickNAT and SD-Net but 1.1% and 1.6% parameters: "
                  "the paper's \"about 1.5%\" matches the parameters, not the multiply-adds (an inference: the "
                  "shared summary of the paper says compute). In FC-DenseNet SE sits on dense blocks up to 656 "
                  "channels wide, so its r = 2 excitation adds about 11% parameters.", ""]


def _try_info(name: str, kwargs: dict, input_size=(224, 224)) -> tuple[dict | None, str]:
    """(info, "") or (None, why): a model this build does not register shows as n/a, so the
    rest of the tables still print; any other error is an error."""
    from se_multi.models import list_models

    if name not in list_models():
        return None, f"`{name}` is not registered"
    return model_info(name, input_size, **kwargs), ""


def _kwargs_text(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _diff(ours: float, paper: float, unit: str, digits: int) -> str:
    d = ours - paper
    return f"{d:+.{digits}f} {unit} ({100 * d / paper:+.2f}%)"


def paper_tables(input_size=(224, 224)) -> str:
    """The paper's complexity figures beside se_multi's counts, as Markdown."""
    out = ["The paper's \"GFLOPs\" are multiply-adds including the SE gate multiplies: they are compared "
           "with se_multi's `macs + se_scale_mults` (conv and linear multiply-accumulates, SE FCs included, "
           "plus C*H*W per SE gate). The paper rounds to 2 decimals (GFLOPs) and 0.1M (params); expect "
           "agreement within about 0.3% and 0.1M.", ""]
    sections = {
        "2": ("Table 2: ImageNet 224x224, GFLOPs (original Caffe layouts)",
              ["model", "se_multi model", "paper GFLOPs", "se_multi GFLOPs", "difference", "params (M)"]),
        "3": ("Table 3: mobile networks, MFLOPs and parameters",
              ["model", "se_multi model", "paper MFLOPs", "se_multi MFLOPs", "difference",
               "paper params (M)", "se_multi params (M)", "difference"]),
        "7": ("Table 7: SE-ResNet-50 by reduction ratio r, parameters",
              ["model", "se_multi model", "paper params (M)", "se_multi params (M)", "difference",
               "se_multi GFLOPs"]),
    }
    notes = []
    for table, (title, header) in sections.items():
        out += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for row in PAPER:
            if row.table != table:
                continue
            label, name, kwargs, gflops, mparams = row.label, row.model, row.kwargs, row.gflops, row.mparams
            ref_name = f"`{name}`" + (f" ({_kwargs_text(kwargs)})" if kwargs else "") + (
                " less SE" if row.without_se else "") + (
                f" at {row.input_size[0]}x{row.input_size[1]}" if row.input_size else "")
            notes += [f"`{name}`: {note}." for key, note in _NOTES.items()
                      if key == name and f"`{name}`: {note}." not in notes]
            info, why = _try_info(name, kwargs, row.input_size or input_size)
            if info is None:
                out.append(f"| {label} | {ref_name} | " + " | ".join(["n/a"] * (len(header) - 3))
                           + f" | {why} |")
                continue
            info = without_se(info) if row.without_se else info
            g, m = paper_flops(info) / 1e9, info["params"] / 1e6
            if table == "2" and gflops is None:
                cells = ["-", f"{g:.3f}", "no paper figure", f"{m:.2f}"]
            elif table == "2":
                cells = [f"{gflops:.2f}", f"{g:.3f}", _diff(g, gflops, "G", 3), f"{m:.2f}"]
            elif table == "3":
                cells = [f"{gflops * 1e3:.0f}", f"{g * 1e3:.1f}", _diff(g * 1e3, gflops * 1e3, "M", 1),
                         f"{mparams:.1f}", f"{m:.2f}", _diff(m, mparams, "M", 2)]
            else:
                cells = [f"{mparams:.1f}", f"{m:.2f}", _diff(m, mparams, "M", 2), f"{g:.3f}"]
            out.append(f"| {label} | {ref_name} | " + " | ".join(cells) + " |")
        out.append("")
    out += [f"- {n}" for n in notes] + ([""] if notes else [])
    out += fcnn_table()
    out += [f"### Ablations on `{ABLATION_MODEL}` (the paper gives only their errors)", "",
            "| configuration | options | params (M) | SE params (M) | GMACs | SE GMACs | GFLOPs (paper convention) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, kwargs in ABLATIONS:
        info, why = _try_info(ABLATION_MODEL, kwargs, input_size)
        opts = f"`{_kwargs_text(kwargs)}`" if kwargs else "defaults"
        if info is None:
            out.append(f"| {label} | {opts} | n/a | n/a | n/a | n/a | {why} |")
            continue
        out.append(f"| {label} | {opts} | {info['params'] / 1e6:.2f} | {info['se_params'] / 1e6:.2f} | "
                   f"{info['macs'] / 1e9:.3f} | {info['se_macs'] / 1e9:.4f} | {paper_flops(info) / 1e9:.3f} |")
    return "\n".join(out) + "\n"
