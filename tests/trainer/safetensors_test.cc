// safetensors: round trip of every dtype, errors, and model weights save/load.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "model_test_util.h"
#include "switchyard/common/error.h"
#include "switchyard/trainer/model.h"
#include "switchyard/trainer/safetensors.h"

namespace switchyard::trainer {
namespace {

namespace fs = std::filesystem;

fs::path temp_file(const std::string& name) {
  return fs::temp_directory_path() / ("sy_trainer_" + std::to_string(::getpid()) + "_" + name);
}

TEST(SafetensorsTest, RoundTripKeepsDtypesShapesAndValues) {
  TensorMap m;
  m["a"] = HostTensor::from_vector(std::vector<double>{1.5, -2.25, 3e300}, {3});
  m["b.weight"] = HostTensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  m["tokens"] = HostTensor::from_vector(std::vector<int64_t>{7, -8}, {1, 2});
  fs::path p = temp_file("rt.safetensors");
  write_safetensors(p.string(), m);
  TensorMap r = read_safetensors(p.string());
  fs::remove(p);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r["a"].dtype, DType::kF64);
  EXPECT_EQ(r["a"].to_vector<double>(), (std::vector<double>{1.5, -2.25, 3e300}));
  EXPECT_EQ(r["b.weight"].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r["b.weight"].to_vector<double>(), (std::vector<double>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(r["tokens"].to_vector<int64_t>(), (std::vector<int64_t>{7, -8}));
}

TEST(SafetensorsTest, ErrorsNameTheProblem) {
  EXPECT_THROW(read_safetensors("/nonexistent/x.safetensors"), IoError);
  fs::path p = temp_file("bad.safetensors");
  {
    std::ofstream out(p, std::ios::binary);
    uint64_t len = 1000;
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << "{}";
  }
  EXPECT_THROW(read_safetensors(p.string()), InvalidArgument);
  fs::remove(p);
  TensorMap empty;
  EXPECT_THROW(tensor_at(empty, "model.norm.weight"), InvalidArgument);
}

TEST(SafetensorsTest, ModelWeightsRoundTripGiveTheSameLoss) {
  ModelConfig c = model_config_preset("nano");
  Model<double> a(c);
  testing::randomize_for_test(a, 2);
  fs::path p = temp_file("w.safetensors");
  write_safetensors(p.string(), a.weights());
  Model<double> b(c);
  b.load_weights(read_safetensors(p.string()));
  fs::remove(p);
  auto tokens = testing::random_tokens(c, 2, 8, 3);
  EXPECT_EQ(a.forward(tokens.data(), 2, 8).total, b.forward(tokens.data(), 2, 8).total);
  TensorMap w = a.weights();
  w["model.norm.weight"] = HostTensor::from_vector(std::vector<double>(3, 1.0), {3});
  EXPECT_THROW(b.load_weights(w), InvalidArgument);
  w.erase("model.norm.weight");
  EXPECT_THROW(b.load_weights(w), InvalidArgument);
}

}  // namespace
}  // namespace switchyard::trainer
