// Atomic checkpoint folders with a manifest of checksums (see checkpoint.h).
#include "switchyard/trainer/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "switchyard/common/error.h"

namespace switchyard::trainer {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "switchyard-checkpoint-1";
const char* const kFiles[] = {"model.safetensors", "optimizer.safetensors", "config.json", "state.json"};

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) SY_THROW(IoError, "checkpoint: cannot read \"" << path.string() << "\"");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

uint64_t fnv1a64(const std::string& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

void fsync_path(const fs::path& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) SY_THROW(IoError, "checkpoint: cannot open \"" << path.string() << "\" to fsync");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) SY_THROW(IoError, "checkpoint: fsync of \"" << path.string() << "\" failed");
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) SY_THROW(IoError, "checkpoint: cannot write \"" << path.string() << "\"");
}

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

}  // namespace

CheckpointManager::CheckpointManager(std::string dir, int64_t keep_last) : dir_(std::move(dir)), keep_last_(keep_last) {
  SY_REQUIRE(!dir_.empty(), "checkpoint: the directory is empty");
  SY_REQUIRE(keep_last_ >= 1, "checkpoint: keep_last " << keep_last_ << " must be at least 1");
}

std::string CheckpointManager::save(const Checkpoint& ckpt) {
  auto stage = [&](const char* s) {
    if (hook_) hook_(s);
  };
  fs::create_directories(dir_);
  // Leftovers of an interrupted save.
  for (const auto& e : fs::directory_iterator(dir_))
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) fs::remove_all(e.path());
  const std::string name = step_name(ckpt.step);
  const fs::path tmp = fs::path(dir_) / (".tmp-" + name + "-" + std::to_string(::getpid()));
  const fs::path final_dir = fs::path(dir_) / name;
  fs::create_directories(tmp);

  write_safetensors((tmp / "model.safetensors").string(), ckpt.model);
  stage("model");
  write_safetensors((tmp / "optimizer.safetensors").string(), ckpt.optimizer);
  stage("optimizer");
  write_text(tmp / "config.json", ckpt.config_json);
  write_text(tmp / "state.json", ckpt.state_json);
  nlohmann::json manifest;
  manifest["format"] = kFormat;
  manifest["step"] = ckpt.step;
  for (const char* f : kFiles) {
    std::string bytes = read_all(tmp / f);
    manifest["files"][f] = {{"size", bytes.size()}, {"fnv1a64", std::to_string(fnv1a64(bytes))}};
    fsync_path(tmp / f, false);
  }
  write_text(tmp / "manifest.json", manifest.dump(2));
  fsync_path(tmp / "manifest.json", false);
  fsync_path(tmp, true);
  stage("files");

  if (fs::exists(final_dir)) fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  fsync_path(dir_, true);
  stage("renamed");

  const fs::path latest_tmp = fs::path(dir_) / ".latest.tmp";
  write_text(latest_tmp, name + "\n");
  fsync_path(latest_tmp, false);
  fs::rename(latest_tmp, fs::path(dir_) / "latest");
  fsync_path(dir_, true);
  stage("latest");

  std::vector<std::string> all = list();
  for (size_t i = 0; i + static_cast<size_t>(keep_last_) < all.size(); ++i)
    if (fs::path(all[i]).filename() != name) fs::remove_all(all[i]);
  return final_dir.string();
}

std::string CheckpointManager::latest() const {
  fs::path p = fs::path(dir_) / "latest";
  if (!fs::exists(p)) return "";
  std::string name = read_all(p);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  SY_REQUIRE(!name.empty() && name.find('/') == std::string::npos,
             "checkpoint: \"" << p.string() << "\" does not name a step folder");
  return (fs::path(dir_) / name).string();
}

std::vector<std::string> CheckpointManager::list() const {
  std::vector<std::string> out;
  if (!fs::exists(dir_)) return out;
  for (const auto& e : fs::directory_iterator(dir_))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

Checkpoint CheckpointManager::load(const std::string& folder) {
  const fs::path dir(folder);
  if (!fs::is_directory(dir)) SY_THROW(IoError, "checkpoint: \"" << folder << "\" is not a checkpoint folder");
  nlohmann::json manifest;
  try {
    manifest = nlohmann::json::parse(read_all(dir / "manifest.json"));
  } catch (const nlohmann::json::exception& e) {
    SY_THROW(InvalidArgument, "checkpoint \"" << folder << "\": manifest.json is corrupt: " << e.what());
  }
  SY_REQUIRE(manifest.value("format", std::string()) == kFormat,
             "checkpoint \"" << folder << "\": unknown format \"" << manifest.value("format", std::string())
                             << "\", expected " << kFormat);
  Checkpoint ckpt;
  ckpt.step = manifest.at("step").get<int64_t>();
  for (const char* f : kFiles) {
    SY_REQUIRE(manifest["files"].contains(f), "checkpoint \"" << folder << "\": manifest has no entry for " << f);
    std::string bytes = read_all(dir / f);
    const auto& entry = manifest["files"][f];
    SY_REQUIRE(bytes.size() == entry.at("size").get<size_t>(),
               "checkpoint \"" << folder << "\": " << f << " has " << bytes.size() << " bytes, the manifest says "
                               << entry.at("size").get<size_t>() << " (truncated or corrupt)");
    SY_REQUIRE(std::to_string(fnv1a64(bytes)) == entry.at("fnv1a64").get<std::string>(),
               "checkpoint \"" << folder << "\": " << f << " is corrupt (checksum mismatch)");
  }
  ckpt.model = read_safetensors((dir / "model.safetensors").string());
  ckpt.optimizer = read_safetensors((dir / "optimizer.safetensors").string());
  ckpt.config_json = read_all(dir / "config.json");
  ckpt.state_json = read_all(dir / "state.json");
  return ckpt;
}

}  // namespace switchyard::trainer
