// DualPipe and DualPipeV: a C++ re-statement of the step loops of DeepSeek's reference
// (deepseek-ai/DualPipe 3da1bbe, dualpipe.py and dualpipev.py), emitting actions instead of
// running modules. The reference's P2P calls queue operations that are issued as one batch
// right before the next compute chunk; here that batch is the run of SEND/RECV actions emitted
// before the chunk. W chunks are queued FIFO when a backward runs with the input/weight split
// ("zero bubble") enabled and popped by the weight steps, as WeightGradStore does.
//
// Both schedules have two phases per rank. DualPipe (N ranks, N stages, two directions):
// phase 0 is stage r for micro-batches 0..M/2-1 entering at rank 0, phase 1 is stage N-1-r for
// micro-batches M/2..M-1 entering at rank N-1; ranks in the second half swap the meaning of
// the phase arguments (the reference's `phase ^= is_in_second_half`). DualPipeV (N ranks, 2N
// stages, one V path): phase 0 is stage r, phase 1 is stage 2N-1-r, for every micro-batch;
// the last rank hands phase-0 outputs to phase 1 locally.
#include <deque>

#include "generators_internal.h"
#include "switchyard/common/error.h"

namespace switchyard::pipeline::detail {

namespace {

class DualPipeBuilder {
 public:
  DualPipeBuilder(bool v_shape, int num_ranks, int num_microbatches, int rank)
      : v_(v_shape), n_(num_ranks), m_(num_microbatches), r_(rank) {
    first_ = r_ == 0;
    last_ = r_ == n_ - 1;
    second_half_ = !v_ && r_ >= n_ / 2;
    // DualPipe: the two middle ranks; DualPipeV: the last rank (the turn of the V).
    special_ = v_ ? last_ : (r_ == n_ / 2 - 1 || r_ == n_ / 2);
  }

  std::vector<Action> build() {
    const int P = v_ ? n_ : n_ / 2;                       // ranks per direction
    const int h = v_ ? r_ : std::min(r_, n_ - 1 - r_);    // position along the direction
    const int C = v_ ? m_ : m_ / 2;                       // micro-batches per phase

    // Step 1: nF0
    for (int i = 0; i < 2 * (P - h - 1); ++i) forward_chunk(0);
    // Step 2: nF0F1
    const int step_2 = h + 1;
    recv_forward(0);
    for (int i = 0; i < step_2; ++i) {
      forward_chunk(0, /*recv=*/false, /*send=*/special_);
      recv_forward(0);
      forward_chunk(1, true, !special_ || i < step_2 - 1);
      if (!special_) send_forward(0);
    }
    // Step 3: nB1W1F1 (input/weight split)
    for (int i = 0; i < P - h - 1; ++i) {
      backward_chunk(1, /*zb=*/true);
      recv_forward(1);
      weight_chunk();
      forward_chunk(1, false, true);
    }
    // Step 4 (main step): nF0B1F1B0
    const int step_4 = C - 2 * P + h + 1;
    for (int i = 0; i < step_4; ++i) {
      if (i == 0) {
        if (special_) {
          // The reference does not overlap this first pair "to further reduce bubble size".
          forward_chunk(0, false, false);
          send_forward(1);
          backward_chunk(1, false, true, false);
          send_forward(0);
          send_backward(1);
        } else {
          forward_backward_chunk(0, 1, /*recv0=*/false);
        }
      } else {
        forward_backward_chunk(0, 1, true);
      }
      forward_backward_chunk(1, 0, true);
    }
    // Step 5: nB1F1B0
    for (int i = 0; i < P - h - 1; ++i) {
      backward_chunk(1, false);
      forward_backward_chunk(1, 0, true);
    }
    // Step 6: nB1B0; the split turns on half-way, before B1 when h is odd, after it when even.
    const int step_6 = h + 1;
    bool zb = false;
    for (int i = 0; i < step_6; ++i) {
      if (i == step_6 / 2 && h % 2 == 1) zb = true;
      backward_chunk(1, zb);
      if (i == step_6 / 2 && h % 2 == 0) zb = true;
      backward_chunk(0, zb);
    }
    // Step 7: nWB0
    for (int i = 0; i < P - h - 1; ++i) {
      weight_chunk();
      backward_chunk(0, true);
    }
    // Step 8: nW
    for (int i = 0; i < h + 1; ++i) weight_chunk();
    SY_CHECK(w_queue_.empty());
    commit();
    return std::move(out_);
  }

 private:
  // Phase as seen by the module index (the reference xors it on second-half ranks).
  int phase(int p) const { return p ^ (second_half_ ? 1 : 0); }
  int stage(int q) const {
    if (q == 0) return r_;
    return v_ ? 2 * n_ - 1 - r_ : n_ - 1 - r_;
  }
  int microbatch(int q, int chunk) const { return (!v_ && q == 1) ? m_ / 2 + chunk : chunk; }

  // Both schedules: the first stage has no activation to receive; DualPipe's phase 1 starts at
  // the last rank, and DualPipeV's phase 1 on the last rank gets its input locally.
  bool skip_recv_forward(int q) const { return (first_ && q == 0) || (last_ && q == 1); }
  bool skip_send_forward(int q) const { return (first_ && q == 1) || (last_ && q == 0); }
  bool skip_recv_backward(int q) const { return (first_ && q == 1) || (last_ && q == 0); }
  bool skip_send_backward(int q) const { return (first_ && q == 0) || (last_ && q == 1); }
  int forward_peer(int q) const { return q == 0 ? r_ + 1 : r_ - 1; }  // where activations go

  void recv_forward(int p) {
    const int q = phase(p);
    if (skip_recv_forward(q)) return;
    pending_.push_back(make_p2p(OpKind::kRecvActivation, stage(q) - 1, microbatch(q, recv_f_[q]++),
                                q == 0 ? r_ - 1 : r_ + 1));
  }
  void send_forward(int p) {
    const int q = phase(p);
    if (skip_send_forward(q)) return;
    pending_.push_back(make_p2p(OpKind::kSendActivation, stage(q), microbatch(q, send_f_[q]++), forward_peer(q)));
  }
  void recv_backward(int p) {
    const int q = phase(p);
    if (skip_recv_backward(q)) return;
    pending_.push_back(make_p2p(OpKind::kRecvGrad, stage(q) + 1, microbatch(q, recv_b_[q]++), forward_peer(q)));
  }
  void send_backward(int p) {
    const int q = phase(p);
    if (skip_send_backward(q)) return;
    pending_.push_back(make_p2p(OpKind::kSendGrad, stage(q), microbatch(q, send_b_[q]++),
                                q == 0 ? r_ - 1 : r_ + 1));
  }
  void commit() {
    out_.insert(out_.end(), pending_.begin(), pending_.end());
    pending_.clear();
  }

  void forward_chunk(int p, bool recv = true, bool send = true) {
    if (recv) recv_forward(p);
    commit();
    const int q = phase(p);
    out_.push_back(make_compute(OpKind::kForward, stage(q), microbatch(q, f_[q]++)));
    if (send) send_forward(p);
  }
  void backward_chunk(int p, bool zb, bool recv = true, bool send = true) {
    if (recv) recv_backward(p);
    commit();
    const int q = phase(p);
    const int st = stage(q), mb = microbatch(q, b_[q]++);
    if (zb) {
      out_.push_back(make_compute(OpKind::kBackwardInput, st, mb));
      w_queue_.push_back({st, mb});
    } else {
      out_.push_back(make_compute(OpKind::kBackward, st, mb));
    }
    if (send) send_backward(p);
  }
  void forward_backward_chunk(int p0, int p1, bool recv0) {
    if (recv0) recv_forward(p0);
    recv_backward(p1);
    commit();
    const int q0 = phase(p0), q1 = phase(p1);
    const int fm = microbatch(q0, f_[q0]++);
    const int bm = microbatch(q1, b_[q1]++);
    out_.push_back(make_fb(stage(q0), fm, stage(q1), bm));
    send_forward(p0);
    send_backward(p1);
  }
  void weight_chunk() {
    commit();
    SY_CHECK(!w_queue_.empty());
    auto [st, mb] = w_queue_.front();
    w_queue_.pop_front();
    out_.push_back(make_compute(OpKind::kBackwardWeight, st, mb));
  }

  bool v_;
  int n_, m_, r_;
  bool first_ = false, last_ = false, second_half_ = false, special_ = false;
  int f_[2] = {0, 0}, b_[2] = {0, 0};
  int send_f_[2] = {0, 0}, send_b_[2] = {0, 0}, recv_f_[2] = {0, 0}, recv_b_[2] = {0, 0};
  std::deque<std::pair<int, int>> w_queue_;
  std::vector<Action> pending_, out_;
};

}  // namespace

Schedule gen_dualpipe(int n, int m, bool reduce_mirrored) {
  Schedule s;
  s.name = "dualpipe";
  s.num_stages = n;
  s.num_microbatches = m;
  s.paths.resize(2);
  for (int st = 0; st < n; ++st) {
    s.paths[0].push_back(st);
    s.paths[1].push_back(n - 1 - st);
  }
  for (int mb = 0; mb < m; ++mb) s.microbatch_path.push_back(mb < m / 2 ? 0 : 1);
  for (int r = 0; r < n; ++r) {
    s.ranks.push_back(DualPipeBuilder(false, n, m, r).build());
    if (reduce_mirrored)
      for (int st : s.stages_on(r))
        if (n - 1 - st != st) s.ranks[r].push_back(make_reduce(st));
  }
  return s;
}

Schedule gen_dualpipev(int n, int m) {
  Schedule s;
  s.name = "dualpipev";
  s.num_stages = 2 * n;
  s.num_microbatches = m;
  s.paths.emplace_back();
  for (int st = 0; st < 2 * n; ++st) s.paths[0].push_back(st < n ? st : 2 * n - 1 - st);
  s.microbatch_path.assign(m, 0);
  for (int r = 0; r < n; ++r) s.ranks.push_back(DualPipeBuilder(true, n, m, r).build());
  return s;
}

}  // namespace switchyard::pipeline::detail
