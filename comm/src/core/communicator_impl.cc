// CommunicatorImpl: argument checks, op construction and split (see communicator.h).
#include "core/communicator_impl.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>

#include "core/reduce.h"
#include "switchyard/common/error.h"
#include "switchyard/common/log.h"
#include "switchyard/common/param.h"

namespace switchyard::comm::detail {
namespace {

const Param<bool> kCheckArgs("COMM_CHECK_ARGS", false, "bool",
                             "debug mode: cross-check the arguments of every collective between ranks");
const Param<int64_t> kHierMinBytes("COMM_HIER_MIN_BYTES", 64 << 10, "bytes",
                                   "all_reduce with more than one node goes hierarchical from this size");

const Param<int64_t> kSmallAllReduceBytes("COMM_SMALL_ALL_REDUCE_BYTES", 4096, "bytes",
                                          "all_reduce inside one node up to this size: one exchange of whole "
                                          "buffers (inline path) instead of reduce-scatter + all-gather");
const Param<int64_t> kHierA2AMaxBytes("COMM_HIER_A2A_MAX_BYTES", 64 << 10, "bytes",
                                      "all_to_all with more than one node aggregates per node pair up to this "
                                      "size per peer");
const Param<bool> kHierA2AV("COMM_HIER_A2AV", true, "bool",
                            "all_to_all_v with more than one node aggregates per node pair");

enum OpCode : int64_t {
  kCodeAllToAll = 1,
  kCodeAllToAllV,
  kCodeAllReduce,
  kCodeAllGather,
  kCodeReduceScatter,
  kCodeBroadcast,
  kCodeBarrier
};

const char* op_code_name(int64_t code) {
  switch (code) {
    case kCodeAllToAll: return "all_to_all";
    case kCodeAllToAllV: return "all_to_all_v";
    case kCodeAllReduce: return "all_reduce";
    case kCodeAllGather: return "all_gather";
    case kCodeReduceScatter: return "reduce_scatter";
    case kCodeBroadcast: return "broadcast";
    case kCodeBarrier: return "barrier";
  }
  return "unknown";
}

// Descriptor layout: [code, dtype, count, root, reduce op, n, send_counts[n], recv_counts[n]].
void check_descriptors(const std::vector<std::vector<int64_t>>& all, const char* name) {
  size_t n = all.size();
  const auto& d0 = all[0];
  for (size_t r = 1; r < n; ++r) {
    const auto& d = all[r];
    SY_REQUIRE(d[0] == d0[0], name << ": argument check: rank " << r << " called " << op_code_name(d[0])
                                   << " while rank 0 called " << op_code_name(d0[0])
                                   << " (collectives issued in a different order)");
    SY_REQUIRE(d[1] == d0[1], name << ": argument check: rank " << r << " passed dtype "
                                   << dtype_name(static_cast<DataType>(d[1])) << ", rank 0 passed "
                                   << dtype_name(static_cast<DataType>(d0[1])));
    SY_REQUIRE(d[2] == d0[2], name << ": argument check: rank " << r << " passed count " << d[2]
                                   << ", rank 0 passed " << d0[2]);
    SY_REQUIRE(d[3] == d0[3], name << ": argument check: rank " << r << " passed root " << d[3]
                                   << ", rank 0 passed " << d0[3]);
    SY_REQUIRE(d[4] == d0[4], name << ": argument check: rank " << r << " passed reduce op "
                                   << reduce_op_name(static_cast<ReduceOp>(d[4])) << ", rank 0 passed "
                                   << reduce_op_name(static_cast<ReduceOp>(d0[4])));
  }
  if (d0[0] != kCodeAllToAllV) return;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) {
      int64_t sends = all[i][6 + j], expects = all[j][6 + n + i];
      SY_REQUIRE(sends == expects, name << ": argument check: rank " << i << " sends " << sends
                                        << " elements to rank " << j << ", which expects " << expects
                                        << " (send_counts[" << j << "] on rank " << i << " != recv_counts[" << i
                                        << "] on rank " << j << ")");
    }
}

void require_type(DataType t, const char* what) {
  SY_REQUIRE(dtype_size(t) > 0, what << ": invalid dtype " << static_cast<int>(t));
}

class Registered : public RegisteredBuffer {
 public:
  Registered(std::shared_ptr<SharedRegion> r, std::shared_ptr<ContextOwner> owner)
      : region_(std::move(r)), owner_(std::move(owner)) {}
  void* data() override { return region_->base(); }
  size_t bytes() const override { return region_->bytes(); }

 private:
  std::shared_ptr<SharedRegion> region_;
  std::shared_ptr<ContextOwner> owner_;
};

}  // namespace

CommunicatorImpl::CommunicatorImpl(std::shared_ptr<ContextOwner> owner, std::vector<int> members, uint32_t comm_id)
    : owner_(std::move(owner)),
      context_(owner_->context),
      comm_id_(comm_id),
      rank_map_([&] {
        std::vector<int> nodes;
        for (int r : members) nodes.push_back(owner_->context->rank_map().node_of(r));
        return topology::RankMap(nodes);
      }()) {
  group_.ranks = std::move(members);
  group_.me = -1;
  for (int i = 0; i < group_.size(); ++i)
    if (group_.ranks[i] == context_->rank()) group_.me = i;
  SY_CHECK(group_.me >= 0);
}

std::string CommunicatorImpl::describe() const {
  std::ostringstream os;
  os << "comm " << comm_id_ << " (rank " << group_.me << " of " << group_.size() << ", world ranks {";
  for (int i = 0; i < group_.size(); ++i) os << (i ? "," : "") << group_.ranks[i];
  os << "})";
  return os.str();
}

std::unique_ptr<Op> CommunicatorImpl::new_op(OpName name, TagSpace* ts) {
  auto op = std::make_unique<Op>();
  op->pool = &context_->scratch_pool();
  name.comm_id = comm_id_;
  if (ts) {
    ts->comm_id = comm_id_;
    ts->seq = seq_++;
    name.collective = true;
    name.seq = ts->seq;
  }
  op->name = name;
  op->work = std::make_shared<WorkState>(context_, name, context_->timeout());
  return op;
}

bool CommunicatorImpl::try_inline_all_to_all_v(const OpName& name, const uint8_t* send, const size_t* sc,
                                               const size_t* sd, uint8_t* recv, const size_t* rc, const size_t* rd,
                                               size_t es, Work& out) {
  if (kCheckArgs.get()) return false;
  thread_local InlineStep step;  // reused: no allocation per call
  const int n = size(), me = group_.me;
  TagSpace ts;
  ts.comm_id = comm_id_;
  ts.seq = seq_;
  step.transfers.clear();
  // Sends first (staggered from me+1 like the op path), so the data leaves at once.
  for (int k = 1; k < n; ++k) {
    int j = (me + k) % n;
    step.transfers.push_back({true, group_.ranks[j], ts.tag(0), const_cast<uint8_t*>(send + sd[j] * es), sc[j] * es, true});
  }
  for (int k = 1; k < n; ++k) {
    int j = (me + n - k) % n;
    step.transfers.push_back({false, group_.ranks[j], ts.tag(0), recv + rd[j] * es, rc[j] * es, true});
  }
  OpName named = name;
  named.comm_id = comm_id_;
  named.collective = true;
  named.seq = ts.seq;
  if (!context_->run_inline(named, step, BlockingCall::active(), out)) return false;
  ++seq_;
  size_t self = sc[me] * es;
  if (self && send + sd[me] * es != recv + rd[me] * es) std::memcpy(recv + rd[me] * es, send + sd[me] * es, self);
  return true;
}

bool CommunicatorImpl::try_inline_all_reduce(const OpName& name, const uint8_t* send, uint8_t* recv, size_t count,
                                             DataType type, ReduceOp rop, Work& out) {
  if (kCheckArgs.get()) return false;
  thread_local InlineStep step;
  size_t bytes = count * dtype_size(type);
  // Owned by the completion (it may outlive this call as the rest of an async exchange).
  auto gathered = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(size()) * bytes);
  TagSpace ts;
  ts.comm_id = comm_id_;
  ts.seq = seq_;
  step.transfers.clear();
  all_reduce_small_transfers(group_, ts, send, gathered->data(), bytes, step.transfers);
  OpName named = name;
  named.comm_id = comm_id_;
  named.collective = true;
  named.seq = ts.seq;
  auto then = [n = size(), me = group_.me, send, gathered, recv, count, type, rop] {
    all_reduce_small_finish(n, me, send, gathered->data(), recv, count, type, rop);
  };
  if (!context_->run_inline(named, step, BlockingCall::active(), out, then)) return false;
  ++seq_;
  return true;
}

void CommunicatorImpl::check_peer(int peer, const char* what) const {
  SY_REQUIRE(peer >= 0 && peer < size(), what << ": peer " << peer << " is out of range [0, " << size() << ") on "
                                             << describe());
}

void CommunicatorImpl::maybe_check_args(Op& op, TagSpace ts, int64_t code, DataType type, size_t count, int64_t root,
                                        int64_t rop, const size_t* sc, const size_t* rc) {
  if (!kCheckArgs.get() || size() == 1) return;
  size_t n = static_cast<size_t>(size());
  std::vector<int64_t> desc(6 + 2 * n, 0);
  desc[0] = code;
  desc[1] = static_cast<int64_t>(type);
  desc[2] = static_cast<int64_t>(count);
  desc[3] = root;
  desc[4] = rop;
  desc[5] = static_cast<int64_t>(n);
  for (size_t j = 0; j < n && sc; ++j) {
    desc[6 + j] = static_cast<int64_t>(sc[j]);
    desc[6 + n + j] = static_cast<int64_t>(rc[j]);
  }
  add_arg_check(op, group_, ts, std::move(desc), &check_descriptors);
}

bool CommunicatorImpl::make_hierarchy(Hierarchy& h) const {
  int nodes = rank_map_.num_nodes();
  if (nodes < 2) return false;
  int local = static_cast<int>(rank_map_.ranks_of_node(0).size());
  for (int n = 1; n < nodes; ++n)
    if (static_cast<int>(rank_map_.ranks_of_node(n).size()) != local) return false;
  if (local < 2) return false;
  int me = group_.me;
  h.local.ranks.clear();
  for (int r : rank_map_.ranks_of_node(rank_map_.node_of(me))) {
    if (r == me) h.local.me = h.local.size();
    h.local.ranks.push_back(group_.ranks[r]);
  }
  h.rail.ranks.clear();
  for (int r : rank_map_.rail(me)) {
    if (r == me) h.rail.me = h.rail.size();
    h.rail.ranks.push_back(group_.ranks[r]);
  }
  return true;
}

bool CommunicatorImpl::make_grid(NodeGrid& grid) const {
  Hierarchy h;
  if (!make_hierarchy(h)) return false;
  grid.nodes.clear();
  for (int n = 0; n < rank_map_.num_nodes(); ++n) grid.nodes.push_back(rank_map_.ranks_of_node(n));
  grid.my_node = rank_map_.node_of(group_.me);
  grid.my_local = rank_map_.local_rank(group_.me);
  return true;
}

// ---- point to point ----

Work CommunicatorImpl::isend(const void* buf, size_t bytes, int peer, int tag) {
  check_peer(peer, "isend");
  SY_REQUIRE(tag >= 0 && tag <= kMaxUserTag, "isend: tag " << tag << " must be in [0, " << kMaxUserTag << "]");
  SY_REQUIRE(buf || bytes == 0, "isend: null buffer with " << bytes << " bytes");
  std::lock_guard<std::mutex> lock(issue_mu_);
  OpName name;
  name.op = "send";
  name.fields[0] = {"bytes", static_cast<int64_t>(bytes)};
  name.fields[1] = {"peer", static_cast<int64_t>(peer)};
  name.fields[2] = {"tag", static_cast<int64_t>(tag)};
  auto op = new_op(name, nullptr);
  op->steps.push_back({{{true, group_.ranks[peer], TagSpace::p2p(comm_id_, tag), const_cast<void*>(buf), bytes, true}}, {}});
  return post(std::move(op));
}

Work CommunicatorImpl::irecv(void* buf, size_t bytes, int peer, int tag) {
  check_peer(peer, "irecv");
  SY_REQUIRE(tag >= 0 && tag <= kMaxUserTag, "irecv: tag " << tag << " must be in [0, " << kMaxUserTag << "]");
  SY_REQUIRE(buf || bytes == 0, "irecv: null buffer with " << bytes << " bytes");
  std::lock_guard<std::mutex> lock(issue_mu_);
  OpName name;
  name.op = "recv";
  name.fields[0] = {"max_bytes", static_cast<int64_t>(bytes)};
  name.fields[1] = {"peer", static_cast<int64_t>(peer)};
  name.fields[2] = {"tag", static_cast<int64_t>(tag)};
  auto op = new_op(name, nullptr);
  op->steps.push_back({{{false, group_.ranks[peer], TagSpace::p2p(comm_id_, tag), buf, bytes, false}}, {}});
  return post(std::move(op));
}

Work CommunicatorImpl::ibatch_send_recv(const std::vector<P2POp>& ops) {
  Step step;
  for (size_t i = 0; i < ops.size(); ++i) {
    const P2POp& p = ops[i];
    check_peer(p.peer, "batch_send_recv");
    SY_REQUIRE(p.tag >= 0 && p.tag <= kMaxUserTag, "batch_send_recv: entry " << i << ": tag " << p.tag << " must be in [0, " << kMaxUserTag << "]");
    SY_REQUIRE(p.buf || p.bytes == 0, "batch_send_recv: entry " << i << ": null buffer with " << p.bytes << " bytes");
    bool send = p.kind == P2POp::Kind::kSend;
    step.transfers.push_back({send, group_.ranks[p.peer], TagSpace::p2p(comm_id_, p.tag), p.buf, p.bytes, send});
  }
  std::lock_guard<std::mutex> lock(issue_mu_);
  OpName name;
  name.op = "batch_send_recv";
  name.fields[0] = {"entries", static_cast<int64_t>(ops.size())};
  auto op = new_op(name, nullptr);
  if (!step.transfers.empty()) op->steps.push_back(std::move(step));
  return post(std::move(op));
}

std::shared_ptr<RegisteredBuffer> CommunicatorImpl::alloc_registered(size_t bytes) {
  SY_REQUIRE(bytes > 0, "alloc_registered: bytes must be > 0");
  std::string name;
  {
    std::lock_guard<std::mutex> lock(issue_mu_);
    name = context_->shm().region_prefix() + std::to_string(comm_id_) + "-" + std::to_string(regions_++);
  }
  auto region = std::make_shared<SharedRegion>(name, bytes);
  context_->register_region(region);
  return std::make_shared<Registered>(std::move(region), owner_);
}

// ---- collectives ----

Work CommunicatorImpl::iall_to_all(const void* send, void* recv, size_t count, DataType type) {
  require_type(type, "all_to_all");
  size_t n = static_cast<size_t>(size());
  SY_REQUIRE(count == 0 || (send && recv), "all_to_all: null buffer with count_per_peer " << count);
  SY_REQUIRE(count == 0 || send != recv, "all_to_all: send and recv must be different buffers");
  thread_local std::vector<size_t> counts, displs;  // reused: the small-message path allocates nothing
  counts.assign(n, count);
  displs.resize(n);
  for (size_t j = 0; j < n; ++j) displs[j] = j * count;
  std::lock_guard<std::mutex> lock(issue_mu_);
  TagSpace ts;
  OpName name;
  name.op = "all_to_all";
  name.fields[0] = {"count_per_peer", static_cast<int64_t>(count)};
  name.type = dtype_name(type);
  NodeGrid grid;
  bool hier = count * dtype_size(type) <= static_cast<size_t>(kHierA2AMaxBytes.get()) && make_grid(grid);
  Work inline_work;
  if (!hier && try_inline_all_to_all_v(name, static_cast<const uint8_t*>(send), counts.data(), displs.data(),
                                       static_cast<uint8_t*>(recv), counts.data(), displs.data(), dtype_size(type),
                                       inline_work))
    return inline_work;
  auto op = new_op(name, &ts);
  SY_DEBUG("comm", op->name.str() << ": " << (hier ? "aggregated per node pair" : "flat") << " ("
                            << count * dtype_size(type) << " bytes per peer, " << rank_map_.num_nodes() << " nodes)");
  if (hier)
    add_all_to_all_v_hierarchical(*op, group_, grid, ts, static_cast<const uint8_t*>(send), counts.data(),
                                  displs.data(), static_cast<uint8_t*>(recv), counts.data(), displs.data(),
                                  dtype_size(type));
  else
    add_all_to_all_v(*op, group_, ts, static_cast<const uint8_t*>(send), counts.data(), displs.data(),
                     static_cast<uint8_t*>(recv), counts.data(), displs.data(), dtype_size(type));
  maybe_check_args(*op, ts, kCodeAllToAll, type, count, 0, 0);
  return post(std::move(op));
}

Work CommunicatorImpl::iall_to_all_v(const void* send, const size_t* sc, const size_t* sd, void* recv,
                                     const size_t* rc, const size_t* rd, DataType type) {
  require_type(type, "all_to_all_v");
  SY_REQUIRE(sc && sd && rc && rd, "all_to_all_v: null counts or displacements");
  int n = size();
  size_t send_total = 0, recv_total = 0;
  for (int j = 0; j < n; ++j) {
    send_total += sc[j];
    recv_total += rc[j];
  }
  SY_REQUIRE(send_total == 0 || send, "all_to_all_v: null send buffer with " << send_total << " elements to send");
  SY_REQUIRE(recv_total == 0 || recv, "all_to_all_v: null recv buffer with " << recv_total << " elements to receive");
  SY_REQUIRE(sc[group_.me] == rc[group_.me], "all_to_all_v: send_counts[" << group_.me << "] = " << sc[group_.me]
                                                 << " but recv_counts[" << group_.me << "] = " << rc[group_.me]
                                                 << " (this rank's chunk to itself)");
  SY_REQUIRE(send_total == 0 || recv_total == 0 || send != recv, "all_to_all_v: send and recv must be different buffers");
  // Copies: the caller may reuse its count arrays once the call returns.
  std::lock_guard<std::mutex> lock(issue_mu_);
  TagSpace ts;
  OpName name;
  name.op = "all_to_all_v";
  name.fields[0] = {"send_elements", static_cast<int64_t>(send_total)};
  name.fields[1] = {"recv_elements", static_cast<int64_t>(recv_total)};
  name.type = dtype_name(type);
  // No size is known alike on every rank without communicating, so the choice follows the
  // layout only (and the knob): aggregation pays off for the small, many-peer exchanges of
  // MoE dispatch; COMM_HIER_A2AV=0 keeps large exchanges flat.
  NodeGrid grid;
  bool hier = kHierA2AV.get() && make_grid(grid);
  Work inline_work;
  if (!hier && try_inline_all_to_all_v(name, static_cast<const uint8_t*>(send), sc, sd, static_cast<uint8_t*>(recv),
                                       rc, rd, dtype_size(type), inline_work))
    return inline_work;
  auto op = new_op(name, &ts);
  SY_DEBUG("comm", op->name.str() << ": " << (hier ? "aggregated per node pair" : "flat") << " (" << rank_map_.num_nodes()
                            << " nodes)");
  if (hier)
    add_all_to_all_v_hierarchical(*op, group_, grid, ts, static_cast<const uint8_t*>(send), sc, sd,
                                  static_cast<uint8_t*>(recv), rc, rd, dtype_size(type));
  else
    add_all_to_all_v(*op, group_, ts, static_cast<const uint8_t*>(send), sc, sd, static_cast<uint8_t*>(recv), rc, rd,
                     dtype_size(type));
  maybe_check_args(*op, ts, kCodeAllToAllV, type, 0, 0, 0, sc, rc);
  return post(std::move(op));
}

Work CommunicatorImpl::iall_reduce(const void* send, void* recv, size_t count, DataType type, ReduceOp rop) {
  require_reducible(type, "all_reduce");
  SY_REQUIRE(count == 0 || (send && recv), "all_reduce: null buffer with count " << count);
  std::lock_guard<std::mutex> lock(issue_mu_);
  TagSpace ts;
  OpName name;
  name.op = "all_reduce";
  name.fields[0] = {"count", static_cast<int64_t>(count)};
  name.type = dtype_name(type);
  name.extra = reduce_op_name(rop);
  size_t bytes = count * dtype_size(type);
  // Every rank decides alike (size and layout only), so all take the same algorithm;
  // whether it then runs inline is each rank's own business (same messages either way).
  if (count > 0 && size() > 1 && rank_map_.num_nodes() == 1 &&
      bytes <= static_cast<size_t>(kSmallAllReduceBytes.get())) {
    Work inline_work;
    if (try_inline_all_reduce(name, static_cast<const uint8_t*>(send), static_cast<uint8_t*>(recv), count, type, rop,
                              inline_work))
      return inline_work;
    auto op = new_op(name, &ts);
    SY_DEBUG("comm", op->name.str() << ": one exchange of whole buffers (" << bytes << " bytes)");
    add_all_reduce_small(*op, group_, ts, static_cast<const uint8_t*>(send), static_cast<uint8_t*>(recv), count, type,
                         rop);
    maybe_check_args(*op, ts, kCodeAllReduce, type, count, 0, static_cast<int64_t>(rop));
    return post(std::move(op));
  }
  auto op = new_op(name, &ts);
  Hierarchy h;
  bool hier = bytes >= static_cast<size_t>(kHierMinBytes.get()) && make_hierarchy(h);
  SY_DEBUG("comm", op->name.str() << ": " << (hier ? "hierarchical" : "flat") << " (" << bytes << " bytes, "
                            << rank_map_.num_nodes() << " nodes)");
  add_all_reduce(*op, group_, hier ? &h : nullptr, ts, static_cast<const uint8_t*>(send), static_cast<uint8_t*>(recv),
                 count, type, rop);
  maybe_check_args(*op, ts, kCodeAllReduce, type, count, 0, static_cast<int64_t>(rop));
  return post(std::move(op));
}

Work CommunicatorImpl::iall_gather(const void* send, void* recv, size_t count, DataType type) {
  require_type(type, "all_gather");
  SY_REQUIRE(count == 0 || (send && recv), "all_gather: null buffer with count_per_rank " << count);
  size_t es = dtype_size(type);
  std::lock_guard<std::mutex> lock(issue_mu_);
  TagSpace ts;
  OpName name;
  name.op = "all_gather";
  name.fields[0] = {"count_per_rank", static_cast<int64_t>(count)};
  name.type = dtype_name(type);
  auto op = new_op(name, &ts);
  auto* r = static_cast<uint8_t*>(recv);
  const auto* s = static_cast<const uint8_t*>(send);
  size_t mine = static_cast<size_t>(group_.me) * count * es;
  // Own block first (a local copy unless in place), then exchange.
  op->steps.push_back({{}, [r, s, mine, count, es](Op&) {
                         if (count && r + mine != s) std::memmove(r + mine, s, count * es);
                       }});
  add_all_gather_chunks(*op, group_, ts, 0, r, 0, count * static_cast<size_t>(size()), es);
  maybe_check_args(*op, ts, kCodeAllGather, type, count, 0, 0);
  return post(std::move(op));
}

Work CommunicatorImpl::ireduce_scatter(const void* send, void* recv, size_t count, DataType type, ReduceOp rop) {
  require_reducible(type, "reduce_scatter");
  SY_REQUIRE(count == 0 || (send && recv), "reduce_scatter: null buffer with count_per_rank " << count);
  std::lock_guard<std::mutex> lock(issue_mu_);
  TagSpace ts;
  OpName name;
  name.op = "reduce_scatter";
  name.fields[0] = {"count_per_rank", static_cast<int64_t>(count)};
  name.type = dtype_name(type);
  name.extra = reduce_op_name(rop);
  auto op = new_op(name, &ts);
  add_reduce_scatter(*op, group_, ts, 0, static_cast<const uint8_t*>(send), static_cast<uint8_t*>(recv), 0,
                     count * static_cast<size_t>(size()), type, rop);
  maybe_check_args(*op, ts, kCodeReduceScatter, type, count, 0, static_cast<int64_t>(rop));
  return post(std::move(op));
}

Work CommunicatorImpl::ibroadcast(void* buf, size_t count, DataType type, int root) {
  require_type(type, "broadcast");
  SY_REQUIRE(root >= 0 && root < size(), "broadcast: root " << root << " is out of range [0, " << size() << ")");
  SY_REQUIRE(count == 0 || buf, "broadcast: null buffer with count " << count);
  std::lock_guard<std::mutex> lock(issue_mu_);
  TagSpace ts;
  OpName name;
  name.op = "broadcast";
  name.fields[0] = {"count", static_cast<int64_t>(count)};
  name.fields[1] = {"root", static_cast<int64_t>(root)};
  name.type = dtype_name(type);
  auto op = new_op(name, &ts);
  add_broadcast(*op, group_, ts, static_cast<uint8_t*>(buf), count * dtype_size(type), root);
  maybe_check_args(*op, ts, kCodeBroadcast, type, count, root, 0);
  return post(std::move(op));
}

Work CommunicatorImpl::ibarrier() {
  std::lock_guard<std::mutex> lock(issue_mu_);
  TagSpace ts;
  OpName name;
  name.op = "barrier";
  auto op = new_op(name, &ts);
  add_barrier(*op, group_, ts);
  maybe_check_args(*op, ts, kCodeBarrier, DataType::kUint8, 0, 0, 0);
  return post(std::move(op));
}

// ---- split ----

std::shared_ptr<Communicator> CommunicatorImpl::split(int color, int key) {
  int n = size();
  std::vector<int64_t> mine = {color, key, static_cast<int64_t>(context_->next_comm_id())};
  std::vector<int64_t> all(3 * static_cast<size_t>(n));
  all_gather(mine.data(), all.data(), 3, DataType::kInt64);
  int64_t base = 0;
  std::map<int64_t, int> color_index;
  for (int r = 0; r < n; ++r) {
    base = std::max(base, all[3 * r + 2]);
    if (all[3 * r] >= 0) color_index.emplace(all[3 * r], 0);
  }
  int idx = 0;
  for (auto& [c, i] : color_index) i = idx++;
  context_->reserve_comm_ids(static_cast<uint32_t>(base + idx));
  if (color < 0) return nullptr;
  std::vector<std::pair<int64_t, int>> members;  // (key, parent rank)
  for (int r = 0; r < n; ++r)
    if (all[3 * r] == color) members.emplace_back(all[3 * r + 1], r);
  std::sort(members.begin(), members.end());
  std::vector<int> world;
  for (auto& [k, r] : members) world.push_back(group_.ranks[r]);
  uint32_t id = static_cast<uint32_t>(base + color_index[color]);
  SY_REQUIRE(id < (1u << kMaxCommIdBits), "split: out of communicator ids (" << id << " >= " << (1u << kMaxCommIdBits) << ")");
  auto child = std::make_shared<CommunicatorImpl>(owner_, std::move(world), id);
  SY_DEBUG("comm", "split(color " << color << ", key " << key << ") of " << describe() << " -> " << child->describe());
  return child;
}

}  // namespace switchyard::comm::detail
