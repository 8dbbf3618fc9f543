// The GPU FP8 cast and dispatch layout against their CPU references (dispatch/fp8.h,
// dispatch/layout.h), bit for bit: random values over many binades, every special
// (zeros, subnormals, +-448 and above, +-inf, +-NaN: NaN codes take the sign of the input),
// short last tiles, FP32 and BF16 inputs,
// plain and power-of-two scales; layouts over one and two nodes with masked slots.
// Without a GPU: the entry points throw Unsupported or the tests skip.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/cuda/kernels.h"
#include "switchyard/dispatch/fp8.h"
#include "switchyard/dispatch/layout.h"

namespace switchyard {
namespace {

using testing::first_byte_difference;
using testing::to_device;
using testing::to_host;

std::vector<float> fp8_test_values(int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
  std::uniform_int_distribution<int> expo(-30, 14);
  std::vector<float> v(n);
  for (auto& x : v) x = std::ldexp(mant(g), expo(g));
  const float specials[] = {0.0f, -0.0f, 448.0f, -448.0f, 464.0f, 1e30f, -1e30f,
                            std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                            std::ldexp(1.0f, -9), std::ldexp(1.5f, -10),
                            std::ldexp(1.0f, -6), std::numeric_limits<float>::denorm_min(), 1e-30f};
  for (size_t i = 0; i < sizeof(specials) / sizeof(float) && i * 37 < static_cast<size_t>(n); ++i)
    v[i * 37] = specials[i];
  return v;
}

TEST(CudaFp8CastTest, WithoutGpuThrowsUnsupported) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a GPU is present; this checks the no-GPU error path";
  EXPECT_THROW(dispatch::gpu::quantize_fp8_tiles(static_cast<const float*>(nullptr), 1, 128, false, nullptr, nullptr,
                                                 nullptr),
               Error);
}

TEST(CudaFp8CastTest, MatchesCpuBitForBit) {
  SY_SKIP_WITHOUT_GPU();
  for (int64_t cols : {128, 7168, 200, 1}) {
    for (bool pow2 : {false, true}) {
      const int64_t rows = 67, tiles = dispatch::fp8_num_tiles(cols);
      const std::vector<float> x = fp8_test_values(rows * cols, static_cast<uint32_t>(cols * 2 + pow2));
      std::vector<uint8_t> q_cpu(rows * cols);
      std::vector<float> s_cpu(rows * tiles);
      dispatch::quantize_fp8_tiles(x.data(), rows, cols, pow2, q_cpu.data(), s_cpu.data());
      auto d_x = to_device(x);
      cuda::DeviceBuffer d_q(rows * cols), d_s(rows * tiles * sizeof(float));
      dispatch::gpu::quantize_fp8_tiles(d_x.as<float>(), rows, cols, pow2, d_q.as<uint8_t>(), d_s.as<float>(), nullptr);
      cuda::device_synchronize();
      const auto q_gpu = to_host<uint8_t>(d_q, q_cpu.size());
      const auto s_gpu = to_host<float>(d_s, s_cpu.size());
      EXPECT_EQ(first_byte_difference(q_cpu.data(), q_gpu.data(), q_cpu.size(), 1), "")
          << "codes, fp32, cols " << cols << " pow2 " << pow2;
      EXPECT_EQ(first_byte_difference(s_cpu.data(), s_gpu.data(), s_cpu.size() * 4, 4), "")
          << "scales, fp32, cols " << cols << " pow2 " << pow2;

      std::vector<uint16_t> xb(x.size());
      dispatch::bf16_from_float(x.data(), static_cast<int64_t>(x.size()), xb.data());
      dispatch::quantize_fp8_tiles(xb.data(), rows, cols, pow2, q_cpu.data(), s_cpu.data());
      auto d_xb = to_device(xb);
      dispatch::gpu::quantize_fp8_tiles(d_xb.as<uint16_t>(), rows, cols, pow2, d_q.as<uint8_t>(), d_s.as<float>(),
                                        nullptr);
      cuda::device_synchronize();
      EXPECT_EQ(first_byte_difference(q_cpu.data(), to_host<uint8_t>(d_q, q_cpu.size()).data(), q_cpu.size(), 1), "")
          << "codes, bf16, cols " << cols << " pow2 " << pow2;
      EXPECT_EQ(first_byte_difference(s_cpu.data(), to_host<float>(d_s, s_cpu.size()).data(), s_cpu.size() * 4, 4), "")
          << "scales, bf16, cols " << cols << " pow2 " << pow2;
    }
  }
}

std::vector<int64_t> random_topk(int64_t T, int K, int E, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<int64_t> idx(T * K);
  std::vector<int> perm(E);
  for (int64_t t = 0; t < T; ++t) {
    for (int e = 0; e < E; ++e) perm[e] = e;
    std::shuffle(perm.begin(), perm.end(), g);
    for (int k = 0; k < K; ++k) idx[t * K + k] = (g() % 7 == 0) ? -1 : perm[k];
  }
  return idx;
}

TEST(CudaLayoutTest, MatchesCpuLayout) {
  SY_SKIP_WITHOUT_GPU();
  for (int nodes : {1, 2}) {
    const int R = 8, E = 64, K = 6;
    const int64_t T = 1000;
    const auto map = topology::RankMap::contiguous(R, nodes);
    const auto idx = random_topk(T, K, E, 11 + nodes);
    const auto cpu = dispatch::get_dispatch_layout(idx.data(), T, K, E, map);
    auto d_idx = to_device(idx);
    const auto gpu = dispatch::gpu::get_dispatch_layout(d_idx.as<int64_t>(), T, K, E, map, nullptr);
    EXPECT_EQ(gpu.num_tokens_per_rank, cpu.num_tokens_per_rank) << nodes << " nodes";
    EXPECT_EQ(gpu.num_tokens_per_node, cpu.num_tokens_per_node) << nodes << " nodes";
    EXPECT_EQ(gpu.num_tokens_per_expert, cpu.num_tokens_per_expert) << nodes << " nodes";
    EXPECT_EQ(gpu.is_token_in_rank, cpu.is_token_in_rank) << nodes << " nodes";
  }
}

TEST(CudaLayoutTest, RejectsBadExpertLikeCpu) {
  SY_SKIP_WITHOUT_GPU();
  const auto map = topology::RankMap::contiguous(4, 1);
  std::vector<int64_t> idx = random_topk(50, 4, 16, 3);
  idx[21 * 4 + 2] = 16;  // out of range
  idx[30 * 4 + 1] = idx[30 * 4 + 0] >= 0 ? idx[30 * 4 + 0] : 5;  // later, must not be the one reported
  auto d_idx = to_device(idx);
  EXPECT_THROW(dispatch::get_dispatch_layout(idx.data(), 50, 4, 16, map), InvalidArgument);
  try {
    dispatch::gpu::get_dispatch_layout(d_idx.as<int64_t>(), 50, 4, 16, map, nullptr);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("topk_idx[21][2] = 16"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace switchyard
