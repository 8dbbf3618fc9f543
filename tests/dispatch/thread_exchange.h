// ThreadExchange: a PeerExchange between threads of one process, for tests (gloo-style
// spawn): ranks are threads, messages are copied through mailboxes keyed by
// (source, destination, tag). A receive waits at most the timeout (20 s unless set), then throws Timeout naming
// the peer, so a test whose ranks disagree fails instead of hanging.
// Windows (low-latency slot path): kHeap gives every rank one heap block that the threads
// of its node address at the same virtual address (so TSan sees the real ordering),
// kShm the default POSIX shared-memory windows, kNone no window (messages only).
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

enum class WindowMode { kHeap, kShm, kNone };

class Mailboxes {
 public:
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::tuple<int, int, int>, std::deque<std::vector<uint8_t>>> queues;  // (src, dst, tag)
  std::map<int, std::map<int, std::shared_ptr<uint8_t[]>>> windows;            // call -> rank -> block
  WindowMode window_mode = WindowMode::kHeap;
  std::chrono::milliseconds timeout{20000};
};

class HeapWindow final : public PeerWindow {
 public:
  explicit HeapWindow(std::map<int, std::shared_ptr<uint8_t[]>> blocks) : blocks_(std::move(blocks)) {}
  uint8_t* at(int rank) override {
    auto it = blocks_.find(rank);
    return it == blocks_.end() ? nullptr : it->second.get();
  }
  void check_peer(int) override {}

 private:
  std::map<int, std::shared_ptr<uint8_t[]>> blocks_;  // this rank and its node's peers
};

class ThreadExchange final : public PeerExchange {
 public:
  ThreadExchange(std::shared_ptr<Mailboxes> box, int rank, topology::RankMap map)
      : box_(std::move(box)), rank_(rank), map_(std::move(map)) {}
  int rank() const override { return rank_; }
  int size() const override { return map_.size(); }
  const topology::RankMap& rank_map() const override { return map_; }
  std::chrono::milliseconds timeout() const override { return box_->timeout; }
  std::unique_ptr<PeerWindow> open_window(size_t bytes) override {
    if (box_->window_mode == WindowMode::kNone) return nullptr;
    if (box_->window_mode == WindowMode::kShm) return PeerExchange::open_window(bytes);
    std::unique_lock<std::mutex> lock(box_->mu);
    auto& call = box_->windows[window_calls_++];
    call[rank_] = std::shared_ptr<uint8_t[]>(new uint8_t[bytes]());
    box_->cv.notify_all();
    if (!box_->cv.wait_for(lock, box_->timeout, [&] { return static_cast<int>(call.size()) == size(); }))
      SY_THROW(Timeout, "ThreadExchange: rank " << rank_ << " waited for the other ranks' windows");
    std::map<int, std::shared_ptr<uint8_t[]>> mine;
    for (const auto& [r, block] : call)
      if (map_.same_node(rank_, r)) mine[r] = block;
    return std::make_unique<HeapWindow>(std::move(mine));
  }
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
        if (!box_->cv.wait_for(lock, box_->timeout, [&] { return !q.empty(); }))
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
  int window_calls_ = 0;
};

// Runs fn(exchange) on every rank of `map` as a thread; rethrows the first error.
inline void spawn_ranks(const topology::RankMap& map, const std::function<void(std::shared_ptr<PeerExchange>)>& fn,
                        WindowMode window_mode = WindowMode::kHeap,
                        std::chrono::milliseconds timeout = std::chrono::milliseconds(20000)) {
  auto box = std::make_shared<Mailboxes>();
  box->window_mode = window_mode;
  box->timeout = timeout;
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
