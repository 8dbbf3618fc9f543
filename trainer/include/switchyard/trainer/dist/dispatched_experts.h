// DispatchedExperts: the routed experts of one MoE layer served over an expert-parallel (EP)
// group with the dispatch library (switchyard::dispatch::Buffer).
//
// Each EP rank holds E / R experts (expert e on EP rank e / (E / R), the Buffer's placement).
// forward() dispatches this rank's token rows to the ranks of their experts, runs the local
// experts on the received expert-major rows (one GEMM per expert and projection) and brings
// each assignment's output back. backward_input() sends the output gradients along the
// cached handle (no new layout), runs the local expert backward, and returns the input
// gradients with dispatch_backward (a unit-weight combine on the same handle).
//
// Wire formats (ExpertWire):
// - kFp8Bf16 (training): tokens travel as FP8 E4M3 with 1x128 scales, expert outputs and all
//   gradients as BF16. Not bitwise equal to a one-process run.
// - kFloat32 (exactness tests): every payload FP32. Results equal the one-process
//   LocalExperts up to GEMM summation order.
//
// Two forms of the ExpertProvider contract:
// - forward_weighted()/backward_weighted() (used by the MoE block, V3's fused form): the gate
//   weights travel with the dispatch, ONE weighted combine per layer applies them, and its
//   backward (combine_backward) returns their gradient <dy, out_k>.
// - forward()/backward_input() (per assignment): the MoE block applies the gate weights, so
//   forward() runs the combine once per top-k slot with one-hot weights (K combines of T x H
//   rows). Used when the fused form is switched off (set_weighted_combine(false), or
//   SWITCHYARD_TRAIN_WEIGHTED_COMBINE=0 at construction; the before/after measurement).
//
// Collective: every rank of the EP group must run the same MoE layers in the same order.
// Not thread-safe. The Buffer is shared by the layers of a model (calls are sequenced) and
// must outlive the provider; the SwiGlu experts point into the model's parameters.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/dispatch/buffer.h"
#include "switchyard/trainer/experts.h"
#include "switchyard/trainer/dist/step_trace.h"
#include "switchyard/trainer/model.h"

namespace switchyard::trainer::dist {

enum class ExpertWire { kFp8Bf16, kFloat32 };

// "fp8" / "fp32" (throws InvalidArgument otherwise).
ExpertWire parse_expert_wire(const std::string& text);
const char* expert_wire_name(ExpertWire wire);

class DispatchedExperts : public ExpertProvider<float> {
 public:
  // local[j]: expert buffer->rank() * L + j of this layer, L = buffer->num_local_experts().
  DispatchedExperts(std::shared_ptr<dispatch::Buffer> buffer, std::vector<SwiGlu<float>> local, int64_t dim,
                    ExpertWire wire);

  // x: [N, d] rows of this rank; out: [N * K, d].
  void forward(const RoutingPlan& plan, const float* x, float* out) override;
  // d_out: [N * K, d]; dx: [N, d] accumulated.
  void backward_input(const RoutingPlan& plan, const float* d_out, float* dx) override;
  void backward_weight() override;
  void release() override;

  // Fused form. x: [N, d]; topk_weights: [N, K] gate weights of plan's slots;
  // out: [N, d] = sum_k topk_weights[t, k] * expert_{topk_idx[t, k]}(x_t) (set, not added).
  // One dispatch and one weighted combine. Returns false (nothing sent) when the fused form
  // is switched off.
  bool forward_weighted(const RoutingPlan& plan, const float* x, const float* topk_weights, float* out) override;
  // dy: [N, d] gradient of out; dx: [N, d] accumulated (+=); d_topk_weights: [N, K] set to
  // <dy_t, expert_k(x_t)> (the combine's backward). Then backward_weight() as usual.
  // Requires the matching forward_weighted; returns true.
  bool backward_weighted(const RoutingPlan& plan, const float* dy, float* dx, float* d_topk_weights) override;
  // On (default: SWITCHYARD_TRAIN_WEIGHTED_COMBINE, 1) the MoE block uses the fused form.
  void set_weighted_combine(bool on) { weighted_combine_ = on; }

  // Records every dispatch/combine call of this layer into trace (nullptr: off).
  void set_trace(StepTrace* trace, int layer) { trace_ = trace, layer_ = layer; }

  // Expert-major rows computed on this rank in the last forward (received assignments).
  int64_t received_rows() const { return static_cast<int64_t>(row_slot_.size()); }

 private:
  comm::DataType grad_type() const;
  // float rows -> wire bytes of grad_type() ([rows, d]).
  void encode(const float* x, int64_t rows, std::vector<uint8_t>& out) const;
  // wire bytes of type -> float rows.
  void decode(const uint8_t* bytes, comm::DataType type, int64_t rows, float* out) const;
  // Dispatch of x (FP8 tiles or FP32 by wire_) with optional gate weights; fills the
  // expert-major rows and runs the local experts (y_rows_).
  dispatch::DispatchResult dispatch_and_compute(const RoutingPlan& plan, const float* x, const float* topk_weights);
  // Local expert backward on dy_rows_, then the dispatch backward into dx (+=).
  void expert_backward_and_return(float* dx);

  // Runs one Buffer call and records it as a DISPATCH or COMBINE event; inside a lane of an
  // overlapped FB pair (fb_overlap.h) the call runs on the pair's communication worker while
  // the other micro-batch computes.
  template <class F>
  auto traced(pipeline::SubStepKind kind, bool backward, F&& call);

  std::shared_ptr<dispatch::Buffer> buffer_;
  StepTrace* trace_ = nullptr;
  int layer_ = 0;
  std::vector<SwiGlu<float>> experts_;
  int64_t dim_;
  ExpertWire wire_;
  bool weighted_combine_ = true;
  bool weighted_forward_ = false;            // the last forward was forward_weighted
  int top_k_ = 0;
  int64_t num_tokens_ = 0;
  dispatch::Handle handle_;
  int64_t num_recv_ = 0;                     // M
  std::vector<int64_t> offsets_;             // [L + 1] expert-major row ranges
  std::vector<int32_t> row_slot_;            // [P] top-k slot of each row, -1 padding
  std::vector<float> x_rows_, y_rows_, dy_rows_, dx_rows_, recv_rows_;  // [P, d]
  std::vector<uint8_t> q_, wire_buf_;        // staging
  std::vector<float> scales_, slot_weights_, tmp_;
  std::vector<float> recv_weights_;          // [M, K] gate weights of received tokens (fused form)
  std::vector<uint8_t> y_wire_;              // [P, d] expert outputs as combined (fused form)
};

// The provider for MoE layer `layer` (absolute decoder index, MTP layers included) of
// `model`, holding the experts of buffer->rank().
std::unique_ptr<DispatchedExperts> make_dispatched_experts(Model<float>& model, int64_t layer,
                                                           std::shared_ptr<dispatch::Buffer> buffer, ExpertWire wire);

}  // namespace switchyard::trainer::dist
