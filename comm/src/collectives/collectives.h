// Collective algorithms as step lists appended to an Op (private to comm).
//
// Every builder works on a Group (world ranks in group order and this rank's index) and
// a TagSpace (communicator id + the op's sequence number), so operations in flight at the
// same time never match each other's messages. Buffers are raw bytes; counts in elements.
// Builders validate nothing: Communicator checks arguments before calling them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/op.h"
#include "switchyard/comm/types.h"
#include "switchyard/topology/rank_map.h"

namespace switchyard::comm::detail {

struct Group {
  std::vector<int> ranks;  // world ranks, in group order
  int me = 0;              // this rank's index in `ranks`
  int size() const { return static_cast<int>(ranks.size()); }
};

// Tags fit in 40 bits (the UCX transport's limit): [39..28] communicator id, [27]
// collective flag, then for collectives [26..8] the op's sequence number (wraps; ops match
// in issue order) and [7..0] the step; for point to point [26..0] the user tag.
inline constexpr int kMaxCommIdBits = 12;
inline constexpr int kMaxUserTag = (1 << 27) - 1;
struct TagSpace {
  uint32_t comm_id = 0;
  uint64_t seq = 0;
  uint64_t tag(uint8_t sub) const {
    return (uint64_t{comm_id} << 28) | (uint64_t{1} << 27) | ((seq & ((uint64_t{1} << 19) - 1)) << 8) | sub;
  }
  static uint64_t p2p(uint32_t comm_id, int user_tag) {
    return (uint64_t{comm_id} << 28) | static_cast<uint32_t>(user_tag);
  }
};

// Element range [begin, end) of chunk i when [begin, end) is cut into n near-equal chunks.
inline void chunk_range(size_t begin, size_t end, int n, int i, size_t& cb, size_t& ce) {
  size_t len = end - begin;
  cb = begin + len * static_cast<size_t>(i) / static_cast<size_t>(n);
  ce = begin + len * static_cast<size_t>(i + 1) / static_cast<size_t>(n);
}

// recv[rd[j]..+rc[j]] on this rank = send[sd[j]..+sc[j]] of rank j (elements of `esize`).
void add_all_to_all_v(Op& op, const Group& g, TagSpace ts, const uint8_t* send, const size_t* sc, const size_t* sd,
                      uint8_t* recv, const size_t* rc, const size_t* rd, size_t esize);

// Over elements [begin, end) of `in` (every member's array): writes to out_mine the
// reduction, in group order, of this rank's chunk (chunk_range(begin, end, n, me)).
// out_mine may alias in + chunk.
void add_reduce_scatter(Op& op, const Group& g, TagSpace ts, uint8_t sub, const uint8_t* in, uint8_t* out_mine,
                        size_t begin, size_t end, DataType type, ReduceOp rop);

// buf holds this rank's chunk of [begin, end); afterwards it holds every chunk.
void add_all_gather_chunks(Op& op, const Group& g, TagSpace ts, uint8_t sub, uint8_t* buf, size_t begin, size_t end,
                           size_t esize);

// The members of a group by node: nodes[b][m] = group index of the rank with local index
// m on node b (every node holds the same number of members).
struct NodeGrid {
  std::vector<std::vector<int>> nodes;
  int my_node = 0;
  int my_local = 0;
};

// all_to_all_v aggregated per node pair (Tutel's 2D all-to-all): chunks for the ranks with
// local index m on other nodes first go, inside the node, to this node's rank m, which
// sends one message per node pair to its rail peer; same-node chunks go directly. Steps:
// counts inside the node, data inside the node, one message per node pair over the network.
// Copies the counts: the caller's arrays may be reused once this returns.
void add_all_to_all_v_hierarchical(Op& op, const Group& g, const NodeGrid& grid, TagSpace ts, const uint8_t* send,
                                   const size_t* sc, const size_t* sd, uint8_t* recv, const size_t* rc,
                                   const size_t* rd, size_t esize);

// all_reduce of count elements: flat (reduce-scatter + all-gather over g) or, when
// `hierarchy` is given, inside each node, across nodes between rail peers, inside again.
struct Hierarchy {
  Group local;  // members on this node
  Group rail;   // members on other nodes with this rank's local index (this rank included)
};
void add_all_reduce(Op& op, const Group& g, const Hierarchy* hierarchy, TagSpace ts, const uint8_t* send,
                    uint8_t* recv, size_t count, DataType type, ReduceOp rop);

// Small all_reduce (one round instead of two): every member sends its whole buffer to
// every other member, and each reduces the n inputs in group order with reduce_inputs, so
// the bits equal the reduce-scatter path's. `gathered` holds n buffers of count elements;
// slot j receives member j's (slot me stays unused). The transfers go to `out` (sends
// first); finish writes recv (which may alias send).
void all_reduce_small_transfers(const Group& g, TagSpace ts, const uint8_t* send, uint8_t* gathered, size_t bytes,
                                std::vector<Transfer>& out);
void all_reduce_small_finish(int n, int me, const uint8_t* send, const uint8_t* gathered, uint8_t* recv, size_t count,
                             DataType type, ReduceOp rop);
void add_all_reduce_small(Op& op, const Group& g, TagSpace ts, const uint8_t* send, uint8_t* recv, size_t count,
                          DataType type, ReduceOp rop);

void add_broadcast(Op& op, const Group& g, TagSpace ts, uint8_t* buf, size_t bytes, int root);
void add_barrier(Op& op, const Group& g, TagSpace ts);

// Debug mode (SWITCHYARD_COMM_CHECK_ARGS): all-gathers `desc` (the same length on every
// rank) and lets `check` compare them; `check` throws InvalidArgument naming the
// difference. `desc[0]` is the op code. Runs before the op's other steps.
using ArgCheck = void (*)(const std::vector<std::vector<int64_t>>& all, const char* op_name);
void add_arg_check(Op& op, const Group& g, TagSpace ts, std::vector<int64_t> desc, ArgCheck check);

}  // namespace switchyard::comm::detail
