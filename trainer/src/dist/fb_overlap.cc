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
  std::mutex* events_mu = nullptr;  // guards *events
  std::vector<pipeline::SubStepEvent>* events = nullptr;
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
  pipeline::SubStep s;
  s.kind = kind;
  s.backward = backward_;
  s.layer = layer;
  s.stage = stage_;
  s.microbatch = mb_;
  {
    std::lock_guard<std::mutex> lock(*pair_->events_mu);
    pair_->events->push_back({s, false, segment_mono_, pipeline::monotonic_seconds()});
  }
  StepTrace* tr = pair_->trace;
  if (tr != nullptr && tr->enabled()) tr->record_segment(s, pair_->step, segment_start_, end);
}

void FbLane::collective(pipeline::SubStepKind kind, bool backward, int layer, const std::function<void()>& call) {
  StepTrace* tr = pair_->trace;
  const bool traced = tr != nullptr && tr->enabled();
  // The compute stretch that led here: the router and attention before a forward dispatch or
  // a backward combine, the experts before a forward combine or a backward dispatch.
  const bool before_experts = (kind == pipeline::SubStepKind::kDispatch) == backward;
  record_segment(before_experts ? pipeline::SubStepKind::kExperts : pipeline::SubStepKind::kAttention, layer,
                 traced ? tr->now() : 0);
  ++pair_->collectives;
  pipeline::SubStep sub;
  sub.kind = kind;
  sub.backward = backward;
  sub.layer = layer;
  sub.stage = stage_;
  sub.microbatch = mb_;
  const int step = pair_->step;
  Pair* pair = pair_;
  std::function<void()> wait = pair_->comm->post([&call, tr, traced, sub, step, pair] {
    const double t0 = traced ? tr->now() : 0, m0 = pipeline::monotonic_seconds();
    call();
    if (traced) tr->record_comm(sub.kind, sub.backward, sub.layer, step, t0, tr->now(), sub.microbatch, /*async=*/true);
    std::lock_guard<std::mutex> lock(*pair->events_mu);
    pair->events->push_back({sub, true, m0, pipeline::monotonic_seconds()});
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
  segment_mono_ = pipeline::monotonic_seconds();
  if (error) std::rethrow_exception(error);
}

void FbLane::run(const std::function<void()>& body) {
  tl_lane = this;
  acquire();
  StepTrace* tr = pair_->trace;
  const bool traced = tr != nullptr && tr->enabled();
  segment_start_ = traced ? tr->now() : 0;
  segment_mono_ = pipeline::monotonic_seconds();
  std::exception_ptr error;
  try {
    body();
  } catch (...) {
    error = std::current_exception();
  }
  record_segment(pipeline::SubStepKind::kAttention, 0, traced ? tr->now() : 0);
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

void FbOverlap::run_pair(int f_stage, int f_mb, const std::function<void()>& forward, int b_stage, int b_mb,
                         const std::function<void()>& backward) {
  SY_REQUIRE(f_mb != b_mb, "FbOverlap: the forward and the backward of a pair are both micro-batch " << f_mb);
  SY_REQUIRE(current_fb_lane() == nullptr, "FbOverlap: run_pair inside a lane of another pair");
  FbLane::Pair pair;
  pair.comm = &comm_;
  pair.trace = trace_;
  pair.step = trace_ ? trace_->step() : 0;
  pair.events_mu = &mu_;
  pair.events = &sub_steps_;
  FbLane f(&pair, 0, f_stage, f_mb, false), b(&pair, 1, b_stage, b_mb, true);
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
