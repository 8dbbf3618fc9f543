// One decoder block on the GPU (internal), the device twin of src/decoder_layer.h:
// h1 = h + MLA(attn_norm(h)); h2 = h1 + FFN(ffn_norm(h1)), FFN dense SwiGLU or DeepSeekMoE.
// backward_input then backward_weight, as the CPU's interleaved order (the backward
// scratch is shared by all layers, so W must follow its B before the next layer's B).
// h_in passed to forward and dh_out to backward_input must stay valid until
// backward_weight returns. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>

#include "device_array.h"
#include "ffn.h"
#include "mla.h"
#include "moe.h"

namespace switchyard::trainer::gpu {

struct LayerScratch {
  MlaScratch mla;
  MoeScratch moe;
  DeviceArray<float> dxf, dh_mid, dxa;
};

class DecoderLayer {
 public:
  DecoderLayer(const ModelConfig& config, ParameterSlab& slab, int64_t layer_index);
  // h_in, h_out: [B*T, d] (distinct).
  void forward(Context& ctx, const float* h_in, int64_t batch, int64_t seq_len, const DeviceRope& rope, float* h_out);
  // dh_out, dh_in: [B*T, d] (distinct); dh_in set.
  void backward_input(Context& ctx, const float* dh_out, float* dh_in, double balance_coef, LayerScratch& scratch);
  void backward_weight(Context& ctx, LayerScratch& scratch);
  MoeLayer* moe() { return moe_.get(); }

 private:
  int64_t d_, N_ = 0;
  double eps_;
  SlabParam *attn_norm_, *ffn_norm_;
  std::unique_ptr<MlaLayer> attn_;
  std::unique_ptr<DenseMlp> dense_;
  std::unique_ptr<MoeLayer> moe_;
  const float* h_in_ = nullptr;
  DeviceArray<float> xa_, h_mid_, xf_;
};

}  // namespace switchyard::trainer::gpu
