"""Model complexity: parameters and multiply-accumulates, counted from the graph that runs.

:func:`model_info` runs the model's own ``forward(ops, x)`` on :class:`CountingBackend`, a
:class:`~se_multi.tracing.ShapeBackend` whose "arrays" are NCHW shape records: each op computes
its output shape with :mod:`se_multi.shapes` (so shapes are exactly what the real backends
produce) and counts what it costs. No activation array exists and no framework is imported, so it
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

import contextlib
from dataclasses import dataclass

import numpy as np

from se_multi.nn import BUFFER_KINDS, Module
from se_multi.tracing import ShapeArray, ShapeBackend, shape_state


# =========================================================================== counting backend
@dataclass
class Cost:
    """What one op cost, and the weight it is charged to (``None``: no weight)."""

    weight: ShapeArray | None
    output: ShapeArray
    macs: int = 0
    se_macs: int = 0
    se_scale_mults: int = 0


class CountingBackend(ShapeBackend):
    """Shapes (from :class:`~se_multi.tracing.ShapeBackend`) plus what each op costs. Fused SE
    ops keep their composed defaults and mark the MACs of the primitives they call as SE MACs.
    ``costs`` lists every op that cost something, in call order."""

    name = "counting"
    traces_modules = False  # costs are charged by weight ownership, not by scope

    def __init__(self, dtype: str = "float32", device: str | None = None):
        super().__init__(dtype, device)
        self.costs: list[Cost] = []
        self._se_depth = 0

    def total(self, key: str) -> int:
        return sum(getattr(c, key) for c in self.costs)

    @contextlib.contextmanager
    def _se(self):
        self._se_depth += 1
        try:
            yield
        finally:
            self._se_depth -= 1

    def _weighted(self, out: ShapeArray, macs: int) -> ShapeArray:
        self.costs.append(Cost(out.source, out, macs=macs, se_macs=macs if self._se_depth else 0))
        return out

    def _gated(self, out: ShapeArray) -> ShapeArray:
        n, c, h, w = out.shape
        self.costs.append(Cost(out.source, out, se_scale_mults=n * c * h * w))
        return out

    def conv2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        out = super().conv2d(x, w, b, stride, padding, dilation, groups)
        n, o, ho, wo = out.shape
        _, cg, kh, kw = w.shape
        return self._weighted(out, n * o * ho * wo * cg * kh * kw)

    def conv_transpose2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0)):
        out = self.out(super().conv_transpose2d(x, w, b, stride, padding).shape, w)
        n, c, h, wd = x.shape
        _, o, kh, kw = w.shape  # every input pixel scatters a (C_out, KH, KW) patch
        return self._weighted(out, n * c * h * wd * o * kh * kw)

    def linear(self, x, w, b=None):
        out = super().linear(x, w, b)
        return self._weighted(out, out.shape[0] * w.shape[0] * w.shape[1])

    def mul_channel(self, x, s):
        return self._gated(super().mul_channel(x, s))

    def mul_pixel(self, x, q):
        return self._gated(super().mul_pixel(x, q))

    def excite(self, *args, **kwargs):
        with self._se():
            return super().excite(*args, **kwargs)

    def spatial_gate(self, *args, **kwargs):
        with self._se():
            return super().spatial_gate(*args, **kwargs)


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


def _stage_rows(module: Module, ops: CountingBackend) -> list[dict]:
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
        return model_or_name.name, model_or_name.declaration, model_or_name.in_chans
    if isinstance(model_or_name, Module):
        return type(model_or_name).__name__, model_or_name.declaration, getattr(model_or_name, "in_chans", 3)
    raise TypeError(f"model_info: expected a model name, a se_multi Module or Model; "
                    f"got {type(model_or_name).__name__}")


def image_size(value) -> tuple[int, int]:
    """An image size given as ``(H, W)`` or one side ``S`` (a square) -> ``(H, W)``.

    Every side must be an int (Python's or NumPy's): ``int()`` would turn ``224.5`` into 224
    and ``True`` into 1 without a word, so a float, a bool or a string is refused (TypeError)
    rather than rounded; a size that is not one or two positive sides is a ValueError."""
    sides = value.tolist() if isinstance(value, np.ndarray) else value
    sides = list(sides) if isinstance(sides, (tuple, list)) else [sides]
    for side in sides:
        if isinstance(side, (bool, np.bool_)) or not isinstance(side, (int, np.integer)):
            raise TypeError(f"input_size must be (H, W) of positive ints; got {value!r}, "
                            f"where {side!r} is a {type(side).__name__}")
    if len(sides) not in (1, 2) or min(sides) < 1:
        raise ValueError(f"input_size must be (H, W) of positive ints; got {value!r}")
    return (int(sides[0]), int(sides[-1]))


def model_info(model_or_name, input_size=(224, 224), **model_kwargs) -> dict:
    """Parameters and multiply-accumulates of a model for one image of ``input_size`` (H, W).

    ``model_or_name``: a registered name (built with ``**model_kwargs``: ``reduction=``,
    ``se_integration=``, ``se_stages=``, ``se_bias=``, ...), a :class:`~se_multi.nn.Module`
    (declared or bound), or a :class:`~se_multi.models.Model`; its declaration is what is
    counted (bound on shapes alone), so a bound model is left as it was.
    Returns a plain dict: ``model``, ``input_size``, ``output_shape``, ``params``, ``macs``,
    ``se_params``, ``se_macs``, ``se_scale_mults`` and ``stages`` (rows with ``name``,
    ``output_shape``, ``params``, ``macs`` and their SE shares), see the module docstring.
    """
    size = image_size(input_size)
    name, declaration, in_chans = _resolve_model(model_or_name, model_kwargs)
    ops = CountingBackend()
    module = declaration.bind(shape_state(declaration), ops)
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


# =========================================================================== report
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
