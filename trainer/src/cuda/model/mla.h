// Multi-head latent attention on the GPU (internal), the device twin of src/mla.h: the same
// projections, latent norms, interleaved RoPE on q_pe and the one shared key k_pe, and causal
// softmax attention with scale = config.softmax_scale(), no absorption.
//
// The projections are Linear layers in the model's precision; the attention itself is the
// FP32 FlashAttention-style kernel pair of kernels/model_kernels.h (keeps the softmax
// statistics lse [B, H, T], not P). Inputs passed to forward must stay valid until
// backward_weight. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "device_array.h"
#include "../kernels/model_kernels.h"
#include "linear.h"
#include "slab.h"
#include "switchyard/trainer/config.h"

namespace switchyard::trainer::gpu {

// RoPE table on the device: cos/sin [T, dr/2] FP32.
struct DeviceRope {
  DeviceArray<float> cos, sin;
  int64_t seq_len = 0, half = 0;
};

// Scratch the MLA backward shares across layers (sized by the largest layer); what
// backward_weight reads stays valid until the next layer's backward_input.
struct MlaScratch {
  DeviceArray<float> dO, dq, dkv, dcq, dcq_raw, dckv, da, dkpe;
};

class MlaLayer {
 public:
  // prefix: "model.layers.N.self_attn."
  MlaLayer(const ModelConfig& config, ParameterSlab& slab, const std::string& prefix);
  // x: [B*T, d] normalised layer input; u: [B*T, d].
  void forward(Context& ctx, const float* x, int64_t batch, int64_t seq_len, const DeviceRope& rope, float* u);
  // du: [B*T, d]; dx: [B*T, d] set.
  void backward_input(Context& ctx, const float* du, float* dx, MlaScratch& scratch);
  void backward_weight(Context& ctx, MlaScratch& scratch);

 private:
  AttentionShape shape() const;

  int64_t d_, H_, rq_, rkv_, dn_, dr_, dv_, dqk_;
  double eps_, scale_;
  Linear q_a_, q_b_, kv_a_, kv_b_, o_;
  SlabParam *q_a_norm_, *kv_a_norm_;
  const DeviceRope* rope_ = nullptr;
  int64_t B_ = 0, T_ = 0, N_ = 0;
  const float* x_ = nullptr;
  const float* du_ = nullptr;
  DeviceArray<float> cq_raw_, a_, kpe_, cq_, ckv_, q_, kv_, lse_, o_out_;
};

}  // namespace switchyard::trainer::gpu
