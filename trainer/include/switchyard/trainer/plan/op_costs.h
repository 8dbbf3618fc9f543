// What one token costs in one block of the model: FLOPs per GEMM and attention kernel,
// bytes moved by element-wise ops, activation bytes kept for the backward pass, parameters.
//
// Formulas (per token, forward; T = sequence length, causal attention sees (T+1)/2 keys on
// average): a linear with N x K weight is 2NK FLOPs; attention core is 2H(dqk + dv)(T+1)/2.
// Backward: linears 2x forward (dgrad + wgrad, half each), attention core 2.5x forward (the
// FlashAttention backward recomputes QK^T and runs four more products). Recomputed ops add
// their forward FLOPs to the backward. See docs/plan.md for the tables.
//
// Constraints: pure functions of the configuration; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/trainer/config.h"

namespace switchyard::trainer::plan {

// Number formats of a training recipe (DeepSeek-V3 report section 3.3).
struct PrecisionRecipe {
  std::string name;  // "fp8" (DeepSeek-V3), "bf16", "fp32"
  std::string linear_gemm;  // precision of the linear-layer GEMMs ("fp8", "bf16", "fp32")
  std::string other_gemm;  // embedding, head, gate and attention ("bf16" or "fp32")
  double weight_copy_bytes = 2;  // working copy of every weight (BF16 or FP32)
  double low_precision_copy_bytes = 0;  // copy of linear weights for the GEMMs (FP8: 1 + 128x128 scales)
  bool linear_high_copy = true;  // linear weights also kept in the working (BF16/FP32) copy
  double master_bytes = 4;  // FP32 master (0: the working copy is the master)
  double moment_bytes = 2;  // per AdamW moment (two moments)
  double grad_bytes = 4;  // accumulated gradient
  double act_bytes = 2;  // activation element kept in high precision
  double cached_linear_input_bytes = 1;  // linear inputs cached for wgrad (FP8: 1)
};
// "fp8", "bf16", "fp32"; throws InvalidArgument listing them otherwise.
PrecisionRecipe precision_recipe(const std::string& name);

// What is recomputed in the backward pass instead of stored.
struct RecomputeOptions {
  bool norms = true;  // RMSNorm outputs (V3 report 3.2.3)
  bool mla_up_proj = true;  // q/k/v up-projections from the cached latents (V3 3.2.3)
  bool swiglu = true;  // SwiGLU output from its cached inputs (V3 3.3.3)
  bool full = false;  // whole block from its input (stores only the block input)
  bool fused_head_loss = true;  // head + cross-entropy backward fused into the forward (no logits kept)
};

enum class BlockKind { kEmbedding, kDenseLayer, kMoeLayer, kMtpProjection, kHead };

// One operation of a block, per token.
struct OpCost {
  std::string name;  // "q_a_proj", "attention", "experts.up", "rmsnorm", ...
  enum class Kind { kGemm, kAttention, kElementwise } kind = Kind::kGemm;
  std::string precision;  // GEMM / attention precision
  int64_t n = 0, k = 0;  // weight shape of a GEMM (for per-shape rates)
  double fwd_flops = 0;  // per token
  double bwd_flops = 0;  // per token, recomputation included
  double wgrad_flops = 0;  // part of bwd_flops that is weight gradient (deferrable W)
  double fwd_bytes = 0;  // element-wise: bytes moved per token forward
  double bwd_bytes = 0;
};

struct BlockCost {
  BlockKind kind = BlockKind::kMoeLayer;
  std::string name;  // "layer 3", "mtp 0 proj", "head", ...
  std::vector<OpCost> ops;
  double model_flops = 0;  // per token: 3 x forward FLOPs without recomputation (MFU)
  double activation_bytes = 0;  // per token kept for the backward pass
  int64_t dense_params = 0;  // replicated over EP x DP
  int64_t expert_params = 0;  // routed experts, split over EP
  int64_t lowp_params = 0;  // weights that also get the FP8 copy (linear layers)
  bool moe = false;  // runs dispatch/combine
};

// Costs of one block. seq_len is T; the MTP module is kMtpProjection (enorm, hnorm, eh_proj)
// followed by a kMoeLayer and a kHead that shares the main head's weights (params 0).
BlockCost block_cost(const ModelConfig& config, BlockKind kind, int64_t seq_len, const PrecisionRecipe& recipe,
                     const RecomputeOptions& recompute, bool shares_weights = false);

// The model as the sequence of blocks a pipeline cuts: embedding, layers 0..L-1, final
// head, then per MTP module its projection, its layer and its head (shared weights).
std::vector<BlockCost> model_blocks(const ModelConfig& config, int mtp_depth, int64_t seq_len,
                                    const PrecisionRecipe& recipe, const RecomputeOptions& recompute);

}  // namespace switchyard::trainer::plan
