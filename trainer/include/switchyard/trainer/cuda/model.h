// The DeepSeek-V3 model on one GPU: the CPU Model<float>'s semantics (model.h, conventions
// in trainer/configs/README.md) with parameters, gradients and activations in device memory
// and every Linear layer a cuBLASLt GEMM (gemm.h) in the chosen precision.
//
//   kFloat32   plain FP32 GEMMs (no TF32): matches the CPU model to FP32 rounding
//   kBfloat16  BF16 operands, FP32 accumulation and FP32 outputs (the speed path)
//   kFp8       DeepSeek-V3's recipe as train/fp8_gemm.h emulates it (E4M3 operands, 1x128
//              activation tiles, 128x128 weight blocks, 1x128 x 1x128 along the tokens for
//              weight gradients); BF16 for the output head and shapes cuBLASLt's FP8 GEMM
//              refuses
// Whatever the precision, parameters, gradients, norms, softmax, the router (gate GEMM
// included) and the losses are FP32, as V3 keeps them.
//
// Memory: one FP32 parameter slab and one FP32 gradient slab (matrices first, then the norm
// weights), so AdamW is one launch per run (decayed, not decayed); its moments are BF16
// slabs, as train/optimizer.h. Activations are sized on the first forward and reused.
// Routing: expert offsets are needed on the host for the per-expert GEMMs, so each MoE layer
// synchronises its stream once per forward (the expert counts come back with them).
//
// Status: compiled, never run on a GPU yet (docs/cuda-model.md).
// Threading: a Model is used by one thread at a time; all work is on its own stream; every
// public call returns when the work it enqueued has finished (forward returns the losses).
// Ownership: the model owns its device memory (RAII). Errors: InvalidArgument for bad
// shapes/tokens/names (naming them), Unsupported without a GPU or in a build without CUDA.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/trainer/config.h"
#include "switchyard/trainer/model.h"
#include "switchyard/trainer/safetensors.h"
#include "switchyard/trainer/train/optimizer.h"

namespace switchyard::trainer::gpu {

enum class Precision { kFloat32, kBfloat16, kFp8 };

const char* precision_name(Precision p);
// "fp32", "bf16" or "fp8"; throws InvalidArgument naming the text otherwise.
Precision precision_from_name(const std::string& name);

class Model {
 public:
  // Builds the parameters (all zero) on the current device. Throws InvalidArgument for an
  // invalid config, Unsupported without a GPU.
  Model(const ModelConfig& config, Precision precision);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const;
  Precision precision() const;
  int64_t num_parameters() const;  // elements of the parameter slab

  // Same values as the CPU Model<T>::init_random (same generator, same order).
  void init_random(uint64_t seed, double std);
  // By HF name, like the CPU model (F64/F32/BF16 tensors; biases included). Throws
  // InvalidArgument naming a missing tensor or a shape mismatch.
  void load_weights(const TensorMap& weights);
  // Parameters (F32) and e_score_correction_bias buffers (F32), by HF name.
  TensorMap weights() const;
  // "grad.<name>" (F32).
  TensorMap gradients() const;

  // tokens: [batch, seq_len + D + 1] int64 on the host. Returns the losses (main, mtp,
  // balance, total exactly as the CPU model defines them); keeps the activations.
  Losses forward(const int64_t* tokens, int64_t batch, int64_t seq_len);
  // Accumulates d(total)/d(parameter) into the gradient slab; once per forward.
  void backward();
  void zero_grad();

  // AdamW (train/optimizer.h's math: FP32 update, BF16 moments, decay on 2-D parameters)
  // over the slab (two launches: the matrices, the norm weights); the step count is here.
  void set_optimizer(const AdamWConfig& config);
  void adamw_step(double lr);
  int64_t optimizer_steps() const;

  // Per MoE layer (absolute index, MTP layers L..L+D-1), from the last forward.
  std::vector<int64_t> moe_layer_indices() const;
  const std::vector<double>& expert_counts(int64_t layer) const;  // [E]
  std::vector<float> expert_bias(int64_t layer) const;              // [E]
  // b += rate * sign(mean(counts) - counts), as Model<T>::update_expert_biases.
  void update_expert_biases(double rate);

  // Device pointers of the slabs (FP32, num_parameters() elements), for tools and tests.
  const float* parameter_slab() const;
  const float* gradient_slab() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace switchyard::trainer::gpu
