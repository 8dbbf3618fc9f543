// Sequence words in shared memory that a writer bumps and a same-node peer waits on (private
// to dispatch/src): the low-latency window's flags (ll_window.h) and the shared-memory row
// window's ready/consumed flags (row_window.h) both use these two calls.
// The writer stores the new sequence number with release and wakes sleepers; the waiter
// spins briefly, yields for 100 us, then sleeps on the futex in 1 ms steps, so ranks that
// share cores (4 ranks on 2 cores) do not starve the writer. It checks the peer's process
// every ~10 ms (PeerFailure) and throws Timeout naming the peer after `timeout`.
// Threading: any thread; the word must live in memory shared by both processes.
#pragma once

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>

#include "switchyard/common/error.h"
#include "switchyard/dispatch/peer_exchange.h"

namespace switchyard::dispatch::detail {

// Stores seq into *word (release), then wakes every waiter.
inline void post_seq(uint32_t* word, uint32_t seq) {
  std::atomic_ref<uint32_t>(*word).store(seq, std::memory_order_release);
  syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

// Waits until *word == seq (acquire). `what` and `context` name the call in the Timeout:
// "<what>: rank <me> waited <timeout> ms for rank <peer> (call <seq><context>)".
inline void wait_seq(uint32_t* word, uint32_t seq, PeerWindow& win, int peer, int me, std::chrono::milliseconds timeout,
                     const char* what, const char* context = "") {
  std::atomic_ref<uint32_t> a(*word);
  for (int i = 0; i < 256; ++i) {
    if (a.load(std::memory_order_acquire) == seq) return;
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
  const auto start = std::chrono::steady_clock::now();
  auto next_check = start + std::chrono::milliseconds(10);
  for (;;) {
    const uint32_t v = a.load(std::memory_order_acquire);
    if (v == seq) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - start < std::chrono::microseconds(100)) {
      sched_yield();
      continue;
    }
    if (now >= next_check) {
      win.check_peer(peer);
      if (now - start > timeout)
        SY_THROW(Timeout, what << ": rank " << me << " waited " << timeout.count() << " ms for rank " << peer << " (call "
                               << seq << context << ")");
      next_check = now + std::chrono::milliseconds(10);
    }
    const timespec ts{0, 1000000};
    syscall(SYS_futex, word, FUTEX_WAIT, v, &ts, nullptr, 0);
  }
}

}  // namespace switchyard::dispatch::detail
