// The cuBLASLt GEMMs in a build without CUDA: each throws Unsupported naming itself (the
// scale-layout conversions in gemm_scales.cc work everywhere).
#include "switchyard/common/error.h"
#include "switchyard/trainer/cuda/gemm.h"

namespace switchyard::trainer::gpu {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  SY_THROW(Unsupported, what << ": this build has no CUDA backend; hint: configure with -DSY_CUDA=ON");
}
}  // namespace

struct CublasLt::Plans {};
CublasLt::CublasLt(size_t) { no_cuda("gpu::CublasLt"); }
CublasLt::~CublasLt() = default;
int CublasLt::version() { return 0; }
void gemm_bf16_nt(CublasLt&, const uint16_t*, const uint16_t*, void*, OutType, int64_t, int64_t, int64_t,
                  cuda::StreamHandle) {
  no_cuda("gpu::gemm_bf16_nt");
}
void gemm(CublasLt&, bool, bool, int64_t, int64_t, int64_t, float, const void*, int64_t, const void*, int64_t, float,
          void*, int64_t, DType, DType, cuda::StreamHandle) {
  no_cuda("gpu::gemm");
}
void gemm_fp8_nt(CublasLt&, const Fp8Operand&, const Fp8Operand&, void*, OutType, int64_t, int64_t, int64_t,
                 cuda::StreamHandle) {
  no_cuda("gpu::gemm_fp8_nt");
}
}  // namespace switchyard::trainer::gpu

#include "switchyard/trainer/cuda/gemm_perf.h"

namespace switchyard::trainer::gpu {
GemmPerfReport run_gemm_perf(const GemmPerfOptions&) {
  SY_THROW(Unsupported, "gpu::run_gemm_perf: this build has no CUDA backend; hint: configure with -DSY_CUDA=ON");
}
}  // namespace switchyard::trainer::gpu
