// DeepSeekMoE block on the GPU (see moe.h); mirrors src/moe.cc.
#include "moe.h"

#include <algorithm>

#include "../kernels/model_kernels.h"
#include "switchyard/common/cuda_check.h"
#include "switchyard/trainer/experts.h"

namespace switchyard::trainer::gpu {

MoeLayer::MoeLayer(const ModelConfig& c, ParameterSlab& slab, const std::string& prefix)
    : d_(c.hidden_size), E_(c.n_routed_experts), K_(c.num_experts_per_tok), F_(c.moe_intermediate_size) {
  router_ = RouterConfig{c.n_routed_experts, c.num_experts_per_tok, c.n_group, c.topk_group,
                         c.routed_scaling_factor, c.norm_topk_prob};
  gate_ = make_linear(slab, prefix + "gate.weight", E_, d_, /*exact=*/true);
  bias_.assign(E_, 0.0f);
  bias_name_ = prefix + "gate.e_score_correction_bias";
  for (int64_t e = 0; e < E_; ++e)
    experts_.push_back(make_swiglu(slab, prefix + "experts." + std::to_string(e) + ".", d_, F_));
  if (c.n_shared_experts > 0)
    shared_ = std::make_unique<DenseMlp>(slab, prefix + "shared_experts.", d_, F_ * c.n_shared_experts);
  counts_.assign(E_, 0.0);
}

void MoeLayer::upload_bias(Context& ctx) {
  float* b = bias_d_.ensure(E_);
  SY_CUDA_CHECK(cudaMemcpyAsync(b, bias_.data(), E_ * sizeof(float), cudaMemcpyHostToDevice, ctx.s()),
                "gpu moe: upload " << bias_name_);
  SY_CUDA_CHECK(cudaStreamSynchronize(ctx.s()), "gpu moe: upload " << bias_name_);
}

void MoeLayer::forward(Context& ctx, const float* x, int64_t batch, int64_t seq_len, float* y) {
  B_ = batch, T_ = seq_len, N_ = batch * seq_len;
  x_ = x;
  const auto s = ctx.s();
  if (bias_d_.size() != static_cast<size_t>(E_)) upload_bias(ctx);
  float* scores = scores_.ensure(N_ * E_);
  float* w = w_.ensure(N_ * K_);
  int64_t* idx = topk_idx_.ensure(N_ * K_);
  double* f = f_.ensure(B_ * E_);
  double* loss = loss_.ensure(1);
  linear_forward(ctx, gate_, x, N_, scores);
  router_forward(router_, scores, bias_d_.data(), N_, scores, idx, w, nullptr, s);
  balance_loss_forward(scores, B_, T_, E_, K_, f, loss, nullptr, s);
  topk_idx_h_.resize(N_ * K_);
  SY_CUDA_CHECK(cudaMemcpyAsync(topk_idx_h_.data(), idx, N_ * K_ * sizeof(int64_t), cudaMemcpyDeviceToHost, s),
                "gpu moe: expert choices to the host");
  SY_CUDA_CHECK(cudaMemcpyAsync(&balance_loss_, loss, sizeof(double), cudaMemcpyDeviceToHost, s),
                "gpu moe: balance loss to the host");
  SY_CUDA_CHECK(cudaStreamSynchronize(s), "gpu moe: routing");

  // Expert rows: segment e holds its assignments in token order, padded with rows that
  // gather the zero row N of x.
  const RoutingPlan plan = make_routing_plan(topk_idx_h_.data(), N_, K_, E_);
  seg_begin_.assign(E_, 0);
  seg_count_.assign(E_, 0);
  rows_ = 0;
  for (int64_t e = 0; e < E_; ++e) {
    seg_begin_[e] = rows_;
    seg_count_[e] = plan.expert_offset[e + 1] - plan.expert_offset[e];
    counts_[e] = double(seg_count_[e]);
    rows_ += padded(e);
  }
  src_h_.assign(rows_, N_);
  row_of_h_.assign(N_ * K_, 0);
  for (int64_t e = 0; e < E_; ++e)
    for (int64_t i = 0; i < seg_count_[e]; ++i) {
      const int64_t a = plan.order[plan.expert_offset[e] + i], r = seg_begin_[e] + i;
      src_h_[r] = a / K_;
      row_of_h_[a] = r;
    }
  int64_t* src = src_.ensure(std::max<int64_t>(rows_, 1));
  int64_t* row_of = row_of_.ensure(N_ * K_);
  if (rows_ > 0)
    SY_CUDA_CHECK(cudaMemcpyAsync(src, src_h_.data(), rows_ * sizeof(int64_t), cudaMemcpyHostToDevice, s),
                  "gpu moe: expert rows to the device");
  SY_CUDA_CHECK(cudaMemcpyAsync(row_of, row_of_h_.data(), N_ * K_ * sizeof(int64_t), cudaMemcpyHostToDevice, s),
                "gpu moe: expert rows to the device");

  const int64_t rf = rows_ * F_;
  float* xr = x_rows_.ensure(rows_ * d_);
  float *a = a_.ensure(rf), *bb = b_.ensure(rf), *g = g_.ensure(rf), *sig = sig_.ensure(rf);
  float* yr = y_rows_.ensure(rows_ * d_);
  moe_gather(x, src, rows_, 1, d_, xr, s);  // row r <- x[src[r]] (one "assignment" per row)
  for (int64_t e = 0; e < E_; ++e) {
    const int64_t r0 = seg_begin_[e];
    swiglu_mlp_forward(ctx, experts_[e], xr + r0 * d_, padded(e), a + r0 * F_, bb + r0 * F_, g + r0 * F_,
                       sig + r0 * F_, yr + r0 * d_);
  }
  if (shared_) {
    shared_->forward(ctx, x, N_, y);
  } else {
    fill_zero(y, N_ * d_, s);
  }
  moe_combine(yr, w, row_of, N_, K_, d_, y, s);
}

void MoeLayer::backward_input(Context& ctx, const float* dy, float* dx, double balance_coef, MoeScratch& sc) {
  const auto s = ctx.s();
  if (shared_) {
    shared_->backward_input(ctx, dy, dx, false);
  } else {
    fill_zero(dx, N_ * d_, s);
  }
  const int64_t rf = rows_ * F_;
  float* dyr = sc.dy_rows.ensure(rows_ * d_);
  float* dxr = sc.dx_rows.ensure(rows_ * d_);
  float* dw = sc.dw.ensure(N_ * K_);
  float *dg = sc.dg.ensure(rf), *da = sc.da.ensure(rf), *db = sc.db.ensure(rf);
  fill_zero(dyr, rows_ * d_, s);  // padding rows stay zero
  moe_combine_backward(dy, y_rows_.data(), w_.data(), row_of_.data(), N_, K_, d_, dyr, dw, s);
  for (int64_t e = 0; e < E_; ++e) {
    const int64_t r0 = seg_begin_[e];
    swiglu_mlp_backward_input(ctx, experts_[e], dyr + r0 * d_, padded(e), a_.data() + r0 * F_, b_.data() + r0 * F_,
                              sig_.data() + r0 * F_, dg + r0 * F_, da + r0 * F_, db + r0 * F_, dxr + r0 * d_, false);
  }
  moe_gather_backward(dxr, row_of_.data(), N_, K_, d_, dx, s);
  // Router: through the gate weights and the balance loss (route_backward), then the gate.
  float* dlogits = sc.dlogits.ensure(N_ * E_);
  router_backward(router_, scores_.data(), topk_idx_.data(), dw, N_, f_.data(), B_, T_, balance_coef, dlogits, s);
  linear_backward_input(ctx, gate_, dlogits, N_, dx, true);
}

void MoeLayer::backward_weight(Context& ctx, MoeScratch& sc) {
  linear_backward_weight(ctx, gate_, sc.dlogits.data(), x_, N_);
  if (shared_) shared_->backward_weight(ctx);
  for (int64_t e = 0; e < E_; ++e) {
    const int64_t r0 = seg_begin_[e];
    swiglu_mlp_backward_weight(ctx, experts_[e], sc.dy_rows.data() + r0 * d_, x_rows_.data() + r0 * d_,
                               g_.data() + r0 * F_, sc.da.data() + r0 * F_, sc.db.data() + r0 * F_, padded(e));
  }
}

}  // namespace switchyard::trainer::gpu
