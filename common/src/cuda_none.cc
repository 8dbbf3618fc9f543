// switchyard::cuda when the build has no CUDA backend.
#include "switchyard/common/cuda.h"

namespace switchyard::cuda {
bool built() { return false; }
int device_count() { return 0; }
}  // namespace switchyard::cuda
