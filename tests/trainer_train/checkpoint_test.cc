// Checkpoints: round trip and keep-last-K, corruption errors, a SIGKILL in the middle of a
// save, the Python reader of tests/reference, and import of a synthetic HF folder.
#include "switchyard/trainer/train/checkpoint.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "switchyard/common/error.h"
#include "switchyard/testing/temp_dir.h"
#include "switchyard/trainer/model.h"

namespace switchyard::trainer {
namespace {

namespace fs = std::filesystem;

struct TempDir : ::switchyard::testing::TempDir {
  TempDir() : ::switchyard::testing::TempDir("sy_ckpt_test") {}
  fs::path path = ::switchyard::testing::TempDir::path();
};

Checkpoint make(int64_t step, float base) {
  Checkpoint c;
  c.step = step;
  std::vector<float> w(300);
  for (size_t i = 0; i < w.size(); ++i) w[i] = base + 0.25f * float(i);
  c.model["model.layers.0.mlp.up_proj.weight"] = HostTensor::from_vector(w, {20, 15});
  c.model["model.norm.weight"] = HostTensor::from_vector(std::vector<float>{1, 2, 3}, {3});
  c.optimizer["step"] = HostTensor::from_vector<int64_t>({step}, {1});
  c.config_json = "{\"hidden_size\": 15}";
  c.state_json = "{\"step\": " + std::to_string(step) + "}";
  return c;
}

void expect_same(const Checkpoint& a, const Checkpoint& b) {
  EXPECT_EQ(a.step, b.step);
  ASSERT_EQ(a.model.size(), b.model.size());
  for (const auto& [name, t] : a.model) EXPECT_EQ(t.bytes, tensor_at(b.model, name).bytes) << name;
  EXPECT_EQ(a.config_json, b.config_json);
  EXPECT_EQ(a.state_json, b.state_json);
}

TEST(CheckpointTest, RoundTripKeepsTheLastK) {
  TempDir dir;
  CheckpointManager mgr(dir.path.string(), 2);
  EXPECT_EQ(mgr.latest(), "");
  for (int64_t s = 1; s <= 5; ++s) mgr.save(make(s * 10, float(s)));
  std::vector<std::string> kept = mgr.list();
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(fs::path(kept[0]).filename(), "step-00000040");
  EXPECT_EQ(fs::path(kept[1]).filename(), "step-00000050");
  EXPECT_EQ(mgr.latest(), kept[1]);
  expect_same(CheckpointManager::load(mgr.latest()), make(50, 5.0f));
}

void flip_byte(const fs::path& p, size_t offset) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c;
  f.get(c);
  f.seekp(offset);
  f.put(char(c ^ 0x5A));
}

TEST(CheckpointTest, CorruptOrMissingFilesAreNamed) {
  TempDir dir;
  CheckpointManager mgr(dir.path.string(), 3);
  std::string folder = mgr.save(make(7, 1.0f));
  flip_byte(fs::path(folder) / "model.safetensors", 200);
  try {
    CheckpointManager::load(folder);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("model.safetensors is corrupt"), std::string::npos) << e.what();
  }
  folder = mgr.save(make(8, 1.0f));
  fs::resize_file(fs::path(folder) / "state.json", 3);
  try {
    CheckpointManager::load(folder);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("state.json has 3 bytes"), std::string::npos) << e.what();
  }
  fs::remove(fs::path(folder) / "optimizer.safetensors");
  EXPECT_THROW(CheckpointManager::load(folder), IoError);
  EXPECT_THROW(CheckpointManager::load((dir.path / "nothing").string()), IoError);
}

// The child saves step 2 and stops at `stage`; the parent SIGKILLs it there. The previous
// checkpoint (step 1) must still be `latest` and load intact, and saving must work again.
void kill_during_save(const std::string& stage, int64_t expect_latest_step) {
  TempDir dir;
  CheckpointManager(dir.path.string(), 3).save(make(1, 1.0f));
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    CheckpointManager mgr(dir.path.string(), 3);
    mgr.set_stage_hook([&](const std::string& s) {
      if (s != stage) return;
      char c = 'x';
      if (::write(fds[1], &c, 1) != 1) ::_exit(3);
      for (;;) ::pause();
    });
    mgr.save(make(2, 2.0f));
    ::_exit(2);  // the hook never returns
  }
  ::close(fds[1]);
  pollfd p{fds[0], POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 20000), 1) << "the child did not reach stage " << stage;
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(fds[0]);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  CheckpointManager mgr(dir.path.string(), 3);
  Checkpoint c = CheckpointManager::load(mgr.latest());
  expect_same(c, make(expect_latest_step, float(expect_latest_step)));
  mgr.save(make(3, 3.0f));
  expect_same(CheckpointManager::load(mgr.latest()), make(3, 3.0f));
  for (const auto& e : fs::directory_iterator(dir.path))
    EXPECT_NE(e.path().filename().string().rfind(".tmp-", 0), 0u) << "leftover " << e.path();
}

TEST(CheckpointTest, KillWhileWritingFilesLeavesPreviousLoadable) { kill_during_save("model", 1); }
TEST(CheckpointTest, KillBeforeLatestMovesLeavesPreviousLoadable) { kill_during_save("renamed", 1); }

TEST(CheckpointTest, PythonReaderReadsTheModelFile) {
  if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "/usr/bin/python3 missing";
  TempDir dir;
  ModelConfig cfg = model_config_preset("nano");
  Model<float> model(cfg);
  model.init_random(3, 0.02);
  Checkpoint c = make(1, 0.0f);
  c.model = model.weights();
  std::string folder = CheckpointManager(dir.path.string(), 1).save(c);
  std::string cmd = std::string("cd ") + SY_SOURCE_DIR +
                    "/tests/reference && /usr/bin/python3 -c \"import sys, safetensors_io as st\n"
                    "t, infos, _ = st.load(sys.argv[1])\n"
                    "for n in sorted(t): print(n, infos[n].dtype, 'x'.join(map(str, t[n].shape)), "
                    "repr(float(t[n].astype('float64').sum())))\" " +
                    folder + "/model.safetensors 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, got);
  ASSERT_EQ(::pclose(p), 0) << out;
  if (out.find("No module named 'numpy'") != std::string::npos) GTEST_SKIP() << "numpy missing";
  std::istringstream lines(out);
  std::string name, dtype, shape;
  double sum;
  size_t n = 0;
  TensorMap weights = model.weights();
  while (lines >> name >> dtype >> shape >> sum) {
    ++n;
    const HostTensor& t = tensor_at(weights, name);
    EXPECT_EQ(dtype, "F32") << name;
    std::string want_shape;
    for (size_t i = 0; i < t.shape.size(); ++i) want_shape += (i ? "x" : "") + std::to_string(t.shape[i]);
    EXPECT_EQ(shape, want_shape) << name;
    double want = 0;
    for (float v : t.to_vector<float>()) want += v;
    EXPECT_NEAR(sum, want, 1e-9 * (1 + std::fabs(want))) << name;
  }
  EXPECT_EQ(n, weights.size()) << out;
}

// A minimal safetensors writer for the synthetic HF shards (F8_E4M3 included).
void write_shard(const fs::path& path, const std::vector<std::tuple<std::string, std::string, std::vector<int64_t>,
                                                                    std::vector<uint8_t>>>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const auto& [name, dtype, shape, bytes] : tensors) {
    header[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data.append(bytes.begin(), bytes.end());
  }
  std::string h = header.dump();
  uint64_t n = h.size();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << h << data;
}

template <class T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// E4M3 decoded from its definition: bias 7, subnormals m 2^-9.
double e4m3_value(uint8_t c) {
  int e = (c >> 3) & 15, m = c & 7;
  double v = e == 0 ? m * std::ldexp(1.0, -9) : (1 + m / 8.0) * std::ldexp(1.0, e - 7);
  return (c & 0x80) ? -v : v;
}

TEST(HfImportTest, ShardedFolderWithFp8BlockScales) {
  TempDir dir;
  const int64_t rows = 130, cols = 200;  // partial blocks on both axes: scales [2, 2]
  std::vector<uint8_t> codes(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) codes[i] = uint8_t((i * 37) % 256 == 0x7F ? 0x38 : (i * 37) % 256) & 0xF7;
  std::vector<float> scale = {0.5f, 2.0f, 0.125f, 3.0f};
  std::vector<uint16_t> norm_bf16 = {0x3F80, 0x4000, 0xBF80};  // 1, 2, -1
  std::vector<float> head = {1, 2, 3, 4, 5, 6};
  write_shard(dir.path / "model-00001-of-00002.safetensors",
              {{"model.layers.0.mlp.down_proj.weight", "F8_E4M3", {rows, cols}, codes},
               {"model.layers.0.mlp.down_proj.weight_scale_inv", "F32", {2, 2}, bytes_of(scale)}});
  write_shard(dir.path / "model-00002-of-00002.safetensors",
              {{"model.norm.weight", "BF16", {3}, bytes_of(norm_bf16)}, {"lm_head.weight", "F32", {2, 3}, bytes_of(head)}});
  nlohmann::json index = {{"metadata", {{"total_size", 0}}},
                          {"weight_map",
                           {{"model.layers.0.mlp.down_proj.weight", "model-00001-of-00002.safetensors"},
                            {"model.layers.0.mlp.down_proj.weight_scale_inv", "model-00001-of-00002.safetensors"},
                            {"model.norm.weight", "model-00002-of-00002.safetensors"},
                            {"lm_head.weight", "model-00002-of-00002.safetensors"}}}};
  std::ofstream(dir.path / "model.safetensors.index.json") << index.dump();

  TensorMap t = import_hf_checkpoint(dir.path.string());
  EXPECT_EQ(t.size(), 3u);  // the scale is folded in and dropped
  std::vector<float> w = tensor_at(t, "model.layers.0.mlp.down_proj.weight").to_vector<float>();
  ASSERT_EQ(w.size(), size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      double want = e4m3_value(codes[r * cols + c]) * scale[(r / 128) * 2 + c / 128];
      ASSERT_EQ(w[r * cols + c], float(want)) << r << "," << c;
    }
  EXPECT_EQ(tensor_at(t, "model.norm.weight").to_vector<float>(), (std::vector<float>{1, 2, -1}));
  EXPECT_EQ(tensor_at(t, "lm_head.weight").to_vector<float>(), head);

  // A missing scale is named.
  write_shard(dir.path / "model-00001-of-00002.safetensors",
              {{"model.layers.0.mlp.down_proj.weight", "F8_E4M3", {rows, cols}, codes}});
  index["weight_map"].erase("model.layers.0.mlp.down_proj.weight_scale_inv");
  std::ofstream(dir.path / "model.safetensors.index.json") << index.dump();
  try {
    import_hf_checkpoint(dir.path.string());
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("weight_scale_inv"), std::string::npos) << e.what();
  }
  EXPECT_THROW(import_hf_checkpoint((dir.path / "absent").string()), IoError);
}

TEST(HfImportTest, ModelWeightsRoundTripThroughHfNames) {
  TempDir dir;
  ModelConfig cfg = model_config_preset("nano");
  Model<float> a(cfg), b(cfg);
  a.init_random(1, 0.02);
  b.init_random(2, 0.02);
  TensorMap w = a.weights();
  // Two shards, split by name, as HF releases are.
  TensorMap s1, s2;
  nlohmann::json index;
  int i = 0;
  for (const auto& [name, t] : w) {
    bool first = i++ % 2 == 0;
    (first ? s1 : s2)[name] = t;
    index["weight_map"][name] = first ? "model-1.safetensors" : "model-2.safetensors";
  }
  write_safetensors((dir.path / "model-1.safetensors").string(), s1);
  write_safetensors((dir.path / "model-2.safetensors").string(), s2);
  std::ofstream(dir.path / "model.safetensors.index.json") << index.dump();
  b.load_weights(import_hf_checkpoint(dir.path.string()));
  TensorMap wb = b.weights();
  for (const auto& [name, t] : w) EXPECT_EQ(t.bytes, tensor_at(wb, name).bytes) << name;
}

}  // namespace
}  // namespace switchyard::trainer
