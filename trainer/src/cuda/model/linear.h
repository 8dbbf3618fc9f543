// Linear layers of the GPU model (internal): y = x W^T and its two gradients as cuBLASLt
// GEMMs in the model's precision, plus the context every layer shares (handle, stream,
// precision, BF16 staging buffers).
//
// Activations and gradients are FP32 [n, features] row-major; W is the FP32 master [out, in]
// in the parameter slab, dW its FP32 slice of the gradient slab. kBfloat16 casts the
// operands into BF16 staging buffers (the weights once per optimizer step, into a BF16
// copy of the slab) and accumulates in FP32; kFloat32 runs plain FP32 GEMMs; kFp8 runs the
// recipe's E4M3 GEMMs (fp8_linear.h) where cuBLASLt takes the shape, BF16 elsewhere.
// `exact` (the router's gate) forces FP32 whatever the precision, as V3 keeps the gate.
// All work is enqueued on ctx.stream. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "device_array.h"
#include "slab.h"
#include "switchyard/common/cuda.h"
#include "switchyard/trainer/cuda/gemm.h"
#include "switchyard/trainer/cuda/model.h"

namespace switchyard::trainer::gpu {

// Staging of the FP8 path (fp8_linear.cc): codes and cuBLASLt-layout scales of the two
// operands, transposes and scaled copies, the FP32 output before accumulation.
struct Fp8Staging {
  DeviceArray<uint8_t> codes_a, codes_b;
  DeviceArray<float> scales_a, scales_b, row_scales, work_a, work_b, work_c, out;
};

struct Context {
  Precision precision = Precision::kBfloat16;
  cuda::Stream stream;
  CublasLt lt;
  // BF16 staging of the two GEMM operands that are activations (reused by every call).
  DeviceArray<uint16_t> stage_a, stage_b;
  Fp8Staging fp8;
  cuda::StreamHandle s() const { return stream.get(); }
};

// A Linear weight [out, in]: its parameter in the slabs (pointers valid once allocated).
struct Linear {
  SlabParam* p = nullptr;
  int64_t out = 0, in = 0;
  bool exact = false;  // always FP32 (the router's gate)
  bool fp8 = true;     // in the FP8 recipe under kFp8 (not the output head: BF16 there)
};
// Registers "<name>" [out, in] in the slab.
Linear make_linear(ParameterSlab& slab, const std::string& name, int64_t out, int64_t in, bool exact = false);

// y[n, out] = x[n, in] W^T.
void linear_forward(Context& ctx, const Linear& l, const float* x, int64_t n, float* y);
// dx[n, in] (= or +=) dy[n, out] W.
void linear_backward_input(Context& ctx, const Linear& l, const float* dy, int64_t n, float* dx, bool accumulate);
// dW[out, in] += dy[n, out]^T x[n, in].
void linear_backward_weight(Context& ctx, const Linear& l, const float* dy, const float* x, int64_t n);

}  // namespace switchyard::trainer::gpu
