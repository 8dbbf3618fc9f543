// SwiGLU MLP on the GPU (see ffn.h); mirrors SwiGlu<T> in src/experts.cc.
#include "ffn.h"

#include "../kernels/model_kernels.h"

namespace switchyard::trainer::gpu {

SwiGluMlp make_swiglu(ParameterSlab& slab, const std::string& prefix, int64_t dim, int64_t inter) {
  SwiGluMlp m;
  m.gate = make_linear(slab, prefix + "gate_proj.weight", inter, dim);
  m.up = make_linear(slab, prefix + "up_proj.weight", inter, dim);
  m.down = make_linear(slab, prefix + "down_proj.weight", dim, inter);
  m.dim = dim;
  m.inter = inter;
  return m;
}

void swiglu_mlp_forward(Context& ctx, const SwiGluMlp& m, const float* x, int64_t n, float* a, float* b, float* g,
                        float* sig, float* y) {
  if (n == 0) return;
  linear_forward(ctx, m.gate, x, n, a);
  linear_forward(ctx, m.up, x, n, b);
  swiglu_forward(a, b, m.inter, n, m.inter, g, sig, ctx.s());
  linear_forward(ctx, m.down, g, n, y);
}

void swiglu_mlp_backward_input(Context& ctx, const SwiGluMlp& m, const float* dy, int64_t n, const float* a,
                               const float* b, const float* sig, float* dg, float* da, float* db, float* dx,
                               bool accumulate) {
  if (n == 0) return;
  linear_backward_input(ctx, m.down, dy, n, dg, false);
  swiglu_backward(a, b, m.inter, sig, dg, n, m.inter, da, db, m.inter, ctx.s());
  linear_backward_input(ctx, m.gate, da, n, dx, accumulate);
  linear_backward_input(ctx, m.up, db, n, dx, true);
}

void swiglu_mlp_backward_weight(Context& ctx, const SwiGluMlp& m, const float* dy, const float* x, const float* g,
                                const float* da, const float* db, int64_t n) {
  if (n == 0) return;
  linear_backward_weight(ctx, m.down, dy, g, n);
  linear_backward_weight(ctx, m.gate, da, x, n);
  linear_backward_weight(ctx, m.up, db, x, n);
}

void DenseMlp::forward(Context& ctx, const float* x, int64_t n, float* y) {
  n_ = n;
  x_ = x;
  const size_t k = static_cast<size_t>(n * m_.inter);
  swiglu_mlp_forward(ctx, m_, x, n, a_.ensure(k), b_.ensure(k), g_.ensure(k), sig_.ensure(k), y);
}

void DenseMlp::backward_input(Context& ctx, const float* dy, float* dx, bool accumulate) {
  dy_ = dy;
  const size_t k = static_cast<size_t>(n_ * m_.inter);
  swiglu_mlp_backward_input(ctx, m_, dy, n_, a_.data(), b_.data(), sig_.data(), dg_.ensure(k), da_.ensure(k),
                            db_.ensure(k), dx, accumulate);
}

void DenseMlp::backward_weight(Context& ctx) {
  swiglu_mlp_backward_weight(ctx, m_, dy_, x_, g_.data(), da_.data(), db_.data(), n_);
}

}  // namespace switchyard::trainer::gpu
