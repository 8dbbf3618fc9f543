// sy-a2a-perf: nccl-tests-style sweep of Switchyard's all_to_all, all_to_all_v, all_reduce
// and point-to-point, optionally against Open MPI in the same job.
//
//   sy-run -n 4 -- sy-a2a-perf -b 8 -e 256M -f 2 -c 1 --op all_to_all
//   mpirun -np 2 sy-a2a-perf --op all_to_all --baseline mpi --repeat 5     (see mpi_baseline.h)
//
// Output (rank 0): one line per size with size (bytes each rank sends), count (elements),
// type, redop, time (us, slowest rank, median of --repeat samples), algbw and busbw (GB/s,
// nccl-tests conventions, perf_case.h) and #wrong (elements that differ from the reference
// over all ranks, with -c 1); with --baseline mpi the same columns for MPI and the ratio
// of our busbw to MPI's. Samples of the two alternate per size (interleaved). --json
// prints one JSON document instead of the table.
#include <gflags/gflags.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mpi_baseline.h"
#include "perf_backend.h"
#include "perf_case.h"
#include "switchyard/comm/communicator.h"
#include "switchyard/common/error.h"

DEFINE_string(b, "8", "smallest size in bytes each rank sends (suffix K, M, G)");
DEFINE_string(e, "256M", "largest size in bytes (suffix K, M, G)");
DEFINE_int32(f, 2, "size multiplication factor between steps (> 1)");
DEFINE_int32(w, 5, "warm-up calls per size and implementation");
DEFINE_int32(n, 20, "minimum timed calls per sample");
DEFINE_double(min_ms, 20, "grow the calls per sample until one sample takes about this long (ms)");
DEFINE_int32(max_iters, 10000, "most timed calls per sample");
DEFINE_double(warmup_ms, 0,
              "before the sweep, run the first size's call for about this long (ms, untimed): a fresh "
              "connection and the scheduler settle (over UCX tcp the first ~250 ms run at about half rate)");
DEFINE_int32(c, 1, "1: check every result against the reference (#wrong), 0: skip");
DEFINE_string(op, "all_to_all", "all_to_all, all_to_all_v, all_reduce or p2p (rank 0 -> rank 1)");
DEFINE_string(dtype, "float32", "float32, float64, bfloat16, int32, int64");
DEFINE_string(redop, "sum", "all_reduce operator: sum, max, min");
DEFINE_double(imbalance, 0, "all_to_all_v: each peer's share varies by +- this fraction of the mean");
DEFINE_string(baseline, "", "\"mpi\": also run Open MPI in the same job (start with mpirun)");
DEFINE_int32(repeat, 1, "samples per size; the median is printed (ours and MPI alternate)");
DEFINE_bool(registered, true, "use the communicator's registered (shared-memory) buffers");
DEFINE_bool(json, false, "print one JSON document instead of the table");
DEFINE_bool(async, false, "time the async form (iall_to_all(...).wait()) instead of the blocking call");
DEFINE_int32(virtual_nodes, 1, "under mpirun: spread the ranks over this many virtual nodes (SY_NODE)");
DEFINE_int32(window, 1,
             "p2p: messages in flight (rank 0 posts this many isends, rank 1 as many irecvs into separate "
             "buffers, then both wait), like ucx_perftest's outstanding sends; time and bandwidth per message");

namespace switchyard::tools {
namespace {

using comm::Communicator;
using comm::DataType;
using json = nlohmann::json;

size_t parse_size(const std::string& text, const char* flag) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(text, &pos);
  } catch (const std::exception&) {
    SY_THROW(InvalidArgument, "-" << flag << " " << text << " is not a size");
  }
  std::string suffix = text.substr(pos);
  double mult = suffix.empty()                   ? 1
                : suffix == "K" || suffix == "k" ? 1024.0
                : suffix == "M" || suffix == "m" ? 1048576.0
                : suffix == "G" || suffix == "g" ? 1073741824.0
                                                 : -1;
  SY_REQUIRE(mult > 0 && v > 0, "-" << flag << " " << text << " is not a size (e.g. 8, 64K, 256M)");
  return static_cast<size_t>(v * mult);
}

// Switchyard's comm library as a PerfBackend.
class CommBackend : public PerfBackend {
 public:
  explicit CommBackend(std::shared_ptr<Communicator> comm) : comm_(std::move(comm)) {}
  const char* name() const override { return "switchyard"; }
  int rank() const override { return comm_->rank(); }
  int size() const override { return comm_->size(); }
  bool supports(PerfOp, DataType) const override { return true; }
  void run(const PerfCall& c) override {
    const PerfLayout& l = *c.layout;
    switch (c.op) {
      case PerfOp::kAllToAll:
        if (FLAGS_async)
          comm_->iall_to_all(c.send, c.recv, l.send_counts[0], c.type).wait();
        else
          comm_->all_to_all(c.send, c.recv, l.send_counts[0], c.type);
        return;
      case PerfOp::kAllToAllV:
        if (FLAGS_async)
          comm_->iall_to_all_v(c.send, l.send_counts.data(), l.send_displs.data(), c.recv, l.recv_counts.data(),
                               l.recv_displs.data(), c.type).wait();
        else
          comm_->all_to_all_v(c.send, l.send_counts.data(), l.send_displs.data(), c.recv, l.recv_counts.data(),
                              l.recv_displs.data(), c.type);
        return;
      case PerfOp::kAllReduce:
        if (FLAGS_async)
          comm_->iall_reduce(c.send, c.recv, l.count, c.type, c.redop).wait();
        else
          comm_->all_reduce(c.send, c.recv, l.count, c.type, c.redop);
        return;
      case PerfOp::kP2P: {
        size_t bytes = l.count * comm::dtype_size(c.type);
        if (window_ <= 1) {
          if (rank() == 0) comm_->send(c.send, bytes, 1, 0);
          if (rank() == 1) comm_->recv(c.recv, bytes, 0, 0);
          return;
        }
        std::vector<comm::Work> works;
        works.reserve(static_cast<size_t>(window_));
        for (int i = 0; i < window_; ++i) {
          if (rank() == 0) works.push_back(comm_->isend(c.send, bytes, 1, 0));
          if (rank() == 1) works.push_back(comm_->irecv(static_cast<uint8_t*>(c.recv) + i * recv_stride_, bytes, 0, 0));
        }
        for (auto& w : works) w.wait();
        return;
      }
    }
  }
  // p2p with --window W: W messages per call, receive i at recv + i * recv_stride.
  void set_p2p_window(int window, size_t recv_stride) {
    window_ = window;
    recv_stride_ = recv_stride;
  }
  void p2p_ack() override {
    if (rank() == 1) comm_->send(&ack_, 0, 0, 1);
    if (rank() == 0) comm_->recv(&ack_, 0, 1, 1);
  }
  void barrier() override { comm_->barrier(); }
  double max_over_ranks(double v) override {
    double out = 0;
    comm_->all_reduce(&v, &out, 1, DataType::kFloat64, comm::ReduceOp::kMax);
    return out;
  }
  int64_t sum_over_ranks(int64_t v) override {
    int64_t out = 0;
    comm_->all_reduce(&v, &out, 1, DataType::kInt64, comm::ReduceOp::kSum);
    return out;
  }

 private:
  std::shared_ptr<Communicator> comm_;
  uint8_t ack_ = 0;
  int window_ = 1;
  size_t recv_stride_ = 0;
};

// Seconds per call (slowest rank) over `iters` back-to-back calls.
double time_calls(PerfBackend& b, const PerfCall& call, int iters) {
  b.barrier();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) b.run(call);
  if (call.op == PerfOp::kP2P) b.p2p_ack();
  double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
  if (call.op == PerfOp::kP2P) t /= FLAGS_window;  // per message (--window messages per call)
  return b.max_over_ranks(t);
}

// Elements over all ranks that differ from the reference after one call.
int64_t check_once(PerfBackend& b, PerfCall call, const PerfLayout& l, int ranks) {
  fill_send(call.op, l, call.type, b.rank(), ranks, const_cast<void*>(call.send));
  poison_recv(l, call.type, call.recv);
  b.run(call);
  return b.sum_over_ranks(
      static_cast<int64_t>(count_wrong(call.op, l, call.type, call.redop, b.rank(), ranks, call.recv)));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Memory for one buffer: registered with the communicator, or plain page-aligned memory.
class PerfBuffer {
 public:
  PerfBuffer(Communicator& comm, size_t bytes, bool registered) {
    bytes = std::max<size_t>(bytes, 64);
    if (registered) {
      reg_ = comm.alloc_registered(bytes);
      data_ = reg_->data();
    } else {
      plain_ = static_cast<uint8_t*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096));
      SY_REQUIRE(plain_ != nullptr, "sy-a2a-perf: cannot allocate " << bytes << " bytes");
      data_ = plain_;
    }
    std::memset(data_, 0, bytes);  // fault the pages in before timing
  }
  ~PerfBuffer() { std::free(plain_); }
  PerfBuffer(const PerfBuffer&) = delete;
  PerfBuffer& operator=(const PerfBuffer&) = delete;
  void* data() { return data_; }

 private:
  std::shared_ptr<comm::RegisteredBuffer> reg_;
  uint8_t* plain_ = nullptr;
  void* data_ = nullptr;
};

struct Sample {
  double time_us = 0, algbw = 0, busbw = 0;
  int64_t wrong = 0;
  std::vector<double> samples_us;
};

json sample_json(const Sample& s) {
  return json{{"time_us", s.time_us},
              {"algbw_gbps", s.algbw},
              {"busbw_gbps", s.busbw},
              {"wrong", s.wrong},
              {"samples_us", s.samples_us}};
}

int run(int argc, char** argv) {
  const PerfOp op = parse_perf_op(FLAGS_op);
  const DataType type = parse_dtype(FLAGS_dtype);
  const comm::ReduceOp redop = parse_reduce_op(FLAGS_redop);
  const size_t min_bytes = parse_size(FLAGS_b, "b"), max_bytes = parse_size(FLAGS_e, "e");
  SY_REQUIRE(min_bytes <= max_bytes, "-b " << FLAGS_b << " is larger than -e " << FLAGS_e);
  SY_REQUIRE(FLAGS_f > 1, "-f " << FLAGS_f << " must be > 1");
  SY_REQUIRE(FLAGS_repeat >= 1 && FLAGS_n >= 1 && FLAGS_w >= 0, "-n, -w and --repeat must be positive");
  SY_REQUIRE(FLAGS_baseline.empty() || FLAGS_baseline == "mpi", "--baseline " << FLAGS_baseline << " is not \"mpi\"");
  const bool want_mpi = FLAGS_baseline == "mpi";
  SY_REQUIRE(FLAGS_window >= 1, "--window " << FLAGS_window << " must be >= 1");
  SY_REQUIRE(FLAGS_window == 1 || (op == PerfOp::kP2P && !want_mpi),
             "--window " << FLAGS_window << " applies to --op p2p without --baseline mpi");

  // Under mpirun, MPI starts first and hands the rendezvous to the comm bootstrap.
  std::unique_ptr<PerfBackend> mpi;
  if (launched_by_mpirun() && mpi_built_in()) {
    mpi = make_mpi_baseline(&argc, &argv, FLAGS_virtual_nodes);
  } else if (want_mpi) {
    SY_THROW(InvalidArgument,
             "--baseline mpi needs the job to be started by mpirun" << (mpi_built_in() ? "" : " and a build with MPI"));
  }
  std::shared_ptr<Communicator> comm = Communicator::init();
  CommBackend ours(comm);
  const int rank = comm->rank(), ranks = comm->size();
  SY_REQUIRE(op != PerfOp::kP2P || ranks >= 2, "--op p2p needs at least 2 ranks, the job has " << ranks);
  if (mpi) SY_REQUIRE(mpi->rank() == rank, "MPI rank " << mpi->rank() << " differs from comm rank " << rank);
  PerfBackend* baseline = want_mpi ? mpi.get() : nullptr;

  std::vector<size_t> sizes;
  for (size_t s = min_bytes; s <= max_bytes; s *= static_cast<size_t>(FLAGS_f)) sizes.push_back(s);
  size_t send_cap = 0, recv_cap = 0;
  for (size_t s : sizes) {
    PerfLayout l = make_layout(op, s, type, rank, ranks, FLAGS_imbalance);
    send_cap = std::max(send_cap, l.send_elems);
    recv_cap = std::max(recv_cap, l.recv_elems);
  }
  const size_t el = comm::dtype_size(type);
  PerfBuffer send_buf(*comm, send_cap * el, FLAGS_registered),
      recv_buf(*comm, recv_cap * el * static_cast<size_t>(FLAGS_window), FLAGS_registered);
  ours.set_p2p_window(FLAGS_window, recv_cap * el);

  json doc{{"tool", "sy-a2a-perf"},
           {"op", perf_op_name(op)},
           {"ranks", ranks},
           {"nodes", comm->rank_map().num_nodes()},
           {"dtype", comm::dtype_name(type)},
           {"redop", comm::reduce_op_name(redop)},
           {"baseline", FLAGS_baseline},
           {"repeat", FLAGS_repeat},
           {"registered", FLAGS_registered},
           {"imbalance", FLAGS_imbalance},
           {"window", FLAGS_window},
           {"warmup_ms", FLAGS_warmup_ms},
           {"results", json::array()}};
  const bool print = rank == 0 && !FLAGS_json;
  if (print) {
    std::printf("# sy-a2a-perf: %s, %d ranks on %d nodes, %s, redop %s, check %d, repeat %d (median), %s buffers",
                perf_op_name(op), ranks, comm->rank_map().num_nodes(), comm::dtype_name(type),
                comm::reduce_op_name(redop), FLAGS_c, FLAGS_repeat, FLAGS_registered ? "registered" : "plain");
    if (FLAGS_window > 1) std::printf(", %d messages in flight", FLAGS_window);
    if (FLAGS_warmup_ms > 0) std::printf(", %g ms warm-up", FLAGS_warmup_ms);
    std::printf("\n");
    std::printf("#\n#%12s %13s %9s %6s %9s %8s %8s %6s", "size", "count", "type", "redop", "time", "algbw", "busbw",
                "#wrong");
    if (baseline) std::printf(" | %9s %8s %8s %6s | %6s", "mpi time", "algbw", "busbw", "#wrong", "ratio");
    std::printf("\n#%12s %13s %9s %6s %9s %8s %8s %6s", "(B)", "(elements)", "", "", "(us)", "(GB/s)", "(GB/s)", "");
    if (baseline) std::printf(" | %9s %8s %8s %6s | %6s", "(us)", "(GB/s)", "(GB/s)", "", "busbw");
    std::printf("\n");
  }

  if (FLAGS_warmup_ms > 0 && !sizes.empty()) {
    // Untimed calls of the first size, the same count on every rank.
    PerfLayout layout = make_layout(op, sizes.front(), type, rank, ranks, FLAGS_imbalance);
    PerfCall call{op, &layout, type, redop, send_buf.data(), recv_buf.data()};
    double one = time_calls(ours, call, 1);
    int calls = std::clamp(static_cast<int>(FLAGS_warmup_ms * 1e-3 / std::max(one, 1e-9)), 1, 100000);
    calls = static_cast<int>(ours.max_over_ranks(calls));
    time_calls(ours, call, calls);
  }

  double busbw_sum = 0;
  int64_t wrong_total = 0;
  for (size_t s : sizes) {
    PerfLayout layout = make_layout(op, s, type, rank, ranks, FLAGS_imbalance);
    PerfCall call{op, &layout, type, redop, send_buf.data(), recv_buf.data()};
    const bool run_base = baseline != nullptr && baseline->supports(op, type);
    // nccl-tests "size": bytes each rank sends (all_to_all_v: the mean over ranks).
    const int64_t count = ours.sum_over_ranks(static_cast<int64_t>(layout.count)) / ranks;
    const double bytes = static_cast<double>(count) * el;

    Sample mine, base;
    if (FLAGS_c) {
      mine.wrong = check_once(ours, call, layout, ranks);
      if (run_base) base.wrong = check_once(*baseline, call, layout, ranks);
    }
    fill_send(op, layout, type, rank, ranks, send_buf.data());
    for (int i = 0; i < FLAGS_w; ++i) ours.run(call);
    if (run_base) {
      for (int i = 0; i < FLAGS_w; ++i) baseline->run(call);
    }
    // Calls per sample: at least -n, about --min_ms per sample, the same on every rank.
    double one = time_calls(ours, call, 1);
    int iters = std::clamp(static_cast<int>(FLAGS_min_ms * 1e-3 / std::max(one, 1e-9)), FLAGS_n, FLAGS_max_iters);
    iters = static_cast<int>(ours.max_over_ranks(iters));
    for (int r = 0; r < FLAGS_repeat; ++r) {
      mine.samples_us.push_back(time_calls(ours, call, iters) * 1e6);
      if (run_base) base.samples_us.push_back(time_calls(*baseline, call, iters) * 1e6);
    }
    const double factor = bus_factor(op, ranks);
    for (Sample* smp : {&mine, &base}) {
      if (smp->samples_us.empty()) continue;
      smp->time_us = median(smp->samples_us);
      smp->algbw = bytes / (smp->time_us * 1e-6) / 1e9;
      smp->busbw = smp->algbw * factor;
    }
    busbw_sum += mine.busbw;
    wrong_total += mine.wrong + base.wrong;
    json row{
        {"size", static_cast<int64_t>(bytes)}, {"count", count}, {"iters", iters}, {"switchyard", sample_json(mine)}};
    if (run_base) {
      row["mpi"] = sample_json(base);
      row["ratio_busbw"] = mine.busbw / base.busbw;
      row["ratio_time"] = base.time_us / mine.time_us;
    }
    doc["results"].push_back(row);
    if (print) {
      std::printf(" %12.0f %13lld %9s %6s %9.2f %8.3f %8.3f %6lld", bytes, static_cast<long long>(count),
                  comm::dtype_name(type), op == PerfOp::kAllReduce ? comm::reduce_op_name(redop) : "none", mine.time_us,
                  mine.algbw, mine.busbw, static_cast<long long>(mine.wrong));
      if (run_base) {
        std::printf(" | %9.2f %8.3f %8.3f %6lld | %6.2f", base.time_us, base.algbw, base.busbw,
                    static_cast<long long>(base.wrong), mine.busbw / base.busbw);
      } else if (baseline) {
        std::printf(" | %9s %8s %8s %6s | %6s", "n/a", "", "", "", "");
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  if (print) {
    std::printf("# Out of bounds values : %lld %s\n", static_cast<long long>(wrong_total),
                wrong_total ? "FAILED" : "OK");
    std::printf("# Avg bus bandwidth    : %g\n#\n", busbw_sum / static_cast<double>(sizes.size()));
  }
  if (rank == 0 && FLAGS_json) std::cout << doc.dump(1) << std::endl;
  comm->barrier();
  comm.reset();
  mpi.reset();
  return wrong_total == 0 ? 0 : 2;
}

}  // namespace
}  // namespace switchyard::tools

int main(int argc, char** argv) {
  gflags::SetUsageMessage("nccl-tests-style sweep of all_to_all(_v), all_reduce and p2p; --baseline mpi under mpirun");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  try {
    return switchyard::tools::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sy-a2a-perf: %s\n", e.what());
    return 1;
  }
}
