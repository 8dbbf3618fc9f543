// pipeline_executor_rank: rank program of the executor tests (started by sy-run).
//
// Usage: pipeline_executor_rank SCHEDULE RANKS MICROBATCHES [TRACE_FILE]
// (SCHEDULE "dualpipe-noreduce": DualPipe without the mirrored-gradient REDUCE, must fail;
// "zbv-zero-bubble": ZBV in the zero-bubble repository's heuristic order, costs F=1 B=1.5 W=0.5.)
// With TRACE_FILE rank 0 also checks the merged trace: one flow per transfer, one box per chunk.
// A small differentiable FP64 model, one tanh layer per stage (y = tanh(W x + b), hidden 6),
// loss 0.5 * ||y_last - target||^2 summed over micro-batches, runs under the schedule on real
// ranks. Each rank also runs the whole model on every micro-batch in order by itself (the
// reference) and checks the gradients of the stages it holds after the step (after the REDUCE
// of mirrored copies for DualPipe): normwise relative difference <= 1e-12. Prints
// "rank R: ok" and exits 0, or prints the difference and exits 1.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/common/error.h"
#include "switchyard/pipeline/executor.h"
#include "switchyard/pipeline/generators.h"

using namespace switchyard;
using namespace switchyard::pipeline;

namespace {

constexpr int kHidden = 6;

// Deterministic values in [-1, 1) from (a, b, c): no RNG state shared between ranks.
double value(int a, int b, int c) {
  uint64_t x = 0x9E3779B97F4A7C15ull * (a + 1) ^ 0xBF58476D1CE4E5B9ull * (b + 7) ^ 0x94D049BB133111EBull * (c + 13);
  x ^= x >> 31;
  x *= 0xD6E8FEB86659FD93ull;
  x ^= x >> 32;
  return (x % 2000000) / 1000000.0 - 1.0;
}

struct Layer {
  std::vector<double> w, b, gw, gb;  // w: [kHidden][kHidden] row-major, b: [kHidden]
  explicit Layer(int stage) : w(kHidden * kHidden), b(kHidden), gw(kHidden * kHidden, 0.0), gb(kHidden, 0.0) {
    for (int i = 0; i < kHidden * kHidden; ++i) w[i] = 0.6 * value(stage, i, 1);
    for (int i = 0; i < kHidden; ++i) b[i] = 0.1 * value(stage, i, 2);
  }
};

std::vector<double> model_input(int mb) {
  std::vector<double> x(kHidden);
  for (int i = 0; i < kHidden; ++i) x[i] = value(1000 + mb, i, 3);
  return x;
}
std::vector<double> target(int mb) {
  std::vector<double> t(kHidden);
  for (int i = 0; i < kHidden; ++i) t[i] = 0.5 * value(2000 + mb, i, 4);
  return t;
}

// y = tanh(W x + b)
void layer_forward(const Layer& l, const double* x, double* y) {
  for (int i = 0; i < kHidden; ++i) {
    double z = l.b[i];
    for (int j = 0; j < kHidden; ++j) z += l.w[i * kHidden + j] * x[j];
    y[i] = std::tanh(z);
  }
}

// gz = gy * (1 - y^2); gx = W^T gz (gx may be null)
void layer_backward_input(const Layer& l, const double* y, const double* gy, double* gz, double* gx) {
  for (int i = 0; i < kHidden; ++i) gz[i] = gy[i] * (1 - y[i] * y[i]);
  if (!gx) return;
  for (int j = 0; j < kHidden; ++j) {
    double s = 0;
    for (int i = 0; i < kHidden; ++i) s += l.w[i * kHidden + j] * gz[i];
    gx[j] = s;
  }
}

// gW += gz x^T; gb += gz
void layer_backward_weight(Layer& l, const double* x, const double* gz) {
  for (int i = 0; i < kHidden; ++i) {
    l.gb[i] += gz[i];
    for (int j = 0; j < kHidden; ++j) l.gw[i * kHidden + j] += gz[i] * x[j];
  }
}

// The reference: every micro-batch through all stages, in order, on one rank.
std::vector<Layer> reference_gradients(int num_stages, int num_mb) {
  std::vector<Layer> layers;
  for (int s = 0; s < num_stages; ++s) layers.emplace_back(s);
  for (int mb = 0; mb < num_mb; ++mb) {
    std::vector<std::vector<double>> acts(num_stages + 1, std::vector<double>(kHidden));
    acts[0] = model_input(mb);
    for (int s = 0; s < num_stages; ++s) layer_forward(layers[s], acts[s].data(), acts[s + 1].data());
    std::vector<double> gy(kHidden), gz(kHidden), gx(kHidden);
    std::vector<double> t = target(mb);
    for (int i = 0; i < kHidden; ++i) gy[i] = acts[num_stages][i] - t[i];
    for (int s = num_stages - 1; s >= 0; --s) {
      layer_backward_input(layers[s], acts[s + 1].data(), gy.data(), gz.data(), gx.data());
      layer_backward_weight(layers[s], acts[s].data(), gz.data());
      gy = gx;
    }
  }
  return layers;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: pipeline_executor_rank SCHEDULE RANKS MICROBATCHES [TRACE_FILE]\n";
    return 2;
  }
  try {
    auto comm = comm::Communicator::init();
    const int rank = comm->rank();
    GeneratorOptions g;
    g.num_ranks = std::atoi(argv[2]);
    g.num_microbatches = std::atoi(argv[3]);
    // "dualpipe-noreduce" leaves out the REDUCE of mirrored gradients: the check must fail.
    std::string kind = argv[1];
    if (kind == "dualpipe-noreduce") {
      kind = "dualpipe";
      g.reduce_mirrored = false;
    }
    if (kind == "zbv-zero-bubble") {
      kind = "zbv";
      g.zbv_order = ZbvOrder::kZeroBubbleHeuristic;
      g.zbv_costs = {1.0, 1.5, 0.5, 0.0};
    }
    Schedule s = generate(parse_schedule_kind(kind), g);
    const int S = s.num_stages, M = s.num_microbatches;

    // This rank's copies of the stages it holds, and the tensors saved between F, B and W.
    std::map<int, Layer> layers;
    for (int st : s.stages_on(s.pp_rank(rank))) layers.emplace(st, Layer(st));
    struct Saved {
      std::vector<double> x, y, gz;
    };
    std::map<std::pair<int, int>, Saved> saved;

    StageCallbacks cb;
    cb.forward = [&](int st, int mb, const double* in, double* out) {
      Saved& sv = saved[{st, mb}];
      sv.x = st == 0 ? model_input(mb) : std::vector<double>(in, in + kHidden);
      sv.y.resize(kHidden);
      layer_forward(layers.at(st), sv.x.data(), sv.y.data());
      std::copy(sv.y.begin(), sv.y.end(), out);
    };
    cb.backward_input = [&](int st, int mb, const double* gout, double* gin) {
      Saved& sv = saved.at({st, mb});
      std::vector<double> gy(kHidden);
      if (st == S - 1) {
        std::vector<double> t = target(mb);
        for (int i = 0; i < kHidden; ++i) gy[i] = sv.y[i] - t[i];
      } else {
        gy.assign(gout, gout + kHidden);
      }
      sv.gz.resize(kHidden);
      layer_backward_input(layers.at(st), sv.y.data(), gy.data(), sv.gz.data(), gin);
    };
    cb.backward_weight = [&](int st, int mb) {
      Saved& sv = saved.at({st, mb});
      layer_backward_weight(layers.at(st), sv.x.data(), sv.gz.data());
      saved.erase({st, mb});
    };
    // Gradient buffer for REDUCE: W and b gradients packed (REDUCE needs one span; the
    // layer keeps them in one vector pair, so pack into a per-stage scratch and unpack).
    std::map<int, std::vector<double>> packed;
    cb.gradients = [&](int st) -> std::span<double> {
      Layer& l = layers.at(st);
      auto& p = packed[st];
      p.assign(l.gw.begin(), l.gw.end());
      p.insert(p.end(), l.gb.begin(), l.gb.end());
      return p;
    };

    Executor ex(comm, s, kHidden, cb);
    ex.run();
    if (argc > 4) {
      ex.write_trace(argv[4]);
      if (rank == 0) {
        // One flow arrow (start and finish) per transfer, one box per chunk.
        std::ifstream in(argv[4]);
        nlohmann::json t = nlohmann::json::parse(in);
        size_t starts = 0, finishes = 0, chunks = 0, recvs = 0, actions = 0;
        for (const auto& e : t["traceEvents"]) {
          starts += e["ph"] == "s";
          finishes += e["ph"] == "f";
          chunks += e["ph"] == "X" && e["tid"] == 0;
        }
        for (const auto& list : s.ranks)
          for (const Action& a : list) {
            recvs += is_recv(a.kind);
            actions += is_compute(a.kind);
          }
        if (starts != recvs || finishes != recvs || chunks != actions) {
          std::printf("rank 0: FAILED trace has %zu/%zu flow ends and %zu chunks, expected %zu and %zu\n", starts,
                      finishes, chunks, recvs, actions);
          return 1;
        }
      }
    }
    // Unpack reduced gradients (only stages that were reduced have a packed buffer).
    for (auto& [st, p] : packed) {
      Layer& l = layers.at(st);
      std::copy(p.begin(), p.begin() + l.gw.size(), l.gw.begin());
      std::copy(p.begin() + l.gw.size(), p.end(), l.gb.begin());
    }

    std::vector<Layer> ref = reference_gradients(S, M);
    double diff2 = 0, ref2 = 0;
    for (auto& [st, l] : layers) {
      for (size_t i = 0; i < l.gw.size(); ++i) {
        diff2 += std::pow(l.gw[i] - ref[st].gw[i], 2);
        ref2 += std::pow(ref[st].gw[i], 2);
      }
      for (size_t i = 0; i < l.gb.size(); ++i) {
        diff2 += std::pow(l.gb[i] - ref[st].gb[i], 2);
        ref2 += std::pow(ref[st].gb[i], 2);
      }
    }
    const double rel = std::sqrt(diff2 / ref2);
    if (!(rel <= 1e-12) || !saved.empty()) {
      std::printf("rank %d: FAILED %s gradient relative difference %.3e (saved tensors left: %zu)\n", rank, argv[1],
                  rel, saved.size());
      return 1;
    }
    std::printf("rank %d: ok %s relative difference %.3e over %zu stages\n", rank, argv[1], rel, layers.size());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "pipeline_executor_rank: %s\n", e.what());
    return 1;
  }
}
