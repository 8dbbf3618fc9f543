// Element types and reduction operators of the comm library.
#pragma once

#include <cstddef>
#include <cstdint>

namespace switchyard::comm {

enum class DataType { kInt8, kUint8, kInt32, kInt64, kFloat32, kFloat64, kBfloat16, kFloat8E4M3 };
enum class ReduceOp { kSum, kMax, kMin };

size_t dtype_size(DataType t);
const char* dtype_name(DataType t);   // "int8", "float32", "bfloat16", ...
const char* reduce_op_name(ReduceOp op);

}  // namespace switchyard::comm
