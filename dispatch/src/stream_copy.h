// Streaming (non-temporal) row copies for the low-latency slot writes (private).
//
// A low-latency dispatch writes megabytes of rows that this rank never reads again into
// other ranks' windows. Ordinary stores first read every destination line into this core's
// cache (read for ownership) and then evict it dirty; streaming stores write whole lines to
// memory without reading them, which halves the memory traffic of the row writes.
// stream_copy falls back to memcpy where the destination is not 16-byte aligned, for the
// tail of a row, and on CPUs other than x86-64.
// Ordering: streaming stores are weakly ordered. Call stream_fence() after the last
// stream_copy and BEFORE publishing the data (the flag's release store does not order them).
// Threading: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace switchyard::dispatch::detail {

inline void stream_copy(void* dst, const void* src, size_t bytes) {
#if defined(__x86_64__)
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  if ((reinterpret_cast<uintptr_t>(d) & 15u) == 0) {
    const size_t whole = bytes & ~size_t(63);
    for (size_t i = 0; i < whole; i += 64) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 32));
      const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 48), e);
    }
    if (whole < bytes) std::memcpy(d + whole, s + whole, bytes - whole);
    return;
  }
#endif
  std::memcpy(dst, src, bytes);
}

// Orders every earlier stream_copy before the stores that follow (x86: sfence).
inline void stream_fence() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

}  // namespace switchyard::dispatch::detail
