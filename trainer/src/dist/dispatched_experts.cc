// DispatchedExperts: routed experts over an EP group through dispatch::Buffer (header).
#include "switchyard/trainer/dist/dispatched_experts.h"

#include <cstring>
#include <optional>
#include <string>

#include "switchyard/common/error.h"
#include "switchyard/common/param.h"
#include "switchyard/dispatch/fp8.h"
#include "switchyard/trainer/dist/fb_overlap.h"

namespace switchyard::trainer::dist {

static const Param<int64_t> kWeightedCombine(
    "TRAIN_WEIGHTED_COMBINE", 1, "bool",
    "1: MoE layers over EP use one weighted combine per layer (gate weights sent with the dispatch); "
    "0: one combine per top-k slot, gate weights applied by the MoE block");

ExpertWire parse_expert_wire(const std::string& text) {
  if (text == "fp8") return ExpertWire::kFp8Bf16;
  if (text == "fp32") return ExpertWire::kFloat32;
  SY_THROW(InvalidArgument, "expert wire format \"" << text << "\" is not one of fp8 (FP8 dispatch, BF16 combine), fp32");
}

const char* expert_wire_name(ExpertWire wire) { return wire == ExpertWire::kFp8Bf16 ? "fp8" : "fp32"; }

DispatchedExperts::DispatchedExperts(std::shared_ptr<dispatch::Buffer> buffer, std::vector<SwiGlu<float>> local,
                                     int64_t dim, ExpertWire wire)
    : buffer_(std::move(buffer)), experts_(std::move(local)), dim_(dim), wire_(wire),
      weighted_combine_(kWeightedCombine.get() != 0) {
  SY_REQUIRE(buffer_ != nullptr, "DispatchedExperts: no dispatch buffer");
  SY_REQUIRE(static_cast<int>(experts_.size()) == buffer_->num_local_experts(),
             "DispatchedExperts: " << experts_.size() << " local experts, the buffer places "
                                   << buffer_->num_local_experts() << " per rank");
  SY_REQUIRE(buffer_->options().hidden == dim_,
             "DispatchedExperts: buffer hidden " << buffer_->options().hidden << " != model hidden " << dim_);
}

comm::DataType DispatchedExperts::grad_type() const {
  return wire_ == ExpertWire::kFloat32 ? comm::DataType::kFloat32 : comm::DataType::kBfloat16;
}

void DispatchedExperts::encode(const float* x, int64_t rows, std::vector<uint8_t>& out) const {
  const int64_t n = rows * dim_;
  if (grad_type() == comm::DataType::kFloat32) {
    out.resize(n * sizeof(float));
    if (n > 0) std::memcpy(out.data(), x, n * sizeof(float));
  } else {
    out.resize(n * sizeof(uint16_t));
    dispatch::bf16_from_float(x, n, reinterpret_cast<uint16_t*>(out.data()));
  }
}

void DispatchedExperts::decode(const uint8_t* bytes, comm::DataType type, int64_t rows, float* out) const {
  const int64_t n = rows * dim_;
  if (type == comm::DataType::kFloat32) {
    if (n > 0) std::memcpy(out, bytes, n * sizeof(float));  // a rank may receive no rows
  } else {
    dispatch::bf16_to_float(reinterpret_cast<const uint16_t*>(bytes), n, out);
  }
}

template <class F>
auto DispatchedExperts::traced(pipeline::SubStepKind kind, bool backward, F&& call) {
  if (FbLane* lane = current_fb_lane()) {  // inside an overlapped FB pair: a yield point
    std::optional<decltype(call())> result;
    lane->collective(kind, backward, layer_, [&] { result.emplace(call()); });
    return std::move(*result);
  }
  if (trace_ == nullptr || !trace_->enabled()) return call();
  const double t0 = trace_->now();
  auto result = call();
  trace_->record_comm(kind, backward, layer_, trace_->step(), t0, trace_->now());
  return result;
}

dispatch::DispatchResult DispatchedExperts::dispatch_and_compute(const RoutingPlan& plan, const float* x,
                                                                const float* topk_weights) {
  const int64_t N = plan.num_tokens, d = dim_;
  const int K = static_cast<int>(plan.top_k);
  top_k_ = K;
  num_tokens_ = N;
  dispatch::DispatchArgs a;
  a.topk_idx = plan.topk_idx.data();
  a.topk_weights = topk_weights;
  a.num_tokens = N;
  a.top_k = K;
  a.recv_x = false;
  a.expert_major_x = true;
  if (wire_ == ExpertWire::kFp8Bf16) {
    q_.resize(N * d);
    scales_.resize(N * dispatch::fp8_num_tiles(d));
    dispatch::quantize_fp8_tiles(x, N, d, /*pow2_scale=*/false, q_.data(), scales_.data());
    a.x = q_.data();
    a.x_scales = scales_.data();
    a.dtype = comm::DataType::kFloat8E4M3;
  } else {
    a.x = x;
    a.dtype = comm::DataType::kFloat32;
  }
  dispatch::DispatchResult r = traced(pipeline::SubStepKind::kDispatch, false, [&] { return buffer_->dispatch(a); });
  handle_ = r.handle;
  num_recv_ = r.num_recv_tokens;
  offsets_ = r.expert_offsets;
  row_slot_ = r.expert_row_slot;
  const int64_t P = static_cast<int64_t>(row_slot_.size());
  x_rows_.resize(P * d);
  if (a.dtype == comm::DataType::kFloat8E4M3)
    dispatch::dequantize_fp8_tiles(r.expert_x.data(), r.expert_x_scales.data(), P, d, x_rows_.data());
  else
    decode(r.expert_x.data(), comm::DataType::kFloat32, P, x_rows_.data());

  // Local experts on their row blocks (padding rows are zeros and never combined).
  y_rows_.assign(P * d, 0.0f);
  for (size_t j = 0; j < experts_.size(); ++j) {
    const int64_t begin = offsets_[j], n = offsets_[j + 1] - begin;
    experts_[j].forward(x_rows_.data() + begin * d, n, y_rows_.data() + begin * d);
  }
  return r;
}

void DispatchedExperts::forward(const RoutingPlan& plan, const float* x, float* out) {
  const int64_t N = plan.num_tokens, d = dim_;
  const int K = static_cast<int>(plan.top_k);
  dispatch_and_compute(plan, x, nullptr);
  weighted_forward_ = false;
  const int64_t P = static_cast<int64_t>(row_slot_.size());

  // One combine per slot k with one-hot weights: token t gets exactly its slot-k output.
  encode(y_rows_.data(), P, wire_buf_);
  slot_weights_.resize(num_recv_ * K);
  tmp_.resize(N * d);
  for (int k = 0; k < K; ++k) {
    for (int64_t m = 0; m < num_recv_; ++m)
      for (int s = 0; s < K; ++s) slot_weights_[m * K + s] = s == k ? 1.0f : 0.0f;
    dispatch::CombineArgs c;
    c.expert_out = wire_buf_.data();
    c.dtype = grad_type();
    c.handle = &handle_;
    c.weights = slot_weights_.data();
    dispatch::CombineResult y = traced(pipeline::SubStepKind::kCombine, false, [&] { return buffer_->combine(c); });
    decode(y.y.data(), y.dtype, N, tmp_.data());
    for (int64_t t = 0; t < N; ++t) std::memcpy(out + (t * K + k) * d, tmp_.data() + t * d, d * sizeof(float));
  }
}

void DispatchedExperts::backward_input(const RoutingPlan& plan, const float* d_out, float* dx) {
  const int64_t N = num_tokens_, d = dim_;
  const int K = top_k_;
  SY_REQUIRE(handle_.valid() && plan.num_tokens == N && plan.top_k == K,
             "DispatchedExperts: backward_input without a matching forward (" << plan.num_tokens << " tokens, "
                                                                              << N << " in the forward)");
  const int64_t P = static_cast<int64_t>(row_slot_.size());
  dy_rows_.assign(P * d, 0.0f);
  tmp_.resize(N * d);
  std::vector<float>& recv = recv_rows_;
  recv.resize(P * d);
  for (int k = 0; k < K; ++k) {
    // Gradient of slot k's outputs, sent along the cached routing.
    for (int64_t t = 0; t < N; ++t) std::memcpy(tmp_.data() + t * d, d_out + (t * K + k) * d, d * sizeof(float));
    encode(tmp_.data(), N, wire_buf_);
    dispatch::DispatchArgs a;
    a.x = wire_buf_.data();
    a.dtype = grad_type();
    a.topk_idx = plan.topk_idx.data();
    a.num_tokens = N;
    a.top_k = K;
    a.cached_handle = &handle_;
    a.recv_x = false;
    a.expert_major_x = true;
    // Backward of the combine: a cached dispatch of the output gradient.
    dispatch::DispatchResult r = traced(pipeline::SubStepKind::kCombine, true, [&] { return buffer_->dispatch(a); });
    SY_CHECK(static_cast<int64_t>(r.expert_row_slot.size()) == P);
    decode(r.expert_x.data(), r.dtype, P, recv.data());
    for (int64_t p = 0; p < P; ++p)
      if (row_slot_[p] == k) std::memcpy(dy_rows_.data() + p * d, recv.data() + p * d, d * sizeof(float));
  }
  expert_backward_and_return(dx);
}

void DispatchedExperts::expert_backward_and_return(float* dx) {
  const int64_t N = num_tokens_, d = dim_, P = static_cast<int64_t>(row_slot_.size());
  dx_rows_.assign(P * d, 0.0f);
  for (size_t j = 0; j < experts_.size(); ++j) {
    const int64_t begin = offsets_[j];
    experts_[j].backward_input(dy_rows_.data() + begin * d, x_rows_.data() + begin * d, dx_rows_.data() + begin * d,
                               /*accumulate=*/false);
  }
  encode(dx_rows_.data(), P, wire_buf_);
  // Backward of the dispatch: a unit-weight combine of the input gradients.
  dispatch::CombineResult g = traced(pipeline::SubStepKind::kDispatch, true, [&] {
    return buffer_->dispatch_backward(wire_buf_.data(), grad_type(), handle_);
  });
  tmp_.resize(N * d);
  decode(g.y.data(), g.dtype, N, tmp_.data());
  for (int64_t i = 0; i < N * d; ++i) dx[i] += tmp_[i];
}

bool DispatchedExperts::forward_weighted(const RoutingPlan& plan, const float* x, const float* topk_weights,
                                         float* out) {
  if (!weighted_combine_) return false;
  SY_REQUIRE(topk_weights != nullptr, "DispatchedExperts::forward_weighted: no topk_weights");
  dispatch::DispatchResult r = dispatch_and_compute(plan, x, topk_weights);
  recv_weights_ = std::move(r.recv_topk_weights);
  weighted_forward_ = true;
  const int64_t P = static_cast<int64_t>(row_slot_.size());
  encode(y_rows_.data(), P, y_wire_);  // kept: combine_backward needs the combined rows
  dispatch::CombineArgs c;
  c.expert_out = y_wire_.data();
  c.dtype = grad_type();
  c.handle = &handle_;
  c.weights = recv_weights_.data();
  dispatch::CombineResult y = traced(pipeline::SubStepKind::kCombine, false, [&] { return buffer_->combine(c); });
  decode(y.y.data(), y.dtype, plan.num_tokens, out);
  return true;
}

bool DispatchedExperts::backward_weighted(const RoutingPlan& plan, const float* dy, float* dx,
                                          float* d_topk_weights) {
  const int64_t N = num_tokens_, d = dim_;
  SY_REQUIRE(handle_.valid() && weighted_forward_ && plan.num_tokens == N && plan.top_k == top_k_,
             "DispatchedExperts: backward_weighted without a matching forward_weighted (" << plan.num_tokens
                                                                                      << " tokens, " << N
                                                                                      << " in the forward)");
  encode(dy, N, wire_buf_);
  dispatch::CombineBackwardArgs a;
  a.grad_y = wire_buf_.data();
  a.dtype = grad_type();
  a.handle = &handle_;
  a.expert_out = y_wire_.data();
  a.weights = recv_weights_.data();
  // Backward of the weighted combine: a cached dispatch of dy, rows scaled by their weight,
  // and <dy, out_k> reduced back to the source.
  dispatch::CombineBackwardResult g =
      traced(pipeline::SubStepKind::kCombine, true, [&] { return buffer_->combine_backward(a); });
  const int64_t P = static_cast<int64_t>(row_slot_.size());
  dy_rows_.resize(P * d);
  decode(g.grad_expert_out.data(), grad_type(), P, dy_rows_.data());
  SY_CHECK(static_cast<int64_t>(g.grad_topk_weights.size()) == N * top_k_);
  if (N > 0) std::memcpy(d_topk_weights, g.grad_topk_weights.data(), N * top_k_ * sizeof(float));
  expert_backward_and_return(dx);
  return true;
}

void DispatchedExperts::backward_weight() {
  for (auto& e : experts_) e.backward_weight();
}

void DispatchedExperts::release() {
  for (auto& e : experts_) e.release();
  handle_ = dispatch::Handle();
  weighted_forward_ = false;
  x_rows_.clear();
  y_rows_.clear();
  dy_rows_.clear();
  dx_rows_.clear();
  recv_rows_.clear();
  y_wire_.clear();
  recv_weights_.clear();
}

std::unique_ptr<DispatchedExperts> make_dispatched_experts(Model<float>& model, int64_t layer,
                                                           std::shared_ptr<dispatch::Buffer> buffer, ExpertWire wire) {
  const ModelConfig& c = model.config();
  const int L = buffer->num_local_experts();
  const int64_t first = static_cast<int64_t>(buffer->rank()) * L;
  std::vector<SwiGlu<float>> local;
  for (int64_t e = first; e < first + L; ++e) {
    const std::string p = "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(e) + ".";
    ParameterSet<float>& ps = model.parameters();
    local.emplace_back(&ps.at(p + "gate_proj.weight"), &ps.at(p + "up_proj.weight"), &ps.at(p + "down_proj.weight"),
                       c.hidden_size, c.moe_intermediate_size);
  }
  return std::make_unique<DispatchedExperts>(std::move(buffer), std::move(local), c.hidden_size, wire);
}

}  // namespace switchyard::trainer::dist
