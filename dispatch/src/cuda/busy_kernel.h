// A stand-in for the compute that dispatch overlaps with (private to sy-cuda-perf): a kernel
// of `ctas` CTAs of 1024 threads, one per SM (150 KiB of shared memory each), each thread running `iters` dependent FMAs on registers.
// With ctas = SMs - dispatch budget it occupies the SMs the dispatch kernels leave free, as
// a persistent GEMM sized to the rest of the GPU would. Asynchronous on `stream`; out [1]
// receives a value so the work cannot be optimized away.
#pragma once

#include <cstdint>

#include "switchyard/common/cuda.h"

namespace switchyard::dispatch::gpu {

void launch_busy_kernel(int ctas, int64_t iters, float* out, cuda::StreamHandle stream);

}  // namespace switchyard::dispatch::gpu
