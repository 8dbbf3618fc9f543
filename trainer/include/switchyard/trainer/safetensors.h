// safetensors files (https://github.com/huggingface/safetensors format): an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} and the
// raw little-endian tensor bytes. Used for weights, batches, golden states and checkpoints.
//
// Constraints: whole files are read into memory (no mmap); dtypes F64, F32, BF16, I64, I32.
// A TensorFile is plain data, not thread-safe for concurrent mutation.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace switchyard::trainer {

enum class DType { kF64, kF32, kBF16, kI64, kI32 };

const char* dtype_name(DType dtype);
int64_t dtype_size(DType dtype);

// One tensor: dtype, shape and its bytes (row-major, little-endian).
struct HostTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  int64_t numel() const;
  // Converts every element to T (double, float or int64_t).
  template <class T>
  std::vector<T> to_vector() const;
  template <class T>
  static HostTensor from_vector(const std::vector<T>& values, std::vector<int64_t> shape);
  template <class T>
  static HostTensor from_span(const T* values, std::vector<int64_t> shape);
};

// Named tensors, sorted by name (the order safetensors writers use).
using TensorMap = std::map<std::string, HostTensor>;

// Throws IoError if the file cannot be read and InvalidArgument if it is malformed.
TensorMap read_safetensors(const std::string& path);
// Throws IoError if the file cannot be written.
void write_safetensors(const std::string& path, const TensorMap& tensors);

// The named tensor; throws InvalidArgument naming it if absent.
const HostTensor& tensor_at(const TensorMap& tensors, const std::string& name);

}  // namespace switchyard::trainer
