// Executor (executor.h): asynchronous P2P batches over comm, compute through callbacks.
#include "switchyard/pipeline/executor.h"

#include <time.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "switchyard/common/error.h"
#include "switchyard/pipeline/timeline.h"
#include "switchyard/pipeline/verifier.h"

namespace switchyard::pipeline {

namespace {

double now_seconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Tensors are named (is_grad, stage, microbatch); the replica is implied by the ranks.
struct TensorName {
  int grad, stage, mb;
  auto operator<=>(const TensorName&) const = default;
};

}  // namespace

struct Executor::Impl {
  std::shared_ptr<comm::Communicator> comm;
  Schedule s;
  size_t elems;
  StageCallbacks cb;
  int rank;
  std::map<int, std::shared_ptr<comm::Communicator>> reduce_comm;  // stage -> holders

  // Per step.
  std::map<TensorName, std::vector<double>> produced;  // outputs and input grads made here
  std::map<TensorName, std::vector<double>> received;
  std::map<TensorName, size_t> arrival;                // recv tensor -> index of its batch
  struct Batch {
    comm::Work work;
    double post;
    double done = -1;  // when completion was first observed (polled between chunks)
    std::vector<Action> ops;
  };
  std::vector<Batch> batches;
  std::vector<SimEvent>* events = nullptr;

  int flow_id(const TensorName& t) const {
    return ((s.replica(rank) * 2 + t.grad) * s.num_stages + t.stage) * s.num_microbatches + t.mb;
  }
  int tag(const TensorName& t) const { return flow_id(t) % (1 << 27); }

  std::vector<double>& out_buffer(const TensorName& t) {
    auto& v = produced[t];
    v.assign(elems, 0.0);
    return v;
  }

  // Input tensor of a chunk: produced locally (V turn) or received (waits for its batch).
  const double* input(const TensorName& t, int producer_rank) {
    if (producer_rank == rank) {
      auto it = produced.find(t);
      SY_CHECK(it != produced.end());
      return it->second.data();
    }
    auto w = arrival.find(t);
    SY_REQUIRE(w != arrival.end(), "executor rank " << rank << ": tensor (grad=" << t.grad << ", stage " << t.stage
                                                    << ", mb " << t.mb << ") was never received");
    Batch& b = batches[w->second];
    if (b.done < 0) {
      b.work.wait();
      b.done = now_seconds();
    }
    return received.at(t).data();
  }

  void post_batch(const std::vector<Action>& ops) {
    std::vector<comm::P2POp> p2p;
    const double post = now_seconds();
    comm::Work work;
    for (const Action& a : ops) {
      const int grad = (a.kind == OpKind::kSendGrad || a.kind == OpKind::kRecvGrad) ? 1 : 0;
      TensorName t{grad, a.stage, a.microbatch};
      comm::P2POp op;
      op.peer = a.peer;
      op.tag = tag(t);
      op.bytes = elems * sizeof(double);
      if (is_send(a.kind)) {
        op.kind = comm::P2POp::Kind::kSend;
        op.buf = produced.at(t).data();
      } else {
        op.kind = comm::P2POp::Kind::kRecv;
        auto& buf = received[t];
        buf.assign(elems, 0.0);
        op.buf = buf.data();
      }
      p2p.push_back(op);
    }
    work = comm->ibatch_send_recv(p2p);
    for (const Action& a : ops)
      if (is_recv(a.kind)) arrival[{a.kind == OpKind::kRecvGrad ? 1 : 0, a.stage, a.microbatch}] = batches.size();
    batches.push_back({work, post, -1.0, ops});
  }

  void record(bool is_comm, double start, double end, const Action& a, int flow) {
    SimEvent e;
    e.rank = rank;
    e.comm = is_comm;
    e.start = start;
    e.end = end;
    e.action = a;
    e.action.sub_steps.clear();
    e.flow_id = flow;
    events->push_back(std::move(e));
  }

  void forward(const Action& a, const double** in, double** out) {
    const int rep = s.replica(rank);
    *in = a.stage == 0 ? nullptr : input({0, a.stage - 1, a.microbatch}, s.rank_of(a.stage - 1, a.microbatch, rep));
    *out = out_buffer({0, a.stage, a.microbatch}).data();
  }
  void backward(int stage, int mb, const double** grad_out, double** grad_in) {
    const int rep = s.replica(rank);
    *grad_out = stage + 1 == s.num_stages ? nullptr : input({1, stage + 1, mb}, s.rank_of(stage + 1, mb, rep));
    *grad_in = stage == 0 ? nullptr : out_buffer({1, stage, mb}).data();
  }

  void compute(const Action& a) {
    const double* in = nullptr;
    double* out = nullptr;
    const double* gout = nullptr;
    double* gin = nullptr;
    // Inputs are waited for before the clock starts: the event shows compute only.
    switch (a.kind) {
      case OpKind::kForward: forward(a, &in, &out); break;
      case OpKind::kBackwardInput:
      case OpKind::kBackward: backward(a.stage, a.microbatch, &gout, &gin); break;
      case OpKind::kForwardBackward:
        forward(a, &in, &out);
        backward(a.bwd_stage, a.bwd_microbatch, &gout, &gin);
        break;
      default: break;
    }
    const double start = now_seconds();
    switch (a.kind) {
      case OpKind::kForward: cb.forward(a.stage, a.microbatch, in, out); break;
      case OpKind::kBackwardInput: cb.backward_input(a.stage, a.microbatch, gout, gin); break;
      case OpKind::kBackwardWeight: cb.backward_weight(a.stage, a.microbatch); break;
      case OpKind::kBackward:
        cb.backward_input(a.stage, a.microbatch, gout, gin);
        cb.backward_weight(a.stage, a.microbatch);
        break;
      case OpKind::kForwardBackward:
        if (cb.forward_backward) {
          cb.forward_backward(a.stage, a.microbatch, in, out, a.bwd_stage, a.bwd_microbatch, gout, gin);
        } else {
          cb.forward(a.stage, a.microbatch, in, out);
          cb.backward_input(a.bwd_stage, a.bwd_microbatch, gout, gin);
          cb.backward_weight(a.bwd_stage, a.bwd_microbatch);
        }
        break;
      default: SY_CHECK(false);
    }
    record(false, start, now_seconds(), a, -1);
  }

  void reduce(const Action& a) {
    auto it = reduce_comm.find(a.stage);
    SY_CHECK(it != reduce_comm.end());
    std::span<double> g = cb.gradients(a.stage);
    const double start = now_seconds();
    it->second->all_reduce(g.data(), g.data(), g.size(), comm::DataType::kFloat64, comm::ReduceOp::kSum);
    record(true, start, now_seconds(), a, -1);
  }

  // Notes the completion time of batches that finished (a non-blocking test per open batch).
  void poll() {
    for (size_t i = first_open; i < batches.size(); ++i) {
      Batch& b = batches[i];
      if (b.done < 0 && b.work.test()) b.done = now_seconds();
    }
    while (first_open < batches.size() && batches[first_open].done >= 0) ++first_open;
  }
  size_t first_open = 0;

  // Waits for every batch and records its P2P events (end = when completion was observed).
  void finish_batches() {
    for (Batch& b : batches) {
      if (b.done < 0) {
        b.work.wait();
        b.done = now_seconds();
      }
      const double end = b.done;
      for (const Action& a : b.ops) {
        const int grad = (a.kind == OpKind::kSendGrad || a.kind == OpKind::kRecvGrad) ? 1 : 0;
        record(true, b.post, end, a, flow_id({grad, a.stage, a.microbatch}));
      }
    }
  }
};

Executor::Executor(std::shared_ptr<comm::Communicator> comm, Schedule schedule, size_t activation_elems,
                   StageCallbacks callbacks)
    : impl_(std::make_unique<Impl>()) {
  SY_REQUIRE(comm != nullptr, "Executor: null communicator");
  SY_REQUIRE(schedule.num_ranks() == comm->size(),
             "Executor: schedule '" << schedule.name << "' has " << schedule.num_ranks() << " ranks but the communicator has "
                                    << comm->size());
  SY_REQUIRE(activation_elems > 0, "Executor: activation_elems must be > 0");
  SY_REQUIRE(callbacks.forward && callbacks.backward_input && callbacks.backward_weight,
             "Executor: forward, backward_input and backward_weight callbacks are required");
  verify(schedule);
  Impl& m = *impl_;
  m.comm = std::move(comm);
  m.s = std::move(schedule);
  m.elems = activation_elems;
  m.cb = std::move(callbacks);
  m.rank = m.comm->rank();
  // One sub-communicator per replicated stage (same split order on every rank).
  for (int rep = 0; rep < m.s.num_replicas; ++rep) {
    for (int st = 0; st < m.s.num_stages; ++st) {
      std::set<int> holders;
      for (const auto& path : m.s.paths) holders.insert(rep * m.s.pp_ranks() + path[st]);
      if (holders.size() < 2) continue;
      const bool member = holders.count(m.rank) > 0;
      auto sub = m.comm->split(member ? rep * m.s.num_stages + st : -1, m.rank);
      if (member) m.reduce_comm[st] = sub;
    }
  }
  if (!m.reduce_comm.empty())
    SY_REQUIRE(m.cb.gradients, "Executor: schedule '" << m.s.name << "' reduces mirrored gradients; the gradients callback is required");
}

Executor::~Executor() = default;

void Executor::run() {
  Impl& m = *impl_;
  events_.clear();
  m.events = &events_;
  m.produced.clear();
  m.received.clear();
  m.arrival.clear();
  m.batches.clear();
  m.first_open = 0;
  const auto& list = m.s.ranks[m.rank];
  for (size_t i = 0; i < list.size();) {
    if (is_p2p(list[i].kind)) {
      size_t j = i;
      while (j < list.size() && is_p2p(list[j].kind)) ++j;
      m.post_batch(std::vector<Action>(list.begin() + i, list.begin() + j));
      i = j;
      continue;
    }
    m.poll();
    if (list[i].kind == OpKind::kReduceGrad)
      m.reduce(list[i]);
    else
      m.compute(list[i]);
    m.poll();
    ++i;
  }
  m.finish_batches();
}

void Executor::add_sub_step_events(const std::vector<SubStepEvent>& sub_steps) {
  for (const SubStepEvent& x : sub_steps) {
    SimEvent e;
    e.rank = impl_->rank;
    e.comm = x.collective;
    e.start = x.start;
    e.end = x.end;
    e.action = make_compute(x.step.backward ? OpKind::kBackward : OpKind::kForward, x.step.stage, x.step.microbatch);
    e.action.sub_steps = {x.step};
    events_.push_back(std::move(e));
  }
}

void Executor::write_trace(const std::string& path) {
  Impl& m = *impl_;
  nlohmann::json mine = nlohmann::json::array();
  for (const SimEvent& e : events_)
    mine.push_back({{"comm", e.comm}, {"start", e.start}, {"end", e.end}, {"op", static_cast<int>(e.action.kind)},
                    {"stage", e.action.stage}, {"mb", e.action.microbatch}, {"peer", e.action.peer},
                    {"bs", e.action.bwd_stage}, {"bm", e.action.bwd_microbatch}, {"flow", e.flow_id},
                    {"sub", e.action.sub_steps.empty() ? -1 : static_cast<int>(e.action.sub_steps[0].kind)},
                    {"sub_layer", e.action.sub_steps.empty() ? 0 : e.action.sub_steps[0].layer}});
  const std::string text = mine.dump();
  const int tag = (1 << 27) - 1;
  if (m.rank != 0) {
    uint64_t n = text.size();
    m.comm->send(&n, sizeof n, 0, tag);
    m.comm->send(text.data(), n, 0, tag);
    return;
  }
  std::vector<SimEvent> all = events_;
  for (int r = 1; r < m.comm->size(); ++r) {
    uint64_t n = 0;
    m.comm->recv(&n, sizeof n, r, tag);
    std::string buf(n, '\0');
    m.comm->recv(buf.data(), n, r, tag);
    for (const auto& j : nlohmann::json::parse(buf)) {
      SimEvent e;
      e.rank = r;
      e.comm = j["comm"];
      e.start = j["start"];
      e.end = j["end"];
      e.action.kind = static_cast<OpKind>(j["op"].get<int>());
      e.action.stage = j["stage"];
      e.action.microbatch = j["mb"];
      e.action.peer = j["peer"];
      e.action.bwd_stage = j["bs"];
      e.action.bwd_microbatch = j["bm"];
      e.flow_id = j["flow"];
      if (j["sub"].get<int>() >= 0) {
        SubStep x;
        x.kind = static_cast<SubStepKind>(j["sub"].get<int>());
        x.backward = e.action.kind == OpKind::kBackward;
        x.layer = j["sub_layer"];
        x.stage = e.action.stage;
        x.microbatch = e.action.microbatch;
        e.action.sub_steps = {x};
      }
      all.push_back(e);
    }
  }
  double t0 = all.empty() ? 0 : all.front().start;
  for (const auto& e : all) t0 = std::min(t0, e.start);
  for (auto& e : all) {
    e.start -= t0;
    e.end -= t0;
  }
  std::ofstream out(path);
  SY_REQUIRE(out.good(), "Executor::write_trace: cannot write " << path);
  out << chrome_trace(all, m.comm->size(), 1e6).dump(1);
}

}  // namespace switchyard::pipeline
