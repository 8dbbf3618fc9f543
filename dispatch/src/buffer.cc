// Buffer: dispatch, combine and their backward passes on the CPU backend.
//
// Row layout of a dispatch message (bytes, packed, no padding):
//   [H * elem payload][S * 4 FP32 scales, FP8 only][metadata, first dispatch only:
//    int32 src_rank, int32 src_token, int32 topk_idx[K] (global ids, -1 masked),
//    float topk_weights[K]]
// A cached dispatch sends payload (+ scales) only: the handle already knows the routing.
// Each stage message starts with a 32-byte header carrying the row count (row_exchange.h).
// Flat path: one stage (token -> every rank holding one of its experts).
// Two-hop path: stage A token -> the rail peer of every destination node (the only stage
// that crosses the network), stage B forwarder -> the ranks of its node holding the token's
// experts. Combine runs the stages backwards with reduce_back (see row_exchange.h).
#include "switchyard/dispatch/buffer.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <cstring>

#include "handle_plan.h"
#include "low_latency_state.h"
#include "payload.h"
#include "row_exchange.h"
#include "switchyard/common/error.h"
#include "switchyard/common/log.h"
#include "switchyard/common/param.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch {

namespace {

constexpr int kTagHello = 1, kTagWindowVote = 2, kTagRowsA = 3, kTagRowsB = 5, kTagBackB = 6, kTagBackA = 7;
constexpr int kShmRowsMaxTopK = 16;
constexpr int kWindowBack = 2;  // RowWindow stage of combine's rows back

const Param<int64_t> kShmRows("DISPATCH_SHM_ROWS", 1, "bool",
                              "normal-mode dispatch rows between ranks of one node through a shared-memory "
                              "window (1) or messages only (0); used only when every rank of the group has 1");

struct RowFormat {
  size_t payload = 0, scales = 0, meta = 0, total = 0;
};

RowFormat row_format(comm::DataType dtype, int64_t hidden, int top_k, bool with_meta) {
  RowFormat f;
  f.payload = static_cast<size_t>(hidden) * payload_elem_bytes(dtype);
  f.scales = dtype == comm::DataType::kFloat8E4M3 ? static_cast<size_t>(fp8_num_tiles(hidden)) * sizeof(float) : 0;
  f.meta = with_meta ? 2 * sizeof(int32_t) + static_cast<size_t>(top_k) * (sizeof(int32_t) + sizeof(float)) : 0;
  f.total = f.payload + f.scales + f.meta;
  return f;
}

std::vector<int> peers_except(const std::vector<int>& ranks, int me) {
  std::vector<int> out;
  for (int r : ranks)
    if (r != me) out.push_back(r);
  return out;
}

std::vector<int> all_ranks(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

int32_t read_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Two-hop stage B plan on a forwarder: each stage-A row goes to every rank of this node that
// holds one of its experts, once per rank, in arrival order.
void plan_forwarding(Handle::Plan& plan, const detail::Arrival& arrival, const RowFormat& fmt,
                     const topology::RankMap& map, int me, int L) {
  const int R = plan.num_ranks, K = plan.top_k;
  plan.b_send.assign(R, {});
  const int64_t rows_a = arrival.size();
  const int my_node = map.node_of(me);
  std::vector<int64_t> stamp(R, -1);
  for (int64_t j = 0; j < rows_a; ++j) {
    const uint8_t* idx = arrival.row(j) + fmt.payload + fmt.scales + 2 * sizeof(int32_t);
    for (int k = 0; k < K; ++k) {
      const int32_t e = read_i32(idx + k * sizeof(int32_t));
      if (e < 0) continue;
      const int q = e / L;
      if (map.node_of(q) != my_node || stamp[q] == j) continue;
      stamp[q] = j;
      plan.b_send[q].push_back(static_cast<int32_t>(j));
    }
  }
}

// Receive side of a first dispatch: canonical order, local top-k ids and weights, and the
// expert-major layout, from the metadata of the final arrival rows.
void plan_receive_side(Handle::Plan& plan, const detail::Arrival& arrival, const RowFormat& fmt, int me, int L,
                       int64_t alignment) {
  const int R = plan.num_ranks, K = plan.top_k;
  const int64_t M = arrival.size();
  // Canonical order: by source rank, then source token (rows of one source arrive in
  // token order through exactly one forwarder, so a stable placement by source suffices).
  plan.num_recv = M;
  std::vector<int64_t> per_src(R + 1, 0);
  for (int64_t a = 0; a < M; ++a) ++per_src[read_i32(arrival.row(a) + fmt.payload + fmt.scales) + 1];
  for (int r = 0; r < R; ++r) per_src[r + 1] += per_src[r];
  plan.arrival_to_canonical.resize(M);
  plan.canonical_to_arrival.resize(M);
  for (int64_t a = 0; a < M; ++a) {
    const int src = read_i32(arrival.row(a) + fmt.payload + fmt.scales);
    plan.arrival_to_canonical[a] = static_cast<int32_t>(per_src[src]++);
    plan.canonical_to_arrival[plan.arrival_to_canonical[a]] = static_cast<int32_t>(a);
  }
  plan.recv_topk_idx.assign(M * K, -1);
  plan.recv_topk_weights.assign(M * K, 0.0f);
  plan.recv_src_rank.resize(M);
  plan.recv_src_token.resize(M);
  for (int64_t a = 0; a < M; ++a) {
    const int64_t c = plan.arrival_to_canonical[a];
    const uint8_t* m = arrival.row(a) + fmt.payload + fmt.scales;
    plan.recv_src_rank[c] = read_i32(m);
    plan.recv_src_token[c] = read_i32(m + sizeof(int32_t));
    for (int k = 0; k < K; ++k) {
      const int32_t e = read_i32(m + (2 + k) * sizeof(int32_t));
      plan.recv_topk_idx[c * K + k] = (e >= 0 && e / L == me) ? e - static_cast<int64_t>(me) * L : -1;
      std::memcpy(&plan.recv_topk_weights[c * K + k], m + (2 + K + k) * sizeof(int32_t), sizeof(float));
    }
  }
  // Expert-major layout.
  std::vector<int64_t> count(L, 0);
  for (int64_t i = 0; i < M * K; ++i)
    if (plan.recv_topk_idx[i] >= 0) ++count[plan.recv_topk_idx[i]];
  plan.expert_offsets.assign(L + 1, 0);
  for (int j = 0; j < L; ++j) {
    const int64_t padded = (count[j] + alignment - 1) / alignment * alignment;
    plan.expert_offsets[j + 1] = plan.expert_offsets[j] + padded;
  }
  const int64_t P = plan.expert_offsets[L];
  plan.row_token.assign(P, -1);
  plan.row_slot.assign(P, -1);
  plan.slot_row.assign(M * K, -1);
  std::vector<int64_t> cursor(plan.expert_offsets.begin(), plan.expert_offsets.end() - 1);
  for (int64_t i = 0; i < M; ++i)
    for (int k = 0; k < K; ++k) {
      const int64_t j = plan.recv_topk_idx[i * K + k];
      if (j < 0) continue;
      const int64_t row = cursor[j]++;
      plan.row_token[row] = static_cast<int32_t>(i);
      plan.row_slot[row] = k;
      plan.slot_row[i * K + k] = row;
    }
}

}  // namespace

size_t payload_elem_bytes(comm::DataType t) {
  switch (t) {
    case comm::DataType::kBfloat16:
      return 2;
    case comm::DataType::kFloat32:
      return 4;
    case comm::DataType::kFloat8E4M3:
      return 1;
    default:
      SY_THROW(InvalidArgument, "dispatch: unsupported payload dtype " << static_cast<int>(t)
                                                                       << " (use bfloat16, float32 or float8_e4m3)");
  }
}

int64_t Handle::num_tokens() const { return plan_ ? plan_->num_tokens : 0; }
int64_t Handle::num_recv_tokens() const { return plan_ ? plan_->num_recv : 0; }
int64_t Handle::num_expert_rows() const { return plan_ ? static_cast<int64_t>(plan_->row_token.size()) : 0; }
int Handle::top_k() const { return plan_ ? plan_->top_k : 0; }
bool Handle::two_hop() const { return plan_ && plan_->two_hop; }

Buffer::Buffer(std::shared_ptr<PeerExchange> exchange, const BufferOptions& options)
    : exchange_(std::move(exchange)), options_(options) {
  if (!exchange_) SY_THROW(InvalidArgument, "Buffer: exchange is null");
  const int R = exchange_->size(), me = exchange_->rank();
  if (options.num_experts <= 0 || options.num_experts % R != 0)
    SY_THROW(InvalidArgument, "Buffer: num_experts = " << options.num_experts
                                                       << " must be a positive multiple of the EP group size " << R
                                                       << " (experts are placed evenly)");
  if (options.hidden <= 0) SY_THROW(InvalidArgument, "Buffer: hidden = " << options.hidden << " must be > 0");
  if (options.max_tokens_per_rank < 0)
    SY_THROW(InvalidArgument, "Buffer: max_tokens_per_rank = " << options.max_tokens_per_rank << " is negative");
  num_local_experts_ = options.num_experts / R;
  const auto& map = exchange_->rank_map();
  if (map.size() != R)
    SY_THROW(InvalidArgument, "Buffer: rank map has " << map.size() << " ranks, group has " << R);
  bool equal_nodes = true;
  for (int n = 0; n < map.num_nodes(); ++n)
    equal_nodes = equal_nodes && map.ranks_of_node(n).size() == map.ranks_of_node(0).size();
  two_hop_ = options.two_hop && map.num_nodes() > 1 && equal_nodes;
  // Collective handshake: every rank checks every other rank's hidden size and expert count,
  // and learns the largest max_tokens_per_rank (receive regions are sized from it).
  TrafficStats ignored;
  const std::vector<int64_t> max_tokens = detail::exchange_counts(
      *exchange_, peers_except(all_ranks(R), me), std::vector<int64_t>(R, options.max_tokens_per_rank),
      {options.hidden, options.num_experts, 0}, kTagHello, ignored);
  max_tokens_any_rank_ = options.max_tokens_per_rank;
  for (int p = 0; p < R; ++p) max_tokens_any_rank_ = std::max(max_tokens_any_rank_, max_tokens[p]);
  ws_ = std::make_unique<Workspace>();
  // Same-node rows through shared memory: flat stage A between the ranks of a node, two-hop
  // stage B (forwarding), and combine's rows back over that stage; dispatch rows up to FP32
  // payload + metadata for top_k <= 16, combine rows up to H FP32 values (wider ones, and
  // pairs not mapped, use messages).
  // The windows of a node's ranks live in /dev/shm: used only if every rank wants them and
  // sees room for its node's windows there (a full tmpfs would kill the process with SIGBUS
  // when a page is first written; containers often give /dev/shm 64 MiB). Collective vote.
  {
    const int64_t last_rows = two_hop_ ? max_tokens_any_rank_ * map.num_nodes() : max_tokens_any_rank_;
    const int64_t max_rows[detail::RowWindow::kStages] = {two_hop_ ? 0 : last_rows, two_hop_ ? last_rows : 0,
                                                          last_rows};
    const size_t dispatch_row = row_format(comm::DataType::kFloat32, options.hidden, kShmRowsMaxTopK, true).total;
    const size_t row_bytes[detail::RowWindow::kStages] = {dispatch_row, dispatch_row,
                                                          static_cast<size_t>(options.hidden) * sizeof(float)};
    const size_t node_bytes =
        detail::RowWindow::window_bytes(*exchange_, max_rows, row_bytes) * map.local_size(me);
    struct statvfs fs;
    const bool room = statvfs("/dev/shm", &fs) != 0 ||
                      static_cast<double>(fs.f_bavail) * fs.f_frsize >= static_cast<double>(node_bytes);
    const int64_t want = kShmRows.get() != 0 && room ? 1 : 0;
    if (kShmRows.get() != 0 && !room)
      SY_INFO("dispatch", "rank " << me << ": " << node_bytes << " bytes of shared-memory rows do not fit in "
                                  << "/dev/shm; same-node rows use messages");
    const std::vector<int64_t> votes =
        detail::exchange_counts(*exchange_, peers_except(all_ranks(R), me), std::vector<int64_t>(R, want),
                                {options.hidden, options.num_experts, 0}, kTagWindowVote, ignored);
    bool all = want == 1;
    for (int p = 0; p < R; ++p) all = all && (p == me || votes[p] == 1);
    if (all) ws_->window = detail::RowWindow::open(*exchange_, max_rows, row_bytes);
  }
  if (options.low_latency_max_tokens > 0) init_low_latency();
}

int Buffer::rank() const { return exchange_->rank(); }
int Buffer::num_ranks() const { return exchange_->size(); }

DispatchLayout Buffer::layout(const int64_t* topk_idx, int64_t num_tokens, int top_k) const {
  return get_dispatch_layout(topk_idx, num_tokens, top_k, options_.num_experts, exchange_->rank_map());
}

DispatchResult Buffer::dispatch(const DispatchArgs& args) {
  DispatchResult res;
  dispatch_into(args, res);
  return res;
}

void Buffer::dispatch_into(const DispatchArgs& args, DispatchResult& res) {
  PeerExchange& ex = *exchange_;
  const int R = ex.size(), me = ex.rank();
  const auto& map = ex.rank_map();
  const int64_t T = args.num_tokens, H = options_.hidden;
  const int L = num_local_experts_;
  const bool cached = args.cached_handle != nullptr;
  (void)payload_elem_bytes(args.dtype);
  if (T < 0) SY_THROW(InvalidArgument, "dispatch: num_tokens = " << T << " is negative");
  if (T > options_.max_tokens_per_rank)
    SY_THROW(InvalidArgument, "dispatch: num_tokens = " << T << " exceeds the Buffer's max_tokens_per_rank = "
                                                        << options_.max_tokens_per_rank << " on rank " << me);
  if (T > 0 && args.x == nullptr) SY_THROW(InvalidArgument, "dispatch: x is null");
  const bool fp8 = args.dtype == comm::DataType::kFloat8E4M3;
  if (fp8 && T > 0 && args.x_scales == nullptr)
    SY_THROW(InvalidArgument, "dispatch: x is float8_e4m3 but x_scales is null");
  if (args.expert_alignment < 1)
    SY_THROW(InvalidArgument, "dispatch: expert_alignment = " << args.expert_alignment << " must be >= 1");

  detail::PhaseTimer timer(two_hop_ ? "dispatch two-hop" : "dispatch flat");
  std::shared_ptr<Handle::Plan> plan;
  std::shared_ptr<const Handle::Plan> cplan;
  int K;
  res.stats = TrafficStats{};
  if (cached) {
    if (!args.cached_handle->valid()) SY_THROW(InvalidArgument, "dispatch: cached_handle is empty");
    cplan = args.cached_handle->plan_;
    if (cplan->num_tokens != T)
      SY_THROW(InvalidArgument, "dispatch: num_tokens = " << T << " but the cached handle was made for "
                                                          << cplan->num_tokens);
    if (cplan->two_hop != two_hop_ || cplan->num_ranks != R || cplan->rank != me || cplan->hidden != H)
      SY_THROW(InvalidArgument, "dispatch: cached_handle was made by another Buffer (rank " << cplan->rank << " of "
                                                                                            << cplan->num_ranks
                                                                                            << ", hidden "
                                                                                            << cplan->hidden << ")");
    K = cplan->top_k;
  } else {
    K = args.top_k;
    const DispatchLayout lay = layout(args.topk_idx, T, K);
    plan = std::make_shared<Handle::Plan>();
    plan->num_ranks = R;
    plan->rank = me;
    plan->num_tokens = T;
    plan->top_k = K;
    plan->hidden = H;
    plan->num_local_experts = L;
    plan->two_hop = two_hop_;
    plan->num_tokens_per_rank = lay.num_tokens_per_rank;
    plan->a_send.assign(R, {});
    if (!two_hop_) {
      for (int64_t t = 0; t < T; ++t)
        for (int p = 0; p < R; ++p)
          if (lay.in_rank(t, p)) plan->a_send[p].push_back(static_cast<int32_t>(t));
    } else {
      for (int64_t t = 0; t < T; ++t)
        for (int n = 0; n < map.num_nodes(); ++n) {
          bool hit = false;
          for (int r : map.ranks_of_node(n)) hit = hit || lay.in_rank(t, r);
          if (hit) plan->a_send[map.rail_peer(me, n)].push_back(static_cast<int32_t>(t));
        }
    }
    cplan = plan;
  }
  const RowFormat fmt = row_format(args.dtype, H, K, !cached);
  res.stats.row_bytes = static_cast<int64_t>(fmt.total);
  const detail::StageFingerprint fp{H, options_.num_experts, static_cast<int64_t>(fmt.total)};
  const std::vector<int> a_peers =
      two_hop_ ? peers_except(map.rail(me), me) : peers_except(all_ranks(R), me);
  const std::vector<int> b_peers = peers_except(map.ranks_of_node(map.node_of(me)), me);

  const uint8_t* x = static_cast<const uint8_t*>(args.x);
  auto write_token_row = [&](int32_t t, uint8_t* dst) {
    std::memcpy(dst, x + t * fmt.payload, fmt.payload);
    if (fmt.scales) std::memcpy(dst + fmt.payload, args.x_scales + t * (fmt.scales / sizeof(float)), fmt.scales);
    if (fmt.meta) {
      uint8_t* m = dst + fmt.payload + fmt.scales;
      const int32_t src[2] = {me, t};
      std::memcpy(m, src, sizeof(src));
      int32_t* idx = reinterpret_cast<int32_t*>(m + sizeof(src));
      for (int k = 0; k < K; ++k) {
        const int32_t e = static_cast<int32_t>(args.topk_idx[t * K + k]);
        const float w = args.topk_weights ? args.topk_weights[t * K + k] : 0.0f;
        std::memcpy(idx + k, &e, sizeof(e));
        std::memcpy(m + sizeof(src) + (K + k) * sizeof(int32_t), &w, sizeof(w));
      }
    }
  };
  detail::Arrival& arrival_a = ws_->arrival_a;
  detail::Arrival& arrival_b = ws_->arrival_b;
  // Per-peer receive regions hold the most a peer can send: its max_tokens_per_rank rows in
  // stage A, and that many per node in stage B (a forwarder relays one source per node).
  const int64_t max_rows = max_tokens_any_rank_;
  // Window rows read in place go back to their senders when this call is done with them,
  // also when it throws.
  detail::RowWindow* win = ws_->window.get();
  const uint32_t seq = win ? ++ws_->window_seq : 0;
  struct ReleaseWindowRows {
    detail::RowWindow* win;
    detail::Arrival& a;
    detail::Arrival& b;
    ~ReleaseWindowRows() {
      if (win) {
        detail::release_window(win, a);
        detail::release_window(win, b);
      }
    }
  } release_rows{win, arrival_a, arrival_b};
  timer.lap("plan");
  detail::exchange_rows(ex, fmt.total, cplan->a_send, a_peers, max_rows, fp, write_token_row, arrival_a, ws_->packed,
                        kTagRowsA, res.stats, nullptr, win, 0, seq);
  if (cached && arrival_a.counts != cplan->a_recv)
    SY_THROW(InvalidArgument, "dispatch: ranks disagree on the cached handle (stage A counts differ)");
  if (!cached) plan->a_recv = arrival_a.counts;
  timer.lap("stage A");
  const detail::Arrival* arrival = &arrival_a;
  if (two_hop_) {
    if (!cached) plan_forwarding(*plan, arrival_a, fmt, map, me, L);
    auto forward_row = [&](int32_t j, uint8_t* dst) { std::memcpy(dst, arrival_a.row(j), fmt.total); };
    detail::exchange_rows(ex, fmt.total, cplan->b_send, b_peers, max_rows * map.num_nodes(), fp, forward_row,
                          arrival_b, ws_->packed, kTagRowsB, res.stats, &arrival_a.rows, win, 1, seq);
    if (cached && arrival_b.counts != cplan->b_recv)
      SY_THROW(InvalidArgument, "dispatch: ranks disagree on the cached handle (stage B counts differ)");
    if (!cached) plan->b_recv = arrival_b.counts;
    arrival = &arrival_b;
    timer.lap("stage B");
  }
  const int64_t M = arrival->size();

  if (!cached) {
    plan_receive_side(*plan, *arrival, fmt, me, L, args.expert_alignment);
    res.num_recv_tokens_per_expert.assign(L, 0);
    for (int64_t v : plan->recv_topk_idx)
      if (v >= 0) ++res.num_recv_tokens_per_expert[v];
  } else {
    res.num_recv_tokens_per_expert.assign(L, 0);
    for (int64_t v : cplan->recv_topk_idx)
      if (v >= 0) ++res.num_recv_tokens_per_expert[v];
  }

  timer.lap("receive plan");
  res.dtype = args.dtype;
  res.num_recv_tokens = M;
  // Rows are copied in canonical / expert-major order straight from the arrival buffer into
  // res's vectors. A vector that already has the right size (a reused result) is neither
  // reallocated nor zero-filled first: every byte is written below (padding rows explicitly).
  const size_t S = fmt.scales / sizeof(float);
  auto arrival_row = [&](int64_t c) { return arrival->row(cplan->canonical_to_arrival[c]); };
  if (args.recv_x) {
    res.recv_x.resize(M * fmt.payload);
    res.recv_x_scales.resize(fp8 ? M * S : 0);
    for (int64_t c = 0; c < M; ++c) {
      const uint8_t* row = arrival_row(c);
      std::memcpy(res.recv_x.data() + c * fmt.payload, row, fmt.payload);
      if (fp8) std::memcpy(res.recv_x_scales.data() + c * S, row + fmt.payload, fmt.scales);
    }
  } else {
    res.recv_x.clear();
    res.recv_x_scales.clear();
  }
  res.recv_src_rank = cplan->recv_src_rank;
  res.recv_src_token = cplan->recv_src_token;
  res.recv_topk_idx = cplan->recv_topk_idx;
  res.recv_topk_weights = cplan->recv_topk_weights;
  res.expert_offsets = cplan->expert_offsets;
  res.expert_row_token = cplan->row_token;
  res.expert_row_slot = cplan->row_slot;
  if (args.expert_major_x) {
    const int64_t P = static_cast<int64_t>(cplan->row_token.size());
    res.expert_x.resize(P * fmt.payload);
    res.expert_x_scales.resize(fp8 ? P * S : 0);
    for (int64_t row = 0; row < P; ++row) {
      const int32_t i = cplan->row_token[row];
      uint8_t* dst = res.expert_x.data() + row * fmt.payload;
      if (i < 0) {
        std::memset(dst, 0, fmt.payload);
        if (fp8) std::fill_n(res.expert_x_scales.data() + row * S, S, 0.0f);
        continue;
      }
      const uint8_t* src = arrival_row(i);
      std::memcpy(dst, src, fmt.payload);
      if (fp8) std::memcpy(res.expert_x_scales.data() + row * S, src + fmt.payload, fmt.scales);
    }
  } else {
    res.expert_x.clear();
    res.expert_x_scales.clear();
  }
  int64_t logical_rows = 0;
  for (int64_t n : cplan->num_tokens_per_rank) logical_rows += n;
  res.stats.logical_bytes = logical_rows * static_cast<int64_t>(fmt.total);
  res.handle.plan_ = cplan;
  timer.lap("outputs");
}

namespace {

// Sends one row per received token (width elements of dtype) back along the dispatch path
// and writes the sums per source token, [T x width] of out_dtype, into out. row_fn(c,
// float* out) produces the FP32 row of canonical received token c; it is converted to dtype
// for the wire. Two-hop: the forwarder sums the rows of its node per stage-A row and sends
// the sum on in dtype (one row per (token, node) crosses the network).
// Overlap: at each hop the rows for the other ranks are made first and sent while this
// rank makes the rows it keeps (its own block), which it needs only after the wait.
template <class RowFn>
void reduce_to_sources(PeerExchange& ex, Buffer::Workspace& ws, const Handle::Plan& plan, RowFn row_fn,
                       comm::DataType dtype, int64_t width, uint8_t* out, comm::DataType out_dtype,
                       TrafficStats& stats) {
  const int R = ex.size(), me = ex.rank();
  const int64_t M = plan.num_recv;
  const size_t eb = payload_elem_bytes(dtype), row_bytes = static_cast<size_t>(width) * eb;
  detail::PhaseTimer timer(plan.two_hop ? "combine two-hop" : "combine flat");
  detail::RawBytes& wire = ws.wire;
  wire.resize(M * row_bytes);
  // The last stage of dispatch is reduced first: B on the two-hop path, A on the flat one.
  const auto& last_send = plan.two_hop ? plan.b_send : plan.a_send;
  const auto& last_recv = plan.two_hop ? plan.b_recv : plan.a_recv;
  const std::vector<int64_t> last_off = detail::block_offsets(last_recv);
  // Where each peer's block of sums goes: straight into the peer's window (same node,
  // detail::RowWindow) or into the wire buffer for a message.
  detail::RowWindow* win = ws.window.get();
  const uint32_t seq = win ? ++ws.window_combine_seq : 0;
  std::vector<uint8_t*> block(R);
  for (int p = 0; p < R; ++p) {
    block[p] = wire.data() + last_off[p] * row_bytes;
    if (p != me && last_recv[p] > 0 && detail::window_reaches(win, kWindowBack, p, row_bytes))
      block[p] = win->claim(p, kWindowBack, seq);
  }
  // FP32 rows are summed in place (rows are 4-byte aligned: wire and window regions are
  // page-aligned and row_bytes a multiple of 4); BF16 rows go through one FP32 scratch row.
  std::vector<float> tmp(dtype == comm::DataType::kFloat32 ? 0 : width);
  auto sums = [&](int p) {
    for (int64_t a = last_off[p]; a < last_off[p + 1]; ++a) {
      uint8_t* dst = block[p] + (a - last_off[p]) * row_bytes;
      if (dtype == comm::DataType::kFloat32) {
        row_fn(plan.arrival_to_canonical[a], reinterpret_cast<float*>(dst));
        continue;
      }
      row_fn(plan.arrival_to_canonical[a], tmp.data());
      detail::store_row(tmp.data(), width, dtype, dst);
    }
  };
  for (int p = 0; p < R; ++p)
    if (p != me) sums(p);
  timer.lap("expert-side sums (sent)");
  detail::ReduceBack last(ex, wire.data(), dtype, width, last_send, last_recv, ws.returned,
                          plan.two_hop ? kTagBackB : kTagBackA, stats, win, kWindowBack, seq);
  sums(me);
  timer.lap("expert-side sums (kept)");
  const char* last_name = plan.two_hop ? "B" : "flat";
  last.wait(plan.two_hop ? detail::block_offsets(plan.a_recv)[R] : plan.num_tokens, timer, last_name);
  if (!plan.two_hop) {
    last.reduce(0, plan.num_tokens, out, out_dtype, timer, last_name);
    return;
  }
  // Forwarder: one sum per stage-A row (this node's part of a token), sent on to its source.
  const std::vector<int64_t> a_off = detail::block_offsets(plan.a_recv);
  detail::RawBytes& wire_a = ws.wire_a;
  wire_a.resize(a_off[R] * row_bytes);
  last.reduce(0, a_off[me], wire_a.data(), dtype, timer, "B (sent)");
  last.reduce(a_off[me + 1], a_off[R], wire_a.data(), dtype, timer, "B (sent)");
  detail::ReduceBack first(ex, wire_a.data(), dtype, width, plan.a_send, plan.a_recv, ws.returned_a, kTagBackA,
                          stats);
  last.reduce(a_off[me], a_off[me + 1], wire_a.data(), dtype, timer, "B (kept)");
  first.wait(plan.num_tokens, timer, "A");
  first.reduce(0, plan.num_tokens, out, out_dtype, timer, "A");
}

const Handle::Plan& require_plan(const Handle* h, const char* what) {
  if (h == nullptr || !h->valid()) SY_THROW(InvalidArgument, what << ": handle is empty");
  return *h->plan_;
}

}  // namespace

CombineResult Buffer::combine(const CombineArgs& args) {
  CombineResult res;
  combine_into(args, res);
  return res;
}

void Buffer::combine_into(const CombineArgs& args, CombineResult& res) {
  const Handle::Plan& plan = require_plan(args.handle, "combine");
  detail::require_reduce_type(args.dtype, "combine");
  const int64_t H = plan.hidden, K = plan.top_k;
  const size_t eb = payload_elem_bytes(args.dtype);
  if (!plan.row_token.empty() && args.expert_out == nullptr) SY_THROW(InvalidArgument, "combine: expert_out is null");
  const uint8_t* out = static_cast<const uint8_t*>(args.expert_out);
  // Per token on this rank: sum over its local slots, k ascending (FP32), from +0: one pass
  // over the token's expert rows (detail::sum_rows; no separate zero fill).
  std::vector<const uint8_t*> slot_rows(K);
  std::vector<float> slot_w(K);
  auto partial = [&](int64_t i, float* acc) {
    int64_t n = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t row = plan.slot_row[i * K + k];
      if (row < 0) continue;
      slot_rows[n] = out + row * H * eb;
      slot_w[n++] = args.weights ? args.weights[i * K + k] : 1.0f;
    }
    detail::sum_rows(slot_rows.data(), slot_w.data(), n, args.dtype, H, acc);
  };
  res.dtype = args.dtype;
  res.stats = TrafficStats{};
  res.y.resize(plan.num_tokens * H * eb);  // no zero fill when a reused y already has the size
  reduce_to_sources(*exchange_, *ws_, plan, partial, args.dtype, H, res.y.data(), args.dtype, res.stats);
  int64_t logical_rows = 0;
  for (int64_t n : plan.num_tokens_per_rank) logical_rows += n;
  res.stats.row_bytes = static_cast<int64_t>(H * eb);
  res.stats.logical_bytes = logical_rows * res.stats.row_bytes;
}

CombineResult Buffer::dispatch_backward(const void* grad_expert_x, comm::DataType dtype, const Handle& handle) {
  CombineArgs args;
  args.expert_out = grad_expert_x;
  args.dtype = dtype;
  args.handle = &handle;
  return combine(args);
}

CombineBackwardResult Buffer::combine_backward(const CombineBackwardArgs& args) {
  const Handle::Plan& plan = require_plan(args.handle, "combine_backward");
  detail::require_reduce_type(args.dtype, "combine_backward");
  const int64_t H = plan.hidden, M = plan.num_recv, K = plan.top_k, P = static_cast<int64_t>(plan.row_token.size());
  const size_t eb = payload_elem_bytes(args.dtype);
  DispatchArgs d;
  d.x = args.grad_y;
  d.dtype = args.dtype;
  d.num_tokens = plan.num_tokens;
  d.cached_handle = args.handle;
  d.expert_major_x = false;
  DispatchResult dy = dispatch(d);
  CombineBackwardResult res;
  res.stats = dy.stats;
  res.grad_expert_out.assign(P * H * eb, 0);
  res.grad_recv_weights.assign(M * K, 0.0f);
  const uint8_t* out = static_cast<const uint8_t*>(args.expert_out);
  if (P > 0 && out == nullptr) SY_THROW(InvalidArgument, "combine_backward: expert_out is null");
  std::vector<float> tmp(H);
  for (int64_t row = 0; row < P; ++row) {
    const int32_t i = plan.row_token[row];
    if (i < 0) continue;
    const int k = plan.row_slot[row];
    const float w = args.weights ? args.weights[i * K + k] : 1.0f;
    const uint8_t* g = dy.recv_x.data() + i * H * eb;
    const uint8_t* o = out + row * H * eb;
    double dot = 0.0;
    for (int64_t h = 0; h < H; ++h) {
      const float gv = detail::load_elem(g, args.dtype, h);
      tmp[h] = w * gv;
      dot += static_cast<double>(gv) * detail::load_elem(o, args.dtype, h);
    }
    detail::store_row(tmp.data(), H, args.dtype, res.grad_expert_out.data() + row * H * eb);
    res.grad_recv_weights[i * K + k] = static_cast<float>(dot);
  }
  const float* gw = res.grad_recv_weights.data();
  res.grad_topk_weights.resize(plan.num_tokens * K);
  reduce_to_sources(
      *exchange_, *ws_, plan, [&](int64_t i, float* dst) { std::copy(gw + i * K, gw + (i + 1) * K, dst); },
      comm::DataType::kFloat32, K, reinterpret_cast<uint8_t*>(res.grad_topk_weights.data()), comm::DataType::kFloat32,
      res.stats);
  return res;
}

Pending<DispatchResult> Buffer::dispatch_async(const DispatchArgs& args) {
  return Pending<DispatchResult>(std::async(std::launch::async, [this, args] { return dispatch(args); }));
}

Pending<CombineResult> Buffer::combine_async(const CombineArgs& args) {
  return Pending<CombineResult>(std::async(std::launch::async, [this, args] { return combine(args); }));
}

}  // namespace switchyard::dispatch
