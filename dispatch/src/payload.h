// Payload element helpers shared by the dispatch sources (private).
#pragma once

#include <cstdint>
#include <cstring>

#include "switchyard/comm/types.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch::detail {

// Reads n elements of a BF16 or FP32 row and adds scale * value into acc (FP32).
inline void accumulate_row(const uint8_t* row, comm::DataType t, int64_t n, float scale, float* acc) {
  if (t == comm::DataType::kFloat32) {
    const float* v = reinterpret_cast<const float*>(row);
    for (int64_t i = 0; i < n; ++i) acc[i] += scale * v[i];
  } else {
    const uint16_t* v = reinterpret_cast<const uint16_t*>(row);
    for (int64_t i = 0; i < n; ++i) acc[i] += scale * bf16_to_float(v[i]);
  }
}

// Adds an unscaled row (exact reduction of partial sums).
inline void add_row(const uint8_t* row, comm::DataType t, int64_t n, float* acc) {
  if (t == comm::DataType::kFloat32) {
    const float* v = reinterpret_cast<const float*>(row);
    for (int64_t i = 0; i < n; ++i) acc[i] += v[i];
  } else {
    const uint16_t* v = reinterpret_cast<const uint16_t*>(row);
    for (int64_t i = 0; i < n; ++i) acc[i] += bf16_to_float(v[i]);
  }
}

// Writes n FP32 values as a BF16 or FP32 row.
inline void store_row(const float* v, int64_t n, comm::DataType t, uint8_t* row) {
  if (t == comm::DataType::kFloat32) {
    if (n > 0) std::memcpy(row, v, n * sizeof(float));
  } else {
    uint16_t* out = reinterpret_cast<uint16_t*>(row);
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_from_float(v[i]);
  }
}

inline float load_elem(const uint8_t* row, comm::DataType t, int64_t i) {
  return t == comm::DataType::kFloat32 ? reinterpret_cast<const float*>(row)[i]
                                       : bf16_to_float(reinterpret_cast<const uint16_t*>(row)[i]);
}

inline void require_reduce_type(comm::DataType t, const char* what) {
  if (t != comm::DataType::kFloat32 && t != comm::DataType::kBfloat16)
    SY_THROW(InvalidArgument, what << ": dtype must be bfloat16 or float32 (FP8 is a dispatch-only payload)");
}

}  // namespace switchyard::dispatch::detail
