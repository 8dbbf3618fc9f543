// ThreadExchange: a PeerExchange between threads of one process, for tests (gloo-style
// spawn): ranks are threads, messages are copied through mailboxes keyed by
// (source, destination, tag). A receive waits at most kTimeout, then throws Timeout naming
// the peer, so a test whose ranks disagree fails instead of hanging.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#include "switchyard/common/error.h"
#include "switchyard/dispatch/peer_exchange.h"

namespace switchyard::dispatch::testing {

class Mailboxes {
 public:
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::tuple<int, int, int>, std::deque<std::vector<uint8_t>>> queues;  // (src, dst, tag)
};

class ThreadExchange final : public PeerExchange {
 public:
  static constexpr std::chrono::seconds kTimeout{20};
  ThreadExchange(std::shared_ptr<Mailboxes> box, int rank, topology::RankMap map)
      : box_(std::move(box)), rank_(rank), map_(std::move(map)) {}
  int rank() const override { return rank_; }
  int size() const override { return map_.size(); }
  const topology::RankMap& rank_map() const override { return map_; }
  std::unique_ptr<PendingExchange> post(const std::vector<PeerSend>& sends, const std::vector<PeerRecv>& recvs,
                                        int tag) override {
    {
      std::lock_guard<std::mutex> lock(box_->mu);
      for (const PeerSend& s : sends) {
        if (s.peer == rank_) SY_THROW(InternalError, "ThreadExchange: send to self");
        const uint8_t* p = static_cast<const uint8_t*>(s.data);
        box_->queues[{rank_, s.peer, tag}].emplace_back(p, p + s.bytes);
      }
    }
    box_->cv.notify_all();
    return std::make_unique<PendingRecvs>(box_, rank_, recvs, tag);
  }

 private:
  // Sends are copied at post time; receives complete in wait().
  class PendingRecvs final : public PendingExchange {
   public:
    PendingRecvs(std::shared_ptr<Mailboxes> box, int rank, std::vector<PeerRecv> recvs, int tag)
        : box_(std::move(box)), rank_(rank), recvs_(std::move(recvs)), tag_(tag) {}
    void wait() override {
      std::unique_lock<std::mutex> lock(box_->mu);
      for (const PeerRecv& r : recvs_) {
        auto& q = box_->queues[{r.peer, rank_, tag_}];
        if (!box_->cv.wait_for(lock, kTimeout, [&] { return !q.empty(); }))
          SY_THROW(Timeout, "ThreadExchange: rank " << rank_ << " waited for rank " << r.peer << " (tag " << tag_ << ")");
        if (q.front().size() > r.bytes)
          SY_THROW(InvalidArgument, "ThreadExchange: rank " << rank_ << " posted " << r.bytes << " bytes for rank "
                                                            << r.peer << ", got " << q.front().size());
        std::memcpy(r.data, q.front().data(), q.front().size());
        q.pop_front();
      }
    }

   private:
    std::shared_ptr<Mailboxes> box_;
    int rank_;
    std::vector<PeerRecv> recvs_;
    int tag_;
  };

 private:
  std::shared_ptr<Mailboxes> box_;
  int rank_;
  topology::RankMap map_;
};

// Runs fn(exchange) on every rank of `map` as a thread; rethrows the first error.
inline void spawn_ranks(const topology::RankMap& map, const std::function<void(std::shared_ptr<PeerExchange>)>& fn) {
  auto box = std::make_shared<Mailboxes>();
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(map.size());
  for (int r = 0; r < map.size(); ++r)
    threads.emplace_back([&, r] {
      try {
        fn(std::make_shared<ThreadExchange>(box, r, map));
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace switchyard::dispatch::testing
