"""CUDA C kernels of the cupy backend, and the host-side maths that launches them.

Nothing here imports CuPy: the sources are plain strings, and the host-side
helpers (output shapes, launch geometry, argument packing, im2col index maths)
are pure Python/NumPy, so CI checks them on a machine with no GPU. The one
function that needs CuPy's NVRTC binding, :func:`compile_with_nvrtc`, imports it
when called.

Source layout. Every kernel is a ``template <typename T> __global__`` function
whose C parameter list is generated from :class:`KernelSpec.params`; the backend
packs launch arguments from the same list (:func:`pack_args`), so the Python side
and the C side cannot disagree on argument order or width. ``T`` is ``float`` or
``half_t`` (float16 storage); every kernel loads through ``load()`` and stores
through ``store()``, which widen to and narrow from float32, so all arithmetic
and accumulation is float32.

float16 without headers: ``cuda_fp16.h`` ships with the CUDA toolkit, not with
the NVRTC wheel, so a GPU box with only ``cupy-cuda13x`` + ``nvidia-cuda-nvrtc``
cannot include it. ``half_t`` is a 2-byte struct and the two conversions are the
PTX instructions ``cuda_fp16.hpp`` itself uses (``cvt.f32.f16``,
``cvt.rn.f16.f32``), so each source is a complete translation unit with no
``#include``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from se_multi import shapes
from se_multi.dtypes import canonical

# --------------------------------------------------------------------------- dtypes
#: compute dtype (a name of se_multi.dtypes.TABLE; exactly CupyBackend.dtypes) -> the C type ``T`` is instantiated with
CTYPES: dict[str, str] = {"float32": "float", "float16": "half_t"}


def ctype(dtype: str) -> str:
    """The kernel template argument for a compute dtype."""
    try:
        return CTYPES[canonical(dtype)]
    except (KeyError, TypeError):
        raise ValueError(f"cupy kernels support dtype {', '.join(CTYPES)}; got {dtype!r}") from None


#: activation/gate name -> the ``act`` code the kernels switch on (None = identity)
ACT_CODES: dict[str | None, int] = {
    None: 0, "relu": 1, "relu6": 2, "sigmoid": 3, "hard_sigmoid": 4, "hard_swish": 5,
}


def act_code(name: str | None) -> int:
    if name not in ACT_CODES:
        raise ValueError(f"unknown activation {name!r}; expected one of {tuple(k for k in ACT_CODES if k)}")
    return ACT_CODES[name]


#: scSE combine mode -> kernel code
SCSE_MODES: dict[str, int] = {"add": 0, "max": 1}

# --------------------------------------------------------------------------- CUDA C
PRELUDE = r"""
typedef long long idx_t;

// float16 storage without cuda_fp16.h (not in the NVRTC wheel): 2 bytes, converted by PTX.
struct __align__(2) half_t { unsigned short bits; };

__device__ __forceinline__ float load(const float* p, idx_t i) { return p[i]; }
__device__ __forceinline__ float load(const half_t* p, idx_t i) {
    float f;
    unsigned short h = p[i].bits;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ void store(float* p, idx_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(half_t* p, idx_t i, float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    p[i].bits = h;
}

// codes: ACT_CODES in cupy_kernels.py
__device__ __forceinline__ float activate(float x, int act) {
    switch (act) {
        case 1: return x > 0.f ? x : (x == x ? 0.f : x);           // relu, NaN propagates
        case 2: return fminf(fmaxf(x, 0.f), 6.f);                   // relu6
        case 3: return 1.f / (1.f + expf(-x));                      // sigmoid
        case 4: return fminf(fmaxf(x + 3.f, 0.f), 6.f) / 6.f;      // hard_sigmoid (PyTorch)
        case 5: return x * fminf(fmaxf(x + 3.f, 0.f), 6.f) / 6.f;  // hard_swish
        default: return x;
    }
}

// NaN-propagating max, as torch.maximum / max_pool2d
__device__ __forceinline__ float nan_max(float a, float b) { return (a != a || a > b) ? a : b; }

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;  // every lane holds the sum
}

// Sum over a block whose size is a multiple of 32 (launch helpers guarantee it); result in every thread.
__device__ __forceinline__ float block_sum(float v, float* warp_sums) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    v = lane < nwarps ? warp_sums[lane] : 0.f;
    v = warp_sum(v);
    __syncthreads();  // warp_sums is reused by the caller's next row
    return v;
}

#define GRID_STRIDE(i, n) \
    for (idx_t i = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (idx_t)blockDim.x * gridDim.x)
"""


@dataclass(frozen=True)
class KernelSpec:
    """One templated kernel: its C parameters ``(ctype, name)`` and its body."""

    name: str
    params: tuple[tuple[str, str], ...]
    body: str
    doc: str = ""

    def source(self) -> str:
        params = ", ".join(f"{c} {n}" for c, n in self.params)
        return (f"// {self.doc}\ntemplate <typename T>\n__global__ void {self.name}({params}) {{{self.body}}}\n")


def _p(spec: str) -> tuple[tuple[str, str], ...]:
    """``"const T* x, idx_t n"`` -> ``(("const T*", "x"), ("idx_t", "n"))``."""
    out = []
    for part in spec.split(","):
        ctype_, _, pname = part.strip().rpartition(" ")
        out.append((ctype_.strip(), pname))
    return tuple(out)


KERNELS: dict[str, KernelSpec] = {k.name: k for k in (
    KernelSpec(
        "bias_act",
        _p("const T* x, const T* bias, T* out, idx_t n, idx_t hw, int channels, int has_bias, int act"),
        r"""
    GRID_STRIDE(i, n) {
        float v = load(x, i);
        if (has_bias) v += load(bias, (i / hw) % channels);
        store(out, i, activate(v, act));
    }
""", "conv epilogue / activation: out = act(x + bias[c]) over NCHW, one pass (out may alias x)"),
    KernelSpec(
        "se_squeeze",
        _p("const T* x, T* out, idx_t planes, int hw"),
        r"""
    __shared__ float warp_sums[32];
    for (idx_t p = blockIdx.x; p < planes; p += gridDim.x) {
        const idx_t base = p * hw;
        float acc = 0.f;
        for (int i = threadIdx.x; i < hw; i += blockDim.x) acc += load(x, base + i);
        acc = block_sum(acc, warp_sums);
        if (threadIdx.x == 0) store(out, p, acc / (float)hw);
    }
""", "SE squeeze: one block per (n, c) plane, mean over H*W, warp-shuffle reduction"),
    KernelSpec(
        "se_excite",
        _p("const T* z, const T* w1, const T* b1, const T* w2, const T* b2, T* out, "
           "int channels, int hidden, int has_b1, int has_b2, int act, int gate"),
        r"""
    // one block per sample; z row and hidden vector live in shared memory (float32)
    extern __shared__ float smem[];
    float* zs = smem;
    float* hs = smem + channels;
    const idx_t n = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int c = threadIdx.x; c < channels; c += blockDim.x) zs[c] = load(z, n * channels + c);
    __syncthreads();
    // FC1 + bias + act: one warp per hidden unit, lanes stride the (contiguous) weight row
    for (int r = warp; r < hidden; r += nwarps) {
        float acc = 0.f;
        for (int c = lane; c < channels; c += 32) acc += load(w1, (idx_t)r * channels + c) * zs[c];
        acc = warp_sum(acc);
        if (lane == 0) hs[r] = activate(acc + (has_b1 ? load(b1, r) : 0.f), act);
    }
    __syncthreads();
    // FC2 + bias + gate
    for (int c = warp; c < channels; c += nwarps) {
        float acc = 0.f;
        for (int r = lane; r < hidden; r += 32) acc += load(w2, (idx_t)c * hidden + r) * hs[r];
        acc = warp_sum(acc);
        if (lane == 0) store(out, n * channels + c, activate(acc + (has_b2 ? load(b2, c) : 0.f), gate));
    }
""", "SE excitation: FC -> act -> FC -> gate on (N, C), biases fused, hidden vector in shared memory"),
    KernelSpec(
        "se_scale",
        _p("const T* x, const T* s, T* out, idx_t n, idx_t hw"),
        r"""
    GRID_STRIDE(i, n) store(out, i, load(x, i) * load(s, i / hw));
""", "SE scale: out = x * s[n, c]"),
    KernelSpec(
        "se_scale_add_relu",
        _p("const T* x, const T* s, const T* residual, T* out, idx_t n, idx_t hw"),
        r"""
    GRID_STRIDE(i, n) store(out, i, activate(load(x, i) * load(s, i / hw) + load(residual, i), 1));
""", "end of an SE residual unit: out = relu(x * s[n, c] + residual), one read of each, one write"),
    KernelSpec(
        "add_relu",
        _p("const T* a, const T* b, T* out, idx_t n"),
        r"""
    GRID_STRIDE(i, n) store(out, i, activate(load(a, i) + load(b, i), 1));
""", "end of a plain residual unit: out = relu(a + b)"),
    KernelSpec(
        "sse_gate",
        _p("const T* x, const T* w, const T* bias, T* out, idx_t pixels, idx_t hw, int channels, int has_bias"),
        r"""
    // one thread per (n, pixel); neighbouring threads read neighbouring pixels of each channel
    GRID_STRIDE(i, pixels) {
        const idx_t n = i / hw, p = i - n * hw;
        const idx_t base = n * channels * hw + p;
        float acc = has_bias ? load(bias, 0) : 0.f;
        for (int c = 0; c < channels; ++c) acc += load(w, c) * load(x, base + (idx_t)c * hw);
        store(out, i, activate(acc, 3));
    }
""", "sSE gate: per-pixel channel dot (1x1 conv C -> 1) + bias + sigmoid"),
    KernelSpec(
        "scse_combine",
        _p("const T* x, const T* s, const T* q, T* out, idx_t n, idx_t hw, idx_t chw, int mode"),
        r"""
    GRID_STRIDE(i, n) {
        const float v = load(x, i);
        const idx_t pixel = (i / chw) * hw + i % hw;
        const float a = v * load(s, i / hw), b = v * load(q, pixel);
        store(out, i, mode == 0 ? a + b : nan_max(a, b));
    }
""", "scSE combine: out = x*s[n,c] + x*q[n,h,w] (mode 0) or their max (mode 1), one pass"),
    KernelSpec(
        "depthwise_conv_act",
        _p("const T* x, const T* w, const T* bias, T* out, int batch, int channels, int height, int width, "
           "int out_h, int out_w, int kernel_h, int kernel_w, int stride_h, int stride_w, int pad_top, "
           "int pad_left, int dilation_h, int dilation_w, int has_bias, int act"),
        r"""
    const idx_t total = (idx_t)batch * channels * out_h * out_w;
    GRID_STRIDE(i, total) {
        const int ow = i % out_w;
        const idx_t t = i / out_w;
        const int oh = t % out_h;
        const idx_t plane = t / out_h;  // n * channels + c
        const int c = plane % channels;
        float acc = has_bias ? load(bias, c) : 0.f;
        for (int kh = 0; kh < kernel_h; ++kh) {
            const int ih = oh * stride_h - pad_top + kh * dilation_h;
            if (ih < 0 || ih >= height) continue;
            for (int kw = 0; kw < kernel_w; ++kw) {
                const int iw = ow * stride_w - pad_left + kw * dilation_w;
                if (iw < 0 || iw >= width) continue;
                acc += load(w, ((idx_t)c * kernel_h + kh) * kernel_w + kw)
                     * load(x, (plane * height + ih) * width + iw);
            }
        }
        store(out, i, activate(acc, act));
    }
""", "depthwise k x k conv (stride, padding, dilation) with bias + activation fused"),
    KernelSpec(
        "im2col",
        _p("const T* x, T* out, int batch, int channels, int height, int width, int out_h, int out_w, "
           "int kernel_h, int kernel_w, int stride_h, int stride_w, int pad_top, int pad_left, "
           "int dilation_h, int dilation_w"),
        r"""
    // out[n, (c*kernel_h + kh)*kernel_w + kw, oh*out_w + ow]; im2col_indices() is this formula in NumPy
    const idx_t length = (idx_t)out_h * out_w;
    const idx_t rows = (idx_t)channels * kernel_h * kernel_w;
    const idx_t total = (idx_t)batch * rows * length;
    GRID_STRIDE(i, total) {
        const idx_t l = i % length;
        const idx_t t = i / length;
        const int r = t % rows;
        const idx_t n = t / rows;
        const int kw = r % kernel_w, kh = (r / kernel_w) % kernel_h, c = r / (kernel_w * kernel_h);
        const int oh = l / out_w, ow = l % out_w;
        const int ih = oh * stride_h - pad_top + kh * dilation_h;
        const int iw = ow * stride_w - pad_left + kw * dilation_w;
        const bool inside = ih >= 0 && ih < height && iw >= 0 && iw < width;
        store(out, i, inside ? load(x, ((n * channels + c) * height + ih) * width + iw) : 0.f);
    }
""", "im2col for k x k convs: (N, C*kh*kw, Ho*Wo) columns for one batched cuBLAS GEMM"),
    KernelSpec(
        "max_pool",
        _p("const T* x, T* out, int batch, int channels, int height, int width, int out_h, int out_w, "
           "int kernel_h, int kernel_w, int stride_h, int stride_w, int pad_h, int pad_w"),
        r"""
    const idx_t total = (idx_t)batch * channels * out_h * out_w;
    GRID_STRIDE(i, total) {
        const int ow = i % out_w;
        const idx_t t = i / out_w;
        const int oh = t % out_h;
        const idx_t plane = t / out_h;
        const int h0 = oh * stride_h - pad_h, w0 = ow * stride_w - pad_w;
        const int h1 = min(h0 + kernel_h, height), w1 = min(w0 + kernel_w, width);
        float m = __int_as_float(0xff800000);  // -inf: padding never wins
        for (int ih = max(h0, 0); ih < h1; ++ih)
            for (int iw = max(w0, 0); iw < w1; ++iw)
                m = nan_max(load(x, (plane * height + ih) * width + iw), m);
        store(out, i, m);
    }
""", "max pool, PyTorch semantics (implicit -inf padding, ceil_mode via the output size)"),
    KernelSpec(
        "avg_pool",
        _p("const T* x, T* out, int batch, int channels, int height, int width, int out_h, int out_w, "
           "int kernel_h, int kernel_w, int stride_h, int stride_w, int pad_h, int pad_w, "
           "int count_include_pad"),
        r"""
    const idx_t total = (idx_t)batch * channels * out_h * out_w;
    GRID_STRIDE(i, total) {
        const int ow = i % out_w;
        const idx_t t = i / out_w;
        const int oh = t % out_h;
        const idx_t plane = t / out_h;
        // PyTorch's divisor: the window clipped to input+padding, or to the input alone
        int h0 = oh * stride_h - pad_h, w0 = ow * stride_w - pad_w;
        int h1 = min(h0 + kernel_h, height + pad_h), w1 = min(w0 + kernel_w, width + pad_w);
        const int padded_size = (h1 - h0) * (w1 - w0);
        h0 = max(h0, 0); w0 = max(w0, 0); h1 = min(h1, height); w1 = min(w1, width);
        float acc = 0.f;
        for (int ih = h0; ih < h1; ++ih)
            for (int iw = w0; iw < w1; ++iw) acc += load(x, (plane * height + ih) * width + iw);
        const int divisor = count_include_pad ? padded_size : (h1 - h0) * (w1 - w0);
        store(out, i, acc / (float)divisor);
    }
""", "average pool, PyTorch divisor rules (count_include_pad, ceil_mode overhang never counts)"),
)}


def kernel_source(name: str) -> str:
    """One kernel as a complete translation unit (prelude + that kernel)."""
    return PRELUDE + KERNELS[name].source()


#: all kernels in one translation unit: what the backend loads as one ``cupy.RawModule``
SOURCE: str = PRELUDE + "\n".join(k.source() for k in KERNELS.values())

#: NVRTC options the backend and the compile check both use (arch is added per target)
NVRTC_OPTIONS: tuple[str, ...] = ("--std=c++17",)


def name_expression(name: str, dtype: str) -> str:
    """The template instantiation NVRTC is asked to emit, e.g. ``se_squeeze<half_t>``."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; known: {', '.join(KERNELS)}")
    return f"{name}<{ctype(dtype)}>"


def name_expressions(dtypes: Sequence[str] = tuple(CTYPES), names: Sequence[str] | None = None) -> list[str]:
    return [name_expression(n, d) for n in (names or KERNELS) for d in dtypes]


# --------------------------------------------------------------------------- argument packing
_INT32 = np.iinfo(np.int32)


def pack_args(name: str, dtype: str, args: Mapping[str, Any]) -> tuple:
    """Launch arguments for kernel ``name`` in its C parameter order, each in its C width.

    Pointers must be C-contiguous arrays of the compute dtype (a wrong one would be
    read as garbage on the device, so it is refused here); ``idx_t`` becomes int64
    and ``int`` int32 (CuPy would pass a bare Python int as 64 bits).
    """
    spec = KERNELS[name]
    names = [p for _, p in spec.params]
    if set(args) != set(names):
        missing, extra = sorted(set(names) - set(args)), sorted(set(args) - set(names))
        raise TypeError(f"kernel {name}: expected arguments {names}; missing {missing}, unexpected {extra}")
    want = np.dtype(dtype)
    packed = []
    for c_type, pname in spec.params:
        value = args[pname]
        if c_type.endswith("*"):
            if getattr(value, "dtype", None) != want or not value.flags.c_contiguous:
                got = getattr(value, "dtype", type(value).__name__)
                raise ValueError(f"kernel {name}: argument {pname} must be a C-contiguous {want} array; got {got}")
            packed.append(value)
        elif c_type == "idx_t":
            packed.append(np.int64(value))
        elif c_type == "int":
            if not _INT32.min <= int(value) <= _INT32.max:
                raise ValueError(f"kernel {name}: argument {pname}={value} does not fit in a C int")
            packed.append(np.int32(value))
        else:  # a new parameter type needs a rule here
            raise TypeError(f"kernel {name}: no packing rule for C type {c_type!r} ({pname})")
    return tuple(packed)


# --------------------------------------------------------------------------- launch geometry
THREADS = 256
#: grid-stride kernels cover any size with at most this many blocks
MAX_BLOCKS = 65535
#: CUDA's gridDim.x limit, for one-block-per-row kernels
MAX_GRID_X = 2**31 - 1
#: static shared memory every device has per block
SHARED_MEMORY_BYTES = 48 * 1024


def launch_config(n_elements: int, threads: int = THREADS, max_blocks: int = MAX_BLOCKS) -> tuple[tuple[int], tuple[int]]:
    """``(grid, block)`` for a grid-stride elementwise kernel over ``n_elements``."""
    if n_elements < 0 or threads <= 0 or threads % 32 or threads > 1024:
        raise ValueError(f"launch_config: need n_elements >= 0 and threads a multiple of 32 <= 1024; "
                         f"got n_elements={n_elements}, threads={threads}")
    blocks = max(1, min(-(-n_elements // threads), max_blocks))
    return (blocks,), (threads,)


def reduction_threads(length: int, max_threads: int = THREADS) -> int:
    """Block size for a one-block-per-row reduction: the power of two >= ``length``, in [32, max]."""
    return int(min(max_threads, max(32, 1 << max(0, math.ceil(math.log2(max(length, 1)))))))


def squeeze_config(planes: int, hw: int) -> tuple[tuple[int], tuple[int]]:
    """One block per (n, c) plane (grid-strided past gridDim.x's limit)."""
    return (max(1, min(planes, MAX_GRID_X)),), (reduction_threads(hw),)


def excite_config(batch: int, channels: int, hidden: int) -> tuple[tuple[int], tuple[int], int]:
    """``(grid, block, shared_bytes)``: one block per sample, z and the hidden vector in shared memory."""
    shared = 4 * (channels + hidden)
    if shared > SHARED_MEMORY_BYTES:
        raise ValueError(f"excite: channels + hidden = {channels + hidden} floats exceed the "
                         f"{SHARED_MEMORY_BYTES // 4}-float shared-memory budget of one block")
    return (max(1, batch),), (THREADS,), shared


# --------------------------------------------------------------------------- shapes and index maths
def conv_algorithm(w_shape, groups: int) -> str:
    """Which path a conv takes: ``"gemm_1x1"``, ``"depthwise"`` or ``"im2col_gemm"``."""
    o, cg, kh, kw = w_shape
    if kh == kw == 1:
        return "gemm_1x1"
    if cg == 1 and o == groups:
        return "depthwise"
    return "im2col_gemm"


def im2col_indices(x_shape, kernel, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)) -> np.ndarray:
    """The ``im2col`` kernel's index formula in NumPy: for every element of the
    ``(N, C*kh*kw, Ho*Wo)`` column matrix, the flat NCHW index it reads, or -1 (padding).
    Gathering ``x.ravel()`` with it is exactly what the kernel writes."""
    n, c, h, w = x_shape
    kh, kw = kernel
    _, _, ho, wo = shapes.conv2d(x_shape, (1, c, kh, kw), stride, padding, dilation)
    length, rows = ho * wo, c * kh * kw
    i = np.arange(n * rows * length, dtype=np.int64)  # the kernel's flat thread index
    l, t = i % length, i // length
    r, nn = t % rows, t // rows
    kwi, khi, ci = r % kw, (r // kw) % kh, r // (kw * kh)
    oh, ow = l // wo, l % wo
    ih = oh * stride[0] - padding[0] + khi * dilation[0]
    iw = ow * stride[1] - padding[2] + kwi * dilation[1]
    inside = (ih >= 0) & (ih < h) & (iw >= 0) & (iw < w)
    src = ((nn * c + ci) * h + ih) * w + iw
    return np.where(inside, src, -1).reshape(n, rows, length)


def grouped_gemm(xp, w, cols, groups: int = 1):
    """Conv weights ``(O, Cg, kh, kw)`` times columns ``(N, C*kh*kw, L)`` -> ``(N, O, L)``, one
    batched GEMM (cuBLAS under CuPy). ``xp`` is the array module (cupy, or numpy on CPU), so
    the CPU tests run this very function."""
    n, rows, length = cols.shape
    o = w.shape[0]
    if groups == 1:
        return xp.matmul(w.reshape(o, rows), cols)
    wg = w.reshape(groups, o // groups, rows // groups)
    return xp.matmul(wg, cols.reshape(n, groups, rows // groups, length)).reshape(n, o, length)


def conv1x1_columns(xp, x, out_hw, stride=(1, 1), padding=(0, 0, 0, 0)):
    """A 1x1 conv needs no im2col: the NCHW map is already the ``(N, C, H*W)`` column
    matrix; stride is a slice (one copy only when strided or padded)."""
    if any(padding):
        pt, pb, pl, pr = padding
        x = xp.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ho, wo = out_hw
    if tuple(x.shape[2:]) != (ho, wo):
        x = xp.ascontiguousarray(x[:, :, : (ho - 1) * stride[0] + 1 : stride[0], : (wo - 1) * stride[1] + 1 : stride[1]])
    return x.reshape(x.shape[0], x.shape[1], ho * wo)


def pool_window(out_index, size, kernel, stride, pad, count_include_pad=True):
    """The pool kernels' window maths along one axis, in NumPy: ``(start, end, divisor_extent)``
    of the input rows each output row reads (PyTorch's rule, as in the ``avg_pool`` kernel)."""
    o = np.asarray(out_index)
    start = o * stride - pad
    end = np.minimum(start + kernel, size + pad)
    padded = end - start
    start, end = np.maximum(start, 0), np.minimum(end, size)
    return start, end, padded if count_include_pad else end - start


# --------------------------------------------------------------------------- NVRTC compile check
class KernelCompileError(RuntimeError):
    """NVRTC rejected a kernel source; the message carries NVRTC's log."""


@dataclass(frozen=True)
class CompiledKernels:
    arch: str
    binary: bytes  # PTX for compute_XX, CUBIN for sm_XX
    lowered_names: dict[str, str]
    log: str


def compile_with_nvrtc(source: str, arch: str = "compute_80", names: Sequence[str] = (),
                       options: Sequence[str] = NVRTC_OPTIONS, filename: str = "se_multi_kernels.cu") -> CompiledKernels:
    """Compile ``source`` with NVRTC alone (no driver, no device): what CI runs.

    ``arch`` is ``compute_XX`` (PTX) or ``sm_XX`` (CUBIN). ``names`` are template
    instantiations to emit (``"se_squeeze<float>"``); their mangled names come back.
    CuPy's own ``compile_using_nvrtc`` is not usable here: it queries the device.
    """
    from cupy_backends.cuda.libs import nvrtc  # the NVRTC binding; loads libnvrtc via cuda-pathfinder

    prog = nvrtc.createProgram(source, filename, [], [])
    try:
        for expr in names:
            nvrtc.addNameExpression(prog, expr)
        try:
            nvrtc.compileProgram(prog, [f"--gpu-architecture={arch}", *options])
        except nvrtc.NVRTCError as exc:
            raise KernelCompileError(f"NVRTC failed for {arch}: {exc}\n{nvrtc.getProgramLog(prog)}") from None
        binary = nvrtc.getCUBIN(prog) if arch.startswith("sm_") else nvrtc.getPTX(prog)
        lowered = {expr: nvrtc.getLoweredName(prog, expr) for expr in names}
        return CompiledKernels(arch, bytes(binary), lowered, nvrtc.getProgramLog(prog))
    finally:
        nvrtc.destroyProgram(prog)
