// Import of Hugging Face DeepSeek-V3 checkpoint folders, FP8 block-scaled weights included
// (see checkpoint.h). The shard reader is separate from safetensors.cc because the model's
// reader has no F8_E4M3/F16 dtypes.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "switchyard/common/error.h"
#include "switchyard/dispatch/fp8.h"
#include "switchyard/trainer/train/checkpoint.h"

namespace switchyard::trainer {

namespace fs = std::filesystem;

namespace {

struct RawTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

float half_to_float(uint16_t h) {
  int e = (h >> 10) & 0x1F, m = h & 0x3FF;
  float v = e == 0 ? std::ldexp(float(m), -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp(float(m | 0x400), e - 25);
  return (h & 0x8000) ? -v : v;
}

std::map<std::string, RawTensor> read_shard(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) SY_THROW(IoError, "hf import: cannot read shard \"" << path.string() << "\"");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string file = ss.str();
  SY_REQUIRE(file.size() >= 8, "hf import: \"" << path.string() << "\" is too short for a safetensors file");
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  SY_REQUIRE(n <= file.size() - 8, "hf import: \"" << path.string() << "\": header length " << n << " is past the end");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(file.substr(8, n));
  } catch (const nlohmann::json::exception& e) {
    SY_THROW(InvalidArgument, "hf import: \"" << path.string() << "\": malformed header: " << e.what());
  }
  static const std::map<std::string, int64_t> kSize = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2},
                                                       {"F8_E4M3", 1}, {"I64", 8}, {"I32", 4}};
  const size_t base = 8 + n;
  std::map<std::string, RawTensor> out;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    RawTensor t;
    t.dtype = info.at("dtype").get<std::string>();
    t.shape = info.at("shape").get<std::vector<int64_t>>();
    auto size = kSize.find(t.dtype);
    SY_REQUIRE(size != kSize.end(), "hf import: \"" << path.string() << "\": tensor \"" << name
                                                    << "\" has unsupported dtype " << t.dtype);
    int64_t numel = 1;
    for (int64_t s : t.shape) numel *= s;
    auto off = info.at("data_offsets").get<std::vector<uint64_t>>();
    SY_REQUIRE(off.size() == 2 && off[0] <= off[1] && base + off[1] <= file.size() &&
                   off[1] - off[0] == uint64_t(numel * size->second),
               "hf import: \"" << path.string() << "\": tensor \"" << name << "\" has bad data_offsets");
    t.bytes.assign(file.begin() + base + off[0], file.begin() + base + off[1]);
    out.emplace(name, std::move(t));
  }
  return out;
}

std::vector<float> to_float(const RawTensor& t) {
  size_t n = 1;
  for (int64_t s : t.shape) n *= s;
  std::vector<float> v(n);
  const uint8_t* b = t.bytes.data();
  for (size_t i = 0; i < n; ++i) {
    if (t.dtype == "F32") {
      std::memcpy(&v[i], b + 4 * i, 4);
    } else if (t.dtype == "F64") {
      double d;
      std::memcpy(&d, b + 8 * i, 8);
      v[i] = float(d);
    } else if (t.dtype == "BF16" || t.dtype == "F16") {
      uint16_t h;
      std::memcpy(&h, b + 2 * i, 2);
      v[i] = t.dtype == "BF16" ? dispatch::bf16_to_float(h) : half_to_float(h);
    } else {
      v[i] = dispatch::e4m3_to_float(b[i]);
    }
  }
  return v;
}

}  // namespace

TensorMap import_hf_checkpoint(const std::string& folder) {
  const fs::path dir(folder);
  if (!fs::is_directory(dir)) SY_THROW(IoError, "hf import: \"" << folder << "\" is not a folder");
  std::set<std::string> shards;
  fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(index)) {
    std::ifstream in(index);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      SY_THROW(InvalidArgument, "hf import: \"" << index.string() << "\" is malformed: " << e.what());
    }
    SY_REQUIRE(j.contains("weight_map") && j["weight_map"].is_object(),
               "hf import: \"" << index.string() << "\" has no weight_map");
    for (const auto& [name, shard] : j["weight_map"].items()) shards.insert(shard.get<std::string>());
  } else if (fs::exists(dir / "model.safetensors")) {
    shards.insert("model.safetensors");
  } else {
    SY_THROW(IoError, "hf import: \"" << folder << "\" has neither model.safetensors.index.json nor model.safetensors");
  }
  std::map<std::string, RawTensor> raw;
  for (const auto& s : shards) {
    auto t = read_shard(dir / s);
    for (auto& [name, tensor] : t) raw[name] = std::move(tensor);
  }
  TensorMap out;
  for (const auto& [name, t] : raw) {
    if (name.size() > 10 && name.compare(name.size() - 10, 10, "_scale_inv") == 0) continue;
    if (t.dtype == "I64" || t.dtype == "I32") {
      HostTensor h;
      h.dtype = t.dtype == "I64" ? DType::kI64 : DType::kI32;
      h.shape = t.shape;
      h.bytes = t.bytes;
      out[name] = std::move(h);
      continue;
    }
    std::vector<float> v = to_float(t);
    if (t.dtype == "F8_E4M3") {
      auto s = raw.find(name + "_scale_inv");
      SY_REQUIRE(s != raw.end(), "hf import: FP8 tensor \"" << name << "\" has no \"" << name << "_scale_inv\"");
      SY_REQUIRE(t.shape.size() == 2, "hf import: FP8 tensor \"" << name << "\" is not 2-D");
      const int64_t rows = t.shape[0], cols = t.shape[1];
      const int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
      SY_REQUIRE(s->second.shape == std::vector<int64_t>({br, bc}),
                 "hf import: \"" << name << "_scale_inv\" has shape [" << (s->second.shape.empty() ? 0 : s->second.shape[0])
                                 << ", ...], expected [" << br << ", " << bc << "]");
      std::vector<float> scale = to_float(s->second);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) v[r * cols + c] *= scale[(r / 128) * bc + c / 128];
    }
    out[name] = HostTensor::from_vector<float>(v, t.shape);
  }
  return out;
}

}  // namespace switchyard::trainer
