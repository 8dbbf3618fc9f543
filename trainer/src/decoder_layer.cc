// Decoder block forward and split backward (see decoder_layer.h).
#include "decoder_layer.h"

#include "kernels.h"

namespace switchyard::trainer {

template <class T>
DecoderLayer<T>::DecoderLayer(const ModelConfig& c, ParameterSet<T>& params, int64_t layer, bool recompute_norms,
                              bool recompute_up_proj)
    : d_(c.hidden_size), eps_(c.rms_norm_eps), recompute_norms_(recompute_norms) {
  const std::string prefix = "model.layers." + std::to_string(layer) + ".";
  attn_norm_ = params.add(prefix + "input_layernorm.weight", {d_});
  attn_ = std::make_unique<Mla<T>>(c, params, prefix + "self_attn.", recompute_norms, recompute_up_proj);
  ffn_norm_ = params.add(prefix + "post_attention_layernorm.weight", {d_});
  if (c.is_moe_layer(layer)) {
    moe_ = std::make_unique<MoeBlock<T>>(c, params, prefix + "mlp.");
  } else {
    const int64_t F = c.intermediate_size;
    auto* g = params.add(prefix + "mlp.gate_proj.weight", {F, d_});
    auto* u = params.add(prefix + "mlp.up_proj.weight", {F, d_});
    auto* dn = params.add(prefix + "mlp.down_proj.weight", {d_, F});
    dense_ = std::make_unique<SwiGlu<T>>(g, u, dn, d_, F);
  }
}

template <class T>
void DecoderLayer<T>::forward(const T* h_in, int64_t batch, int64_t seq_len, const kernels::RopeTable& rope,
                              T* h_out) {
  N_ = batch * seq_len;
  h_in_ = h_in;
  xa_.resize(N_ * d_);
  h_mid_.resize(N_ * d_);
  xf_.resize(N_ * d_);
  kernels::rmsnorm_forward(h_in, d_, attn_norm_->value.data(), N_, d_, eps_, xa_.data(), (T*)nullptr);
  attn_->forward(xa_.data(), batch, seq_len, rope, h_mid_.data());
  for (int64_t i = 0; i < N_ * d_; ++i) h_mid_[i] += h_in[i];
  kernels::rmsnorm_forward(h_mid_.data(), d_, ffn_norm_->value.data(), N_, d_, eps_, xf_.data(), (T*)nullptr);
  if (moe_) {
    moe_->forward(xf_.data(), batch, seq_len, h_out);
  } else {
    dense_->forward(xf_.data(), N_, h_out);
  }
  for (int64_t i = 0; i < N_ * d_; ++i) h_out[i] += h_mid_[i];
  if (recompute_norms_) {
    std::vector<T>().swap(xa_);
    std::vector<T>().swap(xf_);
  }
}

template <class T>
void DecoderLayer<T>::backward_input(const T* dh_out, T* dh_in, double balance_coef) {
  dh_out_ = dh_out;
  if (xa_.empty()) {  // recompute the block norms
    xa_.resize(N_ * d_);
    xf_.resize(N_ * d_);
    kernels::rmsnorm_forward(h_in_, d_, attn_norm_->value.data(), N_, d_, eps_, xa_.data(), (T*)nullptr);
    kernels::rmsnorm_forward(h_mid_.data(), d_, ffn_norm_->value.data(), N_, d_, eps_, xf_.data(), (T*)nullptr);
  }
  dxf_.resize(N_ * d_);
  if (moe_) {
    moe_->backward_input(dh_out, xf_.data(), dxf_.data(), balance_coef);
  } else {
    dense_->backward_input(dh_out, xf_.data(), dxf_.data(), false);
  }
  dh_mid_.assign(dh_out, dh_out + N_ * d_);
  kernels::rmsnorm_backward_input(h_mid_.data(), d_, ffn_norm_->value.data(), dxf_.data(), N_, d_, eps_,
                                  dh_mid_.data(), d_, true);
  dxa_.resize(N_ * d_);
  attn_->backward_input(dh_mid_.data(), xa_.data(), dxa_.data());
  std::copy(dh_mid_.begin(), dh_mid_.end(), dh_in);
  kernels::rmsnorm_backward_input(h_in_, d_, attn_norm_->value.data(), dxa_.data(), N_, d_, eps_, dh_in, d_, true);
}

template <class T>
void DecoderLayer<T>::backward_weight() {
  kernels::rmsnorm_backward_weight(h_in_, d_, dxa_.data(), N_, d_, eps_, attn_norm_->grad.data());
  kernels::rmsnorm_backward_weight(h_mid_.data(), d_, dxf_.data(), N_, d_, eps_, ffn_norm_->grad.data());
  attn_->backward_weight();
  if (moe_) {
    moe_->backward_weight();
  } else {
    dense_->backward_weight();
  }
}

template <class T>
void DecoderLayer<T>::release() {
  attn_->release();
  if (moe_) moe_->release();
  if (dense_) dense_->release();
  for (auto* v : {&xa_, &h_mid_, &xf_, &dxf_, &dh_mid_, &dxa_}) std::vector<T>().swap(*v);
}

template class DecoderLayer<float>;
template class DecoderLayer<double>;

}  // namespace switchyard::trainer
