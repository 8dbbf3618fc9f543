// cuBLASLt BF16 and block-scaled FP8 GEMMs (gemm.h). Host code; the descriptors are built
// per call (small next to the GEMM) and the first heuristic answer is used.
#include "switchyard/trainer/cuda/gemm.h"

#include <cublasLt.h>

#include <sstream>

#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"

namespace switchyard::trainer::gpu {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check(cublasStatus_t s, const char* call, const std::string& context, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  std::ostringstream m;
  m << context << ": " << call << " failed with " << cublasLtGetStatusName(s) << " (" << cublasLtGetStatusString(s)
    << ")";
  if (s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_ARCH_MISMATCH || s == CUBLAS_STATUS_NOT_INITIALIZED)
    throw Unsupported(m.str(), file, line);
  if (s == CUBLAS_STATUS_INVALID_VALUE) throw InvalidArgument(m.str(), file, line);
  throw InternalError(m.str(), file, line);
}
#define SY_CUBLAS_CHECK(call, context) check((call), #call, (context), __FILE__, __LINE__)

// RAII for the three descriptor kinds.
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~MatmulDesc() { if (d) cublasLtMatmulDescDestroy(d); }
};
struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  ~Layout() { if (l) cublasLtMatrixLayoutDestroy(l); }
};
struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  ~Preference() { if (p) cublasLtMatmulPreferenceDestroy(p); }
};

template <class T>
void set_attr(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const T& v, const std::string& ctx) {
  SY_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, a, &v, sizeof(v)), ctx);
}

cudaDataType_t out_type(OutType t) { return t == OutType::kBfloat16 ? CUDA_R_16BF : CUDA_R_32F; }

// D (col-major N x M) = op_T(B: col-major K x N) * op_N(A: col-major K x M).
void matmul_tn(CublasLt& lt, cudaDataType_t in_type, const void* A, const void* B, void* D, OutType out, int64_t M,
               int64_t N, int64_t K, const float* a_scales, const float* b_scales, int a_mode, int b_mode,
               cudaStream_t stream, const std::string& ctx) {
  MatmulDesc desc;
  SY_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.d, CUBLAS_COMPUTE_32F, CUDA_R_32F), ctx);
  const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
  set_attr(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, t, ctx);
  set_attr(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, n, ctx);
  if (a_scales != nullptr) {
    // cuBLAS's A is our B (the N side), cuBLAS's B is our A (the M side).
    set_attr(desc.d, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(b_scales), ctx);
    set_attr(desc.d, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(a_scales), ctx);
    set_attr(desc.d, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, static_cast<int32_t>(b_mode), ctx);
    set_attr(desc.d, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, static_cast<int32_t>(a_mode), ctx);
  }
  Layout la, lb, ld;
  SY_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la.l, in_type, K, N, K), ctx);
  SY_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb.l, in_type, K, M, K), ctx);
  SY_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld.l, out_type(out), N, M, N), ctx);
  Preference pref;
  SY_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.p), ctx);
  const size_t ws = lt.workspace_bytes();
  SY_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)), ctx);
  cublasLtMatmulHeuristicResult_t heur{};
  int found = 0;
  const auto handle = static_cast<cublasLtHandle_t>(lt.handle());
  SY_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, desc.d, la.l, lb.l, ld.l, ld.l, pref.p, 1, &heur, &found), ctx);
  if (found == 0) SY_THROW(Unsupported, ctx << ": cuBLASLt found no algorithm");
  const float alpha = 1.0f, beta = 0.0f;
  SY_CUBLAS_CHECK(cublasLtMatmul(handle, desc.d, &alpha, B, la.l, A, lb.l, &beta, D, ld.l, D, ld.l, &heur.algo,
                                 lt.workspace(), ws, stream),
                  ctx);
}

std::string shape_text(const char* what, int64_t M, int64_t N, int64_t K) {
  std::ostringstream s;
  s << what << " M=" << M << " N=" << N << " K=" << K;
  return s.str();
}

}  // namespace

CublasLt::CublasLt(size_t workspace_bytes) : workspace_(workspace_bytes) {
  cublasLtHandle_t h = nullptr;
  SY_CUBLAS_CHECK(cublasLtCreate(&h), "CublasLt: create the handle");
  handle_ = h;
}

CublasLt::~CublasLt() {
  if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

int CublasLt::version() { return static_cast<int>(cublasLtGetVersion()); }

void gemm_bf16_nt(CublasLt& lt, const uint16_t* A, const uint16_t* B, void* D, OutType out, int64_t M, int64_t N,
                  int64_t K, cuda::StreamHandle stream) {
  const std::string ctx = shape_text("gemm_bf16_nt", M, N, K);
  SY_REQUIRE(M > 0 && N > 0 && K > 0 && M % 8 == 0 && N % 8 == 0 && K % 8 == 0,
             ctx << ": M, N, K must be positive multiples of 8");
  SY_REQUIRE(A && B && D, ctx << ": null pointer");
  matmul_tn(lt, CUDA_R_16BF, A, B, D, out, M, N, K, nullptr, nullptr, 0, 0, stream, ctx);
}

void gemm_fp8_nt(CublasLt& lt, const Fp8Operand& A, const Fp8Operand& B, void* D, OutType out, int64_t M, int64_t N,
                 int64_t K, cuda::StreamHandle stream) {
  const std::string ctx = shape_text("gemm_fp8_nt", M, N, K);
  SY_REQUIRE(M > 0 && N > 0 && K > 0 && M % 16 == 0 && N % 16 == 0 && K % 128 == 0,
             ctx << ": M and N must be positive multiples of 16 and K of 128");
  SY_REQUIRE(A.codes && A.scales && B.codes && B.scales && D, ctx << ": null pointer");
  SY_REQUIRE(!(A.mode == ScaleMode::kBlock128 && B.mode == ScaleMode::kBlock128),
             ctx << ": 128x128 by 128x128 block scaling is not supported by cuBLASLt; use 1x128 for one operand");
  auto mode = [](ScaleMode m) {
    return static_cast<int>(m == ScaleMode::kRow128 ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F
                                                    : CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F);
  };
  matmul_tn(lt, CUDA_R_8F_E4M3, A.codes, B.codes, D, out, M, N, K, A.scales, B.scales, mode(A.mode), mode(B.mode),
            stream, ctx);
}

}  // namespace switchyard::trainer::gpu
