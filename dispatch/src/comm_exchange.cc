// PeerExchange over a comm::Communicator: every stage posts irecv then isend, then waits.
#include <utility>

#include "low_latency_state.h"
#include "switchyard/comm/communicator.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/peer_exchange.h"

namespace switchyard::dispatch {

namespace {

class CommPending final : public PendingExchange {
 public:
  explicit CommPending(comm::Work work) : work_(std::move(work)) {}
  void wait() override { work_.wait(); }

 private:
  comm::Work work_;
};

class CommExchange final : public PeerExchange {
 public:
  explicit CommExchange(std::shared_ptr<comm::Communicator> comm) : comm_(std::move(comm)) {}
  int rank() const override { return comm_->rank(); }
  int size() const override { return comm_->size(); }
  const topology::RankMap& rank_map() const override { return comm_->rank_map(); }
  std::unique_ptr<PendingExchange> post(const std::vector<PeerSend>& sends, const std::vector<PeerRecv>& recvs,
                                        int tag) override {
    std::vector<comm::P2POp> ops;
    ops.reserve(sends.size() + recvs.size());
    for (const PeerRecv& r : recvs)
      ops.push_back({comm::P2POp::Kind::kRecv, r.data, r.bytes, r.peer, kDispatchTagBase + tag});
    for (const PeerSend& s : sends)
      ops.push_back({comm::P2POp::Kind::kSend, const_cast<void*>(s.data), s.bytes, s.peer, kDispatchTagBase + tag});
    return std::make_unique<CommPending>(ops.empty() ? comm::Work() : comm_->ibatch_send_recv(ops));
  }

 private:
  std::shared_ptr<comm::Communicator> comm_;
};

}  // namespace

std::shared_ptr<PeerExchange> make_comm_exchange(std::shared_ptr<comm::Communicator> comm) {
  if (!comm) SY_THROW(InvalidArgument, "dispatch: communicator is null");
  return std::make_shared<CommExchange>(std::move(comm));
}

Buffer::Buffer(std::shared_ptr<comm::Communicator> comm, const BufferOptions& options)
    : Buffer(make_comm_exchange(std::move(comm)), options) {}

}  // namespace switchyard::dispatch
