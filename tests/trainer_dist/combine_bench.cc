// Benchmark (not a ctest): one MoE layer's routed experts over EP through DispatchedExperts,
// forward + backward, with the per-slot combine (K combines with one-hot weights, K cached
// dispatches in the backward; the MoE block's path with SWITCHYARD_TRAIN_WEIGHTED_COMBINE=0)
// against the fused form the MoE block uses by default (one weighted combine,
// combine_backward returning the gate-weight gradient).
// Run under sy-run, e.g.: sy-run -n 4 --nodes 2 -- trainer_dist_combine_bench [tokens] [reps]
// Prints, on rank 0, the median seconds of each path over the reps (interleaved, after one
// warm-up of each) and their ratio. tiny preset sizes (H 256, 16 experts, top-4), FP8 wire.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/trainer/config.h"
#include "switchyard/trainer/dist/dispatched_experts.h"
#include "switchyard/trainer/experts.h"
#include "switchyard/trainer/model.h"

using namespace switchyard;
using namespace switchyard::trainer;

int main(int argc, char** argv) {
  const int64_t N = argc > 1 ? std::atoll(argv[1]) : 256;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 9;
  auto world = comm::Communicator::init();
  const ModelConfig c = model_config_preset("tiny");
  Model<float> model(c);
  model.init_random(1, 0.02);
  const int64_t layer = model.moe_layer_indices().front();
  const int64_t d = c.hidden_size, K = c.num_experts_per_tok, E = c.n_routed_experts;
  dispatch::BufferOptions bo;
  bo.num_experts = static_cast<int>(E);
  bo.hidden = d;
  bo.max_tokens_per_rank = N;
  bo.two_hop = true;
  auto buffer = std::make_shared<dispatch::Buffer>(world, bo);
  auto provider = dist::make_dispatched_experts(model, layer, buffer, dist::ExpertWire::kFp8Bf16);
  provider->set_weighted_combine(true);  // whatever SWITCHYARD_TRAIN_WEIGHTED_COMBINE says

  std::mt19937_64 rng(10 + world->rank());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(N * d), dy(N * d), w(N * K, 0.25f);
  for (float& v : x) v = normal(rng);
  for (float& v : dy) v = normal(rng);
  std::vector<int64_t> idx(N * K), experts(E);
  for (int64_t t = 0; t < N; ++t) {
    std::iota(experts.begin(), experts.end(), 0);
    std::shuffle(experts.begin(), experts.end(), rng);
    std::copy(experts.begin(), experts.begin() + K, idx.begin() + t * K);
  }
  const RoutingPlan plan = make_routing_plan(idx.data(), N, K, E);
  std::vector<float> out(N * K * d), d_out(N * K * d), y(N * d), dx(N * d), dw(N * K);

  auto per_slot = [&] {  // what MoeBlock does around the provider today
    provider->forward(plan, x.data(), out.data());
    std::fill(y.begin(), y.end(), 0.0f);
    for (int64_t t = 0; t < N; ++t)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < d; ++j) {
          y[t * d + j] += w[t * K + k] * out[(t * K + k) * d + j];
          d_out[(t * K + k) * d + j] = w[t * K + k] * dy[t * d + j];
        }
    for (int64_t a = 0; a < N * K; ++a)
      dw[a] = std::inner_product(dy.begin() + (a / K) * d, dy.begin() + (a / K + 1) * d, out.begin() + a * d, 0.0f);
    provider->backward_input(plan, d_out.data(), dx.data());
    provider->backward_weight();
    provider->release();
  };
  auto fused = [&] {
    provider->forward_weighted(plan, x.data(), w.data(), y.data());
    provider->backward_weighted(plan, dy.data(), dx.data(), dw.data());
    provider->backward_weight();
    provider->release();
  };
  auto timed = [&](auto&& f) {
    world->barrier();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    world->barrier();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  timed(per_slot);
  timed(fused);
  std::vector<double> a, b;
  for (int r = 0; r < reps; ++r) {
    a.push_back(timed(per_slot));
    b.push_back(timed(fused));
  }
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  if (world->rank() == 0)
    std::printf("ranks %d nodes %d tokens/rank %lld H %lld top-%lld: per-slot %.3f ms, fused %.3f ms (median of %d), "
                "fused/per-slot %.2f\n",
                world->size(), world->rank_map().num_nodes(), (long long)N, (long long)d, (long long)K,
                a[a.size() / 2] * 1e3, b[b.size() / 2] * 1e3, reps, b[b.size() / 2] / a[a.size() / 2]);
  return 0;
}
