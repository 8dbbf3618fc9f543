// SyntheticMoeStage (synthetic_moe.h): an MoE stage whose tokens move through dispatch::Buffer.
#include "switchyard/pipeline/synthetic_moe.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "switchyard/common/error.h"
#include "switchyard/dispatch/buffer.h"

namespace switchyard::pipeline {

namespace {

// Deterministic value in [-1, 1) from four integers.
double hash_value(int a, int b, int c, int d) {
  uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(a + 3) ^ 0xBF58476D1CE4E5B9ull * static_cast<uint64_t>(b + 5) ^
               0x94D049BB133111EBull * static_cast<uint64_t>(c + 7) ^ 0xD6E8FEB86659FD93ull * static_cast<uint64_t>(d + 11);
  x ^= x >> 31;
  x *= 0xD6E8FEB86659FD93ull;
  x ^= x >> 29;
  return (x % 2000000) / 1000000.0 - 1.0;
}

const float* as_float(const std::vector<uint8_t>& v) { return reinterpret_cast<const float*>(v.data()); }

// Posts a dispatch/combine: on the worker as a blocking call, else through the async form.
// Returns the wait, which yields the result.
// times (may be null): filled like CommWorker::post does; on the async path started = posted and
// finished = when the wait returned (the helper thread's own times are not visible).
std::function<dispatch::DispatchResult()> start_dispatch(dispatch::Buffer* buffer, CommWorker* worker,
                                                         const dispatch::DispatchArgs& args,
                                                         std::shared_ptr<CommJobTimes> times) {
  if (!worker) {
    if (times) times->posted = times->started = monotonic_seconds();
    auto pending = std::make_shared<dispatch::Pending<dispatch::DispatchResult>>(buffer->dispatch_async(args));
    return [pending, times] {
      auto r = pending->wait();
      if (times) times->finished = monotonic_seconds();
      return r;
    };
  }
  auto out = std::make_shared<dispatch::DispatchResult>();
  auto wait = worker->post([buffer, args, out, times] { *out = buffer->dispatch(args); }, times.get());
  return [out, wait] {
    wait();
    return std::move(*out);
  };
}

std::function<dispatch::CombineResult()> start_combine(dispatch::Buffer* buffer, CommWorker* worker,
                                                       const dispatch::CombineArgs& args,
                                                       std::shared_ptr<CommJobTimes> times) {
  if (!worker) {
    if (times) times->posted = times->started = monotonic_seconds();
    auto pending = std::make_shared<dispatch::Pending<dispatch::CombineResult>>(buffer->combine_async(args));
    return [pending, times] {
      auto r = pending->wait();
      if (times) times->finished = monotonic_seconds();
      return r;
    };
  }
  auto out = std::make_shared<dispatch::CombineResult>();
  auto wait = worker->post([buffer, args, out, times] { *out = buffer->combine(args); }, times.get());
  return [out, wait] {
    wait();
    return std::move(*out);
  };
}

}  // namespace

float SyntheticMoeStage::attn_init(int stage, int i, int j) { return 0.5f * hash_value(stage, i, j, 1); }
float SyntheticMoeStage::expert_init(int stage, int e, int i, int j) { return 0.4f * hash_value(stage, e, i * 64 + j, 2); }

void SyntheticMoeStage::route(int stage, int mb, int ep_rank, int token, const SyntheticMoeOptions& opt, int64_t* idx,
                              float* weights) {
  // K distinct experts: a start and a stride coprime with nothing in particular, then dedup.
  int start = static_cast<int>((hash_value(stage, mb, ep_rank, token) + 1.0) * 0.5 * opt.experts) % opt.experts;
  for (int k = 0; k < opt.top_k; ++k) {
    idx[k] = (start + k) % opt.experts;
    weights[k] = 0.25f + 0.5f * static_cast<float>(std::fabs(hash_value(stage, mb, ep_rank * 1000 + token, k + 3)));
  }
}

struct SyntheticMoeStage::Saved {
  std::vector<float> x, a, weights, h, gy, grad_h, g_expert_x, ga, gz;
  std::vector<uint8_t> dy_rows;  // COMBINE.B's received rows of dy, [P x H] FP32
  std::vector<int64_t> idx;
  dispatch::DispatchResult disp;
  float* y = nullptr;
  float* gx = nullptr;
};

SyntheticMoeStage::SyntheticMoeStage(int stage, std::shared_ptr<dispatch::Buffer> buffer, int ep_rank, int ep_size,
                                     const SyntheticMoeOptions& opt)
    : stage_(stage), ep_rank_(ep_rank), ep_size_(ep_size), opt_(opt), buffer_(std::move(buffer)) {
  SY_REQUIRE(opt.experts % ep_size == 0 && opt.top_k <= opt.experts && opt.tokens > 0 && opt.hidden > 0,
             "SyntheticMoeStage: experts = " << opt.experts << " must be a multiple of the EP size " << ep_size
                                             << " and >= top_k = " << opt.top_k);
  const int H = opt.hidden, L = opt.experts / ep_size;
  attn.resize(H * H);
  for (int i = 0; i < H; ++i)
    for (int j = 0; j < H; ++j) attn[i * H + j] = attn_init(stage, i, j);
  experts.resize(static_cast<size_t>(L) * H * H);
  for (int l = 0; l < L; ++l)
    for (int i = 0; i < H; ++i)
      for (int j = 0; j < H; ++j) experts[(static_cast<size_t>(l) * H + i) * H + j] = expert_init(stage, ep_rank * L + l, i, j);
  grad_attn.assign(attn.size(), 0.0f);
  grad_experts.assign(experts.size(), 0.0f);
}

std::shared_ptr<dispatch::Buffer> SyntheticMoeStage::make_buffer(std::shared_ptr<comm::Communicator> ep,
                                                                 const SyntheticMoeOptions& opt) {
  dispatch::BufferOptions bo;
  bo.num_experts = opt.experts;
  bo.hidden = opt.hidden;
  bo.max_tokens_per_rank = opt.tokens;
  return std::make_shared<dispatch::Buffer>(std::move(ep), bo);
}

std::vector<SubStepTask> SyntheticMoeStage::forward_tasks(int mb, const float* x, float* y) {
  auto sv = std::make_shared<Saved>();
  saved_[mb] = sv;
  sv->y = y;
  const int T = opt_.tokens, H = opt_.hidden, K = opt_.top_k, L = opt_.experts / ep_size_;
  auto step = [&](SubStepKind k) {
    SubStep s;
    s.kind = k;
    s.stage = stage_;
    s.microbatch = mb;
    return s;
  };
  std::vector<SubStepTask> tasks(4);
  tasks[0].step = step(SubStepKind::kAttention);
  tasks[0].run = [this, sv, x, T, H, K, mb]() {
    sv->x.assign(x, x + T * H);
    sv->a.assign(T * H, 0.0f);
    for (int rep = 0; rep < opt_.compute_repeat; ++rep)
      for (int t = 0; t < T; ++t)
        for (int i = 0; i < H; ++i) {
          float z = 0;
          for (int j = 0; j < H; ++j) z += attn[i * H + j] * sv->x[t * H + j];
          sv->a[t * H + i] = std::tanh(z);
        }
    sv->idx.resize(T * K);
    sv->weights.resize(T * K);
    for (int t = 0; t < T; ++t) route(stage_, mb, ep_rank_, t, opt_, &sv->idx[t * K], &sv->weights[t * K]);
  };
  tasks[1].step = step(SubStepKind::kDispatch);
  tasks[1].start = [this, sv, T, K, mb]() -> std::function<void()> {
    dispatch::DispatchArgs args;
    args.x = sv->a.data();
    args.dtype = comm::DataType::kFloat32;
    args.topk_idx = sv->idx.data();
    args.topk_weights = sv->weights.data();
    args.num_tokens = T;
    args.top_k = K;
    auto times = log_ ? std::make_shared<CommJobTimes>() : nullptr;
    auto pending = start_dispatch(buffer_.get(), worker_.get(), args, times);
    return [this, sv, pending, times, mb]() {
      sv->disp = pending();
      record(SubStepKind::kDispatch, false, mb, times.get());
    };
  };
  tasks[2].step = step(SubStepKind::kExperts);
  tasks[2].run = [this, sv, H, L]() {
    const auto& d = sv->disp;
    const int64_t P = static_cast<int64_t>(d.expert_row_token.size());
    sv->h.assign(P * H, 0.0f);
    const float* ex = as_float(d.expert_x);
    for (int rep = 0; rep < opt_.compute_repeat; ++rep)
      for (int l = 0; l < L; ++l)
        for (int64_t row = d.expert_offsets[l]; row < d.expert_offsets[l + 1]; ++row) {
          if (d.expert_row_token[row] < 0) continue;
          const float* w = &experts[static_cast<size_t>(l) * H * H];
          for (int i = 0; i < H; ++i) {
            float s = 0;
            for (int j = 0; j < H; ++j) s += w[i * H + j] * ex[row * H + j];
            sv->h[row * H + i] = s;
          }
        }
  };
  tasks[3].step = step(SubStepKind::kCombine);
  tasks[3].start = [this, sv, T, H, mb]() -> std::function<void()> {
    dispatch::CombineArgs args;
    args.expert_out = sv->h.data();
    args.dtype = comm::DataType::kFloat32;
    args.handle = &sv->disp.handle;
    args.weights = sv->disp.recv_topk_weights.data();
    auto times = log_ ? std::make_shared<CommJobTimes>() : nullptr;
    auto pending = start_combine(buffer_.get(), worker_.get(), args, times);
    return [this, sv, pending, times, mb, T, H]() {
      dispatch::CombineResult r = pending();
      record(SubStepKind::kCombine, false, mb, times.get());
      const float* m = as_float(r.y);
      for (int i = 0; i < T * H; ++i) sv->y[i] = sv->a[i] + m[i];
    };
  };
  return tasks;
}

std::vector<SubStepTask> SyntheticMoeStage::backward_tasks(int mb, const float* gy, float* gx) {
  auto sv = saved_.at(mb);
  sv->gx = gx;
  const int T = opt_.tokens, H = opt_.hidden, K = opt_.top_k, L = opt_.experts / ep_size_;
  auto step = [&](SubStepKind k) {
    SubStep s;
    s.kind = k;
    s.backward = true;
    s.stage = stage_;
    s.microbatch = mb;
    return s;
  };
  std::vector<SubStepTask> tasks(4);
  tasks[0].step = step(SubStepKind::kCombine);
  tasks[0].start = [this, sv, gy, T, H, K, mb]() -> std::function<void()> {
    sv->gy.assign(gy, gy + T * H);
    dispatch::DispatchArgs args;
    args.x = sv->gy.data();
    args.dtype = comm::DataType::kFloat32;
    args.topk_idx = sv->idx.data();
    args.num_tokens = T;
    args.top_k = K;
    args.cached_handle = &sv->disp.handle;
    auto times = log_ ? std::make_shared<CommJobTimes>() : nullptr;
    auto pending = start_dispatch(buffer_.get(), worker_.get(), args, times);
    return [this, sv, pending, times, mb]() {
      sv->dy_rows = std::move(pending().expert_x);
      record(SubStepKind::kCombine, true, mb, times.get());
    };
  };
  // The gate weighting of dy is compute: it belongs to EXPERTS.B, not to COMBINE.B's wait
  // (which would count it as communication and run it after the overlapped compute).
  tasks[1].step = step(SubStepKind::kExperts);
  tasks[1].run = [this, sv, H, K, L]() {
    const auto& d = sv->disp;
    const int64_t P = static_cast<int64_t>(d.expert_row_token.size());
    const float* g = as_float(sv->dy_rows);
    sv->grad_h.assign(P * H, 0.0f);
    for (int64_t row = 0; row < P; ++row) {
      const int tok = d.expert_row_token[row];
      if (tok < 0) continue;
      const float w = d.recv_topk_weights[static_cast<size_t>(tok) * K + d.expert_row_slot[row]];
      for (int i = 0; i < H; ++i) sv->grad_h[row * H + i] = w * g[row * H + i];
    }
    sv->g_expert_x.assign(P * H, 0.0f);
    for (int rep = 0; rep < opt_.compute_repeat; ++rep)
      for (int l = 0; l < L; ++l)
        for (int64_t row = d.expert_offsets[l]; row < d.expert_offsets[l + 1]; ++row) {
          if (d.expert_row_token[row] < 0) continue;
          const float* w = &experts[static_cast<size_t>(l) * H * H];
          for (int j = 0; j < H; ++j) {
            float s = 0;
            for (int i = 0; i < H; ++i) s += w[i * H + j] * sv->grad_h[row * H + i];
            sv->g_expert_x[row * H + j] = s;
          }
        }
  };
  tasks[2].step = step(SubStepKind::kDispatch);
  tasks[2].start = [this, sv, T, H, mb]() -> std::function<void()> {
    dispatch::CombineArgs args;
    args.expert_out = sv->g_expert_x.data();
    args.dtype = comm::DataType::kFloat32;
    args.handle = &sv->disp.handle;
    args.weights = nullptr;
    auto times = log_ ? std::make_shared<CommJobTimes>() : nullptr;
    auto pending = start_combine(buffer_.get(), worker_.get(), args, times);
    return [this, sv, pending, times, mb, T, H]() {
      dispatch::CombineResult r = pending();
      record(SubStepKind::kDispatch, true, mb, times.get());
      const float* m = as_float(r.y);
      sv->ga.assign(T * H, 0.0f);
      for (int i = 0; i < T * H; ++i) sv->ga[i] = sv->gy[i] + m[i];  // turned into gz by ATTN.B
    };
  };
  tasks[3].step = step(SubStepKind::kAttention);
  tasks[3].run = [this, sv, T, H]() {
    sv->gz.resize(T * H);
    for (int i = 0; i < T * H; ++i) sv->gz[i] = sv->ga[i] * (1.0f - sv->a[i] * sv->a[i]);
    if (!sv->gx) return;
    for (int rep = 0; rep < opt_.compute_repeat; ++rep)
      for (int t = 0; t < T; ++t)
        for (int j = 0; j < H; ++j) {
          float s = 0;
          for (int i = 0; i < H; ++i) s += sv->gz[t * H + i] * attn[i * H + j];
          sv->gx[t * H + j] = s;
        }
  };
  return tasks;
}

void SyntheticMoeStage::record(SubStepKind kind, bool backward, int mb, const CommJobTimes* times) {
  if (!log_ || !times) return;
  CollectiveTimes c;
  c.step.kind = kind;
  c.step.backward = backward;
  c.step.stage = stage_;
  c.step.microbatch = mb;
  c.times = *times;
  log_->push_back(c);
}

void SyntheticMoeStage::weight_grads(int mb) {
  auto it = saved_.find(mb);
  SY_REQUIRE(it != saved_.end(), "SyntheticMoeStage " << stage_ << ": weight_grads(" << mb << ") without its forward");
  Saved& sv = *it->second;
  const int T = opt_.tokens, H = opt_.hidden, L = opt_.experts / ep_size_;
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < H; ++i)
      for (int j = 0; j < H; ++j) grad_attn[i * H + j] += sv.gz[t * H + i] * sv.x[t * H + j];
  const auto& d = sv.disp;
  const float* ex = as_float(d.expert_x);
  for (int l = 0; l < L; ++l)
    for (int64_t row = d.expert_offsets[l]; row < d.expert_offsets[l + 1]; ++row) {
      if (d.expert_row_token[row] < 0) continue;
      float* gw = &grad_experts[static_cast<size_t>(l) * H * H];
      for (int i = 0; i < H; ++i)
        for (int j = 0; j < H; ++j) gw[i * H + j] += sv.grad_h[row * H + i] * ex[row * H + j];
    }
  saved_.erase(it);
}

SyntheticMoeStage::Reference::Reference(int s, int ep, const SyntheticMoeOptions& o) : stage(s), opt(o), ep_size(ep) {
  grad_attn.assign(ep, std::vector<double>(o.hidden * o.hidden, 0.0));
  grad_experts.assign(static_cast<size_t>(o.experts) * o.hidden * o.hidden, 0.0);
}

void SyntheticMoeStage::Reference::forward(int mb, const std::vector<std::vector<double>>& x,
                                           std::vector<std::vector<double>>* y,
                                           std::vector<std::vector<double>>* a) const {
  const int T = opt.tokens, H = opt.hidden, K = opt.top_k;
  y->assign(ep_size, std::vector<double>(T * H));
  a->assign(ep_size, std::vector<double>(T * H));
  std::vector<int64_t> idx(K);
  std::vector<float> w(K);
  for (int e = 0; e < ep_size; ++e)
    for (int t = 0; t < T; ++t) {
      for (int i = 0; i < H; ++i) {
        double z = 0;
        for (int j = 0; j < H; ++j) z += attn_init(stage, i, j) * x[e][t * H + j];
        (*a)[e][t * H + i] = std::tanh(z);
      }
      route(stage, mb, e, t, opt, idx.data(), w.data());
      for (int i = 0; i < H; ++i) {
        double s = (*a)[e][t * H + i];
        for (int k = 0; k < K; ++k)
          for (int j = 0; j < H; ++j) s += w[k] * expert_init(stage, static_cast<int>(idx[k]), i, j) * (*a)[e][t * H + j];
        (*y)[e][t * H + i] = s;
      }
    }
}

void SyntheticMoeStage::Reference::backward(int mb, const std::vector<std::vector<double>>& x,
                                            const std::vector<std::vector<double>>& a,
                                            const std::vector<std::vector<double>>& gy,
                                            std::vector<std::vector<double>>* gx) {
  const int T = opt.tokens, H = opt.hidden, K = opt.top_k;
  gx->assign(ep_size, std::vector<double>(T * H, 0.0));
  std::vector<int64_t> idx(K);
  std::vector<float> w(K);
  for (int e = 0; e < ep_size; ++e)
    for (int t = 0; t < T; ++t) {
      route(stage, mb, e, t, opt, idx.data(), w.data());
      std::vector<double> ga(gy[e].begin() + t * H, gy[e].begin() + (t + 1) * H);
      for (int k = 0; k < K; ++k)
        for (int i = 0; i < H; ++i) {
          const double gh = w[k] * gy[e][t * H + i];
          for (int j = 0; j < H; ++j) {
            grad_experts[(static_cast<size_t>(idx[k]) * H + i) * H + j] += gh * a[e][t * H + j];
            ga[j] += expert_init(stage, static_cast<int>(idx[k]), i, j) * gh;
          }
        }
      for (int i = 0; i < H; ++i) {
        const double gz = ga[i] * (1 - a[e][t * H + i] * a[e][t * H + i]);
        for (int j = 0; j < H; ++j) {
          grad_attn[e][i * H + j] += gz * x[e][t * H + j];
          (*gx)[e][t * H + j] += gz * attn_init(stage, i, j);
        }
      }
    }
}

double OverlapMeasurement::efficiency() const {
  return (serial_s - overlapped_s) / std::max(1e-12, std::min(compute_max_s, communication_max_s));
}

double OverlapMeasurement::efficiency_paired() const {
  return saved_paired_s / std::max(1e-12, std::min(compute_max_s, communication_max_s));
}

double OverlapMeasurement::overlapped_over_longer() const {
  return overlapped_s / std::max(1e-12, std::max(compute_max_s, communication_max_s));
}

namespace {

// FbPairTrace <-> a fixed number of doubles, for the all_gather of measure_fb_overlap.
constexpr size_t kTraceEvents = 8, kTraceCollectives = 4;
constexpr size_t kTraceWords = 5 + kTraceEvents * 7 + kTraceCollectives * 7;

void put_step(std::vector<double>& w, const SubStep& s) {
  w.push_back(static_cast<double>(s.kind));
  w.push_back(s.backward);
  w.push_back(s.stage);
  w.push_back(s.microbatch);
}

SubStep get_step(const double*& p) {
  SubStep s;
  s.kind = static_cast<SubStepKind>(static_cast<int>(p[0]));
  s.backward = p[1] != 0;
  s.stage = static_cast<int>(p[2]);
  s.microbatch = static_cast<int>(p[3]);
  p += 4;
  return s;
}

void pack_trace(const FbPairTrace& t, std::vector<double>& w) {
  SY_CHECK(t.events.size() == kTraceEvents && t.collectives.size() == kTraceCollectives);
  w.push_back(t.rank);
  w.push_back(t.rep);
  w.push_back(t.overlapped);
  w.push_back(t.begin);
  w.push_back(t.end);
  for (const SubStepEvent& e : t.events) {
    put_step(w, e.step);
    w.push_back(e.collective);
    w.push_back(e.start);
    w.push_back(e.end);
  }
  for (const auto& c : t.collectives) {
    put_step(w, c.step);
    w.push_back(c.times.posted);
    w.push_back(c.times.started);
    w.push_back(c.times.finished);
  }
}

FbPairTrace unpack_trace(const double* p) {
  FbPairTrace t;
  t.rank = static_cast<int>(p[0]);
  t.rep = static_cast<int>(p[1]);
  t.overlapped = p[2] != 0;
  t.begin = p[3];
  t.end = p[4];
  p += 5;
  for (size_t i = 0; i < kTraceEvents; ++i) {
    SubStepEvent e;
    e.step = get_step(p);
    e.collective = p[0] != 0;
    e.start = p[1];
    e.end = p[2];
    p += 3;
    t.events.push_back(e);
  }
  for (size_t i = 0; i < kTraceCollectives; ++i) {
    SyntheticMoeStage::CollectiveTimes c;
    c.step = get_step(p);
    c.times = CommJobTimes{p[0], p[1], p[2]};
    p += 3;
    t.collectives.push_back(c);
  }
  return t;
}

}  // namespace

OverlapMeasurement measure_fb_overlap(std::shared_ptr<comm::Communicator> ep, const SyntheticMoeOptions& opt, int reps,
                                      int warmup, std::shared_ptr<CommWorker> worker, std::vector<FbPairTrace>* trace) {
  SY_REQUIRE(reps >= 1 && warmup >= 0, "measure_fb_overlap: reps = " << reps << ", warmup = " << warmup);
  auto buffer = SyntheticMoeStage::make_buffer(ep, opt);
  SyntheticMoeStage stage(0, buffer, ep->rank(), ep->size(), opt);
  stage.set_comm_worker(std::move(worker));
  const size_t n = static_cast<size_t>(opt.tokens) * opt.hidden;
  std::vector<float> x(n), y(n), y2(n), gy(n), gx(n);
  for (size_t i = 0; i < n; ++i) {
    x[i] = 0.001f * static_cast<float>(i % 997) - 0.5f;
    gy[i] = 0.002f * static_cast<float>(i % 991) - 1.0f;
  }
  // Per measured rep: this rank's pair times, the alone passes, the sums inside the serial pair.
  std::vector<double> serial, overlapped, compute, communication, serial_compute, serial_communication;
  std::vector<FbPairTrace> mine;
  std::vector<SyntheticMoeStage::CollectiveTimes> coll_log;
  int mb = 0;
  for (int rep = 0; rep < warmup + reps; ++rep) {
    for (int mode = 0; mode < 2; ++mode) {  // 0 serial (then the alone passes), 1 overlapped
      const int a = mb++, b = mb++;
      auto fa = stage.forward_tasks(a, x.data(), y.data());
      run_serial(fa, nullptr);  // micro-batch a needs its forward before its backward
      ep->barrier();
      auto f = stage.forward_tasks(b, x.data(), y2.data());
      auto bw = stage.backward_tasks(a, gy.data(), gx.data());
      std::vector<SubStepEvent> ev;
      coll_log.clear();
      if (trace) stage.set_collective_log(&coll_log);
      const double t0 = monotonic_seconds();
      if (mode == 0) {
        run_serial(f, &ev);
        run_serial(bw, &ev);
      } else {
        run_overlapped_pair(f, bw, &ev);
      }
      const double t1 = monotonic_seconds(), t = t1 - t0;
      stage.set_collective_log(nullptr);
      const bool measured = rep >= warmup;
      if (trace && measured) mine.push_back(FbPairTrace{ep->rank(), rep - warmup, mode == 1, t0, t1, ev, coll_log});
      if (mode == 0) {
        // The same pair's collectives alone (the serial order, nothing in between), then its
        // compute alone, every rank at once: the tasks are re-runnable (synthetic_moe.h).
        ep->barrier();
        const double c0 = monotonic_seconds();
        for (SubStepTask* task : {&f[1], &f[3], &bw[0], &bw[2]}) task->start()();
        const double c1 = monotonic_seconds();
        ep->barrier();
        const double p0 = monotonic_seconds();
        for (SubStepTask* task : {&f[0], &f[2], &bw[1], &bw[3]}) task->run();
        const double p1 = monotonic_seconds();
        if (measured) {
          serial.push_back(t);
          communication.push_back(c1 - c0);
          compute.push_back(p1 - p0);
          double c = 0, m = 0;
          for (const auto& e : ev) (e.collective ? m : c) += e.end - e.start;
          serial_compute.push_back(c);
          serial_communication.push_back(m);
        }
      } else if (measured) {
        overlapped.push_back(t);
      }
      stage.weight_grads(a);
      auto bb = stage.backward_tasks(b, gy.data(), gx.data());
      run_serial(bb, nullptr);
      stage.weight_grads(b);
    }
  }
  if (trace) {
    std::vector<double> send;
    send.reserve(mine.size() * kTraceWords);
    for (const FbPairTrace& t : mine) pack_trace(t, send);
    SY_CHECK(send.size() == mine.size() * kTraceWords);
    std::vector<double> all(send.size() * static_cast<size_t>(ep->size()));
    ep->all_gather(send.data(), all.data(), send.size(), comm::DataType::kFloat64);
    trace->clear();
    for (size_t i = 0; i < all.size(); i += kTraceWords) trace->push_back(unpack_trace(&all[i]));
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  auto quartiles = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return std::make_pair(v[v.size() / 4], v[(3 * v.size()) / 4]);
  };
  OverlapMeasurement out;
  out.local_serial_s = median(serial);
  out.local_overlapped_s = median(overlapped);
  out.compute_s = median(compute);
  out.communication_s = median(communication);
  out.serial_compute_s = median(serial_compute);
  out.serial_communication_s = median(serial_communication);
  // The group: a pair ends when its slowest rank ends; the alone times of the slowest rank.
  const size_t R = serial.size();
  std::vector<double> group(2 * R + 2);
  std::copy(serial.begin(), serial.end(), group.begin());
  std::copy(overlapped.begin(), overlapped.end(), group.begin() + R);
  group[2 * R] = out.compute_s;
  group[2 * R + 1] = out.communication_s;
  std::vector<double> mine_times = group;
  ep->all_reduce(mine_times.data(), group.data(), group.size(), comm::DataType::kFloat64, comm::ReduceOp::kMax);
  std::vector<double> gs(group.begin(), group.begin() + R), go(group.begin() + R, group.begin() + 2 * R), ratio(R),
      saved(R);
  for (size_t i = 0; i < R; ++i) {
    ratio[i] = go[i] / gs[i];
    saved[i] = gs[i] - go[i];
  }
  out.saved_paired_s = median(saved);
  out.serial_s = median(gs);
  out.overlapped_s = median(go);
  out.compute_max_s = group[2 * R];
  out.communication_max_s = group[2 * R + 1];
  out.ratio_paired = median(ratio);
  out.serial_min_s = *std::min_element(gs.begin(), gs.end());
  out.serial_max_s = *std::max_element(gs.begin(), gs.end());
  out.overlapped_min_s = *std::min_element(go.begin(), go.end());
  out.overlapped_max_s = *std::max_element(go.begin(), go.end());
  std::tie(out.serial_q1_s, out.serial_q3_s) = quartiles(gs);
  std::tie(out.overlapped_q1_s, out.overlapped_q3_s) = quartiles(go);
  return out;
}

}  // namespace switchyard::pipeline
