// CUDA side of switchyard::cuda: device discovery that degrades to 0 without a driver.
#include <cuda_runtime.h>

#include "switchyard/common/cuda.h"

namespace switchyard::cuda {

// A tiny kernel keeps the device code path compiled and linked for sm_90a in every build.
__global__ void probe_kernel(int* out) { *out = 1; }

bool built() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear "insufficient driver" so later calls start clean
    return 0;
  }
  return n;
}

}  // namespace switchyard::cuda
