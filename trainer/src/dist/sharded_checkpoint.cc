// Sharded checkpoint folder (header): write with temp folder + barrier + rename, read and
// reassemble moments from whole tensors or ZeRO-1 slices.
#include "switchyard/trainer/dist/sharded_checkpoint.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include "switchyard/common/error.h"

namespace switchyard::trainer::dist {

void write_sharded_checkpoint(comm::Communicator& world, const std::string& dir, const TensorMap& mine,
                              nlohmann::json meta) {
  namespace fs = std::filesystem;
  const std::string tmp = dir + ".tmp";
  if (world.rank() == 0) {
    fs::remove_all(tmp);
    fs::create_directories(tmp);
  }
  world.barrier();
  write_safetensors(tmp + "/rank-" + std::to_string(world.rank()) + ".safetensors", mine);
  if (world.rank() == 0) {
    meta["world"] = world.size();
    std::ofstream f(tmp + "/meta.json");
    f << meta.dump(2) << "\n";
    if (!f) SY_THROW(IoError, "cannot write \"" << tmp << "/meta.json\"");
  }
  world.barrier();
  if (world.rank() == 0) {
    fs::remove_all(dir);
    fs::rename(tmp, dir);
  }
  world.barrier();
}

ShardedCheckpoint read_sharded_checkpoint(const std::string& dir, const ParameterSet<float>& params) {
  ShardedCheckpoint ck;
  std::ifstream f(dir + "/meta.json");
  if (!f) SY_THROW(IoError, "\"" << dir << "\" is not a sharded checkpoint (no meta.json)");
  try {
    ck.meta = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    SY_THROW(InvalidArgument, "\"" << dir << "/meta.json\" is malformed: " << e.what());
  }
  const int files = ck.meta.value("world", 0);
  SY_REQUIRE(files > 0, "\"" << dir << "/meta.json\" names no rank files (world " << files << ")");
  TensorMap all;
  for (int r = 0; r < files; ++r) {
    TensorMap part = read_safetensors(dir + "/rank-" + std::to_string(r) + ".safetensors");
    for (auto& [name, t] : part) all[name] = std::move(t);
  }
  // Moments: whole tensors "exp_avg.<name>" (written without zero1) or slices
  // "exp_avg.<name>@<first element>" (zero1 shards); reassembled per parameter.
  std::map<std::string, const Parameter<float>*> by_state_name;
  for (const auto& p : params.all())
    for (const char* key : {"exp_avg.", "exp_avg_sq."}) by_state_name[key + p->name] = p.get();
  std::map<std::string, std::vector<uint16_t>> moments;
  std::map<std::string, int64_t> covered;
  for (auto& [name, t] : all) {
    if (name.rfind("exp_avg", 0) != 0) {
      ck.weights[name] = std::move(t);
      continue;
    }
    const size_t at = name.rfind('@');
    const std::string base = at == std::string::npos ? name : name.substr(0, at);
    auto it = by_state_name.find(base);
    if (it == by_state_name.end()) continue;  // another model's tensor: load_weights names real mismatches
    const int64_t n = it->second->numel();
    const int64_t first = at == std::string::npos ? 0 : std::stoll(name.substr(at + 1));
    SY_REQUIRE(t.dtype == DType::kBF16 && first >= 0 && first + t.numel() <= n,
               "sharded checkpoint \"" << dir << "\": moment \"" << name << "\" (" << dtype_name(t.dtype) << ", "
                                       << t.numel() << " elements) does not fit its parameter of " << n
                                       << " elements");
    std::vector<uint16_t>& bits = moments[base];
    bits.resize(n);
    std::memcpy(bits.data() + first, t.bytes.data(), t.numel() * sizeof(uint16_t));
    covered[base] += t.numel();
  }
  for (const auto& [name, p] : by_state_name) {
    SY_REQUIRE(covered[name] == p->numel(), "sharded checkpoint \"" << dir << "\" holds " << covered[name] << " of "
                                                                    << p->numel() << " elements of " << name);
    HostTensor t;
    t.dtype = DType::kBF16;
    t.shape = p->shape;
    t.bytes.resize(p->numel() * sizeof(uint16_t));
    std::memcpy(t.bytes.data(), moments[name].data(), t.bytes.size());
    ck.moments[name] = std::move(t);
  }
  return ck;
}

std::string latest_sharded_checkpoint(const std::string& ckpt_dir) {
  namespace fs = std::filesystem;
  std::string best;
  int64_t best_step = -1;
  if (!fs::is_directory(ckpt_dir)) return best;
  for (const auto& e : fs::directory_iterator(ckpt_dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0 || !fs::exists(e.path() / "meta.json")) continue;
    char* end = nullptr;
    const int64_t step = std::strtoll(name.c_str() + 5, &end, 10);
    if (*end == '\0' && step > best_step) best_step = step, best = e.path().string();
  }
  return best;
}

}  // namespace switchyard::trainer::dist
