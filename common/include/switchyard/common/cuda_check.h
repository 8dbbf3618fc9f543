// SY_CUDA_CHECK: the error check for CUDA runtime calls, for sources compiled with the CUDA
// toolkit (.cu files and CUDA-only .cc files). Includes <cuda_runtime.h>; never include it
// from a header that CPU-only code uses (switchyard/common/cuda.h is the toolkit-free one).
//
//   SY_CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), "dispatch: copy counts of rank " << r);
//   SY_CUDA_CHECK_LAUNCH("fp8 cast of " << rows << " rows");  // after a kernel launch
//
// On failure it throws through cuda::throw_error: the message holds the call, the CUDA error
// name and text, the current device, the context and file:line.
#pragma once

#include <cuda_runtime.h>

#include <sstream>

#include "switchyard/common/cuda.h"

#define SY_CUDA_CHECK(expr, context_stream)                                                     \
  do {                                                                                          \
    const cudaError_t sy_cuda_err_ = (expr);                                                    \
    if (sy_cuda_err_ != cudaSuccess) {                                                          \
      std::ostringstream sy_cuda_ctx_;                                                          \
      sy_cuda_ctx_ << context_stream;                                                           \
      ::switchyard::cuda::throw_error(static_cast<int>(sy_cuda_err_), #expr, sy_cuda_ctx_.str(), \
                                      __FILE__, __LINE__);                                      \
    }                                                                                           \
  } while (0)

// Checks the launch of the kernel just issued (configuration errors; not its execution).
#define SY_CUDA_CHECK_LAUNCH(context_stream) SY_CUDA_CHECK(cudaGetLastError(), context_stream)
