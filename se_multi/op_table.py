"""The op table: every op a backend implements, declared once, as data.

Each :class:`Op` names an op of :class:`se_multi.Backend` and says

- its ``kind``: a *primitive* (an abstract method of ``Backend``: every backend implements it) or
  a *fused* op (``Backend`` has a default composed from primitives; a backend overrides it only
  for speed);
- its ``args``: the parameters after ``self``, in order (``Backend``'s method, the reference
  function and the shape rule all take exactly these);
- its ``shape`` rule: called like the op, with each array argument replaced by its NCHW shape
  (a list of shapes for a list of arrays), it returns the output's shape or raises
  :class:`se_multi.shapes.ShapeError` (the rules of :mod:`se_multi.shapes`);
- its ``reference``: the NumPy definition in :mod:`se_multi.reference`, which the conformance
  suite compares every backend to (in float64);
- for a fused op, ``composes``: the primitives its ``Backend`` default calls (besides the
  activations it is given by name, when ``takes_activation``);
- its conformance ``cases`` (:class:`Case`): arguments the suite calls the op with, on every
  backend, against its reference (:func:`se_multi.conformance.case_checks`). An op whose checks
  need more than random arrays of given shapes (weights in a checkpoint's ranges, an activation
  applied to a conv) has them written out in :mod:`se_multi.conformance` instead.

Everything that must know every op reads it from here: ``Backend``'s abstract primitives and
:attr:`~se_multi.Backend.FUSED_OPS`, the numpy backend (each primitive it does not write out is
the reference's), the shape tracer (:mod:`se_multi.tracing`: each op it does not write out follows
its shape rule), MLX's device placement, the one-op graphs of the ONNX-fed engines, and the
tests that the ONNX recorder records and the conformance suite checks every op
(``tests/test_op_table.py``).

Adding a primitive: an :class:`Op` here, with its conformance ``cases``; its function in
:mod:`se_multi.reference` (with its shape rule in :mod:`se_multi.shapes` if no existing one
fits); and its method in each adapter that has its own (torch, mlx, cupy, the ONNX recorder; a
third-party backend too). ``tests/test_op_table.py`` fails until each of these is there.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from se_multi import reference, shapes

PRIMITIVE = "primitive"
FUSED = "fused"


#: feature-map shapes the conformance cases use: batch 1 and >1, 1x1 spatial, odd H != W, C not
#: divisible by 16 or 8
FMAP_SHAPES = ((1, 3, 1, 1), (2, 6, 7, 9), (1, 20, 8, 5), (3, 36, 6, 6))
#: how a check hands an array argument to the backend (:class:`Arg`)
ROLES = ("fmap", "fmaps", "nc", "vector", "conv", "linear")
#: how a check draws an array argument's values (:class:`Arg`)
VALUES = ("normal", "gate", "weight")


@dataclass(frozen=True)
class Arg:
    """An array argument of a conformance :class:`Case`.

    ``shape``: its NCHW shape (for ``role="fmaps"``, a list of shapes). ``role``: how the backend
    receives it -- ``"fmap"`` a feature map (through ``Backend.input``), ``"fmaps"`` a list of
    them, ``"nc"`` an (N, C) vector (``Backend.asarray``), ``"vector"``/``"conv"``/``"linear"`` a
    weight (``Backend.param``). ``values``: ``"normal"`` N(0, 1), ``"gate"`` uniform in (0, 1) as a
    sigmoid gives, ``"weight"`` N(0, 1/fan_in). Every value is rounded to the backend's dtype
    first, so the reference sees exactly what the backend holds."""

    shape: tuple
    role: str = "fmap"
    values: str = "normal"

    def __post_init__(self):
        if self.role not in ROLES or self.values not in VALUES:
            raise AssertionError(f"Arg: role must be one of {ROLES} and values one of {VALUES}; "
                                 f"got {self.role!r}, {self.values!r}")


@dataclass(frozen=True)
class Case:
    """One conformance check of an op: its arguments by name (an :class:`Arg` for an array, any
    other value as it is). ``elementwise``: every output element is one rounding of its own, so
    its bias is held to the elementwise bound too (:class:`se_multi.conformance.Check`)."""

    args: dict
    elementwise: bool = False


def _fmaps(*names, shapes=FMAP_SHAPES, **arg):
    """Cases with each of ``names`` a feature map of each shape in ``shapes``."""
    return tuple(Case({n: Arg(s, **arg) for n in names}, elementwise=False) for s in shapes)


@dataclass(frozen=True)
class Op:
    """One op of the backend contract (see the module docstring)."""

    name: str
    kind: str
    args: tuple[str, ...]
    shape: Callable | None
    doc: str
    composes: tuple[str, ...] = ()
    takes_activation: bool = False
    cases: tuple[Case, ...] = ()

    @property
    def reference(self) -> Callable:
        """The NumPy definition, :mod:`se_multi.reference`'s function of the same name."""
        return getattr(reference, self.name)

    def output_shape(self, *args, **kwargs):
        """The shape rule on the op's own arguments: arrays (anything with a ``shape``, and lists
        of them) are replaced by their shapes first."""
        return self.shape(*(_shapes_of(a) for a in args), **{k: _shapes_of(v) for k, v in kwargs.items()})


def _shapes_of(v):
    if hasattr(v, "shape") and not isinstance(v, (int, float)):
        return tuple(v.shape)
    if isinstance(v, list):
        return [_shapes_of(x) for x in v]
    if isinstance(v, tuple) and v and all(hasattr(x, "shape") for x in v):
        return [_shapes_of(x) for x in v]
    return v


_CONV = ("stride", "padding", "dilation", "groups")


def _conv(x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    return shapes.conv2d(x, w, stride, padding, dilation, groups)


def _conv_act(x, w, b, act, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    return shapes.conv2d(x, w, stride, padding, dilation, groups)


def _max_pool(x, kernel, stride, padding=(0, 0), ceil_mode=False):
    return shapes.pool2d(x, kernel, stride, padding, ceil_mode, "max_pool2d")


def _avg_pool(x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
    return shapes.pool2d(x, kernel, stride, padding, ceil_mode, "avg_pool2d")


def _unary(x):
    return shapes.elementwise(x)


def _binary(name):
    def rule(a, b):
        return shapes.same(name, a, b)

    return rule


#: every op, primitives first; the order is the order of ``Backend``'s methods
TABLE: tuple[Op, ...] = (
    Op("conv2d", PRIMITIVE, ("x", "w", "b", *_CONV), _conv,
       "2-D cross-correlation (PyTorch ``conv2d`` semantics): ``groups`` from 1 to depthwise, ``dilation``, "
       "``padding`` (top, bottom, left, right), ``stride`` (h, w)."),
    Op("conv_transpose2d", PRIMITIVE, ("x", "w", "b", "stride", "padding"),
       lambda x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0): shapes.conv_transpose2d(x, w, stride, padding),
       "2-D transposed convolution (PyTorch ``conv_transpose2d`` semantics, groups 1, dilation 1): the weight "
       "in ``ConvTranspose2d``'s (C_in, C_out, KH, KW) layout, handed over as ``param(w, \"conv\")``; "
       "``stride`` (h, w); ``padding`` (top, bottom, left, right) crops the full output.",
       cases=tuple(Case({"x": Arg(xs), "w": Arg(ws, role="conv", values="weight"),
                         "b": Arg((ws[1],), role="vector") if bias else None, "stride": st, "padding": pad})
                   for xs, ws, st, pad, bias in (
                       ((2, 6, 5, 4), (6, 4, 3, 3), (2, 2), (0, 0, 0, 0), True),   # FC-DenseNet's TransitionUp
                       ((1, 3, 1, 1), (3, 5, 3, 3), (1, 1), (0, 0, 0, 0), True),   # 1x1 input, stride 1
                       ((1, 8, 4, 5), (8, 4, 2, 2), (2, 2), (0, 0, 0, 0), False),  # U-Net's 2x2/2, no bias
                       ((2, 5, 3, 4), (5, 3, 4, 4), (2, 2), (1, 1, 1, 1), True),   # 4x4/2, padding 1
                       ((1, 4, 5, 6), (4, 6, 3, 2), (2, 3), (1, 0, 0, 1), True),   # anisotropic, four pads
                       ((1, 36, 6, 6), (36, 20, 3, 3), (2, 2), (1, 1, 1, 1), True)))),
    Op("linear", PRIMITIVE, ("x", "w", "b"), lambda x, w, b=None: shapes.linear(x, w),
       "``x @ w.T + b`` for ``x`` of shape (N, in)."),
    Op("batch_norm", PRIMITIVE, ("x", "mean", "var", "weight", "bias", "eps"),
       lambda x, mean, var, weight, bias, eps: shapes.elementwise(x),
       "Inference batch norm over channels (running statistics)."),
    Op("relu", PRIMITIVE, ("x",), _unary, "``max(x, 0)``, elementwise."),
    Op("relu6", PRIMITIVE, ("x",), _unary, "``min(max(x, 0), 6)``, elementwise."),
    Op("sigmoid", PRIMITIVE, ("x",), _unary, "``1 / (1 + exp(-x))``, elementwise (the SE gate)."),
    Op("hard_sigmoid", PRIMITIVE, ("x",), _unary, "PyTorch's definition: ``relu6(x + 3) / 6``."),
    Op("hard_swish", PRIMITIVE, ("x",), _unary, "``x * relu6(x + 3) / 6``."),
    Op("max_pool2d", PRIMITIVE, ("x", "kernel", "stride", "padding", "ceil_mode"), _max_pool,
       "Max pool; ``kernel``/``stride``/``padding`` are (h, w); PyTorch's ``ceil_mode`` rule "
       "(output sizes: :func:`se_multi.shapes.pool2d`)."),
    Op("avg_pool2d", PRIMITIVE, ("x", "kernel", "stride", "padding", "ceil_mode", "count_include_pad"), _avg_pool,
       "Average pool with PyTorch's ``ceil_mode`` and ``count_include_pad`` divisor rules."),
    Op("max_pool2d_indices", PRIMITIVE, ("x", "kernel", "stride"), shapes.max_pool2d_indices,
       "Max pool (no padding, floor sizes) with PyTorch's indices, ``max_pool2d(..., return_indices=True)``: "
       "``(values, indices)``; the indices (the flat ``h * W + w`` of each maximum in its plane, the first "
       "maximum in scan order) are the backend's own integer array, for its ``max_unpool2d``."),
    Op("max_unpool2d", PRIMITIVE, ("x", "indices", "output_size"), shapes.max_unpool2d,
       "PyTorch's ``max_unpool2d``: zeros of ``output_size`` (h, w) with each value of ``x`` at its index "
       "(``indices`` from ``max_pool2d_indices``)."),
    Op("global_avg_pool", PRIMITIVE, ("x",), shapes.global_avg_pool, "Mean over H and W: feature map -> (N, C).",
       cases=_fmaps("x")),
    Op("add", PRIMITIVE, ("a", "b"), _binary("add"), "``a + b``: two feature maps of one shape.",
       cases=tuple(Case({"a": Arg(s), "b": Arg(s)}, elementwise=True) for s in FMAP_SHAPES[:2])),
    Op("maximum", PRIMITIVE, ("a", "b"), _binary("maximum"), "Elementwise ``max(a, b)``: two feature maps of one shape.",
       cases=tuple(Case({"a": Arg(s), "b": Arg(s)}, elementwise=True) for s in FMAP_SHAPES[:2])),
    Op("mul_channel", PRIMITIVE, ("x", "s"), shapes.mul_channel, "``x[n, c, h, w] * s[n, c]`` (channel-wise broadcast)."),
    Op("mul_pixel", PRIMITIVE, ("x", "q"), shapes.mul_pixel, "``x[n, c, h, w] * q[n, 0, h, w]`` (pixel-wise broadcast).",
       cases=tuple(Case({"x": Arg(s), "q": Arg((s[0], 1, *s[2:]), values="gate")}, elementwise=True)
                   for s in FMAP_SHAPES[:3])),
    Op("upsample_nearest2x", PRIMITIVE, ("x",), shapes.upsample_nearest2x,
       "Nearest-neighbour upsampling by 2: every pixel repeated 2x2, (H, W) -> (2H, 2W).",
       cases=_fmaps("x", shapes=FMAP_SHAPES[:3])),
    Op("concat_channels", PRIMITIVE, ("xs",), shapes.concat_channels,
       "Feature maps of one N, H, W concatenated along channels, in order.",
       cases=(Case({"xs": Arg([(2, 3, 5, 7), (2, 4, 5, 7), (2, 1, 5, 7)], role="fmaps")}),
              Case({"xs": Arg([(1, 2, 1, 1)] * 2, role="fmaps")}))),
    Op("prelu", PRIMITIVE, ("x", "slope"), shapes.prelu,
       "PyTorch's PReLU: ``x`` where ``x > 0``, else ``slope * x``; ``slope`` one shared (1,) or one per "
       'channel (C,), an ``ops.param(w, "vector")``.',
       cases=tuple(Case({"x": Arg(s), "slope": Arg((k,), role="vector")}, elementwise=True)
                   for s, k in (((2, 6, 7, 9), 6), ((1, 20, 8, 5), 1), ((1, 3, 1, 1), 3)))),
    Op("channel_shuffle", PRIMITIVE, ("x", "groups"), shapes.channel_shuffle,
       "ShuffleNet's channel shuffle: (N, C, H, W) as (N, g, C/g, H, W), the two channel axes "
       "transposed, back to (N, C, H, W); C divisible by ``groups``.",
       cases=(Case({"x": Arg((2, 6, 7, 9)), "groups": 3}, elementwise=True),
              Case({"x": Arg((1, 12, 5, 4)), "groups": 4}, elementwise=True),
              Case({"x": Arg((1, 20, 1, 1)), "groups": 2}, elementwise=True),
              Case({"x": Arg((3, 36, 6, 6)), "groups": 1}, elementwise=True))),
    Op("center_crop", PRIMITIVE, ("x", "like"), shapes.center_crop,
       "``x`` cropped to the height and width of ``like`` (a feature map of the same batch; only its size is "
       "read), from the centre as the FC-DenseNet code's ``center_crop``: rows from ``(H - h) // 2``, columns "
       "from ``(W - w) // 2``.",
       cases=tuple(Case({"x": Arg(xs), "like": Arg(ls)}, elementwise=True) for xs, ls in (
           ((2, 6, 7, 9), (2, 6, 6, 8)),   # a stride-2 3x3 transposed conv's 2h+1 to its skip's 2h
           ((1, 3, 9, 8), (1, 5, 6, 5)),   # odd margins, other channels
           ((2, 4, 5, 5), (2, 4, 5, 5)),   # the same size: all of x
           ((1, 20, 8, 5), (1, 1, 1, 1))))),
    # fused ops: Backend's default composes the primitives named; override one only for speed
    Op("conv2d_act", FUSED, ("x", "w", "b", "act", *_CONV), _conv_act,
       "Convolution + bias + activation (BN is already folded into ``w``, ``b``).", ("conv2d",), True),
    Op("squeeze", FUSED, ("x",), shapes.global_avg_pool, "SE squeeze: global average pool, feature map -> (N, C).",
       ("global_avg_pool",), cases=_fmaps("x")),
    Op("excite", FUSED, ("z", "w1", "b1", "w2", "b2", "act", "gate"),
       lambda z, w1, b1, w2, b2, act="relu", gate="sigmoid": shapes.excite(z, w1, w2),
       "SE excitation on the squeezed (N, C) vector: FC -> act -> FC -> gate.", ("linear",), True),
    Op("scale", FUSED, ("x", "s"), shapes.mul_channel, "SE scale: multiply each channel by its gate.",
       ("mul_channel",)),
    Op("scale_add_relu", FUSED, ("x", "s", "residual"),
       lambda x, s, residual: shapes.same("scale_add_relu", shapes.mul_channel(x, s), residual),
       "``relu(x * s + residual)``: the end of a standard SE residual unit.", ("mul_channel", "add", "relu")),
    Op("add_relu", FUSED, ("a", "b"), _binary("add_relu"), "``relu(a + b)``: the end of a plain residual unit.",
       ("add", "relu"), cases=tuple(Case({"a": Arg(s), "b": Arg(s)}, elementwise=True) for s in FMAP_SHAPES)),
    Op("spatial_gate", FUSED, ("x", "w", "b"), lambda x, w, b=None: shapes.spatial_gate(x, w),
       "sSE gate: 1x1 conv C -> 1, then sigmoid; a one-channel map.", ("conv2d", "sigmoid")),
    Op("scse", FUSED, ("x", "s", "q", "mode"),
       lambda x, s, q, mode="add": shapes.mul_pixel(shapes.mul_channel(x, s), q),
       "scSE combine: ``x*s + x*q`` (Roy et al.) or ``max(x*s, x*q)``.",
       ("mul_channel", "mul_pixel", "add", "maximum")),
)

#: the table by name
OPS: dict[str, Op] = {op.name: op for op in TABLE}
#: every op's name, primitives first
NAMES: tuple[str, ...] = tuple(OPS)
#: the primitives' names: ``Backend``'s abstract ops
PRIMITIVES: tuple[str, ...] = tuple(op.name for op in TABLE if op.kind == PRIMITIVE)
#: the fused ops' names: ``Backend.FUSED_OPS``
FUSED_OPS: tuple[str, ...] = tuple(op.name for op in TABLE if op.kind == FUSED)
#: the activations and gates an op may name (each a primitive), :data:`se_multi.reference.ACTIVATIONS`
ACTIVATIONS: tuple[str, ...] = reference.ACTIVATIONS


def signature(op: Op) -> inspect.Signature:
    """The op's method signature (``self`` first), with the reference function's defaults."""
    params = list(inspect.signature(op.reference).parameters.values())
    return inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *params])


def _check() -> None:
    for op in TABLE:
        if op.kind not in (PRIMITIVE, FUSED):
            raise AssertionError(f"op {op.name}: kind must be {PRIMITIVE!r} or {FUSED!r}; got {op.kind!r}")
        if (op.kind == FUSED) != bool(op.composes) or not set(op.composes) <= set(PRIMITIVES):
            raise AssertionError(f"op {op.name}: a fused op, and only one, composes primitives; got {op.composes}")
        for case in op.cases:
            if not set(case.args) <= set(op.args):
                raise AssertionError(f"op {op.name}: a case names arguments it does not take: "
                                     f"{sorted(set(case.args) - set(op.args))}")
    missing = set(ACTIVATIONS) - set(PRIMITIVES)
    if missing:
        raise AssertionError(f"activations without a primitive: {sorted(missing)}")


_check()
