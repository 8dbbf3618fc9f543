// A replaceable back-end for the Linear GEMMs of float models, and the FP8 one.
//
// The model's kernels (trainer/src/kernels.cc: linear_forward, linear_backward_input,
// linear_backward_weight for T = float) ask the installed back-end first; it returns true
// when it computed the GEMM and false to leave it to the FP32 BLAS path. Fp8Linear claims
// the Linear weights of the FP8 recipe (every Linear except the embedding, the output head
// and the MoE gates; DeepSeek-V3 §3.3) by the address of their value and gradient buffers.
//
// Process-global, not thread-safe: install before the training steps, one at a time.
// Fp8Linear installs itself on construction and uninstalls on destruction (RAII); the
// ParameterSet must outlive it and must not reallocate its buffers.
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include "switchyard/trainer/parameters.h"
#include "switchyard/trainer/train/fp8_gemm.h"

namespace switchyard::trainer {

class LinearBackend {
 public:
  virtual ~LinearBackend() = default;
  // Shapes as kernels.h: x [n, in], W [out, in], y [n, out]; dy [n, out], dx [n, in].
  virtual bool forward(const float* x, const float* W, int64_t n, int64_t in, int64_t out, float* y) = 0;
  virtual bool backward_input(const float* dy, const float* W, int64_t n, int64_t in, int64_t out, float* dx,
                              bool accumulate) = 0;
  virtual bool backward_weight(const float* dy, const float* x, int64_t n, int64_t in, int64_t out, float* dW) = 0;
};

// nullptr when none is installed.
LinearBackend* linear_backend();
void set_linear_backend(LinearBackend* backend);

// Whether the parameter named `name` is a Linear weight the FP8 recipe quantizes.
bool fp8_recipe_covers(const std::string& name, int64_t rank);

class Fp8Linear : public LinearBackend {
 public:
  Fp8Linear(const ParameterSet<float>& params, Fp8Options options);
  ~Fp8Linear() override;
  Fp8Linear(const Fp8Linear&) = delete;
  Fp8Linear& operator=(const Fp8Linear&) = delete;

  bool forward(const float* x, const float* W, int64_t n, int64_t in, int64_t out, float* y) override;
  bool backward_input(const float* dy, const float* W, int64_t n, int64_t in, int64_t out, float* dx,
                      bool accumulate) override;
  bool backward_weight(const float* dy, const float* x, int64_t n, int64_t in, int64_t out, float* dW) override;

  int64_t num_weights() const { return static_cast<int64_t>(weights_.size()); }
  int64_t fp8_gemms() const { return fp8_gemms_; }  // GEMMs run in FP8 so far

 private:
  Fp8Options options_;
  std::set<const float*> weights_, grads_;
  int64_t fp8_gemms_ = 0;
};

}  // namespace switchyard::trainer
