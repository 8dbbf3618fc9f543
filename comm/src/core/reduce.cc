// Fixed-order element-wise reductions (see reduce.h).
#include "core/reduce.h"

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "switchyard/common/error.h"

namespace switchyard::comm::detail {
namespace {

// Reduces block by block through a small accumulator on the stack: the inner loops are
// plain element-wise loops the compiler vectorises, the order per element stays
// in[0] op in[1] op ... op in[n-1], and `out` may alias any input (a block of every input
// is read before that block of out is written).
constexpr size_t kBlock = 1024;

struct Sum {
  template <class T>
  static T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>)  // wraps instead of signed-overflow UB
      return static_cast<T>(static_cast<std::make_unsigned_t<T>>(a) + static_cast<std::make_unsigned_t<T>>(b));
    else
      return a + b;
  }
};
struct Max {
  template <class T> static T apply(T a, T b) { return b > a ? b : a; }
};
struct Min {
  template <class T> static T apply(T a, T b) { return b < a ? b : a; }
};

template <class Op, class T>
void reduce_typed(void* out, const std::vector<const void*>& in, size_t count) {
  T acc[kBlock];
  for (size_t base = 0; base < count; base += kBlock) {
    size_t len = std::min(kBlock, count - base);
    const T* first = static_cast<const T*>(in[0]) + base;
    for (size_t i = 0; i < len; ++i) acc[i] = first[i];
    for (size_t k = 1; k < in.size(); ++k) {
      const T* src = static_cast<const T*>(in[k]) + base;
      for (size_t i = 0; i < len; ++i) acc[i] = Op::apply(acc[i], src[i]);
    }
    std::memcpy(static_cast<T*>(out) + base, acc, len * sizeof(T));
  }
}

template <class Op>
void reduce_bf16(void* out, const std::vector<const void*>& in, size_t count) {
  float acc[kBlock];
  for (size_t base = 0; base < count; base += kBlock) {
    size_t len = std::min(kBlock, count - base);
    const uint16_t* first = static_cast<const uint16_t*>(in[0]) + base;
    for (size_t i = 0; i < len; ++i) acc[i] = bf16_to_float(first[i]);
    for (size_t k = 1; k < in.size(); ++k) {
      const uint16_t* src = static_cast<const uint16_t*>(in[k]) + base;
      for (size_t i = 0; i < len; ++i) acc[i] = Op::apply(acc[i], bf16_to_float(src[i]));
    }
    uint16_t* o = static_cast<uint16_t*>(out) + base;
    for (size_t i = 0; i < len; ++i) o[i] = float_to_bf16(acc[i]);
  }
}

template <class Op>
void reduce_op(void* out, const std::vector<const void*>& in, size_t count, DataType type) {
  switch (type) {
    case DataType::kInt32: return reduce_typed<Op, int32_t>(out, in, count);
    case DataType::kInt64: return reduce_typed<Op, int64_t>(out, in, count);
    case DataType::kFloat32: return reduce_typed<Op, float>(out, in, count);
    case DataType::kFloat64: return reduce_typed<Op, double>(out, in, count);
    case DataType::kBfloat16: return reduce_bf16<Op>(out, in, count);
    default: require_reducible(type, "reduce");
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
  require_reducible(type, "reduce");
  switch (op) {
    case ReduceOp::kSum: return reduce_op<Sum>(out, in, count, type);
    case ReduceOp::kMax: return reduce_op<Max>(out, in, count, type);
    case ReduceOp::kMin: return reduce_op<Min>(out, in, count, type);
  }
}

}  // namespace switchyard::comm::detail
