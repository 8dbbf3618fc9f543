// SyntheticMoeStage: a small MoE pipeline stage whose experts live on an expert-parallel group
// and whose tokens move through the dispatch library, for the executor's MoE tests and for
// sy-overlap-perf. Not a model: it exists to exercise the FB overlap for real.
//
// Legend: T tokens per EP rank and micro-batch, H hidden, E experts (L = E / R per rank), K
// top-k. All tensors FP32 row-major.
//   ATTN     a = tanh(x A^T)                      A [H x H], the attention stand-in
//   DISPATCH rows of a to the ranks of their experts (dispatch::Buffer, async)
//   EXPERTS  h_row = W_e a_row for the row's local expert e, W_e [H x H]; optional extra
//            FLOPs (compute_repeat) to tune the compute/communication ratio in benchmarks
//   COMBINE  y = a + sum_k w_k h_k (combine with the gate weights, async)
// Routing is fixed (a deterministic function of stage, micro-batch, EP rank, token), so no
// router gradient. Backward: COMBINE.B = cached dispatch of dy, EXPERTS.B (input grad; the
// weight grads are kept for weight_grads()), DISPATCH.B = combine with unit weights, ATTN.B.
//
// Threading: one thread drives a stage; collectives run on the dispatch library's helper
// thread (dispatch_async: a new thread per collective), or, after set_comm_worker(), as
// blocking dispatch/combine calls on that CommWorker's (pinnable) thread. All stages of a rank share one dispatch::Buffer (collectives are issued one at a
// time, in the same order on every rank of the EP group).
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/pipeline/comm_worker.h"
#include "switchyard/pipeline/overlap.h"

namespace switchyard::dispatch {
class Buffer;
}

namespace switchyard::pipeline {

struct SyntheticMoeOptions {
  int tokens = 8;    // T per EP rank and micro-batch
  int hidden = 8;    // H
  int experts = 4;   // E, divisible by the EP size
  int top_k = 2;     // K <= E
  int compute_repeat = 1;  // EXPERTS and ATTN run this many times (benchmarks; 1 in tests)
};

class SyntheticMoeStage {
 public:
  // ep: the expert-parallel group (shared by all stages of this rank through `buffer`).
  SyntheticMoeStage(int stage, std::shared_ptr<dispatch::Buffer> buffer, int ep_rank, int ep_size,
                    const SyntheticMoeOptions& opt);
  static std::shared_ptr<dispatch::Buffer> make_buffer(std::shared_ptr<comm::Communicator> ep,
                                                       const SyntheticMoeOptions& opt);

  // Sub-step tasks of the forward of micro-batch mb: x [T x H] is read when ATTN runs, y
  // [T x H] is written by COMBINE's wait. Pointers must stay valid until the tasks ran.
  // Once a pair's tasks have run in order, each compute run() and each collective
  // start()+wait may run again (same inputs, same outputs; the collectives in the same order
  // on every rank), as measure_fb_overlap's alone passes do.
  std::vector<SubStepTask> forward_tasks(int mb, const float* x, float* y);
  // Backward for inputs: gy [T x H] -> gx [T x H] (gx may be null at stage 0).
  std::vector<SubStepTask> backward_tasks(int mb, const float* gy, float* gx);
  // Weight gradients of micro-batch mb, added to grad_attn / grad_experts.
  void weight_grads(int mb);
  // Run the collectives of tasks created from now on on `worker` (nullptr: dispatch_async).
  void set_comm_worker(std::shared_ptr<CommWorker> worker) { worker_ = std::move(worker); }

  // When each collective ran (diagnostics): with a log set, every collective of the tasks
  // created from now on appends its sub-step and times to *log when its wait returns; on the
  // CommWorker, times as CommWorker::post records them, with dispatch_async started = posted
  // and finished = when the wait returned. nullptr stops logging. Not thread-safe (the
  // waits run on the thread that drives the stage).
  struct CollectiveTimes {
    SubStep step;
    CommJobTimes times;
  };
  void set_collective_log(std::vector<CollectiveTimes>* log) { log_ = log; }

  std::vector<float> attn;          // A [H x H]
  std::vector<float> experts;       // [L x H x H], local experts
  std::vector<float> grad_attn;     // like attn
  std::vector<float> grad_experts;  // like experts

  // Deterministic fixed data, shared with the reference.
  static float attn_init(int stage, int i, int j);
  static float expert_init(int stage, int expert, int i, int j);
  static void route(int stage, int mb, int ep_rank, int token, const SyntheticMoeOptions& opt, int64_t* idx,
                    float* weights);

  // Reference: the same stage on every EP rank's tokens, in double, no communication.
  // x_all [R][T x H] -> y_all; backward accumulates dA per EP rank and dW per global expert.
  struct Reference {
    int stage;
    SyntheticMoeOptions opt;
    int ep_size;
    std::vector<std::vector<double>> grad_attn;  // [R][H x H]
    std::vector<double> grad_experts;            // [E x H x H]
    Reference(int stage, int ep_size, const SyntheticMoeOptions& opt);
    void forward(int mb, const std::vector<std::vector<double>>& x, std::vector<std::vector<double>>* y,
                 std::vector<std::vector<double>>* a) const;
    void backward(int mb, const std::vector<std::vector<double>>& x, const std::vector<std::vector<double>>& a,
                  const std::vector<std::vector<double>>& gy, std::vector<std::vector<double>>* gx);
  };

 private:
  struct Saved;
  int stage_, ep_rank_, ep_size_;
  SyntheticMoeOptions opt_;
  std::shared_ptr<dispatch::Buffer> buffer_;
  std::map<int, std::shared_ptr<Saved>> saved_;
  std::shared_ptr<CommWorker> worker_;
  std::vector<CollectiveTimes>* log_ = nullptr;
  void record(SubStepKind kind, bool backward, int mb, const CommJobTimes* times);
};

// F&B overlap benchmark (sy-overlap-perf): one stage on every rank of `ep`, pairs of the
// forward of one micro-batch and the backward of another, run alternately serial (each
// collective waited for right after it is posted: the baseline) and overlapped
// (run_overlapped_pair), after a barrier each. After each serial pair, the same pair's four
// collectives run alone (back to back, nothing in between, after a barrier) and then its
// eight compute sub-steps alone (after a barrier, every rank at once, so ranks that share a
// core share it here too): these are "communication alone" and "compute alone". The
// collectives' times inside the serial pair are not: there a rank also waits for slower
// ranks to reach each collective (load imbalance between ranks, which no overlap can hide).
// Collective over `ep`; medians over `reps` pairs after `warmup`.
// worker: where the collectives run (nullptr: dispatch_async helper threads); pinning the
// calling (compute) thread is the caller's business (pin_current_thread).
struct OverlapMeasurement {
  // The group's pair times: per rep the slowest rank's, then the median (and spread) over reps.
  double serial_s = 0, overlapped_s = 0;
  double ratio_paired = 0;  // median over reps of overlapped / serial of the same rep
  double saved_paired_s = 0;  // median over reps of serial - overlapped of the same rep
  double serial_min_s = 0, serial_max_s = 0, overlapped_min_s = 0, overlapped_max_s = 0;
  double serial_q1_s = 0, serial_q3_s = 0, overlapped_q1_s = 0, overlapped_q3_s = 0;  // quartiles
  // This rank's medians.
  double local_serial_s = 0, local_overlapped_s = 0;
  double compute_s = 0;                // compute sub-steps alone
  double communication_s = 0;          // collectives alone
  double serial_compute_s = 0;         // summed compute sub-steps inside the serial pair
  double serial_communication_s = 0;   // summed collectives inside the serial pair (with waits for peers)
  // The slowest rank's compute_s and communication_s (max over ranks).
  double compute_max_s = 0, communication_max_s = 0;
  // (serial - overlapped) / min(compute_max, communication_max)
  double efficiency() const;
  // The same with the median of per-rep differences (adjacent pairs: less sensitive to
  // drifts in CPU speed between reps than the difference of the two medians).
  double efficiency_paired() const;
  // overlapped / max(compute_max, communication_max)
  double overlapped_over_longer() const;
};
// Every phase of one measured pair on one rank (CLOCK_MONOTONIC seconds, comparable between
// the processes of one machine): the pair's begin and end, its sub-steps as run_serial /
// run_overlapped_pair recorded them (forward then backward sub-steps serial; per index k the
// compute then the collective overlapped), and its collectives' times on their thread.
struct FbPairTrace {
  int rank = 0;
  int rep = 0;  // measured rep, 0-based; each rep has one serial and one overlapped pair
  bool overlapped = false;
  double begin = 0, end = 0;
  std::vector<SubStepEvent> events;                             // 8 for one MoE layer
  std::vector<SyntheticMoeStage::CollectiveTimes> collectives;  // 4, in posting order
};

// trace (optional): every rank's measured pairs, gathered onto every rank (all_gather over ep).
OverlapMeasurement measure_fb_overlap(std::shared_ptr<comm::Communicator> ep, const SyntheticMoeOptions& opt, int reps,
                                      int warmup, std::shared_ptr<CommWorker> worker = nullptr,
                                      std::vector<FbPairTrace>* trace = nullptr);

}  // namespace switchyard::pipeline
