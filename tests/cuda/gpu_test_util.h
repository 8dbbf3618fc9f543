// Helpers of the CUDA tests: skipping without a GPU, device copies of host vectors, and
// bitwise comparison that reports the first differing element.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "switchyard/common/cuda.h"

// Skips the current test (with the reason) when this machine has no usable GPU.
#define SY_SKIP_WITHOUT_GPU()                                                                 \
  do {                                                                                       \
    if (!::switchyard::cuda::built()) GTEST_SKIP() << "this build has no CUDA backend";       \
    if (::switchyard::cuda::device_count() == 0) GTEST_SKIP() << "no GPU on this machine";    \
  } while (0)

namespace switchyard::testing {

template <class T>
cuda::DeviceBuffer to_device(const std::vector<T>& v) {
  cuda::DeviceBuffer b(v.empty() ? 1 : v.size() * sizeof(T));
  b.copy_from_host(v.data(), v.size() * sizeof(T));
  return b;
}

template <class T>
std::vector<T> to_host(const cuda::DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  b.copy_to_host(v.data(), n * sizeof(T));
  return v;
}

// "" when a and b hold the same bytes, else where the first difference is (element index
// of `elem_bytes`-sized elements).
inline std::string first_byte_difference(const void* a, const void* b, size_t bytes, size_t elem_bytes) {
  const auto* x = static_cast<const uint8_t*>(a);
  const auto* y = static_cast<const uint8_t*>(b);
  for (size_t i = 0; i < bytes; ++i)
    if (x[i] != y[i]) {
      std::ostringstream s;
      s << "element " << i / elem_bytes << " differs (byte " << i << ": " << int(x[i]) << " vs " << int(y[i]) << ")";
      return s.str();
    }
  return "";
}

}  // namespace switchyard::testing
