// sy-dispatch-perf as a library call (see perf.h).
#include "switchyard/dispatch/perf.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "switchyard/common/error.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/fp8.h"
#include "switchyard/dispatch/reference.h"
#include "switchyard/dispatch/router.h"

namespace switchyard::dispatch {

namespace {

constexpr int kTagGather = 200;

// Every rank's value, index = rank (a small all-gather over the exchange).
std::vector<double> all_gather(PeerExchange& ex, double v) {
  const int R = ex.size(), me = ex.rank();
  std::vector<double> all(R, 0.0);
  all[me] = v;
  std::vector<PeerSend> sends;
  std::vector<PeerRecv> recvs;
  for (int p = 0; p < R; ++p) {
    if (p == me) continue;
    sends.push_back({p, &all[me], sizeof(double)});
    recvs.push_back({p, &all[p], sizeof(double)});
  }
  ex.exchange(sends, recvs, kTagGather);
  return all;
}
double all_max(PeerExchange& ex, double v) {
  auto a = all_gather(ex, v);
  return *std::max_element(a.begin(), a.end());
}
double all_sum(PeerExchange& ex, double v) {
  double s = 0;
  for (double x : all_gather(ex, v)) s += x;
  return s;
}
void barrier(PeerExchange& ex) { all_gather(ex, 0.0); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Start barrier of the low-latency timing. A blocking exchange of the comm library can wake a
// sleeping rank up to ~1 ms after the last message arrived (its wait policy), so ranks leave
// barrier(ex) with up to ~1 ms of skew, which a 1-2 ms low-latency call (it waits for every
// same-node peer's flag) would count in full. When every rank of the group maps every other
// rank's window, the ranks meet on counters in shared memory instead (a few microseconds of
// skew): rank r stores its arrival count into slot r of every window (release) and spins
// until every slot of its own window has reached it (acquire; yields after a few thousand
// spins, Timeout after the exchange's timeout). Otherwise it is barrier(ex). Collective to make.
class StartBarrier {
 public:
  explicit StartBarrier(PeerExchange& ex) : ex_(ex) {
    const int R = ex.size();
    window_ = ex.open_window(static_cast<size_t>(R) * kSlot);
    bool mapped = window_ != nullptr;
    for (int p = 0; p < R && mapped; ++p) mapped = window_->at(p) != nullptr;
    shared_ = all_sum(ex, mapped ? 0.0 : 1.0) == 0.0;
  }
  bool shared() const { return shared_; }
  void wait() {
    if (!shared_) return barrier(ex_);
    const int R = ex_.size(), me = ex_.rank();
    ++count_;
    for (int p = 0; p < R; ++p) slot(p, me).store(count_, std::memory_order_release);
    const auto start = std::chrono::steady_clock::now();
    for (int p = 0; p < R; ++p) {
      for (int spins = 0; slot(me, p).load(std::memory_order_acquire) < count_; ++spins) {
        if (spins < 4096) continue;
        std::this_thread::yield();
        if ((spins & 1023) == 0 && std::chrono::steady_clock::now() - start > ex_.timeout())
          SY_THROW(Timeout, "sy-dispatch-perf: rank " << me << " waited for rank " << p << " at the start barrier");
      }
    }
  }

 private:
  static constexpr size_t kSlot = 64;  // one cache line per writer
  // Slot `writer` of rank `owner`'s window.
  std::atomic_ref<uint64_t> slot(int owner, int writer) {
    return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(window_->at(owner) + writer * kSlot));
  }
  PeerExchange& ex_;
  std::unique_ptr<PeerWindow> window_;
  bool shared_ = false;
  uint64_t count_ = 0;
};

// Times fn (which returns the TrafficStats of one run) `iters` times after `warmup`; each
// run starts after a barrier (barrier(ex), or `start` when given) and its time is the
// slowest rank's.
template <class Fn>
PerfRow time_op(PeerExchange& ex, const PerfOptions& o, const std::string& impl, const std::string& op,
                const std::string& dtype, Fn fn, StartBarrier* start = nullptr) {
  std::vector<double> times;
  TrafficStats stats;
  for (int i = 0; i < o.warmup + o.iters; ++i) {
    if (start) {
      start->wait();
    } else {
      barrier(ex);
    }
    const auto t0 = std::chrono::steady_clock::now();
    stats = fn();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double slowest = all_max(ex, dt);
    if (i >= o.warmup) times.push_back(slowest);
  }
  PerfRow row;
  row.impl = impl;
  row.op = op;
  row.dtype = dtype;
  row.median_us = median(times) * 1e6;
  row.min_us = *std::min_element(times.begin(), times.end()) * 1e6;
  for (double t : times) row.times_us.push_back(t * 1e6);
  const double R = ex.size();
  row.logical_bytes = static_cast<int64_t>(all_sum(ex, double(stats.logical_bytes)) / R);
  row.wire_bytes = static_cast<int64_t>(all_sum(ex, double(stats.wire_bytes)) / R);
  row.logical_gbps = row.logical_bytes / (row.median_us * 1e3);
  row.wire_gbps = row.wire_bytes / (row.median_us * 1e3);
  return row;
}

// DeepEP's calc_diff: 1 - 2 sum(ab) / sum(a^2 + b^2), on x + 1.
double calc_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double ab = 0, aa = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = a[i] + 1.0, y = b[i] + 1.0;
    ab += x * y;
    aa += x * x + y * y;
  }
  return aa == 0 ? 0 : 1 - 2 * ab / aa;
}

std::vector<float> bf16_vector_to_float(const std::vector<uint8_t>& bytes) {
  std::vector<float> out(bytes.size() / 2);
  bf16_to_float(reinterpret_cast<const uint16_t*>(bytes.data()), out.size(), out.data());
  return out;
}

}  // namespace

static PerfReport run(PeerExchange& ex, const PerfOptions& o, bool timing) {
  const int R = ex.size(), me = ex.rank(), K = o.top_k, E = o.num_experts;
  const int64_t T = o.num_tokens, H = o.hidden, S = fp8_num_tiles(H);
  PerfReport rep;
  rep.options = o;
  rep.ranks = R;
  rep.nodes = ex.rank_map().num_nodes();
  // Inputs: random x, sigmoid scores with an optional skew, V3 group-limited routing.
  std::mt19937_64 rng(o.seed * 1000003 + me);
  std::normal_distribution<float> n01(0.f, 1.f);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> x(T * H);
  for (auto& v : x) v = n01(rng);
  std::vector<uint16_t> xb(T * H);
  bf16_from_float(x.data(), T * H, xb.data());
  std::vector<uint8_t> xq(T * H);
  std::vector<float> xs(T * S);
  quantize_fp8_tiles(xb.data(), T, H, true, xq.data(), xs.data());
  std::vector<float> scores(T * E);
  for (int64_t t = 0; t < T; ++t)
    for (int e = 0; e < E; ++e) {
      const float logit = n01(rng) + static_cast<float>(o.skew * (1.0 - double(e) / E));
      scores[t * E + e] = 1.f / (1.f + std::exp(-logit));
    }
  std::vector<int64_t> topk(T * K);
  std::vector<float> weights(T * K);
  RouterConfig rc{E, K, o.num_groups, o.top_groups, 1.0, true};
  route_group_limited(rc, scores.data(), nullptr, T, topk.data(), weights.data());

  Buffer buf(std::shared_ptr<PeerExchange>(&ex, [](PeerExchange*) {}), {E, H, T, o.two_hop});
  rep.two_hop = buf.uses_two_hop();
  DispatchArgs bf16_args;
  bf16_args.x = xb.data();
  bf16_args.dtype = comm::DataType::kBfloat16;
  bf16_args.topk_idx = topk.data();
  bf16_args.topk_weights = weights.data();
  bf16_args.num_tokens = T;
  bf16_args.top_k = K;
  DispatchArgs fp8_args = bf16_args;
  fp8_args.x = xq.data();
  fp8_args.dtype = comm::DataType::kFloat8E4M3;
  fp8_args.x_scales = xs.data();

  // ---- checks against both references ----
  DispatchResult d8 = buf.dispatch(fp8_args);
  DispatchResult db = buf.dispatch(bf16_args);
  bool ok = true;
  auto note = [&](bool pass, const std::string& what) {
    const bool all_pass = all_sum(ex, pass ? 0.0 : 1.0) == 0.0;
    rep.check_lines.push_back(std::string(all_pass ? "ok   " : "FAIL ") + what);
    ok = ok && all_pass;
  };
  // Wire bytes of the FP8 dispatch: prediction from the routing.
  {
    const auto& map = ex.rank_map();
    const int L = E / R;
    double predicted = 0;
    for (int64_t t = 0; t < T; ++t) {
      std::set<int> nodes, ranks;
      for (int k = 0; k < K; ++k)
        if (topk[t * K + k] >= 0) {
          const int dst = static_cast<int>(topk[t * K + k] / L);
          if (!map.same_node(dst, me)) {
            nodes.insert(map.node_of(dst));
            ranks.insert(dst);
          }
        }
      predicted += double(rep.two_hop ? nodes.size() : ranks.size()) * d8.stats.row_bytes;
    }
    rep.wire_bytes_predicted = static_cast<int64_t>(all_sum(ex, predicted));
    rep.wire_bytes_measured = static_cast<int64_t>(all_sum(ex, double(d8.stats.wire_bytes)));
    note(rep.wire_bytes_predicted == rep.wire_bytes_measured, "FP8 dispatch wire bytes == prediction");
  }
  CombineArgs cargs;
  cargs.expert_out = db.expert_x.data();
  cargs.dtype = comm::DataType::kBfloat16;
  cargs.handle = &db.handle;
  cargs.weights = db.recv_topk_weights.data();
  CombineResult y = buf.combine(cargs);
  if (o.check) {
    for (ReferenceKind kind : {ReferenceKind::kNaive, ReferenceKind::kRankDedup}) {
      const std::string name = reference_kind_name(kind);
      ReferenceDispatch r8 = reference_dispatch(kind, ex, E, H, fp8_args);
      note(r8.expert_x == d8.expert_x && r8.expert_x_scales == d8.expert_x_scales &&
               r8.expert_offsets == d8.expert_offsets,
           "FP8 dispatch payload and scales == " + name + " (bitwise)");
      ReferenceDispatch rb = reference_dispatch(kind, ex, E, H, bf16_args);
      note(rb.expert_x == db.expert_x, "BF16 dispatch payload == " + name + " (bitwise)");
      CombineResult yr = reference_combine(ex, rb, rb.expert_x.data(), comm::DataType::kBfloat16, H, weights.data());
      const double diff = calc_diff(bf16_vector_to_float(y.y), bf16_vector_to_float(yr.y));
      std::ostringstream line;
      line << "BF16 combine vs " << name << ": calc_diff " << std::scientific << std::setprecision(2) << diff
           << " < 1e-4";
      note(diff < 1e-4, line.str());
    }
    // combine(dispatch(x)) with identity experts == (sum of weights) * x (closed form).
    std::vector<float> yf = bf16_vector_to_float(y.y), want(T * H);
    for (int64_t t = 0; t < T; ++t) {
      float sw = 0;
      for (int k = 0; k < K; ++k) sw += topk[t * K + k] >= 0 ? weights[t * K + k] : 0.f;
      for (int64_t h = 0; h < H; ++h) want[t * H + h] = sw * bf16_to_float(xb[t * H + h]);
    }
    std::ostringstream line;
    const double diff = calc_diff(yf, want);
    line << "BF16 combine == sum_k w_k x: calc_diff " << std::scientific << std::setprecision(2) << diff << " < 1e-4";
    note(diff < 1e-4, line.str());
  }
  if (o.check && o.low_latency) {
    // Low-latency round trip with identity experts: y = sum_k w_k dequant(fp8(x)).
    const int64_t Tl = std::min<int64_t>(o.ll_tokens, T);
    Buffer ll(std::shared_ptr<PeerExchange>(&ex, [](PeerExchange*) {}), {E, H, Tl, o.two_hop, Tl});
    LowLatencyDispatchArgs la;
    la.x = xb.data();
    la.topk_idx = topk.data();
    la.topk_weights = weights.data();
    la.num_tokens = Tl;
    la.top_k = K;
    la.pow2_scales = true;  // as xq/xs
    LowLatencyRecvHook hook = ll.low_latency_dispatch_send(la);
    LowLatencyView v = hook();
    const int64_t slots = v.slots_per_expert;
    std::vector<uint16_t> out(static_cast<size_t>(ll.num_local_experts()) * slots * H, 0);
    std::vector<float> row(H);
    int64_t rows = 0;
    for (int j = 0; j < ll.num_local_experts(); ++j)
      for (int32_t i = 0; i < v.count[j]; ++i) {
        const int64_t at = j * slots + i;
        dequantize_fp8_tiles(v.x + at * H, v.scales + at * S, 1, H, row.data());
        bf16_from_float(row.data(), H, out.data() + at * H);
        ++rows;
      }
    const uint16_t* yl = ll.low_latency_combine(out.data());
    std::vector<float> got(Tl * H), want(Tl * H);
    bf16_to_float(yl, Tl * H, got.data());
    std::vector<float> deq(H);
    for (int64_t t = 0; t < Tl; ++t) {
      float sw = 0;
      for (int k = 0; k < K; ++k) sw += topk[t * K + k] >= 0 ? weights[t * K + k] : 0.f;
      dequantize_fp8_tiles(xq.data() + t * H, xs.data() + t * S, 1, H, deq.data());
      for (int64_t h = 0; h < H; ++h) want[t * H + h] = sw * deq[h];
    }
    int64_t pairs = 0;
    for (int64_t i = 0; i < Tl * K; ++i) pairs += topk[i] >= 0;
    note(all_sum(ex, double(rows)) == all_sum(ex, double(pairs)), "low-latency slots == (token, expert) pairs");
    std::ostringstream line;
    const double diff = calc_diff(got, want);
    line << "low-latency combine == sum_k w_k fp8(x): calc_diff " << std::scientific << std::setprecision(2) << diff
         << " < 1e-4";
    note(diff < 1e-4, line.str());
  }
  rep.checks_passed = ok;
  if (!timing) return rep;

  // ---- timing ----
  auto add = [&](PerfRow row) { rep.rows.push_back(std::move(row)); };
  // Timed with the references' outputs: the expert-major rows only (no recv_x copy).
  fp8_args.recv_x = bf16_args.recv_x = false;
  add(time_op(ex, o, "buffer", "dispatch", "fp8", [&] { return buf.dispatch(fp8_args).stats; }));
  add(time_op(ex, o, "buffer", "dispatch", "bf16", [&] { return buf.dispatch(bf16_args).stats; }));
  add(time_op(ex, o, "buffer", "combine", "bf16", [&] { return buf.combine(cargs).stats; }));
  for (ReferenceKind kind : {ReferenceKind::kRankDedup, ReferenceKind::kNaive}) {
    if (kind == ReferenceKind::kNaive && !o.time_naive) continue;
    const std::string name = reference_kind_name(kind);
    ReferenceDispatch keep = reference_dispatch(kind, ex, E, H, bf16_args);
    add(time_op(ex, o, name, "dispatch", "fp8", [&] { return reference_dispatch(kind, ex, E, H, fp8_args).stats; }));
    add(time_op(ex, o, name, "dispatch", "bf16", [&] { return reference_dispatch(kind, ex, E, H, bf16_args).stats; }));
    add(time_op(ex, o, name, "combine", "bf16", [&] {
      return reference_combine(ex, keep, keep.expert_x.data(), comm::DataType::kBfloat16, H, weights.data()).stats;
    }));
  }
  auto find = [&](const std::string& impl, const std::string& op, const std::string& dt) {
    for (const PerfRow& r : rep.rows)
      if (r.impl == impl && r.op == op && r.dtype == dt) return r.median_us;
    return 0.0;
  };
  const double ours = find("buffer", "dispatch", "fp8") + find("buffer", "combine", "bf16");
  rep.speedup_vs_dedup = (find("rank-dedup", "dispatch", "fp8") + find("rank-dedup", "combine", "bf16")) / ours;
  rep.speedup_vs_naive = o.time_naive ? (find("naive", "dispatch", "fp8") + find("naive", "combine", "bf16")) / ours : 0;
  rep.fp8_over_bf16_dispatch = find("buffer", "dispatch", "fp8") / find("buffer", "dispatch", "bf16");

  // ---- low-latency mode ----
  if (o.low_latency) {
    const int64_t Tl = std::min<int64_t>(o.ll_tokens, T);
    Buffer ll(std::shared_ptr<PeerExchange>(&ex, [](PeerExchange*) {}), {E, H, Tl, o.two_hop, Tl});
    LowLatencyDispatchArgs la;
    la.x = xb.data();
    la.topk_idx = topk.data();
    la.topk_weights = weights.data();
    la.num_tokens = Tl;
    la.top_k = K;
    la.use_fp8 = true;
    // Low-latency calls take about a millisecond, so they get more runs, as DeepEP's
    // low-latency test does: at least 8 warm-up runs (both halves of the double-buffered
    // slots faulted in, and past the first calls after the checks, which ran 1.5-3x slower
    // than the steady state here as caches and TLBs refill: per-call times in the JSON) and
    // at least 20 timed ones. The memcpy baseline gets the same counts.
    PerfOptions lo = o;
    lo.warmup = std::max(o.warmup + 1, 8);
    lo.iters = std::max(o.iters, 20);
    // The low-latency calls and their memcpy baseline start from a shared-memory barrier
    // where the ranks have one (StartBarrier).
    StartBarrier start(ex);
    PerfRow lrow =
        time_op(ex, lo, "low-latency", "dispatch", "fp8", [&] { return ll.low_latency_dispatch(la).stats; }, &start);
    // Baseline: one memcpy of the same bytes: the FP8 rows (payload + scales) this rank
    // delivers, one per (token, expert) pair, self included; measured in the same run.
    const size_t bytes = static_cast<size_t>(ll.low_latency_dispatch(la).stats.logical_bytes);
    std::vector<uint8_t> src(bytes, 1), dst(bytes, 0);
    PerfRow mrow = time_op(
        ex, lo, "memcpy", "same bytes", "fp8",
        [&] {
          std::memcpy(dst.data(), src.data(), bytes);
          TrafficStats s;
          s.logical_bytes = static_cast<int64_t>(bytes);
          return s;
        },
        &start);
    std::vector<uint16_t> out(static_cast<size_t>(ll.num_local_experts()) * R * Tl * H, 0);
    PerfRow crow = time_op(
        ex, lo, "low-latency", "combine", "bf16",
        [&] {
          ll.low_latency_combine(out.data());
          TrafficStats s;
          return s;
        },
        &start);
    rep.ll_over_memcpy = lrow.median_us / mrow.median_us;
    add(lrow);
    add(mrow);
    add(crow);
  }
  return rep;
}

PerfReport run_dispatch_perf(PeerExchange& ex, const PerfOptions& o) { return run(ex, o, true); }
PerfReport run_dispatch_checks(PeerExchange& ex, const PerfOptions& o) { return run(ex, o, false); }

std::string PerfReport::text() const {
  std::ostringstream os;
  os << "# sy-dispatch-perf: " << ranks << " ranks on " << nodes << " nodes, path " << (two_hop ? "two-hop" : "flat")
     << ", T " << options.num_tokens << " H " << options.hidden << " top-" << options.top_k << " of "
     << options.num_experts << " experts, " << options.num_groups << " groups (<= " << options.top_groups
     << " per token), skew " << options.skew << ", median of " << options.iters << "\n";
  for (const std::string& l : check_lines) os << "# check " << l << "\n";
  if (rows.empty()) {
    os << "checks " << (checks_passed ? "passed" : "FAILED") << "\n";
    return os.str();
  }
  os << std::left << std::setw(12) << "impl" << std::setw(12) << "op" << std::setw(6) << "dtype" << std::right
     << std::setw(12) << "time_us" << std::setw(14) << "logical_MB" << std::setw(12) << "logical_GBs" << std::setw(12)
     << "wire_MB" << std::setw(10) << "wire_GBs" << "\n";
  os << std::fixed;
  for (const PerfRow& r : rows)
    os << std::left << std::setw(12) << r.impl << std::setw(12) << r.op << std::setw(6) << r.dtype << std::right
       << std::setw(12) << std::setprecision(1) << r.median_us << std::setw(14) << std::setprecision(2)
       << r.logical_bytes / 1e6 << std::setw(12) << std::setprecision(3) << r.logical_gbps << std::setw(12)
       << std::setprecision(2) << r.wire_bytes / 1e6 << std::setw(10) << std::setprecision(3) << r.wire_gbps << "\n";
  os << std::setprecision(3);
  os << "speedup (fp8 dispatch + bf16 combine) vs rank-dedup " << speedup_vs_dedup << "x, vs naive "
     << speedup_vs_naive << "x\n";
  os << "fp8/bf16 dispatch time " << fp8_over_bf16_dispatch << "\n";
  os << "wire bytes (fp8 dispatch, all ranks) measured " << wire_bytes_measured << " predicted "
     << wire_bytes_predicted << "\n";
  if (options.low_latency) os << "low-latency fp8 dispatch / memcpy of the same bytes " << ll_over_memcpy << "\n";
  os << "checks " << (checks_passed ? "passed" : "FAILED") << "\n";
  return os.str();
}

std::string PerfReport::json() const {
  nlohmann::json j;
  j["ranks"] = ranks;
  j["nodes"] = nodes;
  j["path"] = two_hop ? "two-hop" : "flat";
  j["tokens"] = options.num_tokens;
  j["hidden"] = options.hidden;
  j["experts"] = options.num_experts;
  j["top_k"] = options.top_k;
  j["groups"] = options.num_groups;
  j["top_groups"] = options.top_groups;
  j["skew"] = options.skew;
  j["iters"] = options.iters;
  j["checks_passed"] = checks_passed;
  j["checks"] = check_lines;
  for (const PerfRow& r : rows)
    j["rows"].push_back({{"impl", r.impl}, {"op", r.op}, {"dtype", r.dtype}, {"median_us", r.median_us}, {"min_us", r.min_us}, {"times_us", r.times_us},
                         {"logical_bytes", r.logical_bytes}, {"logical_gbps", r.logical_gbps},
                         {"wire_bytes", r.wire_bytes}, {"wire_gbps", r.wire_gbps}});
  j["speedup_vs_rank_dedup"] = speedup_vs_dedup;
  j["speedup_vs_naive"] = speedup_vs_naive;
  j["fp8_over_bf16_dispatch"] = fp8_over_bf16_dispatch;
  j["wire_bytes_measured"] = wire_bytes_measured;
  j["wire_bytes_predicted"] = wire_bytes_predicted;
  if (options.low_latency) j["low_latency_over_memcpy"] = ll_over_memcpy;
  return j.dump(2);
}

}  // namespace switchyard::dispatch
