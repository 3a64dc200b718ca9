"""Modules and the SE blocks, defined once for every backend.

A :class:`Module` declares its parameters by checkpoint name, shape and kind
(the same kinds as the parity manifests: ``weight``, ``bias``, ``bn_weight``,
``bn_bias``, ``bn_running_mean``, ``bn_running_var``). Declaring is all a model
does at construction: no arrays exist until :meth:`Module.bind` receives a
NumPy state dict, folds BatchNorm into the preceding conv once (float64), and
hands each folded tensor to the backend's :meth:`~se_multi.backend.Backend.param`.
A bound module is then *called*, ``module(ops, x)``, as
:meth:`~se_multi.backend.Backend.run_model` does by default: the call runs the module's
``forward(ops, x)``, which calls ops only (call the module, not ``forward``: the call is where
a shape tracer names the layer an error happens in).

A declaration is data: :meth:`Module.bind` never modifies it, it returns a *bound
copy* holding the backend's arrays (and, once the backend compiles it, that model's
compiled graphs, see :mod:`se_multi.cache`). One declaration can therefore be bound
to several backends at once, and dropping a bound model frees everything it holds.

Because parameters are declared with shapes, a model can be inspected (parameter
counts, key lists) without any weights, and the shape-only "backends" used for
shape checks, complexity counting and ONNX export run the same ``forward``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from se_multi import reference as ref

#: running statistics and counters: in a checkpoint, but not learnable parameters
BUFFER_KINDS = ("bn_running_mean", "bn_running_var")


#: values copied as they are by a module's deep copy (immutable)
_ATOMIC = frozenset({str, int, float, bool, type(None)})


def _deepcopy(value, memo):
    """``copy.deepcopy(value, memo)``, except that an immutable value (an atom, a tuple of atoms)
    is returned as it is without the generic walk."""
    kind = type(value)
    if kind in _ATOMIC or (kind is tuple and all(type(v) in _ATOMIC for v in value)):
        return value
    return copy.deepcopy(value, memo)


@dataclass(frozen=True)
class ParamSpec:
    shape: tuple[int, ...]
    kind: str
    se: bool = False  # belongs to an SE / sSE / scSE block (for the SE share of params)

    def __deepcopy__(self, memo) -> "ParamSpec":
        return self  # immutable: bind's copy of a declaration shares its specs


class Module:
    """Base class. Child modules assigned as attributes are registered under that name;
    a module with ``flat = True`` (a conv+BN group) adds its params to its parent's namespace
    under the names it was given, as timm's checkpoints do (``conv1.weight``, ``bn1.weight``)."""

    flat = False
    is_se = False

    def __init__(self):
        object.__setattr__(self, "_specs", {})
        object.__setattr__(self, "_children", {})

    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._children[name] = value
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # only reached for attributes that do not exist: say why a weight is missing
        if name.startswith("_") or "_bound_to" in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}: this module is a "
                             "declaration, and weights exist only on the bound copy that bind(state, ops) returns")

    def declare(self, name: str, shape, kind: str) -> None:
        self._specs[name] = ParamSpec(tuple(int(s) for s in shape), kind)

    def declare_batch_norm(self, name: str, channels: int) -> None:
        """A BatchNorm's four checkpoint tensors under ``name``, in PyTorch's order."""
        for p, kind in (("weight", "bn_weight"), ("bias", "bn_bias"), ("running_mean", "bn_running_mean"),
                        ("running_var", "bn_running_var")):
            self.declare(f"{name}.{p}", (channels,), kind)

    def layer_name(self, prefix: str) -> str:
        """This module's name in error messages, from its checkpoint prefix (``layer1.0.``)."""
        return prefix.rstrip(".") or type(self).__name__

    # -- traversal ------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self._children.items():
            yield from child.named_modules(prefix if child.flat else f"{prefix}{name}.")

    def _walk(self, prefix: str = "", in_se: bool = False):
        in_se = in_se or self.is_se
        yield prefix, self, in_se
        for name, child in self._children.items():
            yield from child._walk(prefix if child.flat else f"{prefix}{name}.", in_se)

    def param_specs(self) -> dict[str, ParamSpec]:
        """Every declared tensor by full checkpoint name, in declaration order; ``se`` marks
        tensors inside an SE / sSE / scSE block."""
        return {prefix + name: ParamSpec(spec.shape, spec.kind, in_se)
                for prefix, module, in_se in self._walk() for name, spec in module._specs.items()}

    def num_params(self) -> int:
        """Learnable parameters as checkpoints count them (running statistics excluded)."""
        return sum(int(np.prod(s.shape)) for s in self.param_specs().values() if s.kind not in BUFFER_KINDS)

    # -- weights --------------------------------------------------------------------
    @property
    def bound_to(self):
        """The backend this module is bound on, or ``None`` for a declaration."""
        return self.__dict__.get("_bound_to")

    @property
    def declaration(self) -> "Module":
        """The declaration a bound module was bound from (a declaration is its own)."""
        return self.__dict__.get("_declaration", self)

    def bind(self, state: dict[str, np.ndarray], ops) -> "Module":
        """Check ``state`` strictly against the declared specs, fold, convert with ``ops``, and
        return the bound copy. ``self`` stays a declaration (it holds no arrays, so the copy is
        cheap), and can be bound again, on any backend."""
        if self.bound_to is not None:
            raise TypeError(f"{type(self).__name__} is already bound (on {self.bound_to!r}); "
                            "bind its declaration (Model.declaration), not the bound copy")
        check_state(self.param_specs(), state)
        bound = copy.deepcopy(self)
        for prefix, module in bound.named_modules():
            local = {name: np.asarray(state[prefix + name]) for name in module._specs}
            module._bind(local, ops)
            object.__setattr__(module, "_bound_to", ops)
        object.__setattr__(bound, "_declaration", self)
        return bound

    def graphs(self, maxsize: int):
        """This bound module's cache of compiled graphs (created on first use; see
        :mod:`se_multi.cache`): they live, and die, with the weights they were compiled from."""
        from se_multi.cache import BoundedCache

        if self.bound_to is None:
            raise TypeError(f"{type(self).__name__} is a declaration: only a bound module is compiled")
        cache = self.__dict__.get("_graphs")
        return cache if cache is not None else self.__dict__.setdefault("_graphs", BoundedCache(maxsize))

    def __getstate__(self) -> dict:
        # pickling and deep copies: without the compiled graphs (a cache, rebuilt on first use, of
        # engine objects that may not pickle), and with the backend a bound module is bound on as
        # the way to make it again (se_multi.dispatch.portable), so that a copy runs on its own
        state = dict(self.__dict__)
        state.pop("_graphs", None)
        if state.get("_bound_to") is not None:
            from se_multi.dispatch import portable

            state["_bound_to"] = portable(state["_bound_to"])
        return state

    def __deepcopy__(self, memo) -> "Module":
        # what copy.deepcopy does with __getstate__'s state, without its walk into the values a
        # declaration is mostly made of (names, sizes, flags: immutable, so shared): bind copies a
        # declaration, and the walk was most of bind's own time (SE-ResNet-50 8.4 ms -> 1.8 ms a
        # copy, SE-Inception-ResNet-v2 40 ms -> 9.6 ms, with ParamSpec copied as itself; 2026-12-03)
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update((name, _deepcopy(value, memo)) for name, value in self.__getstate__().items())
        return new

    def __copy__(self) -> "Module":
        # a shallow copy shares the backend and the weights (the default would go through
        # __getstate__ and keep the backend's recipe in place of the backend); caches are its own
        new = object.__new__(type(self))
        new.__dict__.update((k, v) for k, v in self.__dict__.items() if k != "_graphs")
        return new

    def _bind(self, local: dict[str, np.ndarray], ops) -> None:
        """Turn this module's own checkpoint tensors into backend arrays (override)."""

    def forward(self, ops, x):
        raise NotImplementedError

    def __call__(self, ops, *args, **kwargs):
        """``module(ops, x)``: run this bound module's ``forward(ops, x)`` on backend ``ops``."""
        if ops.traces_modules:  # a shape tracer names the layer an error happens in
            with ops.scope(self):
                return self.forward(ops, *args, **kwargs)
        return self.forward(ops, *args, **kwargs)


class StateDictError(ValueError):
    """A checkpoint whose keys or shapes do not match the model."""


def _listing(label: str, items: list[str]) -> str:
    more = f", ... ({len(items) - 5} more)" if len(items) > 5 else ""
    return f"{len(items)} {label}: {', '.join(items[:5])}{more}"


def key_mismatches(specs: dict[str, ParamSpec], state: dict) -> dict[str, list[str]]:
    """``{"missing": [...], "unexpected": [...], "mis-shaped": [...]}``: the keys of ``state`` that
    do not fit ``specs`` (a mis-shaped one as ``key: expected ..., got ...``). Integer bookkeeping
    buffers the model ignores (``num_batches_tracked``, a training counter) are not unexpected.
    :func:`check_state` reports these; ``se-multi convert`` counts them to find the closest model."""
    ignorable = lambda k: k.endswith("num_batches_tracked")  # noqa: E731  (a training counter)
    return {
        "missing": [k for k in specs if k not in state],
        "unexpected": [k for k in state if k not in specs and not ignorable(k)],
        "mis-shaped": [f"{k}: expected {specs[k].shape}, got {tuple(np.shape(state[k]))}"
                       for k in specs if k in state and tuple(np.shape(state[k])) != specs[k].shape],
    }


def _each_entry_once(value: np.ndarray) -> np.ndarray:
    """``value`` without its broadcast copies: along an axis of stride 0 every entry is the same
    memory, so one of them stands for all (the shape-only state that input sizes are traced with
    is one zero broadcast to each weight's shape: VGG-16's 138M reads of it took ~1 s a model)."""
    if value.size and 0 in value.strides:
        return value[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in value.strides)]
    return value


def check_state(specs: dict[str, ParamSpec], state: dict[str, np.ndarray], what: str = "checkpoint") -> None:
    """Raise one :class:`StateDictError` listing what makes ``state`` unusable for ``specs``:
    missing, unexpected and mis-shaped keys (:func:`key_mismatches`); then, for the tensors the
    model uses, any that is not floating point (an integer, bool or complex weight would be cast
    silently), holds NaN or Inf, or is a BatchNorm running variance with a negative entry (each
    gives NaN outputs). Integer bookkeeping buffers the model ignores (``num_batches_tracked``) are fine."""
    parts = [_listing(f"{label} key(s)", items) for label, items in key_mismatches(specs, state).items() if items]
    if not parts:
        not_float, not_finite, negative_var = [], [], []
        for key, spec in specs.items():
            value = _each_entry_once(np.asarray(state[key]))
            if value.dtype.kind != "f":
                not_float.append(f"{key} ({value.dtype})")
            elif value.size and not (np.isfinite(value.min()) and np.isfinite(value.max())):
                # min and max propagate NaN and find each infinity, and allocate nothing: a
                # boolean copy of VGG-16's 138M weights cost 0.44 s a bind
                not_finite.append(key)
            elif spec.kind == "bn_running_var" and value.size and value.min() < 0:
                negative_var.append(f"{key} (min {float(value.min()):.3g})")
        for label, items in (("tensor(s) that are not floating point", not_float),
                             ("tensor(s) with NaN or Inf", not_finite),
                             ("BatchNorm running variance(s) below 0", negative_var)):
            if items:
                parts.append(_listing(label, items))
    if parts:
        raise StateDictError(f"{what} does not match the model: " + "; ".join(parts))


class Sequential(Module):
    """Children named ``0``, ``1``, ... as ``nn.Sequential`` names them."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)
        object.__setattr__(self, "layers", list(modules))

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def forward(self, ops, x):
        for m in self.layers:
            x = m(ops, x)
        return x


def host_weight(value, ops) -> np.ndarray:
    """A checkpoint tensor as :meth:`Backend.param` takes it: a fresh NumPy copy in the backend's
    ``param_dtype`` (float64 by default). The values are those of the float64 copy either
    way (every float dtype converts to float64 exactly, and ``param`` rounds float64 to its
    ``param_dtype`` with NumPy's cast, as this does), without a float64 copy of every weight.
    A broadcast view already in that dtype (a shape tracer's zeros, :func:`se_multi.tracing.shape_state`)
    comes back as it is: it holds no memory, and a copy would fill every weight's shape."""
    value, dtype = np.asarray(value), np.dtype(ops.param_dtype)
    if value.dtype == dtype and 0 in value.strides:
        return value
    return np.array(value, dtype=dtype)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def same_padding(kernel: int, stride: int = 1, dilation: int = 1) -> int:
    """PyTorch-style symmetric padding that keeps the size at stride 1 (``((s-1) + d(k-1)) // 2``)."""
    return ((stride - 1) + dilation * (kernel - 1)) // 2


class ConvNormAct(Module):
    """Conv (+ BatchNorm, folded at load) (+ activation), checkpoint names given explicitly.

    ``conv="conv1", bn="bn1"`` declares ``conv1.weight`` and ``bn1.{weight,bias,running_mean,running_var}``
    in the parent's namespace; ``bn=None`` means no norm (then ``bias=True`` declares ``conv1.bias``).
    ``padding`` is an int, an (h, w) pair or (top, bottom, left, right); default keeps the size.
    """

    flat = True

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, padding=None,
                 dilation: int = 1, groups: int = 1, bias: bool = False, act: str | None = "relu",
                 conv: str = "conv", bn: str | None = "bn", eps: float = 1e-5):
        super().__init__()
        k = _pair(kernel_size)
        self.in_chs, self.out_chs, self.kernel = in_chs, out_chs, k
        self.stride, self.dilation, self.groups = _pair(stride), _pair(dilation), groups
        if padding is None:
            padding = (same_padding(k[0], 1, self.dilation[0]), same_padding(k[1], 1, self.dilation[1]))
        if np.isscalar(padding):
            padding = (padding, padding)
        if len(padding) == 2:
            padding = (padding[0], padding[0], padding[1], padding[1])
        self.padding = tuple(int(p) for p in padding)
        self.act, self.conv_name, self.bn_name, self.eps, self.has_bias = act, conv, bn, eps, bias
        if in_chs % groups or out_chs % groups:
            raise ValueError(f"{conv}: channels {in_chs}->{out_chs} not divisible by groups={groups}")
        self.declare(f"{conv}.weight", (out_chs, in_chs // groups, *k), "weight")
        if bias:
            self.declare(f"{conv}.bias", (out_chs,), "bias")
        if bn:
            self.declare_batch_norm(bn, out_chs)

    def layer_name(self, prefix: str) -> str:
        return prefix + self.conv_name

    def _bind(self, local, ops):
        w = local[f"{self.conv_name}.weight"]
        b = local.get(f"{self.conv_name}.bias")
        if self.bn_name:  # the fold makes its own float64 copy: converting first made two (a third of a bind)
            bn = self.bn_name
            w, b = ops.fold_batch_norm(w, b, local[f"{bn}.running_mean"], local[f"{bn}.running_var"],
                                       local[f"{bn}.weight"], local[f"{bn}.bias"], self.eps)
        else:
            w = host_weight(w, ops)
        self.w = ops.param(w, "conv")
        self.b = None if b is None else ops.param(host_weight(b, ops), "vector")

    def forward(self, ops, x):
        return ops.conv2d_act(x, self.w, self.b, self.act, self.stride, self.padding, self.dilation, self.groups)


class Linear(Module):
    """Fully connected layer, checkpoint names ``{name}.weight`` (out, in) and ``{name}.bias``."""

    flat = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, name: str = "fc",
                 act: str | None = None):
        super().__init__()
        self.name, self.act, self.has_bias = name, act, bias
        self.in_features, self.out_features = in_features, out_features
        self.declare(f"{name}.weight", (out_features, in_features), "weight")
        if bias:
            self.declare(f"{name}.bias", (out_features,), "bias")

    def layer_name(self, prefix: str) -> str:
        return prefix + self.name

    def _bind(self, local, ops):
        self.w = ops.param(host_weight(local[f"{self.name}.weight"], ops), "linear")
        b = local.get(f"{self.name}.bias")
        self.b = None if b is None else ops.param(host_weight(b, ops), "vector")

    def forward(self, ops, x):
        return ops.act(self.act, ops.linear(x, self.w, self.b))


class MaxPool2d(Module):
    """Max pooling (no parameters), a module so that shape errors can name it."""

    def __init__(self, kernel_size: int = 3, stride: int = 2, padding: int = 0, ceil_mode: bool = False):
        super().__init__()
        self.kernel, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, ops, x):
        return ops.max_pool2d(x, self.kernel, self.stride, self.padding, self.ceil_mode)


class AvgPool2d(Module):
    """Average pooling (no parameters), a module so that shape errors can name it. PyTorch's
    rules: ``count_include_pad=False`` divides by the elements inside the input only; a
    ``ceil_mode`` window overhanging the input never counts the overhang."""

    def __init__(self, kernel_size: int = 2, stride: int | None = None, padding: int = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True):
        super().__init__()
        self.kernel = _pair(kernel_size)
        self.stride = self.kernel if stride is None else _pair(stride)
        self.padding = _pair(padding)
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)

    def forward(self, ops, x):
        return ops.avg_pool2d(x, self.kernel, self.stride, self.padding, self.ceil_mode, self.count_include_pad)


# =========================================================================== SE blocks
class SqueezeExcite(Module):
    """Channel SE (cSE, Hu et al.): squeeze -> excite (FC, act, FC, gate) -> scale.

    ``rd_channels`` is the bottleneck width C_r; compute it with
    :func:`se_multi.reference.reduced_channels` the way the checkpoint layout does.
    ``conv_fc=True`` declares the FC weights as 1x1 convs ``(C_r, C, 1, 1)`` (timm, smp,
    torchvision); ``False`` as linear ``(C_r, C)``. ``names`` are the two FCs' checkpoint names.
    """

    is_se = True

    def __init__(self, channels: int, rd_channels: int, bias: bool = True, act: str = "relu",
                 gate: str = "sigmoid", names=("fc1", "fc2"), conv_fc: bool = True):
        super().__init__()
        self.channels, self.rd_channels, self.act, self.gate, self.names = channels, rd_channels, act, gate, names
        tail = (1, 1) if conv_fc else ()
        self.declare(f"{names[0]}.weight", (rd_channels, channels, *tail), "weight")
        if bias:
            self.declare(f"{names[0]}.bias", (rd_channels,), "bias")
        self.declare(f"{names[1]}.weight", (channels, rd_channels, *tail), "weight")
        if bias:
            self.declare(f"{names[1]}.bias", (channels,), "bias")

    def _bind(self, local, ops):
        def fc(name, rows):
            w = host_weight(local[f"{name}.weight"], ops).reshape(rows, -1)
            b = local.get(f"{name}.bias")
            return ops.param(w, "linear"), None if b is None else ops.param(host_weight(b, ops), "vector")

        self.w1, self.b1 = fc(self.names[0], self.rd_channels)
        self.w2, self.b2 = fc(self.names[1], self.channels)

    def gates(self, ops, x):
        """The per-channel gates s (N, C): squeeze, then excite."""
        return ops.excite(ops.squeeze(x), self.w1, self.b1, self.w2, self.b2, self.act, self.gate)

    def forward(self, ops, x):
        return ops.scale(x, self.gates(ops, x))


class SpatialSE(Module):
    """Spatial SE (sSE, Roy et al.): 1x1 conv C -> 1 with bias, sigmoid, pixel-wise scale."""

    is_se = True

    def __init__(self, channels: int, name: str = "conv"):
        super().__init__()
        self.name = name
        self.declare(f"{name}.weight", (1, channels, 1, 1), "weight")
        self.declare(f"{name}.bias", (1,), "bias")

    def _bind(self, local, ops):
        self.w = ops.param(host_weight(local[f"{self.name}.weight"], ops), "conv")
        self.b = ops.param(host_weight(local[f"{self.name}.bias"], ops), "vector")

    def gates(self, ops, x):
        """The per-pixel gate q: a one-channel map."""
        return ops.spatial_gate(x, self.w, self.b)

    def forward(self, ops, x):
        return ops.mul_pixel(x, self.gates(ops, x))


class SCSE(Module):
    """Concurrent spatial and channel SE: ``x*cSE(x) + x*sSE(x)`` (or the element-wise max).

    Default checkpoint names follow segmentation-models-pytorch's ``SCSEModule``:
    ``cSE.1`` / ``cSE.3`` (the two 1x1 convs with bias) and ``sSE.0``.
    """

    is_se = True

    def __init__(self, channels: int, reduction: int = 16, mode: str = "add",
                 cse_names=("cSE.1", "cSE.3"), sse_name: str = "sSE.0", rd_channels: int | None = None):
        super().__init__()
        if mode not in ("add", "max"):
            raise ValueError(f"scSE mode must be 'add' or 'max'; got {mode!r}")
        self.mode = mode
        rd = rd_channels or ref.reduced_channels(channels, reduction)
        cse = SqueezeExcite(channels, rd, bias=True, names=cse_names)
        sse = SpatialSE(channels, name=sse_name)
        cse.flat = sse.flat = True  # smp names them cSE.* and sSE.* directly under the block
        self.cse, self.sse = cse, sse

    def forward(self, ops, x):
        return ops.scse(x, self.cse.gates(ops, x), self.sse.gates(ops, x), self.mode)


# =========================================================================== residual integration
#: where SE sits in a residual unit (SENet paper, Fig. 5 and Table 14)
SE_INTEGRATIONS = ("standard", "pre", "post", "identity", "conv3x3")


def residual_unit(ops, x, branch, shortcut, se, integration: str = "standard"):
    """One residual unit with SE placed as the SENet paper's ablation defines it.

    ``branch(ops, x)`` is the residual branch (without its final ReLU), ``shortcut`` the
    projection (``None`` = identity), ``se`` a :class:`SqueezeExcite` or ``None``.

    - ``standard``: ``relu(se(branch(x)) + shortcut(x))`` (one fused scale+add+ReLU);
    - ``pre``: SE before the unit: ``x' = se(x)``; ``relu(branch(x') + shortcut(x'))``;
    - ``post``: SE after the sum: ``se(relu(branch(x) + shortcut(x)))``;
    - ``identity``: SE on the identity path: ``relu(branch(x) + se(shortcut(x)))``;
    - ``conv3x3``: SE lives inside ``branch`` (after the 3x3 conv); the unit itself is plain.
    """
    if se is None or integration == "conv3x3":
        return ops.add_relu(branch(ops, x), x if shortcut is None else shortcut(ops, x))
    if integration == "standard":
        out = branch(ops, x)
        return ops.scale_add_relu(out, se.gates(ops, out), x if shortcut is None else shortcut(ops, x))
    if integration == "pre":
        x = se(ops, x)
        return ops.add_relu(branch(ops, x), x if shortcut is None else shortcut(ops, x))
    if integration == "post":
        return se(ops, ops.add_relu(branch(ops, x), x if shortcut is None else shortcut(ops, x)))
    if integration == "identity":
        return ops.add_relu(branch(ops, x), se(ops, x if shortcut is None else shortcut(ops, x)))
    raise ValueError(f"se_integration must be one of {SE_INTEGRATIONS}; got {integration!r}")
