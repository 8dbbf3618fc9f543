// all_to_all_v: direct exchange, every pair at once; the self chunk is a local copy made
// while the transfers are in flight.
// Sends start at peer me+1 and wrap, so ranks do not all hit the same peer first.
#include <cstring>

#include "collectives/collectives.h"
#include "switchyard/common/error.h"
#include "transport/shm/shm_transport.h"

namespace switchyard::comm::detail {

void add_all_to_all_v(Op& op, const Group& g, TagSpace ts, const uint8_t* send, const size_t* sc, const size_t* sd,
                      uint8_t* recv, const size_t* rc, const size_t* rd, size_t esize) {
  int n = g.size(), me = g.me;
  Step step;
  for (int k = 1; k < n; ++k) {
    int j = (me + n - k) % n;
    step.transfers.push_back({false, g.ranks[j], ts.tag(0), recv + rd[j] * esize, rc[j] * esize, true});
  }
  for (int k = 1; k < n; ++k) {
    int j = (me + k) % n;
    step.transfers.push_back({true, g.ranks[j], ts.tag(0), const_cast<uint8_t*>(send + sd[j] * esize), sc[j] * esize, true});
  }
  const uint8_t* self_src = send + sd[me] * esize;
  uint8_t* self_dst = recv + rd[me] * esize;
  size_t self_bytes = sc[me] * esize;
  // The self chunk is copied while the peers' transfers are in flight.
  step.after_post = [self_src, self_dst, self_bytes](Op&) {
    if (self_bytes && self_src != self_dst) stream_copy(self_dst, self_src, self_bytes);
  };
  op.steps.push_back(std::move(step));
}

}  // namespace switchyard::comm::detail

namespace switchyard::comm::detail {

void add_all_to_all_v_hierarchical(Op& op, const Group& g, const NodeGrid& grid, TagSpace ts, const uint8_t* send,
                                   const size_t* sc_in, const size_t* sd_in, uint8_t* recv, const size_t* rc_in,
                                   const size_t* rd_in, size_t es) {
  const size_t n = static_cast<size_t>(g.size());
  const auto& nodes = grid.nodes;
  const int N = static_cast<int>(nodes.size());
  const int L = static_cast<int>(nodes[0].size());
  const int a = grid.my_node, l = grid.my_local;
  const int me = g.me;
  std::vector<size_t> sc(sc_in, sc_in + n), sd(sd_in, sd_in + n), rc(rc_in, rc_in + n), rd(rd_in, rd_in + n);

  // Step 1: tell each local rank m how many elements this rank sends to rank m of every node.
  // in_counts[m' * N + b] (on this rank) = elements local rank m' sends to (node b, local l).
  auto* out_counts = reinterpret_cast<uint64_t*>(op.alloc(static_cast<size_t>(L * N) * 8));
  auto* in_counts = reinterpret_cast<uint64_t*>(op.alloc(static_cast<size_t>(L * N) * 8));
  for (int m = 0; m < L; ++m)
    for (int b = 0; b < N; ++b) out_counts[m * N + b] = sc[static_cast<size_t>(nodes[b][m])];
  for (int b = 0; b < N; ++b) in_counts[l * N + b] = out_counts[l * N + b];
  Step counts;
  for (int k = 1; k < L; ++k) {
    int from = (l + L - k) % L, to = (l + k) % L;
    counts.transfers.push_back({false, g.ranks[nodes[a][from]], ts.tag(10), in_counts + from * N,
                                static_cast<size_t>(N) * 8, true});
    counts.transfers.push_back({true, g.ranks[nodes[a][to]], ts.tag(10), out_counts + to * N,
                                static_cast<size_t>(N) * 8, true});
  }
  const std::vector<int> ranks = g.ranks;  // the op may outlive the caller's Group
  counts.then = [=](Op& o) {
    // Aggregation buffers: agg[b] holds, in local-rank order, the chunks of this node's
    // ranks for (node b, local l).
    std::vector<uint8_t*> agg(static_cast<size_t>(N), nullptr);
    std::vector<size_t> agg_bytes(static_cast<size_t>(N), 0);
    std::vector<size_t> offset(static_cast<size_t>(L * N), 0);
    for (int b = 0; b < N; ++b) {
      if (b == a) continue;
      for (int m = 0; m < L; ++m) {
        offset[static_cast<size_t>(m * N + b)] = agg_bytes[b];
        agg_bytes[b] += in_counts[m * N + b] * es;
      }
      agg[b] = o.alloc(agg_bytes[b]);
    }
    Step data;
    for (int k = 1; k < L; ++k) {
      int from = (l + L - k) % L;
      size_t j = static_cast<size_t>(nodes[a][from]);
      data.transfers.push_back({false, ranks[j], ts.tag(11), recv + rd[j] * es, rc[j] * es, true});
      for (int b = 0; b < N; ++b)
        if (b != a)
          data.transfers.push_back({false, ranks[j], ts.tag(12), agg[b] + offset[static_cast<size_t>(from * N + b)],
                                    in_counts[from * N + b] * es, true});
    }
    for (int k = 1; k < L; ++k) {
      int to = (l + k) % L;
      size_t j = static_cast<size_t>(nodes[a][to]);
      data.transfers.push_back({true, ranks[j], ts.tag(11), const_cast<uint8_t*>(send + sd[j] * es), sc[j] * es, true});
      for (int b = 0; b < N; ++b) {
        if (b == a) continue;
        size_t d = static_cast<size_t>(nodes[b][to]);
        data.transfers.push_back({true, ranks[j], ts.tag(12), const_cast<uint8_t*>(send + sd[d] * es), sc[d] * es, true});
      }
    }
    // This rank's own chunks: to itself, and into its aggregation buffers.
    size_t self = static_cast<size_t>(me);
    if (sc[self] && send + sd[self] * es != recv + rd[self] * es)
      stream_copy(recv + rd[self] * es, send + sd[self] * es, sc[self] * es);
    for (int b = 0; b < N; ++b) {
      if (b == a) continue;
      size_t d = static_cast<size_t>(nodes[b][l]);
      if (sc[d]) std::memcpy(agg[b] + offset[static_cast<size_t>(l * N + b)], send + sd[d] * es, sc[d] * es);
    }
    // Step 3: one message per node pair between rail peers, then scatter into recv.
    Step net;
    std::vector<uint8_t*> stage(static_cast<size_t>(N), nullptr);
    for (int k = 1; k < N; ++k) {
      int b = (a + N - k) % N;
      size_t bytes = 0;
      for (int m = 0; m < L; ++m) bytes += rc[static_cast<size_t>(nodes[b][m])] * es;
      stage[b] = o.alloc(bytes);
      net.transfers.push_back({false, ranks[nodes[b][l]], ts.tag(13), stage[b], bytes, true});
    }
    for (int k = 1; k < N; ++k) {
      int b = (a + k) % N;
      net.transfers.push_back({true, ranks[nodes[b][l]], ts.tag(13), agg[b], agg_bytes[b], true});
    }
    net.then = [=](Op&) {
      for (int b = 0; b < N; ++b) {
        if (b == a) continue;
        size_t off = 0;
        for (int m = 0; m < L; ++m) {
          size_t j = static_cast<size_t>(nodes[b][m]);
          if (rc[j]) std::memcpy(recv + rd[j] * es, stage[b] + off, rc[j] * es);
          off += rc[j] * es;
        }
      }
    };
    o.steps.push_back(std::move(data));
    o.steps.push_back(std::move(net));
  };
  op.steps.push_back(std::move(counts));
}

}  // namespace switchyard::comm::detail
