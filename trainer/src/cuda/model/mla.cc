// Multi-head latent attention on the GPU (see mla.h); mirrors src/mla.cc step by step.
#include "mla.h"

#include "../kernels/model_kernels.h"

namespace switchyard::trainer::gpu {

MlaLayer::MlaLayer(const ModelConfig& c, ParameterSlab& slab, const std::string& prefix)
    : d_(c.hidden_size),
      H_(c.num_attention_heads),
      rq_(c.q_lora_rank),
      rkv_(c.kv_lora_rank),
      dn_(c.qk_nope_head_dim),
      dr_(c.qk_rope_head_dim),
      dv_(c.v_head_dim),
      dqk_(c.qk_head_dim()),
      eps_(c.rms_norm_eps),
      scale_(c.softmax_scale()) {
  // Registration order of src/mla.cc.
  q_a_ = make_linear(slab, prefix + "q_a_proj.weight", rq_, d_);
  q_a_norm_ = slab.add(prefix + "q_a_layernorm.weight", {rq_});
  q_b_ = make_linear(slab, prefix + "q_b_proj.weight", H_ * dqk_, rq_);
  kv_a_ = make_linear(slab, prefix + "kv_a_proj_with_mqa.weight", rkv_ + dr_, d_);
  kv_a_norm_ = slab.add(prefix + "kv_a_layernorm.weight", {rkv_});
  kv_b_ = make_linear(slab, prefix + "kv_b_proj.weight", H_ * (dn_ + dv_), rkv_);
  o_ = make_linear(slab, prefix + "o_proj.weight", d_, H_ * dv_);
}

void MlaLayer::forward(Context& ctx, const float* x, int64_t batch, int64_t seq_len, const DeviceRope& rope,
                       float* u) {
  B_ = batch, T_ = seq_len, N_ = batch * seq_len;
  rope_ = &rope;
  x_ = x;
  const auto s = ctx.s();
  const int64_t la = rkv_ + dr_, ldq = H_ * dqk_, ldkv = H_ * (dn_ + dv_), ldo = H_ * dv_;
  float* cq_raw = cq_raw_.ensure(N_ * rq_);
  float* a = a_.ensure(N_ * la);
  float* kpe = kpe_.ensure(N_ * dr_);
  float* cq = cq_.ensure(N_ * rq_);
  float* ckv = ckv_.ensure(N_ * rkv_);
  float* q = q_.ensure(N_ * ldq);
  float* kv = kv_.ensure(N_ * ldkv);
  float* lse = lse_.ensure(B_ * H_ * T_);
  float* o = o_out_.ensure(N_ * ldo);
  const float *cs = rope.cos.data(), *sn = rope.sin.data();

  linear_forward(ctx, q_a_, x, N_, cq_raw);
  linear_forward(ctx, kv_a_, x, N_, a);
  rope_apply(cs, sn, T_, rope.half, a + rkv_, la, 0, kpe, dr_, 0, N_, 1, false, s);
  rmsnorm_forward(cq_raw, rq_, q_a_norm_->w, N_, rq_, eps_, cq, rq_, nullptr, s);
  rmsnorm_forward(a, la, kv_a_norm_->w, N_, rkv_, eps_, ckv, rkv_, nullptr, s);
  linear_forward(ctx, q_b_, cq, N_, q);
  linear_forward(ctx, kv_b_, ckv, N_, kv);
  rope_apply(cs, sn, T_, rope.half, q + dn_, ldq, dqk_, q + dn_, ldq, dqk_, N_, H_, false, s);
  attention_forward(shape(), q, kv, kpe, o, lse, s);
  linear_forward(ctx, o_, o, N_, u);
}

AttentionShape MlaLayer::shape() const {
  AttentionShape sh;
  sh.batch = B_, sh.seq_len = T_, sh.heads = H_;
  sh.d_nope = dn_, sh.d_rope = dr_, sh.d_v = dv_;
  sh.scale = scale_;
  return sh;
}

void MlaLayer::backward_input(Context& ctx, const float* du, float* dx, MlaScratch& sc) {
  du_ = du;
  const auto s = ctx.s();
  const int64_t la = rkv_ + dr_, ldq = H_ * dqk_, ldkv = H_ * (dn_ + dv_), ldo = H_ * dv_;
  const float *cs = rope_->cos.data(), *sn = rope_->sin.data();
  float* dO = sc.dO.ensure(N_ * ldo);
  float* dq = sc.dq.ensure(N_ * ldq);
  float* dkv = sc.dkv.ensure(N_ * ldkv);
  float* dkpe = sc.dkpe.ensure(N_ * dr_);
  float* dcq = sc.dcq.ensure(N_ * rq_);
  float* dcq_raw = sc.dcq_raw.ensure(N_ * rq_);
  float* dckv = sc.dckv.ensure(N_ * rkv_);
  float* da = sc.da.ensure(N_ * la);
  linear_backward_input(ctx, o_, du, N_, dO, false);
  attention_backward(shape(), q_.data(), kv_.data(), kpe_.data(), o_out_.data(), lse_.data(), dO, dq, dkv, dkpe, s);
  // RoPE backward (rotate by minus the angle), up-projections and latent norms.
  rope_apply(cs, sn, T_, rope_->half, dq + dn_, ldq, dqk_, dq + dn_, ldq, dqk_, N_, H_, true, s);
  linear_backward_input(ctx, q_b_, dq, N_, dcq, false);
  rmsnorm_backward_input(cq_raw_.data(), rq_, q_a_norm_->w, dcq, rq_, N_, rq_, eps_, dcq_raw, rq_, false, s);
  linear_backward_input(ctx, kv_b_, dkv, N_, dckv, false);
  rmsnorm_backward_input(a_.data(), la, kv_a_norm_->w, dckv, rkv_, N_, rkv_, eps_, da, la, false, s);
  rope_apply(cs, sn, T_, rope_->half, dkpe, dr_, 0, da + rkv_, la, 0, N_, 1, true, s);
  linear_backward_input(ctx, q_a_, dcq_raw, N_, dx, false);
  linear_backward_input(ctx, kv_a_, da, N_, dx, true);
}

void MlaLayer::backward_weight(Context& ctx, MlaScratch& sc) {
  const auto s = ctx.s();
  const int64_t la = rkv_ + dr_;
  linear_backward_weight(ctx, o_, du_, o_out_.data(), N_);
  linear_backward_weight(ctx, q_b_, sc.dq.data(), cq_.data(), N_);
  linear_backward_weight(ctx, kv_b_, sc.dkv.data(), ckv_.data(), N_);
  rmsnorm_backward_weight(cq_raw_.data(), rq_, sc.dcq.data(), rq_, N_, rq_, eps_, q_a_norm_->g, s);
  rmsnorm_backward_weight(a_.data(), la, sc.dckv.data(), rkv_, N_, rkv_, eps_, kv_a_norm_->g, s);
  linear_backward_weight(ctx, q_a_, sc.dcq_raw.data(), x_, N_);
  linear_backward_weight(ctx, kv_a_, sc.da.data(), x_, N_);
}

}  // namespace switchyard::trainer::gpu
