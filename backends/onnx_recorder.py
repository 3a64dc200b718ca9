"""The ONNX recorder: a backend whose "arrays" are symbolic tensors, so that running a model's
own ``forward`` on it records the op graph as ONNX.

:class:`OnnxRecorder` is a :class:`~se_multi.backend.Backend` whose "arrays" are symbolic
tensors (:class:`Sym`: an ONNX value name plus its public shape). Every op call appends
standard ONNX nodes (no custom ops, so any ONNX runtime can load the file); ``param``
turns each folded weight into an initializer. Binding goes through the normal
``create_model(..., backend=OnnxRecorder(...))`` path, so the exported graph is exactly
the function the other backends compute.

SE stays in 4-D form in the graph: the squeezed vector is kept as ``(N, C, 1, 1)``
(GlobalAveragePool output) and the two FCs are 1x1 Convs, so the block is
``GlobalAveragePool -> Conv -> Relu -> Conv -> Sigmoid|HardSigmoid -> Mul`` with no
Flatten/Unsqueeze round trip; the public ``(N, C)`` form is restored only where a
vector leaves the graph (or meets a Gemm).

It lives with the adapters: the engines fed by ONNX (:mod:`se_multi.backends.onnx_fed`) record
with it, and the exporter (:mod:`se_multi.onnx_export`, above: files, metadata, the command
line) builds on it. It imports nothing above the backend floor.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from se_multi import shapes
from se_multi._version import __version__
from se_multi.backend import Backend
from se_multi.dtypes import canonical, numpy_dtype

#: opsets this exporter writes: 13 is the first with Unsqueeze/Reshape axes as inputs
MIN_OPSET = 13
DEFAULT_OPSET = 17
#: ONNX op -> first opset that has it in the form used here
OP_MIN_OPSET = {"HardSwish": 14}

INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_DIM = "batch"
#: names of the input's symbolic H and W in a size-generic graph
SPATIAL_DIMS = ("height", "width")
#: the largest serialized model protobuf reads (a message's size is a signed 32-bit int)
MAX_MODEL_BYTES = 2**31 - 1


#: Equivalent forms of an op for a runtime that computes the plain ONNX form wrong; a backend
#: asks for them by name (the exported files never use them):
#:
#: - ``ceil_avg_pool_pads``: a ceil-mode average pool that counts padding, as Pad -> AveragePool
#:   (:meth:`OnnxRecorder._pool`): PyTorch divides a window that overhangs the padded input by its
#:   part inside the *padded* input; ONNX leaves that divisor to the runtime, and OpenVINO 2026.4
#:   divides by the whole kernel (ONNX Runtime follows PyTorch). Padded explicitly, the padding is
#:   input and the pool (``count_include_pad=0``) leaves only the overhang out.
#: - ``strided_conv_pad``: a convolution (not depthwise) with a horizontal stride and a kernel
#:   wider than 1 whose output is one column wide and two or more rows high (the trigger of the
#:   bug it avoids), on an input padded on the right and at the bottom by one stride and the extra
#:   output column and row sliced off (:meth:`OnnxRecorder._conv_padded`); in a size-generic
#:   trace, every such convolution (the size is not known). The trigger is
#:   :func:`se_multi.shapes.onednn_amx_one_column_conv`, which the torch adapter shares.
#: - ``ceil_pool_end_pads``: a ceil-mode pool as a floor-mode pool whose bottom and right pads are
#:   longer by ``e = min(stride - 1, kernel - pad - 1)`` (:meth:`OnnxRecorder._pool`). Its windows
#:   are exactly PyTorch's: a floor-mode window exists where it ends inside the input, both pads
#:   and ``e``, i.e. where it starts before ``size + pad`` (PyTorch's rule that a last window must
#:   not start in the right padding) and, with ``e = stride - 1``, up to ``ceil((size + 2 pad -
#:   kernel) / stride)`` (``floor((n + s - 1) / s) == ceil(n / s)`` for every integer n; when
#:   ``kernel < pad + stride`` the smaller ``e`` drops the window that starts in the padding). The
#:   overhang is now padding, which MaxPool ignores and AveragePool with ``count_include_pad=0``
#:   leaves out of the divisor, as PyTorch does (a pool that counts padding is padded explicitly
#:   first). No window is larger than its padded input (PyTorch allows that with ceil_mode, and
#:   OpenVINO refuses it: the avg_down shortcut's 2x2/2 average pool on a 1-wide map, at any input
#:   side <= 16; the Caffe stem's 3x3/2 max pool on a 2-wide map, at 5x3), and no end pad reaches
#:   the kernel (OpenVINO refuses that for an average pool that excludes padding). Nothing depends
#:   on the input size, so a size-generic trace writes it too.
#: - ``ceil_pool_slice``: a ceil-mode pool whose last window would start in the right padding
#:   (PyTorch drops it; a runtime that keeps it gives one more row or column), sliced to
#:   PyTorch's size (only without ``ceil_pool_end_pads``, which needs no slice).
#:
#: ``ceil_pool_slice`` depends on the traced size, so a size-generic trace (``symbolic_hw``) omits it.
WORKAROUNDS = ("ceil_avg_pool_pads", "strided_conv_pad", "ceil_pool_end_pads", "ceil_pool_slice")


class OnnxExportError(ValueError):
    """An op, option or setting that has no ONNX form here."""


class Sym:
    """A symbolic tensor: ONNX value ``name`` with its public ``shape``.

    ``vec4d`` marks an ``(N, C)`` per-channel vector stored in the graph as ``(N, C, 1, 1)``;
    ``const`` holds the value of an initializer (weights), so weight reshapes happen at
    export time instead of as graph nodes.
    """

    __slots__ = ("name", "shape", "vec4d", "const")

    def __init__(self, name: str, shape: tuple, vec4d: bool = False, const: np.ndarray | None = None):
        self.name, self.shape, self.vec4d, self.const = name, tuple(shape), vec4d, const

    def __repr__(self) -> str:
        return f"Sym({self.name!r}, {self.shape}{', 4d' if self.vec4d else ''})"


def _onnx():
    try:
        import onnx
    except ModuleNotFoundError:
        raise ModuleNotFoundError("ONNX export needs the onnx package: pip install 'se-multi[onnx]'") from None
    return onnx


def check_opset(opset: int) -> int:
    onnx = _onnx()
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= int(opset) <= newest:
        raise OnnxExportError(f"ONNX export: opset must be an integer in [{MIN_OPSET}, {newest}]; got {opset!r}")
    return int(opset)


class OnnxRecorder(Backend):
    """Records op calls as ONNX nodes. Use one instance per exported graph."""

    name = "onnx-recorder"
    package = "onnx"
    extra = "onnx"
    dtypes = ("float32", "float16")

    def __init__(self, dtype: str = "float32", device: str | None = None, opset: int = DEFAULT_OPSET,
                 workarounds=()):
        if canonical(dtype) not in self.dtypes:
            raise OnnxExportError(f"ONNX export supports dtype {', '.join(self.dtypes)}; got {dtype!r}")
        super().__init__(dtype, None)
        self.opset = check_opset(opset)
        self._np_dtype = numpy_dtype(self.dtype)
        self.param_dtype = self.dtype  # param rounds with NumPy's own cast
        onnx = _onnx()
        self._elem_type = onnx.helper.np_dtype_to_tensor_dtype(self._np_dtype)
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []
        self._count = 0
        self._consts: dict[Any, Sym] = {}  # value-keyed constants (scalars, int lists)
        unknown = set(workarounds) - set(WORKAROUNDS)
        if unknown:
            raise OnnxExportError(f"ONNX export: unknown workarounds {sorted(unknown)}; known: {', '.join(WORKAROUNDS)}")
        #: equivalent graph forms for a runtime that computes the plain form wrong (:data:`WORKAROUNDS`)
        self.workarounds = frozenset(workarounds)
        self._symbolic = False  # tracing a size-generic graph: size-specific forms are left out or made generic
        self._int64: set[str] = set()  # values that are int64 (max_pool2d_indices' indices), not the graph dtype
        self._pooled: dict[str, Sym] = {}  # indices -> the map they were pooled from (its shape, at run time)

    # ------------------------------------------------------------------ graph building
    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def _node(self, op_type: str, inputs: Sequence[Sym | str | None], shape, vec4d: bool = False,
              **attrs) -> Sym:
        need = OP_MIN_OPSET.get(op_type, 0)
        if self.opset < need:
            raise OnnxExportError(f"ONNX export: op {op_type} needs opset >= {need}; got opset {self.opset}")
        out = self._fresh(op_type.lower())
        names = ["" if i is None else (i if isinstance(i, str) else i.name) for i in inputs]
        while names and names[-1] == "":
            names.pop()  # trailing optional inputs are omitted, not named ""
        self.nodes.append(_onnx().helper.make_node(op_type, names, [out], name=out, **attrs))
        return Sym(out, shape, vec4d)

    def _initializer(self, value: np.ndarray, hint: str, key=None) -> Sym:
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self._fresh(hint)
        self.initializers.append((name, value))  # made a TensorProto in the graph itself (to_model)
        sym = Sym(name, value.shape, const=value)
        if key is not None:
            self._consts[key] = sym
        return sym

    def _scalar(self, v: float) -> Sym:
        value = np.asarray(v, self._np_dtype)
        return self._initializer(value, "const", key=("scalar", float(v)))

    def _ints(self, values: Sequence[int]) -> Sym:
        value = np.asarray(values, np.int64)
        return self._initializer(value, "ints", key=("ints", tuple(int(v) for v in values)))

    def _tensor(self, w) -> Sym | None:
        """A weight or input: a Sym as is; a NumPy array (a module bound on a NumPy-array
        backend such as onnxruntime) becomes an initializer (each weight is used once per
        forward, so each use is its own initializer)."""
        if w is None or isinstance(w, Sym):
            return w
        if isinstance(w, np.ndarray):
            return self._initializer(w.astype(self._np_dtype, copy=False), "w")
        raise OnnxExportError(f"ONNX export: expected a symbolic tensor or a NumPy array; got {type(w).__name__}")

    def graph_input(self, name: str, shape: tuple) -> Sym:
        helper = _onnx().helper
        self.inputs.append(helper.make_tensor_value_info(name, self._elem_type, list(shape)))
        return Sym(name, shape)

    def to_model(self, outputs: Sequence[Sym], output_names: Sequence[str] | None = None,
                 graph_name: str = "se_multi"):
        """The ModelProto with ``outputs`` renamed to ``output_names`` (Identity nodes)."""
        return self._with_weights(self._graph(outputs, output_names, graph_name))

    def _graph(self, outputs: Sequence[Sym], output_names: Sequence[str] | None, graph_name: str):
        """The ModelProto without its weights (:meth:`with_weights`)."""
        onnx = _onnx()
        helper = onnx.helper
        outs = []
        for i, sym in enumerate(outputs):
            name = output_names[i] if output_names else f"{OUTPUT_NAME}{i}"
            if sym.name != name:
                self.nodes.append(helper.make_node("Identity", [sym.name], [name], name=f"{name}_identity"))
            elem = onnx.TensorProto.INT64 if sym.name in self._int64 else self._elem_type
            outs.append(helper.make_tensor_value_info(name, elem, list(sym.shape)))
        opset = [helper.make_opsetid("", self.opset)]
        # the weights go in after make_model, which copies the graph it is given (VGG-16's 550 MB
        # once more, and 4 s of test_onnx's exports)
        model = helper.make_model(helper.make_graph(self.nodes, graph_name, self.inputs, outs),
                                  opset_imports=opset, producer_name="se_multi", producer_version=__version__)
        model.ir_version = helper.find_min_ir_version_for(opset)  # loadable by the oldest runtime that has the opset
        return model

    def _weights(self):
        """``(name, little-endian contiguous array)`` of each initializer a node reads: left out are
        weights replaced by a reshaped copy (a linear weight used as a 1x1 conv) and heads a model
        never calls. A scalar comes as shape (1,), as numpy_helper.from_array writes it."""
        used = {name for node in self.nodes for name in node.input}
        for name, value in self.initializers:
            if name in used:
                yield name, np.ascontiguousarray(value, value.dtype.newbyteorder("<"))

    def _with_weights(self, model):
        for name, data in self._weights():
            # written into the model's own message: a TensorProto made apart is copied whole when added
            _tensor_header(model.graph.initializer.add(), name, data).raw_data = data.tobytes()
        return model

    def _serialized_with_weights(self, model) -> bytes:
        """``_with_weights(model).SerializeToString()``, without the message or protobuf's copies.

        protobuf serializes a message into a buffer that grows by doubling, then copies it into
        the bytes: 2.5x the weights at its peak (954 MB for a 381 MB message, 2026-12-05), beside
        the message's own copy. Here each weight's bytes go straight from its array into the one
        ``bytes``: the weightless model, then per weight one more ``graph`` field holding one
        ``initializer``. A parser merges repeated occurrences of a message field into one message
        and appends to its repeated fields (protobuf's encoding spec, "Last One Wins"), so every
        reader parses this as the message :meth:`_with_weights` makes (tests/test_onnx.py).
        """
        onnx = _onnx()
        graph_tag = _tag(onnx.ModelProto, "graph")
        initializer_tag = _tag(onnx.GraphProto, "initializer")
        raw_data_tag = _tag(onnx.TensorProto, "raw_data")
        pieces: list = [model.SerializeToString()]
        for name, data in self._weights():
            raw = memoryview(data.reshape(-1).view(np.uint8))
            head = _tensor_header(onnx.TensorProto(), name, data).SerializeToString() + raw_data_tag + _varint(raw.nbytes)
            tensor_size = len(head) + raw.nbytes
            initializer = initializer_tag + _varint(tensor_size)
            pieces += [graph_tag + _varint(len(initializer) + tensor_size) + initializer + head, raw]
        size = sum(len(piece) if isinstance(piece, bytes) else piece.nbytes for piece in pieces)
        if size > MAX_MODEL_BYTES:  # protobuf's own serializer refuses these with "Failed to serialize proto"
            raise OnnxExportError(f"ONNX export: the model is {size / 2**30:.2f} GiB serialized; an ONNX file "
                                  f"holds at most {MAX_MODEL_BYTES / 2**30:.2f} GiB (protobuf's limit)")
        return b"".join(pieces)

    # ------------------------------------------------------------------ Backend: arrays
    def asarray(self, x):
        if isinstance(x, Sym):
            return x
        return self._initializer(np.asarray(x, self._np_dtype), "const")

    @staticmethod
    def to_numpy(x):
        raise OnnxExportError("ONNX export: a traced tensor has no value (to_numpy called while recording)")

    def input(self, x):
        return self.asarray(x)

    def output(self, y):
        return self._vec2d(y)

    def param(self, w: np.ndarray, kind: str):
        if kind not in ("conv", "linear", "vector"):
            raise OnnxExportError(f"ONNX export: param kind must be 'conv', 'linear' or 'vector'; got {kind!r}")
        return self._initializer(np.asarray(w).astype(self._np_dtype), kind)

    def shape(self, x):
        return tuple(x.shape)

    # ------------------------------------------------------------------ layout helpers
    def _vec4d(self, s: Sym) -> Sym:
        """An (N, C) vector as (N, C, 1, 1) for channel broadcast."""
        if s.vec4d:
            return s
        if len(s.shape) != 2:
            raise OnnxExportError(f"ONNX export: expected an (N, C) vector; got shape {s.shape}")
        return self._node("Unsqueeze", [s, self._ints([2, 3])], s.shape, vec4d=True)

    def _vec2d(self, s: Sym) -> Sym:
        if not s.vec4d:
            return s
        return self._node("Flatten", [s], s.shape, axis=1)

    def _conv_weight(self, w: Sym) -> Sym:
        """A linear weight (out, in) as a 1x1 conv weight (out, in, 1, 1)."""
        if len(w.shape) == 4:
            return w
        if w.const is not None:
            return self._initializer(w.const.reshape(*w.shape, 1, 1), "w1x1", key=("w1x1", w.name))
        return self._node("Reshape", [w, self._ints([*w.shape, 1, 1])], (*w.shape, 1, 1))

    def _same(self, op_type: str, x: Sym, **attrs) -> Sym:
        return self._node(op_type, [x], x.shape, x.vec4d, **attrs)

    # ------------------------------------------------------------------ primitives
    def conv2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        x, w, b = self._tensor(x), self._tensor(w), self._tensor(b)
        x_shape = (*x.shape, 1, 1) if x.vec4d else x.shape  # a 1x1 conv on a squeezed vector
        out_shape = shapes.conv2d(x_shape, w.shape, stride, padding, dilation, groups)
        kh, kw = w.shape[2:]
        top, bottom, left, right = padding
        if ("strided_conv_pad" in self.workarounds and not x.vec4d
                and shapes.onednn_amx_one_column_conv(w.shape, stride, groups, None if self._symbolic else out_shape)):
            return self._conv_padded(x, w, b, out_shape, stride, padding, dilation, groups)
        return self._node("Conv", [x, w, b], out_shape, kernel_shape=[kh, kw],
                          strides=list(stride), pads=[top, left, bottom, right],  # ONNX: begins, then ends
                          dilations=list(dilation), group=int(groups))

    def _conv_padded(self, x, w, b, out_shape, stride, padding, dilation, groups):
        """The same convolution on ``x`` padded on the right and at the bottom by one stride (exactly
        one more output column and row, whatever the size), that column and row sliced off again:
        OpenVINO 2026.4's AMX bfloat16 convolution kernel (``brgconv_avx512_amx_bf16``) returns
        garbage (~1e35, uninitialised memory) for a stride-2 3x3 convolution whose output is one
        column wide and 2+ rows high, grouped or not, batch 1 or more (found by validate's
        SE-ResNeXt-50 model check at 33x27; then SE-ResNet-50 at 37x29; 54 of 1728 shapes of a
        grid, all >= 256 channels, in static graphs; in a dynamic graph the deep stem's 3->32
        convolution too, at 33x1; f32, 1x1 and stride-1 kernels, depthwise are right).

        Padding on the right alone has bugs of its own on a one-column input: a segfault for <= 32
        output channels and 1-2 rows (the deep stem's first convolution at a 1x1 or 2x1 input; on
        an AVX512_BF16 CPU without AMX, and in a dynamic graph on an AMX CPU, 2026-12-03), garbage
        (rel err ~1) for grouped convolutions in a dynamic-shape graph (without AMX). The extra row
        keeps every output 2+ rows high, where neither strikes (tests/test_openvino_small.py: every
        size 1x1 to 33x33 and the rectangles, static and dynamic). Hence only where the trigger is
        (a static graph's one-column, 2+ row outputs; every strided convolution of a dynamic
        graph) and only on a CPU with AMX (the backend's choice)."""
        n, c, h, wd = x.shape
        sh, sw = stride
        padded = self._node("Pad", [x, self._ints([0, 0, 0, 0, 0, 0, sh, sw])], (n, c, h + sh, wd + sw),
                            mode="constant")
        kh, kw = w.shape[2:]
        top, bottom, left, right = padding
        wide = (out_shape[0], out_shape[1], out_shape[2] + 1, out_shape[3] + 1)
        y = self._node("Conv", [padded, w, b], wide, kernel_shape=[kh, kw], strides=list(stride),
                       pads=[top, left, bottom, right], dilations=list(dilation), group=int(groups))
        return self._node("Slice", [y, self._ints([0, 0]), self._ints([-1, -1]), self._ints([2, 3])], out_shape)

    def conv_transpose2d(self, x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0)):
        """ONNX ``ConvTranspose``: its weight is PyTorch's (C_in, C_out, KH, KW) and its ``pads`` crop
        the full output as ``padding`` does (begins, then ends); no ``output_shape``, so a
        size-generic graph stays generic."""
        x, w, b = self._tensor(x), self._tensor(w), self._tensor(b)
        if x.vec4d:
            raise OnnxExportError("ONNX export: ConvTranspose here takes an NCHW feature map; got an (N, C) vector")
        out_shape = shapes.conv_transpose2d(x.shape, w.shape, stride, padding)
        top, bottom, left, right = padding
        return self._node("ConvTranspose", [x, w, b], out_shape, kernel_shape=list(w.shape[2:]),
                          strides=list(stride), pads=[top, left, bottom, right])

    def linear(self, x, w, b=None):
        x, w, b = self._tensor(x), self._tensor(w), self._tensor(b)
        x = self._vec2d(x)
        return self._node("Gemm", [x, w, b], shapes.linear(x.shape, w.shape), transB=1)

    def batch_norm(self, x, mean, var, weight, bias, eps):
        x, mean, var, weight, bias = map(self._tensor, (x, mean, var, weight, bias))
        return self._node("BatchNormalization", [x, weight, bias, mean, var], x.shape, x.vec4d,
                          epsilon=float(eps))

    def relu(self, x):
        return self._same("Relu", self._tensor(x))

    def relu6(self, x):
        x = self._tensor(x)
        return self._node("Clip", [x, self._scalar(0.0), self._scalar(6.0)], x.shape, x.vec4d)

    def sigmoid(self, x):
        return self._same("Sigmoid", self._tensor(x))

    def hard_sigmoid(self, x):
        return self._same("HardSigmoid", self._tensor(x), alpha=1.0 / 6.0, beta=0.5)

    def hard_swish(self, x):
        return self._same("HardSwish", self._tensor(x))

    def _pool(self, op_type, x, kernel, stride, padding, ceil_mode, count_include_pad=None):
        """A MaxPool or AveragePool node with PyTorch's output, in the forms :data:`WORKAROUNDS` asks for."""
        x = self._tensor(x)
        if x.vec4d:
            raise OnnxExportError(f"ONNX export: {op_type} needs an NCHW feature map; got an (N, C) vector")
        want = shapes.pool2d(x.shape, kernel, stride, padding, ceil_mode,
                             "max_pool2d" if op_type == "MaxPool" else "avg_pool2d")
        (ph, pw), (sh, sw), in_hw = padding, stride, x.shape[2:]
        pads = [ph, pw, ph, pw]  # ONNX: begins, then ends
        attrs = {} if count_include_pad is None else {"count_include_pad": int(bool(count_include_pad))}
        ceil = bool(ceil_mode)
        if (ceil and count_include_pad and any(padding)
                and self.workarounds & {"ceil_avg_pool_pads", "ceil_pool_end_pads"}):
            # ceil_avg_pool_pads (the end-pads form needs it too: its extra padding must not count)
            n, c, h, w = x.shape
            x = self._node("Pad", [x, self._ints([0, 0, ph, pw, 0, 0, ph, pw])], (n, c, h + 2 * ph, w + 2 * pw),
                           mode="constant")
            pads, attrs["count_include_pad"] = [0, 0, 0, 0], 0
        end_pads = ceil and "ceil_pool_end_pads" in self.workarounds
        if end_pads:  # e from the pool's own padding, also after the explicit Pad above
            pads[2] += max(0, min(sh - 1, kernel[0] - ph - 1))
            pads[3] += max(0, min(sw - 1, kernel[1] - pw - 1))
            ceil = False
            if attrs:  # any padding is input by now (Pad above) or there is none: only the overhang is out
                attrs["count_include_pad"] = 0
        got = want
        if ceil and not self._symbolic and "ceil_pool_slice" in self.workarounds:
            got = (*want[:2], *(shapes.ceil_pool_size_kept(size, k, s, p) for size, k, s, p in
                                zip(in_hw, kernel, stride, padding)))
        y = self._node(op_type, [x], got, kernel_shape=list(kernel), strides=list(stride), pads=pads,
                       ceil_mode=int(ceil), **attrs)
        if got != want:
            y = self._node("Slice", [y, self._ints([0, 0]), self._ints(list(want[2:])), self._ints([2, 3])], want)
        return y

    def max_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False):
        return self._pool("MaxPool", x, kernel, stride, padding, ceil_mode)

    def _spatial_shape(self, x: Sym) -> tuple[Sym, Sym]:
        """``x``'s shape (N, C, H, W) and (N, C, H * W) as int64 tensors, read at run time (a
        size-generic graph knows neither H nor W)."""
        n, c, h, w = x.shape
        shape = self._node("Shape", [x], (4,))
        hw = self._node("ReduceProd", [self._node("Slice", [shape, self._ints([2]), self._ints([4])], (2,))], (1,),
                        keepdims=1)
        lead = self._node("Slice", [shape, self._ints([0]), self._ints([2])], (2,))
        return shape, self._node("Concat", [lead, hw], (3,), axis=0)

    def max_pool2d_indices(self, x, kernel, stride):
        """MaxPool with its second output. ONNX's indices are flat over N*C*H*W (NCHW); PyTorch's
        are flat in each (n, c) plane: their remainder by H*W. Both MaxPool outputs take the first
        maximum of a window (ONNX Runtime, OpenVINO; tests/test_unpool.py checks ties)."""
        onnx = _onnx()
        x = self._tensor(x)
        if x.vec4d:
            raise OnnxExportError("ONNX export: MaxPool needs an NCHW feature map; got an (N, C) vector")
        out, _ = shapes.max_pool2d_indices(x.shape, kernel, stride)
        values, flat = self._fresh("maxpool"), self._fresh("maxpool_indices")
        self.nodes.append(onnx.helper.make_node("MaxPool", [x.name], [values, flat], name=values,
                                                kernel_shape=list(kernel), strides=list(stride), pads=[0, 0, 0, 0]))
        _, plane = self._spatial_shape(x)
        hw = self._node("Slice", [plane, self._ints([2]), self._ints([3])], (1,))
        indices = self._node("Mod", [Sym(flat, out), hw], out)
        self._int64.add(indices.name)
        self._pooled[indices.name] = x
        return Sym(values, out), indices

    def max_unpool2d(self, x, indices, output_size):
        """ScatterElements of the values into a zero (N, C, H*W) map at their per-plane indices,
        reshaped to (N, C, H, W): exactly PyTorch's max_unpool2d. (ONNX's MaxUnpool would need the
        pool's kernel and stride, which the op does not take, and NCHW-flat indices.) Where the
        indices come from a pool of this graph, of a map of ``output_size``, the output's shape is
        that map's, read at run time, so a size-generic graph stays generic."""
        onnx = _onnx()
        x, indices = self._tensor(x), self._tensor(indices)
        n, c, h, w = shapes.max_unpool2d(x.shape, indices.shape, output_size)
        source = self._pooled.get(indices.name)
        if indices.name not in self._int64:  # a graph input of the graph dtype (an op run alone)
            indices = self._node("Cast", [indices], indices.shape, to=onnx.TensorProto.INT64)
        if source is not None and tuple(source.shape[2:]) == (h, w):
            shape, plane = self._spatial_shape(source)
        else:
            shape, plane = self._ints([n, c, h, w]), self._ints([n, c, h * w])
        zero = onnx.helper.make_tensor("zero", self._elem_type, [1], [0])
        zeros = self._node("ConstantOfShape", [plane], (n, c, h * w), value=zero)
        flat = self._ints([0, 0, -1])
        updates = self._node("Reshape", [x, flat], (n, c, x.shape[2] * x.shape[3]))
        where = self._node("Reshape", [indices, flat], updates.shape)
        scattered = self._node("ScatterElements", [zeros, where, updates], (n, c, h * w), axis=2)
        return self._node("Reshape", [scattered, shape], (n, c, h, w))

    def avg_pool2d(self, x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
        return self._pool("AveragePool", x, kernel, stride, padding, ceil_mode, count_include_pad)

    def global_avg_pool(self, x):
        x = self._tensor(x)
        return self._node("GlobalAveragePool", [x], shapes.global_avg_pool(x.shape), vec4d=True)

    def _binary(self, op_type, a, b):
        a, b = self._tensor(a), self._tensor(b)
        if a.vec4d != b.vec4d:
            a, b = self._vec4d(a), self._vec4d(b)
        return self._node(op_type, [a, b], shapes.same(op_type.lower(), a.shape, b.shape), a.vec4d)

    def add(self, a, b):
        return self._binary("Add", a, b)

    def maximum(self, a, b):
        return self._binary("Max", a, b)

    def mul_channel(self, x, s):
        x, s = self._tensor(x), self._tensor(s)
        return self._node("Mul", [x, self._vec4d(s)], shapes.mul_channel(x.shape, s.shape))

    def mul_pixel(self, x, q):
        x, q = self._tensor(x), self._tensor(q)
        return self._node("Mul", [x, q], shapes.mul_pixel(x.shape, q.shape))

    def upsample_nearest2x(self, x):
        x = self._tensor(x)
        scales = self._initializer(np.asarray([1, 1, 2, 2], np.float32), "scales", key="scales2x")
        # asymmetric + floor is exactly out[i] = in[i // 2], PyTorch's nearest rule
        return self._node("Resize", [x, None, scales], shapes.upsample_nearest2x(x.shape), mode="nearest",
                          coordinate_transformation_mode="asymmetric", nearest_mode="floor")

    def concat_channels(self, xs):
        xs = [self._tensor(x) for x in xs]
        return self._node("Concat", xs, shapes.concat_channels([x.shape for x in xs]), axis=1)

    def prelu(self, x, slope):
        """ONNX ``PRelu``: its slope broadcasts from the right, so a per-channel (C,) slope is
        stored as (C, 1, 1); a shared (1,) slope broadcasts as it is."""
        x, slope = self._tensor(x), self._tensor(slope)
        if x.vec4d:
            raise OnnxExportError("ONNX export: PRelu here takes an NCHW feature map; got an (N, C) vector")
        out_shape = shapes.prelu(x.shape, slope.shape)
        if slope.shape != (1,):
            if slope.const is not None:
                slope = self._initializer(slope.const.reshape(-1, 1, 1), "slope", key=("slope", slope.name))
            else:
                slope = self._node("Unsqueeze", [slope, self._ints([1, 2])], (*slope.shape, 1, 1))
        return self._node("PRelu", [x, slope], out_shape)

    def channel_shuffle(self, x, groups):
        """Reshape (N, g, C/g, H*W) -> Transpose -> Reshape back to ``x``'s own runtime shape
        (``Shape``): a dynamic batch, height and width need no size in the graph (Reshape's 0
        copies N)."""
        x = self._tensor(x)
        if x.vec4d:
            raise OnnxExportError("ONNX export: channel_shuffle takes an NCHW feature map; got an (N, C) vector")
        n, c, h, w = shapes.channel_shuffle(x.shape, groups)
        split = (n, groups, c // groups, "hw")
        y = self._node("Reshape", [x, self._ints([0, groups, c // groups, -1])], split)
        y = self._node("Transpose", [y], (n, c // groups, groups, "hw"), perm=[0, 2, 1, 3])
        return self._node("Reshape", [y, self._node("Shape", [x], (4,))], (n, c, h, w))

    def center_crop(self, x, like):
        """``Slice`` of H and W, its window computed at run time from both maps' ``Shape`` (starts
        ``(H - h) / 2``, ends starts + ``h``): in a size-generic graph the map it crops to (a skip)
        varies with the input, and ``like`` stays an input of the one-op graph (an engine drops an
        input no node reads: OpenVINO then takes one input fewer)."""
        x, like = self._tensor(x), self._tensor(like)
        if x.vec4d or like.vec4d:
            raise OnnxExportError("ONNX export: center_crop takes NCHW feature maps; got an (N, C) vector")
        out_shape = shapes.center_crop(x.shape, like.shape)
        hw = [self._node("Slice", [self._node("Shape", [t], (4,)), self._ints([2]), self._ints([4])], (2,))
              for t in (x, like)]
        starts = self._node("Div", [self._node("Sub", [hw[0], hw[1]], (2,)), self._ints([2])], (2,))
        ends = self._node("Add", [starts, hw[1]], (2,))
        return self._node("Slice", [x, starts, ends, self._ints([2, 3])], out_shape)

    # ------------------------------------------------------------------ fused ops in graph form
    def excite(self, z, w1, b1, w2, b2, act="relu", gate="sigmoid"):
        """FC -> act -> FC -> gate as 1x1 Convs on the (N, C, 1, 1) squeeze: no Flatten/Gemm/Unsqueeze."""
        z = self._vec4d(self._tensor(z))
        w1, b1, w2, b2 = map(self._tensor, (w1, b1, w2, b2))
        h = self.act(act, self._conv1x1(z, w1, b1))
        return self.act(gate, self._conv1x1(h, w2, b2))

    def _conv1x1(self, v: Sym, w: Sym, b: Sym | None) -> Sym:
        w = self._conv_weight(w)
        return self._node("Conv", [v, w, b], (v.shape[0], w.shape[0]), vec4d=True, kernel_shape=[1, 1])

    # ------------------------------------------------------------------ tracing a module
    def trace(self, module, input_shape: tuple, graph_name: str = "se_multi", symbolic_hw: bool = False,
              as_bytes: bool = False):
        """Run ``module.forward`` on a symbolic NCHW input of ``input_shape`` -> ModelProto, or with
        ``as_bytes`` the same model serialized (what an engine reads; the message is never made).

        The trace runs at ``input_shape`` (its shape checks included); with ``symbolic_hw``
        the graph declares its input's H and W (and a feature-map output's) as symbolic
        dimensions: no node depends on them, so one graph serves every input size that fits.
        """
        return self.with_weights(self.trace_graph(module, input_shape, graph_name, symbolic_hw), as_bytes)

    def trace_graph(self, module, input_shape: tuple, graph_name: str = "se_multi", symbolic_hw: bool = False):
        """:meth:`trace`'s ModelProto without the weights, for :meth:`with_weights` (its metadata
        set in between: :func:`se_multi.onnx_export.build_onnx`)."""
        self._symbolic = symbolic_hw
        x = self.graph_input(INPUT_NAME, input_shape)
        y = self.output(module(self, self.input(x)))
        proto = self._graph([y], [OUTPUT_NAME], graph_name)
        if symbolic_hw:
            for is_input, values in ((True, proto.graph.input), (False, proto.graph.output)):
                for value in values:
                    dims = value.type.tensor_type.shape.dim
                    for axis, name in zip((2, 3), SPATIAL_DIMS):
                        if len(dims) > axis:
                            dims[axis].Clear()  # an output's H and W: unknown, derived by the runtime
                            if is_input:
                                dims[axis].dim_param = name
        return proto

    def with_weights(self, model, as_bytes: bool = False):
        """``model`` (:meth:`trace_graph`'s) with the traced weights as its initializers, or with
        ``as_bytes`` that model serialized (:meth:`_serialized_with_weights`)."""
        return self._serialized_with_weights(model) if as_bytes else self._with_weights(model)


def _tensor_header(tensor, name: str, data: np.ndarray):
    """``tensor`` given the name, element type and dims of ``data`` (its raw data is the caller's)."""
    tensor.name, tensor.data_type = name, _onnx().helper.np_dtype_to_tensor_dtype(data.dtype)
    tensor.dims.extend(data.shape)
    return tensor


def _varint(n: int) -> bytes:
    """``n`` as a protobuf base-128 varint."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(message, field: str) -> bytes:
    """The key of a length-delimited ``field`` of a protobuf ``message`` class (wire type 2)."""
    return _varint(message.DESCRIPTOR.fields_by_name[field].number << 3 | 2)
