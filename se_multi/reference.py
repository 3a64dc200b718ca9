"""The NumPy reference: every op's definition, NCHW, float32 or float64.

This module is the gold standard the conformance suite compares each backend to
(in float64), and the numpy backend is a thin adapter over it. Semantics follow
PyTorch exactly (padding, ``ceil_mode``, pooling divisors, hard-sigmoid), because
the checkpoints se_multi loads were trained under those semantics.

Convolution is im2col (``sliding_window_view``) + one BLAS matmul per conv,
grouped convs as one batched matmul; a depthwise conv sums its k*k taps, each a
whole-tensor multiply-add. There is no Python loop over pixels or channels.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from se_multi import shapes


# --------------------------------------------------------------------------- convolution
def conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    _, _, ho, wo = shapes.conv2d(x.shape, w.shape, stride, padding, dilation, groups)
    sh, sw = stride
    dh, dw = dilation
    pt, pb, pl, pr = padding
    if any(padding):
        x = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    og = o // groups

    if kh == kw == 1:
        xs = x[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw]
        if groups == 1:
            out = np.matmul(w.reshape(o, c), xs.reshape(n, c, ho * wo))
        else:
            xg = xs.reshape(n, groups, cg, ho * wo)
            out = np.matmul(w.reshape(groups, og, cg), xg)
        out = out.reshape(n, o, ho, wo)
    elif cg == 1 and og == 1:
        # depthwise: one whole-tensor multiply-add per kernel tap
        out = np.zeros((n, o, ho, wo), dtype=np.result_type(x, w))
        for i in range(kh):
            for j in range(kw):
                tap = x[:, :, i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw]
                out += tap * w[:, 0, i, j][None, :, None, None]
    else:
        win = sliding_window_view(x, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
        win = win[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, ::dh, ::dw]  # N C Ho Wo KH KW
        # cols: (G, N*Ho*Wo, Cg*KH*KW) -- one copy; weights (G, Cg*KH*KW, Og)
        cols = win.reshape(n, groups, cg, ho, wo, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6)
        cols = cols.reshape(groups, n * ho * wo, cg * kh * kw)
        wg = w.reshape(groups, og, cg * kh * kw).transpose(0, 2, 1)
        out = np.matmul(cols, wg)  # G, N*Ho*Wo, Og
        out = out.reshape(groups, n, ho, wo, og).transpose(1, 0, 4, 2, 3).reshape(n, o, ho, wo)
    if b is not None:
        out = out + b.reshape(1, o, 1, 1)
    return np.ascontiguousarray(out)


def conv_transpose2d(x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0)):
    """PyTorch's ``conv_transpose2d`` (groups 1, dilation 1, no output padding), the adjoint of
    :func:`conv2d`: every input pixel scatters ``x[n, :, y, x] @ w`` (a (C_out, KH, KW) patch) onto
    the output at ``(y * sh, x * sw)``; ``padding`` (top, bottom, left, right) then crops the full
    ``(H - 1) * sh + KH`` x ``(W - 1) * sw + KW`` map. One GEMM for every patch, then one strided
    whole-tensor add per kernel tap. ``w`` is (C_in, C_out, KH, KW), PyTorch's ``ConvTranspose2d`` layout."""
    n, o, ho, wo = shapes.conv_transpose2d(x.shape, w.shape, stride, padding)
    _, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    (sh, sw), (pt, _, pl, _) = stride, padding
    patches = np.matmul(w.reshape(c, o * kh * kw).T, x.reshape(n, c, h * wd)).reshape(n, o, kh, kw, h, wd)
    full = np.zeros((n, o, (h - 1) * sh + kh, (wd - 1) * sw + kw), dtype=patches.dtype)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i : i + (h - 1) * sh + 1 : sh, j : j + (wd - 1) * sw + 1 : sw] += patches[:, :, i, j]
    out = full[:, :, pt : pt + ho, pl : pl + wo]
    if b is not None:
        out = out + b.reshape(1, o, 1, 1)
    return np.ascontiguousarray(out)


def linear(x, w, b=None):
    out = x @ w.T
    return out + b if b is not None else out


def batch_norm(x, mean, var, weight, bias, eps):
    inv = weight / np.sqrt(var + eps)
    return (x - mean.reshape(1, -1, 1, 1)) * inv.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


#: float64 values per block of the fold into a narrower dtype: the block's float64 products stay
#: in cache and are rounded straight into the result
_FOLD_BLOCK = 1 << 16


def fold_batch_norm(w, b, mean, var, gamma, beta, eps, dtype=np.float64):
    """Fold inference BN into the preceding conv/linear: returns ``(w', b')``, computed in float64
    and rounded once to ``dtype`` (default float64).

    ``bn(conv(x, w) + b) = conv(x, w * k) + (b - mean) * k + beta`` with ``k = gamma / sqrt(var + eps)``.
    A narrower ``dtype`` gives the same values as folding in float64 and then converting
    (``astype(dtype)``): each product is the same float64 operation, rounded once. It never
    holds the float64 copy of the weights that the conversion would read (SENet-154 binds
    106M folded weights).
    """
    dtype = np.dtype(dtype)
    k = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    b = np.zeros(np.shape(w)[0]) if b is None else np.asarray(b, np.float64)
    b2 = (b - np.asarray(mean, np.float64)) * k + np.asarray(beta, np.float64)
    if dtype == np.float64:
        w2 = np.array(w, dtype=np.float64)  # a copy, scaled in place: one float64 array, not two
        w2 *= k.reshape((-1,) + (1,) * (w2.ndim - 1))
        return w2, b2
    w = np.asarray(w)
    out = np.empty(w.shape, dtype)
    rows_in, rows_out = w.reshape(w.shape[0], -1), out.reshape(w.shape[0], -1)
    step = max(1, _FOLD_BLOCK // max(1, rows_in.shape[1]))
    block = np.empty((min(step, rows_in.shape[0]), rows_in.shape[1]))
    for start in range(0, rows_in.shape[0], step):
        part = block[: min(step, rows_in.shape[0] - start)]
        part[...] = rows_in[start : start + step]
        part *= k[start : start + step, None]
        rows_out[start : start + step] = part
    return out, b2.astype(dtype)


# --------------------------------------------------------------------------- activations
def relu(x):
    return np.maximum(x, 0)


def relu6(x):
    return np.clip(x, 0, 6)


def sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def hard_sigmoid(x):
    return relu6(x + 3) / 6


def hard_swish(x):
    return x * relu6(x + 3) / 6


# --------------------------------------------------------------------------- pooling
def _pool_windows(x, kernel, stride, padding, ceil_mode, fill, op="max_pool2d"):
    n, c, h, w = x.shape
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    _, _, ho, wo = shapes.pool2d(x.shape, kernel, stride, padding, ceil_mode, op)
    # right/bottom extra so every (ceil-mode) window is complete
    eh, ew = shapes.pool_overhang(h, ho, kh, sh, ph), shapes.pool_overhang(w, wo, kw, sw, pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)), constant_values=fill)
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw]
    return win, (ho, wo), (eh, ew)


def max_pool2d(x, kernel, stride, padding=(0, 0), ceil_mode=False):
    win, _, _ = _pool_windows(x, kernel, stride, padding, ceil_mode, -np.inf)
    return np.ascontiguousarray(win.max(axis=(-2, -1)).astype(x.dtype, copy=False))



def max_pool2d_indices(x, kernel, stride):
    """PyTorch's ``max_pool2d(x, kernel, stride, return_indices=True)`` (no padding, floor sizes):
    ``(values, indices)``, each index the flat position ``h * W + w`` of its maximum in its
    (n, c) plane, int64; of equal maxima the first in the window's row-major scan (PyTorch's)."""
    (_, _, ho, wo), _ = shapes.max_pool2d_indices(x.shape, kernel, stride)
    (kh, kw), (sh, sw), width = kernel, stride, x.shape[3]
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw]
    flat = win.reshape(*win.shape[:4], kh * kw)
    k = flat.argmax(axis=-1)  # the first maximum in scan order
    values = np.take_along_axis(flat, k[..., None], axis=-1)[..., 0]
    rows = np.arange(ho)[:, None] * sh + k // kw
    cols = np.arange(wo)[None, :] * sw + k % kw
    return np.ascontiguousarray(values), (rows * width + cols).astype(np.int64)


def max_unpool2d(x, indices, output_size):
    """PyTorch's ``max_unpool2d``: a zero (N, C, H, W) map, ``output_size`` = (H, W), with each value
    of ``x`` put at its flat index ``h * W + w`` of its (n, c) plane."""
    n, c, h, w = shapes.max_unpool2d(x.shape, np.shape(indices), output_size)
    idx = np.asarray(indices).reshape(n, c, -1).astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= h * w):
        raise ValueError(f"max_unpool2d: indices must lie in [0, {h * w}) for output_size {(h, w)}; "
                         f"got [{idx.min()}, {idx.max()}]")
    out = np.zeros((n, c, h * w), dtype=x.dtype)
    np.put_along_axis(out, idx, x.reshape(n, c, -1), axis=2)
    return out.reshape(n, c, h, w)

def avg_pool2d(x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
    n, c, h, w = x.shape
    win, _, (eh, ew) = _pool_windows(x, kernel, stride, padding, ceil_mode, 0, "avg_pool2d")
    total = win.sum(axis=(-2, -1))
    # divisor: elements inside input+padding (count_include_pad) or inside the input alone;
    # the ceil-mode overhang past the padded input never counts (PyTorch).
    ph, pw = padding
    mask = np.zeros((1, 1, h + 2 * ph + eh, w + 2 * pw + ew), dtype=x.dtype)
    if count_include_pad:
        mask[..., : h + 2 * ph, : w + 2 * pw] = 1
    else:
        mask[..., ph : ph + h, pw : pw + w] = 1
    mwin = sliding_window_view(mask, tuple(kernel), axis=(2, 3))
    mwin = mwin[:, :, : (total.shape[2] - 1) * stride[0] + 1 : stride[0], : (total.shape[3] - 1) * stride[1] + 1 : stride[1]]
    return total / mwin.sum(axis=(-2, -1))


def global_avg_pool(x):
    return x.mean(axis=(2, 3))


# --------------------------------------------------------------------------- elementwise / shape
def add(a, b):
    return a + b


def maximum(a, b):
    return np.maximum(a, b)


def mul_channel(x, s):
    return x * s[:, :, None, None]


def mul_pixel(x, q):
    return x * q


def upsample_nearest2x(x):
    return x.repeat(2, axis=2).repeat(2, axis=3)


def concat_channels(xs):
    return np.concatenate(list(xs), axis=1)


def center_crop(x, like):
    """``x`` cropped to ``like``'s height and width from its centre, as the FC-DenseNet code's
    ``center_crop`` does: rows from ``(H - h) // 2``, columns from ``(W - w) // 2`` (``like``'s
    values are not read)."""
    top, left, h, w = shapes.center_crop_window(x.shape, like.shape)
    return np.ascontiguousarray(x[:, :, top : top + h, left : left + w])


def prelu(x, slope):
    """PyTorch's PReLU: ``x`` where ``x > 0``, else ``slope * x``; ``slope`` is (1,) or (C,)."""
    shapes.prelu(x.shape, slope.shape)
    return np.where(x > 0, x, x * slope.reshape(1, -1, 1, 1))


def channel_shuffle(x, groups):
    """ShuffleNet's channel shuffle: (N, g, C/g, H, W) -> transpose the group axes -> (N, C, H, W)."""
    n, c, h, w = shapes.channel_shuffle(x.shape, groups)
    return np.ascontiguousarray(x.reshape(n, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w))


# --------------------------------------------------------------------------- fused ops
# The definitions of the fused ops, written out on the primitives above (the op table's
# ``reference``); ``Backend``'s defaults compose the same primitives on a backend.
#: the activations and gates an op may name (``act=``, ``gate=``), each one of the functions above
ACTIVATIONS = ("relu", "relu6", "sigmoid", "hard_sigmoid", "hard_swish")


def activation(name, x):
    """The activation or gate called ``name`` (``None``: identity)."""
    if name is None:
        return x
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")
    return globals()[name](x)


def conv2d_act(x, w, b, act, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    return activation(act, conv2d(x, w, b, stride, padding, dilation, groups))


def squeeze(x):
    return global_avg_pool(x)


def excite(z, w1, b1, w2, b2, act="relu", gate="sigmoid"):
    return activation(gate, linear(activation(act, linear(z, w1, b1)), w2, b2))


def scale(x, s):
    return mul_channel(x, s)


def scale_add_relu(x, s, residual):
    return relu(add(mul_channel(x, s), residual))


def add_relu(a, b):
    return relu(add(a, b))


def spatial_gate(x, w, b):
    return sigmoid(conv2d(x, w, b))


def scse(x, s, q, mode="add"):
    cse, sse = mul_channel(x, s), mul_pixel(x, q)
    if mode not in ("add", "max"):
        raise ValueError(f"scSE mode must be 'add' or 'max'; got {mode!r}")
    return add(cse, sse) if mode == "add" else maximum(cse, sse)


# --------------------------------------------------------------------------- channel rounding
def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor`` (timm's ``make_divisible``,
    torchvision's ``_make_divisible`` with ``round_limit=0.9``): never below ``min_value``
    and never more than ``1 - round_limit`` below ``v``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def reduced_channels(channels: int, reduction: float = 16, divisor: int = 1, round_limit: float = 0.0) -> int:
    """SE bottleneck width ``C_r``. ``divisor=1`` is the paper's ``C // r`` (floored, at least 1)
    as the Caffe/Cadene layout does it; timm's SE-ResNets use ``divisor=8, round_limit=0``."""
    if divisor <= 1:
        return max(1, int(channels // reduction))
    return make_divisible(channels / reduction, divisor, round_limit=round_limit)


__all__ = [name for name in dir() if not name.startswith("_") and name not in ("annotations", "np", "shapes",
                                                                               "sliding_window_view")]
