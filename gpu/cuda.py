"""Fused CuPy kernel: feasibility, weighted score and top-k in one pass, per task group.

The xp path (``kernels.combined_scores`` then ``select.topk_rows``) writes a [T, N]
score chunk to device memory and sorts it; on a GPU that is memory-bound. This
RawKernel never writes a score: one thread block per group walks all machines, each
thread keeps its own sorted top-k in registers, and the block merges those k at a time.
It computes exactly the formulas of ``kernels`` (same float32 operation order, so the
results agree to float rounding) and stays tested against them (tests/gpu).

Only imported on the CuPy path; importing this module does not import cupy.
"""

from __future__ import annotations

import functools

from cellsched.cellstate import resources as res
from cellsched.cellstate.errors import InvalidInputError

from .kernels import GPU_DIM, MachineArrays

MAX_K = 32
BLOCK = 256

_SOURCE = r"""
#define R %(R)d
#define GPU_DIM %(GPU_DIM)d
#define MAX_K %(MAX_K)d
#define BLOCK %(BLOCK)d
#define NEG_INF __int_as_float((int)0xff800000u)  // -inf without math headers (NVRTC)

__device__ __forceinline__ bool better(float sa, long long ia, float sb, long long ib) {
    // Higher score first; equal scores: the lower machine index first; -1 (none) last.
    if (sa != sb) return sa > sb;
    if (ia < 0) return false;
    if (ib < 0) return true;
    return ia < ib;
}

extern "C" __global__ void fused_topk(
    const long long* __restrict__ free_t,     // [R, N]
    const float* __restrict__ free_ft,        // [R, N]
    const float* __restrict__ inv_cap_t,      // [R, N]
    const float* __restrict__ n_dims,         // [N]
    const bool* __restrict__ schedulable,     // [N]
    const long long* __restrict__ req_i,      // [T, R]
    const bool* __restrict__ masks,           // [M, N] eligibility masks
    const int* __restrict__ mask_id,          // [T], -1: no mask
    const float* __restrict__ w,              // [5] weights in SCORER_ORDER
    const int N, const int T, const int K,
    float* __restrict__ out_score,            // [T, K]
    long long* __restrict__ out_idx)          // [T, K]
{
    const int t = blockIdx.x;
    if (t >= T) return;
    long long rq[R];
    float rf[R];
    for (int r = 0; r < R; ++r) { rq[r] = req_i[t * R + r]; rf[r] = (float)rq[r]; }
    const int mid = mask_id[t];
    const float w_least = w[0], w_most = w[1], w_bal = w[2], w_dot = w[3], w_gpu = w[4];

    float best_s[MAX_K];
    long long best_i[MAX_K];
    for (int j = 0; j < MAX_K; ++j) { best_s[j] = NEG_INF; best_i[j] = -1; }

    for (int n = threadIdx.x; n < N; n += BLOCK) {
        if (!schedulable[n]) continue;
        if (mid >= 0 && !masks[(long long)mid * N + n]) continue;
        bool ok = true;
        for (int r = 0; r < R; ++r) ok = ok && (free_t[(long long)r * N + n] >= rq[r]);
        if (!ok) continue;

        const float nd = n_dims[n];
        const float inv_d = nd > 0.0f ? 1.0f / fmaxf(nd, 1.0f) : 0.0f;
        float left[R], inv[R], fr[R];
        float sum_left = 0.0f, dot = 0.0f;
        for (int r = 0; r < R; ++r) {
            inv[r] = inv_cap_t[(long long)r * N + n];
            fr[r] = free_ft[(long long)r * N + n];
            left[r] = (fr[r] - rf[r]) * inv[r];
            sum_left += left[r];
            dot += (rf[r] * inv[r]) * (fr[r] * inv[r]);
        }
        const float least = sum_left * inv_d;
        const float most = nd > 0.0f ? 1.0f - least : 0.0f;
        float s = w_least * least + w_most * most + w_dot * (dot * inv_d);
        if (w_bal != 0.0f) {
            float used_sum = 0.0f;
            for (int r = 0; r < R; ++r) used_sum += inv[r] > 0.0f ? 1.0f - left[r] : 0.0f;
            const float mean = used_sum * inv_d;
            float var = 0.0f;
            for (int r = 0; r < R; ++r) {
                if (inv[r] > 0.0f) { const float d = (1.0f - left[r]) - mean; var += d * d; }
            }
            s += w_bal * (nd > 0.0f ? 1.0f - sqrtf(var * inv_d) : 0.0f);
        }
        if (w_gpu != 0.0f) {
            const float ig = inv[GPU_DIM], fg = fr[GPU_DIM], g = rf[GPU_DIM];
            const float gs = ig > 0.0f ? (g > 0.0f ? 1.0f - (fg - g) * ig : 1.0f - fg * ig) : 1.0f;
            s += w_gpu * gs;
        }
        if (s > best_s[K - 1]) {  // scanning upwards: an equal score never beats an earlier index
            int j = K - 1;
            while (j > 0 && s > best_s[j - 1]) { best_s[j] = best_s[j - 1]; best_i[j] = best_i[j - 1]; --j; }
            best_s[j] = s; best_i[j] = n;
        }
    }

    // Block merge: K rounds of an argmax over every thread's current head.
    __shared__ float sh_s[BLOCK];
    __shared__ long long sh_i[BLOCK];
    __shared__ int sh_t[BLOCK];
    int head = 0;
    for (int round = 0; round < K; ++round) {
        sh_s[threadIdx.x] = head < K ? best_s[head] : NEG_INF;
        sh_i[threadIdx.x] = head < K ? best_i[head] : -1;
        sh_t[threadIdx.x] = threadIdx.x;
        __syncthreads();
        for (int stride = BLOCK / 2; stride > 0; stride >>= 1) {
            if (threadIdx.x < stride) {
                const int o = threadIdx.x + stride;
                if (better(sh_s[o], sh_i[o], sh_s[threadIdx.x], sh_i[threadIdx.x])) {
                    sh_s[threadIdx.x] = sh_s[o]; sh_i[threadIdx.x] = sh_i[o]; sh_t[threadIdx.x] = sh_t[o];
                }
            }
            __syncthreads();
        }
        const float ws = sh_s[0];
        const long long wi = sh_i[0];
        const int wt = sh_t[0];
        if (threadIdx.x == 0) {
            out_score[(long long)t * K + round] = ws;
            out_idx[(long long)t * K + round] = ws == NEG_INF ? -1 : wi;
        }
        if (threadIdx.x == wt) ++head;
        __syncthreads();
    }
}
"""


@functools.cache
def _kernel():
    import cupy  # noqa: PLC0415 - only on the GPU path

    code = _SOURCE % {"R": res.NUM_RESOURCES, "GPU_DIM": GPU_DIM, "MAX_K": MAX_K, "BLOCK": BLOCK}
    return cupy.RawKernel(code, "fused_topk")


def fused_topk(cp, m: MachineArrays, req_i, masks, mask_id, weights: tuple[float, ...], k: int):
    """Top-k (scores float32[T, k], machine indices int64[T, k], -1 / -inf where fewer
    than k machines are feasible) of ``kernels.combined_scores`` for every group.

    ``masks`` is bool[M, N] (at least one row); ``mask_id`` int32[T] picks a row per group
    (-1: none).
    """
    if not 1 <= k <= MAX_K:
        raise InvalidInputError(f"k must be in 1..{MAX_K}")
    t, n = int(req_i.shape[0]), int(m.free_t.shape[1])
    out_s = cp.empty((t, k), dtype=cp.float32)
    out_i = cp.empty((t, k), dtype=cp.int64)
    if t == 0:
        return out_s, out_i
    args = (
        cp.ascontiguousarray(m.free_t, dtype=cp.int64),
        cp.ascontiguousarray(m.free_ft, dtype=cp.float32),
        cp.ascontiguousarray(m.inv_cap_t, dtype=cp.float32),
        cp.ascontiguousarray(m.n_dims, dtype=cp.float32),
        cp.ascontiguousarray(m.schedulable, dtype=cp.bool_),
        cp.ascontiguousarray(req_i, dtype=cp.int64),
        cp.ascontiguousarray(masks, dtype=cp.bool_),
        cp.ascontiguousarray(mask_id, dtype=cp.int32),
        cp.asarray(weights, dtype=cp.float32),
        cp.int32(n),
        cp.int32(t),
        cp.int32(k),
        out_s,
        out_i,
    )
    _kernel()((t,), (BLOCK,), args)
    return out_s, out_i
