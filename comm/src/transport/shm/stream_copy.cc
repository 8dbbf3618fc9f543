// stream_copy: memcpy with non-temporal (streaming) stores for large copies.
// glibc's memcpy on the build machine streams only above ~192 MiB; a receiver copying
// a multi-MiB chunk it will not read soon wastes cache and write-allocate bandwidth
// (../shared/benchmarking.md: ~1.7x slower at 16 MiB). SSE2 only (baseline x86-64).
#include "transport/shm/shm_transport.h"

#include <cstdint>
#include <cstring>

#include "switchyard/common/param.h"

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace switchyard::comm::detail {
namespace {
const Param<int64_t> kStreamMin("COMM_STREAM_COPY_MIN", 2 << 20, "bytes",
                                "copies of at least this size use non-temporal stores (0 = never)");
}

void stream_copy(void* dst, const void* src, size_t bytes) {
#if defined(__x86_64__)
  int64_t min_bytes = kStreamMin.get();
  if (min_bytes <= 0 || bytes < static_cast<size_t>(min_bytes)) {
    std::memcpy(dst, src, bytes);
    return;
  }
  auto* d = static_cast<uint8_t*>(dst);
  auto* s = static_cast<const uint8_t*>(src);
  size_t head = (16 - (reinterpret_cast<uintptr_t>(d) & 15)) & 15;
  std::memcpy(d, s, head);
  d += head;
  s += head;
  bytes -= head;
  size_t blocks = bytes / 64;
  for (size_t i = 0; i < blocks; ++i) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
    __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 32));
    __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 48), e);
    s += 64;
    d += 64;
  }
  _mm_sfence();
  std::memcpy(d, s, bytes - blocks * 64);
#else
  std::memcpy(dst, src, bytes);
#endif
}

}  // namespace switchyard::comm::detail
