"""Model complexity: parameters and multiply-accumulates, counted from the graph that runs.

:func:`model_info` runs the model's own ``forward(ops, x)`` on :class:`ShapeBackend`, a
backend whose "arrays" are NCHW shape records: each op computes its output shape with the
reference's size formulas (so shapes are exactly what the real backends produce) and
counts what it costs. No activation array exists and no framework is imported, so it
works for every model, input size and option (``reduction=``, ``se_integration=``, ...)
without a hand-written number.

Conventions (those of timm's model cards and of the SENet paper's notes):

- ``macs``: multiply-accumulates of every conv (``Cout*Ho*Wo*(Cin/groups)*KH*KW``) and
  linear layer (``in*out``) for one image; SE excitation FCs and sSE convs included;
  biases, BatchNorm (folded at load), activations, pooling and additions are not counted.
- ``se_macs``: the part of ``macs`` spent inside the SE ops (``excite``, ``spatial_gate``).
- ``se_scale_mults``: elements multiplied by a gate (``mul_channel``/``mul_pixel``, the op
  table's gate ops): ``C*H*W`` per cSE or sSE block, twice that per scSE block.
- the SENet paper's "GFLOPs" are multiply-adds including the gate multiplies:
  ``macs + se_scale_mults`` (:func:`paper_flops`).
- ``params``: learnable parameters as checkpoints count them (running statistics and
  counters excluded), ``se_params`` those inside SE / sSE / scSE blocks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from se_multi import reference as ref
from se_multi.backend import Backend
from se_multi.nn import BUFFER_KINDS, Module


# =========================================================================== shape-only backend
@dataclass(frozen=True)
class ShapeArray:
    """What :class:`ShapeBackend` passes between ops: the NCHW shape of a feature map, the
    (N, C) shape of a vector, or a weight's PyTorch-layout shape. ``source`` is the weight of
    the op that made it (gates inherit it), so that every cost can be charged to the module
    that owns the weight, whichever way a model's code calls its modules."""

    shape: tuple[int, ...]
    source: "ShapeArray | None" = field(default=None, compare=False, repr=False)

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclass
class Cost:
    """What one op cost, and the weight it is charged to (``None``: no weight)."""

    weight: ShapeArray | None
    output: ShapeArray
    macs: int = 0
    se_macs: int = 0
    se_scale_mults: int = 0


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


class ShapeBackend(Backend):
    """Computes shapes and counts costs; every fused op keeps its composed default (the
    definition), so the count is that of the op graph every backend runs. Fused SE ops mark
    the MACs of the primitives they call as SE MACs. ``costs`` lists every op that cost
    something, in call order."""

    name = "shapes"
    package = None
    dtypes = ("float32", "float64")

    def __init__(self, dtype: str = "float32", device: str | None = None):
        super().__init__(dtype, device)
        self.costs: list[Cost] = []
        self._se_depth = 0

    def total(self, key: str) -> int:
        return sum(getattr(c, key) for c in self.costs)

    # ---------------------------------------------------------------- arrays
    def asarray(self, x: Any) -> ShapeArray:
        return x if isinstance(x, ShapeArray) else ShapeArray(tuple(int(d) for d in np.shape(x)))

    def to_numpy(self, x: ShapeArray) -> np.ndarray:
        return np.broadcast_to(np.zeros((), np.float32), x.shape)  # zero memory: values do not exist here

    def is_native(self, x: Any) -> bool:
        return isinstance(x, ShapeArray)

    def param(self, w: np.ndarray, kind: str) -> ShapeArray:
        return ShapeArray(tuple(int(d) for d in np.shape(w)))

    # ---------------------------------------------------------------- accounting
    @contextlib.contextmanager
    def _se(self):
        self._se_depth += 1
        try:
            yield
        finally:
            self._se_depth -= 1

    def _weighted(self, w: ShapeArray, shape: tuple[int, ...], macs: int) -> ShapeArray:
        out = ShapeArray(shape, source=w)
        self.costs.append(Cost(w, out, macs=macs, se_macs=macs if self._se_depth else 0))
        return out

    def _gated(self, x: ShapeArray, gate: ShapeArray) -> ShapeArray:
        n, c, h, w = x.shape
        self.costs.append(Cost(gate.source, x, se_scale_mults=n * c * h * w))
        return x

    # ---------------------------------------------------------------- primitives
    def conv2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        n, c, h, wd = _feature_map(x, "conv2d")
        o, cg, kh, kw = w.shape
        if c != cg * groups or o % groups:
            raise ValueError(f"conv2d: input has {c} channels, weight {w.shape} with groups={groups} "
                             f"expects {cg * groups}")
        (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
        pt, pb, pl, pr = padding
        ho = ref.conv_output_size(h, kh, sh, pt + pb, dh)
        wo = ref.conv_output_size(wd, kw, sw, pl + pr, dw)
        if ho <= 0 or wo <= 0:
            raise ValueError(f"conv2d: input {h}x{wd} is smaller than the kernel {kh}x{kw} (padding {padding})")
        return self._weighted(w, (n, o, ho, wo), n * o * ho * wo * cg * kh * kw)

    def linear(self, x, w, b=None):
        n, features = x.shape
        out, inp = w.shape
        if features != inp:
            raise ValueError(f"linear: input has {features} features, weight {w.shape} expects {inp}")
        return self._weighted(w, (n, out), n * inp * out)

    def batch_norm(self, x, mean, var, weight, bias, eps):
        return x

    def relu(self, x):
        return x

    relu6 = sigmoid = hard_sigmoid = hard_swish = relu

    def _pool(self, x, kernel, stride, padding, ceil_mode, op):
        n, c, h, w = _feature_map(x, op)
        (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(padding)
        return ShapeArray((n, c, ref.pool_output_size(h, kh, sh, ph, ceil_mode),
                           ref.pool_output_size(w, kw, sw, pw, ceil_mode)))

    def max_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False):
        return self._pool(x, kernel, stride, padding, ceil_mode, "max_pool2d")

    def avg_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
        return self._pool(x, kernel, stride, padding, ceil_mode, "avg_pool2d")

    def global_avg_pool(self, x):
        n, c, _, _ = _feature_map(x, "global_avg_pool")
        return ShapeArray((n, c))

    def add(self, a, b):
        if a.shape != b.shape:
            raise ValueError(f"add: shapes {a.shape} and {b.shape} differ")
        return a

    maximum = add

    def mul_channel(self, x, s):
        n, c, _, _ = _feature_map(x, "mul_channel")
        if s.shape != (n, c):
            raise ValueError(f"mul_channel: gates of shape {s.shape} for a feature map {x.shape}; expected {(n, c)}")
        return self._gated(x, s)

    def mul_pixel(self, x, q):
        n, _, h, w = _feature_map(x, "mul_pixel")
        if q.shape != (n, 1, h, w):
            raise ValueError(f"mul_pixel: gate map of shape {q.shape} for a feature map {x.shape}; "
                             f"expected {(n, 1, h, w)}")
        return self._gated(x, q)

    def upsample_nearest2x(self, x):
        n, c, h, w = _feature_map(x, "upsample_nearest2x")
        return ShapeArray((n, c, 2 * h, 2 * w))

    def concat_channels(self, xs):
        shapes = [_feature_map(x, "concat_channels") for x in xs]
        if len({(s[0], s[2], s[3]) for s in shapes}) != 1:
            raise ValueError(f"concat_channels: N, H, W must agree; got {shapes}")
        n, _, h, w = shapes[0]
        return ShapeArray((n, sum(s[1] for s in shapes), h, w))

    # ---------------------------------------------------------------- SE ops: defaults, marked as SE
    def excite(self, *args, **kwargs):
        with self._se():
            return super().excite(*args, **kwargs)

    def spatial_gate(self, *args, **kwargs):
        with self._se():
            return super().spatial_gate(*args, **kwargs)


def _feature_map(x: ShapeArray, op: str) -> tuple[int, int, int, int]:
    if len(x.shape) != 4:
        raise ValueError(f"{op}: expected an NCHW feature map; got shape {x.shape}")
    return x.shape  # type: ignore[return-value]


# =========================================================================== stage attribution
# A row is a *stage*: the model's ``stage_names`` (dotted attribute paths, e.g. ``layer1``,
# ``blocks.3``, ``decoder.blocks.0``; a stage that declares its own ``stage_names`` is split the
# same way) and the model's other top-level children. Each op is charged to the stage that owns
# its weight (a gate multiply to the stage owning the gate's weights), the innermost one where
# stages nest; weights the root module declares itself form a ``(root)`` row. Charging by
# weight ownership works however a model's code reaches its modules (``forward``, helper
# methods, loops), and the rows add up to the totals exactly.
ROOT_ROW = "(root)"


def _resolve(module: Module, path: str) -> Module:
    """A submodule by attribute path (``layer1``, ``blocks.3``) or by checkpoint prefix."""
    node = module
    for part in path.split("."):
        node = node._children.get(part) if node is not None else None
    if node is not None:
        return node
    by_prefix = {prefix.rstrip("."): m for prefix, m in module.named_modules() if prefix and not m.flat}
    if path in by_prefix:
        return by_prefix[path]
    raise ValueError(f"stage {path!r} of stage_names is not a submodule of {type(module).__name__}")


def _stages(module: Module, prefix: str = "") -> dict[str, Module]:
    """Stage name -> module: ``stage_names``, then (at the top only) the other children; a stage
    with ``stage_names`` of its own adds its stages under its name (``encoder.layer1``)."""
    stages = {prefix + name: _resolve(module, name) for name in getattr(module, "stage_names", None) or ()}
    if not prefix:
        named = {id(m) for m in stages.values()}
        stages.update((name, child) for name, child in module._children.items() if id(child) not in named)
    for name, sub in list(stages.items()):
        if getattr(sub, "stage_names", None):
            stages.update(_stages(sub, f"{name}."))
    return stages


def _stage_of_modules(module: Module, stages: dict[str, Module]) -> dict[int, str]:
    """id(module) -> the innermost stage containing it (outer stages are assigned first)."""
    members = {name: [m for _, m in sub.named_modules()] for name, sub in stages.items()}
    owner = {}
    for name in sorted(members, key=lambda n: -len(members[n])):  # a nested stage has fewer members
        owner.update((id(m), name) for m in members[name])
    return owner


def _stage_rows(module: Module, ops: ShapeBackend) -> list[dict]:
    stages = _stages(module)
    stage_of = _stage_of_modules(module, stages)
    weight_stage = {id(v): stage_of.get(id(m), ROOT_ROW)
                    for _, m in module.named_modules() for v in vars(m).values() if isinstance(v, ShapeArray)}
    rows: dict[str, dict] = {}

    def row(name: str) -> dict:
        return rows.setdefault(name, {"name": name, "output_shape": None, "params": 0, "se_params": 0,
                                      "macs": 0, "se_macs": 0, "se_scale_mults": 0})

    for cost in ops.costs:
        r = row(weight_stage.get(id(cost.weight), ROOT_ROW))
        for key in ("macs", "se_macs", "se_scale_mults"):
            r[key] += getattr(cost, key)
        r["output_shape"] = list(cost.output.shape)
    specs = module.param_specs()
    for prefix, m in module.named_modules():
        for name in m._specs:
            spec = specs[prefix + name]
            if spec.kind not in BUFFER_KINDS:
                r = row(stage_of.get(id(m), ROOT_ROW))  # a stage that never ran still shows its params
                r["params"] += int(np.prod(spec.shape))
                r["se_params"] += int(np.prod(spec.shape)) if spec.se else 0
    return list(rows.values())


def _se_params(module: Module) -> int:
    return sum(int(np.prod(s.shape)) for s in module.param_specs().values()
               if s.se and s.kind not in BUFFER_KINDS)


# =========================================================================== model_info
def _shape_state(module: Module) -> dict[str, np.ndarray]:
    """Read-only zero views of the declared shapes: binding needs arrays, not memory."""
    zero = np.zeros((), np.float32)
    return {name: np.broadcast_to(zero, spec.shape) for name, spec in module.param_specs().items()}


@contextlib.contextmanager
def _restored(module: Module):
    """Bind/trace a module and leave it exactly as it was (a bound model keeps its weights)."""
    saved = [(m, dict(vars(m))) for _, m in module.named_modules()]
    try:
        yield module
    finally:
        for m, attrs in saved:
            vars(m).clear()
            vars(m).update(attrs)


def _resolve_model(model_or_name, model_kwargs) -> tuple[str, Module, int]:
    from se_multi.models import Model, build_model

    if isinstance(model_or_name, str):
        try:
            module = build_model(model_or_name, **model_kwargs)
        except TypeError as exc:
            raise TypeError(f"{model_or_name}: {exc}") from exc
        return model_or_name, module, getattr(module, "in_chans", 3)
    if model_kwargs:
        raise TypeError(f"model options {sorted(model_kwargs)} apply to a model name only; "
                        f"got an already built {type(model_or_name).__name__}")
    if isinstance(model_or_name, Model):
        return model_or_name.name, model_or_name.module, model_or_name.in_chans
    if isinstance(model_or_name, Module):
        return type(model_or_name).__name__, model_or_name, getattr(model_or_name, "in_chans", 3)
    raise TypeError(f"model_info: expected a model name, a se_multi Module or Model; "
                    f"got {type(model_or_name).__name__}")


def model_info(model_or_name, input_size=(224, 224), **model_kwargs) -> dict:
    """Parameters and multiply-accumulates of a model for one image of ``input_size`` (H, W).

    ``model_or_name``: a registered name (built with ``**model_kwargs``: ``reduction=``,
    ``se_integration=``, ``se_stages=``, ``se_bias=``, ...), an unbound
    :class:`~se_multi.nn.Module`, or a bound :class:`~se_multi.models.Model` (left as it was).
    Returns a plain dict: ``model``, ``input_size``, ``output_shape``, ``params``, ``macs``,
    ``se_params``, ``se_macs``, ``se_scale_mults`` and ``stages`` (rows with ``name``,
    ``output_shape``, ``params``, ``macs`` and their SE shares), see the module docstring.
    """
    size = tuple(int(s) for s in np.atleast_1d(input_size))
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input_size must be (H, W) of positive ints; got {input_size!r}")
    name, module, in_chans = _resolve_model(model_or_name, model_kwargs)
    ops = ShapeBackend()
    with _restored(module):
        module.bind(_shape_state(module), ops)
        y = module(ops, ops.input(ShapeArray((1, in_chans, *size))))
        stages = _stage_rows(module, ops)
    return {
        "model": name,
        "input_size": list(size),
        "output_shape": list(y.shape) if isinstance(y, ShapeArray) else None,
        "params": module.num_params(),
        "se_params": _se_params(module),
        "macs": ops.total("macs"),
        "se_macs": ops.total("se_macs"),
        "se_scale_mults": ops.total("se_scale_mults"),
        "stages": stages,
    }


def paper_flops(info: dict) -> int:
    """The SENet paper's "FLOPs": multiply-adds including the SE gate multiplies."""
    return info["macs"] + info["se_scale_mults"]


# =========================================================================== the SENet paper's figures
class PaperRow(NamedTuple):
    table: str
    label: str
    model: str  # the se_multi model counted
    kwargs: dict  # its builder options
    gflops: float | None  # the paper's figure (multiply-adds incl. gate multiplies)
    mparams: float | None  # the paper's figure, millions
    without_se: bool = False  # count the model less its SE blocks (the paper's baseline)


#: Hu et al., SENet (TPAMI), the complexity columns of Tables 2, 3 and 7 (../shared/paper/README.md).
#: Table 2's models are the original Caffe layouts (stride in the first 1x1 conv): se_multi's
#: ``legacy_seresnet*``. Its baselines are the same graphs without SE; se_multi registers no
#: Caffe-layout plain ResNet, so they are counted as the SE model less its SE blocks (exact:
#: removing SE leaves the plain graph; ``test_info`` checks it against ``resnet50``).
PAPER = (
    PaperRow("2", "ResNet-50", "legacy_seresnet50", {}, 3.86, None, without_se=True),
    PaperRow("2", "SE-ResNet-50", "legacy_seresnet50", {}, 3.87, None),
    PaperRow("2", "ResNet-101", "legacy_seresnet101", {}, 7.58, None, without_se=True),
    PaperRow("2", "SE-ResNet-101", "legacy_seresnet101", {}, 7.60, None),
    PaperRow("2", "ResNet-152", "legacy_seresnet152", {}, 11.30, None, without_se=True),
    PaperRow("2", "SE-ResNet-152", "legacy_seresnet152", {}, 11.32, None),
    PaperRow("2", "ResNeXt-50 (32x4d)", "seresnext50_32x4d", {}, 4.24, None, without_se=True),
    PaperRow("2", "SE-ResNeXt-50 (32x4d)", "seresnext50_32x4d", {}, 4.25, None),
    PaperRow("3", "MobileNet", "mobilenetv1_100", {}, 0.569, 4.2),
    PaperRow("3", "SE-MobileNet", "se_mobilenetv1_100", {}, 0.572, 4.7),
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

_NOTES = {
    "seresnext": "timm layout. The Caffe SE-ResNeXt (Cadene's `se_resnext*_32x4d`) also strides in the "
                 "3x3 conv and has the same SE widths at r = 16, so it costs the same: only key names and "
                 "the stem pool's padding convention differ (56x56 either way at 224x224)",
}


def _try_info(name: str, kwargs: dict, input_size=(224, 224)) -> tuple[dict | None, str]:
    """(info, "") or (None, why it is not available) so one missing model does not hide the rest."""
    from se_multi.models import list_models

    if name not in list_models():
        return None, f"`{name}` is not registered"
    try:
        return model_info(name, input_size, **kwargs), ""
    except (TypeError, ValueError) as exc:
        return None, str(exc).splitlines()[0]


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
                " less SE" if row.without_se else "")
            notes += [f"`{name}`: {note}." for key, note in _NOTES.items()
                      if key in name and f"`{name}`: {note}." not in notes]
            info, why = _try_info(name, kwargs, input_size)
            if info is None:
                out.append(f"| {label} | {ref_name} | " + " | ".join(["n/a"] * (len(header) - 3))
                           + f" | {why} |")
                continue
            info = without_se(info) if row.without_se else info
            g, m = paper_flops(info) / 1e9, info["params"] / 1e6
            if table == "2":
                cells = [f"{gflops:.2f}", f"{g:.3f}", _diff(g, gflops, "G", 3), f"{m:.2f}"]
            elif table == "3":
                cells = [f"{gflops * 1e3:.0f}", f"{g * 1e3:.1f}", _diff(g * 1e3, gflops * 1e3, "M", 1),
                         f"{mparams:.1f}", f"{m:.2f}", _diff(m, mparams, "M", 2)]
            else:
                cells = [f"{mparams:.1f}", f"{m:.2f}", _diff(m, mparams, "M", 2), f"{g:.3f}"]
            out.append(f"| {label} | {ref_name} | " + " | ".join(cells) + " |")
        out.append("")
    out += [f"- {n}" for n in notes] + ([""] if notes else [])
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


# =========================================================================== CLI
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


def format_info(info: dict) -> str:
    """A per-stage table and the totals, as Markdown."""
    h, w = info["input_size"]
    lines = [f"{info['model']} at {h}x{w} (one image)", "",
             "| stage | output shape | params (M) | SE params (M) | GMACs | SE GMACs |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in info["stages"] + [dict(info, name="total", output_shape=info["output_shape"])]:
        shape = "x".join(str(d) for d in r["output_shape"]) if r["output_shape"] else "-"
        lines.append(f"| {r['name']} | {shape} | {r['params'] / 1e6:.3f} | {r['se_params'] / 1e6:.3f} | "
                     f"{r['macs'] / 1e9:.4f} | {r['se_macs'] / 1e9:.4f} |")

    def share(part, whole):
        return f"{100 * part / whole:.2f}%" if whole else "n/a"

    lines += ["",
              f"params: {info['params'] / 1e6:.3f} M (SE {info['se_params'] / 1e6:.3f} M, "
              f"{share(info['se_params'], info['params'])})",
              f"MACs:   {info['macs'] / 1e9:.4f} G (SE FCs/convs {info['se_macs'] / 1e9:.4f} G, "
              f"{share(info['se_macs'], info['macs'])})",
              f"SE gate multiplies: {info['se_scale_mults'] / 1e9:.4f} G; "
              f"paper-convention GFLOPs (MACs + gate multiplies): {paper_flops(info) / 1e9:.4f}"]
    return "\n".join(lines)


def run(args) -> int:
    if args.paper:
        if args.name:
            raise ValueError("--paper prints fixed tables; give either a model name or --paper")
        print(paper_tables(tuple(args.input_size)), end="")
        return 0
    if not args.name:
        from se_multi.models import list_models

        raise ValueError(f"give a model name (one of: {', '.join(list_models())}) or --paper")
    info = model_info(args.name, tuple(args.input_size), **_model_kwargs(args))
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
