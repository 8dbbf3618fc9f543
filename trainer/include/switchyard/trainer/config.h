// DeepSeek-V3 model configuration: Hugging Face config.json field names, the presets of
// ../shared/reference/deepseek-v3.md (nano, tiny, small, v3) and exact parameter counts.
//
// Constraints: a ModelConfig is plain data; validate() is the one place that decides
// whether a configuration can be built, and it throws InvalidArgument naming the field.
// Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace switchyard::trainer {

// YaRN context extension of the decoupled RoPE key (HF "rope_scaling" with type "yarn").
struct RopeScaling {
  bool enabled = false;
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 1.0;
};

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;             // d
  int64_t intermediate_size = 0;       // dense SwiGLU width
  int64_t moe_intermediate_size = 0;   // routed and shared expert width
  int64_t num_hidden_layers = 0;       // L (main stack; MTP modules follow at L..L+D-1)
  int64_t first_k_dense_replace = 0;   // layers 0..k-1 are dense
  int64_t moe_layer_freq = 1;
  int64_t num_attention_heads = 0;     // H
  int64_t q_lora_rank = 0;             // r_q (0: no query compression, unsupported by the model)
  int64_t kv_lora_rank = 0;            // r_kv
  int64_t qk_nope_head_dim = 0;        // dn
  int64_t qk_rope_head_dim = 0;        // dr (the shared RoPE key)
  int64_t v_head_dim = 0;              // dv
  int64_t n_routed_experts = 0;        // E
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;     // K
  int64_t n_group = 1;
  int64_t topk_group = 1;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 4096;
  int64_t num_nextn_predict_layers = 0;  // MTP depth D
  double aux_loss_alpha = 1e-4;          // alpha of the sequence-wise balance loss
  double mtp_loss_lambda = 0.3;          // lambda of the MTP loss

  // Throws InvalidArgument naming the first bad field and its value.
  void validate() const;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Whether layer `layer` (0-based; MTP modules are L..L+D-1) has a MoE FFN.
  bool is_moe_layer(int64_t layer) const;
  // Softmax scale of the attention: dqk^-0.5, times YaRN mscale^2 when rope_scaling is on.
  double softmax_scale() const;
};

// Presets: "nano", "tiny" (trainer/configs/*.json numbers), "small" (~100M parameters,
// every GEMM contraction a multiple of 128) and "v3" (the released 671B configuration).
// Throws InvalidArgument for an unknown name.
ModelConfig model_config_preset(std::string_view name);

// Parses Hugging Face config.json text (plus mtp_loss_lambda); unknown fields are ignored.
// Throws InvalidArgument on malformed JSON, a field of the wrong type or an invalid config.
ModelConfig model_config_from_json(const std::string& text);
ModelConfig model_config_from_file(const std::string& path);
std::string model_config_to_json(const ModelConfig& config);

struct ParameterCounts {
  int64_t main = 0;                 // embedding + layers + final norm + head (bias included)
  int64_t mtp_unique = 0;           // MTP modules without the shared embedding and head
  int64_t activated_per_token = 0;  // main model with K routed + shared experts per MoE layer
};

// Closed-form counts from the configuration (no model is built).
ParameterCounts count_parameters(const ModelConfig& config);

}  // namespace switchyard::trainer
