// RowWindow (row_window.h): flags and regions of the normal-mode shared-memory row path.
#include "row_window.h"

#include <atomic>
#include <cstring>

#include "seq_flag.h"
#include "switchyard/common/error.h"

namespace switchyard::dispatch::detail {

struct RowWindow::Flag {
  uint32_t seq;
  uint32_t pad0;
  int64_t rows, hidden, experts, row_bytes;
  uint8_t pad[24];
};
static_assert(sizeof(RowWindow::Flag) == 64);

namespace {

size_t align_page(size_t v) { return (v + 4095) & ~size_t(4095); }

}  // namespace

size_t RowWindow::window_bytes(const PeerExchange& ex, const int64_t max_rows[kStages],
                               const size_t row_bytes[kStages]) {
  size_t bytes = 0;
  for (int s = 0; s < kStages; ++s)
    bytes += align_page(2 * ex.size() * sizeof(Flag)) +
             static_cast<size_t>(ex.rank_map().local_size(ex.rank())) * align_page(max_rows[s] * row_bytes[s]);
  return bytes;
}

std::unique_ptr<RowWindow> RowWindow::open(PeerExchange& ex, const int64_t max_rows[kStages],
                                           const size_t row_bytes[kStages]) {
  std::unique_ptr<PeerWindow> win = ex.open_window(window_bytes(ex, max_rows, row_bytes));
  if (!win) return nullptr;
  return std::unique_ptr<RowWindow>(new RowWindow(ex, std::move(win), max_rows, row_bytes));
}

RowWindow::RowWindow(PeerExchange& ex, std::unique_ptr<PeerWindow> win, const int64_t max_rows[kStages],
                     const size_t row_bytes[kStages])
    : ex_(ex), win_(std::move(win)), me_(ex.rank()), R_(ex.size()), timeout_(ex.timeout()) {
  const auto& map = ex.rank_map();
  size_t at = 0;
  for (int s = 0; s < kStages; ++s) {
    row_bytes_[s] = row_bytes[s];
    region_[s] = align_page(max_rows[s] * row_bytes[s]);
    stage_base_[s] = at;
    regions_at_[s] = at + align_page(2 * R_ * sizeof(Flag));
    at = regions_at_[s] + static_cast<size_t>(map.local_size(me_)) * region_[s];
  }
  for (auto& v : last_sent_) v.assign(R_, 0);
  base_.assign(R_, nullptr);
  for (int p = 0; p < R_; ++p) base_[p] = win_->at(p);
}

RowWindow::Flag* RowWindow::ready(int owner, int stage, int src) {
  return reinterpret_cast<Flag*>(base_[owner] + stage_base_[stage]) + src;
}

RowWindow::Flag* RowWindow::consumed(int owner, int stage, int src) {
  return reinterpret_cast<Flag*>(base_[owner] + stage_base_[stage]) + R_ + src;
}

void RowWindow::wait_seq(Flag* f, uint32_t seq, int peer, const char* what) {
  detail::wait_seq(&f->seq, seq, *win_, peer, me_, timeout_, what, ", shared-memory rows");
}

uint8_t* RowWindow::claim(int peer, int stage, uint32_t seq) {
  wait_seq(consumed(peer, stage, me_), last_sent_[stage][peer], peer, "dispatch (waiting for the peer to free its rows)");
  last_sent_[stage][peer] = seq;
  return base_[peer] + regions_at_[stage] + static_cast<size_t>(ex_.rank_map().local_rank(me_)) * region_[stage];
}

void RowWindow::publish(int peer, int stage, uint32_t seq, int64_t rows, const StageFingerprint& fp,
                        int64_t row_bytes) {
  Flag* f = ready(peer, stage, me_);
  f->rows = rows;
  f->hidden = fp.hidden;
  f->experts = fp.num_experts;
  f->row_bytes = row_bytes;
  detail::post_seq(&f->seq, seq);
}

const uint8_t* RowWindow::wait_rows(int peer, int stage, uint32_t seq, const StageFingerprint& fp, int64_t max_rows,
                                    int64_t* rows) {
  Flag* f = ready(me_, stage, peer);
  wait_seq(f, seq, peer, stage == 2 ? "combine" : "dispatch");
  if (f->hidden != fp.hidden)
    SY_THROW(InvalidArgument, "dispatch: hidden size differs between ranks: rank " << me_ << " has " << fp.hidden
                                                                                   << ", rank " << peer << " has "
                                                                                   << f->hidden);
  if (f->experts != fp.num_experts)
    SY_THROW(InvalidArgument, "dispatch: num_experts differs between ranks: rank " << me_ << " has "
                                                                                   << fp.num_experts << ", rank "
                                                                                   << peer << " has " << f->experts);
  if (f->row_bytes != fp.row_bytes)
    SY_THROW(InvalidArgument, "dispatch: row size differs between ranks (dtype or top_k): rank "
                                  << me_ << " has " << fp.row_bytes << " bytes, rank " << peer << " has "
                                  << f->row_bytes);
  if (f->rows < 0 || f->rows > max_rows)
    SY_THROW(InvalidArgument, "dispatch: rank " << peer << " sent " << f->rows << " rows, more than the " << max_rows
                                                << " this Buffer can hold per peer "
                                                << "(max_tokens_per_rank differs between ranks?)");
  *rows = f->rows;
  return base_[me_] + regions_at_[stage] + static_cast<size_t>(ex_.rank_map().local_rank(peer)) * region_[stage];
}

void RowWindow::release(int peer, int stage, uint32_t seq) {
  Flag* f = consumed(me_, stage, peer);
  detail::post_seq(&f->seq, seq);
}

}  // namespace switchyard::dispatch::detail
