// comm_rank: the rank program the multi-process comm tests start (one process per rank).
//
// Usage: comm_rank SCENARIO [SEED]. Every check compares against an independent naive
// reference computed from the deterministic inputs of all ranks. Prints "rank R: ok" and
// exits 0 on success; prints the failure and exits 1 otherwise. Scenarios:
//   ops       every operation, random sizes (zero and uneven counts included)
//   async     a large all_to_all completes while the caller only computes
//   split     split / make_parallel_groups / concurrent ops on sub-communicators
//   timeout   rank 0 waits for a message rank 1 never sends -> Timeout naming rank 1
//   dead      the last rank SIGKILLs itself -> PeerFailure naming it on every survivor
//   abort     rank 0 aborts -> others fail with PeerFailure naming rank 0
//   arrive    (started with one rank missing) -> init Timeout listing the missing rank
//   badtoken  rank 1 presents a wrong token -> refused; rank 0 times out listing rank 1
//   badargs   argument errors, local and (SWITCHYARD_COMM_CHECK_ARGS=1) cross-rank
//   small     small all_to_all(_v) and all_reduce (the inline path) mixing blocking and async forms, ranks
//             with another op pending (the op path) and sizes around the inline limit
//   mismatch  rank 1 sends rank 0 more than it expects in a small all_to_all_v: rank 0 gets
//             InvalidArgument naming rank 1 and the sizes; the other ranks finish
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/common/error.h"

using namespace switchyard;
using namespace switchyard::comm;
using Clock = std::chrono::steady_clock;

namespace {

int g_failures = 0;
int g_rank = -1;

#define EXPECT(cond, msg)                                                                      \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      std::ostringstream os_;                                                                  \
      os_ << "rank " << g_rank << ": FAILED " << #cond << ": " << msg << " (line " << __LINE__ << ")"; \
      std::cerr << os_.str() << std::endl;                                                     \
      if (++g_failures > 20) std::exit(1);                                                     \
    }                                                                                          \
  } while (0)

// Expects `fn` to throw E whose message contains `needle`.
template <class E>
void expect_throw(const std::function<void()>& fn, const std::string& needle, const char* what) {
  try {
    fn();
  } catch (const E& e) {
    EXPECT(std::string(e.what()).find(needle) != std::string::npos,
           what << ": message '" << e.what() << "' lacks '" << needle << "'");
    return;
  } catch (const std::exception& e) {
    EXPECT(false, what << ": wrong exception: " << e.what());
    return;
  }
  EXPECT(false, what << ": no exception");
}

uint16_t to_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7fffu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}
float from_bf16(uint16_t v) {
  uint32_t b = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// Value element i of rank r's input (small integers: exact in every type, sums included).
int64_t ival(int r, size_t i, int salt) { return static_cast<int64_t>((r * 7 + i * 13 + salt * 5) % 17) - 8; }

void put(void* buf, DataType t, size_t i, double v) {
  switch (t) {
    case DataType::kInt32: static_cast<int32_t*>(buf)[i] = static_cast<int32_t>(v); break;
    case DataType::kInt64: static_cast<int64_t*>(buf)[i] = static_cast<int64_t>(v); break;
    case DataType::kFloat32: static_cast<float*>(buf)[i] = static_cast<float>(v); break;
    case DataType::kFloat64: static_cast<double*>(buf)[i] = v; break;
    case DataType::kBfloat16: static_cast<uint16_t*>(buf)[i] = to_bf16(static_cast<float>(v)); break;
    default: break;
  }
}
double get(const void* buf, DataType t, size_t i) {
  switch (t) {
    case DataType::kInt32: return static_cast<const int32_t*>(buf)[i];
    case DataType::kInt64: return static_cast<double>(static_cast<const int64_t*>(buf)[i]);
    case DataType::kFloat32: return static_cast<const float*>(buf)[i];
    case DataType::kFloat64: return static_cast<const double*>(buf)[i];
    case DataType::kBfloat16: return from_bf16(static_cast<const uint16_t*>(buf)[i]);
    default: return 0;
  }
}

double combine(double a, double b, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return a + b;
    case ReduceOp::kMax: return std::max(a, b);
    case ReduceOp::kMin: return std::min(a, b);
  }
  return 0;
}

const size_t kSizes[] = {0, 1, 7, 100, 2500, 40000};

// ---- all_to_all(_v) ----
void test_all_to_all_v(Communicator& c, std::mt19937& rng) {
  int n = c.size(), me = c.rank();
  // The full count matrix from the shared seed: C[i][j] = elements i sends to j.
  std::vector<size_t> C(static_cast<size_t>(n * n));
  for (auto& x : C) x = rng() % 4 == 0 ? 0 : kSizes[rng() % 6];
  std::vector<size_t> sc(n), sd(n), rc(n), rd(n);
  size_t so = 0, ro = 0;
  for (int j = 0; j < n; ++j) {
    sc[j] = C[me * n + j];
    rc[j] = C[j * n + me];
    so += rng() % 3;  // gaps between blocks
    sd[j] = so;
    so += sc[j];
    ro += rng() % 3;
    rd[j] = ro;
    ro += rc[j];
  }
  auto value = [](int from, int to, size_t k) { return static_cast<int32_t>(from * 1000003 + to * 1009 + k); };
  std::vector<int32_t> send(so + 1, -7), recv(ro + 1, -5);
  for (int j = 0; j < n; ++j)
    for (size_t k = 0; k < sc[j]; ++k) send[sd[j] + k] = value(me, j, k);
  c.all_to_all_v(send.data(), sc.data(), sd.data(), recv.data(), rc.data(), rd.data(), DataType::kInt32);
  std::vector<int32_t> want(ro + 1, -5);
  for (int j = 0; j < n; ++j)
    for (size_t k = 0; k < rc[j]; ++k) want[rd[j] + k] = value(j, me, k);
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) bad += recv[i] != want[i];
  EXPECT(bad == 0, "all_to_all_v: " << bad << " wrong elements of " << want.size());

  size_t per = kSizes[rng() % 6];
  std::vector<float> s2(per * n), r2(per * n, -1.f);
  for (int j = 0; j < n; ++j)
    for (size_t k = 0; k < per; ++k) s2[j * per + k] = static_cast<float>(value(me, j, k) % 100000);
  c.all_to_all(s2.data(), r2.data(), per, DataType::kFloat32);
  bad = 0;
  for (int j = 0; j < n; ++j)
    for (size_t k = 0; k < per; ++k) bad += r2[j * per + k] != static_cast<float>(value(j, me, k) % 100000);
  EXPECT(bad == 0, "all_to_all(per peer " << per << "): " << bad << " wrong");
}

// ---- all_reduce / reduce_scatter ----
void test_all_reduce(Communicator& c, std::mt19937& rng, int salt) {
  int n = c.size(), me = c.rank();
  for (DataType t : {DataType::kFloat32, DataType::kFloat64, DataType::kBfloat16, DataType::kInt32, DataType::kInt64})
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) {
      size_t count = kSizes[rng() % 6];
      bool in_place = rng() % 2;
      size_t es = dtype_size(t);
      std::vector<uint8_t> send(count * es + 1), recv(count * es + 1, 0xAB);
      for (size_t i = 0; i < count; ++i) put(send.data(), t, i, static_cast<double>(ival(me, i, salt)));
      void* out = in_place ? send.data() : recv.data();
      c.all_reduce(send.data(), out, count, t, op);
      size_t bad = 0;
      for (size_t i = 0; i < count; ++i) {
        double want = static_cast<double>(ival(0, i, salt));
        for (int r = 1; r < n; ++r) want = combine(want, static_cast<double>(ival(r, i, salt)), op);
        bad += get(out, t, i) != want;
      }
      EXPECT(bad == 0, "all_reduce(" << dtype_name(t) << ", " << reduce_op_name(op) << ", count " << count
                                     << (in_place ? ", in place" : "") << "): " << bad << " wrong");
      if (!in_place) EXPECT(recv[count * es] == 0xAB, "all_reduce wrote past the end");
    }
  // reduce_scatter
  size_t per = kSizes[rng() % 6];
  std::vector<int64_t> send(per * n), recv(per + 1, 99);
  for (size_t i = 0; i < send.size(); ++i) send[i] = ival(me, i, salt);
  c.reduce_scatter(send.data(), recv.data(), per, DataType::kInt64, ReduceOp::kSum);
  size_t bad = 0;
  for (size_t k = 0; k < per; ++k) {
    int64_t want = 0;
    for (int r = 0; r < n; ++r) want += ival(r, me * per + k, salt);
    bad += recv[k] != want;
  }
  EXPECT(bad == 0 && recv[per] == 99, "reduce_scatter(per " << per << "): " << bad << " wrong");
}

// Random floats: every rank gets the same bits, equal to the fixed-order reference.
void test_determinism(Communicator& c, std::mt19937& rng) {
  int n = c.size(), me = c.rank();
  size_t count = 30000 + rng() % 1000;
  auto input = [](int r, size_t i) {  // a hash of (r, i) mapped to [-1, 1)
    uint64_t z = (static_cast<uint64_t>(r) << 32 | i) + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<float>(z >> 40) / static_cast<float>(1 << 23) - 1.f;
  };
  for (DataType t : {DataType::kFloat32, DataType::kBfloat16}) {
    size_t es = dtype_size(t);
    std::vector<uint8_t> send(count * es), recv(count * es);
    for (size_t i = 0; i < count; ++i) put(send.data(), t, i, input(me, i));
    c.all_reduce(send.data(), recv.data(), count, t, ReduceOp::kSum);
    // Reference: fp32 sums in the library's documented order (node partials in local rank
    // order, then over nodes in node order; one node = plain rank order), bf16 rounded once.
    const auto& map = c.rank_map();
    const char* min_env = std::getenv("SWITCHYARD_COMM_HIER_MIN_BYTES");
    size_t hier_min = min_env ? std::strtoull(min_env, nullptr, 10) : (64u << 10);
    bool hier = map.num_nodes() > 1 && count * es >= hier_min && map.ranks_of_node(0).size() > 1;
    for (int nd = 1; nd < map.num_nodes(); ++nd)
      if (map.ranks_of_node(nd).size() != map.ranks_of_node(0).size()) hier = false;
    size_t bad = 0;
    for (size_t i = 0; i < count; ++i) {
      auto in = [&](int r) { return t == DataType::kBfloat16 ? from_bf16(to_bf16(input(r, i))) : input(r, i); };
      float acc = 0;
      if (hier) {
        for (int nd = 0; nd < map.num_nodes(); ++nd) {
          const auto& rs = map.ranks_of_node(nd);
          float part = in(rs[0]);
          for (size_t k = 1; k < rs.size(); ++k) part += in(rs[k]);
          acc = nd == 0 ? part : acc + part;
        }
      } else {
        acc = in(0);
        for (int r = 1; r < n; ++r) acc += in(r);
      }
      float got = static_cast<float>(get(recv.data(), t, i));
      float want = t == DataType::kBfloat16 ? from_bf16(to_bf16(acc)) : acc;
      bad += std::memcmp(&got, &want, 4) != 0;
    }
    EXPECT(bad == 0, "all_reduce " << dtype_name(t) << " sum of random floats: " << bad
                                   << " elements differ from the fixed-order reference");
    // Every rank holds the same bits.
    std::vector<uint8_t> all(count * es * n);
    c.all_gather(recv.data(), all.data(), count * es, DataType::kUint8);
    for (int r = 0; r < n; ++r)
      EXPECT(std::memcmp(all.data() + r * count * es, recv.data(), count * es) == 0,
             "all_reduce result differs between rank " << me << " and rank " << r);
  }
}

void test_gather_bcast(Communicator& c, std::mt19937& rng) {
  int n = c.size(), me = c.rank();
  size_t per = kSizes[rng() % 6];
  std::vector<int32_t> send(per), recv(per * n + 1, -3);
  for (size_t k = 0; k < per; ++k) send[k] = static_cast<int32_t>(me * 100000 + k);
  c.all_gather(send.data(), recv.data(), per, DataType::kInt32);
  size_t bad = 0;
  for (int r = 0; r < n; ++r)
    for (size_t k = 0; k < per; ++k) bad += recv[r * per + k] != static_cast<int32_t>(r * 100000 + k);
  EXPECT(bad == 0 && recv[per * n] == -3, "all_gather(per " << per << "): " << bad << " wrong");

  for (int root = 0; root < n; ++root) {
    size_t count = kSizes[rng() % 6];
    std::vector<double> buf(count);
    for (size_t k = 0; k < count; ++k) buf[k] = me == root ? root * 0.5 + static_cast<double>(k) : -1.0;
    c.broadcast(buf.data(), count, DataType::kFloat64, root);
    bad = 0;
    for (size_t k = 0; k < count; ++k) bad += buf[k] != root * 0.5 + static_cast<double>(k);
    EXPECT(bad == 0, "broadcast(root " << root << ", count " << count << "): " << bad << " wrong");
  }
  c.barrier();
}

void test_p2p(Communicator& c, std::mt19937& rng) {
  int n = c.size(), me = c.rank();
  size_t bytes = kSizes[rng() % 6] * 4 + 3;
  int next = (me + 1) % n, prev = (me + n - 1) % n;
  std::vector<uint8_t> out(bytes), in(bytes + 16, 0);
  for (size_t i = 0; i < bytes; ++i) out[i] = static_cast<uint8_t>(me * 31 + i);
  Work r = c.irecv(in.data(), in.size(), prev, 5);
  c.send(out.data(), bytes, next, 5);
  r.wait();
  size_t bad = 0;
  for (size_t i = 0; i < bytes; ++i) bad += in[i] != static_cast<uint8_t>(prev * 31 + i);
  EXPECT(bad == 0, "ring send/recv of " << bytes << " bytes: " << bad << " wrong");

  // Batched: a message to every rank (itself too), two tags each, received in any order.
  std::vector<std::vector<int64_t>> sbuf(n * 2), rbuf(n * 2);
  std::vector<P2POp> ops;
  for (int p = 0; p < n; ++p)
    for (int tag = 0; tag < 2; ++tag) {
      size_t len = 1 + (static_cast<size_t>(me + p + tag) * 2000) % 5000;
      size_t rlen = 1 + (static_cast<size_t>(p + me + tag) * 2000) % 5000;
      auto& s = sbuf[p * 2 + tag];
      s.resize(len);
      for (size_t k = 0; k < len; ++k) s[k] = me * 1000000 + p * 1000 + tag * 100 + static_cast<int64_t>(k);
      rbuf[p * 2 + tag].assign(rlen, -1);
      ops.push_back({P2POp::Kind::kRecv, rbuf[p * 2 + tag].data(), rlen * 8, p, tag});
      ops.push_back({P2POp::Kind::kSend, s.data(), len * 8, p, tag});
    }
  c.batch_send_recv(ops);
  bad = 0;
  for (int p = 0; p < n; ++p)
    for (int tag = 0; tag < 2; ++tag) {
      auto& r = rbuf[p * 2 + tag];
      for (size_t k = 0; k < r.size(); ++k) bad += r[k] != p * 1000000 + me * 1000 + tag * 100 + static_cast<int64_t>(k);
    }
  EXPECT(bad == 0, "batch_send_recv: " << bad << " wrong");

  // Registered buffers: a large send from shared memory.
  auto reg = c.alloc_registered(1 << 20);
  auto* rp = static_cast<int32_t*>(reg->data());
  for (size_t k = 0; k < (1 << 18); ++k) rp[k] = static_cast<int32_t>(me * 7 + k);
  std::vector<int32_t> got(1 << 18);
  Work rr = c.irecv(got.data(), 1 << 20, prev, 6);
  c.send(rp, 1 << 20, next, 6);
  rr.wait();
  bad = 0;
  for (size_t k = 0; k < (1 << 18); ++k) bad += got[k] != static_cast<int32_t>(prev * 7 + k);
  EXPECT(bad == 0, "registered-buffer send: " << bad << " wrong");

  // Receives into one registered buffer, three times (the UCX RMA path maps it once and
  // sends each peer its rkey once).
  auto rreg = c.alloc_registered(1 << 20);
  auto* dst = static_cast<int32_t*>(rreg->data());
  std::vector<int32_t> src(1 << 18);
  for (int round = 0; round < 3; ++round) {
    std::fill(dst, dst + (1 << 18), -1);
    for (size_t k = 0; k < src.size(); ++k) src[k] = static_cast<int32_t>(me * 11 + round + k);
    Work w = c.irecv(dst, 1 << 20, prev, 7);
    c.send(src.data(), 1 << 20, next, 7);
    w.wait();
    bad = 0;
    for (size_t k = 0; k < src.size(); ++k) bad += dst[k] != static_cast<int32_t>(prev * 11 + round + k);
    EXPECT(bad == 0, "receive into a registered buffer, round " << round << ": " << bad << " wrong");
  }
}

// Several operations in flight, waited on out of order.
void test_concurrent(Communicator& c) {
  int n = c.size(), me = c.rank();
  size_t count = 5000;
  std::vector<std::vector<int64_t>> in(4, std::vector<int64_t>(count)), out(4, std::vector<int64_t>(count));
  std::vector<Work> works;
  for (int k = 0; k < 4; ++k) {
    for (size_t i = 0; i < count; ++i) in[k][i] = ival(me, i, k);
    works.push_back(c.iall_reduce(in[k].data(), out[k].data(), count, DataType::kInt64, ReduceOp::kSum));
  }
  std::vector<int32_t> a2a_in(1000 * n), a2a_out(1000 * n);
  for (int j = 0; j < n; ++j)
    for (int k = 0; k < 1000; ++k) a2a_in[j * 1000 + k] = me * 10000 + j * 1000 + k;
  Work a2a = c.iall_to_all(a2a_in.data(), a2a_out.data(), 1000, DataType::kInt32);
  a2a.wait();
  for (int k = 3; k >= 0; --k) works[k].wait();
  size_t bad = 0;
  for (int k = 0; k < 4; ++k)
    for (size_t i = 0; i < count; ++i) {
      int64_t want = 0;
      for (int r = 0; r < n; ++r) want += ival(r, i, k);
      bad += out[k][i] != want;
    }
  for (int j = 0; j < n; ++j)
    for (int k = 0; k < 1000; ++k) bad += a2a_out[j * 1000 + k] != j * 10000 + me * 1000 + k;
  EXPECT(bad == 0, "concurrent ops: " << bad << " wrong");
}

void scenario_ops(Communicator& c, uint32_t seed) {
  std::mt19937 rng(seed);  // same sequence on every rank: sizes agree
  for (int iter = 0; iter < 6; ++iter) {
    test_all_to_all_v(c, rng);
    test_all_reduce(c, rng, iter);
    test_gather_bcast(c, rng);
    test_p2p(c, rng);
  }
  test_determinism(c, rng);
  test_concurrent(c);
}

void scenario_split(Communicator& c) {
  int n = c.size(), me = c.rank();
  // Parity groups in reverse key order.
  auto sub = c.split(me % 2, -me);
  std::vector<int> members;
  for (int r = n - 1; r >= 0; --r)
    if (r % 2 == me % 2) members.push_back(r);
  EXPECT(sub && sub->size() == static_cast<int>(members.size()), "split size");
  EXPECT(sub->world_ranks() == members, "split order (key, then parent rank)");
  int64_t x = me + 1, sum = 0, want = 0;
  for (int r : members) want += r + 1;
  sub->all_reduce(&x, &sum, 1, DataType::kInt64, ReduceOp::kSum);
  EXPECT(sum == want, "all_reduce on split: " << sum << " != " << want);
  // Not a member.
  auto none = c.split(me == 0 ? -1 : 1, 0);
  EXPECT((me == 0) == (none == nullptr), "negative color gives nullptr");
  // Ops on the parent and the child in flight together match separately.
  int64_t a = me, b = 10 * me, ra = 0, rb = 0;
  Work wa = c.iall_reduce(&a, &ra, 1, DataType::kInt64, ReduceOp::kMax);
  Work wb = sub->iall_reduce(&b, &rb, 1, DataType::kInt64, ReduceOp::kMax);
  wb.wait();
  wa.wait();
  EXPECT(ra == n - 1 && rb == 10 * members.front(), "parent/child concurrent: " << ra << ", " << rb);
  // Nested split, then the parallel groups of every factorisation of the world size.
  auto nested = sub->split(0, 0);
  nested->barrier();
  for (int ep = 1; ep <= n; ++ep)
    for (int pp = 1; ep * pp <= n; ++pp) {
      if (n % (ep * pp)) continue;
      int dp = n / (ep * pp);
      auto g = make_parallel_groups(c, ep, pp, dp);
      int e = me % ep, d = (me / ep) % dp, p = me / (ep * dp);
      std::vector<int> want_ep, want_pp, want_dp;
      for (int i = 0; i < ep; ++i) want_ep.push_back((p * dp + d) * ep + i);
      for (int i = 0; i < pp; ++i) want_pp.push_back((i * dp + d) * ep + e);
      for (int i = 0; i < dp; ++i) want_dp.push_back((p * dp + i) * ep + e);
      EXPECT(g.ep->world_ranks() == want_ep && g.pp->world_ranks() == want_pp && g.dp->world_ranks() == want_dp,
             "parallel groups ep " << ep << " pp " << pp << " dp " << dp);
      int64_t one = 1, cnt = 0;
      g.dp->all_reduce(&one, &cnt, 1, DataType::kInt64, ReduceOp::kSum);
      EXPECT(cnt == dp, "dp group all_reduce");
    }
}

void scenario_async(Communicator& c) {
  int n = c.size();
  size_t per = (4u << 20) / 4;  // 4 MiB per peer
  std::vector<float> s(per * n, 1.f), r(per * n, 0.f);
  c.barrier();
  Work w = c.iall_to_all(s.data(), r.data(), per, DataType::kFloat32);
  // Compute without calling the library (a busy loop the optimiser cannot drop).
  volatile double acc = 0;
  auto until = Clock::now() + std::chrono::milliseconds(1500);
  while (Clock::now() < until)
    for (int i = 0; i < 10000; ++i) acc = acc + std::sqrt(static_cast<double>(i));
  EXPECT(w.test(), "all_to_all of 4 MiB per peer not finished after 1.5 s of compute");
  w.wait();
  size_t bad = 0;
  for (float v : r) bad += v != 1.f;
  EXPECT(bad == 0, "async all_to_all: " << bad << " wrong");
}

void scenario_timeout(Communicator& c) {
  if (c.rank() == 0) {
    int x = 0;
    Work w = c.irecv(&x, 4, 1, 9);
    auto t0 = Clock::now();
    expect_throw<Timeout>([&] { w.wait(std::chrono::milliseconds(300)); }, "data from ranks {1}", "timeout");
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
    EXPECT(ms >= 290 && ms < 3000, "timeout took " << ms << " ms");
    c.send(&x, 4, 1, 10);  // release rank 1
    w.wait(std::chrono::milliseconds(20000));  // the late message still arrives
  } else if (c.rank() == 1) {
    int x = 0;
    c.recv(&x, 4, 0, 10);
    c.send(&x, 4, 0, 9);
  }
}

void scenario_dead(Communicator& c) {
  int n = c.size(), me = c.rank();
  c.barrier();
  if (me == n - 1) raise(SIGKILL);
  std::vector<float> a(1000, 1.f), b(1000);
  auto t0 = Clock::now();
  expect_throw<PeerFailure>([&] {
    for (int i = 0; i < 1000; ++i) c.all_reduce(a.data(), b.data(), a.size(), DataType::kFloat32, ReduceOp::kSum);
  }, "rank " + std::to_string(n - 1), "dead peer");
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  EXPECT(ms < 10000, "dead peer detected after " << ms << " ms");
  // Later calls fail at once.
  expect_throw<PeerFailure>([&] { c.barrier(); }, "rank " + std::to_string(n - 1), "after failure");
}

// The last rank stops itself (SIGSTOP: alive but hung); the others must get PeerFailure
// naming it from the missed heartbeat, long before the wait timeout. The launcher kills
// the stopped rank once the others have exited.
void scenario_hung(Communicator& c) {
  int n = c.size(), me = c.rank();
  c.barrier();
  if (me == n - 1) raise(SIGSTOP);
  std::vector<float> a(1000, 1.f), b(1000);
  auto t0 = Clock::now();
  expect_throw<PeerFailure>([&] {
    for (int i = 0; i < 1000000; ++i) c.all_reduce(a.data(), b.data(), a.size(), DataType::kFloat32, ReduceOp::kSum);
  }, "rank " + std::to_string(n - 1), "hung peer");
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  EXPECT(ms < 8000, "hung peer detected after " << ms << " ms");
  expect_throw<PeerFailure>([&] { c.barrier(); }, "no heartbeat", "after hung-peer failure");
}

void scenario_abort(Communicator& c) {
  c.barrier();
  if (c.rank() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    c.abort("test abort");
    expect_throw<Error>([&] { c.barrier(); }, "test abort", "abort locally");
    return;
  }
  int x;
  expect_throw<PeerFailure>([&] { c.recv(&x, 4, 0, 1); }, "rank 0 aborted", "peer abort");
}

void scenario_badargs(Communicator& c) {
  int n = c.size(), me = c.rank();
  std::vector<float> a(64), b(64 * n);
  expect_throw<InvalidArgument>([&] { c.all_reduce(a.data(), b.data(), 4, DataType::kInt8, ReduceOp::kSum); },
                                "dtype int8 is not supported", "bad dtype");
  expect_throw<InvalidArgument>([&] { c.broadcast(a.data(), 4, DataType::kFloat32, n); }, "root", "bad root");
  expect_throw<InvalidArgument>([&] { c.send(a.data(), 4, n + 1, 0); }, "out of range", "bad peer");
  expect_throw<InvalidArgument>([&] { c.send(a.data(), 4, 0, -1); }, "tag", "bad tag");
  std::vector<size_t> sc(n, 1), sd(n), rc(n, 1), rd(n);
  for (int j = 0; j < n; ++j) sd[j] = rd[j] = j;
  rc[me] = 2;
  expect_throw<InvalidArgument>([&] {
    c.all_to_all_v(a.data(), sc.data(), sd.data(), b.data(), rc.data(), rd.data(), DataType::kFloat32);
  }, "recv_counts", "self chunk mismatch");
  if (n < 2) return;
  // Cross-rank checks (SWITCHYARD_COMM_CHECK_ARGS=1 in this scenario's environment).
  expect_throw<InvalidArgument>([&] {
    c.all_reduce(a.data(), b.data(), me == 1 ? 3 : 4, DataType::kFloat32, ReduceOp::kSum);
  }, "rank 1 passed count 3, rank 0 passed 4", "count differs");
  rc[me] = 1;
  if (me == 0) rc[1] = 2;  // rank 0 expects 2 from rank 1, which sends 1
  expect_throw<InvalidArgument>([&] {
    c.all_to_all_v(a.data(), sc.data(), sd.data(), b.data(), rc.data(), rd.data(), DataType::kFloat32);
  }, "rank 1 sends 1 elements to rank 0, which expects 2", "a2a_v counts");
  expect_throw<InvalidArgument>([&] {
    if (me == 0)
      c.barrier();
    else
      c.broadcast(a.data(), 1, DataType::kFloat32, 0);
  }, "different order", "op order");
  // The communicator still works after argument errors caught before any transfer.
  float x = 1, s = 0;
  c.all_reduce(&x, &s, 1, DataType::kFloat32, ReduceOp::kSum);
  EXPECT(s == static_cast<float>(n), "all_reduce after argument errors");
}

// Small exchanges (the inline path of one node) against the naive reference. Per call each
// rank picks the blocking or the async form, and sometimes keeps an unrelated receive
// pending (which sends it down the op path) while the others go inline: both paths must
// match each other's messages. Sizes cross the inline limit (8128 bytes per peer).
void scenario_small(Communicator& c, uint32_t seed) {
  int n = c.size(), me = c.rank();
  std::mt19937 rng(seed);  // same sequence on every rank
  const size_t kPer[] = {0, 1, 2, 16, 100, 2032, 2033};  // int32 elements: 2032 = 8128 bytes
  auto value = [](int from, int to, size_t k, int it) {
    return static_cast<int32_t>(from * 100003 + to * 1009 + k * 7 + it);
  };
  int prev = (me + n - 1) % n, next = (me + 1) % n;
  for (int it = 0; it < 300; ++it) {
    bool async = (rng() >> (me % 16)) & 1;      // differs between ranks
    bool side_op = n > 1 && rng() % 5 == 0;      // every rank alike: a pending ring receive
    bool v = rng() % 2;
    std::vector<size_t> sc(n), sd(n), rc(n), rd(n);
    std::vector<size_t> C(static_cast<size_t>(n * n));
    size_t per = kPer[rng() % 7];
    for (auto& x : C) x = v ? kPer[rng() % 7] : per;
    size_t so = 0, ro = 0;
    for (int j = 0; j < n; ++j) {
      sc[j] = C[me * n + j];
      rc[j] = C[j * n + me];
      sd[j] = so;
      so += sc[j] + 1;  // a gap after every block
      rd[j] = ro;
      ro += rc[j] + 1;
    }
    std::vector<int32_t> send(so + 1), recv(ro + 1, -5);
    for (int j = 0; j < n; ++j)
      for (size_t k = 0; k < sc[j]; ++k) send[sd[j] + k] = value(me, j, k, it);
    int32_t side_in = -1, side_out = me * 10 + it;
    Work side;
    if (side_op && (me + it) % 2 == 0) side = c.irecv(&side_in, 4, prev, 3);  // half the ranks
    Work w;
    if (v) {
      if (async)
        w = c.iall_to_all_v(send.data(), sc.data(), sd.data(), recv.data(), rc.data(), rd.data(), DataType::kInt32);
      else
        c.all_to_all_v(send.data(), sc.data(), sd.data(), recv.data(), rc.data(), rd.data(), DataType::kInt32);
    } else {
      std::vector<int32_t> dense(per * n), out(per * n, -5);
      for (int j = 0; j < n; ++j)
        for (size_t k = 0; k < per; ++k) dense[j * per + k] = value(me, j, k, it);
      if (async) {
        c.iall_to_all(dense.data(), out.data(), per, DataType::kInt32).wait();
      } else {
        c.all_to_all(dense.data(), out.data(), per, DataType::kInt32);
      }
      for (int j = 0; j < n; ++j)
        for (size_t k = 0; k < per; ++k) recv[rd[j] + k] = out[j * per + k];
    }
    if (side_op && (next + it) % 2 == 0) c.send(&side_out, 4, next, 3);
    w.wait();
    side.wait();
    size_t bad = 0;
    for (int j = 0; j < n; ++j) {
      for (size_t k = 0; k < rc[j]; ++k) bad += recv[rd[j] + k] != value(j, me, k, it);
      if (v) bad += recv[rd[j] + rc[j]] != -5;  // gaps untouched
    }
    EXPECT(bad == 0, "small " << (v ? "all_to_all_v" : "all_to_all") << (async ? " async" : "") << " iteration "
                              << it << ": " << bad << " wrong");
    if (side_op && (me + it) % 2 == 0)
      EXPECT(side_in == prev * 10 + it, "side receive " << side_in);
    // Small all_reduce (one exchange of whole buffers): float sums in rank order, bit for
    // bit, blocking or async alike; in place on odd iterations.
    size_t count = 1 + rng() % 1024;  // up to 4 KiB of float32
    auto input = [](int r, size_t i, int k) { return static_cast<float>((r * 37 + i * 11 + k) % 101) / 7.f - 3.f; };
    std::vector<float> x(count), y(count, -1.f);
    for (size_t i = 0; i < count; ++i) x[i] = input(me, i, it);
    float* out = it % 2 ? x.data() : y.data();
    if (async)
      c.iall_reduce(x.data(), out, count, DataType::kFloat32, ReduceOp::kSum).wait();
    else
      c.all_reduce(x.data(), out, count, DataType::kFloat32, ReduceOp::kSum);
    bad = 0;
    for (size_t i = 0; i < count; ++i) {
      float want = input(0, i, it);
      for (int r = 1; r < n; ++r) want += input(r, i, it);
      bad += std::memcmp(&out[i], &want, 4) != 0;
    }
    EXPECT(bad == 0, "small all_reduce iteration " << it << " (count " << count << "): " << bad << " differ");
  }
  // An async small exchange completes while its caller computes without calling the
  // library (the progress thread picks up the receives), even when the peers come late.
  std::vector<int64_t> a(n, me), b(n, -1);
  if (me != 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  Work w = c.iall_to_all(a.data(), b.data(), 1, DataType::kInt64);
  volatile double acc = 0;
  auto until = Clock::now() + std::chrono::milliseconds(300);
  while (Clock::now() < until)
    for (int i = 0; i < 10000; ++i) acc = acc + std::sqrt(static_cast<double>(i));
  EXPECT(w.test(), "small async all_to_all not finished after 300 ms of compute");
  w.wait();
  for (int j = 0; j < n; ++j) EXPECT(b[j] == j, "async small all_to_all from rank " << j << ": " << b[j]);
}

void scenario_mismatch(Communicator& c) {
  int n = c.size(), me = c.rank();
  std::vector<size_t> sc(n, 1), sd(n), rc(n, 1), rd(n);
  for (int j = 0; j < n; ++j) sd[j] = rd[j] = 2 * j;
  if (me == 1) sc[0] = 2;  // rank 0 expects 1 element from rank 1
  std::vector<int32_t> a(2 * n, 1), b(2 * n, 0);
  auto call = [&] { c.all_to_all_v(a.data(), sc.data(), sd.data(), b.data(), rc.data(), rd.data(), DataType::kInt32); };
  if (me == 0)
    expect_throw<InvalidArgument>(call, "message from rank 1 has 8 bytes but the receive holds 4", "small size mismatch");
  else
    call();
}

}  // namespace

int main(int argc, char** argv) {
  std::string scenario = argc > 1 ? argv[1] : "ops";
  uint32_t seed = argc > 2 ? static_cast<uint32_t>(std::atoi(argv[2])) : 1;
  const char* r = std::getenv("SY_RANK");
  g_rank = r ? std::atoi(r) : 0;
  InitOptions options;
  if (const char* t = std::getenv("COMM_TEST_TIMEOUT_MS")) options.timeout = std::chrono::milliseconds(std::atoi(t));
  try {
    if (scenario == "arrive") {
      expect_throw<Timeout>([&] { Communicator::init(options); }, std::getenv("COMM_TEST_EXPECT"), "missing rank");
    } else if (scenario == "badtoken") {
      if (g_rank == 1)
        expect_throw<InvalidArgument>([&] { Communicator::init(options); }, "token", "bad token");
      else
        expect_throw<Timeout>([&] { Communicator::init(options); }, "rank 1 did not arrive", "bad token peer");
    } else {
      auto c = Communicator::init(options);
      if (scenario == "ops")
        scenario_ops(*c, seed);
      else if (scenario == "split")
        scenario_split(*c);
      else if (scenario == "async")
        scenario_async(*c);
      else if (scenario == "timeout")
        scenario_timeout(*c);
      else if (scenario == "dead")
        scenario_dead(*c);
      else if (scenario == "hung")
        scenario_hung(*c);
      else if (scenario == "abort")
        scenario_abort(*c);
      else if (scenario == "badargs")
        scenario_badargs(*c);
      else if (scenario == "small")
        scenario_small(*c, seed);
      else if (scenario == "mismatch")
        scenario_mismatch(*c);
      else {
        std::cerr << "unknown scenario " << scenario << "\n";
        return 2;
      }
      if (scenario != "dead" && scenario != "hung" && scenario != "abort" && scenario != "mismatch") c->barrier();
    }
  } catch (const std::exception& e) {
    std::cerr << "rank " << g_rank << ": FAILED with exception: " << e.what() << std::endl;
    return 1;
  }
  if (g_failures) return 1;
  std::cout << "rank " << g_rank << ": ok" << std::endl;
  return 0;
}
