// Staged execution of the model (the pieces a pipeline stage runs) against the whole-model
// forward/backward on nano in FP64: one Model running every piece in order must give
// bitwise the same losses and gradients; two Models each holding half of the layers (as two
// pipeline ranks) must give the same losses and, summed, the same gradients (only the
// embedding, used by both halves, is summed in another order).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "model_test_util.h"
#include "switchyard/common/error.h"
#include "switchyard/trainer/model.h"

namespace switchyard::trainer {
namespace {

constexpr int64_t kBatch = 2, kSeq = 8;

ModelConfig nano() { return model_config_preset("nano"); }

class ModelStagedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = nano();
    L_ = config_.num_hidden_layers;
    D_ = config_.num_nextn_predict_layers;
    N_ = kBatch * kSeq;
    d_ = config_.hidden_size;
    tokens_ = testing::random_tokens(config_, kBatch, kSeq, 11);
    whole_ = std::make_unique<Model<double>>(config_);
    testing::randomize_for_test(*whole_, 5);
    whole_->zero_grad();
    want_ = whole_->forward(tokens_.data(), kBatch, kSeq);
    whole_->backward();
  }
  std::unique_ptr<Model<double>> copy() {
    auto m = std::make_unique<Model<double>>(config_);
    m->load_weights(whole_->weights());
    m->zero_grad();
    return m;
  }

  ModelConfig config_;
  int64_t L_ = 0, D_ = 0, N_ = 0, d_ = 0;
  std::vector<int64_t> tokens_;
  std::unique_ptr<Model<double>> whole_;
  Losses want_;
};

TEST_F(ModelStagedTest, PiecesInOrderEqualWholeModelBitwise) {
  ASSERT_GE(L_, 2);
  auto m = copy();
  std::vector<double> h0(N_ * d_), h1(N_ * d_), hL(N_ * d_), dhL(N_ * d_), dh1(N_ * d_), dh0(N_ * d_);
  m->stage_begin(tokens_.data(), kBatch, kSeq);
  m->embed_forward(h0.data());
  m->layers_forward(0, 1, h0.data(), h1.data());
  m->layers_forward(1, L_, h1.data(), hL.data());
  Losses head = m->head_forward(hL.data());
  // Input gradients first (a zero-bubble order), weights after, in the interleaved order's
  // sequence of weight work, which the whole model ran.
  m->head_backward_input(dhL.data());
  m->layers_backward_input(1, L_, dhL.data(), dh1.data());
  m->layers_backward_input(0, 1, dh1.data(), dh0.data());
  m->head_backward_weight();
  m->layers_backward_weight(1, L_);
  m->layers_backward_weight(0, 1);
  m->embed_backward(dh0.data());

  EXPECT_EQ(head.main, want_.main);
  ASSERT_EQ(head.mtp.size(), want_.mtp.size());
  for (size_t k = 0; k < head.mtp.size(); ++k) EXPECT_EQ(head.mtp[k], want_.mtp[k]);
  const double balance = m->balance_loss(0, L_) + head.balance;
  EXPECT_EQ(balance, want_.balance);
  EXPECT_EQ(head.balance, m->balance_loss(L_, L_ + D_));
  double total = head.total + config_.aux_loss_alpha * m->balance_loss(0, L_);
  EXPECT_NEAR(total, want_.total, 1e-15 * std::abs(want_.total));
  const TensorMap got = m->gradients(), ref = whole_->gradients();
  int with_gradient = 0;
  for (const auto& [name, t] : ref) {
    const std::vector<double> a = got.at(name).to_vector<double>(), b = t.to_vector<double>();
    double nz = 0;
    for (double x : b) nz += std::abs(x);
    with_gradient += nz > 0;
    EXPECT_EQ(a, b) << name;
  }
  // Every tensor but the experts no token of this batch chose has a gradient.
  EXPECT_GE(with_gradient, static_cast<int>(ref.size()) * 9 / 10);
  for (int64_t l : whole_->moe_layer_indices()) EXPECT_EQ(m->expert_counts(l), whole_->expert_counts(l)) << l;
}

TEST_F(ModelStagedTest, TwoStageCopiesSumToWholeModelGradients) {
  // "Rank 0": embedding and layer 0; "rank 1": layers 1..L-1, head and MTP (which also
  // reads the embedding, so both copies hold an embedding gradient).
  auto first = copy(), last = copy();
  std::vector<double> h0(N_ * d_), h1(N_ * d_), hL(N_ * d_), dhL(N_ * d_), dh1(N_ * d_), dh0(N_ * d_);
  first->stage_begin(tokens_.data(), kBatch, kSeq);
  last->stage_begin(tokens_.data(), kBatch, kSeq);
  first->embed_forward(h0.data());
  first->layers_forward(0, 1, h0.data(), h1.data());
  last->layers_forward(1, L_, h1.data(), hL.data());
  Losses head = last->head_forward(hL.data());
  last->head_backward_input(dhL.data());
  last->head_backward_weight();
  last->layers_backward_input(1, L_, dhL.data(), dh1.data());
  last->layers_backward_weight(1, L_);
  // dh_in = nullptr keeps the input gradient inside; embed_backward(nullptr) reads it there
  // (what the first stage does: nothing is sent back from stage 0).
  first->layers_backward_input(0, 1, dh1.data(), nullptr);
  first->layers_backward_weight(0, 1);
  first->embed_backward(nullptr);
  EXPECT_EQ(head.main, want_.main);
  EXPECT_EQ(first->balance_loss(0, 1) + last->balance_loss(1, L_) + head.balance, want_.balance);
  const TensorMap a = first->gradients(), b = last->gradients(), ref = whole_->gradients();
  for (const auto& [name, t] : ref) {
    const std::vector<double> ga = a.at(name).to_vector<double>(), gb = b.at(name).to_vector<double>(),
                              want = t.to_vector<double>();
    double d2 = 0, r2 = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      d2 += std::pow(ga[i] + gb[i] - want[i], 2);
      r2 += want[i] * want[i];
    }
    if (r2 == 0)
      EXPECT_EQ(d2, 0) << name;  // an expert no token chose
    else
      EXPECT_LE(std::sqrt(d2 / r2), 1e-13) << name;
  }
}

TEST_F(ModelStagedTest, RejectsBadLayerRangesAndPiecesBeforeBegin) {
  Model<double> m(config_);
  std::vector<double> h(N_ * d_);
  EXPECT_THROW(m.layers_forward(0, 1, h.data(), h.data()), InvalidArgument);  // no stage_begin
  m.stage_begin(tokens_.data(), kBatch, kSeq);
  EXPECT_THROW(m.layers_forward(1, 0, h.data(), h.data()), InvalidArgument);
  EXPECT_THROW(m.layers_forward(0, L_ + 1, h.data(), h.data()), InvalidArgument);
  EXPECT_THROW(m.layers_backward_weight(-1, 1), InvalidArgument);
}

}  // namespace
}  // namespace switchyard::trainer
