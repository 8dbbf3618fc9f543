// Op: one posted operation as a list of steps. Each step posts all its transfers at once;
// when they have all finished, its `then` runs (a local reduction or copy; it may append
// further steps) and the next step starts. The Context advances ops; a step never blocks.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <string>
#include <vector>

#include "switchyard/comm/transport/transport.h"

namespace switchyard::comm::detail {

class WorkState;

// One message of a step. `peer` is a world rank. Receives with `exact` fail unless the
// sender sent exactly `bytes`.
struct Transfer {
  bool is_send = false;
  int peer = 0;
  uint64_t tag = 0;
  void* buf = nullptr;
  size_t bytes = 0;
  bool exact = true;
};

// What an op is, for error messages; formatted only when one is needed (str()), so
// issuing an op costs no string formatting. Keys and texts are string literals.
struct OpName {
  const char* op = "";
  struct Field {
    const char* key = nullptr;
    int64_t value = 0;
  };
  Field fields[3];
  const char* type = nullptr;   // dtype name
  const char* extra = nullptr;  // reduce op name
  uint32_t comm_id = 0;
  bool collective = false;
  uint64_t seq = 0;
  // "all_reduce(count=1024, float32, sum) on comm 0 (op 7)"
  std::string str() const;
};

// Reuses large temporary buffers between ops (a fresh 32 MiB buffer per all_reduce costs
// thousands of page faults). Thread-safe. Buffers are returned when their Op dies.
class ScratchPool {
 public:
  using Buffer = std::unique_ptr<uint8_t[]>;
  // A buffer of at least `bytes` (at most twice as large when reused).
  std::pair<Buffer, size_t> take(size_t bytes);
  void give(Buffer buffer, size_t bytes);

 private:
  std::mutex mu_;
  std::vector<std::pair<Buffer, size_t>> free_;
};

// The transfers of a one-step small exchange on the inline path (Context::run_inline):
// moved through the shared-memory rings by whoever holds the context lock, with no
// transport requests. The issuing thread reuses one between calls (no allocation).
struct InlineStep {
  std::vector<Transfer> transfers;
  std::vector<uint8_t> done;  // per transfer
  std::function<void()> then;  // local work once every transfer is done (may be empty)
};

class Op;

struct Step {
  std::vector<Transfer> transfers;
  std::function<void(Op&)> after_post;  // local work overlapping the transfers, run once right after posting them; may be empty
  std::function<void(Op&)> then;  // may be empty
};

class Op {
 public:
  OpName name;
  std::deque<Step> steps;
  ScratchPool* pool = nullptr;  // where scratch comes from and goes back to (may be null)
  std::vector<std::pair<std::unique_ptr<uint8_t[]>, size_t>> scratch;  // temporaries of the op

  Op() = default;
  Op(const Op&) = delete;
  Op& operator=(const Op&) = delete;
  ~Op() {
    if (pool)
      for (auto& [buffer, bytes] : scratch) pool->give(std::move(buffer), bytes);
  }
  std::shared_ptr<WorkState> work;

  // A small exchange the inline path could not finish at once: advanced by polling the
  // rings (instead of `steps`), with `posted` set since peers are mid-exchange.
  std::unique_ptr<InlineStep> inline_rest;

  // Set by the Context while the current step is posted.
  bool posted = false;
  std::vector<std::unique_ptr<TransportRequest>> requests;

  // An uninitialised scratch buffer owned by this op.
  uint8_t* alloc(size_t bytes) {
    if (pool)
      scratch.push_back(pool->take(bytes));
    else
      scratch.emplace_back(new uint8_t[bytes ? bytes : 1], bytes);
    return scratch.back().first.get();
  }
};

}  // namespace switchyard::comm::detail
