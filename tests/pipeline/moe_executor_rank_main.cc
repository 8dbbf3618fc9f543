// pipeline_moe_rank: PP 2 x EP 2 DualPipeV run whose stages are MoE layers that move tokens
// through the dispatch library (SyntheticMoeStage), on 4 ranks started by sy-run.
//
// Checks, on every rank:
//   - the replicated schedule with MoE sub-steps passes verify() (EP collective order);
//   - gradients of the attention stand-in (this EP rank's tokens) and of the local experts
//     (all EP ranks' tokens) equal a one-process double-precision reference that runs every
//     micro-batch through the whole model: normwise relative difference <= 1e-5 (FP32 path);
//   - in every overlapped FB pair, from the timestamps: each dispatch/combine of one
//     micro-batch was in flight (posted before, finished after) while a compute sub-step of
//     the other micro-batch ran.
// Global rank = ep_rank * 2 + pp_rank (Schedule::replicate's layout).
// Usage: pipeline_moe_rank [TRACE_PREFIX]: each PP group (EP replica) writes
// TRACE_PREFIX.ep<e>.json with MoE sub-steps on an "ep comm" lane, checked to be non-empty.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/common/error.h"
#include "switchyard/pipeline/executor.h"
#include "switchyard/pipeline/generators.h"
#include "switchyard/pipeline/synthetic_moe.h"
#include "switchyard/pipeline/verifier.h"

using namespace switchyard;
using namespace switchyard::pipeline;

namespace {

constexpr int kPP = 2, kEP = 2, kMicrobatches = 4;

double input_value(int ep, int mb, int i) { return std::sin(0.37 * (i + 1) + 1.3 * mb + 2.1 * ep); }
double target_value(int ep, int mb, int i) { return 0.3 * std::cos(0.23 * (i + 1) + 0.7 * mb - 1.1 * ep); }

}  // namespace

int main(int argc, char** argv) {
  try {
    auto world = comm::Communicator::init();
    SY_REQUIRE(world->size() == kPP * kEP, "pipeline_moe_rank needs " << kPP * kEP << " ranks");
    const int rank = world->rank(), pp_rank = rank % kPP, ep_rank = rank / kPP;
    auto pp = world->split(ep_rank, pp_rank);
    auto ep = world->split(pp_rank, ep_rank);

    SyntheticMoeOptions opt;
    opt.tokens = 6;
    opt.hidden = 8;
    opt.experts = 4;
    opt.top_k = 2;
    const int T = opt.tokens, H = opt.hidden;

    Schedule s = generate(ScheduleKind::kDualPipeV, {kPP, kMicrobatches});
    Schedule full = replicate(s, kEP);
    add_moe_sub_steps(full, 1);
    verify(full);
    const int S = s.num_stages;

    auto buffer = SyntheticMoeStage::make_buffer(ep, opt);
    std::map<int, std::unique_ptr<SyntheticMoeStage>> stages;
    for (int st : s.stages_on(pp_rank)) stages[st] = std::make_unique<SyntheticMoeStage>(st, buffer, ep_rank, kEP, opt);
    std::map<int, std::vector<float>> last_y;  // loss stage outputs per micro-batch
    std::vector<SubStepEvent> events;
    int fb_pairs = 0;

    auto input_of = [&](int st, int mb, const double* in) {
      std::vector<float> x(T * H);
      for (int i = 0; i < T * H; ++i) x[i] = st == 0 ? static_cast<float>(input_value(ep_rank, mb, i)) : static_cast<float>(in[i]);
      return x;
    };
    auto grad_of = [&](int st, int mb, const double* gout) {
      std::vector<float> gy(T * H);
      for (int i = 0; i < T * H; ++i)
        gy[i] = st == S - 1 ? last_y.at(mb)[i] - static_cast<float>(target_value(ep_rank, mb, i)) : static_cast<float>(gout[i]);
      return gy;
    };
    auto store = [&](int st, int mb, const std::vector<float>& y, double* out) {
      if (st == S - 1) last_y[mb] = y;
      for (int i = 0; i < T * H; ++i) out[i] = y[i];
    };
    auto store_grad = [&](const std::vector<float>& gx, double* gin) {
      if (gin)
        for (int i = 0; i < T * H; ++i) gin[i] = gx[i];
    };

    StageCallbacks cb;
    cb.forward = [&](int st, int mb, const double* in, double* out) {
      std::vector<float> x = input_of(st, mb, in), y(T * H);
      auto tasks = stages.at(st)->forward_tasks(mb, x.data(), y.data());
      run_serial(tasks, &events);
      store(st, mb, y, out);
    };
    cb.backward_input = [&](int st, int mb, const double* gout, double* gin) {
      std::vector<float> gy = grad_of(st, mb, gout), gx(T * H);
      auto tasks = stages.at(st)->backward_tasks(mb, gy.data(), gin ? gx.data() : nullptr);
      run_serial(tasks, &events);
      store_grad(gx, gin);
    };
    cb.backward_weight = [&](int st, int mb) { stages.at(st)->weight_grads(mb); };
    cb.forward_backward = [&](int fs, int fm, const double* in, double* out, int bs, int bm, const double* gout,
                              double* gin) {
      std::vector<float> x = input_of(fs, fm, in), y(T * H);
      std::vector<float> gy = grad_of(bs, bm, gout), gx(T * H);
      auto f = stages.at(fs)->forward_tasks(fm, x.data(), y.data());
      auto b = stages.at(bs)->backward_tasks(bm, gy.data(), gin ? gx.data() : nullptr);
      run_overlapped_pair(f, b, &events);
      ++fb_pairs;
      store(fs, fm, y, out);
      store_grad(gx, gin);
      stages.at(bs)->weight_grads(bm);
    };

    Executor ex(pp, s, static_cast<size_t>(T) * H, cb);
    ex.run();
    ex.add_sub_step_events(events);
    if (argc > 1) {
      const std::string path = std::string(argv[1]) + ".ep" + std::to_string(ep_rank) + ".json";
      ex.write_trace(path);  // per PP group: the ranks of this EP replica
      if (pp_rank == 0) {
        std::ifstream in(path);
        nlohmann::json t = nlohmann::json::parse(in);
        int ep_lane = 0;
        for (const auto& e : t["traceEvents"]) ep_lane += e["ph"] == "X" && e["tid"] == 2;
        if (ep_lane == 0) {
          std::printf("rank %d: FAILED no dispatch/combine events in the trace\n", rank);
          return 1;
        }
      }
    }

    // Reference: every micro-batch through the whole model, all EP ranks' tokens, double.
    std::vector<SyntheticMoeStage::Reference> ref;
    for (int st = 0; st < S; ++st) ref.emplace_back(st, kEP, opt);
    for (int mb = 0; mb < kMicrobatches; ++mb) {
      std::vector<std::vector<std::vector<double>>> xs(S + 1), as(S);
      xs[0].assign(kEP, std::vector<double>(T * H));
      for (int e = 0; e < kEP; ++e)
        for (int i = 0; i < T * H; ++i) xs[0][e][i] = input_value(e, mb, i);
      for (int st = 0; st < S; ++st) ref[st].forward(mb, xs[st], &xs[st + 1], &as[st]);
      std::vector<std::vector<double>> g(kEP, std::vector<double>(T * H));
      for (int e = 0; e < kEP; ++e)
        for (int i = 0; i < T * H; ++i) g[e][i] = xs[S][e][i] - target_value(e, mb, i);
      for (int st = S - 1; st >= 0; --st) {
        std::vector<std::vector<double>> gx;
        ref[st].backward(mb, xs[st], as[st], g, &gx);
        g = gx;
      }
    }
    double d2 = 0, r2 = 0;
    const int L = opt.experts / kEP;
    for (auto& [st, stage] : stages) {
      for (size_t i = 0; i < stage->grad_attn.size(); ++i) {
        d2 += std::pow(stage->grad_attn[i] - ref[st].grad_attn[ep_rank][i], 2);
        r2 += std::pow(ref[st].grad_attn[ep_rank][i], 2);
      }
      for (int l = 0; l < L; ++l)
        for (int i = 0; i < H * H; ++i) {
          const double want = ref[st].grad_experts[static_cast<size_t>(ep_rank * L + l) * H * H + i];
          d2 += std::pow(stage->grad_experts[static_cast<size_t>(l) * H * H + i] - want, 2);
          r2 += want * want;
        }
    }
    const double rel = std::sqrt(d2 / r2);
    // Overlap from the timestamps: run_overlapped_pair records (compute, collective) pairs.
    int overlapped = 0, bad = 0;
    for (size_t i = 0; i + 1 < events.size(); ++i) {
      const SubStepEvent& comp = events[i];
      const SubStepEvent& coll = events[i + 1];
      if (comp.collective || !coll.collective || comp.step.backward == coll.step.backward) continue;
      ++overlapped;
      if (!(coll.start <= comp.start && comp.end <= coll.end && comp.step.microbatch != coll.step.microbatch)) ++bad;
    }
    if (!(rel <= 1e-5) || fb_pairs == 0 || overlapped != 4 * fb_pairs || bad) {
      std::printf("rank %d: FAILED rel %.3e, %d FB pairs, %d overlapped collectives, %d not overlapped\n", rank, rel,
                  fb_pairs, overlapped, bad);
      return 1;
    }
    std::printf("rank %d: ok rel %.3e, %d FB pairs, %d collectives each in flight during the other micro-batch's compute\n",
                rank, rel, fb_pairs, overlapped);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "pipeline_moe_rank: %s\n", e.what());
    return 1;
  }
}
