// Per-token FLOPs, element-wise bytes, activation bytes and parameters of each model block.
// The formulas are the ones of docs/plan.md ("Cost model"); symbols follow config.h.
#include "switchyard/trainer/plan/op_costs.h"

#include "switchyard/common/error.h"

namespace switchyard::trainer::plan {
namespace {

constexpr double kAttentionBwdFactor = 2.5;  // FlashAttention backward: 5 products vs 2

struct Builder {
  const PrecisionRecipe& recipe;
  const RecomputeOptions& recompute;
  BlockCost& out;
  double a() const { return recipe.act_bytes; }
  double c() const { return recipe.cached_linear_input_bytes; }

  // A linear layer, N x K weight, run `copies` times per token.
  void linear(const char* name, int64_t n, int64_t k, double copies, bool low_precision, bool recomputed) {
    OpCost op;
    op.name = name;
    op.kind = OpCost::Kind::kGemm;
    op.precision = low_precision ? recipe.linear_gemm : recipe.other_gemm;
    op.n = n;
    op.k = k;
    op.fwd_flops = 2.0 * n * k * copies;
    op.wgrad_flops = op.fwd_flops;
    op.bwd_flops = 2.0 * op.fwd_flops + (recomputed ? op.fwd_flops : 0.0);
    out.model_flops += 3.0 * op.fwd_flops;
    out.ops.push_back(op);
  }
  void elementwise(const char* name, double fwd_bytes) {
    OpCost op;
    op.name = name;
    op.kind = OpCost::Kind::kElementwise;
    op.fwd_bytes = fwd_bytes;
    op.bwd_bytes = 2.0 * fwd_bytes;  // gradient in, gradient out, saved input
    out.ops.push_back(op);
  }
};

void add_mla(const ModelConfig& m, int64_t seq_len, Builder& b) {
  const int64_t d = m.hidden_size, H = m.num_attention_heads, rq = m.q_lora_rank, rkv = m.kv_lora_rank;
  const int64_t dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim, dv = m.v_head_dim, dqk = dn + dr;
  const bool rec_up = b.recompute.mla_up_proj || b.recompute.full, full = b.recompute.full;
  b.linear("attn.q_a_proj", rq, d, 1, true, full);
  b.linear("attn.kv_a_proj", rkv + dr, d, 1, true, full);
  b.linear("attn.q_b_proj", H * dqk, rq, 1, true, rec_up);
  b.linear("attn.kv_b_proj", H * (dn + dv), rkv, 1, true, rec_up);
  OpCost core;
  core.name = "attn.core";
  core.kind = OpCost::Kind::kAttention;
  core.precision = b.recipe.other_gemm;
  core.fwd_flops = 2.0 * H * (dqk + dv) * (seq_len + 1) / 2.0;  // causal: (T+1)/2 keys on average
  core.bwd_flops = kAttentionBwdFactor * core.fwd_flops + (full ? core.fwd_flops : 0.0);
  b.out.model_flops += 3.0 * core.fwd_flops;
  b.out.ops.push_back(core);
  b.linear("attn.o_proj", d, H * dv, 1, true, full);
  const double a = b.a(), q = (b.recipe.linear_gemm == "fp8") ? a + 1 : 0;  // quantize: read a, write 1
  b.elementwise("attn.norms_rope_residual", 2.0 * d * a + 2.0 * rq * a + 2.0 * rkv * a + 2.0 * (H * dr + dr) * a +
                                                3.0 * d * a + q * (d + rq + rkv + H * dv));
  // Activations kept for the backward pass.
  double act = d * a;  // block input (norm backward)
  if (!b.recompute.norms) act += (d + rq + rkv) * a;  // norm outputs
  act += d * b.c() + (rq + rkv + dr) * a + (rq + rkv) * b.c();  // linear inputs, latents
  if (!rec_up) act += (2.0 * H * dqk + H * dv) * a;  // q, k, v
  act += H * dv * a + H * 4.0 + H * dv * b.c();  // O, log-sum-exp, o_proj input
  b.out.activation_bytes += act;
}

void add_ffn(const ModelConfig& m, bool moe, Builder& b) {
  const int64_t d = m.hidden_size;
  const double a = b.a(), q = (b.recipe.linear_gemm == "fp8") ? a + 1 : 0;
  const bool full = b.recompute.full;
  double act = d * a;  // residual before the FFN norm
  if (!b.recompute.norms) act += d * a;
  auto swiglu_act = [&](int64_t f, double copies) {
    double per = d * b.c();  // expert / FFN input (FP8 after dispatch)
    per += b.recompute.swiglu ? 2.0 * f * b.c() : 2.0 * f * a + f * b.c();
    return per * copies;
  };
  if (!moe) {
    const int64_t F = m.intermediate_size;
    b.linear("ffn.gate_up", 2 * F, d, 1, true, full);
    b.linear("ffn.down", d, F, 1, true, full);
    b.elementwise("ffn.norm_swiglu_residual", 2.0 * d * a + 3.0 * F * a + 3.0 * d * a + q * (d + F));
    act += swiglu_act(F, 1);
  } else {
    const int64_t f = m.moe_intermediate_size, E = m.n_routed_experts;
    const double K = static_cast<double>(m.num_experts_per_tok), S = static_cast<double>(m.n_shared_experts);
    b.linear("moe.gate", E, d, 1, false, full);
    b.linear("moe.experts.gate_up", 2 * f, d, K + S, true, full);
    b.linear("moe.experts.down", d, f, K + S, true, full);
    b.elementwise("moe.norm_swiglu_permute_combine", 2.0 * d * a + (K + S) * 3.0 * f * a + 2.0 * K * d * b.c() +
                                                         (K + 1.0) * d * a + 3.0 * d * a + q * (d + (K + S) * f));
    act += E * 4.0 + K * 4.0;  // sigmoid scores, top-k weights
    act += swiglu_act(f, K + S);
  }
  b.out.activation_bytes += act;
}

void fill_layer_params(const ModelConfig& m, bool moe, BlockCost& out) {
  const int64_t d = m.hidden_size, H = m.num_attention_heads;
  const int64_t attn_linear = d * m.q_lora_rank + m.q_lora_rank * H * m.qk_head_dim() +
                              d * (m.kv_lora_rank + m.qk_rope_head_dim) +
                              m.kv_lora_rank * H * (m.qk_nope_head_dim + m.v_head_dim) + H * m.v_head_dim * d;
  const int64_t attn_norms = m.q_lora_rank + m.kv_lora_rank + 2 * d;
  if (!moe) {
    const int64_t ffn = 3 * d * m.intermediate_size;
    out.dense_params = attn_linear + attn_norms + ffn;
    out.lowp_params = attn_linear + ffn;
  } else {
    const int64_t expert = 3 * d * m.moe_intermediate_size;
    const int64_t shared = m.n_shared_experts * expert, gate = m.n_routed_experts * d + m.n_routed_experts;
    out.dense_params = attn_linear + attn_norms + shared + gate;
    out.expert_params = m.n_routed_experts * expert;
    out.lowp_params = attn_linear + shared + out.expert_params;
  }
}

}  // namespace

PrecisionRecipe precision_recipe(const std::string& name) {
  PrecisionRecipe r;
  r.name = name;
  if (name == "fp8") {  // DeepSeek-V3 3.3: FP8 linears, BF16 rest, FP32 master and grads, BF16 moments
    r.linear_gemm = "fp8";
    r.other_gemm = "bf16";
    r.weight_copy_bytes = 2;
    r.low_precision_copy_bytes = 1.0 + 4.0 / (128 * 128);  // E4M3 + one FP32 scale per 128x128 block
    r.linear_high_copy = false;  // V3 3.3.3 names FP8 GEMM weights, FP32 master, no BF16 linear copy
    r.master_bytes = 4;
    r.moment_bytes = 2;
    r.grad_bytes = 4;
    r.act_bytes = 2;
    r.cached_linear_input_bytes = 1;
  } else if (name == "bf16") {  // mixed precision: BF16 GEMMs, FP32 master, moments and grads
    r.linear_gemm = r.other_gemm = "bf16";
    r.weight_copy_bytes = 2;
    r.low_precision_copy_bytes = 0;
    r.master_bytes = 4;
    r.moment_bytes = 4;
    r.grad_bytes = 4;
    r.act_bytes = 2;
    r.cached_linear_input_bytes = 2;
  } else if (name == "fp32") {  // the CPU trainer: everything FP32, the weights are the master
    r.linear_gemm = r.other_gemm = "fp32";
    r.weight_copy_bytes = 4;
    r.low_precision_copy_bytes = 0;
    r.master_bytes = 0;
    r.moment_bytes = 4;
    r.grad_bytes = 4;
    r.act_bytes = 4;
    r.cached_linear_input_bytes = 4;
  } else {
    SY_THROW(InvalidArgument, "precision recipe \"" << name << "\" is unknown; valid: fp8, bf16, fp32");
  }
  return r;
}

BlockCost block_cost(const ModelConfig& m, BlockKind kind, int64_t seq_len, const PrecisionRecipe& recipe,
                     const RecomputeOptions& recompute, bool shares_weights) {
  SY_REQUIRE(seq_len >= 1, "plan: sequence length " << seq_len << " must be >= 1");
  BlockCost out;
  out.kind = kind;
  Builder b{recipe, recompute, out};
  const int64_t d = m.hidden_size, V = m.vocab_size;
  const double a = recipe.act_bytes;
  switch (kind) {
    case BlockKind::kEmbedding:
      out.name = "embedding";
      b.elementwise("embedding.lookup", 2.0 * d * a);
      out.activation_bytes = 8;  // token id
      out.dense_params = shares_weights ? 0 : V * d;
      break;
    case BlockKind::kDenseLayer:
    case BlockKind::kMoeLayer: {
      const bool moe = kind == BlockKind::kMoeLayer;
      out.name = moe ? "moe layer" : "dense layer";
      out.moe = moe;
      add_mla(m, seq_len, b);
      add_ffn(m, moe, b);
      fill_layer_params(m, moe, out);
      if (recompute.full) out.activation_bytes = d * a;
      break;
    }
    case BlockKind::kMtpProjection:
      out.name = "mtp projection";
      b.linear("mtp.eh_proj", d, 2 * d, 1, true, recompute.full);
      b.elementwise("mtp.norms", 4.0 * d * a);
      out.activation_bytes = 2.0 * d * a + 2.0 * d * recipe.cached_linear_input_bytes;
      out.dense_params = 2 * d + 2 * d * d;
      out.lowp_params = 2 * d * d;
      break;
    case BlockKind::kHead:
      out.name = "head";
      b.linear("head", V, d, 1, false, recompute.full);
      b.elementwise("head.norm_softmax_loss", 2.0 * d * a + 3.0 * V * 4.0);
      out.activation_bytes = d * a + d * a + (recompute.fused_head_loss ? 0.0 : V * a);
      out.dense_params = shares_weights ? d : V * d + d;  // MTP: its own shared_head.norm only
      break;
  }
  return out;
}

std::vector<BlockCost> model_blocks(const ModelConfig& m, int mtp_depth, int64_t seq_len, const PrecisionRecipe& recipe,
                                    const RecomputeOptions& recompute) {
  SY_REQUIRE(mtp_depth >= 0, "plan: MTP depth " << mtp_depth << " must be >= 0");
  std::vector<BlockCost> blocks;
  blocks.push_back(block_cost(m, BlockKind::kEmbedding, seq_len, recipe, recompute));
  for (int64_t l = 0; l < m.num_hidden_layers; ++l) {
    BlockKind kind = m.is_moe_layer(l) ? BlockKind::kMoeLayer : BlockKind::kDenseLayer;
    blocks.push_back(block_cost(m, kind, seq_len, recipe, recompute));
    blocks.back().name = "layer " + std::to_string(l);
  }
  blocks.push_back(block_cost(m, BlockKind::kHead, seq_len, recipe, recompute));
  for (int i = 0; i < mtp_depth; ++i) {
    blocks.push_back(block_cost(m, BlockKind::kMtpProjection, seq_len, recipe, recompute));
    blocks.back().name = "mtp " + std::to_string(i) + " proj";
    blocks.push_back(block_cost(m, m.n_routed_experts > 0 ? BlockKind::kMoeLayer : BlockKind::kDenseLayer, seq_len,
                                recipe, recompute));
    blocks.back().name = "mtp " + std::to_string(i) + " layer";
    blocks.push_back(block_cost(m, BlockKind::kHead, seq_len, recipe, recompute, /*shares_weights=*/true));
    blocks.back().name = "mtp " + std::to_string(i) + " head";
  }
  return blocks;
}

}  // namespace switchyard::trainer::plan
