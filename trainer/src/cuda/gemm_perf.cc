// sy-gemm-perf's library call (gemm_perf.h): the measurements (report formatting in
// gemm_perf_report.cc).
#include "switchyard/trainer/cuda/gemm_perf.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <random>

#include "switchyard/common/cuda.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/cuda/kernels.h"
#include "switchyard/dispatch/fp8.h"
#include "switchyard/trainer/cuda/gemm.h"

namespace switchyard::trainer::gpu {

namespace {

double time_events(const GemmPerfOptions& o, cudaStream_t st, const std::function<void()>& fn) {
  for (int i = 0; i < o.warmup; ++i) fn();
  cuda::Event a, b;
  std::vector<double> us;
  for (int i = 0; i < o.iters; ++i) {
    a.record(st);
    fn();
    b.record(st);
    b.synchronize();
    us.push_back(1000.0 * b.elapsed_ms_since(a));
  }
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

cuda::DeviceBuffer random_bf16(int64_t n, std::mt19937& g) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<uint16_t> h(n);
  for (auto& v : h) v = dispatch::bf16_from_float(u(g));
  cuda::DeviceBuffer d(n * 2);
  d.copy_from_host(h.data(), h.size() * 2);
  return d;
}

}  // namespace

GemmPerfReport run_gemm_perf(const GemmPerfOptions& o) {
  if (cuda::device_count() == 0) SY_THROW(Unsupported, "sy-gemm-perf: no GPU is usable on this machine");
  SY_REQUIRE(o.iters >= 1 && !o.shapes.empty(), "sy-gemm-perf: iters must be >= 1 and shapes non-empty");
  cuda::set_device(0);
  GemmPerfReport rep;
  rep.device = cuda::device_description(0);
  rep.cublaslt_version = CublasLt::version();
  rep.options = o;
  CublasLt lt;
  cuda::Stream stream;
  cudaStream_t st = stream.get();
  std::mt19937 g(5);
  for (const GemmShape& s : o.shapes) {
    const int64_t M = s.m, N = s.n, K = s.k, KB = (K + 127) / 128;
    cuda::DeviceBuffer a = random_bf16(M * K, g), b = random_bf16(N * K, g), d(M * N * 2);
    cuda::DeviceBuffer aq(M * K), as(M * KB * 4), bq(N * K), bs_rows(N * KB * 4);
    // Weights: codes from a 1x128 cast; their 128x128 block scales are constants (timing
    // does not depend on the values).
    dispatch::gpu::quantize_fp8_tiles(b.as<uint16_t>(), N, K, false, bq.as<uint8_t>(), bs_rows.as<float>(), st);
    const int64_t l4 = (KB + 3) / 4 * 4;
    std::vector<float> block_scales(((N + 127) / 128) * l4, 1.0f / 448.0f);
    cuda::DeviceBuffer bs(block_scales.size() * 4);
    bs.copy_from_host(block_scales.data(), block_scales.size() * 4);
    GemmPerfRow r;
    r.shape = s;
    r.quantize_us = time_events(o, st, [&] {
      dispatch::gpu::quantize_fp8_tiles(a.as<uint16_t>(), M, K, false, aq.as<uint8_t>(), as.as<float>(), st);
    });
    // The activation scales come out [M x KB]; cuBLASLt's 1x128 layout is [KB x M]. The
    // values do not matter for timing, so the buffer is used as it is.
    r.bf16_us = time_events(o, st, [&] {
      gemm_bf16_nt(lt, a.as<uint16_t>(), b.as<uint16_t>(), d.data(), OutType::kBfloat16, M, N, K, st);
    });
    Fp8Operand A{aq.as<uint8_t>(), as.as<float>(), ScaleMode::kRow128};
    Fp8Operand B{bq.as<uint8_t>(), bs.as<float>(), ScaleMode::kBlock128};
    r.fp8_us = time_events(o, st, [&] { gemm_fp8_nt(lt, A, B, d.data(), OutType::kBfloat16, M, N, K, st); });
    const double flop = 2.0 * M * N * K;
    r.bf16_tflops = flop / (r.bf16_us * 1e6);
    r.fp8_tflops = flop / (r.fp8_us * 1e6);
    r.fp8_speedup = r.bf16_us / r.fp8_us;
    rep.rows.push_back(r);
  }
  return rep;
}

}  // namespace switchyard::trainer::gpu
