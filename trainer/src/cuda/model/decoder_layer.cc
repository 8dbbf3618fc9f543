// Decoder block on the GPU (see decoder_layer.h); mirrors src/decoder_layer.cc.
#include "decoder_layer.h"

#include "../kernels/model_kernels.h"
#include "switchyard/common/cuda_check.h"

namespace switchyard::trainer::gpu {

DecoderLayer::DecoderLayer(const ModelConfig& c, ParameterSlab& slab, int64_t layer)
    : d_(c.hidden_size), eps_(c.rms_norm_eps) {
  const std::string prefix = "model.layers." + std::to_string(layer) + ".";
  attn_norm_ = slab.add(prefix + "input_layernorm.weight", {d_});
  attn_ = std::make_unique<MlaLayer>(c, slab, prefix + "self_attn.");
  ffn_norm_ = slab.add(prefix + "post_attention_layernorm.weight", {d_});
  if (c.is_moe_layer(layer)) {
    moe_ = std::make_unique<MoeLayer>(c, slab, prefix + "mlp.");
  } else {
    dense_ = std::make_unique<DenseMlp>(slab, prefix + "mlp.", d_, c.intermediate_size);
  }
}

void DecoderLayer::forward(Context& ctx, const float* h_in, int64_t batch, int64_t seq_len, const DeviceRope& rope,
                           float* h_out) {
  N_ = batch * seq_len;
  h_in_ = h_in;
  const auto s = ctx.s();
  float* xa = xa_.ensure(N_ * d_);
  float* h_mid = h_mid_.ensure(N_ * d_);
  float* xf = xf_.ensure((N_ + 1) * d_);  // row N stays zero: the MoE padding rows' source
  fill_zero(xf + N_ * d_, d_, s);
  rmsnorm_forward(h_in, d_, attn_norm_->w, N_, d_, eps_, xa, d_, nullptr, s);
  attn_->forward(ctx, xa, batch, seq_len, rope, h_mid);
  add_inplace(h_mid, h_in, N_ * d_, s);
  rmsnorm_forward(h_mid, d_, ffn_norm_->w, N_, d_, eps_, xf, d_, nullptr, s);
  if (moe_) {
    moe_->forward(ctx, xf, batch, seq_len, h_out);
  } else {
    dense_->forward(ctx, xf, N_, h_out);
  }
  add_inplace(h_out, h_mid, N_ * d_, s);
}

void DecoderLayer::backward_input(Context& ctx, const float* dh_out, float* dh_in, double balance_coef,
                                  LayerScratch& sc) {
  const auto s = ctx.s();
  float* dxf = sc.dxf.ensure(N_ * d_);
  float* dh_mid = sc.dh_mid.ensure(N_ * d_);
  float* dxa = sc.dxa.ensure(N_ * d_);
  if (moe_) {
    moe_->backward_input(ctx, dh_out, dxf, balance_coef, sc.moe);
  } else {
    dense_->backward_input(ctx, dh_out, dxf, false);
  }
  SY_CUDA_CHECK(cudaMemcpyAsync(dh_mid, dh_out, N_ * d_ * sizeof(float), cudaMemcpyDeviceToDevice, s),
                "gpu decoder layer: residual gradient");
  rmsnorm_backward_input(h_mid_.data(), d_, ffn_norm_->w, dxf, d_, N_, d_, eps_, dh_mid, d_, true, s);
  attn_->backward_input(ctx, dh_mid, dxa, sc.mla);
  SY_CUDA_CHECK(cudaMemcpyAsync(dh_in, dh_mid, N_ * d_ * sizeof(float), cudaMemcpyDeviceToDevice, s),
                "gpu decoder layer: residual gradient");
  rmsnorm_backward_input(h_in_, d_, attn_norm_->w, dxa, d_, N_, d_, eps_, dh_in, d_, true, s);
}

void DecoderLayer::backward_weight(Context& ctx, LayerScratch& sc) {
  const auto s = ctx.s();
  rmsnorm_backward_weight(h_in_, d_, sc.dxa.data(), d_, N_, d_, eps_, attn_norm_->g, s);
  rmsnorm_backward_weight(h_mid_.data(), d_, sc.dxf.data(), d_, N_, d_, eps_, ffn_norm_->g, s);
  attn_->backward_weight(ctx, sc.mla);
  if (moe_) {
    moe_->backward_weight(ctx, sc.moe);
  } else {
    dense_->backward_weight(ctx);
  }
}

}  // namespace switchyard::trainer::gpu
