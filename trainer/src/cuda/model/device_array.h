// A growable typed array in device memory (internal to the GPU model): activations are sized
// on the first forward and reused while the step shape stays the same.
//
// ensure(n) keeps the allocation when it is large enough (contents kept too), otherwise
// reallocates (contents lost). Owns its memory (cuda::DeviceBuffer); not thread-safe.
#pragma once

#include <algorithm>
#include <cstddef>

#include "switchyard/common/cuda.h"

namespace switchyard::trainer::gpu {

template <class T>
class DeviceArray {
 public:
  T* ensure(size_t n) {
    if (n * sizeof(T) > buf_.bytes()) buf_ = cuda::DeviceBuffer(std::max<size_t>(n, 1) * sizeof(T));
    size_ = n;
    return data();
  }
  T* data() const { return buf_.as<T>(); }
  size_t size() const { return size_; }

 private:
  cuda::DeviceBuffer buf_;
  size_t size_ = 0;
};

}  // namespace switchyard::trainer::gpu
