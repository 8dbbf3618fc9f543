// CPU calibration: the model's operations timed here, as the CPU trainer runs them, turned
// into the rates of a cluster description (method in calibrate.h).
#include "switchyard/trainer/plan/calibrate.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstring>
#include <functional>
#include <list>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "../kernels.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/router.h"
#include "switchyard/trainer/dist/grad_sync.h"
#include "switchyard/trainer/dist/parallel_layout.h"
#include "switchyard/trainer/experts.h"
#include "switchyard/trainer/model.h"
#include "switchyard/trainer/plan/expert_traffic.h"
#include "switchyard/trainer/router.h"
#include "switchyard/trainer/train/optimizer.h"

namespace switchyard::trainer::plan {
namespace {

// Seconds per call of fn: one warm-up call, then `reps` samples, each calling fn until at
// least min_sample_s seconds have passed (so that a sample sees the machine's load the way a
// training step does, rather than fitting between two preemptions); the median sample.
// With cpu_clock the seconds are this process's CPU time (all its threads) instead of wall time.
struct Timer {
  int reps = 5;
  double min_sample_s = 0.05;
  bool cpu_clock = false;

  double now() const {
    if (!cpu_clock) return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }

  double operator()(const std::function<void()>& fn) const {
    fn();
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      const double t0 = now();
      int64_t calls = 0;
      double elapsed = 0;
      do {
        fn();
        ++calls;
        elapsed = now() - t0;
      } while (elapsed < min_sample_s);
      t.push_back(elapsed / double(calls));
    }
    return median(t);
  }

  // The same for a collective: every rank makes the same number of calls per sample (the
  // largest count any rank needs to fill min_sample_s after its warm-up call).
  double collective(comm::Communicator& world, const std::function<void()>& fn) const {
    double t0 = now();
    fn();
    const double warm = now() - t0;
    double want = std::ceil(min_sample_s / std::max(warm, 1e-9)), calls = 1;
    world.all_reduce(&want, &calls, 1, comm::DataType::kFloat64, comm::ReduceOp::kMax);
    calls = std::max(calls, 1.0);
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      world.barrier();
      t0 = now();
      for (int64_t c = 0; c < static_cast<int64_t>(calls); ++c) fn();
      t.push_back((now() - t0) / calls);
    }
    return median(t);
  }

  static double median(std::vector<double>& t) {
    std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
    return t[t.size() / 2];
  }
};

std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

enum class GemmPass { kForward, kInputGrad, kWeightGrad };

// Seconds of one pass of a Linear with an N x K weight over M rows, FP32 row-major:
// forward Y[M x N] = X W^T, input gradient dX[M x K] = dY W, weight gradient dW += dY^T X.
double time_sgemm(int64_t m, int64_t n, int64_t k, const Timer& timer, GemmPass pass) {
  std::vector<float> x = random_floats(m * k, 1), w = random_floats(n * k, 2), y = random_floats(m * n, 3);
  const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
  return timer([&] {
    switch (pass) {
      case GemmPass::kForward:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x.data(), K, w.data(), K, 0.0f, y.data(),
                    N);
        break;
      case GemmPass::kInputGrad:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, y.data(), N, w.data(), K, 0.0f, x.data(),
                    K);
        break;
      case GemmPass::kWeightGrad:
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, y.data(), N, x.data(), K, 1.0f, w.data(),
                    K);
        break;
    }
  });
}

// The CPU trainer's causal attention core over B sequences x H heads (trainer/src/mla.cc:
// row blocks of 64 queries, S = scale (Qn Kn^T + Qp Kp^T), softmax, O = P V; backward dP,
// dV, dS, dQ, dK). Returns {forward seconds, backward seconds}.
std::pair<double, double> time_attention(const ModelConfig& m, int64_t B, int64_t T, const Timer& timer) {
  constexpr int64_t kRowBlock = 64;
  const int64_t H = m.num_attention_heads, dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim, dv = m.v_head_dim;
  const int64_t dqk = dn + dr, N = B * T, ldq = H * dqk, ldkv = H * (dn + dv), ldo = H * dv;
  const float scale = static_cast<float>(m.softmax_scale());
  std::vector<float> q = random_floats(N * ldq, 4), kv = random_floats(N * ldkv, 5), kpe = random_floats(N * dr, 6);
  std::vector<float> P(B * H * T * T), o(N * ldo), dO = random_floats(N * ldo, 7), dq(N * ldq), dkv(N * ldkv),
      dkpe(N * dr), dP(T * T);
  auto forward = [&] {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        float* Pbh = &P[(b * H + h) * T * T];
        const float *qn = &q[b * T * ldq + h * dqk], *kn = &kv[b * T * ldkv + h * (dn + dv)], *v = kn + dn;
        const float* kp = &kpe[b * T * dr];
        float* ob = &o[b * T * ldo + h * dv];
        for (int64_t r0 = 0; r0 < T; r0 += kRowBlock) {
          const int64_t r1 = std::min(T, r0 + kRowBlock), mr = r1 - r0;
          float* Pr = Pbh + r0 * T;
          kernels::gemm<float>(false, true, mr, r1, dn, scale, qn + r0 * ldq, ldq, kn, ldkv, 0.0f, Pr, T);
          kernels::gemm<float>(false, true, mr, r1, dr, scale, qn + r0 * ldq + dn, ldq, kp, dr, 1.0f, Pr, T);
          for (int64_t i = r0; i < r1; ++i) {
            float* row = Pbh + i * T;
            const float mx = *std::max_element(row, row + i + 1);
            float sum = 0;
            for (int64_t j = 0; j <= i; ++j) sum += (row[j] = std::exp(row[j] - mx));
            const float inv = 1.0f / sum;
            for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
            std::fill(row + i + 1, row + r1, 0.0f);
          }
          kernels::gemm<float>(false, false, mr, dv, r1, 1.0f, Pr, T, v, ldkv, 0.0f, ob + r0 * ldo, ldo);
        }
      }
  };
  auto backward = [&] {
    std::fill(dkv.begin(), dkv.end(), 0.0f);
    std::fill(dkpe.begin(), dkpe.end(), 0.0f);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const float* Pbh = &P[(b * H + h) * T * T];
        const float *qn = &q[b * T * ldq + h * dqk], *kn = &kv[b * T * ldkv + h * (dn + dv)], *v = kn + dn;
        const float* dOb = &dO[b * T * ldo + h * dv];
        float *dqn = &dq[b * T * ldq + h * dqk], *dkn = &dkv[b * T * ldkv + h * (dn + dv)], *dvh = dkn + dn;
        const float* kp = &kpe[b * T * dr];
        float* dkp = &dkpe[b * T * dr];
        for (int64_t r0 = 0; r0 < T; r0 += kRowBlock) {
          const int64_t r1 = std::min(T, r0 + kRowBlock), mr = r1 - r0;
          const float* Pr = Pbh + r0 * T;
          float* dS = dP.data() + r0 * T;
          kernels::gemm<float>(false, true, mr, r1, dv, 1.0f, dOb + r0 * ldo, ldo, v, ldkv, 0.0f, dS, T);
          kernels::gemm<float>(true, false, r1, dv, mr, 1.0f, Pr, T, dOb + r0 * ldo, ldo, 1.0f, dvh, ldkv);
          for (int64_t i = r0; i < r1; ++i) {
            float* dpr = &dP[i * T];
            const float* pr = Pbh + i * T;
            float dot = 0;
            for (int64_t j = 0; j <= i; ++j) dot += dpr[j] * pr[j];
            for (int64_t j = 0; j <= i; ++j) dpr[j] = pr[j] * (dpr[j] - dot) * scale;
            std::fill(dpr + i + 1, dpr + r1, 0.0f);
          }
          kernels::gemm<float>(false, false, mr, dn, r1, 1.0f, dS, T, kn, ldkv, 0.0f, dqn + r0 * ldq, ldq);
          kernels::gemm<float>(false, false, mr, dr, r1, 1.0f, dS, T, kp, dr, 0.0f, dqn + r0 * ldq + dn, ldq);
          kernels::gemm<float>(true, false, r1, dn, mr, 1.0f, dS, T, qn + r0 * ldq, ldq, 1.0f, dkn, ldkv);
          kernels::gemm<float>(true, false, r1, dr, mr, 1.0f, dS, T, qn + r0 * ldq + dn, ldq, 1.0f, dkp, dr);
        }
      }
  };
  return {timer(forward), timer(backward)};
}

// Element-wise work on N tokens with the trainer's kernels. Each op of the planner's list is
// a sum of these pieces, forward and backward timed separately.
class ElementwiseBench {
 public:
  ElementwiseBench(const ModelConfig& m, int64_t batch, int64_t seq_len) : m_(m), T_(seq_len), N_(batch * seq_len) {
    rope_ = kernels::make_rope_table(seq_len, m.qk_rope_head_dim, m.rope_theta, false, 1.0, seq_len, 32, 1, 1, 1);
  }

  // {forward, backward} seconds of a named op of op_costs.cc; {0, 0} for an unknown name.
  std::pair<double, double> time(const std::string& op, const Timer& timer) {
    const ModelConfig& m = m_;
    const int64_t d = m.hidden_size;
    std::vector<std::function<void()>> fwd, bwd;
    if (op == "attn.norms_rope_residual") {
      add_rmsnorm(d, fwd, bwd);
      add_rmsnorm(m.q_lora_rank, fwd, bwd);
      add_rmsnorm(m.kv_lora_rank, fwd, bwd);
      add_rope(m.num_attention_heads + 1, fwd, bwd);
      add_residual(d, fwd, bwd);
    } else if (op == "ffn.norm_swiglu_residual") {
      add_rmsnorm(d, fwd, bwd);
      add_swiglu(N_ * m.intermediate_size, fwd, bwd);
      add_residual(d, fwd, bwd);
    } else if (op == "moe.norm_swiglu_permute_combine") {
      add_rmsnorm(d, fwd, bwd);
      add_router(fwd);
      add_permute_combine(fwd, bwd);
      add_swiglu(N_ * (m.num_experts_per_tok + m.n_shared_experts) * m.moe_intermediate_size, fwd, bwd);
      add_residual(d, fwd, bwd);
    } else if (op == "head.norm_softmax_loss") {
      add_rmsnorm(d, fwd, bwd);
      add_cross_entropy(fwd, bwd);
    } else if (op == "mtp.norms") {
      add_rmsnorm(d, fwd, bwd);
      add_rmsnorm(d, fwd, bwd);
      add_residual(2 * d, fwd, bwd);  // concatenation [h, e] and its split in the backward
    } else if (op == "embedding.lookup") {
      add_embedding(fwd, bwd);
    } else {
      return {0, 0};
    }
    auto run = [](const std::vector<std::function<void()>>& fs) {
      return [&fs] {
        for (const auto& f : fs) f();
      };
    };
    return {timer(run(fwd)), timer(run(bwd))};
  }

 private:
  std::vector<float>& buf(size_t n, uint64_t seed) {
    store_.push_back(random_floats(n, seed, 0.1f, 1.0f));
    return store_.back();
  }

  void add_rmsnorm(int64_t c, std::vector<std::function<void()>>& fwd, std::vector<std::function<void()>>& bwd) {
    float *x = buf(N_ * c, 10).data(), *w = buf(c, 11).data(), *y = buf(N_ * c, 12).data(), *r = buf(N_, 13).data();
    float *dy = buf(N_ * c, 14).data(), *dx = buf(N_ * c, 15).data(), *dw = buf(c, 16).data();
    const int64_t n = N_;
    const double eps = m_.rms_norm_eps;
    fwd.push_back([=] { kernels::rmsnorm_forward(x, c, w, n, c, eps, y, r); });
    bwd.push_back([=] {
      kernels::rmsnorm_backward_input(x, c, w, dy, n, c, eps, dx, c, false);
      kernels::rmsnorm_backward_weight(x, c, dy, n, c, eps, dw);
    });
  }
  void add_rope(int64_t vectors_per_token, std::vector<std::function<void()>>& fwd,
                std::vector<std::function<void()>>& bwd) {
    const int64_t dr = m_.qk_rope_head_dim, n = N_, T = T_;
    float* v = buf(N_ * vectors_per_token * dr, 20).data();
    const kernels::RopeTable* table = &rope_;
    auto rotate = [=](bool inverse) {
      for (int64_t t = 0; t < n; ++t)
        for (int64_t h = 0; h < vectors_per_token; ++h) {
          float* pe = v + (t * vectors_per_token + h) * dr;
          kernels::rope_apply(*table, t % T, pe, pe, inverse);
        }
    };
    fwd.push_back([=] { rotate(false); });
    bwd.push_back([=] { rotate(true); });
  }
  void add_residual(int64_t c, std::vector<std::function<void()>>& fwd, std::vector<std::function<void()>>& bwd) {
    const int64_t n = N_ * c;
    float *x = buf(n, 30).data(), *u = buf(n, 31).data(), *y = buf(n, 32).data();
    fwd.push_back([=] {
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] + u[i];
    });
    bwd.push_back([=] {
      for (int64_t i = 0; i < n; ++i) x[i] += u[i];
    });
  }
  void add_swiglu(int64_t n, std::vector<std::function<void()>>& fwd, std::vector<std::function<void()>>& bwd) {
    float *a = buf(n, 40).data(), *b = buf(n, 41).data(), *g = buf(n, 42).data(), *s = buf(n, 43).data();
    float *da = buf(n, 44).data(), *db = buf(n, 45).data();
    fwd.push_back([=] { kernels::swiglu_forward(a, b, n, g, s); });
    bwd.push_back([=] { kernels::swiglu_backward(a, b, s, g, n, da, db); });
  }
  // Sigmoid scores, group-limited top-k, routing plan and the sequence-wise balance top-k.
  void add_router(std::vector<std::function<void()>>& fwd) {
    const ModelConfig& m = m_;
    const int64_t E = m.n_routed_experts, K = m.num_experts_per_tok, n = N_;
    float* logits = buf(N_ * E, 50).data();
    float* scores = buf(N_ * E, 51).data();
    float* weights = buf(N_ * K, 52).data();
    float* bias = buf(E, 53).data();
    std::fill(bias, bias + E, 0.0f);
    const RouterConfig rc{E, K, m.n_group, m.topk_group, m.routed_scaling_factor, m.norm_topk_prob};
    fwd.push_back([=] {
      for (int64_t i = 0; i < n * E; ++i) scores[i] = 1.0f / (1.0f + std::exp(-logits[i]));
      std::vector<int64_t> idx(n * K), top(K);
      double margin = 0;
      route_group_limited(rc, scores, bias, n, idx.data(), weights, &margin);
      RoutingPlan plan = make_routing_plan(idx.data(), n, K, E);
      for (int64_t t = 0; t < n; ++t) plain_topk(scores + t * E, E, K, top.data());
    });
  }
  // Gather of K copies of each token row (expert-major), weighted combine back; backward:
  // per-copy weight gradients (dot products), scaled copies and their scatter-add.
  void add_permute_combine(std::vector<std::function<void()>>& fwd, std::vector<std::function<void()>>& bwd) {
    const int64_t d = m_.hidden_size, K = m_.num_experts_per_tok, n = N_;
    float *x = buf(N_ * d, 60).data(), *rows = buf(N_ * K * d, 61).data(), *w = buf(N_ * K, 62).data();
    float *y = buf(N_ * d, 63).data(), *dy = buf(N_ * d, 64).data(), *drows = buf(N_ * K * d, 65).data();
    float *dw = buf(N_ * K, 66).data(), *dx = buf(N_ * d, 67).data();
    std::vector<int64_t> perm(N_ * K);  // expert-major order of (token, slot): a fixed shuffle
    for (int64_t a = 0; a < n * K; ++a) perm[a] = a;
    std::shuffle(perm.begin(), perm.end(), std::mt19937_64(68));
    perm_ = perm;
    const int64_t* p = perm_.data();
    fwd.push_back([=] {
      for (int64_t r = 0; r < n * K; ++r) std::copy(x + (p[r] / K) * d, x + (p[r] / K + 1) * d, rows + r * d);
      std::fill(y, y + n * d, 0.0f);
      for (int64_t r = 0; r < n * K; ++r) {
        const float wr = w[p[r]];
        float* yt = y + (p[r] / K) * d;
        const float* src = rows + r * d;
        for (int64_t j = 0; j < d; ++j) yt[j] += wr * src[j];
      }
    });
    bwd.push_back([=] {
      for (int64_t r = 0; r < n * K; ++r) {
        const float* g = dy + (p[r] / K) * d;
        const float* src = rows + r * d;
        float dot = 0;
        for (int64_t j = 0; j < d; ++j) dot += g[j] * src[j];
        dw[p[r]] = dot;
        for (int64_t j = 0; j < d; ++j) drows[r * d + j] = w[p[r]] * g[j];
      }
      for (int64_t r = 0; r < n * K; ++r) {
        float* xt = dx + (p[r] / K) * d;
        for (int64_t j = 0; j < d; ++j) xt[j] += drows[r * d + j];
      }
    });
  }
  void add_cross_entropy(std::vector<std::function<void()>>& fwd, std::vector<std::function<void()>>& bwd) {
    const int64_t V = m_.vocab_size, n = N_;
    float *logits = buf(N_ * V, 70).data(), *probs = buf(N_ * V, 71).data();
    targets_.resize(N_);
    for (int64_t t = 0; t < n; ++t) targets_[t] = (t * 7919) % V;
    const int64_t* tg = targets_.data();
    fwd.push_back([=] { kernels::cross_entropy_forward(logits, tg, n, V, probs); });
    bwd.push_back([=] { kernels::cross_entropy_backward(probs, tg, n, V, 1.0); });
  }
  void add_embedding(std::vector<std::function<void()>>& fwd, std::vector<std::function<void()>>& bwd) {
    const int64_t d = m_.hidden_size, V = m_.vocab_size, n = N_;
    float *table = buf(V * d, 80).data(), *grad = buf(V * d, 81).data(), *h = buf(N_ * d, 82).data();
    fwd.push_back([=] {
      for (int64_t t = 0; t < n; ++t) std::copy(table + (t * 7919 % V) * d, table + (t * 7919 % V + 1) * d, h + t * d);
    });
    bwd.push_back([=] {
      for (int64_t t = 0; t < n; ++t) {
        float* g = grad + (t * 7919 % V) * d;
        for (int64_t j = 0; j < d; ++j) g[j] += h[t * d + j];
      }
    });
  }

  const ModelConfig& m_;
  int64_t T_, N_;
  kernels::RopeTable rope_;
  std::list<std::vector<float>> store_;  // stable addresses for the lambdas
  std::vector<int64_t> perm_, targets_;
};

// Seconds of one MoE layer's expert exchange, forward and backward, through dispatch::Buffer
// as the distributed CPU trainer runs it (trainer/src/dist/dispatched_experts.cc, FP32 wire,
// the weighted form): dispatch with the gate weights, the wire -> expert rows copy, the
// expert rows -> wire copy, the weighted combine and its copy out; backward: dy -> wire,
// combine_backward, its copy into the expert row gradients, the input-gradient rows -> wire,
// dispatch_backward and the add into dx. `tokens` rows per rank, routed like the model
// (route_group_limited on uniform random scores, a different seed per rank). Collective over ep.
double time_dispatch_path(const std::shared_ptr<comm::Communicator>& ep, const ModelConfig& m, int64_t tokens,
                          const Timer& timer) {
  const int64_t d = m.hidden_size, E = m.n_routed_experts, K = m.num_experts_per_tok;
  dispatch::RouterConfig rc;
  rc.num_experts = static_cast<int>(E);
  rc.top_k = static_cast<int>(K);
  rc.num_groups = static_cast<int>(m.n_group);
  rc.top_groups = static_cast<int>(m.topk_group);
  rc.route_scale = m.routed_scaling_factor;
  rc.normalize = m.norm_topk_prob;
  const std::vector<float> scores = random_floats(static_cast<size_t>(tokens * E), 100 + ep->rank(), 0.0f, 1.0f);
  std::vector<int64_t> idx(static_cast<size_t>(tokens * K));
  std::vector<float> w(idx.size());
  dispatch::route_group_limited(rc, scores.data(), nullptr, tokens, idx.data(), w.data());
  dispatch::BufferOptions bo;
  bo.num_experts = static_cast<int>(E);
  bo.hidden = d;
  bo.max_tokens_per_rank = tokens;
  bo.two_hop = true;
  dispatch::Buffer buffer(ep, bo);
  const std::vector<float> x = random_floats(static_cast<size_t>(tokens * d), 101 + ep->rank());
  std::vector<float> rows, wire, out(x.size()), dx(x.size());
  return timer.collective(*ep, [&] {
    dispatch::DispatchArgs a;
    a.x = x.data();
    a.dtype = comm::DataType::kFloat32;
    a.topk_idx = idx.data();
    a.topk_weights = w.data();
    a.num_tokens = tokens;
    a.top_k = static_cast<int>(K);
    a.recv_x = false;
    a.expert_major_x = true;
    dispatch::DispatchResult r = buffer.dispatch(a);
    const size_t P = r.expert_row_slot.size();
    rows.resize(P * d);
    if (P > 0) std::memcpy(rows.data(), r.expert_x.data(), P * d * sizeof(float));  // decode
    wire.resize(P * d);
    if (P > 0) std::memcpy(wire.data(), rows.data(), P * d * sizeof(float));  // encode (expert outputs)
    dispatch::CombineArgs c;
    c.expert_out = wire.data();
    c.dtype = comm::DataType::kFloat32;
    c.handle = &r.handle;
    c.weights = r.recv_topk_weights.data();
    dispatch::CombineResult y = buffer.combine(c);
    std::memcpy(out.data(), y.y.data(), out.size() * sizeof(float));
    // Backward.
    dispatch::CombineBackwardArgs cb;
    cb.grad_y = out.data();
    cb.dtype = comm::DataType::kFloat32;
    cb.handle = &r.handle;
    cb.expert_out = wire.data();
    cb.weights = r.recv_topk_weights.data();
    dispatch::CombineBackwardResult g = buffer.combine_backward(cb);
    if (P > 0) std::memcpy(rows.data(), g.grad_expert_out.data(), P * d * sizeof(float));
    if (P > 0) std::memcpy(wire.data(), rows.data(), P * d * sizeof(float));
    dispatch::CombineResult gx = buffer.dispatch_backward(wire.data(), comm::DataType::kFloat32, r.handle);
    const float* gy = reinterpret_cast<const float*>(gx.y.data());
    for (size_t i = 0; i < dx.size(); ++i) dx[i] += gy[i];
  });
}

// Max over the ranks of world (the step waits for the slowest rank); identity without one.
void max_over_ranks(comm::Communicator* world, std::vector<double>& v) {
  if (world == nullptr || world->size() == 1 || v.empty()) return;
  std::vector<double> out(v.size());
  world->all_reduce(v.data(), out.data(), v.size(), comm::DataType::kFloat64, comm::ReduceOp::kMax);
  v = out;
}

}  // namespace

ClusterSpec calibrate_cpu(const ClusterSpec& base, const TrainingSpec& spec, const Layout& layout,
                          const std::shared_ptr<comm::Communicator>& world, int reps, double min_sample_s, bool cpu_clock) {
  SY_REQUIRE(reps >= 1, "calibrate: reps " << reps << " must be >= 1");
  SY_REQUIRE(min_sample_s >= 0, "calibrate: min_sample_s " << min_sample_s << " must be >= 0");
  const Timer timer{reps, min_sample_s, cpu_clock};
  SY_REQUIRE(spec.recipe.linear_gemm == "fp32",
             "calibrate: the CPU trainer runs the fp32 recipe, not " << spec.recipe.name);
  SY_REQUIRE(layout.ep >= 1 && layout.dp >= 1, "calibrate: ep " << layout.ep << " and dp " << layout.dp << " must be >= 1");
  openblas_set_num_threads(1);
  const ModelConfig& m = spec.model;
  ClusterSpec c = base;
  c.gemm_shapes.clear();
  c.elementwise_gbps.clear();
  c.collective_gbps.clear();
  const int64_t tokens = spec.micro_batch * spec.seq_len;
  const std::vector<BlockCost> blocks = model_blocks(m, spec.mtp_depth, spec.seq_len, spec.recipe, spec.recompute);
  // Every measured time goes into one vector so that one all-reduce takes the max over ranks.
  std::vector<double> seconds;

  // GEMMs: the three passes of every distinct weight shape.
  std::set<std::pair<int64_t, int64_t>> shapes;
  for (const BlockCost& b : blocks)
    for (const OpCost& op : b.ops)
      if (op.kind == OpCost::Kind::kGemm) shapes.insert({op.n, op.k});
  const double K = static_cast<double>(std::max<int64_t>(1, m.num_experts_per_tok));
  const double E = static_cast<double>(std::max<int64_t>(1, m.n_routed_experts));
  std::vector<int64_t> rows;
  for (const auto& [n, k] : shapes) {
    // A routed expert sees the tokens of the whole EP group routed to it: tokens x EP x K / E.
    const bool expert = m.n_routed_experts > 0 && ((n == 2 * m.moe_intermediate_size && k == m.hidden_size) ||
                                                   (n == m.hidden_size && k == m.moe_intermediate_size));
    rows.push_back(expert ? std::max<int64_t>(1, static_cast<int64_t>(tokens * layout.ep * K / E)) : tokens);
    seconds.push_back(time_sgemm(rows.back(), n, k, timer, GemmPass::kForward) +
                      time_sgemm(rows.back(), n, k, timer, GemmPass::kInputGrad) +
                      time_sgemm(rows.back(), n, k, timer, GemmPass::kWeightGrad));
  }
  // Attention core.
  const auto [att_f, att_b] = time_attention(m, spec.micro_batch, spec.seq_len, timer);
  seconds.push_back(att_f);
  seconds.push_back(att_b);
  // Element-wise ops, by the planner's op names.
  ElementwiseBench eb(m, spec.micro_batch, spec.seq_len);
  std::vector<const OpCost*> elementwise;
  std::set<std::string> seen;
  for (const BlockCost& b : blocks)
    for (const OpCost& op : b.ops)
      if (op.kind == OpCost::Kind::kElementwise && seen.insert(op.name).second) {
        const auto [f, bw] = eb.time(op.name, timer);
        if (f + bw <= 0) continue;
        elementwise.push_back(&op);
        seconds.push_back(f + bw);
      }
  // Kept activations in fresh memory: the CPU trainer allocates its activation tensors anew
  // every step (std::vector, zero-initialised) and frees them after the backward. One
  // sample allocates the whole model's kept activation bytes of a micro-batch as tensors of
  // tokens x hidden floats, then frees them (page faults, page clearing, the zero fill).
  double act_bytes = 0;
  for (const BlockCost& b : blocks) act_bytes += b.activation_bytes * double(tokens);
  const size_t tensor_floats = static_cast<size_t>(tokens * m.hidden_size);
  const size_t num_tensors = std::max<size_t>(1, static_cast<size_t>(act_bytes / (4.0 * double(tensor_floats))));
  seconds.push_back(timer([&] {
    std::vector<std::vector<float>> kept;
    kept.reserve(num_tensors);
    for (size_t t = 0; t < num_tensors; ++t) kept.emplace_back(tensor_floats);
  }));
  // Collectives: the multi-rank layouts use the distributed trainer's own pieces.
  const int g = world ? world->size() : 1;
  double dense = 0, expert = 0;
  for (const BlockCost& b : blocks) dense += double(b.dense_params), expert += double(b.expert_params);
  const bool measure_dispatch = world && layout.ep > 1 && m.n_routed_experts > 0;
  // Optimizer and gradient sync. One process: the Trainer's zero_grad + clip_grad_norm +
  // AdamW over the whole model. More ranks (pp 1, world = ep x dp): what DistTrainer without
  // ZeRO-1 runs after the backward (trainer/src/dist/dist_trainer.cc), with its own classes:
  // GradientSync::reduce (dense gradients all-reduced over the EP x DP replicas, owned experts
  // over DP, others zeroed) timed alone -> all_reduce rate; then GradientSync::clip + AdamW
  // over the whole model (every rank builds it over model.parameters()) + zero_grad ->
  // optimizer rate.
  Model<float> model(m);
  AdamW adamw(model.parameters(), AdamWConfig{});
  auto fill_grads = [&] {
    for (const auto& p : model.parameters().all()) std::fill(p->grad.begin(), p->grad.end(), 1e-3f);
  };
  fill_grads();
  const bool dist_sync = g > 1 && layout.pp == 1 && layout.ep * layout.dp == g;
  if (dist_sync) {
    dist::ParallelLayout pl;
    pl.ep = layout.ep;
    pl.dp = layout.dp;
    const dist::ParallelGroups groups = dist::make_groups(world, pl);
    dist::GradientSync sync(model.parameters(), m.n_routed_experts, groups);
    seconds.push_back(timer.collective(*world, [&] { sync.reduce(); }));
    seconds.push_back(timer.collective(*world, [&] {
      sync.clip(1.0);
      adamw.step(1e-4);
      model.zero_grad();
    }));
  } else {
    seconds.push_back(timer([&] {
      clip_grad_norm(model.parameters(), 1.0);
      adamw.step(1e-4);
      model.zero_grad();
    }));
    if (g > 1) {  // other layouts: a plain all_reduce of the synced gradient floats
      const double reduced = dense + (layout.dp > 1 ? expert / layout.ep : 0.0);
      std::vector<float> send = random_floats(static_cast<size_t>(reduced), 90), recv(send.size());
      seconds.push_back(timer.collective(*world, [&] {
        world->all_reduce(send.data(), recv.data(), send.size(), comm::DataType::kFloat32, comm::ReduceOp::kSum);
      }));
    }
  }
  if (measure_dispatch) {
    SY_REQUIRE(g % layout.ep == 0, "calibrate: ep " << layout.ep << " does not divide the " << g << " ranks");
    // EP groups are consecutive ranks (trainer/src/dist/parallel_layout.cc's order: ep fastest).
    const std::shared_ptr<comm::Communicator> ep = g == layout.ep ? world : world->split(world->rank() / layout.ep, world->rank());
    seconds.push_back(time_dispatch_path(ep, m, tokens, timer));
  }
  max_over_ranks(world.get(), seconds);

  // Rates from the slowest rank's times.
  size_t i = 0;
  for (const auto& [n, k] : shapes) {
    const double flops = 3 * 2.0 * double(rows[i]) * double(n) * double(k);
    c.gemm_shapes.push_back({"fp32", n, k, flops / seconds[i] / 1e12});
    ++i;
  }
  OpCost core;
  for (const BlockCost& b : blocks)
    for (const OpCost& op : b.ops)
      if (op.kind == OpCost::Kind::kAttention) core = op;
  c.attention_fwd_tflops = core.fwd_flops * double(tokens) / seconds[i++] / 1e12;
  c.attention_bwd_tflops = core.bwd_flops * double(tokens) / seconds[i++] / 1e12;
  for (const OpCost* op : elementwise)
    c.elementwise_gbps[op->name] = (op->fwd_bytes + op->bwd_bytes) * double(tokens) / seconds[i++] / 1e9;
  c.first_touch_gbps = double(num_tensors * tensor_floats) * 4 / seconds[i++] / 1e9;
  const double params = dense + expert;
  const PrecisionRecipe& r = spec.recipe;
  const double opt_bytes = params * (2 * r.master_bytes + 4 * r.moment_bytes + r.grad_bytes + r.weight_copy_bytes);
  if (dist_sync) {
    // The planner's ring bytes (planner.cc, no ZeRO-1): dense over ep x dp, experts over dp.
    auto ring = [](int n) { return double(n - 1) / n; };
    const double bytes = 2 * r.grad_bytes * (dense * ring(g) + expert / layout.ep * ring(layout.dp));
    c.collective_gbps["all_reduce"] = bytes / seconds[i++] / 1e9;
    c.optimizer_gbps = opt_bytes / seconds[i++] / 1e9;
  } else {
    c.optimizer_gbps = opt_bytes / seconds[i++] / 1e9;
    if (g > 1) {
      const double reduced = dense + (layout.dp > 1 ? expert / layout.ep : 0.0);
      c.collective_gbps["all_reduce"] = 2 * reduced * r.grad_bytes * double(g - 1) / g / seconds[i++] / 1e9;
    }
  }
  if (measure_dispatch) {
    // Rate in the planner's all-to-all bytes (planner.cc): per token and direction the larger
    // of the network and the intra-node copies times (dispatch + combine) bytes, both ways.
    const int gpn = std::max(1, base.gpus_per_node);
    const int ep_nodes = layout.ep <= gpn ? 1 : layout.ep / gpn;
    const ExpertTraffic t = simulate_expert_traffic(m, layout.ep, ep_nodes);
    const double row = 2 * double(m.hidden_size) * r.act_bytes;  // FP32 dispatch + combine rows
    const double copies = std::max(t.remote_nodes_per_token, t.nvlink_copies_per_token);
    const double bytes = 2 * copies * row * double(tokens);
    if (bytes > 0) c.collective_gbps["all_to_all"] = bytes / seconds[i] / 1e9;
    ++i;
  }
  const std::string how = std::string(" (sy-plan --calibrate") + (cpu_clock ? " in process CPU seconds" : "") +
                          ": " + std::to_string(g) + " rank(s) measuring at once, max over " +
                          "ranks of medians of " + std::to_string(reps) + " samples of >= " + std::to_string(min_sample_s) + " s, " + std::to_string(tokens) +
                          " tokens per rank)";
  c.sources["gemm_shapes"] = "cblas_sgemm forward + input-gradient + weight-gradient passes, 1 thread" + how;
  c.sources["attention_fwd_tflops"] = c.sources["attention_bwd_tflops"] =
      "the CPU trainer's blocked causal attention (scores, softmax, P V; backward), planner FLOPs / time" + how;
  c.sources["elementwise_gbps"] =
      "the trainer's kernels per op (RMSNorm, RoPE, SwiGLU, router, permute/combine, cross-entropy, residuals), "
      "planner bytes / time" + how;
  c.sources["first_touch_gbps"] =
      "zero-initialised std::vectors of tokens x hidden floats adding up to the model's kept activation bytes of "
      "a micro-batch, allocated and freed (the CPU trainer's per-step activations), bytes / time" + how;
  c.sources["optimizer_gbps"] =
      std::string(dist_sync ? "GradientSync::clip + AdamW over the whole model + zero_grad (DistTrainer's step)"
                            : "zero_grad + clip_grad_norm + AdamW over the model") +
      ", planner bytes / time" + how;
  if (g > 1)
    c.sources["collective_gbps"] =
        std::string(dist_sync ? "the trainer's GradientSync::reduce (dist/grad_sync.cc)" : "comm all_reduce of the synced gradients") +
        ", the planner's ring bytes / time; dispatch::Buffer dispatch + weighted combine + combine_backward + dispatch_backward of one MoE "
        "layer with the trainer's FP32 wire copies (dispatched_experts.cc), the planner's all-to-all bytes / time" + how;
  return c;
}

}  // namespace switchyard::trainer::plan
