// One DeepSeek-V3 decoder block: h1 = h + MLA(attn_norm(h)); h2 = h1 + FFN(ffn_norm(h1)),
// with FFN a dense SwiGLU or a DeepSeekMoE block. Backward is split: backward_input
// (activation gradients, the "B" pass that ZB/DualPipe schedule first) and backward_weight
// (parameter gradients, "W"), which may run any time before the next forward.
//
// Lifetimes: h_in passed to forward and dh_out passed to backward_input must stay valid
// until backward_weight returns. Not thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mla.h"
#include "moe.h"
#include "switchyard/trainer/experts.h"

namespace switchyard::trainer {

template <class T>
class DecoderLayer {
 public:
  DecoderLayer(const ModelConfig& config, ParameterSet<T>& params, int64_t layer_index, bool recompute_norms,
               bool recompute_up_proj);
  // h_in, h_out: [B*T, d].
  void forward(const T* h_in, int64_t batch, int64_t seq_len, const kernels::RopeTable& rope, T* h_out);
  // dh_out: [B*T, d]; dh_in: [B*T, d] set. balance_coef = d total loss / d balance loss (alpha).
  void backward_input(const T* dh_out, T* dh_in, double balance_coef);
  void backward_weight();
  void release();

  MoeBlock<T>* moe() { return moe_.get(); }  // nullptr for a dense layer

 private:
  int64_t d_, N_ = 0;
  double eps_;
  bool recompute_norms_;
  Parameter<T>*attn_norm_, *ffn_norm_;
  std::unique_ptr<Mla<T>> attn_;
  std::unique_ptr<SwiGlu<T>> dense_;
  std::unique_ptr<MoeBlock<T>> moe_;
  const T* h_in_ = nullptr;
  const T* dh_out_ = nullptr;
  std::vector<T> xa_, h_mid_, xf_;      // attn_norm(h), h1, ffn_norm(h1) ([N, d])
  std::vector<T> dxf_, dh_mid_, dxa_;   // backward
};

}  // namespace switchyard::trainer
