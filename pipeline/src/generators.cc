// Generator front end (names, validity, dispatch) and the schedule passes: P2P insertion,
// replication over EP groups, MoE sub-steps.
#include "switchyard/pipeline/generators.h"

#include <sstream>

#include "generators_internal.h"
#include "transfers.h"
#include "switchyard/common/error.h"

namespace switchyard::pipeline {

const char* schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::k1F1B: return "1f1b";
    case ScheduleKind::kInterleaved1F1B: return "interleaved-1f1b";
    case ScheduleKind::kZBH1: return "zb-h1";
    case ScheduleKind::kZBV: return "zbv";
    case ScheduleKind::kDualPipe: return "dualpipe";
    case ScheduleKind::kDualPipeV: return "dualpipev";
  }
  return "?";
}

std::vector<ScheduleKind> all_schedule_kinds() {
  return {ScheduleKind::k1F1B, ScheduleKind::kInterleaved1F1B, ScheduleKind::kZBH1,
          ScheduleKind::kZBV,  ScheduleKind::kDualPipe,        ScheduleKind::kDualPipeV};
}

ScheduleKind parse_schedule_kind(const std::string& name) {
  for (ScheduleKind k : all_schedule_kinds())
    if (name == schedule_kind_name(k)) return k;
  SY_THROW(InvalidArgument, "unknown schedule '" << name
                                << "' (valid: 1f1b, interleaved-1f1b, zb-h1, zbv, dualpipe, dualpipev)");
}

std::string valid_sizes(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::k1F1B: return "ranks >= 1, micro-batches >= 1";
    case ScheduleKind::kInterleaved1F1B:
      return "ranks >= 1, chunks per rank >= 2, micro-batches a positive multiple of ranks";
    case ScheduleKind::kZBH1: return "ranks >= 1, micro-batches >= 1";
    case ScheduleKind::kZBV: return "ranks >= 1, micro-batches >= 1";
    case ScheduleKind::kDualPipe:
      return "ranks even and >= 2, micro-batches even and >= 2 * ranks (half start at each end)";
    case ScheduleKind::kDualPipeV: return "ranks >= 1, micro-batches >= 2 * ranks";
  }
  return "";
}

bool is_valid(ScheduleKind kind, const GeneratorOptions& o) {
  const int n = o.num_ranks, m = o.num_microbatches;
  if (n < 1 || m < 1 || n > 4096 || m > 1 << 20) return false;
  switch (kind) {
    case ScheduleKind::k1F1B:
    case ScheduleKind::kZBH1:
    case ScheduleKind::kZBV: return true;
    case ScheduleKind::kInterleaved1F1B: return o.num_chunks >= 2 && o.num_chunks <= 64 && m % n == 0;
    case ScheduleKind::kDualPipe: return n % 2 == 0 && m % 2 == 0 && m >= 2 * n;
    case ScheduleKind::kDualPipeV: return m >= 2 * n;
  }
  return false;
}

Schedule generate(ScheduleKind kind, const GeneratorOptions& o) {
  SY_REQUIRE(is_valid(kind, o), "schedule " << schedule_kind_name(kind) << ": ranks = " << o.num_ranks
                                            << ", micro-batches = " << o.num_microbatches
                                            << (kind == ScheduleKind::kInterleaved1F1B
                                                    ? ", chunks = " + std::to_string(o.num_chunks)
                                                    : std::string())
                                            << " is not valid; valid: " << valid_sizes(kind));
  Schedule s;
  switch (kind) {
    case ScheduleKind::k1F1B: s = detail::gen_1f1b(o.num_ranks, o.num_microbatches); break;
    case ScheduleKind::kInterleaved1F1B:
      s = detail::gen_interleaved_1f1b(o.num_ranks, o.num_microbatches, o.num_chunks);
      add_p2p(s, P2PPlacement::kRounds);
      return s;
    case ScheduleKind::kZBH1: s = detail::gen_zb_h1(o.num_ranks, o.num_microbatches); break;
    case ScheduleKind::kZBV:
      s = o.zbv_order == ZbvOrder::kGreedy ? detail::gen_zbv(o.num_ranks, o.num_microbatches)
                                           : detail::gen_zbv_heuristic(o.num_ranks, o.num_microbatches, o.zbv_costs);
      add_p2p(s, P2PPlacement::kRounds);
      return s;
    case ScheduleKind::kDualPipe:
      return detail::gen_dualpipe(o.num_ranks, o.num_microbatches, o.reduce_mirrored);
    case ScheduleKind::kDualPipeV: return detail::gen_dualpipev(o.num_ranks, o.num_microbatches);
  }
  add_p2p(s);
  return s;
}

namespace {

// Unit-time replay of the compute order; see P2PPlacement::kRounds.
void add_p2p_by_rounds(Schedule& s) {
  using detail::Transfer;
  const int n = s.num_ranks(), S = s.num_stages, M = s.num_microbatches;
  auto cell = [&](int st, int mb) { return static_cast<size_t>(st) * M + mb; };
  const int kNever = -1;
  std::vector<std::vector<int>> f_round(n, std::vector<int>(static_cast<size_t>(S) * M, kNever)), b_round = f_round;
  std::vector<std::vector<Action>> out(n);
  std::vector<size_t> cursor(n, 0);
  auto done_before = [&](const std::vector<int>& rounds, int st, int mb, int t) {
    return rounds[cell(st, mb)] != kNever && rounds[cell(st, mb)] < t;
  };
  // Round at which the output of (stage, mb) became available anywhere in the replica.
  auto f_ready = [&](int r, int st, int mb, int t) {
    return st == 0 || done_before(f_round[s.rank_of(st - 1, mb, s.replica(r))], st - 1, mb, t);
  };
  auto b_ready = [&](int r, int st, int mb, int t) {
    if (!done_before(f_round[r], st, mb, t)) return false;
    return st + 1 == S || done_before(b_round[s.rank_of(st + 1, mb, s.replica(r))], st + 1, mb, t);
  };
  size_t remaining = 0;
  for (const auto& list : s.ranks) remaining += list.size();
  for (int t = 0; remaining > 0; ++t) {
    std::vector<std::pair<int, Action>> ran;
    for (int r = 0; r < n; ++r) {
      while (cursor[r] < s.ranks[r].size() && !is_compute(s.ranks[r][cursor[r]].kind)) {
        out[r].push_back(s.ranks[r][cursor[r]++]);  // keep non-compute actions in place
        --remaining;
      }
      if (cursor[r] == s.ranks[r].size()) continue;
      const Action& a = s.ranks[r][cursor[r]];
      bool ready = false;
      switch (a.kind) {
        case OpKind::kForward: ready = f_ready(r, a.stage, a.microbatch, t); break;
        case OpKind::kBackwardInput:
        case OpKind::kBackward: ready = b_ready(r, a.stage, a.microbatch, t); break;
        case OpKind::kBackwardWeight: ready = done_before(b_round[r], a.stage, a.microbatch, t); break;
        case OpKind::kForwardBackward:
          ready = f_ready(r, a.stage, a.microbatch, t) && b_ready(r, a.bwd_stage, a.bwd_microbatch, t);
          break;
        default: break;
      }
      if (ready) ran.push_back({r, a});
    }
    SY_REQUIRE(!ran.empty() || remaining == 0,
               "add_p2p: schedule '" << s.name << "': the compute order cannot progress at unit-time round " << t);
    for (auto& [r, a] : ran) {
      ++cursor[r];
      --remaining;
      out[r].push_back(a);
      if (a.kind == OpKind::kForward || a.kind == OpKind::kForwardBackward) f_round[r][cell(a.stage, a.microbatch)] = t;
      if (a.kind == OpKind::kBackward || a.kind == OpKind::kBackwardInput) b_round[r][cell(a.stage, a.microbatch)] = t;
      if (a.kind == OpKind::kForwardBackward) b_round[r][cell(a.bwd_stage, a.bwd_microbatch)] = t;
    }
    // Transfers produced this round: both ends get them in the batch after the round, in
    // the same order on both sides.
    for (auto& [r, a] : ran) {
      std::vector<Transfer> sends;
      detail::chunk_transfers(s, r, a, nullptr, &sends);
      for (const Transfer& x : sends) {
        out[r].push_back(make_p2p(x.kind, x.stage, x.microbatch, x.peer));
        const OpKind recv = x.kind == OpKind::kSendActivation ? OpKind::kRecvActivation : OpKind::kRecvGrad;
        out[x.peer].push_back(make_p2p(recv, x.stage, x.microbatch, r));
      }
    }
  }
  s.ranks = std::move(out);
}

}  // namespace

void add_p2p(Schedule& s, P2PPlacement placement) {
  using detail::Transfer;
  check_shape(s);
  if (placement == P2PPlacement::kRounds) return add_p2p_by_rounds(s);
  for (int r = 0; r < s.num_ranks(); ++r) {
    std::vector<Action> out;
    std::vector<Transfer> pending;  // sends of the previous compute chunk
    auto flush = [&](const std::vector<Transfer>& recvs) {
      for (const Transfer& t : pending) out.push_back(make_p2p(t.kind, t.stage, t.microbatch, t.peer));
      for (const Transfer& t : recvs) out.push_back(make_p2p(t.kind, t.stage, t.microbatch, t.peer));
      pending.clear();
    };
    for (const Action& a : s.ranks[r]) {
      std::vector<Transfer> in, sends;
      detail::chunk_transfers(s, r, a, &in, &sends);
      if (is_compute(a.kind)) flush(in);
      out.push_back(a);
      pending.insert(pending.end(), sends.begin(), sends.end());
    }
    flush({});
    s.ranks[r] = std::move(out);
  }
}

Schedule replicate(const Schedule& s, int num_replicas) {
  check_shape(s);
  SY_REQUIRE(s.num_replicas == 1, "replicate: schedule '" << s.name << "' is already replicated " << s.num_replicas
                                                          << " times");
  SY_REQUIRE(num_replicas >= 1, "replicate: num_replicas = " << num_replicas << " must be >= 1");
  Schedule out = s;
  const int pp = s.num_ranks();
  out.num_replicas = num_replicas;
  out.ranks.clear();
  out.ep_groups.clear();
  for (int rep = 0; rep < num_replicas; ++rep) {
    for (int r = 0; r < pp; ++r) {
      std::vector<Action> list = s.ranks[r];
      for (Action& a : list)
        if (is_p2p(a.kind)) a.peer += rep * pp;
      out.ranks.push_back(std::move(list));
    }
  }
  if (num_replicas > 1) {
    for (int r = 0; r < pp; ++r) {
      std::vector<int> group;
      for (int rep = 0; rep < num_replicas; ++rep) group.push_back(rep * pp + r);
      out.ep_groups.push_back(group);
    }
  }
  return out;
}

namespace {

SubStep sub(SubStepKind k, bool backward, int layer, int stage, int mb) {
  SubStep s;
  s.kind = k;
  s.backward = backward;
  s.layer = layer;
  s.stage = stage;
  s.microbatch = mb;
  return s;
}

void forward_layer(std::vector<SubStep>& v, int layer, int stage, int mb) {
  for (SubStepKind k : {SubStepKind::kAttention, SubStepKind::kDispatch, SubStepKind::kExperts, SubStepKind::kCombine})
    v.push_back(sub(k, false, layer, stage, mb));
}

void backward_layer(std::vector<SubStep>& v, int layer, int stage, int mb) {
  for (SubStepKind k : {SubStepKind::kCombine, SubStepKind::kExperts, SubStepKind::kDispatch, SubStepKind::kAttention})
    v.push_back(sub(k, true, layer, stage, mb));
}

}  // namespace

std::vector<SubStep> moe_sub_steps(const Action& a, int num_moe_layers) {
  SY_REQUIRE(num_moe_layers >= 1, "moe_sub_steps: num_moe_layers = " << num_moe_layers << " must be >= 1");
  const int n = num_moe_layers;
  std::vector<SubStep> v;
  switch (a.kind) {
    case OpKind::kForward:
      for (int l = 0; l < n; ++l) forward_layer(v, l, a.stage, a.microbatch);
      break;
    case OpKind::kBackwardInput:
    case OpKind::kBackward:
      for (int l = n - 1; l >= 0; --l) backward_layer(v, l, a.stage, a.microbatch);
      break;
    case OpKind::kForwardBackward:
      for (int i = 0; i < n; ++i) {
        const int j = n - 1 - i;
        const int fs = a.stage, fm = a.microbatch, bs = a.bwd_stage, bm = a.bwd_microbatch;
        v.push_back(sub(SubStepKind::kCombine, true, j, bs, bm));
        v.push_back(sub(SubStepKind::kAttention, false, i, fs, fm));
        v.push_back(sub(SubStepKind::kDispatch, false, i, fs, fm));
        v.push_back(sub(SubStepKind::kExperts, true, j, bs, bm));
        v.push_back(sub(SubStepKind::kDispatch, true, j, bs, bm));
        v.push_back(sub(SubStepKind::kExperts, false, i, fs, fm));
        v.push_back(sub(SubStepKind::kCombine, false, i, fs, fm));
        v.push_back(sub(SubStepKind::kAttention, true, j, bs, bm));
      }
      break;
    default: break;
  }
  return v;
}

void add_moe_sub_steps(Schedule& s, int num_moe_layers) {
  SY_REQUIRE(num_moe_layers >= 1, "add_moe_sub_steps: num_moe_layers = " << num_moe_layers << " must be >= 1");
  for (auto& list : s.ranks)
    for (Action& a : list) a.sub_steps = moe_sub_steps(a, num_moe_layers);
}

}  // namespace switchyard::pipeline
