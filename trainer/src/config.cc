// Model configuration: presets, HF config.json parsing, validation and parameter counts.
#include "switchyard/trainer/config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "switchyard/common/error.h"

namespace switchyard::trainer {
namespace {

using nlohmann::json;

double yarn_mscale(double factor, double m) { return factor <= 1.0 ? 1.0 : 0.1 * m * std::log(factor) + 1.0; }

template <class V>
void read_field(const json& j, const char* name, V& out) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return;
  try {
    out = it->get<V>();
  } catch (const json::exception& e) {
    SY_THROW(InvalidArgument, "model config: field \"" << name << "\" has the wrong type (" << it->dump()
                                                       << "): " << e.what());
  }
}

}  // namespace

bool ModelConfig::is_moe_layer(int64_t layer) const {
  if (layer >= num_hidden_layers) return true;  // MTP modules carry a full MoE block
  return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
}

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope_scaling.enabled) {
    double m = yarn_mscale(rope_scaling.factor, rope_scaling.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

void ModelConfig::validate() const {
  auto positive = [](const char* name, int64_t v) {
    SY_REQUIRE(v >= 1, "model config: " << name << " = " << v << " must be at least 1");
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("q_lora_rank", q_lora_rank);
  positive("kv_lora_rank", kv_lora_rank);
  positive("qk_nope_head_dim", qk_nope_head_dim);
  positive("qk_rope_head_dim", qk_rope_head_dim);
  positive("v_head_dim", v_head_dim);
  positive("moe_layer_freq", moe_layer_freq);
  positive("max_position_embeddings", max_position_embeddings);
  SY_REQUIRE(qk_rope_head_dim % 2 == 0,
             "model config: qk_rope_head_dim = " << qk_rope_head_dim << " must be even (interleaved RoPE pairs)");
  SY_REQUIRE(first_k_dense_replace >= 0 && first_k_dense_replace <= num_hidden_layers,
             "model config: first_k_dense_replace = " << first_k_dense_replace << " must be in [0, num_hidden_layers = "
                                                      << num_hidden_layers << "]");
  SY_REQUIRE(num_nextn_predict_layers >= 0,
             "model config: num_nextn_predict_layers = " << num_nextn_predict_layers << " must be >= 0");
  SY_REQUIRE(rms_norm_eps > 0, "model config: rms_norm_eps = " << rms_norm_eps << " must be positive");
  SY_REQUIRE(rope_theta > 0, "model config: rope_theta = " << rope_theta << " must be positive");
  bool any_moe = num_nextn_predict_layers > 0 || first_k_dense_replace < num_hidden_layers;
  if (any_moe) {
    positive("n_routed_experts", n_routed_experts);
    positive("moe_intermediate_size", moe_intermediate_size);
    positive("num_experts_per_tok", num_experts_per_tok);
    positive("n_group", n_group);
    positive("topk_group", topk_group);
    SY_REQUIRE(n_shared_experts >= 0, "model config: n_shared_experts = " << n_shared_experts << " must be >= 0");
    SY_REQUIRE(n_routed_experts % n_group == 0, "model config: n_routed_experts = "
                                                    << n_routed_experts << " is not divisible by n_group = " << n_group);
    SY_REQUIRE(topk_group <= n_group,
               "model config: topk_group = " << topk_group << " exceeds n_group = " << n_group);
    SY_REQUIRE(num_experts_per_tok <= n_routed_experts, "model config: num_experts_per_tok = "
                                                            << num_experts_per_tok << " exceeds n_routed_experts = "
                                                            << n_routed_experts);
    int64_t per_group = n_routed_experts / n_group;
    SY_REQUIRE(num_experts_per_tok <= topk_group * per_group,
               "model config: num_experts_per_tok = " << num_experts_per_tok << " exceeds the experts in the allowed groups ("
                                                      << topk_group << " groups x " << per_group << " experts)");
    SY_REQUIRE(n_group == 1 || per_group >= 2,
               "model config: n_routed_experts / n_group = " << per_group
                                                             << " experts per group; the top-2 group score needs at least 2");
    SY_REQUIRE(routed_scaling_factor > 0,
               "model config: routed_scaling_factor = " << routed_scaling_factor << " must be positive");
  }
  if (rope_scaling.enabled) {
    SY_REQUIRE(rope_scaling.factor >= 1.0, "model config: rope_scaling.factor = " << rope_scaling.factor << " must be >= 1");
    positive("rope_scaling.original_max_position_embeddings", rope_scaling.original_max_position_embeddings);
  }
}

ModelConfig model_config_preset(std::string_view name) {
  ModelConfig c;
  c.n_shared_experts = 1;
  c.routed_scaling_factor = 2.5;
  c.num_nextn_predict_layers = 1;
  if (name == "nano") {
    c.vocab_size = 256, c.hidden_size = 64, c.intermediate_size = 128, c.moe_intermediate_size = 32;
    c.num_hidden_layers = 3, c.first_k_dense_replace = 1, c.num_attention_heads = 2;
    c.q_lora_rank = 32, c.kv_lora_rank = 32, c.qk_nope_head_dim = 16, c.qk_rope_head_dim = 8, c.v_head_dim = 16;
    c.n_routed_experts = 8, c.num_experts_per_tok = 2, c.n_group = 4, c.topk_group = 2;
    c.max_position_embeddings = 64;
  } else if (name == "tiny") {
    c.vocab_size = 4096, c.hidden_size = 256, c.intermediate_size = 1024, c.moe_intermediate_size = 128;
    c.num_hidden_layers = 4, c.first_k_dense_replace = 1, c.num_attention_heads = 4;
    c.q_lora_rank = 128, c.kv_lora_rank = 128, c.qk_nope_head_dim = 64, c.qk_rope_head_dim = 32, c.v_head_dim = 64;
    c.n_routed_experts = 16, c.num_experts_per_tok = 4, c.n_group = 4, c.topk_group = 2;
    c.max_position_embeddings = 256;
  } else if (name == "small") {
    // About 100M parameters; every Linear contraction size (512, 256, 128, 1536, 1024) is a
    // multiple of 128 and kv_a's output (128 + 32 = 160) is not, as V3's 576.
    c.vocab_size = 8192, c.hidden_size = 512, c.intermediate_size = 1536, c.moe_intermediate_size = 256;
    c.num_hidden_layers = 6, c.first_k_dense_replace = 1, c.num_attention_heads = 8;
    c.q_lora_rank = 256, c.kv_lora_rank = 128, c.qk_nope_head_dim = 64, c.qk_rope_head_dim = 32, c.v_head_dim = 64;
    c.n_routed_experts = 32, c.num_experts_per_tok = 4, c.n_group = 4, c.topk_group = 2;
    c.max_position_embeddings = 1024;
  } else if (name == "v3") {
    c.vocab_size = 129280, c.hidden_size = 7168, c.intermediate_size = 18432, c.moe_intermediate_size = 2048;
    c.num_hidden_layers = 61, c.first_k_dense_replace = 3, c.num_attention_heads = 128;
    c.q_lora_rank = 1536, c.kv_lora_rank = 512, c.qk_nope_head_dim = 128, c.qk_rope_head_dim = 64, c.v_head_dim = 128;
    c.n_routed_experts = 256, c.num_experts_per_tok = 8, c.n_group = 8, c.topk_group = 4;
    c.max_position_embeddings = 163840;
    c.rope_scaling = RopeScaling{true, 40.0, 4096, 32.0, 1.0, 1.0, 1.0};
  } else {
    SY_THROW(InvalidArgument, "model config: unknown preset \"" << name << "\" (known: nano, tiny, small, v3)");
  }
  c.validate();
  return c;
}

ModelConfig model_config_from_json(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    SY_THROW(InvalidArgument, "model config: malformed JSON: " << e.what());
  }
  SY_REQUIRE(j.is_object(), "model config: the JSON document is not an object");
  ModelConfig c;
  read_field(j, "vocab_size", c.vocab_size);
  read_field(j, "hidden_size", c.hidden_size);
  read_field(j, "intermediate_size", c.intermediate_size);
  read_field(j, "moe_intermediate_size", c.moe_intermediate_size);
  read_field(j, "num_hidden_layers", c.num_hidden_layers);
  read_field(j, "first_k_dense_replace", c.first_k_dense_replace);
  read_field(j, "moe_layer_freq", c.moe_layer_freq);
  read_field(j, "num_attention_heads", c.num_attention_heads);
  read_field(j, "q_lora_rank", c.q_lora_rank);
  read_field(j, "kv_lora_rank", c.kv_lora_rank);
  read_field(j, "qk_nope_head_dim", c.qk_nope_head_dim);
  read_field(j, "qk_rope_head_dim", c.qk_rope_head_dim);
  read_field(j, "v_head_dim", c.v_head_dim);
  read_field(j, "n_routed_experts", c.n_routed_experts);
  read_field(j, "n_shared_experts", c.n_shared_experts);
  read_field(j, "num_experts_per_tok", c.num_experts_per_tok);
  read_field(j, "n_group", c.n_group);
  read_field(j, "topk_group", c.topk_group);
  read_field(j, "routed_scaling_factor", c.routed_scaling_factor);
  read_field(j, "norm_topk_prob", c.norm_topk_prob);
  read_field(j, "rms_norm_eps", c.rms_norm_eps);
  read_field(j, "rope_theta", c.rope_theta);
  read_field(j, "max_position_embeddings", c.max_position_embeddings);
  read_field(j, "num_nextn_predict_layers", c.num_nextn_predict_layers);
  read_field(j, "aux_loss_alpha", c.aux_loss_alpha);
  read_field(j, "mtp_loss_lambda", c.mtp_loss_lambda);
  if (auto it = j.find("num_key_value_heads"); it != j.end() && !it->is_null()) {
    int64_t kv_heads = 0;
    read_field(j, "num_key_value_heads", kv_heads);
    SY_REQUIRE(kv_heads == c.num_attention_heads, "model config: num_key_value_heads = "
                                                      << kv_heads << " must equal num_attention_heads = "
                                                      << c.num_attention_heads << " (MLA has one key per head)");
  }
  if (auto it = j.find("scoring_func"); it != j.end() && !it->is_null()) {
    SY_REQUIRE(*it == "sigmoid", "model config: scoring_func = " << it->dump() << " is unsupported (only \"sigmoid\")");
  }
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    SY_REQUIRE(it->is_object(), "model config: rope_scaling must be an object or null");
    std::string type = it->value("type", it->value("rope_type", std::string("yarn")));
    SY_REQUIRE(type == "yarn", "model config: rope_scaling type \"" << type << "\" is unsupported (only \"yarn\")");
    RopeScaling& r = c.rope_scaling;
    r.enabled = true;
    read_field(*it, "factor", r.factor);
    read_field(*it, "original_max_position_embeddings", r.original_max_position_embeddings);
    read_field(*it, "beta_fast", r.beta_fast);
    read_field(*it, "beta_slow", r.beta_slow);
    read_field(*it, "mscale", r.mscale);
    read_field(*it, "mscale_all_dim", r.mscale_all_dim);
  }
  c.validate();
  return c;
}

ModelConfig model_config_from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) SY_THROW(IoError, "model config: cannot open \"" << path << "\"");
  std::stringstream ss;
  ss << in.rdbuf();
  return model_config_from_json(ss.str());
}

std::string model_config_to_json(const ModelConfig& c) {
  json j = {{"model_type", "deepseek_v3"},
            {"vocab_size", c.vocab_size},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"moe_intermediate_size", c.moe_intermediate_size},
            {"num_hidden_layers", c.num_hidden_layers},
            {"first_k_dense_replace", c.first_k_dense_replace},
            {"moe_layer_freq", c.moe_layer_freq},
            {"num_attention_heads", c.num_attention_heads},
            {"num_key_value_heads", c.num_attention_heads},
            {"q_lora_rank", c.q_lora_rank},
            {"kv_lora_rank", c.kv_lora_rank},
            {"qk_nope_head_dim", c.qk_nope_head_dim},
            {"qk_rope_head_dim", c.qk_rope_head_dim},
            {"v_head_dim", c.v_head_dim},
            {"n_routed_experts", c.n_routed_experts},
            {"n_shared_experts", c.n_shared_experts},
            {"num_experts_per_tok", c.num_experts_per_tok},
            {"n_group", c.n_group},
            {"topk_group", c.topk_group},
            {"routed_scaling_factor", c.routed_scaling_factor},
            {"norm_topk_prob", c.norm_topk_prob},
            {"scoring_func", "sigmoid"},
            {"topk_method", "noaux_tc"},
            {"rms_norm_eps", c.rms_norm_eps},
            {"rope_theta", c.rope_theta},
            {"max_position_embeddings", c.max_position_embeddings},
            {"num_nextn_predict_layers", c.num_nextn_predict_layers},
            {"aux_loss_alpha", c.aux_loss_alpha},
            {"mtp_loss_lambda", c.mtp_loss_lambda}};
  if (c.rope_scaling.enabled) {
    const RopeScaling& r = c.rope_scaling;
    j["rope_scaling"] = {{"type", "yarn"},
                         {"factor", r.factor},
                         {"original_max_position_embeddings", r.original_max_position_embeddings},
                         {"beta_fast", r.beta_fast},
                         {"beta_slow", r.beta_slow},
                         {"mscale", r.mscale},
                         {"mscale_all_dim", r.mscale_all_dim}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  return j.dump(2);
}

ParameterCounts count_parameters(const ModelConfig& c) {
  const int64_t d = c.hidden_size, H = c.num_attention_heads;
  const int64_t attn = d * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * H * c.qk_head_dim() +
                       d * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank +
                       c.kv_lora_rank * H * (c.qk_nope_head_dim + c.v_head_dim) + H * c.v_head_dim * d;
  const int64_t block_norms = 2 * d;
  const int64_t dense = 3 * d * c.intermediate_size;
  const int64_t expert = 3 * d * c.moe_intermediate_size;
  const int64_t router = c.n_routed_experts * d + c.n_routed_experts;  // gate weight + bias
  const int64_t moe_total = (c.n_routed_experts + c.n_shared_experts) * expert + router;
  const int64_t moe_active = (c.num_experts_per_tok + c.n_shared_experts) * expert + router;
  ParameterCounts out;
  out.main = out.activated_per_token = 2 * c.vocab_size * d + d;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    bool moe = c.is_moe_layer(l);
    out.main += attn + block_norms + (moe ? moe_total : dense);
    out.activated_per_token += attn + block_norms + (moe ? moe_active : dense);
  }
  const int64_t mtp_module = 2 * d + 2 * d * d + attn + block_norms + moe_total + d;
  out.mtp_unique = c.num_nextn_predict_layers * mtp_module;
  return out;
}

}  // namespace switchyard::trainer
