// Python bindings of the dispatch library over torch tensors (switchyard._C.Buffer).
//
// Thin: every call borrows the torch tensors' storage as the DispatchArgs/CombineArgs of
// switchyard/dispatch/buffer.h (no copy when they are contiguous), calls the C++ Buffer with
// the GIL released, and moves the result vectors into tensors (each tensor's deleter owns its
// vector: no copy out). The large payload results of dispatch and combine (expert_x, recv_x,
// y) are written into arrays recycled from earlier results the caller has dropped
// (ResultPool: never one a live tensor still sees). No exchange logic lives here.
// Constraints: CPU tensors only (CUDA once the GPU backend exists); payloads float32,
// bfloat16, or FP8 E4M3 given as a (uint8 codes [T, H], float32 scales [T, ceil(H/128)])
// pair as in DeepEP; inputs that are not contiguous are made contiguous (a copy); topk_idx
// int64; weights float32. Async forms keep their input tensors alive until wait().
// Profiling (Buffer(..., profile=True)): the exchange is wrapped in a timer and each blocking
// call records where its time went (argument conversion, the C++ call and, inside it, the
// exchange, result conversion); Buffer.profile() returns the sums. Off: one branch per call.
// This is the only translation unit that includes the (heavy) torch headers.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/common/error.h"
#include "switchyard/common/param.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/fp8.h"
#include "switchyard/dispatch/layout.h"

namespace py = pybind11;

namespace switchyard::python {
namespace {

using dispatch::Buffer;
using dispatch::Handle;

// Checks that a tensor lives on the CPU, has the expected rank and returns it contiguous.
at::Tensor cpu_contiguous(const at::Tensor& t, const char* what, int64_t dim) {
  SY_REQUIRE(t.defined(), what << " is undefined");
  if (!t.device().is_cpu()) {
    SY_THROW(Unsupported, what << " is on " << t.device().str()
                               << "; the CPU backend takes CPU tensors (CUDA needs the GPU backend)");
  }
  if (t.dim() != dim) SY_THROW(InvalidArgument, what << " has " << t.dim() << " dimensions, expected " << dim);
  return t.contiguous();
}

// A Python object that must be a torch.Tensor (InvalidArgument naming `what` otherwise).
at::Tensor as_tensor(const py::handle& obj, const char* what) {
  if (!THPVariable_Check(obj.ptr())) {
    SY_THROW(InvalidArgument, what << " is a " << py::str(obj.get_type().attr("__name__")).cast<std::string>()
                                   << ", expected a torch.Tensor");
  }
  return obj.cast<at::Tensor>();
}

comm::DataType payload_type(const at::Tensor& t, const char* what) {
  if (t.scalar_type() == at::kFloat) return comm::DataType::kFloat32;
  if (t.scalar_type() == at::kBFloat16) return comm::DataType::kBfloat16;
  SY_THROW(InvalidArgument, what << " has dtype " << c10::toString(t.scalar_type())
                                 << "; dispatch/combine take float32 or bfloat16 (FP8: dispatch takes a "
                                    "(uint8 codes, float32 scales) pair)");
}

at::ScalarType torch_type(comm::DataType t) {
  switch (t) {
    case comm::DataType::kFloat32: return at::kFloat;
    case comm::DataType::kBfloat16: return at::kBFloat16;
    case comm::DataType::kFloat8E4M3: return at::kByte;  // raw E4M3 bits
    default: SY_THROW(InvalidArgument, "no torch type for " << comm::dtype_name(t));
  }
}

// Moves a result vector into a tensor of `shape` without copying: the tensor's deleter owns
// the vector. An empty vector gives an (empty) tensor of that shape.
template <class T>
at::Tensor to_tensor(std::vector<T>&& v, std::vector<int64_t> shape, at::ScalarType type) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  SY_CHECK(static_cast<size_t>(numel) * c10::elementSize(type) == v.size() * sizeof(T));
  if (v.empty()) return at::empty(shape, at::TensorOptions().dtype(type));
  auto* owner = new std::vector<T>(std::move(v));
  return at::from_blob(owner->data(), shape, [owner](void*) { delete owner; }, at::TensorOptions().dtype(type));
}

at::Tensor bytes_to_tensor(std::vector<uint8_t>&& v, int64_t rows, int64_t hidden, comm::DataType t) {
  return to_tensor(std::move(v), {rows, hidden}, torch_type(t));
}

// FP8 scale tensor [rows, ceil(H/128)] float32 (undefined, i.e. None, when there are none).
at::Tensor scales_to_tensor(std::vector<float>&& v, int64_t rows, int64_t hidden) {
  if (v.empty() && rows > 0) return at::Tensor();
  return to_tensor(std::move(v), {rows, dispatch::fp8_num_tiles(hidden)}, at::kFloat);
}

// Freed payload arrays of one Buffer, kept for its next calls. A tensor made by
// pooled_tensor() hands its vector back here when the tensor's storage is freed (its deleter
// runs once no tensor or view can see the memory), and the next dispatch/combine writes into
// it (Buffer::dispatch_into/combine_into keep capacity and skip the zero fill when the size
// matches): a training or benchmark loop that drops its results each step then allocates and
// page-faults nothing, while results the caller still holds are never reused. At most
// SWITCHYARD_PY_KEEP_RESULTS (2) vectors per kind are kept (LIFO); the rest are freed.
// Thread-safe (deleters run wherever the last reference goes).
const Param<int64_t> kKeepResults("PY_KEEP_RESULTS", 2, "arrays",
                                   "freed dispatch/combine result arrays a Python Buffer keeps per kind "
                                   "for reuse (0: none, every result freshly allocated)");

class ResultPool {
 public:
  enum Kind { kExpertX, kRecvX, kY, kNumKinds };
  std::vector<uint8_t> take(Kind k) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<uint8_t> v;
    if (!free_[k].empty()) {
      v = std::move(free_[k].back());
      free_[k].pop_back();
    } else if (keep_ > 0) {
      v.reserve(kOwnMappingBytes);
    }
    return v;
  }
  void give(Kind k, std::vector<uint8_t>&& v) {
    if (v.capacity() == 0) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (static_cast<int64_t>(free_[k].size()) < keep_) free_[k].push_back(std::move(v));
  }

 private:
  // New pooled arrays reserve more than glibc's largest dynamic mmap threshold (32 MiB on
  // 64-bit), so malloc gives each its own mapping: kept arrays never sit inside the heap that
  // the caller's torch tensors are carved from (where they would change when glibc trims and
  // re-faults that heap; measured as extra page faults in the gloo baseline). Only the pages
  // a result writes are ever backed by memory.
  static constexpr size_t kOwnMappingBytes = (size_t{32} << 20) + 4096;
  const int64_t keep_ = kKeepResults.get();
  std::mutex mu_;
  std::vector<std::vector<uint8_t>> free_[kNumKinds];
};

// The Buffer behind every Python switchyard.Buffer (made only by make_buffer): the C++
// Buffer plus its ResultPool (freed with it; tensors that outlive it free their memory).
class PyBuffer : public Buffer {
 public:
  using Buffer::Buffer;
  std::shared_ptr<ResultPool> pool = std::make_shared<ResultPool>();
};
std::shared_ptr<ResultPool> pool_of(Buffer& b) { return static_cast<PyBuffer&>(b).pool; }

// bytes_to_tensor whose deleter returns the vector to `pool` (kind k) instead of freeing it.
at::Tensor pooled_tensor(std::vector<uint8_t>&& v, int64_t rows, int64_t hidden, comm::DataType t,
                         const std::shared_ptr<ResultPool>& pool, ResultPool::Kind k) {
  const at::ScalarType type = torch_type(t);
  SY_CHECK(static_cast<size_t>(rows * hidden) * c10::elementSize(type) == v.size());
  if (v.empty()) {
    pool->give(k, std::move(v));
    return at::empty({rows, hidden}, at::TensorOptions().dtype(type));
  }
  auto* owner = new std::vector<uint8_t>(std::move(v));
  std::weak_ptr<ResultPool> weak = pool;
  return at::from_blob(
      owner->data(), {rows, hidden},
      [owner, weak, k](void*) {
        if (auto p = weak.lock()) p->give(k, std::move(*owner));
        delete owner;
      },
      at::TensorOptions().dtype(type));
}

// ---- Profiling (Buffer(..., profile=True)) ----
using Clock = std::chrono::steady_clock;
int64_t ns_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
}

// Sums over the blocking calls of one kind (dispatch, combine, ...), nanoseconds.
struct CallTimes {
  int64_t calls = 0;
  int64_t convert_in = 0;   // tensors -> args (checks, contiguity)
  int64_t cxx = 0;          // the C++ Buffer call, GIL released
  int64_t exchange = 0;     // part of cxx: inside PeerExchange post() and wait() (comm transport)
  int64_t convert_out = 0;  // results -> tensors (and the Python objects)
};

// A PeerExchange that forwards to the comm exchange and sums the time spent in it; it also
// holds the per-call sums of the Buffer that owns it. Thread-safe (async forms run the
// exchange on a helper thread; their time is not attributed to any call).
class ProfiledExchange : public dispatch::PeerExchange {
 public:
  explicit ProfiledExchange(std::shared_ptr<dispatch::PeerExchange> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const topology::RankMap& rank_map() const override { return inner_->rank_map(); }
  std::chrono::milliseconds timeout() const override { return inner_->timeout(); }
  std::unique_ptr<dispatch::PeerWindow> open_window(size_t bytes) override { return inner_->open_window(bytes); }
  std::unique_ptr<dispatch::PendingExchange> post(const std::vector<dispatch::PeerSend>& sends,
                                                  const std::vector<dispatch::PeerRecv>& recvs, int tag) override {
    const auto t0 = Clock::now();
    auto p = std::make_unique<TimedPending>(inner_->post(sends, recvs, tag), &exchange_ns_);
    exchange_ns_ += ns_since(t0);
    return p;
  }
  int64_t exchange_ns() const { return exchange_ns_.load(); }
  void add(const std::string& what, const CallTimes& t) {
    std::lock_guard<std::mutex> lock(mu_);
    CallTimes& s = sums_[what];
    s.calls += t.calls;
    s.convert_in += t.convert_in;
    s.cxx += t.cxx;
    s.exchange += t.exchange;
    s.convert_out += t.convert_out;
  }
  std::map<std::string, CallTimes> sums(bool reset) {
    std::lock_guard<std::mutex> lock(mu_);
    auto out = sums_;
    if (reset) sums_.clear();
    return out;
  }

 private:
  class TimedPending : public dispatch::PendingExchange {
   public:
    TimedPending(std::unique_ptr<dispatch::PendingExchange> inner, std::atomic<int64_t>* ns)
        : inner_(std::move(inner)), ns_(ns) {}
    void wait() override {
      const auto t0 = Clock::now();
      inner_->wait();
      *ns_ += ns_since(t0);
    }

   private:
    std::unique_ptr<dispatch::PendingExchange> inner_;
    std::atomic<int64_t>* ns_;
  };
  std::shared_ptr<dispatch::PeerExchange> inner_;
  std::atomic<int64_t> exchange_ns_{0};
  std::mutex mu_;
  std::map<std::string, CallTimes> sums_;
};

// Times one blocking binding call in phases when its Buffer profiles; does nothing otherwise.
// Usage: CallTimer t(buf, "dispatch"); <convert>; t.converted(); <C++ call>; t.called();
// <convert results>; the destructor adds the sums.
class CallTimer {
 public:
  CallTimer(Buffer& b, const char* what)
      : prof_(dynamic_cast<ProfiledExchange*>(&b.exchange())), what_(what), start_(Clock::now()) {}
  CallTimer(const CallTimer&) = delete;
  CallTimer& operator=(const CallTimer&) = delete;
  void converted() {
    if (!prof_) return;
    t_.convert_in = ns_since(start_);
    exchange0_ = prof_->exchange_ns();
    start_ = Clock::now();
  }
  void called() {
    if (!prof_) return;
    t_.cxx = ns_since(start_);
    t_.exchange = prof_->exchange_ns() - exchange0_;
    start_ = Clock::now();
  }
  ~CallTimer() {
    if (!prof_) return;
    t_.convert_out = ns_since(start_);
    t_.calls = 1;
    prof_->add(what_, t_);
  }

 private:
  ProfiledExchange* prof_;
  const char* what_;
  Clock::time_point start_;
  CallTimes t_;
  int64_t exchange0_ = 0;
};

// Result of Buffer.dispatch, as tensors. Legend of buffer.h: M received tokens, P
// expert-major rows, L local experts, K top-k, H hidden.
struct DispatchOutput {
  at::Tensor recv_x;                      // [M x H] payload dtype (uint8 E4M3 codes for FP8)
  at::Tensor recv_x_scales;               // [M x S] float32, FP8 only (else None)
  at::Tensor recv_topk_idx;               // [M x K] int64, local expert or -1
  at::Tensor recv_topk_weights;           // [M x K] float32
  at::Tensor recv_src_rank;               // [M] int32
  at::Tensor recv_src_token;              // [M] int32
  at::Tensor num_recv_tokens_per_expert;  // [L] int64
  at::Tensor expert_offsets;              // [L + 1] int64
  at::Tensor expert_row_token;            // [P] int32 (-1 padding)
  at::Tensor expert_row_slot;             // [P] int32 (-1 padding)
  at::Tensor expert_x;                    // [P x H] payload dtype
  at::Tensor expert_x_scales;             // [P x S] float32, FP8 only (else None; padding rows 0)
  Handle handle;
  int64_t logical_bytes = 0, wire_bytes = 0;
};

DispatchOutput to_output(dispatch::DispatchResult& r, int64_t hidden, int top_k,
                         const std::shared_ptr<ResultPool>& pool = nullptr) {
  DispatchOutput o;
  const int64_t m = r.num_recv_tokens;
  const int64_t p = static_cast<int64_t>(r.expert_row_token.size());
  const int64_t l = static_cast<int64_t>(r.num_recv_tokens_per_expert.size());
  const int64_t recv_rows = r.recv_x.empty() ? 0 : m;
  const int64_t expert_rows = r.expert_x.empty() ? 0 : p;
  o.recv_x = pool ? pooled_tensor(std::move(r.recv_x), recv_rows, hidden, r.dtype, pool, ResultPool::kRecvX)
                 : bytes_to_tensor(std::move(r.recv_x), recv_rows, hidden, r.dtype);
  const bool fp8 = r.dtype == comm::DataType::kFloat8E4M3;
  if (fp8) o.recv_x_scales = scales_to_tensor(std::move(r.recv_x_scales), recv_rows, hidden);
  o.recv_topk_idx = to_tensor(std::move(r.recv_topk_idx), {m, top_k}, at::kLong);
  o.recv_topk_weights = to_tensor(std::move(r.recv_topk_weights), {m, top_k}, at::kFloat);
  o.recv_src_rank = to_tensor(std::move(r.recv_src_rank), {m}, at::kInt);
  o.recv_src_token = to_tensor(std::move(r.recv_src_token), {m}, at::kInt);
  o.num_recv_tokens_per_expert = to_tensor(std::move(r.num_recv_tokens_per_expert), {l}, at::kLong);
  const int64_t num_offsets = static_cast<int64_t>(r.expert_offsets.size());
  o.expert_offsets = to_tensor(std::move(r.expert_offsets), {num_offsets}, at::kLong);
  o.expert_row_token = to_tensor(std::move(r.expert_row_token), {p}, at::kInt);
  o.expert_row_slot = to_tensor(std::move(r.expert_row_slot), {p}, at::kInt);
  o.expert_x = pool ? pooled_tensor(std::move(r.expert_x), expert_rows, hidden, r.dtype, pool, ResultPool::kExpertX)
                   : bytes_to_tensor(std::move(r.expert_x), expert_rows, hidden, r.dtype);
  if (fp8) o.expert_x_scales = scales_to_tensor(std::move(r.expert_x_scales), expert_rows, hidden);
  o.handle = r.handle;
  o.logical_bytes = r.stats.logical_bytes;
  o.wire_bytes = r.stats.wire_bytes;
  return o;
}

// Inputs of one dispatch call, kept alive while it runs (async).
struct DispatchInputs {
  at::Tensor x, x_scales, topk_idx, topk_weights;
  Handle cached;
  dispatch::DispatchArgs args;
};

// x is a tensor (float32 or bfloat16 [T, H]) or, for FP8, a pair (codes, scales): uint8
// E4M3 codes [T, H] and float32 scales [T, ceil(H/128)] (x = decode(code) * scale per
// 128-channel tile), as DeepEP takes it.
DispatchInputs make_dispatch_inputs(const Buffer& buf, const py::object& x, const std::optional<at::Tensor>& topk_idx,
                                    const std::optional<at::Tensor>& topk_weights, int64_t expert_alignment,
                                    const std::optional<Handle>& handle, bool recv_x, bool expert_major) {
  DispatchInputs in;
  auto& a = in.args;
  const int64_t hidden = buf.options().hidden;
  if (py::isinstance<py::tuple>(x) || py::isinstance<py::list>(x)) {
    auto pair = x.cast<py::sequence>();
    SY_REQUIRE(pair.size() == 2, "dispatch: x as a sequence must be (codes, scales) for FP8, got "
                                     << pair.size() << " items");
    in.x = cpu_contiguous(as_tensor(pair[0], "dispatch: x codes (FP8)"), "dispatch: x codes (FP8)", 2);
    in.x_scales = cpu_contiguous(as_tensor(pair[1], "dispatch: x scales (FP8)"), "dispatch: x scales (FP8)", 2);
    if (in.x.scalar_type() != at::kByte) {
      SY_THROW(InvalidArgument, "dispatch: FP8 codes have dtype " << c10::toString(in.x.scalar_type())
                                                                  << ", expected uint8 (E4M3 bits)");
    }
    if (in.x_scales.scalar_type() != at::kFloat) {
      SY_THROW(InvalidArgument, "dispatch: FP8 scales have dtype " << c10::toString(in.x_scales.scalar_type())
                                                                   << ", expected float32");
    }
    const int64_t tiles = dispatch::fp8_num_tiles(hidden);
    SY_REQUIRE(in.x_scales.size(0) == in.x.size(0) && in.x_scales.size(1) == tiles,
               "dispatch: FP8 scales have shape [" << in.x_scales.size(0) << ", " << in.x_scales.size(1)
                                                   << "], expected [" << in.x.size(0) << ", " << tiles
                                                   << "] (tokens, ceil(hidden / 128))");
    a.dtype = comm::DataType::kFloat8E4M3;
    a.x_scales = in.x_scales.data_ptr<float>();
  } else {
    in.x = cpu_contiguous(as_tensor(x, "dispatch: x"), "dispatch: x", 2);
    a.dtype = payload_type(in.x, "dispatch: x");
  }
  if (in.x.size(1) != hidden) {
    SY_THROW(InvalidArgument, "dispatch: x has hidden size " << in.x.size(1) << ", the Buffer was made for " << hidden);
  }
  a.x = in.x.data_ptr();
  a.num_tokens = in.x.size(0);
  a.expert_alignment = expert_alignment;
  a.recv_x = recv_x;
  a.expert_major_x = expert_major;
  if (handle) {
    SY_REQUIRE(handle->valid(), "dispatch: the cached handle is empty");
    in.cached = *handle;
    a.cached_handle = &in.cached;
    a.top_k = in.cached.top_k();
  }
  if (topk_idx) {
    in.topk_idx = cpu_contiguous(*topk_idx, "dispatch: topk_idx", 2);
    if (in.topk_idx.scalar_type() != at::kLong) {
      SY_THROW(InvalidArgument, "dispatch: topk_idx has dtype " << c10::toString(in.topk_idx.scalar_type())
                                                                << ", expected int64");
    }
    SY_REQUIRE(in.topk_idx.size(0) == a.num_tokens, "dispatch: topk_idx has " << in.topk_idx.size(0)
                                                                              << " rows, x has " << a.num_tokens);
    a.topk_idx = in.topk_idx.data_ptr<int64_t>();
    a.top_k = static_cast<int>(in.topk_idx.size(1));
  } else if (!handle) {
    SY_THROW(InvalidArgument, "dispatch: needs topk_idx or a cached handle");
  }
  if (topk_weights) {
    in.topk_weights = cpu_contiguous(topk_weights->to(at::kFloat), "dispatch: topk_weights", 2);
    SY_REQUIRE(in.topk_weights.size(0) == a.num_tokens && in.topk_weights.size(1) == a.top_k,
               "dispatch: topk_weights has shape [" << in.topk_weights.size(0) << ", " << in.topk_weights.size(1)
                                                    << "], expected [" << a.num_tokens << ", " << a.top_k << "]");
    a.topk_weights = in.topk_weights.data_ptr<float>();
  }
  return in;
}

// Inputs of one combine call, kept alive while it runs (async).
struct CombineInputs {
  at::Tensor expert_out, weights;
  Handle handle;
  dispatch::CombineArgs args;
};

CombineInputs make_combine_inputs(const Buffer& buf, const at::Tensor& expert_out, const Handle& handle,
                                  const std::optional<at::Tensor>& weights) {
  CombineInputs in;
  SY_REQUIRE(handle.valid(), "combine: the handle is empty");
  in.handle = handle;
  in.expert_out = cpu_contiguous(expert_out, "combine: expert_out", 2);
  SY_REQUIRE(in.expert_out.size(0) == handle.num_expert_rows() && in.expert_out.size(1) == buf.options().hidden,
             "combine: expert_out has shape [" << in.expert_out.size(0) << ", " << in.expert_out.size(1)
                                               << "], expected [" << handle.num_expert_rows() << ", "
                                               << buf.options().hidden << "] (expert rows of the handle, hidden)");
  in.args.expert_out = in.expert_out.data_ptr();
  in.args.dtype = payload_type(in.expert_out, "combine: expert_out");
  in.args.handle = &in.handle;
  if (weights) {
    in.weights = cpu_contiguous(weights->to(at::kFloat), "combine: weights", 2);
    SY_REQUIRE(in.weights.size(0) == handle.num_recv_tokens() && in.weights.size(1) == handle.top_k(),
               "combine: weights has shape [" << in.weights.size(0) << ", " << in.weights.size(1) << "], expected ["
                                              << handle.num_recv_tokens() << ", " << handle.top_k()
                                              << "] (received tokens, top-k)");
    in.args.weights = in.weights.data_ptr<float>();
  }
  return in;
}

at::Tensor combine_output(dispatch::CombineResult& r, const Handle& h, int64_t hidden,
                          const std::shared_ptr<ResultPool>& pool = nullptr) {
  if (pool) return pooled_tensor(std::move(r.y), h.num_tokens(), hidden, r.dtype, pool, ResultPool::kY);
  return bytes_to_tensor(std::move(r.y), h.num_tokens(), hidden, r.dtype);
}

// An async dispatch: inputs alive until wait(); done() polls without blocking.
class AsyncDispatch {
 public:
  AsyncDispatch(std::shared_ptr<DispatchInputs> in, dispatch::Pending<dispatch::DispatchResult> p, int64_t hidden)
      : in_(std::move(in)), pending_(std::move(p)), hidden_(hidden) {}
  bool done() const { return !pending_.valid() || pending_.test(); }
  DispatchOutput wait() {
    SY_REQUIRE(pending_.valid(), "AsyncDispatch.wait: already waited");
    dispatch::DispatchResult r;
    {
      py::gil_scoped_release nogil;
      r = pending_.wait();
    }
    int k = in_->args.top_k;
    in_.reset();
    return to_output(r, hidden_, k);
  }

 private:
  std::shared_ptr<DispatchInputs> in_;
  dispatch::Pending<dispatch::DispatchResult> pending_;
  int64_t hidden_;
};

class AsyncCombine {
 public:
  AsyncCombine(std::shared_ptr<CombineInputs> in, dispatch::Pending<dispatch::CombineResult> p, int64_t hidden)
      : in_(std::move(in)), pending_(std::move(p)), hidden_(hidden) {}
  bool done() const { return !pending_.valid() || pending_.test(); }
  at::Tensor wait() {
    SY_REQUIRE(pending_.valid(), "AsyncCombine.wait: already waited");
    dispatch::CombineResult r;
    {
      py::gil_scoped_release nogil;
      r = pending_.wait();
    }
    Handle h = in_->handle;
    in_.reset();
    return combine_output(r, h, hidden_);
  }

 private:
  std::shared_ptr<CombineInputs> in_;
  dispatch::Pending<dispatch::CombineResult> pending_;
  int64_t hidden_;
};

std::shared_ptr<Buffer> make_buffer(std::shared_ptr<comm::Communicator> comm, int num_experts, int64_t hidden,
                                    int64_t max_tokens_per_rank, bool two_hop, int64_t low_latency_max_tokens,
                                    bool profile) {
  SY_REQUIRE(comm != nullptr, "Buffer: comm is None");
  dispatch::BufferOptions o;
  o.num_experts = num_experts;
  o.hidden = hidden;
  o.max_tokens_per_rank = max_tokens_per_rank;
  o.two_hop = two_hop;
  o.low_latency_max_tokens = low_latency_max_tokens;
  py::gil_scoped_release nogil;  // collective construction
  if (profile) {
    return std::make_shared<PyBuffer>(std::make_shared<ProfiledExchange>(dispatch::make_comm_exchange(std::move(comm))),
                                      o);
  }
  return std::make_shared<PyBuffer>(dispatch::make_comm_exchange(std::move(comm)), o);
}

// Buffer.profile(): {call: {calls, convert_in_us, cxx_us, exchange_us, convert_out_us}}.
py::dict profile_dict(Buffer& b, bool reset) {
  auto* prof = dynamic_cast<ProfiledExchange*>(&b.exchange());
  SY_REQUIRE(prof != nullptr, "Buffer.profile: this Buffer was made without profile=True");
  py::dict out;
  for (const auto& [what, t] : prof->sums(reset)) {
    py::dict d;
    d["calls"] = t.calls;
    d["convert_in_us"] = t.convert_in * 1e-3;
    d["cxx_us"] = t.cxx * 1e-3;
    d["exchange_us"] = t.exchange * 1e-3;
    d["convert_out_us"] = t.convert_out * 1e-3;
    out[py::str(what)] = d;
  }
  return out;
}

py::tuple layout_tuple(const Buffer& buf, const at::Tensor& topk_idx_in) {
  at::Tensor idx = cpu_contiguous(topk_idx_in, "get_dispatch_layout: topk_idx", 2);
  SY_REQUIRE(idx.scalar_type() == at::kLong, "get_dispatch_layout: topk_idx has dtype "
                                                 << c10::toString(idx.scalar_type()) << ", expected int64");
  dispatch::DispatchLayout l = buf.layout(idx.data_ptr<int64_t>(), idx.size(0), static_cast<int>(idx.size(1)));
  const int64_t r = static_cast<int64_t>(l.num_tokens_per_rank.size());
  const int64_t num_nodes = static_cast<int64_t>(l.num_tokens_per_node.size());
  const int64_t num_experts = static_cast<int64_t>(l.num_tokens_per_expert.size());
  at::Tensor in_rank = to_tensor(std::move(l.is_token_in_rank), {l.num_tokens, r}, at::kByte).to(at::kBool);
  return py::make_tuple(to_tensor(std::move(l.num_tokens_per_rank), {r}, at::kLong),
                        to_tensor(std::move(l.num_tokens_per_node), {num_nodes}, at::kLong),
                        to_tensor(std::move(l.num_tokens_per_expert), {num_experts}, at::kLong),
                        in_rank);
}

// Low-latency receive view as tensors: copies (copy=true), or views of the Buffer's receive
// area (copy=false, as DeepEP returns them: valid until the next low_latency_dispatch; each
// view keeps the Buffer alive).
at::Tensor ll_tensor(const void* p, std::vector<int64_t> shape, at::ScalarType type,
                     const std::shared_ptr<Buffer>& owner, bool copy) {
  at::Tensor view = at::from_blob(const_cast<void*>(p), shape, [owner](void*) {}, at::TensorOptions().dtype(type));
  return copy ? view.clone() : view;
}

py::dict low_latency_view_dict(const dispatch::LowLatencyView& v, const std::shared_ptr<Buffer>& b, bool copy) {
  const int64_t l = b->num_local_experts(), slots = v.slots_per_expert, hidden = b->options().hidden;
  const bool fp8 = v.dtype == comm::DataType::kFloat8E4M3;
  py::dict d;
  d["x"] = ll_tensor(v.x, {l, slots, hidden}, fp8 ? at::kByte : at::kBFloat16, b, copy);
  if (fp8) d["scales"] = ll_tensor(v.scales, {l, slots, dispatch::fp8_num_tiles(hidden)}, at::kFloat, b, copy);
  d["count"] = ll_tensor(v.count, {l}, at::kInt, b, copy);
  d["src_rank"] = ll_tensor(v.src_rank, {l, slots}, at::kInt, b, copy);
  d["src_token"] = ll_tensor(v.src_token, {l, slots}, at::kInt, b, copy);
  return d;
}

// fp8_quantize: x [T, H] float32 or bfloat16 -> (codes uint8 [T, H], scales float32 [T, S]).
py::tuple fp8_quantize(const at::Tensor& x_in, bool pow2_scales) {
  at::Tensor x = cpu_contiguous(x_in, "fp8_quantize: x", 2);
  const int64_t rows = x.size(0), cols = x.size(1);
  at::Tensor q = at::empty({rows, cols}, at::kByte);
  at::Tensor sc = at::empty({rows, dispatch::fp8_num_tiles(cols)}, at::kFloat);
  if (x.scalar_type() == at::kFloat) {
    dispatch::quantize_fp8_tiles(x.data_ptr<float>(), rows, cols, pow2_scales, q.data_ptr<uint8_t>(),
                                 sc.data_ptr<float>());
  } else if (x.scalar_type() == at::kBFloat16) {
    dispatch::quantize_fp8_tiles(reinterpret_cast<const uint16_t*>(x.data_ptr()), rows, cols, pow2_scales,
                                 q.data_ptr<uint8_t>(), sc.data_ptr<float>());
  } else {
    SY_THROW(InvalidArgument, "fp8_quantize: x has dtype " << c10::toString(x.scalar_type())
                                                           << ", expected float32 or bfloat16");
  }
  return py::make_tuple(q, sc);
}

// fp8_dequantize: codes uint8 [T, H], scales float32 [T, S] -> float32 [T, H].
at::Tensor fp8_dequantize(const at::Tensor& q_in, const at::Tensor& sc_in) {
  at::Tensor q = cpu_contiguous(q_in, "fp8_dequantize: codes", 2);
  at::Tensor sc = cpu_contiguous(sc_in, "fp8_dequantize: scales", 2);
  SY_REQUIRE(q.scalar_type() == at::kByte, "fp8_dequantize: codes have dtype " << c10::toString(q.scalar_type())
                                                                               << ", expected uint8");
  SY_REQUIRE(sc.scalar_type() == at::kFloat, "fp8_dequantize: scales have dtype "
                                                 << c10::toString(sc.scalar_type()) << ", expected float32");
  const int64_t rows = q.size(0), cols = q.size(1);
  SY_REQUIRE(sc.size(0) == rows && sc.size(1) == dispatch::fp8_num_tiles(cols),
             "fp8_dequantize: scales have shape [" << sc.size(0) << ", " << sc.size(1) << "], expected [" << rows
                                                   << ", " << dispatch::fp8_num_tiles(cols) << "]");
  at::Tensor x = at::empty({rows, cols}, at::kFloat);
  dispatch::dequantize_fp8_tiles(q.data_ptr<uint8_t>(), sc.data_ptr<float>(), rows, cols, x.data_ptr<float>());
  return x;
}

}  // namespace

void bind_dispatch(py::module_& m) {
  m.def("fp8_quantize", &fp8_quantize, py::arg("x"), py::arg("pow2_scales") = false,
        "x [T, H] float32/bfloat16 -> (E4M3 codes uint8 [T, H], scales float32 [T, ceil(H/128)]), 1x128 tiles.");
  m.def("fp8_dequantize", &fp8_dequantize, py::arg("codes"), py::arg("scales"),
        "(codes uint8 [T, H], scales float32 [T, ceil(H/128)]) -> float32 [T, H].");
  py::class_<Handle>(m, "Handle", "Routing of one dispatch; reuse it for combine, backward and cached dispatch.")
      .def_property_readonly("num_tokens", &Handle::num_tokens)
      .def_property_readonly("num_recv_tokens", &Handle::num_recv_tokens)
      .def_property_readonly("num_expert_rows", &Handle::num_expert_rows)
      .def_property_readonly("top_k", &Handle::top_k)
      .def_property_readonly("two_hop", &Handle::two_hop)
      .def("__repr__", [](const Handle& h) {
        std::ostringstream s;
        s << "Handle(num_tokens=" << h.num_tokens() << ", num_recv_tokens=" << h.num_recv_tokens()
          << ", num_expert_rows=" << h.num_expert_rows() << ", top_k=" << h.top_k() << ")";
        return s.str();
      });

  py::class_<DispatchOutput>(m, "DispatchOutput")
      .def_readonly("recv_x", &DispatchOutput::recv_x)
      .def_readonly("recv_x_scales", &DispatchOutput::recv_x_scales)
      .def_readonly("recv_topk_idx", &DispatchOutput::recv_topk_idx)
      .def_readonly("recv_topk_weights", &DispatchOutput::recv_topk_weights)
      .def_readonly("recv_src_rank", &DispatchOutput::recv_src_rank)
      .def_readonly("recv_src_token", &DispatchOutput::recv_src_token)
      .def_readonly("num_recv_tokens_per_expert", &DispatchOutput::num_recv_tokens_per_expert)
      .def_readonly("expert_offsets", &DispatchOutput::expert_offsets)
      .def_readonly("expert_row_token", &DispatchOutput::expert_row_token)
      .def_readonly("expert_row_slot", &DispatchOutput::expert_row_slot)
      .def_readonly("expert_x", &DispatchOutput::expert_x)
      .def_readonly("expert_x_scales", &DispatchOutput::expert_x_scales)
      .def_readonly("handle", &DispatchOutput::handle)
      .def_readonly("logical_bytes", &DispatchOutput::logical_bytes)
      .def_readonly("wire_bytes", &DispatchOutput::wire_bytes);

  py::class_<AsyncDispatch>(m, "AsyncDispatch", "A dispatch in flight: done() polls, wait() returns the output.")
      .def("done", &AsyncDispatch::done)
      .def("wait", &AsyncDispatch::wait);
  py::class_<AsyncCombine>(m, "AsyncCombine", "A combine in flight: done() polls, wait() returns y.")
      .def("done", &AsyncCombine::done)
      .def("wait", &AsyncCombine::wait);

  py::class_<Buffer, std::shared_ptr<Buffer>>(m, "Buffer")
      .def(py::init(&make_buffer), py::arg("comm"), py::arg("num_experts"), py::arg("hidden"),
           py::arg("max_tokens_per_rank"), py::arg("two_hop") = true, py::arg("low_latency_max_tokens") = 0,
           py::arg("profile") = false)
      .def_property_readonly("rank", &Buffer::rank)
      .def_property_readonly("num_ranks", &Buffer::num_ranks)
      .def_property_readonly("num_experts", [](const Buffer& b) { return b.options().num_experts; })
      .def_property_readonly("num_local_experts", &Buffer::num_local_experts)
      .def_property_readonly("hidden", [](const Buffer& b) { return b.options().hidden; })
      .def_property_readonly("uses_two_hop", &Buffer::uses_two_hop)
      .def("get_dispatch_layout", &layout_tuple, py::arg("topk_idx"))
      .def("profile", &profile_dict, py::arg("reset") = false,
           "Time sums of the blocking calls (Buffer(..., profile=True) only), microseconds.")
      .def(
          "dispatch",
          [](Buffer& b, const py::object& x, const std::optional<at::Tensor>& topk_idx,
             const std::optional<at::Tensor>& topk_weights, int64_t expert_alignment,
             const std::optional<Handle>& handle, bool async_op, bool recv_x, bool expert_major) -> py::object {
            CallTimer timer(b, "dispatch");
            auto in = std::make_shared<DispatchInputs>(
                make_dispatch_inputs(b, x, topk_idx, topk_weights, expert_alignment, handle, recv_x, expert_major));
            if (handle) in->args.cached_handle = &in->cached;  // the copy moved
            if (async_op) {
              dispatch::Pending<dispatch::DispatchResult> p;
              {
                py::gil_scoped_release nogil;
                p = b.dispatch_async(in->args);
              }
              return py::cast(AsyncDispatch(in, std::move(p), b.options().hidden));
            }
            timer.converted();
            const std::shared_ptr<ResultPool> pool = pool_of(b);
            dispatch::DispatchResult r;
            r.expert_x = pool->take(ResultPool::kExpertX);
            r.recv_x = pool->take(ResultPool::kRecvX);
            {
              py::gil_scoped_release nogil;
              b.dispatch_into(in->args, r);
            }
            timer.called();
            return py::cast(to_output(r, b.options().hidden, in->args.top_k, pool));
          },
          py::arg("x"), py::arg("topk_idx") = py::none(), py::arg("topk_weights") = py::none(),
          py::arg("expert_alignment") = 1, py::arg("handle") = py::none(), py::arg("async_op") = false,
          py::arg("recv_x") = true, py::arg("expert_major") = true)
      .def(
          "combine",
          [](Buffer& b, const at::Tensor& expert_out, const Handle& handle, const std::optional<at::Tensor>& weights,
             bool async_op) -> py::object {
            CallTimer timer(b, "combine");
            auto in = std::make_shared<CombineInputs>(make_combine_inputs(b, expert_out, handle, weights));
            in->args.handle = &in->handle;
            if (async_op) {
              dispatch::Pending<dispatch::CombineResult> p;
              {
                py::gil_scoped_release nogil;
                p = b.combine_async(in->args);
              }
              return py::cast(AsyncCombine(in, std::move(p), b.options().hidden));
            }
            timer.converted();
            const std::shared_ptr<ResultPool> pool = pool_of(b);
            dispatch::CombineResult r;
            r.y = pool->take(ResultPool::kY);
            {
              py::gil_scoped_release nogil;
              b.combine_into(in->args, r);
            }
            timer.called();
            return py::cast(combine_output(r, handle, b.options().hidden, pool));
          },
          py::arg("expert_out"), py::arg("handle"), py::arg("weights") = py::none(), py::arg("async_op") = false)
      .def(
          "dispatch_backward",
          [](Buffer& b, const at::Tensor& grad_expert_x, const Handle& handle) {
            CallTimer timer(b, "dispatch_backward");
            CombineInputs in = make_combine_inputs(b, grad_expert_x, handle, std::nullopt);
            timer.converted();
            dispatch::CombineResult r;
            {
              py::gil_scoped_release nogil;
              r = b.dispatch_backward(in.args.expert_out, in.args.dtype, handle);
            }
            timer.called();
            return combine_output(r, handle, b.options().hidden);
          },
          py::arg("grad_expert_x"), py::arg("handle"))
      .def(
          "combine_backward",
          [](Buffer& b, const at::Tensor& grad_y, const Handle& handle, const at::Tensor& expert_out,
             const std::optional<at::Tensor>& weights) {
            CallTimer timer(b, "combine_backward");
            CombineInputs in = make_combine_inputs(b, expert_out, handle, weights);
            at::Tensor dy = cpu_contiguous(grad_y, "combine_backward: grad_y", 2);
            SY_REQUIRE(dy.scalar_type() == in.expert_out.scalar_type(),
                       "combine_backward: grad_y has dtype " << c10::toString(dy.scalar_type())
                                                             << ", expert_out has "
                                                             << c10::toString(in.expert_out.scalar_type()));
            SY_REQUIRE(dy.size(0) == handle.num_tokens() && dy.size(1) == b.options().hidden,
                       "combine_backward: grad_y has shape [" << dy.size(0) << ", " << dy.size(1) << "], expected ["
                                                              << handle.num_tokens() << ", " << b.options().hidden
                                                              << "]");
            dispatch::CombineBackwardArgs a;
            a.grad_y = dy.data_ptr();
            a.dtype = in.args.dtype;
            a.handle = &in.handle;
            a.expert_out = in.args.expert_out;
            a.weights = in.args.weights;
            timer.converted();
            dispatch::CombineBackwardResult r;
            {
              py::gil_scoped_release nogil;
              r = b.combine_backward(a);
            }
            timer.called();
            return py::make_tuple(bytes_to_tensor(std::move(r.grad_expert_out), handle.num_expert_rows(), b.options().hidden, a.dtype),
                                  to_tensor(std::move(r.grad_recv_weights), {handle.num_recv_tokens(), handle.top_k()}, at::kFloat),
                                  to_tensor(std::move(r.grad_topk_weights), {handle.num_tokens(), handle.top_k()}, at::kFloat));
          },
          py::arg("grad_y"), py::arg("handle"), py::arg("expert_out"), py::arg("weights") = py::none())
      .def(
          "low_latency_dispatch",
          [](const std::shared_ptr<Buffer>& owner, const at::Tensor& x_in, const at::Tensor& idx_in,
             const std::optional<at::Tensor>& w_in, bool use_fp8, bool pow2_scales, bool copy) {
            Buffer& b = *owner;
            at::Tensor x = cpu_contiguous(x_in, "low_latency_dispatch: x", 2);
            SY_REQUIRE(x.scalar_type() == at::kBFloat16, "low_latency_dispatch: x has dtype "
                                                             << c10::toString(x.scalar_type()) << ", expected bfloat16");
            at::Tensor idx = cpu_contiguous(idx_in, "low_latency_dispatch: topk_idx", 2);
            SY_REQUIRE(idx.scalar_type() == at::kLong, "low_latency_dispatch: topk_idx must be int64");
            SY_REQUIRE(idx.size(0) == x.size(0), "low_latency_dispatch: topk_idx has " << idx.size(0)
                                                                                      << " rows, x has " << x.size(0));
            at::Tensor w;
            dispatch::LowLatencyDispatchArgs a;
            if (w_in) {
              w = cpu_contiguous(w_in->to(at::kFloat), "low_latency_dispatch: topk_weights", 2);
              a.topk_weights = w.data_ptr<float>();
            }
            a.x = reinterpret_cast<const uint16_t*>(x.data_ptr());
            a.topk_idx = idx.data_ptr<int64_t>();
            a.num_tokens = x.size(0);
            a.top_k = static_cast<int>(idx.size(1));
            a.use_fp8 = use_fp8;
            a.pow2_scales = pow2_scales;
            dispatch::LowLatencyView v;
            {
              py::gil_scoped_release nogil;
              v = b.low_latency_dispatch(a);
            }
            return low_latency_view_dict(v, owner, copy);
          },
          py::arg("x"), py::arg("topk_idx"), py::arg("topk_weights") = py::none(), py::arg("use_fp8") = true,
          py::arg("pow2_scales") = false, py::arg("copy") = true)
      .def(
          "low_latency_combine",
          [](Buffer& b, const at::Tensor& out_in, int64_t num_tokens) {
            at::Tensor out = cpu_contiguous(out_in, "low_latency_combine: expert_out", 3);
            SY_REQUIRE(out.scalar_type() == at::kBFloat16, "low_latency_combine: expert_out must be bfloat16");
            const int64_t slots = b.num_ranks() * b.options().low_latency_max_tokens;
            SY_REQUIRE(out.size(0) == b.num_local_experts() && out.size(1) == slots && out.size(2) == b.options().hidden,
                       "low_latency_combine: expert_out has shape [" << out.size(0) << ", " << out.size(1) << ", "
                                                                     << out.size(2) << "], expected ["
                                                                     << b.num_local_experts() << ", " << slots << ", "
                                                                     << b.options().hidden
                                                                     << "] (local experts, ranks * low_latency_max_tokens, hidden)");
            SY_REQUIRE(num_tokens >= 0 && num_tokens <= b.options().low_latency_max_tokens,
                       "low_latency_combine: num_tokens = " << num_tokens << " is outside [0, "
                                                            << b.options().low_latency_max_tokens
                                                            << "] (low_latency_max_tokens)");
            const uint16_t* y = nullptr;
            {
              py::gil_scoped_release nogil;
              y = b.low_latency_combine(reinterpret_cast<const uint16_t*>(out.data_ptr()));
            }
            at::Tensor t = at::empty({num_tokens, b.options().hidden}, at::kBFloat16);
            std::memcpy(t.data_ptr(), y, t.nbytes());
            return t;
          },
          py::arg("expert_out"), py::arg("num_tokens"));
}

}  // namespace switchyard::python
