// Model configuration: parameter counts (closed form vs the release figures and vs the
// parameters the model actually builds), JSON presets, YaRN scale and validation errors.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "switchyard/common/error.h"
#include "switchyard/trainer/config.h"
#include "switchyard/trainer/model.h"

#ifndef SY_SOURCE_DIR
#error "SY_SOURCE_DIR must name the source tree"
#endif

namespace switchyard::trainer {
namespace {

TEST(ModelConfigTest, V3ParameterCountsMatchTheRelease) {
  ParameterCounts n = count_parameters(model_config_preset("v3"));
  EXPECT_EQ(n.main, 671026419200);
  EXPECT_EQ(n.mtp_unique, 11610068224);
  EXPECT_EQ(n.activated_per_token, 37552297472);
}

// The closed form against the tensors the model registers (plus the FP32 biases).
TEST(ModelConfigTest, CountsMatchTheBuiltModel) {
  for (const char* name : {"nano", "tiny"}) {
    ModelConfig c = model_config_preset(name);
    Model<float> model(c);
    int64_t built = model.parameters().total_numel();
    for (int64_t l : model.moe_layer_indices()) built += static_cast<int64_t>(model.expert_bias(l).size());
    ParameterCounts n = count_parameters(c);
    EXPECT_EQ(built, n.main + n.mtp_unique) << name;
  }
  // The spec's table (section 11) for nano and tiny.
  EXPECT_EQ(count_parameters(model_config_preset("nano")).main, 200336);
  EXPECT_EQ(count_parameters(model_config_preset("nano")).mtp_unique, 74632);
  EXPECT_EQ(count_parameters(model_config_preset("tiny")).main + count_parameters(model_config_preset("tiny")).mtp_unique,
            10990400);
  ParameterCounts small = count_parameters(model_config_preset("small"));
  EXPECT_GT(small.main + small.mtp_unique, 80'000'000);
  EXPECT_LT(small.main + small.mtp_unique, 130'000'000);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ModelConfigTest, JsonPresetFilesEqualBuiltInPresets) {
  for (const char* name : {"nano", "tiny"}) {
    ModelConfig from_file = model_config_from_file(std::string(SY_SOURCE_DIR) + "/trainer/configs/" + name + ".json");
    EXPECT_EQ(model_config_to_json(from_file), model_config_to_json(model_config_preset(name))) << name;
  }
  // Round trip through our own JSON.
  ModelConfig v3 = model_config_preset("v3");
  EXPECT_EQ(model_config_to_json(model_config_from_json(model_config_to_json(v3))), model_config_to_json(v3));
}

TEST(ModelConfigTest, YarnSoftmaxScaleOfV3) {
  // scale = 192^-0.5 * (0.1 ln 40 + 1)^2 (spec section 2, item 6).
  double m = 0.1 * std::log(40.0) + 1.0;
  EXPECT_NEAR(model_config_preset("v3").softmax_scale(), m * m / std::sqrt(192.0), 1e-15);
  EXPECT_NEAR(model_config_preset("v3").softmax_scale(), 0.1352338, 1e-7);
  EXPECT_DOUBLE_EQ(model_config_preset("nano").softmax_scale(), 1.0 / std::sqrt(24.0));
}

void expect_invalid(const std::string& json_patch, const std::string& needle) {
  std::string base = read_file(std::string(SY_SOURCE_DIR) + "/trainer/configs/nano.json");
  // Apply "key": value overrides by appending them (later keys win in nlohmann::json).
  auto pos = base.rfind('}');
  std::string text = base.substr(0, pos) + ", " + json_patch + "}";
  try {
    model_config_from_json(text);
    ADD_FAILURE() << "accepted: " << json_patch;
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ModelConfigTest, InvalidConfigsGiveClearErrors) {
  expect_invalid("\"n_routed_experts\": 9", "not divisible by n_group");
  expect_invalid("\"num_experts_per_tok\": 9", "exceeds n_routed_experts");
  expect_invalid("\"topk_group\": 5", "exceeds n_group");
  expect_invalid("\"topk_group\": 1, \"num_experts_per_tok\": 3", "experts in the allowed groups");
  expect_invalid("\"num_key_value_heads\": 1", "num_key_value_heads");
  expect_invalid("\"hidden_size\": 0", "hidden_size = 0");
  expect_invalid("\"num_attention_heads\": -2", "num_attention_heads = -2");
  expect_invalid("\"n_group\": 0", "n_group = 0");
  expect_invalid("\"kv_lora_rank\": 0", "kv_lora_rank = 0");
  expect_invalid("\"q_lora_rank\": null", "q_lora_rank = 0");  // no query compression: unsupported
  expect_invalid("\"qk_rope_head_dim\": 7", "must be even");
  expect_invalid("\"n_group\": 8", "top-2 group score");
  expect_invalid("\"hidden_size\": \"big\"", "hidden_size");
  EXPECT_THROW(model_config_from_json("{ not json"), InvalidArgument);
  EXPECT_THROW(model_config_preset("huge"), InvalidArgument);
  EXPECT_THROW(model_config_from_file("/nonexistent/config.json"), IoError);
}

}  // namespace
}  // namespace switchyard::trainer
