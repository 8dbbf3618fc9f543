// CommunicatorImpl: a group of world ranks on a shared Context (private to comm).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "collectives/collectives.h"
#include "core/context.h"
#include "switchyard/comm/communicator.h"

namespace switchyard::comm::detail {

// Shuts the Context down when the last communicator using it goes away (Work handles may
// keep the Context object itself alive a little longer).
class ContextOwner {
 public:
  explicit ContextOwner(std::shared_ptr<Context> c) : context(std::move(c)) {}
  ~ContextOwner() { context->shutdown(); }
  std::shared_ptr<Context> context;
};

class CommunicatorImpl : public Communicator {
 public:
  CommunicatorImpl(std::shared_ptr<ContextOwner> owner, std::vector<int> members, uint32_t comm_id);

  int rank() const override { return group_.me; }
  int size() const override { return group_.size(); }
  const topology::RankMap& rank_map() const override { return rank_map_; }
  std::chrono::milliseconds timeout() const override { return context_->timeout(); }
  const std::vector<int>& world_ranks() const override { return group_.ranks; }
  std::string describe() const override;

  std::shared_ptr<Communicator> split(int color, int key) override;

  Work isend(const void* buf, size_t bytes, int peer, int tag) override;
  Work irecv(void* buf, size_t bytes, int peer, int tag) override;
  Work ibatch_send_recv(const std::vector<P2POp>& ops) override;
  std::shared_ptr<RegisteredBuffer> alloc_registered(size_t bytes) override;

  Work iall_to_all(const void* send, void* recv, size_t count_per_peer, DataType type) override;
  Work iall_to_all_v(const void* send, const size_t* send_counts, const size_t* send_displs, void* recv,
                     const size_t* recv_counts, const size_t* recv_displs, DataType type) override;
  Work iall_reduce(const void* send, void* recv, size_t count, DataType type, ReduceOp op) override;
  Work iall_gather(const void* send, void* recv, size_t count_per_rank, DataType type) override;
  Work ireduce_scatter(const void* send, void* recv, size_t count_per_rank, DataType type, ReduceOp op) override;
  Work ibroadcast(void* buf, size_t count, DataType type, int root) override;
  Work ibarrier() override;

  void abort(const std::string& reason) override { context_->abort(reason); }

 private:
  // A new op called `name`; collectives (ts != null) take the next sequence number.
  std::unique_ptr<Op> new_op(OpName name, TagSpace* ts);
  Work post(std::unique_ptr<Op> op) { return context_->post(std::move(op)); }
  void check_peer(int peer, const char* what) const;
  // The inline path of a flat all_to_all_v inside this node (Context::run_inline), with
  // issue_mu_ held: true when it ran (the op took the next sequence number), false when the
  // caller must build the op. `sc`..`rd` in elements of `esize` bytes.
  bool try_inline_all_to_all_v(const OpName& name, const uint8_t* send, const size_t* sc, const size_t* sd,
                               uint8_t* recv, const size_t* rc, const size_t* rd, size_t esize, Work& out);
  // The inline path of the small all_reduce (all_reduce_small_transfers), like the above.
  bool try_inline_all_reduce(const OpName& name, const uint8_t* send, uint8_t* recv, size_t count, DataType type,
                             ReduceOp rop, Work& out);
  // Debug mode: prepends the cross-rank argument check.
  void maybe_check_args(Op& op, TagSpace ts, int64_t code, DataType type, size_t count, int64_t root, int64_t rop,
                        const size_t* send_counts = nullptr, const size_t* recv_counts = nullptr);
  // Hierarchy of this group when every node holds the same number of its members and there
  // is more than one node; false otherwise.
  bool make_hierarchy(Hierarchy& h) const;
  // The node grid of this group (same condition as make_hierarchy).
  bool make_grid(NodeGrid& grid) const;

  std::shared_ptr<ContextOwner> owner_;
  std::shared_ptr<Context> context_;
  Group group_;
  uint32_t comm_id_;
  topology::RankMap rank_map_;
  std::mutex issue_mu_;
  uint64_t seq_ = 0;
  uint64_t regions_ = 0;
};

}  // namespace switchyard::comm::detail
