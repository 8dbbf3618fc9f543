// FbOverlap (header): two lanes on one compute baton, collectives on a worker thread.
#include "switchyard/trainer/dist/fb_overlap.h"

#include <condition_variable>
#include <exception>
#include <mutex>

#include "switchyard/common/error.h"

namespace switchyard::trainer::dist {
namespace {

thread_local FbLane* tl_lane = nullptr;

}  // namespace

// State shared by the two lanes of one run_pair.
struct FbLane::Pair {
  std::mutex mu;
  std::condition_variable cv;
  int owner = 1;  // lane holding the baton: 0 forward, 1 backward (starts), -1 nobody
  bool done[2] = {false, false};
  pipeline::CommWorker* comm = nullptr;
  StepTrace* trace = nullptr;
  int step = 0;
  int64_t collectives = 0;  // guarded by the baton
};

FbLane* current_fb_lane() { return tl_lane; }

void FbLane::acquire() {
  std::unique_lock<std::mutex> lock(pair_->mu);
  pair_->cv.wait(lock, [&] { return pair_->owner == index_ || pair_->owner == -1; });
  pair_->owner = index_;
}

void FbLane::hand_over() {
  {
    std::lock_guard<std::mutex> lock(pair_->mu);
    const int other = 1 - index_;
    pair_->owner = pair_->done[other] ? -1 : other;
  }
  pair_->cv.notify_all();
}

void FbLane::record_segment(pipeline::SubStepKind kind, int layer, double end) {
  StepTrace* tr = pair_->trace;
  if (tr == nullptr || !tr->enabled()) return;
  pipeline::SubStep s;
  s.kind = kind;
  s.backward = backward_;
  s.layer = layer;
  s.microbatch = mb_;
  tr->record_segment(s, pair_->step, segment_start_, end);
}

void FbLane::collective(pipeline::SubStepKind kind, bool backward, int layer, const std::function<void()>& call) {
  StepTrace* tr = pair_->trace;
  const bool traced = tr != nullptr && tr->enabled();
  // The compute stretch that led here: the router and attention before a forward dispatch or
  // a backward combine, the experts before a forward combine or a backward dispatch.
  const bool before_experts = (kind == pipeline::SubStepKind::kDispatch) == backward;
  if (traced)
    record_segment(before_experts ? pipeline::SubStepKind::kExperts : pipeline::SubStepKind::kAttention, layer,
                   tr->now());
  ++pair_->collectives;
  const int mb = mb_, step = pair_->step;
  std::function<void()> wait = pair_->comm->post([&call, tr, traced, kind, backward, layer, mb, step] {
    const double t0 = traced ? tr->now() : 0;
    call();
    if (traced) tr->record_comm(kind, backward, layer, step, t0, tr->now(), mb, /*async=*/true);
  });
  hand_over();
  std::exception_ptr error;
  try {
    wait();
  } catch (...) {
    error = std::current_exception();
  }
  acquire();
  segment_start_ = traced ? tr->now() : 0;
  if (error) std::rethrow_exception(error);
}

void FbLane::run(const std::function<void()>& body) {
  tl_lane = this;
  acquire();
  StepTrace* tr = pair_->trace;
  const bool traced = tr != nullptr && tr->enabled();
  segment_start_ = traced ? tr->now() : 0;
  std::exception_ptr error;
  try {
    body();
  } catch (...) {
    error = std::current_exception();
  }
  if (traced) record_segment(pipeline::SubStepKind::kAttention, -1, tr->now());
  tl_lane = nullptr;
  {
    std::lock_guard<std::mutex> lock(pair_->mu);
    pair_->done[index_] = true;
  }
  hand_over();
  if (error) std::rethrow_exception(error);
}

FbOverlap::FbOverlap(StepTrace* trace) : trace_(trace) {}

FbOverlap::~FbOverlap() = default;

void FbOverlap::run_pair(int f_mb, const std::function<void()>& forward, int b_mb,
                         const std::function<void()>& backward) {
  SY_REQUIRE(f_mb != b_mb, "FbOverlap: the forward and the backward of a pair are both micro-batch " << f_mb);
  SY_REQUIRE(current_fb_lane() == nullptr, "FbOverlap: run_pair inside a lane of another pair");
  FbLane::Pair pair;
  pair.comm = &comm_;
  pair.trace = trace_;
  pair.step = trace_ ? trace_->step() : 0;
  FbLane f(&pair, 0, f_mb, false), b(&pair, 1, b_mb, true);
  std::function<void()> f_done = lane_.post([&] { f.run(forward); });
  std::exception_ptr error;
  try {
    b.run(backward);
  } catch (...) {
    error = std::current_exception();
  }
  try {
    f_done();
  } catch (...) {
    if (!error) error = std::current_exception();
  }
  ++pairs_;
  collectives_ += pair.collectives;
  if (error) std::rethrow_exception(error);
}

}  // namespace switchyard::trainer::dist
