// What the CUDA backend of this build can do. No CUDA header is included here: callers
// that do not use the GPU stay free of the toolkit.
#pragma once

namespace switchyard::cuda {

// True when this build compiled the CUDA backend (SY_CUDA=AUTO found nvcc, or ON).
bool built();
// Number of usable GPUs: 0 when the build has no CUDA, no driver is loaded or no GPU exists.
int device_count();

}  // namespace switchyard::cuda
