// FP8 Linear GEMMs of the GPU model (see fp8_linear.h).
#include "fp8_linear.h"

#include <cmath>

#include "../kernels/model_kernels.h"
#include "switchyard/common/cuda_check.h"
#include "switchyard/dispatch/cuda/kernels.h"
#include "switchyard/trainer/cuda/fp8_blocks.h"
#include "switchyard/trainer/train/fp8_gemm.h"
#include "transpose.h"

namespace switchyard::trainer::gpu {

namespace {

constexpr int64_t kGroup = 128;
int64_t groups(int64_t k) { return (k + kGroup - 1) / kGroup; }

bool fits(int64_t M, int64_t N, int64_t K) { return M > 0 && M % 16 == 0 && N % 16 == 0 && K % kGroup == 0; }

// x [rows x cols] -> 1x128 tiles along cols: codes into `codes`, scales in cuBLASLt's
// VEC128 layout [cols/128 x rows] into `scales`. gradient: the amax floor of
// fp8_quantize_gradient_rows (x is scaled by 2^32 in `work`, the scales back by 2^-32).
Fp8Operand quantize_tiles(Context& ctx, const float* x, int64_t rows, int64_t cols, bool gradient,
                          DeviceArray<uint8_t>& codes, DeviceArray<float>& scales, DeviceArray<float>& work) {
  const auto s = ctx.s();
  const int64_t kb = groups(cols);
  float* row_scales = ctx.fp8.row_scales.ensure(rows * kb);
  const float* src = x;
  if (gradient) {
    float* w = work.ensure(rows * cols);
    SY_CUDA_CHECK(cudaMemcpyAsync(w, x, rows * cols * sizeof(float), cudaMemcpyDeviceToDevice, s),
                  "gpu fp8: gradient copy");
    scale_inplace(w, rows * cols, std::ldexp(1.0f, kFp8GradientShift), s);
    src = w;
  }
  dispatch::gpu::quantize_fp8_tiles(src, rows, cols, /*pow2_scale=*/false, codes.ensure(rows * cols), row_scales, s);
  if (gradient) scale_inplace(row_scales, rows * kb, std::ldexp(1.0f, -kFp8GradientShift), s);
  transpose(row_scales, rows, kb, scales.ensure(kb * rows), s);
  return Fp8Operand{codes.data(), scales.data(), ScaleMode::kRow128};
}

// W [rows x cols] -> 128x128 blocks (scales in cuBLASLt's BLK128x128 layout).
Fp8Operand quantize_blocks(Context& ctx, const float* w, int64_t rows, int64_t cols, DeviceArray<uint8_t>& codes,
                           DeviceArray<float>& scales) {
  const int64_t l4 = (groups(cols) + 3) / 4 * 4;
  quantize_fp8_blocks(w, rows, cols, /*pow2_scale=*/false, codes.ensure(rows * cols), scales.ensure(groups(rows) * l4),
                      ctx.s());
  return Fp8Operand{codes.data(), scales.data(), ScaleMode::kBlock128};
}

}  // namespace

bool fp8_linear_forward(Context& ctx, const Linear& l, const float* x, int64_t n, float* y) {
  if (!fits(n, l.out, l.in)) return false;
  Fp8Staging& f = ctx.fp8;
  const Fp8Operand a = quantize_tiles(ctx, x, n, l.in, false, f.codes_a, f.scales_a, f.work_a);
  const Fp8Operand b = quantize_blocks(ctx, l.p->w, l.out, l.in, f.codes_b, f.scales_b);
  gemm_fp8_nt(ctx.lt, a, b, y, OutType::kFloat32, n, l.out, l.in, ctx.s());
  return true;
}

bool fp8_linear_backward_input(Context& ctx, const Linear& l, const float* dy, int64_t n, float* dx, bool accumulate) {
  if (!fits(n, l.in, l.out)) return false;
  Fp8Staging& f = ctx.fp8;
  const auto s = ctx.s();
  const Fp8Operand a = quantize_tiles(ctx, dy, n, l.out, true, f.codes_a, f.scales_a, f.work_a);
  float* wt = f.work_b.ensure(l.in * l.out);
  transpose(l.p->w, l.out, l.in, wt, s);  // W^T [in x out]: its blocks are W's, transposed
  const Fp8Operand b = quantize_blocks(ctx, wt, l.in, l.out, f.codes_b, f.scales_b);
  float* out = accumulate ? f.out.ensure(n * l.in) : dx;
  gemm_fp8_nt(ctx.lt, a, b, out, OutType::kFloat32, n, l.in, l.out, s);
  if (accumulate) add_inplace(dx, out, n * l.in, s);
  return true;
}

bool fp8_linear_backward_weight(Context& ctx, const Linear& l, const float* dy, const float* x, int64_t n) {
  if (!fits(l.out, l.in, n)) return false;
  Fp8Staging& f = ctx.fp8;
  const auto s = ctx.s();
  float* dyt = f.work_c.ensure(l.out * n);
  transpose(dy, n, l.out, dyt, s);  // dy^T [out x n]
  const Fp8Operand a = quantize_tiles(ctx, dyt, l.out, n, true, f.codes_a, f.scales_a, f.work_a);
  float* xt = f.work_b.ensure(l.in * n);
  transpose(x, n, l.in, xt, s);  // x^T [in x n]
  const Fp8Operand b = quantize_tiles(ctx, xt, l.in, n, false, f.codes_b, f.scales_b, f.work_a);
  float* out = f.out.ensure(l.out * l.in);
  gemm_fp8_nt(ctx.lt, a, b, out, OutType::kFloat32, l.out, l.in, n, s);
  add_inplace(l.p->g, out, l.out * l.in, s);
  return true;
}

}  // namespace switchyard::trainer::gpu
