// DeepSeekMoE block on the GPU (internal), the device twin of src/moe.cc: sigmoid router
// with the FP32 selection bias and group-limited top-k, routed SwiGLU experts, the shared
// expert and the sequence-wise balance loss, on the kernels of kernels/model_kernels.h.
//
// The gate GEMM is FP32 whatever the precision (V3 keeps the router in FP32). The expert
// GEMMs need each expert's row count on the host, so forward copies topk_idx [N, K] back
// (one stream synchronisation per MoE layer) and builds the routing plan there with the
// CPU's make_routing_plan; the balance loss comes back with it.
// Expert rows: the assignments sorted by expert (token order within an expert), each
// expert's segment padded to a multiple of kExpertRowAlign zero rows, so the GEMM shapes
// repeat from step to step (cuBLASLt plans are cached and tuned per shape) and FP8's
// 128-row tiles fit. Padding rows gather the zero row N of x (see forward).
// Buffers passed to forward must stay valid until backward_weight. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "device_array.h"
#include "ffn.h"
#include "linear.h"
#include "switchyard/trainer/config.h"
#include "switchyard/trainer/router.h"

namespace switchyard::trainer::gpu {

constexpr int64_t kExpertRowAlign = 128;

// Backward scratch shared by the MoE layers.
struct MoeScratch {
  DeviceArray<float> dy_rows, dx_rows, dg, da, db, dw, dlogits;
};

class MoeLayer {
 public:
  // prefix: "model.layers.N.mlp."
  MoeLayer(const ModelConfig& config, ParameterSlab& slab, const std::string& prefix);
  // x: [B*T + 1, d] whose last row is zero (the padding rows' source); y: [B*T, d].
  void forward(Context& ctx, const float* x, int64_t batch, int64_t seq_len, float* y);
  // dy: [B*T, d]; dx: [B*T, d] set. balance_coef = d total / d balance loss.
  void backward_input(Context& ctx, const float* dy, float* dx, double balance_coef, MoeScratch& scratch);
  void backward_weight(Context& ctx, MoeScratch& scratch);

  double balance_loss() const { return balance_loss_; }                // without alpha
  const std::vector<double>& expert_counts() const { return counts_; }  // [E]
  std::vector<float>& bias() { return bias_; }                          // [E] host copy
  const std::string& bias_name() const { return bias_name_; }
  // Uploads bias() (after load_weights or the bias update).
  void upload_bias(Context& ctx);

 private:
  int64_t padded(int64_t e) const {
    return (seg_count_[e] + kExpertRowAlign - 1) / kExpertRowAlign * kExpertRowAlign;
  }

  int64_t d_, E_, K_, F_;
  RouterConfig router_;
  Linear gate_;
  std::vector<float> bias_;
  std::string bias_name_;
  std::vector<SwiGluMlp> experts_;
  std::unique_ptr<DenseMlp> shared_;
  int64_t B_ = 0, T_ = 0, N_ = 0, rows_ = 0;
  const float* x_ = nullptr;
  std::vector<int64_t> topk_idx_h_, src_h_, row_of_h_;  // host staging
  std::vector<int64_t> seg_begin_, seg_count_;          // [E] padded row offset, real rows
  std::vector<double> counts_;
  double balance_loss_ = 0;
  DeviceArray<float> bias_d_, scores_, w_, x_rows_, a_, b_, g_, sig_, y_rows_;
  DeviceArray<int64_t> topk_idx_, src_, row_of_;
  DeviceArray<double> f_, loss_;
};

}  // namespace switchyard::trainer::gpu
