// safetensors reader and writer.
#include "switchyard/trainer/safetensors.h"

#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "switchyard/common/error.h"

namespace switchyard::trainer {
namespace {

DType parse_dtype(const std::string& s, const std::string& name) {
  if (s == "F64") return DType::kF64;
  if (s == "F32") return DType::kF32;
  if (s == "BF16") return DType::kBF16;
  if (s == "I64") return DType::kI64;
  if (s == "I32") return DType::kI32;
  SY_THROW(InvalidArgument, "safetensors: tensor \"" << name << "\" has unsupported dtype " << s);
}

template <class Src, class T>
void convert(const uint8_t* bytes, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i) {
    Src v;
    std::memcpy(&v, bytes + i * sizeof(Src), sizeof(Src));
    out[i] = static_cast<T>(v);
  }
}

float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, double>) return DType::kF64;
  if constexpr (std::is_same_v<T, float>) return DType::kF32;
  if constexpr (std::is_same_v<T, int64_t>) return DType::kI64;
  if constexpr (std::is_same_v<T, int32_t>) return DType::kI32;
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF64: return "F64";
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kI64: return "I64";
    case DType::kI32: return "I32";
  }
  return "?";
}

int64_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF64: case DType::kI64: return 8;
    case DType::kF32: case DType::kI32: return 4;
    case DType::kBF16: return 2;
  }
  return 0;
}

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

template <class T>
std::vector<T> HostTensor::to_vector() const {
  const int64_t n = numel();
  std::vector<T> out(n);
  switch (dtype) {
    case DType::kF64: convert<double>(bytes.data(), n, out.data()); break;
    case DType::kF32: convert<float>(bytes.data(), n, out.data()); break;
    case DType::kI64: convert<int64_t>(bytes.data(), n, out.data()); break;
    case DType::kI32: convert<int32_t>(bytes.data(), n, out.data()); break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, bytes.data() + 2 * i, 2);
        out[i] = static_cast<T>(bf16_to_float(v));
      }
      break;
  }
  return out;
}

template <class T>
HostTensor HostTensor::from_span(const T* values, std::vector<int64_t> shape) {
  HostTensor t;
  t.dtype = dtype_of<T>();
  t.shape = std::move(shape);
  t.bytes.resize(t.numel() * sizeof(T));
  if (!t.bytes.empty()) std::memcpy(t.bytes.data(), values, t.bytes.size());
  return t;
}

template <class T>
HostTensor HostTensor::from_vector(const std::vector<T>& values, std::vector<int64_t> shape) {
  HostTensor t = from_span(values.data(), std::move(shape));
  SY_REQUIRE(static_cast<int64_t>(values.size()) == t.numel(),
             "safetensors: " << values.size() << " values do not fill shape of " << t.numel() << " elements");
  return t;
}

template std::vector<double> HostTensor::to_vector<double>() const;
template std::vector<float> HostTensor::to_vector<float>() const;
template std::vector<int64_t> HostTensor::to_vector<int64_t>() const;
template HostTensor HostTensor::from_vector<double>(const std::vector<double>&, std::vector<int64_t>);
template HostTensor HostTensor::from_vector<float>(const std::vector<float>&, std::vector<int64_t>);
template HostTensor HostTensor::from_vector<int64_t>(const std::vector<int64_t>&, std::vector<int64_t>);
template HostTensor HostTensor::from_span<double>(const double*, std::vector<int64_t>);
template HostTensor HostTensor::from_span<float>(const float*, std::vector<int64_t>);
template HostTensor HostTensor::from_span<int64_t>(const int64_t*, std::vector<int64_t>);

TensorMap read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) SY_THROW(IoError, "safetensors: cannot open \"" << path << "\"");
  in.seekg(0, std::ios::end);
  const int64_t file_size = in.tellg();
  in.seekg(0);
  uint64_t header_len = 0;
  SY_REQUIRE(file_size >= 8, "safetensors: \"" << path << "\" is too short (" << file_size << " bytes)");
  in.read(reinterpret_cast<char*>(&header_len), 8);
  SY_REQUIRE(static_cast<int64_t>(header_len) <= file_size - 8,
             "safetensors: \"" << path << "\" header length " << header_len << " exceeds the file");
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    SY_THROW(InvalidArgument, "safetensors: \"" << path << "\" has a malformed header: " << e.what());
  }
  const int64_t data_start = 8 + header_len;
  const int64_t data_size = file_size - data_start;
  std::vector<uint8_t> data(data_size);
  in.read(reinterpret_cast<char*>(data.data()), data_size);
  if (!in) SY_THROW(IoError, "safetensors: short read from \"" << path << "\"");
  TensorMap out;
  for (auto& [name, meta] : j.items()) {
    if (name == "__metadata__") continue;
    HostTensor t;
    t.dtype = parse_dtype(meta.at("dtype").get<std::string>(), name);
    t.shape = meta.at("shape").get<std::vector<int64_t>>();
    auto offsets = meta.at("data_offsets").get<std::vector<int64_t>>();
    SY_REQUIRE(offsets.size() == 2 && offsets[0] >= 0 && offsets[0] <= offsets[1] && offsets[1] <= data_size &&
                   offsets[1] - offsets[0] == t.numel() * dtype_size(t.dtype),
               "safetensors: \"" << path << "\" tensor \"" << name << "\" has bad data_offsets");
    t.bytes.assign(data.begin() + offsets[0], data.begin() + offsets[1]);
    out.emplace(name, std::move(t));
  }
  return out;
}

void write_safetensors(const std::string& path, const TensorMap& tensors) {
  nlohmann::json j = nlohmann::json::object();
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    SY_REQUIRE(static_cast<int64_t>(t.bytes.size()) == t.numel() * dtype_size(t.dtype),
               "safetensors: tensor \"" << name << "\" has " << t.bytes.size() << " bytes for its shape");
    j[name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + (int64_t)t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string header = j.dump();
  while (header.size() % 8 != 0) header.push_back(' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) SY_THROW(IoError, "safetensors: cannot create \"" << path << "\"");
  uint64_t len = header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(header.data(), header.size());
  for (const auto& [name, t] : tensors) out.write(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  if (!out) SY_THROW(IoError, "safetensors: write to \"" << path << "\" failed");
}

const HostTensor& tensor_at(const TensorMap& tensors, const std::string& name) {
  auto it = tensors.find(name);
  SY_REQUIRE(it != tensors.end(), "safetensors: tensor \"" << name << "\" is missing");
  return it->second;
}

}  // namespace switchyard::trainer
