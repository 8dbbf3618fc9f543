// SwiGLU MLP on the GPU (internal), the device twin of SwiGlu<T> in src/experts.cc:
// y = W_down (silu(W_gate x) * (W_up x)). Used for the dense FFN, the shared expert and each
// routed expert (on its segment of the expert rows).
//
// The functions take the activation buffers explicitly (a, b, g, sig: [n, inter]) so the
// routed experts can keep theirs in one padded row space. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "device_array.h"
#include "linear.h"
#include "slab.h"

namespace switchyard::trainer::gpu {

struct SwiGluMlp {
  Linear gate, up, down;
  int64_t dim = 0, inter = 0;
};
// Registers "<prefix>gate_proj.weight", "up_proj", "down_proj" (the CPU order).
SwiGluMlp make_swiglu(ParameterSlab& slab, const std::string& prefix, int64_t dim, int64_t inter);

// x [n, dim] -> y [n, dim]; keeps a, b, g, sig [n, inter].
void swiglu_mlp_forward(Context& ctx, const SwiGluMlp& m, const float* x, int64_t n, float* a, float* b, float* g,
                        float* sig, float* y);
// dy [n, dim] -> dx [n, dim] (= or +=); dg, da, db [n, inter] are written (da, db kept for
// the weight gradients).
void swiglu_mlp_backward_input(Context& ctx, const SwiGluMlp& m, const float* dy, int64_t n, const float* a,
                               const float* b, const float* sig, float* dg, float* da, float* db, float* dx,
                               bool accumulate);
// dW_down += dy^T g; dW_gate += da^T x; dW_up += db^T x.
void swiglu_mlp_backward_weight(Context& ctx, const SwiGluMlp& m, const float* dy, const float* x, const float* g,
                                const float* da, const float* db, int64_t n);

// A SwiGLU MLP with its own activations (dense FFN, shared expert).
class DenseMlp {
 public:
  DenseMlp(ParameterSlab& slab, const std::string& prefix, int64_t dim, int64_t inter)
      : m_(make_swiglu(slab, prefix, dim, inter)) {}
  void forward(Context& ctx, const float* x, int64_t n, float* y);
  void backward_input(Context& ctx, const float* dy, float* dx, bool accumulate);
  void backward_weight(Context& ctx);

 private:
  SwiGluMlp m_;
  int64_t n_ = 0;
  const float* x_ = nullptr;
  const float* dy_ = nullptr;
  DeviceArray<float> a_, b_, g_, sig_, dg_, da_, db_;
};

}  // namespace switchyard::trainer::gpu
