// Causal multi-head latent attention (the attention part of Mla::forward / backward_input)
// with d_qk = d_nope + d_rope != d_v, in FP32 on CUDA cores, FlashAttention style:
//
//   S_ij = scale (q_i . k_j),  k_j = [k_nope_j (per head) | k_pe_j (shared by the heads)]
//   P = causal softmax(S) (j <= i),  o_i = sum_j P_ij v_j,  lse_i = m_i + log(sum_j exp(S_ij - m_i))
//
// Forward: one block per (query tile of 32, head, sequence); key tiles of 32 stream through
// shared memory with the online softmax (running max m, running sum l, rescaled o). Only
// lse is kept; P is recomputed in the backward as exp(S - lse).
// Backward, with D_i = sum_c do_ic o_ic (= sum_j dP_ij P_ij, the CPU's `dot`):
//   dP = do v^T,  dS = (P (dP - D)) scale,  dv_j = sum_i P_ij do_i,  dk_j = sum_i dS_ij q_i,
//   dq_i = sum_j dS_ij k_j
// in two kernels that each own their outputs (no atomics): one block per key tile computes
// dk, dv looping over the query tiles that see it; one block per query tile computes dq
// looping over its key tiles. The rope part of dk goes to a per-head scratch [N, H, d_rope]
// that a last kernel sums over the heads in order 0..H-1 into dk_pe.
//
// Thread layout (256 threads): a tile element (row r, column c) of S belongs to the 8 lanes
// of row r (tid / 8); each lane owns the float4 column groups 4 sub + 32 g (sub = tid % 8,
// g < 8) of the row's output vector, so head dimensions up to kMaxDim = 256 fit in 32
// registers per accumulator. Shared memory is read as float4 (head dims must be multiples
// of 4); rows are padded to a pitch of 4 mod 8 floats, so the 8 rows one quarter-warp reads
// fall on distinct banks.
#include "kernel_util.cuh"
#include "model_kernels.h"

namespace switchyard::trainer::gpu {

namespace {

constexpr int kTile = 32;
constexpr int kThreads = 256;
constexpr int kLanesPerRow = kThreads / kTile;  // 8
constexpr int kMaxDim = 256;
constexpr int kMaxCols = kMaxDim / kLanesPerRow;       // 32 accumulator columns per lane
constexpr int kVec = 4;                                // floats per shared-memory load
constexpr int kColGroups = kMaxCols / kVec;            // 8 float4 column groups per lane
constexpr int kEntries = kTile * kTile / kThreads;     // 4 S entries per thread
constexpr int kPitchS = kTile + 1;

struct Dims {
  int64_t T, H;
  int dn, dr, dv, dqk;
  int pq, pv;  // shared-memory pitches (floats) for q/k rows and v/do rows: 4 mod 8
  float scale;
  __host__ __device__ int64_t ldq() const { return H * dqk; }
  __host__ __device__ int64_t ldkv() const { return H * (dn + dv); }
  __host__ __device__ int64_t ldo() const { return H * dv; }
};

// dst[r, 0:cols] = src[(row0 + r) * ld, 0:cols] for r < kTile, zeros past `valid` rows.
__device__ void load_rows(float* dst, int pitch, const float* src, int64_t ld, int64_t row0, int valid, int cols) {
  for (int e = threadIdx.x; e < kTile * cols; e += blockDim.x) {
    const int r = e / cols, c = e % cols;
    dst[r * pitch + c] = r < valid ? src[(row0 + r) * ld + c] : 0.0f;
  }
}

// Keys of tile rows j0.. of head h: [k_nope | k_pe] into Ks, v into Vs (when Vs is set).
__device__ void load_keys(const Dims& d, const float* kv, const float* k_pe, int64_t b, int64_t h, int64_t j0,
                          float* Ks, float* Vs) {
  const int valid = int(min(int64_t(kTile), d.T - j0));
  const float* kv_rows = kv + b * d.T * d.ldkv() + h * (d.dn + d.dv);
  load_rows(Ks, d.pq, kv_rows, d.ldkv(), j0, valid, d.dn);
  load_rows(Ks + d.dn, d.pq, k_pe + b * d.T * d.dr, d.dr, j0, valid, d.dr);
  if (Vs) load_rows(Vs, d.pv, kv_rows + d.dn, d.ldkv(), j0, valid, d.dv);
}

__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// out[u] = a . rows[u * stride] (n terms each, summed in k order) for u < kEntries: one row
// of a against kEntries rows of a tile, reading each a[k] once. n, stride and the row
// starts are multiples of 4 floats (16-byte aligned shared memory).
__device__ __forceinline__ void dots_one_row(const float* a, const float* rows, int stride, int n,
                                             float (&out)[kEntries]) {
#pragma unroll
  for (int u = 0; u < kEntries; ++u) out[u] = 0;
  for (int k = 0; k < n; k += kVec) {
    const float4 x = load4(a + k);
#pragma unroll
    for (int u = 0; u < kEntries; ++u) {
      const float4 y = load4(rows + u * stride + k);
      out[u] += x.x * y.x;
      out[u] += x.y * y.y;
      out[u] += x.z * y.z;
      out[u] += x.w * y.w;
    }
  }
}

// The lane's first column of float4 group g.
__device__ __forceinline__ int col_of(int sub, int g) { return kVec * sub + kVec * kLanesPerRow * g; }

// acc[4 g + e] += p * row[col_of(sub, g) + e] over the lane's columns below n (n a multiple
// of 4, so a group is either whole or absent).
__device__ __forceinline__ void axpy_cols(float (&acc)[kMaxCols], float p, const float* row, int sub, int n) {
#pragma unroll
  for (int g = 0; g < kColGroups; ++g) {
    const int col = col_of(sub, g);
    if (col < n) {
      const float4 y = load4(row + col);
      acc[kVec * g] += p * y.x;
      acc[kVec * g + 1] += p * y.y;
      acc[kVec * g + 2] += p * y.z;
      acc[kVec * g + 3] += p * y.w;
    }
  }
}

// Reductions over the 8 lanes of one row (consecutive lanes of a warp).
__device__ __forceinline__ float row_max(float v) {
  for (int off = 1; off < kLanesPerRow; off *= 2) v = fmaxf(v, __shfl_xor_sync(detail::kFullMask, v, off));
  return v;
}
__device__ __forceinline__ float row_sum(float v) {
  for (int off = 1; off < kLanesPerRow; off *= 2) v += __shfl_xor_sync(detail::kFullMask, v, off);
  return v;
}

__global__ void __launch_bounds__(kThreads) attention_forward_kernel(Dims d, const float* __restrict__ q,
                                                                     const float* __restrict__ kv,
                                                                     const float* __restrict__ k_pe,
                                                                     float* __restrict__ o, float* __restrict__ lse) {
  extern __shared__ __align__(16) float smem[];
  float* Qs = smem;
  float* Ks = Qs + kTile * d.pq;
  float* Vs = Ks + kTile * d.pq;
  float* Ps = Vs + kTile * d.pv;
  const int64_t qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t i0 = qt * kTile;
  const int r = threadIdx.x / kLanesPerRow, sub = threadIdx.x % kLanesPerRow;
  const int64_t i = i0 + r;
  load_rows(Qs, d.pq, q + b * d.T * d.ldq() + h * d.dqk, d.ldq(), i0, int(min(int64_t(kTile), d.T - i0)), d.dqk);

  float m = -INFINITY, l = 0;
  float acc[kMaxCols];
#pragma unroll
  for (int u = 0; u < kMaxCols; ++u) acc[u] = 0;
  for (int64_t kt = 0; kt <= qt; ++kt) {
    const int64_t j0 = kt * kTile;
    __syncthreads();
    load_keys(d, kv, k_pe, b, h, j0, Ks, Vs);
    __syncthreads();
    float s[kEntries];
    dots_one_row(Qs + r * d.pq, Ks + sub * d.pq, kLanesPerRow * d.pq, d.dqk, s);
    float tile_max = -INFINITY;
#pragma unroll
    for (int u = 0; u < kEntries; ++u) {
      const int64_t j = j0 + sub + kLanesPerRow * u;
      s[u] = (j <= i && j < d.T) ? d.scale * s[u] : -INFINITY;
      tile_max = fmaxf(tile_max, s[u]);
    }
    const float m_new = fmaxf(m, row_max(tile_max));  // finite: key j0 <= i is always in the tile
    const float alpha = expf(m - m_new);
    float p_sum = 0;
#pragma unroll
    for (int u = 0; u < kEntries; ++u) {
      const float p = expf(s[u] - m_new);
      Ps[r * kPitchS + sub + kLanesPerRow * u] = p;
      p_sum += p;
    }
    l = l * alpha + row_sum(p_sum);
    m = m_new;
    __syncwarp();  // the row's 8 lanes are in this warp
#pragma unroll
    for (int u = 0; u < kMaxCols; ++u) acc[u] *= alpha;
    for (int jj = 0; jj < kTile; ++jj) axpy_cols(acc, Ps[r * kPitchS + jj], Vs + jj * d.pv, sub, d.dv);
  }
  if (i >= d.T) return;
  const float inv = 1.0f / l;
  float* out = o + (b * d.T + i) * d.ldo() + h * d.dv;
#pragma unroll
  for (int u = 0; u < kMaxCols; ++u) {
    const int col = col_of(sub, u / kVec) + u % kVec;
    if (col < d.dv) out[col] = acc[u] * inv;
  }
  if (sub == 0) lse[(b * d.H + h) * d.T + i] = m + logf(l);
}

// delta[b, h, i] = sum_c do[n, h, c] o[n, h, c], one warp per (token, head), grid-stride.
__global__ void attention_delta_kernel(Dims d, int64_t n_tokens, const float* __restrict__ o,
                                       const float* __restrict__ d_o, float* __restrict__ delta) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t w = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; w < n_tokens * d.H; w += warps) {
    const int64_t n = w / d.H, h = w % d.H;
    const float* a = o + n * d.ldo() + h * d.dv;
    const float* g = d_o + n * d.ldo() + h * d.dv;
    float s = 0;
    for (int c = lane; c < d.dv; c += 32) s += a[c] * g[c];
    s = detail::warp_sum(s);
    const int64_t b = n / d.T, i = n % d.T;
    if (lane == 0) delta[(b * d.H + h) * d.T + i] = s;
  }
}

// One block per (key tile, head, sequence): dk (nope part into dkv, rope part into the
// per-head scratch) and dv of its 32 keys. Lane (c = tid / 8, sub) owns key c.
__global__ void __launch_bounds__(kThreads) attention_dkv_kernel(Dims d, const float* __restrict__ q,
                                                                 const float* __restrict__ kv,
                                                                 const float* __restrict__ k_pe,
                                                                 const float* __restrict__ d_o,
                                                                 const float* __restrict__ lse,
                                                                 const float* __restrict__ delta,
                                                                 float* __restrict__ dkv, float* __restrict__ dk_pe_h) {
  extern __shared__ __align__(16) float smem[];
  float* Ks = smem;
  float* Qs = Ks + kTile * d.pq;
  float* Vs = Qs + kTile * d.pq;
  float* dOs = Vs + kTile * d.pv;
  float* Ps = dOs + kTile * d.pv;
  float* dSs = Ps + kTile * kPitchS;
  float* lse_s = dSs + kTile * kPitchS;
  float* delta_s = lse_s + kTile;
  const int64_t kt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t j0 = kt * kTile;
  const int c = threadIdx.x / kLanesPerRow, sub = threadIdx.x % kLanesPerRow;
  const int64_t j = j0 + c;
  load_keys(d, kv, k_pe, b, h, j0, Ks, Vs);
  float dk[kMaxCols], dv[kMaxCols];
#pragma unroll
  for (int u = 0; u < kMaxCols; ++u) dk[u] = dv[u] = 0;
  const int64_t num_q_tiles = (d.T + kTile - 1) / kTile;
  for (int64_t qt = kt; qt < num_q_tiles; ++qt) {
    const int64_t i0 = qt * kTile;
    const int valid = int(min(int64_t(kTile), d.T - i0));
    __syncthreads();
    load_rows(Qs, d.pq, q + b * d.T * d.ldq() + h * d.dqk, d.ldq(), i0, valid, d.dqk);
    load_rows(dOs, d.pv, d_o + b * d.T * d.ldo() + h * d.dv, d.ldo(), i0, valid, d.dv);
    if (threadIdx.x < kTile) {
      const bool ok = int(threadIdx.x) < valid;
      lse_s[threadIdx.x] = ok ? lse[(b * d.H + h) * d.T + i0 + threadIdx.x] : 0.0f;
      delta_s[threadIdx.x] = ok ? delta[(b * d.H + h) * d.T + i0 + threadIdx.x] : 0.0f;
    }
    __syncthreads();
    float s[kEntries], dp[kEntries];
    dots_one_row(Ks + c * d.pq, Qs + sub * d.pq, kLanesPerRow * d.pq, d.dqk, s);
    dots_one_row(Vs + c * d.pv, dOs + sub * d.pv, kLanesPerRow * d.pv, d.dv, dp);
#pragma unroll
    for (int u = 0; u < kEntries; ++u) {
      const int r = sub + kLanesPerRow * u;
      const int64_t i = i0 + r;
      float p = 0, ds = 0;
      if (i < d.T && j <= i) {
        p = expf(d.scale * s[u] - lse_s[r]);
        ds = p * (dp[u] - delta_s[r]) * d.scale;
      }
      Ps[r * kPitchS + c] = p;
      dSs[r * kPitchS + c] = ds;
    }
    __syncthreads();
    for (int rr = 0; rr < kTile; ++rr) {
      axpy_cols(dk, dSs[rr * kPitchS + c], Qs + rr * d.pq, sub, d.dqk);
      axpy_cols(dv, Ps[rr * kPitchS + c], dOs + rr * d.pv, sub, d.dv);
    }
  }
  if (j >= d.T) return;
  float* out = dkv + (b * d.T + j) * d.ldkv() + h * (d.dn + d.dv);
  float* out_pe = dk_pe_h + ((b * d.T + j) * d.H + h) * d.dr;
#pragma unroll
  for (int u = 0; u < kMaxCols; ++u) {
    const int col = col_of(sub, u / kVec) + u % kVec;
    if (col < d.dn) out[col] = dk[u];
    else if (col < d.dqk) out_pe[col - d.dn] = dk[u];
    if (col < d.dv) out[d.dn + col] = dv[u];
  }
}

// One block per (query tile, head, sequence): dq of its 32 queries. Lane (r = tid / 8, sub)
// owns query r.
__global__ void __launch_bounds__(kThreads) attention_dq_kernel(Dims d, const float* __restrict__ q,
                                                                const float* __restrict__ kv,
                                                                const float* __restrict__ k_pe,
                                                                const float* __restrict__ d_o,
                                                                const float* __restrict__ lse,
                                                                const float* __restrict__ delta,
                                                                float* __restrict__ dq) {
  extern __shared__ __align__(16) float smem[];
  float* Qs = smem;
  float* Ks = Qs + kTile * d.pq;
  float* dOs = Ks + kTile * d.pq;
  float* Vs = dOs + kTile * d.pv;
  float* dSs = Vs + kTile * d.pv;
  const int64_t qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t i0 = qt * kTile;
  const int r = threadIdx.x / kLanesPerRow, sub = threadIdx.x % kLanesPerRow;
  const int64_t i = i0 + r;
  const int valid = int(min(int64_t(kTile), d.T - i0));
  load_rows(Qs, d.pq, q + b * d.T * d.ldq() + h * d.dqk, d.ldq(), i0, valid, d.dqk);
  load_rows(dOs, d.pv, d_o + b * d.T * d.ldo() + h * d.dv, d.ldo(), i0, valid, d.dv);
  const float lse_r = i < d.T ? lse[(b * d.H + h) * d.T + i] : 0.0f;
  const float delta_r = i < d.T ? delta[(b * d.H + h) * d.T + i] : 0.0f;
  float acc[kMaxCols];
#pragma unroll
  for (int u = 0; u < kMaxCols; ++u) acc[u] = 0;
  for (int64_t kt = 0; kt <= qt; ++kt) {
    const int64_t j0 = kt * kTile;
    __syncthreads();
    load_keys(d, kv, k_pe, b, h, j0, Ks, Vs);
    __syncthreads();
    float s[kEntries], dp[kEntries];
    dots_one_row(Qs + r * d.pq, Ks + sub * d.pq, kLanesPerRow * d.pq, d.dqk, s);
    dots_one_row(dOs + r * d.pv, Vs + sub * d.pv, kLanesPerRow * d.pv, d.dv, dp);
#pragma unroll
    for (int u = 0; u < kEntries; ++u) {
      const int c = sub + kLanesPerRow * u;
      const int64_t j = j0 + c;
      float ds = 0;
      if (i < d.T && j <= i) {
        const float p = expf(d.scale * s[u] - lse_r);
        ds = p * (dp[u] - delta_r) * d.scale;
      }
      dSs[r * kPitchS + c] = ds;
    }
    __syncwarp();  // the row's 8 lanes are in this warp
    for (int cc = 0; cc < kTile; ++cc) axpy_cols(acc, dSs[r * kPitchS + cc], Ks + cc * d.pq, sub, d.dqk);
  }
  if (i >= d.T) return;
  float* out = dq + (b * d.T + i) * d.ldq() + h * d.dqk;
#pragma unroll
  for (int u = 0; u < kMaxCols; ++u) {
    const int col = col_of(sub, u / kVec) + u % kVec;
    if (col < d.dqk) out[col] = acc[u];
  }
}

// dk_pe[n, c] = sum_{h = 0..H-1} dk_pe_h[n, h, c] (heads in order).
__global__ void sum_heads_kernel(const float* __restrict__ per_head, int64_t n_tokens, int64_t H, int dr,
                                 float* __restrict__ dk_pe) {
  const int64_t total = n_tokens * dr;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = e / dr, c = e % dr;
    float s = 0;
    for (int64_t h = 0; h < H; ++h) s += per_head[(n * H + h) * dr + c];
    dk_pe[e] = s;
  }
}

Dims make_dims(const char* fn, const AttentionShape& s) {
  SY_GPU_REQUIRE(s.batch >= 1 && s.batch < 65536, fn, "batch = " << s.batch << " must be in [1, 65536)");
  SY_GPU_REQUIRE(s.seq_len >= 1, fn, "seq_len = " << s.seq_len << " must be >= 1");
  SY_GPU_REQUIRE(s.heads >= 1 && s.heads < 65536, fn, "heads = " << s.heads << " must be in [1, 65536)");
  SY_GPU_REQUIRE(s.d_nope >= 0 && s.d_rope >= 0 && s.d_nope + s.d_rope >= 1 && s.d_nope + s.d_rope <= kMaxDim, fn,
                 "d_nope = " << s.d_nope << " + d_rope = " << s.d_rope << " must be in [1, " << kMaxDim << "]");
  SY_GPU_REQUIRE(s.d_v >= 1 && s.d_v <= kMaxDim, fn, "d_v = " << s.d_v << " must be in [1, " << kMaxDim << "]");
  SY_GPU_REQUIRE((s.d_nope + s.d_rope) % kVec == 0 && s.d_v % kVec == 0, fn,
                 "d_nope + d_rope = " << s.d_nope + s.d_rope << " and d_v = " << s.d_v << " must be multiples of "
                                      << kVec);
  SY_GPU_REQUIRE(s.scale > 0 && s.scale < 1e30, fn, "scale = " << s.scale << " must be positive and finite");
  Dims d;
  d.T = s.seq_len;
  d.H = s.heads;
  d.dn = int(s.d_nope);
  d.dr = int(s.d_rope);
  d.dv = int(s.d_v);
  d.dqk = d.dn + d.dr;
  // Pitch = 4 mod 8 floats: 8 rows read as float4 by a quarter-warp hit distinct banks,
  // and every row start stays 16-byte aligned.
  d.pq = (d.dqk + 7) / 8 * 8 + 4;
  d.pv = (d.dv + 7) / 8 * 8 + 4;
  d.scale = static_cast<float>(s.scale);
  return d;
}

// Dynamic shared memory above the 48 KiB default needs an opt-in per kernel.
template <class Kernel>
void set_smem(Kernel kernel, size_t bytes, const char* what) {
  SY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
                what << ": " << bytes << " bytes of shared memory");
}

}  // namespace

void attention_forward(const AttentionShape& shape, const float* q, const float* kv, const float* k_pe, float* o,
                       float* lse, cuda::StreamHandle stream) {
  const Dims d = make_dims("attention_forward", shape);
  const size_t smem = sizeof(float) * (2 * kTile * d.pq + kTile * d.pv + kTile * kPitchS);
  set_smem(attention_forward_kernel, smem, "gpu::attention_forward");
  const dim3 grid(unsigned((d.T + kTile - 1) / kTile), unsigned(d.H), unsigned(shape.batch));
  attention_forward_kernel<<<grid, kThreads, smem, stream>>>(d, q, kv, k_pe, o, lse);
  SY_CUDA_CHECK_LAUNCH("gpu::attention_forward of batch " << shape.batch << " x seq " << d.T << " x heads " << d.H);
}

void attention_backward(const AttentionShape& shape, const float* q, const float* kv, const float* k_pe,
                        const float* o, const float* lse, const float* d_o, float* dq, float* dkv, float* dk_pe,
                        cuda::StreamHandle stream) {
  const Dims d = make_dims("attention_backward", shape);
  const int64_t n_tokens = shape.batch * d.T;
  detail::StreamScratch delta(size_t(n_tokens * d.H) * sizeof(float), stream, "gpu::attention_backward");
  detail::StreamScratch dk_pe_h(size_t(n_tokens * d.H * d.dr + 1) * sizeof(float), stream, "gpu::attention_backward");
  const int64_t warps = n_tokens * d.H;
  attention_delta_kernel<<<detail::grid_for(warps * 32, 256), 256, 0, stream>>>(d, n_tokens, o, d_o,
                                                                                delta.as<float>());
  SY_CUDA_CHECK_LAUNCH("gpu::attention_backward delta");

  const dim3 grid(unsigned((d.T + kTile - 1) / kTile), unsigned(d.H), unsigned(shape.batch));
  const size_t smem_dkv = sizeof(float) * (2 * kTile * d.pq + 2 * kTile * d.pv + 2 * kTile * kPitchS + 2 * kTile);
  set_smem(attention_dkv_kernel, smem_dkv, "gpu::attention_backward");
  attention_dkv_kernel<<<grid, kThreads, smem_dkv, stream>>>(d, q, kv, k_pe, d_o, lse, delta.as<float>(), dkv,
                                                             dk_pe_h.as<float>());
  SY_CUDA_CHECK_LAUNCH("gpu::attention_backward dk, dv");
  const size_t smem_dq = sizeof(float) * (2 * kTile * d.pq + 2 * kTile * d.pv + kTile * kPitchS);
  set_smem(attention_dq_kernel, smem_dq, "gpu::attention_backward");
  attention_dq_kernel<<<grid, kThreads, smem_dq, stream>>>(d, q, kv, k_pe, d_o, lse, delta.as<float>(), dq);
  SY_CUDA_CHECK_LAUNCH("gpu::attention_backward dq");
  if (d.dr > 0) {
    sum_heads_kernel<<<detail::grid_for(n_tokens * d.dr, 256), 256, 0, stream>>>(dk_pe_h.as<float>(), n_tokens, d.H,
                                                                                 d.dr, dk_pe);
    SY_CUDA_CHECK_LAUNCH("gpu::attention_backward dk_pe head sum");
  }
}

}  // namespace switchyard::trainer::gpu
