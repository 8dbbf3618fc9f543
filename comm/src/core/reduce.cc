// Fixed-order element-wise reductions (see reduce.h).
#include "core/reduce.h"

#include <cstdint>
#include <cstring>

#include "switchyard/common/error.h"

namespace switchyard::comm::detail {
namespace {

template <class T, class Acc>
Acc apply(Acc a, Acc b, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return a + b;
    case ReduceOp::kMax: return b > a ? b : a;
    case ReduceOp::kMin: return b < a ? b : a;
  }
  return a;
}

template <class T>
void reduce_typed(void* out, const std::vector<const void*>& in, size_t count, ReduceOp op) {
  T* o = static_cast<T*>(out);
  size_t n = in.size();
  for (size_t i = 0; i < count; ++i) {
    T acc = static_cast<const T*>(in[0])[i];
    for (size_t k = 1; k < n; ++k) acc = apply<T, T>(acc, static_cast<const T*>(in[k])[i], op);
    o[i] = acc;
  }
}

void reduce_bf16(void* out, const std::vector<const void*>& in, size_t count, ReduceOp op) {
  uint16_t* o = static_cast<uint16_t*>(out);
  size_t n = in.size();
  for (size_t i = 0; i < count; ++i) {
    float acc = bf16_to_float(static_cast<const uint16_t*>(in[0])[i]);
    for (size_t k = 1; k < n; ++k) acc = apply<float, float>(acc, bf16_to_float(static_cast<const uint16_t*>(in[k])[i]), op);
    o[i] = float_to_bf16(acc);
  }
}

}  // namespace

float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

bool reducible(DataType t) {
  switch (t) {
    case DataType::kInt32:
    case DataType::kInt64:
    case DataType::kFloat32:
    case DataType::kFloat64:
    case DataType::kBfloat16: return true;
    default: return false;
  }
}

void require_reducible(DataType t, const char* what) {
  SY_REQUIRE(reducible(t), what << ": dtype " << dtype_name(t)
                                << " is not supported (supported: int32, int64, float32, float64, bfloat16)");
}

void reduce_inputs(void* out, const std::vector<const void*>& in, size_t count, DataType type, ReduceOp op) {
  SY_CHECK(!in.empty());
  switch (type) {
    case DataType::kInt32: return reduce_typed<int32_t>(out, in, count, op);
    case DataType::kInt64: return reduce_typed<int64_t>(out, in, count, op);
    case DataType::kFloat32: return reduce_typed<float>(out, in, count, op);
    case DataType::kFloat64: return reduce_typed<double>(out, in, count, op);
    case DataType::kBfloat16: return reduce_bf16(out, in, count, op);
    default: require_reducible(type, "reduce");
  }
}

}  // namespace switchyard::comm::detail
