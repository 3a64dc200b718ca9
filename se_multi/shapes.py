"""Output shapes and their checks, defined once (Keras's ``compute_output_spec``).

Every op's output shape, and every error an op raises because its input cannot
produce an output, is worked out here and nowhere else: the NumPy reference, the
adapters that compute shapes themselves (CuPy's kernels, MLX's NHWC taps), the
ONNX recorder and the shape tracing of :mod:`se_multi.tracing` all call these
functions. Semantics are PyTorch's (the checkpoints se_multi loads were trained
under them): ``floor`` output sizes, the ``ceil_mode`` rule that a last window
must start inside the input or its left padding, and pool padding at most half
the kernel.

This module is a leaf: pure size rules, importing nothing of se_multi, so that
every layer (the reference, the adapters, third-party backends) can use them.
Tracing a whole model on shapes (``ShapeBackend``, ``InputSizes``) lives one
floor up, in :mod:`se_multi.tracing`.
"""

from __future__ import annotations

from typing import Sequence


class ShapeError(ValueError):
    """An op whose input cannot produce a non-empty output of the right shape.

    ``op`` names the op; ``layer`` is filled in by :class:`ShapeBackend` with the
    checkpoint path of the module the op ran in.
    """

    def __init__(self, op: str, message: str):
        super().__init__(f"{op}: {message}")
        self.op, self.detail, self.layer = op, message, None


# =========================================================================== sizes along one axis
def conv_output_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int = 1) -> int:
    """``floor((size + pads - dilation*(kernel-1) - 1) / stride) + 1`` (may be <= 0: empty)."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """PyTorch's rule, including: with ``ceil_mode`` the last window must start inside input+left pad."""
    num = size + 2 * pad - kernel
    out = (-(-num // stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_overhang(size: int, out: int, kernel: int, stride: int, pad: int) -> int:
    """How far a pool's last window (of ``out``) reaches past the padded input along one axis:
    ``max(0, (out - 1) * stride + kernel - (size + 2 * pad))``, non-zero only in ``ceil_mode``.
    Padding the end by it makes every window complete; PyTorch never counts it in a divisor."""
    return max(0, (out - 1) * stride + kernel - (size + 2 * pad))


def _dims(shape) -> tuple:
    """A shape as ints; a symbolic dimension (an ONNX graph's ``"batch"``) stays a name."""
    return tuple(d if isinstance(d, str) else int(d) for d in shape)


def _nchw(op: str, shape) -> tuple[int, int, int, int]:
    shape = _dims(shape)
    if len(shape) != 4:
        raise ShapeError(op, f"expected an NCHW feature map; got shape {shape}")
    return shape  # type: ignore[return-value]


def _fmt(shape) -> str:
    return "x".join(str(d) for d in shape)


# =========================================================================== ops
def conv2d(x_shape, w_shape, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1):
    """NCHW output of a conv with an OIHW weight; ``padding`` is (top, bottom, left, right)."""
    n, c, h, w = _nchw("conv2d", x_shape)
    o, cg, kh, kw = _dims(w_shape)
    if c != cg * groups or o % groups:
        raise ShapeError("conv2d", f"input has {c} channels; weight {_fmt((o, cg, kh, kw))} with "
                                   f"groups={groups} expects {cg * groups} (and out channels divisible by groups)")
    pt, pb, pl, pr = padding
    ho = conv_output_size(h, kh, stride[0], pt + pb, dilation[0])
    wo = conv_output_size(w, kw, stride[1], pl + pr, dilation[1])
    if ho <= 0 or wo <= 0:
        raise ShapeError("conv2d", f"a {h}x{w} input with kernel {kh}x{kw}, stride {_fmt(stride)}, "
                                   f"padding {tuple(padding)} gives an empty {ho}x{wo} output")
    return n, o, ho, wo


def conv_transpose2d(x_shape, w_shape, stride=(1, 1), padding=(0, 0, 0, 0)):
    """NCHW output of a transposed conv (PyTorch ``conv_transpose2d``, groups 1, dilation 1) with a
    (C_in, C_out, KH, KW) weight: ``(H - 1) * stride + KH - top - bottom`` rows (likewise columns);
    ``padding`` (top, bottom, left, right) crops the full output, so each side is less than the kernel."""
    n, c, h, w = _nchw("conv_transpose2d", x_shape)
    w_shape = _dims(w_shape)
    if len(w_shape) != 4 or w_shape[0] != c:
        raise ShapeError("conv_transpose2d", f"input has {c} channels; expected a ({c}, C_out, KH, KW) weight, "
                                             f"got {w_shape}")
    _, o, kh, kw = w_shape
    pt, pb, pl, pr = padding
    if min(stride) < 1 or min(padding) < 0 or max(pt, pb) >= kh or max(pl, pr) >= kw:
        raise ShapeError("conv_transpose2d", f"stride {_fmt(stride)} and padding {tuple(padding)} for a {kh}x{kw} "
                                             "kernel: expected strides >= 1 and each pad in [0, kernel)")
    ho = (h - 1) * stride[0] + kh - pt - pb
    wo = (w - 1) * stride[1] + kw - pl - pr
    if ho <= 0 or wo <= 0:
        raise ShapeError("conv_transpose2d", f"a {h}x{w} input with kernel {kh}x{kw}, stride {_fmt(stride)}, "
                                             f"padding {tuple(padding)} gives an empty {ho}x{wo} output")
    return n, o, ho, wo


def center_crop(x_shape, like_shape):
    """NCHW output of cropping ``x`` to the height and width of ``like`` (same batch): ``x``'s channels,
    ``like``'s H x W, which must fit inside ``x``'s."""
    n, c, h, w = _nchw("center_crop", x_shape)
    ln, lc, lh, lw = _nchw("center_crop", like_shape)
    if ln != n or lh > h or lw > w:
        raise ShapeError("center_crop", f"cannot crop a {_fmt((n, c, h, w))} map to the size of a "
                                        f"{_fmt((ln, lc, lh, lw))} one: expected the same batch and H, W "
                                        f"at most {h}x{w}")
    return n, c, lh, lw


def center_crop_window(x_shape, like_shape) -> tuple[int, int, int, int]:
    """``(top, left, h, w)``: where :func:`center_crop` takes its window in ``x`` (NCHW), rows from
    ``(H - h) // 2`` and columns from ``(W - w) // 2``, as the FC-DenseNet code's ``center_crop``."""
    _, _, h, w = center_crop(x_shape, like_shape)
    return (int(x_shape[2]) - h) // 2, (int(x_shape[3]) - w) // 2, h, w


def pool2d(x_shape, kernel, stride, padding=(0, 0), ceil_mode: bool = False, op: str = "max_pool2d"):
    """NCHW output of a max or average pool; ``kernel``/``stride``/``padding`` are (h, w)."""
    n, c, h, w = _nchw(op, x_shape)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if 2 * ph > kh or 2 * pw > kw:
        raise ShapeError(op, f"padding {(ph, pw)} must be at most half the kernel {(kh, kw)}")
    ho = pool_output_size(h, kh, sh, ph, ceil_mode)
    wo = pool_output_size(w, kw, sw, pw, ceil_mode)
    if ho <= 0 or wo <= 0:
        mode = ", ceil_mode" if ceil_mode else ""
        raise ShapeError(op, f"a {h}x{w} input with kernel {kh}x{kw}, stride {sh}x{sw}, padding {(ph, pw)}{mode} "
                             f"gives an empty {ho}x{wo} output")
    return n, c, ho, wo



def max_pool2d_indices(x_shape, kernel, stride):
    """Max pool with PyTorch's indices (no padding, floor sizes): the values' and the indices'
    NCHW shapes, one pair."""
    out = pool2d(x_shape, kernel, stride, (0, 0), False, "max_pool2d_indices")
    return out, out


def max_unpool2d(x_shape, indices_shape, output_size):
    """NCHW output of a max unpool to ``output_size`` (h, w): the indices have the values' shape,
    and the output plane holds at least as many pixels as the pooled one."""
    n, c, h, w = _nchw("max_unpool2d", x_shape)
    if _dims(indices_shape) != (n, c, h, w):
        raise ShapeError("max_unpool2d", f"indices of shape {_dims(indices_shape)} for values of shape {(n, c, h, w)}; "
                                         "expected the same shape")
    size = tuple(output_size) if isinstance(output_size, (tuple, list)) else ()
    if (len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in size)
            or size[0] < h or size[1] < w):
        raise ShapeError("max_unpool2d", f"output_size {output_size!r} for a {h}x{w} pooled map: expected "
                                         f"(H, W), ints with H >= {h} and W >= {w}")
    return n, c, size[0], size[1]

def linear(x_shape, w_shape):
    """(N, out) output of ``x @ w.T`` for ``x`` (N, in) and ``w`` (out, in)."""
    x_shape, w_shape = _dims(x_shape), _dims(w_shape)
    if len(x_shape) != 2 or len(w_shape) != 2 or x_shape[1] != w_shape[1]:
        raise ShapeError("linear", f"input {x_shape} and weight {w_shape}: expected (N, in) and (out, in)")
    return x_shape[0], w_shape[0]


def global_avg_pool(x_shape):
    n, c, _, _ = _nchw("global_avg_pool", x_shape)
    return n, c


def same(op: str, a_shape, b_shape):
    """Element-wise binary ops (add, maximum): both shapes equal."""
    if _dims(a_shape) != _dims(b_shape):
        raise ShapeError(op, f"shapes {_dims(a_shape)} and {_dims(b_shape)} differ")
    return _dims(a_shape)


def mul_channel(x_shape, s_shape):
    n, c, h, w = _nchw("mul_channel", x_shape)
    if _dims(s_shape) != (n, c):
        raise ShapeError("mul_channel", f"gates of shape {_dims(s_shape)} for a feature map {(n, c, h, w)}; "
                                        f"expected {(n, c)}")
    return n, c, h, w


def mul_pixel(x_shape, q_shape):
    n, c, h, w = _nchw("mul_pixel", x_shape)
    if _dims(q_shape) != (n, 1, h, w):
        raise ShapeError("mul_pixel", f"gate map of shape {_dims(q_shape)} for a feature map {(n, c, h, w)}; "
                                      f"expected {(n, 1, h, w)}")
    return n, c, h, w


def upsample_nearest2x(x_shape):
    n, c, h, w = _nchw("upsample_nearest2x", x_shape)
    return n, c, 2 * h, 2 * w


def concat_channels(shapes: Sequence):
    shapes = [_nchw("concat_channels", s) for s in shapes]
    if not shapes or len({(s[0], s[2], s[3]) for s in shapes}) != 1:
        raise ShapeError("concat_channels", f"N, H and W must agree; got {[_fmt(s) for s in shapes]}")
    n, _, h, w = shapes[0]
    return n, sum(s[1] for s in shapes), h, w


def prelu(x_shape, slope_shape):
    """PReLU on a feature map: the input's shape; ``slope`` is one shared slope (1,) or one per channel (C,)."""
    n, c, h, w = _nchw("prelu", x_shape)
    if _dims(slope_shape) not in ((1,), (c,)):
        raise ShapeError("prelu", f"slope of shape {_dims(slope_shape)} for a feature map of {c} channels; "
                                  f"expected (1,) or ({c},)")
    return n, c, h, w


def channel_shuffle(x_shape, groups):
    """ShuffleNet's channel shuffle: the input's shape; its C must be divisible by ``groups``."""
    n, c, h, w = _nchw("channel_shuffle", x_shape)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or c % groups:
        raise ShapeError("channel_shuffle", f"{c} channels cannot be split into groups={groups!r} "
                                            f"(C must be divisible by groups)")
    return n, c, h, w


def elementwise(x_shape):
    """A unary elementwise op (an activation, batch norm): the input's shape."""
    return _dims(x_shape)


def excite(z_shape, w1_shape, w2_shape):
    """(N, C) output of SE's excitation FC -> act -> FC -> gate on a squeezed ``z`` (N, C), with
    ``w1`` (hidden, C) and ``w2`` (C, hidden)."""
    z_shape, w1_shape, w2_shape = _dims(z_shape), _dims(w1_shape), _dims(w2_shape)
    if len(z_shape) != 2 or len(w1_shape) != 2:
        raise ShapeError("excite", f"z {z_shape} and w1 {w1_shape}: expected (N, C) and (hidden, C)")
    c, hidden = z_shape[1], w1_shape[0]
    if w1_shape != (hidden, c) or w2_shape != (c, hidden):
        raise ShapeError("excite", f"z is (N, {c}); expected w1 ({hidden}, {c}) and w2 ({c}, {hidden}), "
                                   f"got {w1_shape} and {w2_shape}")
    return z_shape


def spatial_gate(x_shape, w_shape):
    """(N, 1, H, W) gate map of sSE's 1x1 conv C -> 1 (weight (1, C, 1, 1)) and sigmoid."""
    n, c, h, w = _nchw("spatial_gate", x_shape)
    if _dims(w_shape) != (1, c, 1, 1):
        raise ShapeError("spatial_gate", f"x has {c} channels; expected a (1, {c}, 1, 1) weight, got {_dims(w_shape)}")
    return n, 1, h, w


def ceil_pool_size_kept(size: int, kernel: int, stride: int, pad: int) -> int:
    """A ceil-mode pool's output size when a last window starting in the right padding is kept
    (OpenVINO's rule; PyTorch's, :func:`pool_output_size`, drops that window)."""
    return -(-(size + 2 * pad - kernel) // stride) + 1


def onednn_amx_one_column_conv(w_shape, stride, groups: int, out_shape=None) -> bool:
    """Whether a convolution is one that oneDNN's AMX bfloat16 kernel (run by PyTorch's CPU build
    and by OpenVINO) computes from uninitialised memory: a horizontal stride, a kernel wider than
    one column, not depthwise, and an output one column wide and two or more rows high
    (``out_shape``; ``None`` where the size is not known yet, as in a size-generic graph, where any
    size may be). The torch adapter and the ONNX recorder (``strided_conv_pad``) then run it one
    row and one column larger and slice those off."""
    kind = stride[1] > 1 and w_shape[3] > 1 and (groups == 1 or w_shape[1] > 1)
    return kind and (out_shape is None or (out_shape[3] == 1 and out_shape[2] >= 2))
