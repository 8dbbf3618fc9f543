// Schedule verifier: static checks here, the progress check runs the simulator's engine with
// strict program order (engine.h).
#include "switchyard/pipeline/verifier.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <tuple>

#include "engine.h"
#include "switchyard/common/error.h"
#include "transfers.h"

namespace switchyard::pipeline {

namespace {

std::string where(const Schedule& s, int r, int i) {
  std::ostringstream os;
  os << "schedule '" << s.name << "': rank " << r << " action " << i << " (" << to_string(s.ranks[r][i]) << ")";
  return os.str();
}

// Position of each chunk kind of each (stage, micro-batch) on one rank (-1: absent).
struct ChunkPositions {
  int f = -1, b = -1, w = -1, bw = -1;
  int count_f = 0, count_b = 0, count_w = 0, count_bw = 0;
};

void check_chunks(const Schedule& s) {
  const int S = s.num_stages, M = s.num_microbatches;
  for (int r = 0; r < s.num_ranks(); ++r) {
    std::vector<ChunkPositions> pos(static_cast<size_t>(S) * M);
    const auto& list = s.ranks[r];
    auto note = [&](int i, OpKind kind, int stage, int mb) {
      const int owner = s.rank_of(stage, mb, s.replica(r));
      SY_REQUIRE(owner == r, where(s, r, i) << ": the placement runs stage " << stage << " of micro-batch " << mb
                                            << " on rank " << owner << ", not here");
      ChunkPositions& p = pos[static_cast<size_t>(stage) * M + mb];
      switch (kind) {
        case OpKind::kForward: p.f = i, ++p.count_f; break;
        case OpKind::kBackwardInput: p.b = i, ++p.count_b; break;
        case OpKind::kBackwardWeight: p.w = i, ++p.count_w; break;
        case OpKind::kBackward: p.bw = i, ++p.count_bw; break;
        default: break;
      }
    };
    for (int i = 0; i < static_cast<int>(list.size()); ++i) {
      const Action& a = list[i];
      if (a.kind == OpKind::kForwardBackward) {
        note(i, OpKind::kForward, a.stage, a.microbatch);
        note(i, OpKind::kBackward, a.bwd_stage, a.bwd_microbatch);
      } else if (is_compute(a.kind)) {
        note(i, a.kind, a.stage, a.microbatch);
      }
    }
    for (int st = 0; st < S; ++st) {
      for (int mb = 0; mb < M; ++mb) {
        if (s.rank_of(st, mb, s.replica(r)) != r) continue;
        const ChunkPositions& p = pos[static_cast<size_t>(st) * M + mb];
        std::ostringstream chunk;
        chunk << "schedule '" << s.name << "': rank " << r << ", stage " << st << ", micro-batch " << mb;
        SY_REQUIRE(p.count_f == 1, chunk.str() << ": " << p.count_f << " forward chunks, expected 1");
        const bool full = p.count_bw == 1 && p.count_b == 0 && p.count_w == 0;
        const bool split = p.count_bw == 0 && p.count_b == 1 && p.count_w == 1;
        SY_REQUIRE(full || split, chunk.str() << ": backward chunks BW=" << p.count_bw << " B=" << p.count_b
                                              << " W=" << p.count_w << ", expected one BW or one B and one W");
        const int first_b = full ? p.bw : p.b;
        SY_REQUIRE(p.f < first_b, chunk.str() << ": backward (action " << first_b << ") is not after its F (action "
                                              << p.f << ")");
        if (split)
          SY_REQUIRE(p.b < p.w, chunk.str() << ": W (action " << p.w << ") comes before its B (action " << p.b
                                            << ")");
      }
    }
  }
}

using Key = std::tuple<int, int, int, int>;  // (is_grad, stage, microbatch, peer)
Key key_of(OpKind kind, int stage, int mb, int peer) {
  const bool grad = kind == OpKind::kSendGrad || kind == OpKind::kRecvGrad;
  return {grad ? 1 : 0, stage, mb, peer};
}
std::string key_text(bool send, const Key& k) {
  std::ostringstream os;
  os << (send ? "SEND_" : "RECV_") << (std::get<0>(k) ? "GRAD" : "ACT") << " s" << std::get<1>(k) << " m"
     << std::get<2>(k) << " r" << std::get<3>(k);
  return os.str();
}

void check_transfers(const Schedule& s) {
  using detail::Transfer;
  // Per ordered pair: tensors in issue order, from the sender's and from the receiver's list.
  std::map<std::pair<int, int>, std::vector<Key>> sent, received;
  for (int r = 0; r < s.num_ranks(); ++r) {
    const auto& list = s.ranks[r];
    std::map<Key, int> recv_pos, send_pos;  // position of each P2P action
    for (int i = 0; i < static_cast<int>(list.size()); ++i) {
      const Action& a = list[i];
      if (!is_p2p(a.kind)) continue;
      Key k = key_of(a.kind, a.stage, a.microbatch, a.peer);
      auto& table = is_recv(a.kind) ? recv_pos : send_pos;
      SY_REQUIRE(!table.count(k), where(s, r, i) << ": the same transfer already appears at action " << table[k]);
      table[k] = i;
      if (is_send(a.kind))
        sent[{r, a.peer}].push_back({std::get<0>(k), a.stage, a.microbatch, r});
      else
        received[{a.peer, r}].push_back({std::get<0>(k), a.stage, a.microbatch, a.peer});
    }
    for (int i = 0; i < static_cast<int>(list.size()); ++i) {
      const Action& a = list[i];
      if (!is_compute(a.kind)) continue;
      std::vector<Transfer> in, out;
      detail::chunk_transfers(s, r, a, &in, &out);
      for (const Transfer& t : in) {
        Key k = key_of(t.kind, t.stage, t.microbatch, t.peer);
        auto it = recv_pos.find(k);
        SY_REQUIRE(it != recv_pos.end(), where(s, r, i) << " needs " << key_text(false, k)
                                                        << " but the rank never receives it (dropped receive?)");
        SY_REQUIRE(it->second < i, where(s, r, i) << " needs " << key_text(false, k) << " which is received later, at action "
                                                  << it->second);
        recv_pos.erase(it);
      }
      for (const Transfer& t : out) {
        Key k = key_of(t.kind, t.stage, t.microbatch, t.peer);
        auto it = send_pos.find(k);
        SY_REQUIRE(it != send_pos.end(), where(s, r, i) << " produces a tensor for rank " << t.peer << " but the rank never sends "
                                                        << key_text(true, k));
        SY_REQUIRE(it->second > i, where(s, r, it->second) << " sends a tensor before action " << i
                                                           << " computes it");
        send_pos.erase(it);
      }
    }
    if (!recv_pos.empty())
      SY_THROW(InvalidArgument, where(s, r, recv_pos.begin()->second) << " receives a tensor no chunk on this rank uses");
    if (!send_pos.empty())
      SY_THROW(InvalidArgument, where(s, r, send_pos.begin()->second) << " sends a tensor no chunk on this rank produces");
  }
  // Same tensors in the same order on both ends of every rank pair (NCCL-style matching).
  std::map<std::pair<int, int>, bool> pairs;
  for (auto& [p, v] : sent) pairs[p] = true;
  for (auto& [p, v] : received) pairs[p] = true;
  for (auto& [p, unused] : pairs) {
    const auto& a = sent[p];
    const auto& b = received[p];
    for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
      if (i < a.size() && i < b.size() && a[i] == b[i]) continue;
      std::ostringstream os;
      os << "schedule '" << s.name << "': transfers from rank " << p.first << " to rank " << p.second
         << " do not match in order: #" << i << " sent is ";
      if (i < a.size())
        os << (std::get<0>(a[i]) ? "GRAD" : "ACT") << " s" << std::get<1>(a[i]) << " m" << std::get<2>(a[i]);
      else
        os << "(nothing)";
      os << ", #" << i << " received is ";
      if (i < b.size())
        os << (std::get<0>(b[i]) ? "GRAD" : "ACT") << " s" << std::get<1>(b[i]) << " m" << std::get<2>(b[i]);
      else
        os << "(nothing)";
      SY_THROW(InvalidArgument, os.str());
    }
  }
}

std::string sub_text(const SubStep& x) {
  std::ostringstream os;
  os << sub_step_kind_name(x.kind) << (x.backward ? ".B" : ".F") << " l" << x.layer << " s" << x.stage << " m"
     << x.microbatch;
  return os.str();
}

void check_ep_groups(const Schedule& s) {
  for (const auto& group : s.ep_groups) {
    if (group.size() < 2) continue;
    std::vector<std::vector<SubStep>> seq(group.size());
    for (size_t g = 0; g < group.size(); ++g)
      for (const Action& a : s.ranks[group[g]])
        for (const SubStep& x : a.sub_steps)
          if (is_collective(x)) seq[g].push_back(x);
    for (size_t g = 1; g < group.size(); ++g) {
      const auto& a = seq[0];
      const auto& b = seq[g];
      for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
        if (i < a.size() && i < b.size() && a[i] == b[i]) continue;
        SY_THROW(InvalidArgument, "schedule '" << s.name << "': EP group of ranks " << group[0] << " and " << group[g]
                                               << ": collective #" << i << " is "
                                               << (i < a.size() ? sub_text(a[i]) : "(none)") << " on rank "
                                               << group[0] << " but " << (i < b.size() ? sub_text(b[i]) : "(none)")
                                               << " on rank " << group[g]
                                               << " (dispatch/combine must be issued in the same order)");
      }
    }
  }
}

}  // namespace

void verify_static(const Schedule& s) {
  check_shape(s);
  check_chunks(s);
  check_transfers(s);
  check_ep_groups(s);
}

std::vector<int> peak_activations(const Schedule& s) {
  std::vector<int> peak(s.num_ranks(), 0);
  for (int r = 0; r < s.num_ranks(); ++r) {
    int alive = 0;
    for (const Action& a : s.ranks[r]) {
      switch (a.kind) {
        case OpKind::kForward: ++alive; break;
        case OpKind::kForwardBackward: ++alive; break;  // freed below, after the peak is taken
        case OpKind::kBackward:
        case OpKind::kBackwardWeight: --alive; break;
        default: break;
      }
      peak[r] = std::max(peak[r], alive);
      if (a.kind == OpKind::kForwardBackward) --alive;
    }
  }
  return peak;
}

VerifyReport verify(const Schedule& s) {
  verify_static(s);
  detail::EngineOptions opt;
  opt.strict_order = true;
  detail::EngineResult run = detail::run_engine(s, opt);
  VerifyReport rep;
  rep.peak_activations = peak_activations(s);
  rep.num_transfers = run.num_transfers;
  rep.num_reductions = run.num_reductions;
  return rep;
}

}  // namespace switchyard::pipeline
