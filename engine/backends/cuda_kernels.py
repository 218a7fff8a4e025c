"""The CuPy backend's fused CUDA kernels, as complete CUDA C++ sources.

Every kernel is an `extern "C" __global__` function in one source per element type (float
or double, by text substitution), loaded with `cupy.RawModule`: no CuPy code fragments,
so tests/test_cuda_kernels.py compiles exactly these strings with NVRTC in CI, without a
GPU or CuPy. A module is compiled once per type and its functions kept (`function`), never
per call. 16-bit floats have no kernels of their own: the engine computes them in float32
(`wide`) anyway, and NVRTC's PyPI wheel ships no cuda_fp16.h to check such sources with.

Arithmetic that must match the CPU engine op for op (Adam) uses the `_rn` intrinsics, so
NVRTC never contracts a multiply and an add into one FMA whatever the build options.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

# Most tensors one Adam launch covers: the table of pointers and ends is a kernel
# argument, and kernel arguments are limited to 4 KiB.
ADAM_TENSORS = 128
ADAM_TABLE = np.dtype(
    [
        ("param", "<u8", (ADAM_TENSORS,)),
        ("grad", "<u8", (ADAM_TENSORS,)),
        ("end", "<i8", (ADAM_TENSORS,)),
        ("count", "<i8"),
    ]
)
BLOCK = 256  # threads per block everywhere; the block reductions assume a multiple of 32
# bias_act's `act` argument: the activation of a fused linear, by name
ACTIVATIONS = {"relu": 0, "gelu": 1, "silu": 2, "tanh": 3}

_TYPES: dict[str, dict[str, str]] = {
    "float": {
        "MUL": "__fmul_rn",
        "ADD": "__fadd_rn",
        "SUB": "__fsub_rn",
        "DIV": "__fdiv_rn",
        "SQRT": "__fsqrt_rn",
        "EXP": "expf",
        "LOG": "logf",
        "NORMCDF": "normcdff",
        "TANH": "tanhf",
        "FMAX": "fmaxf",
    },
    "double": {
        "MUL": "__dmul_rn",
        "ADD": "__dadd_rn",
        "SUB": "__dsub_rn",
        "DIV": "__ddiv_rn",
        "SQRT": "__dsqrt_rn",
        "EXP": "exp",
        "LOG": "log",
        "NORMCDF": "normcdf",
        "TANH": "tanh",
        "FMAX": "fmax",
    },
}

_BODY = r"""
#define BLOCK 256
#define ADAM_TENSORS 128
// NVRTC has no math.h, so no INFINITY or NAN: the float bit patterns, widened exactly.
#define NEG_INF ((T)__int_as_float(0xff800000))
#define QNAN ((T)__int_as_float(0x7fc00000))

// All threads of a block get the sum / max of v; sh holds 32 values of scratch.
__device__ T block_sum(T v, T* sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();  // sh may still be read from a previous call
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        v = threadIdx.x < (blockDim.x >> 5) ? sh[threadIdx.x] : (T)0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (threadIdx.x == 0) sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

__device__ T block_max(T v, T* sh) {
    for (int o = 16; o > 0; o >>= 1) v = FMAX(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        v = threadIdx.x < (blockDim.x >> 5) ? sh[threadIdx.x] : NEG_INF;
        for (int o = 16; o > 0; o >>= 1) v = FMAX(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (threadIdx.x == 0) sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

// Philox4x32-10 (Salmon et al., SC'11): 4 random words from a 128-bit counter and a
// 64-bit key, so any element of any draw is computed where it is needed.
__device__ uint4 philox(unsigned long long index, unsigned long long offset,
                        unsigned long long seed) {
    unsigned int c0 = (unsigned int)index, c1 = (unsigned int)(index >> 32);
    unsigned int c2 = (unsigned int)offset, c3 = (unsigned int)(offset >> 32);
    unsigned int k0 = (unsigned int)seed, k1 = (unsigned int)(seed >> 32);
    for (int r = 0; r < 10; ++r) {
        unsigned int hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        unsigned int hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return make_uint4(c0, c1, c2, c3);
}

// Uniforms in [0, 1) on the grid of 2**-24 (float32) or 2**-53 (from two words, float64),
// as NumPy's draws.
__device__ float uniform24(unsigned int w) { return (float)(w >> 8) * 5.9604644775390625e-8f; }
__device__ double uniform53(unsigned int a, unsigned int b) {
    return (double)(((unsigned long long)(a >> 5) << 26) + (b >> 6)) * 1.1102230246251565e-16;
}

struct AdamTable {
    unsigned long long param[ADAM_TENSORS];
    unsigned long long grad[ADAM_TENSORS];
    long long end[ADAM_TENSORS];
    long long count;
};

// One Adam/AdamW step over up to ADAM_TENSORS parameters, op for op as
// engine/optim/adam.py's flat update. Element i of the flat state belongs to the tensor
// whose end is the first above i. decay: 0 none, 1 decoupled (p *= decay_factor),
// 2 coupled (g += p * decay_factor).
extern "C" __global__ void adam_update_T(
    const AdamTable table, T* exp_avg, T* exp_avg_sq, T* max_sq, long long total,
    int maximize, int decay, T decay_factor, int small, T w, T one_minus_w, T beta2,
    T one_minus_beta2, T bc2_sqrt, T eps, T neg_step_size) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int lo = 0, hi = (int)table.count - 1;
        while (lo < hi) {
            int mid = (lo + hi) >> 1;
            if (i < table.end[mid]) hi = mid; else lo = mid + 1;
        }
        long long j = i - (lo ? table.end[lo - 1] : 0);
        T* param = (T*)table.param[lo];
        T g = ((const T*)table.grad[lo])[j];
        T p = param[j];
        if (maximize) g = -g;
        if (decay == 1) p = MUL(p, decay_factor);
        else if (decay == 2) g = ADD(MUL(p, decay_factor), g);
        T m = exp_avg[i], v = exp_avg_sq[i];
        T t = SUB(g, m);
        if (small) {
            t = MUL(t, w);
            m = ADD(m, t);
        } else {
            t = MUL(t, one_minus_w);
            m = SUB(g, t);
        }
        v = MUL(v, beta2);
        t = MUL(g, one_minus_beta2);
        t = MUL(t, g);
        v = ADD(v, t);
        T source = v;
        if (max_sq) {
            T mx = max_sq[i];
            if (v > mx || v != v) mx = v;  // NumPy's maximum: NaN wins
            max_sq[i] = mx;
            source = mx;
        }
        T denom = SQRT(source);
        denom = DIV(denom, bc2_sqrt);
        denom = ADD(denom, eps);
        T update = DIV(MUL(m, neg_step_size), denom);
        param[j] = ADD(p, update);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
    }
}

// Cross-entropy of (rows, C) logits against class indices, one block per row: the
// row's logsumexp, and its loss term (0 when ignored, NaN for a class out of range,
// where a host-side check would have to wait for the GPU).
extern "C" __global__ void cross_entropy_forward_T(
    const T* x, const long long* target, const bool* keep, long long C, T* lse, T* terms) {
    __shared__ T sh[32];
    const T* row = x + blockIdx.x * C;
    T m = NEG_INF;
    for (long long j = threadIdx.x; j < C; j += blockDim.x) m = FMAX(m, row[j]);
    m = block_max(m, sh);
    T s = 0;
    for (long long j = threadIdx.x; j < C; j += blockDim.x) s += EXP(row[j] - m);
    s = block_sum(s, sh);
    if (threadIdx.x == 0) {
        T log_s = LOG(s);
        lse[blockIdx.x] = m + log_s;
        long long t = target[blockIdx.x];
        T term = 0;
        if (keep[blockIdx.x]) term = (t < 0 || t >= C) ? QNAN : -((row[t] - m) - log_s);
        terms[blockIdx.x] = term;
    }
}

// (softmax - onehot) * grow * wt per element; rows not kept get exactly 0.
extern "C" __global__ void cross_entropy_backward_T(
    const T* x, const T* lse, const long long* target, const bool* keep, const T* grow,
    long long grow_stride, long long total, long long C, T* gx) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long r = i / C;
        T scale = keep[r] ? grow[r * grow_stride] : (T)0;
        T p = EXP(x[i] - lse[r]);
        gx[i] = (p - (i - r * C == target[r] ? (T)1 : (T)0)) * scale;
    }
}

// layer_norm over (rows, N), one block per row: xhat = (x - mean) * rstd, y = xhat * w + b
// (either optional), as the CPU engine computes it (two passes, biased variance).
extern "C" __global__ void layer_norm_forward_T(
    const T* x, const T* w, const T* b, long long N, T eps, T* y, T* xhat, T* rstd) {
    __shared__ T sh[32];
    const T* row = x + blockIdx.x * N;
    T s = 0;
    for (long long j = threadIdx.x; j < N; j += blockDim.x) s += row[j];
    T mean = block_sum(s, sh) / (T)N;
    T q = 0;
    for (long long j = threadIdx.x; j < N; j += blockDim.x) {
        T c = row[j] - mean;
        q += c * c;
    }
    T r = (T)1 / SQRT(block_sum(q, sh) / (T)N + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (long long j = threadIdx.x; j < N; j += blockDim.x) {
        T h = (row[j] - mean) * r;
        xhat[blockIdx.x * N + j] = h;
        T v = w ? h * w[j] : h;
        y[blockIdx.x * N + j] = b ? v + b[j] : v;
    }
}

// dx = (gh - mean(gh) - xhat * mean(gh * xhat)) * rstd with gh = g * w, one block per row.
extern "C" __global__ void layer_norm_backward_T(
    const T* g, const T* xhat, const T* rstd, const T* w, long long N, T* gx) {
    __shared__ T sh[32];
    long long base = blockIdx.x * N;
    T s1 = 0, s2 = 0;
    for (long long j = threadIdx.x; j < N; j += blockDim.x) {
        T gh = w ? g[base + j] * w[j] : g[base + j];
        s1 += gh;
        s2 += gh * xhat[base + j];
    }
    T m1 = block_sum(s1, sh) / (T)N;
    T m2 = block_sum(s2, sh) / (T)N;
    T r = rstd[blockIdx.x];
    for (long long j = threadIdx.x; j < N; j += blockDim.x) {
        T gh = w ? g[base + j] * w[j] : g[base + j];
        gx[base + j] = ((gh - m1) - xhat[base + j] * m2) * r;
    }
}

// Partial column sums of g * xhat (dgamma) and g (dbeta): block (x, y) sums columns
// 32x..32x+31 over the rows y, y + gridDim.y, ... into row y of the (gridDim.y, N)
// outputs, which the caller sums over (a few rows, not thousands).
extern "C" __global__ void layer_norm_weight_grad_T(
    const T* g, const T* xhat, long long rows, long long N, T* dw, T* db) {
    __shared__ T sw[8][33];
    __shared__ T sb[8][33];
    long long col = blockIdx.x * 32 + (threadIdx.x & 31);
    int lane_row = threadIdx.x >> 5;  // 8 row lanes of 32 columns in a block of 256
    T aw = 0, ab = 0;
    if (col < N) {
        for (long long r = blockIdx.y * 8 + lane_row; r < rows; r += gridDim.y * 8) {
            T gv = g[r * N + col];
            aw += gv * xhat[r * N + col];
            ab += gv;
        }
    }
    sw[lane_row][threadIdx.x & 31] = aw;
    sb[lane_row][threadIdx.x & 31] = ab;
    __syncthreads();
    if (lane_row == 0 && col < N) {
        for (int k = 1; k < 8; ++k) {
            aw += sw[k][threadIdx.x];
            ab += sb[k][threadIdx.x];
        }
        dw[blockIdx.y * N + col] = aw;
        db[blockIdx.y * N + col] = ab;
    }
}

// Exact GELU: y = x * Phi(x), keeping Phi(x) for the backward.
extern "C" __global__ void gelu_forward_T(const T* x, long long n, T* y, T* cdf) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T v = x[i], c = NORMCDF(v);
        cdf[i] = c;
        y[i] = v * c;
    }
}

// g * (Phi(x) + x * phi(x))
extern "C" __global__ void gelu_backward_T(
    const T* g, const T* x, const T* cdf, long long n, T* gx) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T v = x[i];
        T pdf = EXP((T)-0.5 * v * v) * (T)0.3989422804014327;
        gx[i] = g[i] * (cdf[i] + v * pdf);
    }
}

// SiLU: y = x * s with s = sigmoid(x) kept for the backward (0 where exp(-x) overflows).
extern "C" __global__ void silu_forward_T(const T* x, long long n, T* y, T* sig) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T v = x[i], s = (T)1 / ((T)1 + EXP(-v));
        sig[i] = s;
        y[i] = v * s;
    }
}

// g * s * (1 + x * (1 - s))
extern "C" __global__ void silu_backward_T(
    const T* g, const T* x, const T* sig, long long n, T* gx) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T s = sig[i];
        gx[i] = g[i] * (s * ((T)1 + x[i] * ((T)1 - s)));
    }
}

// Bias + activation over a (rows, cols) GEMM output y, in place: y = act(y + b[i % cols])
// (b optional), act by the codes of ACTIVATIONS. aux, when given, gets act'(y + b) for
// gelu and silu, all their backward reads; relu and tanh read their output (y) instead.
extern "C" __global__ void bias_act_forward_T(
    T* y, const T* b, long long n, long long cols, int act, T* aux) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T v = y[i];
        if (b) v += b[i % cols];
        T out, d = 0;
        if (act == ACT_RELU) {
            out = v < (T)0 ? (T)0 : v;  // NaN stays NaN, as NumPy's maximum keeps it
        } else if (act == ACT_GELU) {
            T c = NORMCDF(v);
            d = c + v * (EXP((T)-0.5 * v * v) * (T)0.3989422804014327);
            out = v * c;
        } else if (act == ACT_SILU) {
            T s = (T)1 / ((T)1 + EXP(-v));
            d = s * ((T)1 + v * ((T)1 - s));
            out = v * s;
        } else {
            out = TANH(v);
        }
        y[i] = out;
        if (aux) aux[i] = d;
    }
}

// g * act'(input) from bias_act_forward's aux (gelu, silu) or output (relu, tanh).
extern "C" __global__ void bias_act_backward_T(
    const T* g, const T* aux, long long n, int act, T* gx) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T a = aux[i];
        T d = act == ACT_RELU ? (a > (T)0 ? (T)1 : (T)0) : act == ACT_TANH ? (T)1 - a * a : a;
        gx[i] = g[i] * d;
    }
}

// Dropout: keep where a float32 uniform u >= p (element i of the draw (seed, offset)),
// scaled by 1 / (1 - p); writes the scaled mask, and y = x * mask when x is given.
extern "C" __global__ void dropout_T(
    const T* x, long long n, unsigned long long seed, unsigned long long offset, float p,
    T scale, T* mask, T* y) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T m = uniform24(philox(i, offset, seed).x) >= p ? scale : (T)0;
        mask[i] = m;
        if (x) y[i] = x[i] * m;
    }
}

// rand / randn on the device, element i of the draw (seed, offset): kind 0 uniform
// low + span * u (u on the grid of 2**-bits when bits > 0, for 16-bit floats), kind 1
// normal mean + span * z by Box-Muller.
extern "C" __global__ void random_T(
    long long n, unsigned long long seed, unsigned long long offset, int kind, int bits,
    T low, T span, T* out) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        uint4 r = philox(i, offset, seed);
        T u;
        if (bits > 0) {
            u = (T)(r.x >> (32 - bits)) * (T)ldexpf(1.0f, -bits);
        } else if (sizeof(T) == 8) {
            u = (T)uniform53(r.x, r.y);
        } else {
            u = (T)uniform24(r.x);
        }
        if (kind == 0) {
            out[i] = low + span * u;
        } else {
            T u2 = sizeof(T) == 8 ? (T)uniform53(r.z, r.w) : (T)uniform24(r.z);
            T radius = SQRT((T)-2 * LOG((T)1 - u));  // 1 - u is in (0, 1]: no log(0)
            out[i] = low + span * radius * cos((T)6.283185307179586 * u2);
        }
    }
}

// randint on the device: element i of the draw (seed, offset) is low + w % span for the
// 64-bit word w of its Philox block, as PyTorch's random64 % range: the modulo bias is
// at most span / 2**64, under 2**-32 for any span below 2**32. T is unused: one kernel
// serves every integer draw, taken from the float module.
extern "C" __global__ void randint_T(
    long long n, unsigned long long seed, unsigned long long offset, long long low,
    unsigned long long span, long long* out) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        uint4 r = philox(i, offset, seed);
        unsigned long long w = ((unsigned long long)r.x << 32) | r.y;
        out[i] = low + (long long)(w % span);
    }
}
"""

# Every kernel of the source, by name before its type suffix.
KERNELS = (
    "adam_update",
    "cross_entropy_forward",
    "cross_entropy_backward",
    "layer_norm_forward",
    "layer_norm_backward",
    "layer_norm_weight_grad",
    "gelu_forward",
    "gelu_backward",
    "silu_forward",
    "silu_backward",
    "bias_act_forward",
    "bias_act_backward",
    "dropout",
    "random",
    "randint",
)


def source(ctype: str) -> str:
    """The complete CUDA source for element type `ctype` ("float" or "double")."""
    macros = "".join(f"#define {k} {v}\n" for k, v in _TYPES[ctype].items())
    macros += "".join(f"#define ACT_{k.upper()} {v}\n" for k, v in ACTIVATIONS.items())
    body = _BODY
    for name in KERNELS:
        body = body.replace(f" {name}_T(", f" {name}_{ctype}(")
    return f"typedef {ctype} T;\n{macros}{body}"


def ctype_of(dtype: Any) -> str | None:
    """The kernel type for a NumPy/CuPy dtype, or None where no kernel serves it."""
    return {"float32": "float", "float64": "double"}.get(np.dtype(dtype).name)


@functools.cache
def _module(ctype: str, device_index: int) -> Any:
    import cupy

    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=source(ctype))


@functools.cache
def function(name: str, ctype: str, device_index: int) -> Any:
    """The compiled kernel `name` for `ctype` on a device, built on first use and kept."""
    import cupy

    with cupy.cuda.Device(device_index):
        return _module(ctype, device_index).get_function(f"{name}_{ctype}")


def grid(n: int) -> tuple[int]:
    """Blocks for a grid-stride loop over n elements: enough to fill an H200 many times."""
    return (max(1, min((n + BLOCK - 1) // BLOCK, 132 * 64)),)
