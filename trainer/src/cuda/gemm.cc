// cuBLASLt GEMMs (gemm.h): the general row-major GEMM, BF16 NT and block-scaled FP8 NT.
// Host code. Every GEMM goes through one plan per (shape, leading dimensions, transposes,
// types, scale modes, pointer alignment): the descriptors are built once, and the algorithm
// is picked once, by timing cuBLASLt's heuristic candidates (autotune) or by taking its
// first answer.
//
// Row-major to column-major: a row-major [r x c] matrix with leading dimension ld is the
// column-major [c x r] matrix with the same ld, so the row-major D = op(A) op(B) is the
// column-major D^T = op(B)^T op(A)^T: cuBLAS's first operand is our B, its second our A.
#include "switchyard/trainer/cuda/gemm.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <map>
#include <sstream>

#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/common/param.h"

namespace switchyard::trainer::gpu {

namespace {

const Param<int64_t> kAutotune("GEMM_AUTOTUNE", 1, "0/1",
                               "time cuBLASLt's candidate algorithms on the first call of each GEMM shape");
const Param<int64_t> kAlgos("GEMM_ALGOS", 8, "count", "cuBLASLt heuristic candidates tried by the autotune");
const Param<int64_t> kFp8FastAccum("GEMM_FP8_FAST_ACCUM", 0, "0/1",
                                   "cuBLASLt's FP8 fast accumulation (no periodic FP32 promotion)");

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

// Largest power of two (at most 256) dividing the address: cuBLASLt's heuristic assumes 256
// unless told, and a kernel picked for a better alignment than the pointer has is wrong.
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al /= 2;
  return al;
}

// One cuBLASLt operation: D (col-major rows_d x cols_d) = op_a(first) op_b(second), with
// `first` and `second` in cuBLAS's sense (our B and our A).
struct MatmulSpec {
  cudaDataType_t in_type, out_type;
  cublasComputeType_t compute;
  bool trans_first, trans_second;
  int64_t first_rows, first_cols, first_ld;
  int64_t second_rows, second_cols, second_ld;
  int64_t d_rows, d_cols, d_ld;
  int first_scale_mode = -1, second_scale_mode = -1;  // -1: no block scaling
  uint32_t align_first, align_second, align_d;

  std::string key() const {
    std::ostringstream k;
    k << in_type << ',' << out_type << ',' << compute << ',' << trans_first << trans_second << ',' << first_rows << 'x'
      << first_cols << '/' << first_ld << ',' << second_rows << 'x' << second_cols << '/' << second_ld << ','
      << d_rows << 'x' << d_cols << '/' << d_ld << ',' << first_scale_mode << ',' << second_scale_mode << ','
      << align_first << ',' << align_second << ',' << align_d;
    return k.str();
  }
};

struct Plan {
  MatmulDesc desc;
  Layout first, second, d;
  cublasLtMatmulAlgo_t algo{};
  int candidates = 0;  // heuristic answers considered
};

cudaDataType_t data_type(DType t) { return t == DType::kBfloat16 ? CUDA_R_16BF : CUDA_R_32F; }
cudaDataType_t out_type(OutType t) { return t == OutType::kBfloat16 ? CUDA_R_16BF : CUDA_R_32F; }
size_t type_bytes(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : t == CUDA_R_16BF ? 2 : 1; }

}  // namespace

struct CublasLt::Plans {
  std::map<std::string, std::unique_ptr<Plan>> by_key;
};

namespace {

// Runs the plan's matmul: D = alpha first*second + beta C (C and D may be the same buffer).
cublasStatus_t launch(CublasLt& lt, Plan& p, const cublasLtMatmulAlgo_t& algo, float alpha, const void* first,
                      const void* second, float beta, const void* C, void* D, cudaStream_t stream) {
  return cublasLtMatmul(static_cast<cublasLtHandle_t>(lt.handle()), p.desc.d, &alpha, first, p.first.l, second,
                        p.second.l, &beta, C, p.d.l, D, p.d.l, &algo, lt.workspace(), lt.workspace_bytes(), stream);
}

// Per-call descriptor attributes (the FP8 scale pointers), set before every launch.
using PerCall = std::function<void(cublasLtMatmulDesc_t)>;

// The plan for `spec`, built and (auto)tuned on first use with the call's operands.
Plan& plan_for(CublasLt& lt, const MatmulSpec& s, float alpha, const void* first, const void* second, float beta,
               void* D, cudaStream_t stream, const std::string& ctx, const PerCall& per_call = {}) {
  auto& slot = lt.plans().by_key[s.key()];
  if (slot) {
    if (per_call) per_call(slot->desc.d);
    return *slot;
  }
  auto p = std::make_unique<Plan>();
  SY_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc.d, s.compute, CUDA_R_32F), ctx);
  const cublasOperation_t ta = s.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = s.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_attr(p->desc.d, CUBLASLT_MATMUL_DESC_TRANSA, ta, ctx);
  set_attr(p->desc.d, CUBLASLT_MATMUL_DESC_TRANSB, tb, ctx);
  if (s.first_scale_mode >= 0) {
    set_attr(p->desc.d, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, static_cast<int32_t>(s.first_scale_mode), ctx);
    set_attr(p->desc.d, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, static_cast<int32_t>(s.second_scale_mode), ctx);
    if (kFp8FastAccum.get()) set_attr(p->desc.d, CUBLASLT_MATMUL_DESC_FAST_ACCUM, static_cast<int8_t>(1), ctx);
  }
  if (per_call) per_call(p->desc.d);
  SY_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->first.l, s.in_type, s.first_rows, s.first_cols, s.first_ld), ctx);
  SY_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->second.l, s.in_type, s.second_rows, s.second_cols, s.second_ld),
                  ctx);
  SY_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->d.l, s.out_type, s.d_rows, s.d_cols, s.d_ld), ctx);

  Preference pref;
  SY_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.p), ctx);
  const size_t ws = lt.workspace_bytes();
  SY_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)), ctx);
  const uint32_t al[4] = {s.align_first, s.align_second, s.align_d, s.align_d};
  const cublasLtMatmulPreferenceAttributes_t al_attr[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i)
    SY_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, al_attr[i], &al[i], sizeof(al[i])), ctx);

  const int want = static_cast<int>(std::clamp<int64_t>(kAutotune.get() ? kAlgos.get() : 1, 1, 32));
  std::vector<cublasLtMatmulHeuristicResult_t> heur(want);
  int found = 0;
  SY_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(lt.handle()), p->desc.d, p->first.l,
                                                 p->second.l, p->d.l, p->d.l, pref.p, want, heur.data(), &found),
                  ctx);
  if (found == 0) SY_THROW(Unsupported, ctx << ": cuBLASLt found no algorithm");
  p->algo = heur[0].algo;
  p->candidates = found;
  if (found > 1) {
    // Autotune into a scratch output so D (the C input when beta != 0) is left untouched;
    // the median of five timed runs after one warm-up per candidate.
    cuda::DeviceBuffer scratch(static_cast<size_t>(s.d_ld) * s.d_cols * type_bytes(s.out_type));
    cuda::Event t0, t1;
    float best = -1;
    for (int i = 0; i < found; ++i) {
      if (heur[i].state != CUBLAS_STATUS_SUCCESS) continue;
      if (launch(lt, *p, heur[i].algo, alpha, first, second, beta, D, scratch.data(), stream) !=
          CUBLAS_STATUS_SUCCESS)
        continue;
      float ms[5];
      bool ok = true;
      for (float& m : ms) {
        t0.record(stream);
        ok = ok && launch(lt, *p, heur[i].algo, alpha, first, second, beta, D, scratch.data(), stream) ==
                       CUBLAS_STATUS_SUCCESS;
        t1.record(stream);
        t1.synchronize();
        m = t1.elapsed_ms_since(t0);
      }
      if (!ok) continue;
      std::sort(ms, ms + 5);
      if (best < 0 || ms[2] < best) {
        best = ms[2];
        p->algo = heur[i].algo;
      }
    }
    SY_CUDA_CHECK(cudaStreamSynchronize(stream), ctx + ": autotune");
  }
  slot = std::move(p);
  return *slot;
}

std::string shape_text(const char* what, int64_t M, int64_t N, int64_t K) {
  std::ostringstream s;
  s << what << " M=" << M << " N=" << N << " K=" << K;
  return s.str();
}

// Row-major D [M x N] = A [M x K] B [N x K]^T: cuBLAS's TN form (the only FP8 layout).
MatmulSpec nt_spec(cudaDataType_t in, cudaDataType_t out, int64_t M, int64_t N, int64_t K, const void* A,
                   const void* B, const void* D) {
  MatmulSpec s{};
  s.in_type = in;
  s.out_type = out;
  s.compute = CUBLAS_COMPUTE_32F;
  s.trans_first = true;
  s.trans_second = false;
  s.first_rows = K, s.first_cols = N, s.first_ld = K;
  s.second_rows = K, s.second_cols = M, s.second_ld = K;
  s.d_rows = N, s.d_cols = M, s.d_ld = N;
  s.align_first = alignment_of(B);
  s.align_second = alignment_of(A);
  s.align_d = alignment_of(D);
  return s;
}

}  // namespace

CublasLt::CublasLt(size_t workspace_bytes) : workspace_(workspace_bytes), plans_(std::make_unique<Plans>()) {
  cublasLtHandle_t h = nullptr;
  SY_CUBLAS_CHECK(cublasLtCreate(&h), "CublasLt: create the handle");
  handle_ = h;
}

CublasLt::~CublasLt() {
  plans_.reset();  // descriptors before the handle
  if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

int CublasLt::version() { return static_cast<int>(cublasLtGetVersion()); }

void gemm(CublasLt& lt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
          int64_t lda, const void* B, int64_t ldb, float beta, void* D, int64_t ldd, DType in, DType out,
          cuda::StreamHandle stream) {
  const std::string ctx = shape_text("gemm", M, N, K);
  SY_REQUIRE(M > 0 && N > 0 && K > 0, ctx << ": M, N, K must be positive");
  SY_REQUIRE(A && B && D, ctx << ": null pointer");
  SY_REQUIRE(lda >= (trans_a ? M : K), ctx << ": lda " << lda << " < " << (trans_a ? "M" : "K"));
  SY_REQUIRE(ldb >= (trans_b ? K : N), ctx << ": ldb " << ldb << " < " << (trans_b ? "K" : "N"));
  SY_REQUIRE(ldd >= N, ctx << ": ldd " << ldd << " < N");
  SY_REQUIRE(!(in == DType::kFloat32 && out == DType::kBfloat16),
             ctx << ": FP32 inputs need an FP32 output (cuBLASLt's plain FP32 GEMM)");
  MatmulSpec s{};
  s.in_type = data_type(in);
  s.out_type = data_type(out);
  s.compute = CUBLAS_COMPUTE_32F;  // plain FP32 for FP32 inputs: never TF32
  // cuBLAS's first operand: our B (col-major [N x K], or [K x N] when trans_b).
  s.trans_first = trans_b;
  s.first_rows = trans_b ? K : N, s.first_cols = trans_b ? N : K, s.first_ld = ldb;
  // Its second: our A (col-major [K x M], or [M x K] when trans_a).
  s.trans_second = trans_a;
  s.second_rows = trans_a ? M : K, s.second_cols = trans_a ? K : M, s.second_ld = lda;
  s.d_rows = N, s.d_cols = M, s.d_ld = ldd;
  s.align_first = alignment_of(B);
  s.align_second = alignment_of(A);
  s.align_d = alignment_of(D);
  Plan& p = plan_for(lt, s, alpha, B, A, beta, D, stream, ctx);
  SY_CUBLAS_CHECK(launch(lt, p, p.algo, alpha, B, A, beta, D, D, stream), ctx);
}

void gemm_bf16_nt(CublasLt& lt, const uint16_t* A, const uint16_t* B, void* D, OutType out, int64_t M, int64_t N,
                  int64_t K, cuda::StreamHandle stream) {
  const std::string ctx = shape_text("gemm_bf16_nt", M, N, K);
  SY_REQUIRE(M > 0 && N > 0 && K > 0 && M % 8 == 0 && N % 8 == 0 && K % 8 == 0,
             ctx << ": M, N, K must be positive multiples of 8");
  SY_REQUIRE(A && B && D, ctx << ": null pointer");
  const MatmulSpec s = nt_spec(CUDA_R_16BF, out_type(out), M, N, K, A, B, D);
  Plan& p = plan_for(lt, s, 1.0f, B, A, 0.0f, D, stream, ctx);
  SY_CUBLAS_CHECK(launch(lt, p, p.algo, 1.0f, B, A, 0.0f, D, D, stream), ctx);
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
  MatmulSpec s = nt_spec(CUDA_R_8F_E4M3, out_type(out), M, N, K, A.codes, B.codes, D);
  // cuBLAS's A is our B (the N side), cuBLAS's B is our A (the M side).
  s.first_scale_mode = mode(B.mode);
  s.second_scale_mode = mode(A.mode);
  Plan& p = plan_for(lt, s, 1.0f, B.codes, A.codes, 0.0f, D, stream, ctx, [&](cublasLtMatmulDesc_t d) {
    set_attr(d, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(B.scales), ctx);
    set_attr(d, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(A.scales), ctx);
  });
  SY_CUBLAS_CHECK(launch(lt, p, p.algo, 1.0f, B.codes, A.codes, 0.0f, D, D, stream), ctx);
}

}  // namespace switchyard::trainer::gpu
