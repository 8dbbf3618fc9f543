// The DeepSeek-V3 model on one GPU (see cuda/model.h); mirrors src/model.cc: embedding, the
// decoder stack, final norm and head, the MTP modules, the losses and the interleaved
// backward, with the activations in device memory.
#include "switchyard/trainer/cuda/model.h"

#include <cmath>
#include <cstring>

#include "../../init_random.h"
#include "../../kernels.h"
#include "../kernels/model_kernels.h"
#include "decoder_layer.h"
#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/trainer/experts.h"

namespace switchyard::trainer::gpu {

namespace {

template <class T>
void upload(Context& ctx, const T* src, size_t n, T* dst, const char* what) {
  if (n == 0) return;
  SY_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyHostToDevice, ctx.s()), "gpu model: " << what);
}

template <class T>
std::vector<T> download(Context& ctx, const T* src, size_t n, const std::string& what) {
  std::vector<T> out(n);
  if (n == 0) return out;
  SY_CUDA_CHECK(cudaMemcpyAsync(out.data(), src, n * sizeof(T), cudaMemcpyDeviceToHost, ctx.s()), "gpu model: " << what);
  SY_CUDA_CHECK(cudaStreamSynchronize(ctx.s()), "gpu model: " << what);
  return out;
}

}  // namespace

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::kFloat32: return "fp32";
    case Precision::kBfloat16: return "bf16";
    case Precision::kFp8: return "fp8";
  }
  return "?";
}

Precision precision_from_name(const std::string& name) {
  if (name == "fp32") return Precision::kFloat32;
  if (name == "bf16") return Precision::kBfloat16;
  if (name == "fp8") return Precision::kFp8;
  SY_THROW(InvalidArgument, "gpu model: unknown precision \"" << name << "\" (known: fp32, bf16, fp8)");
}

struct Model::Impl {
  struct MtpHead {
    SlabParam *enorm, *hnorm, *norm;
    Linear eh_proj;
  };
  // Device copies of one module's token ids and targets, and the embedding-gradient plan.
  struct Lookup {
    DeviceArray<int64_t> ids, targets, order, offset;
  };

  ModelConfig config;
  Precision precision;
  Context ctx;
  ParameterSlab slab;
  SlabParam *embed = nullptr, *norm = nullptr;
  Linear head;
  std::vector<MtpHead> mtp;
  std::vector<std::unique_ptr<DecoderLayer>> layers;  // [L + D]
  LayerScratch scratch;
  DeviceRope rope;
  bool bf16_stale = true;

  AdamWConfig adamw;
  int64_t steps = 0;
  cuda::DeviceBuffer m, v;  // BF16 moments, slab-sized

  // step state
  int64_t B = 0, T = 0, N = 0;
  bool grads_taken = true;
  std::vector<Lookup> lookup;                   // [D + 1], module 0 = main
  std::vector<DeviceArray<float>> hidden;       // [L + 1] of [N, d]
  DeviceArray<float> hn, logits;                // logits: probs after forward, dlogits after backward
  std::vector<DeviceArray<float>> mtp_emb, mtp_cat, mtp_x, mtp_h, mtp_hn, mtp_logits;
  DeviceArray<double> loss;                     // [D + 1]
  DeviceArray<float> dbuf[2], dhn, demb, dcat;  // backward
  std::vector<DeviceArray<float>> mtp_dh, mtp_dx;
  Losses losses;

  Impl(const ModelConfig& c, Precision p) : config(c), precision(p) { ctx.precision = p; }

  const float* h(int64_t l) { return hidden[l].data(); }
  MoeLayer* moe_at(int64_t layer) const {
    SY_REQUIRE(layer >= 0 && layer < static_cast<int64_t>(layers.size()) && layers[layer]->moe() != nullptr,
               "gpu model: layer " << layer << " is not a MoE layer");
    return layers[layer]->moe();
  }
  void begin(const int64_t* tokens, int64_t batch, int64_t seq_len);
  void refresh_bf16();
  void head_forward();
  void backward();
};

Model::Model(const ModelConfig& config, Precision precision) {
  config.validate();
  if (!cuda::built()) SY_THROW(Unsupported, "gpu model: this build has no CUDA backend");
  if (cuda::device_count() == 0) SY_THROW(Unsupported, "gpu model: no GPU on this machine");
  impl_ = std::make_unique<Impl>(config, precision);
  Impl& m = *impl_;
  const ModelConfig& c = m.config;
  const int64_t d = c.hidden_size, V = c.vocab_size, L = c.num_hidden_layers, D = c.num_nextn_predict_layers;
  // Registration order of src/model.cc.
  m.embed = m.slab.add("model.embed_tokens.weight", {V, d});
  for (int64_t l = 0; l < L; ++l) m.layers.push_back(std::make_unique<DecoderLayer>(c, m.slab, l));
  m.norm = m.slab.add("model.norm.weight", {d});
  m.head = make_linear(m.slab, "lm_head.weight", V, d);
  m.head.fp8 = false;  // the recipe keeps the output head out of FP8 (BF16 under kFp8)
  for (int64_t k = 0; k < D; ++k) {
    const std::string prefix = "model.layers." + std::to_string(L + k) + ".";
    Impl::MtpHead h;
    h.enorm = m.slab.add(prefix + "enorm.weight", {d});
    h.hnorm = m.slab.add(prefix + "hnorm.weight", {d});
    h.eh_proj = make_linear(m.slab, prefix + "eh_proj.weight", d, 2 * d);
    m.layers.push_back(std::make_unique<DecoderLayer>(c, m.slab, L + k));
    h.norm = m.slab.add(prefix + "shared_head.norm.weight", {d});
    m.mtp.push_back(h);
  }
  m.slab.allocate();
}

Model::~Model() = default;

const ModelConfig& Model::config() const { return impl_->config; }
Precision Model::precision() const { return impl_->precision; }
int64_t Model::num_parameters() const { return impl_->slab.size(); }
const float* Model::parameter_slab() const { return impl_->slab.values(); }
const float* Model::gradient_slab() const { return impl_->slab.grads(); }

void Model::init_random(uint64_t seed, double std) {
  Impl& m = *impl_;
  NormalRng rng(seed);
  for (auto& p : m.slab.all()) {
    std::vector<float> v(p->numel);
    init_parameter(p->name, rng, std, v.data(), v.size());  // the CPU model's numbers
    upload(m.ctx, v.data(), v.size(), p->w, "init_random");
    m.ctx.stream.synchronize();
  }
  for (int64_t l : moe_layer_indices()) {
    MoeLayer* moe = m.moe_at(l);
    std::fill(moe->bias().begin(), moe->bias().end(), 0.0f);
    moe->upload_bias(m.ctx);
  }
  m.bf16_stale = true;
}

void Model::load_weights(const TensorMap& weights) {
  Impl& m = *impl_;
  for (auto& p : m.slab.all()) {
    const HostTensor& t = tensor_at(weights, p->name);
    SY_REQUIRE(t.shape == p->shape, "gpu model: weight \"" << p->name << "\" has " << t.shape.size() << "-d shape of "
                                                           << t.numel() << " elements, expected " << p->numel);
    const std::vector<float> v = t.to_vector<float>();
    upload(m.ctx, v.data(), v.size(), p->w, "load_weights");
    m.ctx.stream.synchronize();
  }
  for (int64_t l : moe_layer_indices()) {
    MoeLayer* moe = m.moe_at(l);
    const HostTensor& t = tensor_at(weights, moe->bias_name());
    SY_REQUIRE(t.numel() == static_cast<int64_t>(moe->bias().size()),
               "gpu model: \"" << moe->bias_name() << "\" has " << t.numel() << " elements, expected "
                               << moe->bias().size());
    moe->bias() = t.to_vector<float>();
    moe->upload_bias(m.ctx);
  }
  m.bf16_stale = true;
}

TensorMap Model::weights() const {
  Impl& m = *impl_;
  TensorMap out;
  for (auto& p : m.slab.all())
    out[p->name] = HostTensor::from_vector(download(m.ctx, p->w, p->numel, p->name), p->shape);
  for (int64_t l : moe_layer_indices()) {
    MoeLayer* moe = m.moe_at(l);
    out[moe->bias_name()] = HostTensor::from_vector(moe->bias(), {static_cast<int64_t>(moe->bias().size())});
  }
  return out;
}

TensorMap Model::gradients() const {
  Impl& m = *impl_;
  TensorMap out;
  for (auto& p : m.slab.all())
    out["grad." + p->name] = HostTensor::from_vector(download(m.ctx, p->g, p->numel, "grad." + p->name), p->shape);
  return out;
}

void Model::Impl::refresh_bf16() {
  if (!bf16_stale || precision == Precision::kFloat32) return;
  cast_to_bf16(slab.values(), slab.size(), slab.values_bf16(), ctx.s());
  bf16_stale = false;
}

// Checks and uploads the batch (model.cc stage_begin), sizes the activations.
void Model::Impl::begin(const int64_t* tokens, int64_t batch, int64_t seq_len) {
  const ModelConfig& c = config;
  const int64_t D = c.num_nextn_predict_layers, L = c.num_hidden_layers, d = c.hidden_size, V = c.vocab_size;
  SY_REQUIRE(tokens != nullptr, "gpu model: null tokens");
  SY_REQUIRE(batch >= 1 && seq_len >= 1,
             "gpu model: batch = " << batch << " and seq_len = " << seq_len << " must be at least 1");
  SY_REQUIRE(seq_len <= c.max_position_embeddings,
             "gpu model: seq_len = " << seq_len << " exceeds max_position_embeddings = " << c.max_position_embeddings);
  const int64_t W = seq_len + D + 1;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < W; ++i) {
      const int64_t t = tokens[b * W + i];
      SY_REQUIRE(t >= 0 && t < V,
                 "gpu model: tokens[" << b << ", " << i << "] = " << t << " is outside [0, " << V << ")");
    }
  B = batch, T = seq_len, N = batch * seq_len;
  lookup.resize(D + 1);
  std::vector<int64_t> ids(N), targets(N);
  for (int64_t mi = 0; mi <= D; ++mi) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < T; ++i) {
        ids[b * T + i] = tokens[b * W + i + mi];
        targets[b * T + i] = tokens[b * W + i + mi + 1];
      }
    // The embedding gradient adds the rows of each id in token order: the plan of ids by id.
    const RoutingPlan plan = make_routing_plan(ids.data(), N, 1, V);
    Lookup& lk = lookup[mi];
    upload(ctx, ids.data(), N, lk.ids.ensure(N), "token ids");
    upload(ctx, targets.data(), N, lk.targets.ensure(N), "targets");
    upload(ctx, plan.order.data(), N, lk.order.ensure(N), "embedding plan");
    upload(ctx, plan.expert_offset.data(), V + 1, lk.offset.ensure(V + 1), "embedding plan");
    ctx.stream.synchronize();  // ids, targets and plan are reused for the next module
  }
  if (rope.seq_len != T) {
    const RopeScaling& rs = c.rope_scaling;
    const kernels::RopeTable t =
        kernels::make_rope_table(T, c.qk_rope_head_dim, c.rope_theta, rs.enabled, rs.factor,
                                 rs.original_max_position_embeddings, rs.beta_fast, rs.beta_slow, rs.mscale,
                                 rs.mscale_all_dim);
    const std::vector<float> cs(t.cos.begin(), t.cos.end()), sn(t.sin.begin(), t.sin.end());
    upload(ctx, cs.data(), cs.size(), rope.cos.ensure(cs.size()), "rope table");
    upload(ctx, sn.data(), sn.size(), rope.sin.ensure(sn.size()), "rope table");
    ctx.stream.synchronize();
    rope.seq_len = T;
    rope.half = t.half;
  }
  hidden.resize(L + 1);
  for (auto& x : hidden) x.ensure(N * d);
  losses = Losses{};
  grads_taken = false;
}

// Final norm, head, MTP modules and their cross-entropies into loss[0..D] (model.cc
// run_head_forward).
void Model::Impl::head_forward() {
  const ModelConfig& c = config;
  const int64_t D = c.num_nextn_predict_layers, L = c.num_hidden_layers, d = c.hidden_size, V = c.vocab_size;
  const double eps = c.rms_norm_eps;
  const auto s = ctx.s();
  double* lo = loss.ensure(D + 1);
  rmsnorm_forward(h(L), d, norm->w, N, d, eps, hn.ensure(N * d), d, nullptr, s);
  linear_forward(ctx, head, hn.data(), N, logits.ensure(N * V));
  cross_entropy_forward(logits.data(), lookup[0].targets.data(), N, V, logits.data(), lo, s);
  for (auto* x : {&mtp_emb, &mtp_cat, &mtp_x, &mtp_h, &mtp_hn, &mtp_logits}) x->resize(D);
  for (int64_t k = 0; k < D; ++k) {
    const MtpHead& mh = mtp[k];
    const float* prev = k == 0 ? h(L) : mtp_h[k - 1].data();
    float* emb = mtp_emb[k].ensure(N * d);
    float* cat = mtp_cat[k].ensure(N * 2 * d);
    embedding_forward(embed->w, lookup[k + 1].ids.data(), N, d, emb, s);
    // [enorm(embedding), hnorm(hidden)]: the released checkpoints' order.
    rmsnorm_forward(emb, d, mh.enorm->w, N, d, eps, cat, 2 * d, nullptr, s);
    rmsnorm_forward(prev, d, mh.hnorm->w, N, d, eps, cat + d, 2 * d, nullptr, s);
    linear_forward(ctx, mh.eh_proj, cat, N, mtp_x[k].ensure(N * d));
    layers[L + k]->forward(ctx, mtp_x[k].data(), B, T, rope, mtp_h[k].ensure(N * d));
    rmsnorm_forward(mtp_h[k].data(), d, mh.norm->w, N, d, eps, mtp_hn[k].ensure(N * d), d, nullptr, s);
    float* lg = mtp_logits[k].ensure(N * V);
    linear_forward(ctx, head, mtp_hn[k].data(), N, lg);
    cross_entropy_forward(lg, lookup[k + 1].targets.data(), N, V, lg, lo + 1 + k, s);
  }
}

Losses Model::forward(const int64_t* tokens, int64_t batch, int64_t seq_len) {
  Impl& m = *impl_;
  const ModelConfig& c = m.config;
  const int64_t D = c.num_nextn_predict_layers, L = c.num_hidden_layers, d = c.hidden_size;
  m.begin(tokens, batch, seq_len);
  m.refresh_bf16();
  embedding_forward(m.embed->w, m.lookup[0].ids.data(), m.N, d, m.hidden[0].data(), m.ctx.s());
  for (int64_t l = 0; l < L; ++l) m.layers[l]->forward(m.ctx, m.h(l), m.B, m.T, m.rope, m.hidden[l + 1].data());
  m.head_forward();
  const std::vector<double> lo = download(m.ctx, m.loss.data(), D + 1, "losses");
  Losses& out = m.losses;
  out.main = lo[0];
  out.mtp.assign(lo.begin() + 1, lo.end());
  for (int64_t l : moe_layer_indices()) out.balance += m.moe_at(l)->balance_loss();
  out.total = out.main + c.aux_loss_alpha * out.balance;
  for (double x : out.mtp) out.total += c.mtp_loss_lambda / D * x;
  return out;
}

// model.cc run_head_backward + run_layers_backward + run_embed_backward, W right after B.
void Model::Impl::backward() {
  const ModelConfig& c = config;
  const int64_t D = c.num_nextn_predict_layers, L = c.num_hidden_layers, d = c.hidden_size, V = c.vocab_size;
  const double eps = c.rms_norm_eps, alpha = c.aux_loss_alpha;
  const auto s = ctx.s();
  SY_REQUIRE(N > 0, "gpu model: backward called before forward");
  SY_REQUIRE(!grads_taken, "gpu model: backward called twice after one forward");
  grads_taken = true;
  refresh_bf16();
  float* dtop = dbuf[L % 2].ensure(N * d);  // gradient of hidden[L]
  dbuf[(L + 1) % 2].ensure(N * d);
  float* dh_n = dhn.ensure(N * d);

  // Main head and final norm.
  cross_entropy_backward(logits.data(), lookup[0].targets.data(), N, V, 1.0, s);
  linear_backward_input(ctx, head, logits.data(), N, dh_n, false);
  rmsnorm_backward_input(h(L), d, norm->w, dh_n, d, N, d, eps, dtop, d, false, s);
  linear_backward_weight(ctx, head, logits.data(), hn.data(), N);
  rmsnorm_backward_weight(h(L), d, dh_n, d, N, d, eps, norm->g, s);

  // MTP modules, last first: each feeds the gradient of its input hidden state backwards.
  mtp_dh.resize(D);
  mtp_dx.resize(D);
  for (int64_t k = 0; k < D; ++k) fill_zero(mtp_dh[k].ensure(N * d), N * d, s);
  float* dc = dcat.ensure(N * 2 * d);
  float* de = demb.ensure(N * d);
  for (int64_t k = D - 1; k >= 0; --k) {
    const MtpHead& mh = mtp[k];
    const float* prev = k == 0 ? h(L) : mtp_h[k - 1].data();
    float* dprev = k == 0 ? dtop : mtp_dh[k - 1].data();
    float* lg = mtp_logits[k].data();
    cross_entropy_backward(lg, lookup[k + 1].targets.data(), N, V, c.mtp_loss_lambda / D, s);
    linear_backward_input(ctx, head, lg, N, dh_n, false);
    rmsnorm_backward_input(mtp_h[k].data(), d, mh.norm->w, dh_n, d, N, d, eps, mtp_dh[k].data(), d, true, s);
    // W of the head and this norm now: dh_n is reused below.
    linear_backward_weight(ctx, head, lg, mtp_hn[k].data(), N);
    rmsnorm_backward_weight(mtp_h[k].data(), d, dh_n, d, N, d, eps, mh.norm->g, s);
    float* dx = mtp_dx[k].ensure(N * d);
    layers[L + k]->backward_input(ctx, mtp_dh[k].data(), dx, alpha, scratch);
    layers[L + k]->backward_weight(ctx, scratch);
    linear_backward_input(ctx, mh.eh_proj, dx, N, dc, false);
    // dcat = [d enorm(e) | d hnorm(h)] (row stride 2d).
    rmsnorm_backward_input(prev, d, mh.hnorm->w, dc + d, 2 * d, N, d, eps, dprev, d, true, s);
    linear_backward_weight(ctx, mh.eh_proj, dx, mtp_cat[k].data(), N);
    rmsnorm_backward_weight(prev, d, dc + d, 2 * d, N, d, eps, mh.hnorm->g, s);
    rmsnorm_backward_weight(mtp_emb[k].data(), d, dc, 2 * d, N, d, eps, mh.enorm->g, s);
    // The embedding gradient of this module's token lookup.
    rmsnorm_backward_input(mtp_emb[k].data(), d, mh.enorm->w, dc, 2 * d, N, d, eps, de, d, false, s);
    const Lookup& lk = lookup[k + 1];
    embedding_backward(de, lk.order.data(), lk.offset.data(), V, d, embed->g, s);
  }

  // Main layers, last first: dbuf[(l + 1) % 2] -> dbuf[l % 2].
  for (int64_t l = L - 1; l >= 0; --l) {
    layers[l]->backward_input(ctx, dbuf[(l + 1) % 2].data(), dbuf[l % 2].data(), alpha, scratch);
    layers[l]->backward_weight(ctx, scratch);
  }
  embedding_backward(dbuf[0].data(), lookup[0].order.data(), lookup[0].offset.data(), V, d, embed->g, s);
  ctx.stream.synchronize();
}

void Model::backward() { impl_->backward(); }

void Model::zero_grad() {
  Impl& m = *impl_;
  fill_zero(m.slab.grads(), m.slab.size(), m.ctx.s());
  m.ctx.stream.synchronize();
}

void Model::set_optimizer(const AdamWConfig& config) { impl_->adamw = config; }
int64_t Model::optimizer_steps() const { return impl_->steps; }

void Model::adamw_step(double lr) {
  Impl& m = *impl_;
  const auto s = m.ctx.s();
  const int64_t n = m.slab.size(), nd = m.slab.decay_size();
  if (m.m.bytes() == 0) {
    m.m = cuda::DeviceBuffer(n * sizeof(uint16_t));
    m.v = cuda::DeviceBuffer(n * sizeof(uint16_t));
    SY_CUDA_CHECK(cudaMemsetAsync(m.m.data(), 0, n * sizeof(uint16_t), s), "gpu model: AdamW moments");
    SY_CUDA_CHECK(cudaMemsetAsync(m.v.data(), 0, n * sizeof(uint16_t), s), "gpu model: AdamW moments");
  }
  ++m.steps;
  const AdamWStep st = adamw_step_constants(m.adamw, m.steps, lr);
  float* w = m.slab.values();
  const float* g = m.slab.grads();
  uint16_t* mm = m.m.as<uint16_t>();
  uint16_t* vv = m.v.as<uint16_t>();
  adamw_update(w, g, mm, vv, nd, st, true, s);
  adamw_update(w + nd, g + nd, mm + nd, vv + nd, n - nd, st, false, s);
  m.bf16_stale = true;
  m.ctx.stream.synchronize();
}

std::vector<int64_t> Model::moe_layer_indices() const {
  std::vector<int64_t> out;
  for (int64_t l = 0; l < static_cast<int64_t>(impl_->layers.size()); ++l)
    if (impl_->layers[l]->moe()) out.push_back(l);
  return out;
}

const std::vector<double>& Model::expert_counts(int64_t layer) const {
  return impl_->moe_at(layer)->expert_counts();
}

std::vector<float> Model::expert_bias(int64_t layer) const { return impl_->moe_at(layer)->bias(); }

void Model::update_expert_biases(double rate) {
  Impl& m = *impl_;
  for (int64_t l : moe_layer_indices()) {
    MoeLayer* moe = m.moe_at(l);
    update_expert_bias(moe->bias().data(), moe->expert_counts().data(), m.config.n_routed_experts, rate);
    moe->upload_bias(m.ctx);
  }
}

}  // namespace switchyard::trainer::gpu
