// Linear layers as cuBLASLt GEMMs in the model's precision (see linear.h).
#include "linear.h"

#include "../kernels/model_kernels.h"
#include "fp8_linear.h"
#include "switchyard/common/error.h"

namespace switchyard::trainer::gpu {

namespace {

bool use_bf16(const Context& ctx, const Linear& l) { return !l.exact && ctx.precision != Precision::kFloat32; }
bool use_fp8(const Context& ctx, const Linear& l) { return !l.exact && l.fp8 && ctx.precision == Precision::kFp8; }

uint16_t* stage(Context& ctx, DeviceArray<uint16_t>& buf, const float* x, int64_t count) {
  uint16_t* out = buf.ensure(count);
  cast_to_bf16(x, count, out, ctx.s());
  return out;
}

}  // namespace

Linear make_linear(ParameterSlab& slab, const std::string& name, int64_t out, int64_t in, bool exact) {
  return Linear{slab.add(name, {out, in}), out, in, exact};
}

void linear_forward(Context& ctx, const Linear& l, const float* x, int64_t n, float* y) {
  if (n == 0) return;
  if (use_fp8(ctx, l) && fp8_linear_forward(ctx, l, x, n, y)) return;
  if (!use_bf16(ctx, l)) {
    gemm(ctx.lt, false, true, n, l.out, l.in, 1.0f, x, l.in, l.p->w, l.in, 0.0f, y, l.out, DType::kFloat32,
         DType::kFloat32, ctx.s());
    return;
  }
  const uint16_t* xb = stage(ctx, ctx.stage_a, x, n * l.in);
  gemm(ctx.lt, false, true, n, l.out, l.in, 1.0f, xb, l.in, l.p->wb, l.in, 0.0f, y, l.out, DType::kBfloat16,
       DType::kFloat32, ctx.s());
}

void linear_backward_input(Context& ctx, const Linear& l, const float* dy, int64_t n, float* dx, bool accumulate) {
  if (n == 0) return;
  if (use_fp8(ctx, l) && fp8_linear_backward_input(ctx, l, dy, n, dx, accumulate)) return;
  const float beta = accumulate ? 1.0f : 0.0f;
  if (!use_bf16(ctx, l)) {
    gemm(ctx.lt, false, false, n, l.in, l.out, 1.0f, dy, l.out, l.p->w, l.in, beta, dx, l.in, DType::kFloat32,
         DType::kFloat32, ctx.s());
    return;
  }
  const uint16_t* dyb = stage(ctx, ctx.stage_a, dy, n * l.out);
  gemm(ctx.lt, false, false, n, l.in, l.out, 1.0f, dyb, l.out, l.p->wb, l.in, beta, dx, l.in, DType::kBfloat16,
       DType::kFloat32, ctx.s());
}

void linear_backward_weight(Context& ctx, const Linear& l, const float* dy, const float* x, int64_t n) {
  if (n == 0) return;
  if (use_fp8(ctx, l) && fp8_linear_backward_weight(ctx, l, dy, x, n)) return;
  if (!use_bf16(ctx, l)) {
    gemm(ctx.lt, true, false, l.out, l.in, n, 1.0f, dy, l.out, x, l.in, 1.0f, l.p->g, l.in, DType::kFloat32,
         DType::kFloat32, ctx.s());
    return;
  }
  const uint16_t* dyb = stage(ctx, ctx.stage_a, dy, n * l.out);
  const uint16_t* xb = stage(ctx, ctx.stage_b, x, n * l.in);
  gemm(ctx.lt, true, false, l.out, l.in, n, 1.0f, dyb, l.out, xb, l.in, 1.0f, l.p->g, l.in, DType::kBfloat16,
       DType::kFloat32, ctx.s());
}

}  // namespace switchyard::trainer::gpu
