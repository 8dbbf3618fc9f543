// Private: event engine of the simulator and of the verifier's progress check (engine.h).
#include "engine.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "switchyard/common/error.h"

namespace switchyard::pipeline::detail {

namespace {

constexpr double kUnknown = -1.0;  // times are >= 0 once known
bool known(double t) { return t >= 0; }

// (is_grad, stage, microbatch, src, dst) of a P2P tensor.
using TensorKey = std::tuple<int, int, int, int, int>;

struct Item {
  enum Type { kCompute, kBatch, kReduce } type;
  int begin, end;  // action index range [begin, end)
};

class Engine {
 public:
  Engine(const Schedule& s, const EngineOptions& opt) : s_(s), opt_(opt) {
    const int n = s.num_ranks();
    const size_t cells = static_cast<size_t>(s.num_stages) * s.num_microbatches;
    f_end_.assign(n, std::vector<double>(cells, kUnknown));
    b_end_ = f_end_;
    w_end_ = f_end_;
    items_.resize(n);
    stream_items_.resize(n);
    cursor_.assign(n, {0, 0});
    stream_free_.assign(n, {0.0, 0.0});
    posted_.assign(n, false);
    post_time_.assign(n, 0.0);
    busy_.assign(n, 0.0);
    pending_bwd_.assign(n, std::vector<int>(s.num_stages, 0));
    last_bwd_end_.assign(n, std::vector<double>(s.num_stages, 0.0));
    for (int r = 0; r < n; ++r) {
      const auto& list = s.ranks[r];
      for (int i = 0; i < static_cast<int>(list.size());) {
        const OpKind k = list[i].kind;
        if (is_p2p(k)) {
          int j = i;
          while (j < static_cast<int>(list.size()) && is_p2p(list[j].kind)) ++j;
          items_[r].push_back({Item::kBatch, i, j});
          i = j;
          continue;
        }
        items_[r].push_back({k == OpKind::kReduceGrad ? Item::kReduce : Item::kCompute, i, i + 1});
        if (k == OpKind::kForwardBackward) ++pending_bwd_[r][list[i].bwd_stage];
        if (k == OpKind::kBackward || k == OpKind::kBackwardInput || k == OpKind::kBackwardWeight)
          ++pending_bwd_[r][list[i].stage];
        ++i;
      }
      // Separate in-order streams: item indices per stream.
      for (int it = 0; it < static_cast<int>(items_[r].size()); ++it) stream_items_[r][items_[r][it].type == Item::kCompute ? 0 : 1].push_back(it);
    }
  }

  EngineResult run() {
    const int n = s_.num_ranks();
    for (bool progress = true; progress;) {
      progress = false;
      for (int r = 0; r < n; ++r)
        while (advance(r)) progress = true;
      if (resolve_unmatched()) progress = true;
    }
    for (int r = 0; r < n; ++r)
      if (!finished(r)) throw_deadlock();
    if (!unmatched_.empty()) throw_deadlock();
    EngineResult res;
    res.busy = busy_;
    res.makespan = makespan_;
    res.events = std::move(events_);
    res.num_transfers = transfers_;
    res.num_reductions = reductions_;
    return res;
  }

 private:
  size_t cell(int stage, int mb) const { return static_cast<size_t>(stage) * s_.num_microbatches + mb; }

  bool finished(int r) const {
    if (opt_.strict_order) return cursor_[r][0] >= static_cast<int>(items_[r].size());
    return cursor_[r][0] >= static_cast<int>(stream_items_[r][0].size()) &&
           cursor_[r][1] >= static_cast<int>(stream_items_[r][1].size());
  }

  // Head item of a stream (strict: stream 0 is the only cursor); -1 when the stream is done.
  int head(int r, int stream) const {
    if (opt_.strict_order) {
      if (stream == 1) return -1;
      return cursor_[r][0] < static_cast<int>(items_[r].size()) ? cursor_[r][0] : -1;
    }
    const auto& v = stream_items_[r][stream];
    return cursor_[r][stream] < static_cast<int>(v.size()) ? v[cursor_[r][stream]] : -1;
  }
  double free_at(int r, const Item& it) const {
    if (opt_.strict_order) return stream_free_[r][0];
    return stream_free_[r][it.type == Item::kCompute ? 0 : 1];
  }
  void retire(int r, const Item& it, double end) {
    const int stream = (opt_.strict_order || it.type == Item::kCompute) ? 0 : 1;
    stream_free_[r][stream] = end;
    ++cursor_[r][stream];
    makespan_ = std::max(makespan_, end);
  }

  bool advance(int r) {
    bool any = false;
    for (int stream = 0; stream < 2; ++stream) {
      int idx = head(r, stream);
      if (idx < 0) continue;
      const Item& it = items_[r][idx];
      bool done = false;
      switch (it.type) {
        case Item::kCompute: done = try_compute(r, it); break;
        case Item::kBatch: done = try_batch(r, it); break;
        case Item::kReduce: done = try_reduce(r, it); break;
      }
      any = any || done;
    }
    return any;
  }

  // Time the input of a forward of (stage, mb) is available on rank r, or kUnknown.
  double forward_input(int r, int stage, int mb) const {
    if (stage == 0) return 0.0;
    const int src = s_.rank_of(stage - 1, mb, s_.replica(r));
    if (src == r) return f_end_[r][cell(stage - 1, mb)];
    auto it = recv_end_.find({0, stage - 1, mb, src, r});
    return it == recv_end_.end() ? kUnknown : it->second;
  }
  double backward_input(int r, int stage, int mb) const {
    double t = f_end_[r][cell(stage, mb)];
    if (!known(t) || stage + 1 == s_.num_stages) return t;
    const int src = s_.rank_of(stage + 1, mb, s_.replica(r));
    double g;
    if (src == r) {
      g = b_end_[r][cell(stage + 1, mb)];
    } else {
      auto it = recv_end_.find({1, stage + 1, mb, src, r});
      g = it == recv_end_.end() ? kUnknown : it->second;
    }
    return known(g) ? std::max(t, g) : kUnknown;
  }

  bool try_compute(int r, const Item& it) {
    const Action& a = s_.ranks[r][it.begin];
    double ready = kUnknown;
    switch (a.kind) {
      case OpKind::kForward: ready = forward_input(r, a.stage, a.microbatch); break;
      case OpKind::kBackwardInput:
      case OpKind::kBackward: ready = backward_input(r, a.stage, a.microbatch); break;
      case OpKind::kBackwardWeight: ready = b_end_[r][cell(a.stage, a.microbatch)]; break;
      case OpKind::kForwardBackward: {
        double f = forward_input(r, a.stage, a.microbatch);
        double b = backward_input(r, a.bwd_stage, a.bwd_microbatch);
        ready = (known(f) && known(b)) ? std::max(f, b) : kUnknown;
        break;
      }
      default: SY_CHECK(false);
    }
    if (!known(ready)) return false;
    const double start = std::max(free_at(r, it), ready);
    const double end = start + opt_.durations.chunk_duration(a);
    switch (a.kind) {
      case OpKind::kForward: f_end_[r][cell(a.stage, a.microbatch)] = end; break;
      case OpKind::kBackwardInput:
      case OpKind::kBackward: b_end_[r][cell(a.stage, a.microbatch)] = end; break;
      case OpKind::kBackwardWeight: w_end_[r][cell(a.stage, a.microbatch)] = end; break;
      case OpKind::kForwardBackward:
        f_end_[r][cell(a.stage, a.microbatch)] = end;
        b_end_[r][cell(a.bwd_stage, a.bwd_microbatch)] = end;
        break;
      default: break;
    }
    const int bwd_stage = a.kind == OpKind::kForwardBackward ? a.bwd_stage : (a.kind == OpKind::kForward ? -1 : a.stage);
    if (bwd_stage >= 0) {
      --pending_bwd_[r][bwd_stage];
      last_bwd_end_[r][bwd_stage] = std::max(last_bwd_end_[r][bwd_stage], end);
    }
    busy_[r] += end - start;
    record(r, false, start, end, a, -1);
    if (opt_.record_events && opt_.durations.moe) record_sub_steps(r, start, a);
    retire(r, it, end);
    return true;
  }

  TensorKey key_of(int r, const Action& a) const {
    const int grad = (a.kind == OpKind::kSendGrad || a.kind == OpKind::kRecvGrad) ? 1 : 0;
    return is_send(a.kind) ? TensorKey{grad, a.stage, a.microbatch, r, a.peer}
                           : TensorKey{grad, a.stage, a.microbatch, a.peer, r};
  }

  // Same id for a send and its receive (trace arrows).
  int flow_id(const TensorKey& k) {
    auto f = flow_ids_.find(k);
    if (f != flow_ids_.end()) return f->second;
    const int id = static_cast<int>(flow_ids_.size());
    flow_ids_.emplace(k, id);
    return id;
  }

  // Returns true when the batch was posted now or completed (both are progress).
  bool try_batch(int r, const Item& it) {
    const auto& list = s_.ranks[r];
    bool newly_posted = false;
    if (!posted_[r]) {
      double t = free_at(r, it);
      for (int i = it.begin; i < it.end; ++i) {
        const Action& a = list[i];
        if (!is_send(a.kind)) continue;
        const double data = a.kind == OpKind::kSendActivation ? f_end_[r][cell(a.stage, a.microbatch)]
                                                              : b_end_[r][cell(a.stage, a.microbatch)];
        if (!known(data)) return false;  // not computed yet (the separate-stream case)
        t = std::max(t, data);
      }
      posted_[r] = true;
      post_time_[r] = t;
      for (int i = it.begin; i < it.end; ++i)
        (is_send(list[i].kind) ? send_post_ : recv_post_)[key_of(r, list[i])] = t;
      newly_posted = true;
    }
    if (!opt_.strict_order) {
      // Asynchronous issue: the stream moves on once the batch is posted; each operation
      // completes on its own when its partner is posted (resolve_unmatched).
      for (int i = it.begin; i < it.end; ++i) unmatched_.push_back({r, i, post_time_[r]});
      posted_[r] = false;
      retire(r, it, post_time_[r]);
      return true;
    }
    // Complete when every operation's partner is posted.
    double end = post_time_[r];
    for (int i = it.begin; i < it.end; ++i) {
      const auto& other = is_send(list[i].kind) ? recv_post_ : send_post_;
      auto p = other.find(key_of(r, list[i]));
      if (p == other.end()) return newly_posted;
      end = std::max(end, std::max(post_time_[r], p->second) + opt_.durations.p2p_latency);
    }
    for (int i = it.begin; i < it.end; ++i) {
      const Action& a = list[i];
      const TensorKey k = key_of(r, a);
      const double partner = (is_send(a.kind) ? recv_post_ : send_post_).at(k);
      const double done = std::max(post_time_[r], partner) + opt_.durations.p2p_latency;
      const int flow = flow_id(k);
      if (is_recv(a.kind)) {
        recv_end_[k] = done;
        ++transfers_;
      }
      record(r, true, std::max(post_time_[r], partner), done, a, flow);
    }
    posted_[r] = false;
    retire(r, it, end);
    return true;
  }

  // Relaxed mode: completes posted operations whose partner is posted. Returns true if any.
  bool resolve_unmatched() {
    bool any = false;
    std::vector<Unmatched> still;
    for (const Unmatched& u : unmatched_) {
      const Action& a = s_.ranks[u.rank][u.index];
      const TensorKey k = key_of(u.rank, a);
      const auto& other = is_send(a.kind) ? recv_post_ : send_post_;
      auto p = other.find(k);
      if (p == other.end()) {
        still.push_back(u);
        continue;
      }
      const double start = std::max(u.post, p->second);
      const double done = start + opt_.durations.p2p_latency;
      const int flow = flow_id(k);
      if (is_recv(a.kind)) {
        recv_end_[k] = done;
        ++transfers_;
      }
      makespan_ = std::max(makespan_, done);
      record(u.rank, true, start, done, a, flow);
      any = true;
    }
    unmatched_ = std::move(still);
    return any;
  }

  std::vector<int> holders(int r, int stage) const {
    std::set<int> h;
    const int base = s_.replica(r) * s_.pp_ranks();
    for (const auto& path : s_.paths) h.insert(base + path[stage]);
    return {h.begin(), h.end()};
  }

  bool try_reduce(int r, const Item& it) {
    const Action& a = s_.ranks[r][it.begin];
    bool newly_posted = false;
    if (!posted_[r]) {
      if (pending_bwd_[r][a.stage] > 0) return false;
      posted_[r] = true;
      newly_posted = true;
      post_time_[r] = std::max(free_at(r, it), last_bwd_end_[r][a.stage]);
      reduce_post_[{r, a.stage}] = post_time_[r];
    }
    double end = 0;
    for (int h : holders(r, a.stage)) {
      auto p = reduce_post_.find({h, a.stage});
      if (p == reduce_post_.end()) return newly_posted;
      end = std::max(end, p->second);
    }
    end += opt_.durations.reduce_time;
    if (r == holders(r, a.stage).front()) ++reductions_;
    record(r, true, post_time_[r], end, a, -1);
    posted_[r] = false;
    retire(r, it, end);
    return true;
  }

  void record(int r, bool comm, double start, double end, const Action& a, int flow) {
    if (!opt_.record_events) return;
    SimEvent e;
    e.rank = r;
    e.comm = comm;
    e.start = start;
    e.end = end;
    e.action = a;
    e.action.sub_steps.clear();
    e.flow_id = flow;
    events_.push_back(std::move(e));
  }

  // One event per MoE sub-step of a chunk that started at `start` (SimOptions::moe).
  void record_sub_steps(int r, double start, const Action& a) {
    for (const TimedSubStep& x : sub_step_timeline(a, *opt_.durations.moe)) {
      SimEvent e;
      e.rank = r;
      e.comm = x.collective;
      e.start = start + x.start;
      e.end = start + x.end;
      e.action = make_compute(x.step.backward ? OpKind::kBackward : OpKind::kForward, x.step.stage, x.step.microbatch);
      e.action.sub_steps = {x.step};
      events_.push_back(std::move(e));
    }
  }

  [[noreturn]] void throw_deadlock() const {
    std::ostringstream os;
    os << "schedule '" << s_.name << "' deadlocks under rendezvous P2P:";
    for (int r = 0; r < s_.num_ranks(); ++r) {
      if (finished(r)) continue;
      os << "\n  rank " << r << ":";
      for (int stream = 0; stream < 2; ++stream) {
        int idx = head(r, stream);
        if (idx < 0) continue;
        const Item& it = items_[r][idx];
        const Action& a = s_.ranks[r][it.begin];
        os << " waits at action " << it.begin << " (" << to_string(a) << ")";
        if (it.type == Item::kBatch) {
          for (int i = it.begin; i < it.end; ++i) {
            const Action& x = s_.ranks[r][i];
            const auto& other = is_send(x.kind) ? recv_post_ : send_post_;
            if (posted_[r] && !other.count(key_of(r, x))) {
              os << " for rank " << x.peer << " to post the partner of " << to_string(x);
              break;
            }
          }
        } else if (it.type == Item::kReduce) {
          os << " for the other holders of stage " << a.stage;
        } else {
          os << " for its input";
        }
        os << ";";
      }
    }
    SY_THROW(InvalidArgument, os.str());
  }

  const Schedule& s_;
  EngineOptions opt_;
  std::vector<std::vector<double>> f_end_, b_end_, w_end_;  // [rank][stage * M + mb]
  std::vector<std::vector<Item>> items_;
  std::vector<std::array<std::vector<int>, 2>> stream_items_;  // [rank][stream] -> item indices
  std::vector<std::array<int, 2>> cursor_;
  std::vector<std::array<double, 2>> stream_free_;
  std::vector<bool> posted_;  // head batch/reduce posted, waiting for partners
  std::vector<double> post_time_;
  std::vector<double> busy_;
  struct Unmatched {
    int rank, index;
    double post;
  };
  std::vector<Unmatched> unmatched_;  // posted P2P operations waiting for their partner
  std::vector<std::vector<int>> pending_bwd_;      // backward chunks left per (rank, stage)
  std::vector<std::vector<double>> last_bwd_end_;  // when the last of them ended
  std::map<TensorKey, double> send_post_, recv_post_, recv_end_;
  std::map<TensorKey, int> flow_ids_;
  std::map<std::pair<int, int>, double> reduce_post_;
  std::vector<SimEvent> events_;
  double makespan_ = 0;
  int transfers_ = 0, reductions_ = 0;
};

}  // namespace

EngineResult run_engine(const Schedule& s, const EngineOptions& opt) { return Engine(s, opt).run(); }

}  // namespace switchyard::pipeline::detail
