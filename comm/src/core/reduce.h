// Element-wise reduction of several inputs in a fixed order (the source of all_reduce's
// bitwise reproducibility): out[i] = op(in[0][i], in[1][i], ..., in[n-1][i]) evaluated left
// to right. bfloat16 accumulates in float32 and rounds once (round to nearest even).
// `out` may alias any input (each element is read before it is written).
#pragma once

#include <cstddef>
#include <vector>

#include "switchyard/comm/types.h"

namespace switchyard::comm::detail {

// True for the types all_reduce/reduce_scatter support.
bool reducible(DataType type);
// Throws InvalidArgument naming `what` unless reducible(type).
void require_reducible(DataType type, const char* what);

void reduce_inputs(void* out, const std::vector<const void*>& inputs, size_t count, DataType type, ReduceOp op);

float bf16_to_float(uint16_t v);
uint16_t float_to_bf16(float f);

}  // namespace switchyard::comm::detail
