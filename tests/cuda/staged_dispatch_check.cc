// Multi-process check of the host-staged GPU dispatch (StagedBuffer: device tensors through
// host memory and the CPU Buffer's two-hop exchange) against the CPU Buffer on the same
// host inputs, bit for bit: received rows, scales, sources, local top-k and weights,
// counts, offsets, expert-major rows, combine's y, and both backwards (dispatch_backward's
// dx, combine_backward's expert-row gradient and top-k weight gradient), for BF16, FP32
// (with expert alignment 4) and FP8 payloads. Run through sy-run on several virtual nodes
// (every rank on GPU 0). Exit 0 when every check passed on this rank, 1 on a mismatch
// (printed), 2 on an error.
#include <algorithm>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/common/cuda.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/cuda/staged.h"
#include "switchyard/dispatch/fp8.h"

namespace sy = switchyard;
namespace sd = switchyard::dispatch;

namespace {

int failures = 0;

template <class T>
std::vector<T> down(const sy::cuda::DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  if (n > 0) b.copy_to_host(v.data(), n * sizeof(T));
  return v;
}

template <class T>
sy::cuda::DeviceBuffer up(const std::vector<T>& v) {
  sy::cuda::DeviceBuffer b(v.empty() ? 1 : v.size() * sizeof(T));
  if (!v.empty()) b.copy_from_host(v.data(), v.size() * sizeof(T));
  return b;
}

template <class T>
void same(const std::vector<T>& cpu, const sy::cuda::DeviceBuffer& gpu, const std::string& what, int rank) {
  const auto g = down<T>(gpu, cpu.size());
  if (!cpu.empty() && std::memcmp(cpu.data(), g.data(), cpu.size() * sizeof(T)) != 0) {
    size_t i = 0;
    while (std::memcmp(&cpu[i], &g[i], sizeof(T)) == 0) ++i;
    std::cout << "rank " << rank << ": " << what << ": element " << i << " of " << cpu.size()
              << " differs from the CPU Buffer\n";
    ++failures;
  }
}

void check_eq(bool ok, const std::string& what, int rank) {
  if (!ok) {
    std::cout << "rank " << rank << ": " << what << " differs from the CPU Buffer\n";
    ++failures;
  }
}

void run_case(const std::shared_ptr<sy::comm::Communicator>& comm, sd::Buffer& cpu, sd::gpu::StagedBuffer& gpu,
              sy::comm::DataType dtype, int64_t alignment, uint32_t seed) {
  const int rank = comm->rank(), R = comm->size();
  const int E = cpu.options().num_experts, K = 4;
  const int64_t H = cpu.options().hidden, S = (H + 127) / 128;
  std::mt19937 g(seed + 101 * rank);
  const int64_t T = 5 + static_cast<int64_t>(g() % 20);
  std::normal_distribution<float> nd;
  std::vector<int64_t> idx(T * K);
  std::vector<float> w(T * K);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int> e(E);
    for (int i = 0; i < E; ++i) e[i] = i;
    std::shuffle(e.begin(), e.end(), g);
    for (int k = 0; k < K; ++k) {
      idx[t * K + k] = (g() % 7 == 0) ? -1 : e[k];  // some masked slots
      w[t * K + k] = 0.1f + 0.2f * k;
    }
  }
  const size_t eb = sd::payload_elem_bytes(dtype);
  std::vector<uint8_t> x(T * H * eb);
  std::vector<float> scales;
  if (dtype == sy::comm::DataType::kFloat32) {
    auto* p = reinterpret_cast<float*>(x.data());
    for (int64_t i = 0; i < T * H; ++i) p[i] = nd(g);
  } else if (dtype == sy::comm::DataType::kBfloat16) {
    auto* p = reinterpret_cast<uint16_t*>(x.data());
    for (int64_t i = 0; i < T * H; ++i) p[i] = sd::bf16_from_float(nd(g));
  } else {
    for (auto& b : x) b = static_cast<uint8_t>(g() % 0x7e);  // finite E4M3 codes
    scales.resize(T * S);
    for (auto& s : scales) s = 0.01f * (1 + g() % 50);
  }
  const std::string tag = std::string(dtype == sy::comm::DataType::kFloat32    ? "fp32"
                                      : dtype == sy::comm::DataType::kBfloat16 ? "bf16"
                                                                               : "fp8") +
                          ": ";

  sd::DispatchArgs da;
  da.x = x.data();
  da.dtype = dtype;
  da.x_scales = scales.empty() ? nullptr : scales.data();
  da.topk_idx = idx.data();
  da.topk_weights = w.data();
  da.num_tokens = T;
  da.top_k = K;
  da.expert_alignment = alignment;
  const sd::DispatchResult c = cpu.dispatch(da);

  sy::cuda::Stream stream;
  auto dx = up(x), dscales = up(scales), didx = up(idx), dw = up(w);
  sd::gpu::StagedDispatchArgs ga;
  ga.x = dx.data();
  ga.dtype = dtype;
  ga.x_scales = scales.empty() ? nullptr : dscales.as<float>();
  ga.topk_idx = didx.as<int64_t>();
  ga.topk_weights = dw.as<float>();
  ga.num_tokens = T;
  ga.top_k = K;
  ga.expert_alignment = alignment;
  ga.stream = stream.get();
  const sd::gpu::StagedDispatchResult r = gpu.dispatch(ga);

  check_eq(r.num_recv_tokens == c.num_recv_tokens, tag + "num_recv_tokens", rank);
  same(c.recv_x, r.recv_x, tag + "recv_x", rank);
  same(c.recv_x_scales, r.recv_x_scales, tag + "recv_x_scales", rank);
  same(c.recv_src_rank, r.recv_src_rank, tag + "recv_src_rank", rank);
  same(c.recv_src_token, r.recv_src_token, tag + "recv_src_token", rank);
  same(c.recv_topk_idx, r.recv_topk_idx, tag + "recv_topk_idx", rank);
  same(c.recv_topk_weights, r.recv_topk_weights, tag + "recv_topk_weights", rank);
  check_eq(r.num_recv_tokens_per_expert == c.num_recv_tokens_per_expert, tag + "num_recv_tokens_per_expert", rank);
  check_eq(r.expert_offsets == c.expert_offsets, tag + "expert_offsets", rank);
  same(c.expert_row_token, r.expert_row_token, tag + "expert_row_token", rank);
  same(c.expert_row_slot, r.expert_row_slot, tag + "expert_row_slot", rank);
  same(c.expert_x, r.expert_x, tag + "expert_x", rank);
  same(c.expert_x_scales, r.expert_x_scales, tag + "expert_x_scales", rank);
  if (dtype == sy::comm::DataType::kFloat8E4M3) return;  // combine takes BF16 or FP32

  // Combine and the backwards on "expert outputs" = the expert-major rows times 0.5.
  const int64_t P = static_cast<int64_t>(c.expert_row_token.size());
  std::vector<uint8_t> eo = c.expert_x;
  if (dtype == sy::comm::DataType::kFloat32)
    for (int64_t i = 0; i < P * H; ++i) reinterpret_cast<float*>(eo.data())[i] *= 0.5f;
  auto deo = up(eo), drw = up(c.recv_topk_weights);
  sd::CombineArgs ca;
  ca.expert_out = eo.data();
  ca.dtype = dtype;
  ca.handle = &c.handle;
  ca.weights = c.recv_topk_weights.data();
  const sd::CombineResult cy = cpu.combine(ca);
  const sd::gpu::StagedCombineResult gy = gpu.combine(deo.data(), dtype, r.handle, drw.as<float>(), stream.get());
  same(cy.y, gy.y, tag + "combine y", rank);

  const sd::CombineResult cb = cpu.dispatch_backward(eo.data(), dtype, c.handle);
  const sd::gpu::StagedCombineResult gb = gpu.dispatch_backward(deo.data(), dtype, r.handle, stream.get());
  same(cb.y, gb.y, tag + "dispatch_backward dx", rank);

  std::vector<uint8_t> gyv = x;  // dy [T x H] of dtype
  auto dgy = up(gyv);
  sd::CombineBackwardArgs cba;
  cba.grad_y = gyv.data();
  cba.dtype = dtype;
  cba.handle = &c.handle;
  cba.expert_out = eo.data();
  cba.weights = c.recv_topk_weights.data();
  const sd::CombineBackwardResult ccb = cpu.combine_backward(cba);
  const sd::gpu::StagedCombineBackwardResult gcb =
      gpu.combine_backward(dgy.data(), dtype, r.handle, deo.data(), drw.as<float>(), stream.get());
  same(ccb.grad_expert_out, gcb.grad_expert_out, tag + "combine_backward grad_expert_out", rank);
  same(ccb.grad_topk_weights, gcb.grad_topk_weights, tag + "combine_backward grad_topk_weights", rank);
  (void)R;
}

}  // namespace

int main() {
  try {
    auto comm = sy::comm::Communicator::init();
    if (sy::cuda::device_count() == 0) {
      std::cout << "staged_dispatch_check: no GPU on this machine\n";
      return 2;
    }
    sy::cuda::set_device(0);
    sd::BufferOptions o;
    o.num_experts = 4 * comm->size();
    o.hidden = 256;
    o.max_tokens_per_rank = 32;
    // The reference Buffer on a communicator of its own (split: same ranks and nodes), so
    // its messages never meet the staged Buffer's.
    sd::Buffer cpu(comm->split(0, comm->rank()), o);
    sd::gpu::StagedBuffer gpu(comm, o);
    uint32_t seed = 1;
    for (auto [dtype, align] : {std::pair{sy::comm::DataType::kBfloat16, int64_t{1}},
                                std::pair{sy::comm::DataType::kFloat32, int64_t{4}},
                                std::pair{sy::comm::DataType::kFloat8E4M3, int64_t{1}}})
      run_case(comm, cpu, gpu, dtype, align, seed++);
    std::cout << "rank " << comm->rank() << " of " << comm->size() << " (two-hop "
              << (cpu.uses_two_hop() ? "yes" : "no") << "): staged GPU dispatch/combine vs CPU Buffer: "
              << (failures == 0 ? "all equal" : std::to_string(failures) + " mismatches") << "\n";
    return failures == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "staged_dispatch_check: " << e.what() << "\n";
    return 2;
  }
}
