// The comparison behind ipc_dispatch_check and the world-size-1 test: IntranodeBuffer (GPU,
// CUDA IPC) against the CPU Buffer (the reference) on the same inputs, for BF16 (expert
// alignment 1 and 3), FP32 (alignment 4) and FP8 payloads, with SM budgets of 1 CTA, the
// default and every SM, synchronous and async calls (results read after their event),
// fresh results and results reused from the previous case: received rows and scales, sources, local top-k,
// weights, per-expert counts and offsets, expert-major rows, and combine's y, bit for bit.
// Collective over `comm`; every rank must be on GPU 0's node. Returns the number of
// mismatches on this rank (each printed to `out`).
#pragma once

#include <algorithm>
#include <map>
#include <utility>
#include <cstring>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/common/cuda.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/cuda/intranode.h"
#include "switchyard/dispatch/cuda/low_latency.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::testing {

namespace detail {

template <class T>
cuda::DeviceBuffer up(const std::vector<T>& v) {
  cuda::DeviceBuffer b(v.empty() ? 1 : v.size() * sizeof(T));
  b.copy_from_host(v.data(), v.size() * sizeof(T));
  return b;
}

template <class T>
std::vector<T> down(const cuda::DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  b.copy_to_host(v.data(), n * sizeof(T));
  return v;
}

template <class T>
void same(const std::vector<T>& cpu, const std::vector<T>& gpu, const std::string& what, int rank, std::ostream& out,
          int& g_failures) {
  if (cpu.size() != gpu.size()) {
    out << "rank " << rank << ": " << what << ": size " << gpu.size() << " != CPU " << cpu.size() << "\n";
    ++g_failures;
    return;
  }
  if (!cpu.empty() && std::memcmp(cpu.data(), gpu.data(), cpu.size() * sizeof(T)) != 0) {
    size_t i = 0;
    while (std::memcmp(&cpu[i], &gpu[i], sizeof(T)) == 0) ++i;
    out << "rank " << rank << ": " << what << ": element " << i << " differs from the CPU reference\n";
    ++g_failures;
  }
}

}  // namespace detail

// hidden 200 moves BF16/FP32 rows in 16-byte words and FP8 rows in 4-byte words; an odd
// hidden (129) takes the 1-byte copy and the element-wise combine paths. top_k 32 fills
// every lane of the warps that hold one slot per lane (experts: at least 4 per rank and
// at least top_k in all).
inline int compare_ipc_dispatch_with_cpu(const std::shared_ptr<comm::Communicator>& comm, std::ostream& out,
                                         int64_t hidden = 200, int top_k = 3) {
  using namespace detail;
  int g_failures = 0;
  const int R = comm->size(), me = comm->rank();
  cuda::set_device(0);
  const int K = top_k, E = R * std::max(4, (K + R - 1) / R);
  const int64_t H = hidden, S = dispatch::fp8_num_tiles(H), Tmax = 96;
  const int64_t T = 40 + 13 * me;  // different on every rank
  std::mt19937 g(1234 + me);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> xf(T * H);
  for (float& v : xf) v = u(g);
  std::vector<int64_t> idx(T * K);
  std::vector<float> w(T * K);
  std::vector<int> perm(E);
  for (int64_t t = 0; t < T; ++t) {
    for (int e = 0; e < E; ++e) perm[e] = e;
    std::shuffle(perm.begin(), perm.end(), g);
    for (int k = 0; k < K; ++k) {
      idx[t * K + k] = (g() % 5 == 0) ? -1 : perm[k];
      w[t * K + k] = u(g);
    }
  }
  std::vector<uint16_t> xb(T * H);
  dispatch::bf16_from_float(xf.data(), T * H, xb.data());
  std::vector<uint8_t> xq(T * H);
  std::vector<float> xs(T * S);
  dispatch::quantize_fp8_tiles(xf.data(), T, H, false, xq.data(), xs.data());

  dispatch::BufferOptions bo;
  bo.num_experts = E;
  bo.hidden = H;
  bo.max_tokens_per_rank = Tmax;
  dispatch::Buffer cpu(comm, bo);
  dispatch::gpu::IntranodeOptions io;
  io.num_experts = E;
  io.hidden = H;
  io.max_tokens_per_rank = Tmax;
  io.max_top_k = std::max(4, K);
  dispatch::gpu::IntranodeBuffer gpu(comm, io);
  auto d_idx = up(idx);
  auto d_w = up(w);

  // num_sms: 1 makes every warp loop over several tokens, -1 gives every SM, 0 the
  // default budget. async: the call returns once enqueued on a non-blocking stream and the
  // results are read after result.done (the next call enters the deferred barrier).
  struct Case {
    comm::DataType dtype;
    int64_t alignment;
    int num_sms;
    bool async;
    bool reuse;  // dispatch and combine into the previous case's results (no allocation)
    const char* name;
  };
  const Case cases[] = {{comm::DataType::kBfloat16, 1, 1, false, false, "bf16 1 SM"},
                        {comm::DataType::kFloat32, 4, 0, true, false, "fp32 align 4 async"},
                        {comm::DataType::kFloat8E4M3, 1, -1, false, true, "fp8 all SMs reuse"},
                        {comm::DataType::kBfloat16, 3, -1, true, true, "bf16 align 3 async reuse"}};
  cuda::Stream side;
  dispatch::gpu::DeviceDispatchResult kept;
  dispatch::gpu::DeviceCombineResult kept_y;
  for (const Case& c : cases) {
    const void* host_x = c.dtype == comm::DataType::kBfloat16  ? static_cast<const void*>(xb.data())
                         : c.dtype == comm::DataType::kFloat32 ? static_cast<const void*>(xf.data())
                                                               : static_cast<const void*>(xq.data());
    const size_t eb = c.dtype == comm::DataType::kFloat32 ? 4 : c.dtype == comm::DataType::kBfloat16 ? 2 : 1;
    const bool fp8 = c.dtype == comm::DataType::kFloat8E4M3;
    dispatch::DispatchArgs a;
    a.x = host_x;
    a.dtype = c.dtype;
    a.x_scales = fp8 ? xs.data() : nullptr;
    a.topk_idx = idx.data();
    a.topk_weights = w.data();
    a.num_tokens = T;
    a.top_k = K;
    a.expert_alignment = c.alignment;
    const dispatch::DispatchResult want = cpu.dispatch(a);

    std::vector<uint8_t> xbytes(static_cast<const uint8_t*>(host_x), static_cast<const uint8_t*>(host_x) + T * H * eb);
    auto d_x = up(xbytes);
    auto d_s = up(xs);
    dispatch::gpu::DeviceDispatchArgs da;
    da.x = d_x.data();
    da.dtype = c.dtype;
    da.x_scales = fp8 ? d_s.as<float>() : nullptr;
    da.topk_idx = d_idx.as<int64_t>();
    da.topk_weights = d_w.as<float>();
    da.num_tokens = T;
    da.top_k = K;
    da.expert_alignment = c.alignment;
    da.num_sms = c.num_sms;
    da.async = c.async;
    da.stream = c.async ? side.get() : nullptr;
    if (c.reuse)
      gpu.dispatch(da, kept);
    else
      kept = gpu.dispatch(da);
    const dispatch::gpu::DeviceDispatchResult& got = kept;
    if (c.async) got.done->synchronize();
    const std::string n = c.name;
    const int64_t M = got.num_recv_tokens;
    if (M != want.num_recv_tokens) {
      out << "rank " << me << ": " << n << ": " << M << " received tokens, CPU " << want.num_recv_tokens << "\n";
      ++g_failures;
      continue;
    }
    same(want.recv_x, down<uint8_t>(got.recv_x, M * H * eb), n + " recv_x", me, out, g_failures);
    if (fp8) same(want.recv_x_scales, down<float>(got.recv_x_scales, M * S), n + " recv_x_scales", me, out, g_failures);
    same(want.recv_src_rank, down<int32_t>(got.recv_src_rank, M), n + " recv_src_rank", me, out, g_failures);
    same(want.recv_src_token, down<int32_t>(got.recv_src_token, M), n + " recv_src_token", me, out, g_failures);
    same(want.recv_topk_idx, down<int64_t>(got.recv_topk_idx, M * K), n + " recv_topk_idx", me, out, g_failures);
    same(want.recv_topk_weights, down<float>(got.recv_topk_weights, M * K), n + " recv_topk_weights", me, out, g_failures);
    same(want.num_recv_tokens_per_expert, got.num_recv_tokens_per_expert, n + " tokens per expert", me, out, g_failures);
    same(want.expert_offsets, got.expert_offsets, n + " expert_offsets", me, out, g_failures);
    const int64_t P = got.expert_offsets.back();
    same(want.expert_row_token, down<int32_t>(got.expert_row_token, P), n + " expert_row_token", me, out, g_failures);
    same(want.expert_row_slot, down<int32_t>(got.expert_row_slot, P), n + " expert_row_slot", me, out, g_failures);
    same(want.expert_x, down<uint8_t>(got.expert_x, P * H * eb), n + " expert_x", me, out, g_failures);
    if (fp8) same(want.expert_x_scales, down<float>(got.expert_x_scales, P * S), n + " expert_x_scales", me, out, g_failures);

    if (fp8) continue;  // combine takes BF16 or FP32
    // Expert outputs: any values in the payload type; padding rows are ignored by both.
    std::vector<uint8_t> expert_out(P * H * eb);
    for (int64_t i = 0; i < P * H; ++i) {
      const float v = u(g);
      if (eb == 4)
        std::memcpy(&expert_out[i * 4], &v, 4);
      else {
        const uint16_t b = dispatch::bf16_from_float(v);
        std::memcpy(&expert_out[i * 2], &b, 2);
      }
    }
    dispatch::CombineArgs ca;
    ca.expert_out = expert_out.data();
    ca.dtype = c.dtype;
    ca.handle = &want.handle;
    ca.weights = want.recv_topk_weights.data();
    const dispatch::CombineResult ywant = cpu.combine(ca);
    auto d_out = up(expert_out);
    dispatch::gpu::DeviceCombineArgs dc;
    dc.expert_out = d_out.data();
    dc.dtype = c.dtype;
    dc.handle = &got.handle;
    dc.weights = got.recv_topk_weights.as<float>();
    dc.num_sms = c.num_sms;
    dc.async = c.async;
    dc.stream = da.stream;
    if (c.reuse)
      gpu.combine(dc, kept_y);
    else
      kept_y = gpu.combine(dc);
    const dispatch::gpu::DeviceCombineResult& ygot = kept_y;
    if (c.async) ygot.done->synchronize();
    same(ywant.y, down<uint8_t>(ygot.y, T * H * eb), n + " combine y", me, out, g_failures);
  }
  out << "rank " << me << " of " << R << ", hidden " << H << ", top_k " << K << ": ipc dispatch/combine vs CPU Buffer: "
      << (g_failures == 0 ? "all equal" : std::to_string(g_failures) + " mismatches") << "\n";
  return g_failures;
}

// The low-latency mode: gpu::LowLatencyBuffer against the CPU Buffer's low-latency mode on
// the same inputs (FP8 with plain and power-of-two scales, BF16), two calls each. Rows of an
// expert come in the order the sources claimed their blocks (it differs between the two),
// so each expert's rows are compared as a map (src_rank, src_token) -> payload and scales;
// expert_out is a function of (expert, src_rank, src_token, channel) on both sides, so
// combine's y must be bit-identical. Collective over `comm`; returns the mismatches here.
inline int compare_low_latency_with_cpu(const std::shared_ptr<comm::Communicator>& comm, std::ostream& out) {
  using namespace detail;
  int g_failures = 0;
  const int R = comm->size(), me = comm->rank();
  cuda::set_device(0);
  const int E = 4 * R, L = 4, K = 3;
  const int64_t H = 256, S = dispatch::fp8_num_tiles(H), Tmax = 24, slots = R * Tmax;
  dispatch::BufferOptions bo;
  bo.num_experts = E;
  bo.hidden = H;
  bo.max_tokens_per_rank = Tmax;
  bo.low_latency_max_tokens = Tmax;
  dispatch::Buffer cpu(comm, bo);
  dispatch::gpu::LowLatencyOptions lo;
  lo.num_experts = E;
  lo.hidden = H;
  lo.max_tokens = Tmax;
  dispatch::gpu::LowLatencyBuffer gpu(comm, lo);
  std::mt19937 g(777 + me);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  struct Case {
    bool fp8, pow2;
    const char* name;
  };
  const Case cases[] = {{true, false, "ll fp8"}, {true, true, "ll fp8 pow2"}, {false, false, "ll bf16"}};
  for (const Case& c : cases) {
    const int64_t T = 10 + 5 * me + (c.pow2 ? 3 : 0);  // different on every rank and call
    std::vector<float> xf(T * H);
    for (float& v : xf) v = u(g);
    xf[0] = 1e4f;  // a large value: saturated codes in its tile
    std::vector<uint16_t> xb(T * H);
    dispatch::bf16_from_float(xf.data(), T * H, xb.data());
    std::vector<int64_t> idx(T * K);
    std::vector<float> w(T * K);
    std::vector<int> perm(E);
    for (int64_t t = 0; t < T; ++t) {
      for (int e = 0; e < E; ++e) perm[e] = e;
      std::shuffle(perm.begin(), perm.end(), g);
      for (int k = 0; k < K; ++k) {
        idx[t * K + k] = (g() % 6 == 0) ? -1 : perm[k];
        w[t * K + k] = u(g);
      }
    }
    dispatch::LowLatencyDispatchArgs a;
    a.x = xb.data();
    a.topk_idx = idx.data();
    a.topk_weights = w.data();
    a.num_tokens = T;
    a.top_k = K;
    a.use_fp8 = c.fp8;
    a.pow2_scales = c.pow2;
    const dispatch::LowLatencyView want = cpu.low_latency_dispatch(a);
    auto d_x = up(xb);
    auto d_idx = up(idx);
    auto d_w = up(w);
    dispatch::gpu::DeviceLowLatencyArgs da;
    da.x = d_x.as<uint16_t>();
    da.topk_idx = d_idx.as<int64_t>();
    da.topk_weights = d_w.as<float>();
    da.num_tokens = T;
    da.top_k = K;
    da.use_fp8 = c.fp8;
    da.pow2_scales = c.pow2;
    const dispatch::gpu::DeviceLowLatencyView got = gpu.dispatch(da);
    const std::string n = c.name;
    const int64_t row_bytes = c.fp8 ? H : 2 * H;
    const size_t area = static_cast<size_t>(L * slots);
    std::vector<uint8_t> gx(area * row_bytes);
    std::vector<float> gs(c.fp8 ? area * S : 0);
    std::vector<int32_t> gr(area), gt(area);
    dispatch::gpu::copy_device_to_host(gx.data(), got.x, gx.size());
    if (c.fp8) dispatch::gpu::copy_device_to_host(gs.data(), got.scales, gs.size() * 4);
    dispatch::gpu::copy_device_to_host(gr.data(), got.src_rank, gr.size() * 4);
    dispatch::gpu::copy_device_to_host(gt.data(), got.src_token, gt.size() * 4);
    std::vector<uint16_t> expert_cpu(area * H, 0), expert_gpu(area * H, 0);
    auto value = [](int j, int sr, int st, int64_t h) {
      return dispatch::bf16_from_float(static_cast<float>((j * 131 + sr * 31 + st * 7 + h * 3) % 97 - 48) / 16.0f);
    };
    for (int j = 0; j < L; ++j) {
      if (got.count[j] != static_cast<int32_t>(want.count[j])) {
        out << "rank " << me << ": " << n << ": expert " << j << " has " << got.count[j] << " rows, CPU "
            << want.count[j] << "\n";
        ++g_failures;
        continue;
      }
      std::map<std::pair<int, int>, int64_t> cpu_rows, gpu_rows;
      for (int64_t i = 0; i < want.count[j]; ++i) {
        const int64_t rc = j * slots + i;
        cpu_rows[{want.src_rank[rc], want.src_token[rc]}] = rc;
        gpu_rows[{gr[rc], gt[rc]}] = rc;
        for (int64_t h = 0; h < H; ++h) {
          expert_cpu[rc * H + h] = value(j, want.src_rank[rc], want.src_token[rc], h);
          expert_gpu[rc * H + h] = value(j, gr[rc], gt[rc], h);
        }
      }
      if (cpu_rows.size() != gpu_rows.size() || cpu_rows.size() != static_cast<size_t>(want.count[j])) {
        out << "rank " << me << ": " << n << ": expert " << j << ": the (src_rank, src_token) rows differ\n";
        ++g_failures;
        continue;
      }
      for (const auto& [key, rc] : cpu_rows) {
        auto it = gpu_rows.find(key);
        if (it == gpu_rows.end()) {
          out << "rank " << me << ": " << n << ": expert " << j << ": row of rank " << key.first << " token "
              << key.second << " missing\n";
          ++g_failures;
          break;
        }
        const int64_t rg = it->second;
        if (std::memcmp(want.x + rc * row_bytes, gx.data() + rg * row_bytes, row_bytes) != 0 ||
            (c.fp8 && std::memcmp(want.scales + rc * S, gs.data() + rg * S, S * 4) != 0)) {
          out << "rank " << me << ": " << n << ": expert " << j << ": row of rank " << key.first << " token "
              << key.second << " differs from the CPU reference\n";
          ++g_failures;
          break;
        }
      }
    }
    const uint16_t* ywant = cpu.low_latency_combine(expert_cpu.data());
    auto d_out = up(expert_gpu);
    const uint16_t* ygot_d = gpu.combine(d_out.as<uint16_t>());
    std::vector<uint16_t> ygot(T * H);
    dispatch::gpu::copy_device_to_host(ygot.data(), ygot_d, ygot.size() * 2);
    same(std::vector<uint16_t>(ywant, ywant + T * H), ygot, n + " combine y", me, out, g_failures);
  }
  out << "rank " << me << " of " << R << ": gpu low-latency dispatch/combine vs CPU Buffer: "
      << (g_failures == 0 ? "all equal" : std::to_string(g_failures) + " mismatches") << "\n";
  return g_failures;
}

}  // namespace switchyard::testing
