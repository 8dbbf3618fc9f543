// Payload element helpers shared by the dispatch sources (private).
#pragma once

#include <cstdint>
#include <cstring>

#include "switchyard/comm/types.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch::detail {

// Row kernels (payload.cc; AVX-512 where the CPU has it, the same bits as the scalar loops).
// Reads n elements of a BF16 or FP32 row and adds scale * value into acc (FP32; one
// rounded multiply, one rounded add, never fused).
void accumulate_row(const uint8_t* row, comm::DataType t, int64_t n, float scale, float* acc);
// Adds an unscaled row (exact reduction of partial sums).
void add_row(const uint8_t* row, comm::DataType t, int64_t n, float* acc);
// A whole sum in one pass: acc = (((+0) + s[0] * rows[0]) + s[1] * rows[1]) + ... over
// `count` rows of n elements (scales == nullptr: unscaled), the same bits as filling acc with
// +0 and calling accumulate_row / add_row on each row in order (-0 becomes +0), but each row is read once
// and acc written once (no read-modify-write of acc per term). count == 0 gives +0.
// acc may be one of the rows (same address), not a partial overlap.
void sum_rows(const uint8_t* const* rows, const float* scales, int64_t count, comm::DataType t, int64_t n,
              float* acc);
// Writes n FP32 values as a BF16 (round to nearest even, NaN kept quiet) or FP32 row.
void store_row(const float* v, int64_t n, comm::DataType t, uint8_t* row);

inline float load_elem(const uint8_t* row, comm::DataType t, int64_t i) {
  return t == comm::DataType::kFloat32 ? reinterpret_cast<const float*>(row)[i]
                                       : bf16_to_float(reinterpret_cast<const uint16_t*>(row)[i]);
}

inline void require_reduce_type(comm::DataType t, const char* what) {
  if (t != comm::DataType::kFloat32 && t != comm::DataType::kBfloat16)
    SY_THROW(InvalidArgument, what << ": dtype must be bfloat16 or float32 (FP8 is a dispatch-only payload)");
}

}  // namespace switchyard::dispatch::detail
