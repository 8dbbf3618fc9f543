// cuBLASLt GEMMs of the trainer's CUDA backend: BF16, and FP8 E4M3 with DeepSeek-V3 block
// scaling (1x128 tiles for activations and gradients, 128x128 blocks for weights; cuBLAS
// 13.1 on Hopper). The CPU emulation in train/fp8_gemm.h is the reference.
//
// Every GEMM here is "NT" on row-major matrices, like fp8_gemm_nt:
//   D [M x N] = A [M x K] . B [N x K]^T      (FP32 accumulation, D in BF16 or FP32)
// i.e. cuBLAS's column-major TN form D^T = op_T(B) op_N(A), the layout FP8 requires.
//   forward  y  = x W^T:  A = x [n x in] 1x128 tiles, B = W [out x in] 128x128 blocks
//   dgrad    dx = dy W:   A = dy [n x out] 1x128,    B = W^T [in x out] 128x128 blocks
//   wgrad    dW = dy^T x: A = dy^T [out x n] 1x128,  B = x^T [in x n] 1x128 (tiles along the
//            tokens: 128x128 by 128x128 is not supported by cuBLASLt, 1x128 by 1x128 is)
//
// Scale tensors on the device (FP32), in the layouts cuBLASLt reads (as PyTorch's
// _scaled_mm passes them; NOT yet checked on a GPU, the tests in tests/cuda do):
//   kRow128   (VEC128_32F) for a [R x K] operand: [ceil(K/128)] x [R], R contiguous
//             ("outer-dim-major"); row128_scales_for_device() converts Fp8Matrix scales.
//   kBlock128 (BLK128x128_32F) for a [R x K] operand: [ceil(R/128)] x [L4], the K-block
//             index contiguous and the row stride L4 = ceil(K/128) rounded up to 4
//             (16-byte aligned); block128_scales_for_device() converts.
// Shapes: K a multiple of 128, M and N multiples of 16 (FP8 tensor-core alignment); the
// BF16 GEMM needs K, M, N multiples of 8. Pairs: row x row, row x block, block x row; block
// x block is rejected (cuBLASLt has no kernel, and some bad pairs abort the process inside
// cuBLASLt, so the pair is checked before any call).
//
// Threading: a CublasLt handle is used by one thread at a time. Pointers are device
// memory; work is enqueued on `stream`. Errors: InvalidArgument for shapes and pairs,
// Unsupported when cuBLASLt has no algorithm (named with the shapes) or there is no GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/common/cuda.h"

namespace switchyard::trainer::gpu {

// A cuBLASLt handle and its workspace on the current device.
class CublasLt {
 public:
  explicit CublasLt(size_t workspace_bytes = size_t{32} << 20);
  ~CublasLt();
  CublasLt(const CublasLt&) = delete;
  CublasLt& operator=(const CublasLt&) = delete;
  void* handle() const { return handle_; }  // cublasLtHandle_t
  void* workspace() const { return workspace_.data(); }
  size_t workspace_bytes() const { return workspace_.bytes(); }
  static int version();  // cublasLtGetVersion(), e.g. 130100

  // The GEMM plans chosen so far (descriptors and algorithm per shape/type/transpose key;
  // internal to gemm.cc). The first call with a new key picks the algorithm: with
  // SWITCHYARD_GEMM_AUTOTUNE=1 (default) it times up to SWITCHYARD_GEMM_ALGOS of cuBLASLt's
  // heuristic candidates on the caller's stream (synchronising it, into a scratch output)
  // and keeps the fastest; with 0 it keeps the heuristic's first answer.
  struct Plans;
  Plans& plans() { return *plans_; }

 private:
  void* handle_ = nullptr;
  cuda::DeviceBuffer workspace_;
  std::unique_ptr<Plans> plans_;
};

enum class OutType { kBfloat16, kFloat32 };

// The general GEMM, the device twin of the CPU trainer's kernels::gemm (row-major):
//   D [M x N] = alpha * op(A) op(B) + beta * D
//   op(A) [M x K]: A is [M x K] (lda >= K), or [K x M] (lda >= M) when trans_a
//   op(B) [K x N]: B is [K x N] (ldb >= N), or [N x K] (ldb >= K) when trans_b
//   D [M x N], ldd >= N; beta = 1 accumulates (gradients), beta = 0 overwrites.
// `in` is the type of A and B, `out` of D; accumulation is FP32. kFloat32 inputs use plain
// FP32 arithmetic (CUBLAS_COMPUTE_32F, never TF32), so results match an FP32 CPU GEMM to
// rounding; kBfloat16 inputs are the fast path (BF16 tensor cores). The algorithm is chosen
// once per (shape, types, transposes) and cached in the handle.
enum class DType { kFloat32, kBfloat16 };
void gemm(CublasLt& lt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
          int64_t lda, const void* B, int64_t ldb, float beta, void* D, int64_t ldd, DType in, DType out,
          cuda::StreamHandle stream);

// A, B BF16 bits row-major; D [M x N] of `out`.
void gemm_bf16_nt(CublasLt& lt, const uint16_t* A, const uint16_t* B, void* D, OutType out, int64_t M, int64_t N,
                  int64_t K, cuda::StreamHandle stream);

enum class ScaleMode { kRow128, kBlock128 };

struct Fp8Operand {
  const uint8_t* codes = nullptr;  // [rows x K] E4M3, row-major
  const float* scales = nullptr;   // device layout of `mode` (above)
  ScaleMode mode = ScaleMode::kRow128;
};

// D [M x N] of `out` = dequant(A) dequant(B)^T.
void gemm_fp8_nt(CublasLt& lt, const Fp8Operand& A, const Fp8Operand& B, void* D, OutType out, int64_t M, int64_t N,
                 int64_t K, cuda::StreamHandle stream);

// Host-side conversions from the CPU layouts of train/fp8_gemm.h (Fp8Matrix::scales):
// row tiles [rows x KB] row-major -> [KB x rows]; blocks [RB x KB] -> [RB x L4] (zero pad).
std::vector<float> row128_scales_for_device(const std::vector<float>& scales, int64_t rows, int64_t cols);
std::vector<float> block128_scales_for_device(const std::vector<float>& scales, int64_t rows, int64_t cols);

}  // namespace switchyard::trainer::gpu
