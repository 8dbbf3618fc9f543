// Stage primitives: count exchange, row exchange, reduce-back (see row_exchange.h).
#include "row_exchange.h"

#include <sys/mman.h>

#include <algorithm>
#include <string>

#include "payload.h"
#include "row_window.h"
#include "switchyard/common/error.h"

namespace switchyard::dispatch::detail {

void RawBytes::resize(size_t n) {
  if (n > capacity_) {
    unmap();
    const size_t bytes = (n + 4095) & ~size_t(4095);
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) SY_THROW(IoError, "dispatch: cannot map " << bytes << " bytes of staging memory");
    data_ = static_cast<uint8_t*>(p);
    capacity_ = bytes;
  }
  size_ = n;
}

void RawBytes::unmap() {
  if (data_ != nullptr) munmap(data_, capacity_);
  data_ = nullptr;
  size_ = capacity_ = 0;
}

std::vector<int64_t> exchange_counts(PeerExchange& ex, const std::vector<int>& peers,
                                     const std::vector<int64_t>& send_counts, const StageFingerprint& fp, int tag,
                                     TrafficStats& stats) {
  const int R = ex.size(), me = ex.rank();
  constexpr int kWords = 4;
  std::vector<int64_t> out_msgs(peers.size() * kWords), in_msgs(peers.size() * kWords);
  std::vector<PeerSend> sends;
  std::vector<PeerRecv> recvs;
  for (size_t i = 0; i < peers.size(); ++i) {
    int64_t* m = out_msgs.data() + i * kWords;
    m[0] = send_counts[peers[i]];
    m[1] = fp.hidden;
    m[2] = fp.num_experts;
    m[3] = fp.row_bytes;
    sends.push_back({peers[i], m, kWords * sizeof(int64_t)});
    recvs.push_back({peers[i], in_msgs.data() + i * kWords, kWords * sizeof(int64_t)});
    stats.control_bytes += kWords * sizeof(int64_t);
  }
  ex.exchange(sends, recvs, tag);
  std::vector<int64_t> counts(R, 0);
  counts[me] = send_counts[me];
  for (size_t i = 0; i < peers.size(); ++i) {
    const int64_t* m = in_msgs.data() + i * kWords;
    if (m[1] != fp.hidden)
      SY_THROW(InvalidArgument, "dispatch: hidden size differs between ranks: rank " << me << " has " << fp.hidden
                                                                                     << ", rank " << peers[i]
                                                                                     << " has " << m[1]);
    if (m[2] != fp.num_experts)
      SY_THROW(InvalidArgument, "dispatch: num_experts differs between ranks: rank " << me << " has "
                                                                                     << fp.num_experts << ", rank "
                                                                                     << peers[i] << " has " << m[2]);
    if (m[3] != fp.row_bytes)
      SY_THROW(InvalidArgument, "dispatch: row size differs between ranks (dtype or top_k): rank "
                                    << me << " has " << fp.row_bytes << " bytes, rank " << peers[i] << " has "
                                    << m[3]);
    if (m[0] < 0) SY_THROW(InternalError, "dispatch: negative count " << m[0] << " from rank " << peers[i]);
    counts[peers[i]] = m[0];
  }
  return counts;
}

uint8_t* window_claim(RowWindow* win, int peer, int stage, uint32_t seq) { return win->claim(peer, stage, seq); }

void window_publish(RowWindow* win, int peer, int stage, uint32_t seq, int64_t rows, const StageFingerprint& fp) {
  win->publish(peer, stage, seq, rows, fp, fp.row_bytes);
}

bool window_reaches(RowWindow* win, int stage, int peer, size_t row_bytes) {
  return win != nullptr && win->reaches(peer) && win->fits(stage, row_bytes);
}

void release_window(RowWindow* win, Arrival& arrival) {
  for (int p : arrival.window_peers) win->release(p, arrival.window_stage, arrival.window_seq);
  arrival.window_peers.clear();
}

std::unique_ptr<PendingExchange> post_rows(PeerExchange& ex, size_t row_bytes,
                                           const std::vector<std::vector<int32_t>>& send,
                                           const std::vector<int>& msg_peers, int64_t max_rows_per_peer,
                                           size_t self_bytes, std::vector<RawBytes>& packed, Arrival& arrival,
                                           std::vector<uint8_t*>& region_of, int tag, TrafficStats& stats) {
  const int me = ex.rank();
  const auto& map = ex.rank_map();
  const size_t region = kRowHeaderBytes + static_cast<size_t>(max_rows_per_peer) * row_bytes;
  std::vector<PeerSend> sends;
  std::vector<PeerRecv> recvs;
  for (size_t i = 0; i < msg_peers.size(); ++i) {
    const int p = msg_peers[i];
    region_of[p] = arrival.buf.data() + self_bytes + i * region;
    recvs.push_back({p, region_of[p], region});
    sends.push_back({p, packed[p].data(), packed[p].size()});
    const int64_t payload = static_cast<int64_t>(send[p].size() * row_bytes);
    stats.control_bytes += kRowHeaderBytes;
    if (!map.same_node(me, p)) stats.wire_bytes += payload;
  }
  return ex.post(sends, recvs, tag);
}

void finish_rows(PeerExchange& ex, size_t row_bytes, const std::vector<std::vector<int32_t>>& send,
                 int64_t max_rows_per_peer, const StageFingerprint& fp, PendingExchange* pending,
                 const std::vector<uint8_t*>& region_of, Arrival& arrival, const std::vector<const uint8_t*>* self_src,
                 RowWindow* win, int stage, uint32_t seq) {
  const int R = ex.size(), me = ex.rank();
  pending->wait();
  arrival.counts.assign(R, 0);
  arrival.rows.clear();
  std::vector<char> by_window(R, 0);
  for (int p : arrival.window_peers) by_window[p] = 1;
  for (int p = 0; p < R; ++p) {
    if (p == me) {
      arrival.counts[p] = static_cast<int64_t>(send[me].size());
      for (int64_t i = 0; i < arrival.counts[p]; ++i)
        arrival.rows.push_back(self_src ? (*self_src)[send[me][i]] : arrival.buf.data() + i * row_bytes);
      continue;
    }
    if (by_window[p]) {
      int64_t rows = 0;
      const uint8_t* region = win->wait_rows(p, stage, seq, fp, max_rows_per_peer, &rows);
      arrival.counts[p] = rows;
      for (int64_t i = 0; i < rows; ++i) arrival.rows.push_back(region + i * row_bytes);
      continue;
    }
    if (region_of[p] == nullptr) continue;
    int64_t h[4];
    std::memcpy(h, region_of[p], sizeof(h));
    if (h[1] != fp.hidden)
      SY_THROW(InvalidArgument, "dispatch: hidden size differs between ranks: rank " << me << " has " << fp.hidden
                                                                                     << ", rank " << p << " has "
                                                                                     << h[1]);
    if (h[2] != fp.num_experts)
      SY_THROW(InvalidArgument, "dispatch: num_experts differs between ranks: rank " << me << " has "
                                                                                     << fp.num_experts << ", rank "
                                                                                     << p << " has " << h[2]);
    if (h[3] != fp.row_bytes)
      SY_THROW(InvalidArgument, "dispatch: row size differs between ranks (dtype or top_k): rank "
                                    << me << " has " << fp.row_bytes << " bytes, rank " << p << " has " << h[3]);
    if (h[0] < 0 || h[0] > max_rows_per_peer)
      SY_THROW(InvalidArgument, "dispatch: rank " << p << " sent " << h[0] << " rows, more than the "
                                                  << max_rows_per_peer << " this Buffer can hold per peer "
                                                  << "(max_tokens_per_rank differs between ranks?)");
    arrival.counts[p] = h[0];
    for (int64_t i = 0; i < h[0]; ++i) arrival.rows.push_back(region_of[p] + kRowHeaderBytes + i * row_bytes);
  }
}

std::vector<int64_t> block_offsets(const std::vector<int64_t>& counts) {
  std::vector<int64_t> off(counts.size() + 1, 0);
  for (size_t p = 0; p < counts.size(); ++p) off[p + 1] = off[p] + counts[p];
  return off;
}

ReduceBack::ReduceBack(PeerExchange& ex, const uint8_t* rows_back, comm::DataType dtype, int64_t width,
                       const std::vector<std::vector<int32_t>>& send, const std::vector<int64_t>& recv,
                       std::vector<RawBytes>& returned, int tag, TrafficStats& stats, RowWindow* win, int stage,
                       uint32_t seq)
    : ex_(ex), rows_back_(rows_back), dtype_(dtype), width_(width), send_(send), recv_(recv), returned_(returned),
      win_(win), stage_(stage), seq_(seq) {
  const int R = ex.size(), me = ex.rank();
  const auto& map = ex.rank_map();
  const size_t row_bytes = static_cast<size_t>(width) * payload_elem_bytes(dtype);
  const StageFingerprint fp{width, 0, static_cast<int64_t>(row_bytes)};
  returned.resize(R);
  window_rows_.assign(R, nullptr);
  std::vector<PeerSend> sends;
  std::vector<PeerRecv> recvs;
  int64_t offset = 0;
  for (int p = 0; p < R; ++p) {
    if (p != me) {
      const bool by_window = window_reaches(win, stage, p, row_bytes);
      if (recv[p] > 0) {
        if (by_window) {
          win->publish(p, stage, seq, recv[p], fp, static_cast<int64_t>(row_bytes));
        } else {
          sends.push_back({p, rows_back + offset * row_bytes, recv[p] * row_bytes});
        }
        if (!map.same_node(me, p)) stats.wire_bytes += static_cast<int64_t>(recv[p] * row_bytes);
      }
      if (!send[p].empty()) {
        if (by_window) {
          window_read_.push_back(p);
        } else {
          returned[p].resize(send[p].size() * row_bytes);
          recvs.push_back({p, returned[p].data(), returned[p].size()});
        }
      }
    }
    offset += recv[p];
  }
  pending_ = ex.post(sends, recvs, tag);
}

ReduceBack::~ReduceBack() {
  for (int p : window_read_)
    if (window_rows_[p] != nullptr) win_->release(p, stage_, seq_);
}

void ReduceBack::wait(int64_t num_out, PhaseTimer& timer, const char* stage) {
  const int R = ex_.size(), me = ex_.rank();
  const size_t row_bytes = static_cast<size_t>(width_) * payload_elem_bytes(dtype_);
  pending_->wait();
  const StageFingerprint fp{width_, 0, static_cast<int64_t>(row_bytes)};
  for (int p : window_read_) {
    int64_t rows = 0;
    window_rows_[p] = win_->wait_rows(p, stage_, seq_, fp, static_cast<int64_t>(send_[p].size()), &rows);
    if (rows != static_cast<int64_t>(send_[p].size()))
      SY_THROW(InternalError, "combine: rank " << p << " returned " << rows << " rows, expected " << send_[p].size());
  }
  if (timer.on()) timer.lap(std::string("exchange ") + stage);
  // Gather list: the returned rows of each output row, in peer order (a counting sort over
  // the send lists, which visits the peers in ascending order).
  first_.assign(num_out + 1, 0);
  for (int p = 0; p < R; ++p)
    for (int32_t d : send_[p]) {
      if (d < 0 || d >= num_out) SY_THROW(InternalError, "reduce_back: row " << d << " outside [0, " << num_out << ")");
      ++first_[d + 1];
    }
  for (int64_t d = 0; d < num_out; ++d) first_[d + 1] += first_[d];
  src_.resize(first_[num_out]);
  std::vector<int64_t> fill(first_.begin(), first_.end() - 1);
  const uint8_t* self_rows = rows_back_ + block_offsets(recv_)[me] * row_bytes;
  for (int p = 0; p < R; ++p) {
    const uint8_t* rows = p == me ? self_rows : window_rows_[p] ? window_rows_[p] : returned_[p].data();
    for (size_t i = 0; i < send_[p].size(); ++i) src_[fill[send_[p][i]]++] = rows + i * row_bytes;
  }
  acc_.resize(width_);
}

void ReduceBack::reduce(int64_t d0, int64_t d1, uint8_t* out, comm::DataType out_dtype, PhaseTimer& timer,
                        const char* stage) {
  const size_t out_row_bytes = static_cast<size_t>(width_) * payload_elem_bytes(out_dtype);
  for (int64_t d = d0; d < d1; ++d) {
    // FP32 output rows are summed in place (same operations as through the scratch row).
    uint8_t* dst = out + d * out_row_bytes;
    float* acc = out_dtype == comm::DataType::kFloat32 ? reinterpret_cast<float*>(dst) : acc_.data();
    // ((+0) + row 0) + row 1 + ...: the same bits as a zero fill then add_row per row, one pass.
    sum_rows(src_.data() + first_[d], nullptr, first_[d + 1] - first_[d], dtype_, width_, acc);
    if (acc == acc_.data()) store_row(acc, width_, out_dtype, dst);
  }
  if (timer.on()) timer.lap(std::string("reduce ") + stage);
}

}  // namespace switchyard::dispatch::detail
