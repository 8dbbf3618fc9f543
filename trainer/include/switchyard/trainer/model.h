// The DeepSeek-V3 model on CPU: embedding, L decoder blocks (MLA + dense/MoE FFN), final
// norm, untied head, and D multi-token-prediction modules; forward, loss and a backward
// split per layer into input (B) and weight (W) gradients.
//
// Conventions (trainer/configs/README.md): the batch is tokens [B, T + D + 1] int64; the
// main model reads tokens[:, 0:T] and predicts tokens[:, 1:T+1]; MTP module k reads the
// previous hidden state (the main stack output before the final norm for k = 1) and
// emb(tokens[:, k:k+T]), predicts tokens[:, k+1:k+T+1]; total loss = main +
// (lambda/D) sum_k mtp_k + alpha * sum over MoE layers of the sequence-wise balance loss.
//
// T is float or double (FP64 for gradient checks). Parameter names are the HF checkpoint
// names; e_score_correction_bias is an FP32 buffer, not a parameter (no gradient).
// Threading: GEMMs use OpenBLAS threads; a Model is used by one thread at a time.
// Ownership: the model owns its parameters and activations; forward overwrites the state
// of the previous step.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/trainer/config.h"
#include "switchyard/trainer/parameters.h"
#include "switchyard/trainer/router.h"
#include "switchyard/trainer/safetensors.h"

namespace switchyard::trainer {

template <class T>
class DecoderLayer;
template <class T>
class MoeBlock;
template <class T>
class ExpertProvider;
namespace kernels {
struct RopeTable;
}

struct ModelOptions {
  bool recompute_norms = false;    // free RMSNorm outputs after forward; recompute in backward
  bool recompute_up_proj = false;  // same for the MLA up-projections q_b and kv_b
};

// Order of the split backward: kInterleaved runs each layer's W right after its B;
// kInputFirst runs every B (last layer to first), then every W (as a zero-bubble schedule
// may), which must give the same gradients.
enum class BackwardOrder { kInterleaved, kInputFirst };

struct Losses {
  double main = 0;
  std::vector<double> mtp;  // [D]
  double balance = 0;       // sum over MoE layers (MTP included), without alpha
  double total = 0;
};

template <class T>
class Model {
 public:
  explicit Model(const ModelConfig& config, ModelOptions options = {});
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  ParameterSet<T>& parameters() { return params_; }
  const ParameterSet<T>& parameters() const { return params_; }

  // Matrices ~ N(0, std^2), norm weights 1, biases 0; deterministic in seed.
  void init_random(uint64_t seed, double std);
  // Loads every parameter and bias by HF name (F64/F32/BF16); throws InvalidArgument naming
  // a missing tensor or a shape mismatch. Extra tensors are ignored.
  void load_weights(const TensorMap& weights);
  // Parameters in T's dtype and biases in F32, by HF name.
  TensorMap weights() const;
  // Gradients as "grad.<name>" in T's dtype.
  TensorMap gradients() const;

  // tokens: [batch, seq_len + D + 1] int64. Returns the losses; keeps activations.
  Losses forward(const int64_t* tokens, int64_t batch, int64_t seq_len);
  // Accumulates d(total loss)/d(parameter) into the gradients (call zero_grad first).
  // Once per forward; throws InvalidArgument on a second call.
  void backward(BackwardOrder order = BackwardOrder::kInterleaved);
  void zero_grad() { params_.zero_grad(); }

  // ---- Staged execution (pipeline parallelism) ----
  // The pieces Model::forward/backward are made of, for a pipeline stage that holds a
  // contiguous range of decoder layers of one micro-batch. forward() is exactly
  //   stage_begin; embed_forward; layers_forward(0, L); head_forward
  // and backward(order) exactly
  //   head_backward_input; layers_backward_input(0, L); [W pieces]; embed_backward
  // with the W pieces (head_backward_weight, layers_backward_weight) run right after their
  // input halves (kInterleaved) or after all of them (kInputFirst).
  // Activations are copied into model-owned buffers, so the caller's pointers need not
  // outlive the call. Layer ranges are main decoder layers, 0 <= first <= last <= L; the
  // head piece owns the final norm, the head and the D MTP modules (decoder layers L..L+D-1),
  // which read the embedding too (V3 places them on the embedding's rank).
  // h_*, dh_*: [batch * seq_len, hidden_size] in T.
  //
  // Sets the micro-batch (tokens: [batch, seq_len + D + 1] int64) on every stage.
  void stage_begin(const int64_t* tokens, int64_t batch, int64_t seq_len);
  void embed_forward(T* h_out);
  void layers_forward(int64_t first, int64_t last, const T* h_in, T* h_out);
  // Main and MTP losses of the micro-batch (balance = the MTP layers' balance loss, total
  // = main + lambda/D sum mtp + alpha * balance).
  Losses head_forward(const T* h_in);
  // dh_in: gradient of the head input (the last main layer's output). W part deferred.
  void head_backward_input(T* dh_in);
  void head_backward_weight();
  // dh_out: gradient of layer last-1's output; dh_in: of layer first's input (may be null).
  void layers_backward_input(int64_t first, int64_t last, const T* dh_out, T* dh_in);
  void layers_backward_weight(int64_t first, int64_t last);
  // Adds the embedding gradient of the main stack's lookup (dh: gradient of embed_forward's
  // output; nullptr: the one layers_backward_input(0, ..) left inside, its dh_in may be null).
  void embed_backward(const T* dh);
  // Sum of the balance losses of the MoE layers in [first, last) (absolute indices, MTP
  // layers are L..L+D-1), without alpha.
  double balance_loss(int64_t first, int64_t last) const;

  const Losses& losses() const { return losses_; }
  const std::vector<T>& logits() const { return logits_; }             // [B*T, V]
  const std::vector<T>& mtp_logits(int64_t k) const;                   // [B*T, V], k = 1..D
  // Decoder layers (main then MTP), and the MoE ones by absolute layer index.
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  std::vector<int64_t> moe_layer_indices() const;
  const std::vector<double>& expert_counts(int64_t layer) const;       // [E] last forward
  std::vector<float>& expert_bias(int64_t layer);                      // [E]
  LoadStats expert_load(int64_t layer) const;
  // Smallest routing decision margin over all MoE layers in the last forward.
  double min_routing_margin() const;
  // b += rate * sign(mean(counts) - counts) per MoE layer, from the last forward's counts.
  void update_expert_biases(double rate);
  // Replaces the routed experts of MoE layer `layer` (default: LocalExperts over this
  // model's parameters), e.g. with a provider that dispatches rows to expert ranks.
  void set_expert_provider(int64_t layer, std::unique_ptr<ExpertProvider<T>> provider);

 private:
  MoeBlock<T>* moe_at(int64_t layer) const;
  using WorkList = std::vector<std::function<void()>>;
  // Backward pieces on hidden_/dhidden_; W work runs at once when deferred is null,
  // otherwise it is appended to *deferred.
  void run_head_forward();
  void run_head_backward(WorkList* deferred);
  void run_layers_backward(int64_t first, int64_t last, WorkList* deferred);
  void run_embed_backward();
  void check_range(int64_t first, int64_t last) const;
  void ensure_grad_buffers();

  ModelConfig config_;
  ModelOptions options_;
  ParameterSet<T> params_;
  Parameter<T>*embed_, *norm_, *head_;
  struct MtpHead {
    Parameter<T>*enorm, *hnorm, *eh_proj, *norm;
  };
  std::vector<MtpHead> mtp_;
  std::vector<std::unique_ptr<DecoderLayer<T>>> layers_;  // [L + D]

  // step state
  std::unique_ptr<kernels::RopeTable> rope_;  // cos/sin for positions 0..T-1
  int64_t B_ = 0, T_ = 0, N_ = 0;
  std::vector<int64_t> ids_, targets_;  // [D + 1][N] each, module 0 = main
  std::vector<std::vector<T>> hidden_;  // [L + 1][N, d]: embedding, outputs of main layers
  std::vector<T> hn_, logits_, dlogits_;  // dlogits_ holds the softmax until backward
  bool grads_taken_ = false;
  std::vector<std::vector<T>> mtp_emb_, mtp_cat_, mtp_x_, mtp_h_, mtp_hn_, mtp_logits_, mtp_dlogits_;
  std::vector<std::vector<T>> dhidden_;  // [L + 1]
  std::vector<std::vector<T>> mtp_dh_, mtp_dx_, mtp_dcat_, mtp_dhn_, mtp_de_, mtp_dhh_;
  std::vector<T> dhn_, demb_;  // demb_: [N, d] scratch
  Losses losses_;
  WorkList head_w_;  // deferred W work of head_backward_input
};

}  // namespace switchyard::trainer
