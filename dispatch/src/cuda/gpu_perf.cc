// sy-cuda-perf's library call (gpu_perf.h): the measurements; the report's text and JSON
// are in gpu_perf_report.cc.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <random>

#include "busy_kernel.h"
#include "switchyard/comm/communicator.h"
#include "switchyard/comm/nccl_communicator.h"
#include "switchyard/comm/store.h"
#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/cuda/gpu_perf.h"
#include "switchyard/dispatch/cuda/intranode.h"
#include "switchyard/dispatch/cuda/kernels.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch::gpu {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Median microseconds of fn enqueued on stream, timed with events.
double time_events(const GpuPerfOptions& o, cudaStream_t stream, const std::function<void()>& fn) {
  for (int i = 0; i < o.warmup; ++i) fn();
  cuda::Event a, b;
  std::vector<double> us;
  for (int i = 0; i < o.iters; ++i) {
    a.record(stream);
    fn();
    b.record(stream);
    b.synchronize();
    us.push_back(1000.0 * b.elapsed_ms_since(a));
  }
  return median(us);
}

GpuPerfRow row(const std::string& name, double us, int64_t bytes) {
  GpuPerfRow r;
  r.name = name;
  r.median_us = us;
  r.bytes = bytes;
  r.gbps = us > 0 ? static_cast<double>(bytes) / (us * 1e3) : 0.0;
  return r;
}

}  // namespace

GpuPerfReport run_gpu_perf(const GpuPerfOptions& o) {
  if (cuda::device_count() == 0) SY_THROW(Unsupported, "sy-cuda-perf: no GPU is usable on this machine");
  SY_REQUIRE(o.num_tokens > 0 && o.hidden > 0 && o.top_k >= 1 && o.top_k <= o.num_experts && o.iters >= 1,
             "sy-cuda-perf: bad sizes (tokens " << o.num_tokens << ", hidden " << o.hidden << ", top_k " << o.top_k
                                                << ", experts " << o.num_experts << ", iters " << o.iters << ")");
  cuda::set_device(0);
  GpuPerfReport rep;
  rep.options = o;
  rep.device = cuda::device_description(0);
  rep.nccl_version = comm::NcclCommunicator::runtime_version();
  const int64_t T = o.num_tokens, H = o.hidden, S = fp8_num_tiles(H);
  const int K = o.top_k;
  cuda::Stream stream;
  cudaStream_t st = stream.get();

  // Inputs: random BF16 activations and a random top-k without repeats.
  std::mt19937 g(1);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<uint16_t> xb(T * H);
  for (auto& v : xb) v = bf16_from_float(u(g));
  cuda::DeviceBuffer d_x(T * H * 2), d_copy(T * H * 2), d_q(T * H), d_s(T * S * 4);
  d_x.copy_from_host(xb.data(), xb.size() * 2);

  const double memcpy_us = time_events(o, st, [&] {
    SY_CUDA_CHECK(cudaMemcpyAsync(d_copy.data(), d_x.data(), T * H * 2, cudaMemcpyDeviceToDevice, st), "memcpy");
  });
  rep.rows.push_back(row("memcpy", memcpy_us, 2 * T * H * 2));

  const double cast_us = time_events(o, st, [&] {
    quantize_fp8_tiles(d_x.as<uint16_t>(), T, H, false, d_q.as<uint8_t>(), d_s.as<float>(), st);
  });
  rep.rows.push_back(row("fp8-cast", cast_us, T * H * 2 + T * H + T * S * 4));

  {
    const int R = o.layout_ranks, E = 256;
    std::vector<int64_t> idx(T * K);
    std::vector<int> perm(E);
    for (int64_t t = 0; t < T; ++t) {
      for (int e = 0; e < E; ++e) perm[e] = e;
      std::shuffle(perm.begin(), perm.end(), g);
      for (int k = 0; k < K; ++k) idx[t * K + k] = perm[k];
    }
    cuda::DeviceBuffer d_idx(idx.size() * 8), d_node(R * 4), d_rank(R * 8), d_nodes(8), d_exp(E * 8), d_in(T * R),
        d_err(8);
    d_idx.copy_from_host(idx.data(), idx.size() * 8);
    d_node.fill_zero(st);
    DeviceLayoutOutputs out{d_rank.as<int64_t>(), d_nodes.as<int64_t>(), d_exp.as<int64_t>(), d_in.as<uint8_t>(),
                            d_err.as<int64_t>()};
    const double us = time_events(o, st, [&] {
      launch_dispatch_layout(d_idx.as<int64_t>(), T, K, E, R, d_node.as<int32_t>(), 1, out, st);
    });
    rep.rows.push_back(row("layout", us, T * K * 8 + T * R));
  }

  {
    auto host = comm::Communicator::init(comm::LaunchEnv{});
    IntranodeOptions io;
    io.num_experts = o.num_experts;
    io.hidden = H;
    io.max_tokens_per_rank = T;
    io.max_top_k = K;
    io.num_sms = -1;  // every SM unless a call says otherwise
    IntranodeBuffer buf(host, io);
    rep.device_sms = buf.num_sms();
    rep.default_sms = IntranodeOptions::kDefaultNumSms;
    std::vector<int64_t> idx(T * K);
    std::vector<float> w(T * K);
    std::vector<int> perm(o.num_experts);
    for (int64_t t = 0; t < T; ++t) {
      for (int e = 0; e < o.num_experts; ++e) perm[e] = e;
      std::shuffle(perm.begin(), perm.end(), g);
      for (int k = 0; k < K; ++k) {
        idx[t * K + k] = perm[k];
        w[t * K + k] = u(g);
      }
    }
    cuda::DeviceBuffer d_idx(idx.size() * 8), d_w(w.size() * 4);
    d_idx.copy_from_host(idx.data(), idx.size() * 8);
    d_w.copy_from_host(w.data(), w.size() * 4);
    DeviceDispatchArgs a;
    a.x = d_x.data();
    a.dtype = comm::DataType::kBfloat16;
    a.topk_idx = d_idx.as<int64_t>();
    a.topk_weights = d_w.as<float>();
    a.num_tokens = T;
    a.top_k = K;
    a.stream = st;
    const int64_t row_bytes = H * 2;

    // Runs one budget: medians of the call's wall time, its copy kernels and its layout.
    struct Times {
      double call = 0, kernels = 0, layout = 0;
    };
    DeviceDispatchResult last;
    // reuse: dispatch into the previous result (no allocation); else fresh outputs.
    auto run_dispatch = [&](int sms, bool reuse) {
      a.num_sms = sms;
      std::vector<double> call, kern, lay;
      for (int i = 0; i < o.warmup + o.iters; ++i) {
        DeviceDispatchResult r;
        const auto t0 = std::chrono::steady_clock::now();
        if (reuse)
          buf.dispatch(a, last);
        else
          r = buf.dispatch(a);
        const auto t1 = std::chrono::steady_clock::now();
        if (i >= o.warmup) {
          call.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
          kern.push_back(buf.last_kernel_us());
          lay.push_back(buf.last_layout_us());
        }
        if (!reuse) last = std::move(r);  // frees the previous result outside the timed part
      }
      return Times{median(call), median(kern), median(lay)};
    };
    const Times all = run_dispatch(-1, false);
    const Times reused = run_dispatch(-1, true);
    const int64_t M = last.num_recv_tokens, P = last.expert_offsets.back();
    const int64_t dispatch_bytes = row_bytes * (T + 3 * M + P);
    {
      // Reference: a copy the size of expert_x (P rows).
      cuda::DeviceBuffer big_src(P * row_bytes);
      const double big_us = time_events(o, st, [&] {
        SY_CUDA_CHECK(cudaMemcpyAsync(last.expert_x.data(), big_src.data(), P * row_bytes, cudaMemcpyDeviceToDevice, st),
                      "memcpy large");
      });
      rep.rows.push_back(row("memcpy-large", big_us, 2 * P * row_bytes));
    }
    rep.rows.push_back(row("dispatch-bf16-kernels", all.kernels, dispatch_bytes));
    rep.rows.push_back(row("dispatch-bf16-layout", all.layout, 0));
    rep.rows.push_back(row("dispatch-bf16-call", all.call, dispatch_bytes));
    rep.rows.push_back(row("dispatch-bf16-call-reuse", reused.call, dispatch_bytes));
    for (int sms : o.sm_budgets) {
      if (sms <= 0 || sms >= rep.device_sms) continue;
      rep.rows.push_back(row("dispatch-bf16-kernels@" + std::to_string(sms), run_dispatch(sms, true).kernels, dispatch_bytes));
    }
    run_dispatch(-1, false);  // the handle of the combine rows

    DeviceCombineArgs c;
    c.expert_out = last.expert_x.data();
    c.dtype = comm::DataType::kBfloat16;
    c.handle = &last.handle;
    c.weights = last.recv_topk_weights.as<float>();
    c.stream = st;
    DeviceCombineResult y;
    auto run_combine = [&](int sms, bool reuse) {
      c.num_sms = sms;
      std::vector<double> call, kern;
      for (int i = 0; i < o.warmup + o.iters; ++i) {
        DeviceCombineResult r;
        const auto t0 = std::chrono::steady_clock::now();
        if (reuse)
          buf.combine(c, y);
        else
          r = buf.combine(c);
        const auto t1 = std::chrono::steady_clock::now();
        if (i >= o.warmup) {
          call.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
          kern.push_back(buf.last_kernel_us());
        }
      }
      return Times{median(call), median(kern), 0};
    };
    const int64_t combine_bytes = row_bytes * (P + 2 * M + T);
    const Times call = run_combine(-1, false);
    const Times call_reused = run_combine(-1, true);
    rep.rows.push_back(row("combine-bf16-kernels", call.kernels, combine_bytes));
    rep.rows.push_back(row("combine-bf16-call", call.call, combine_bytes));
    rep.rows.push_back(row("combine-bf16-call-reuse", call_reused.call, combine_bytes));
    for (int sms : o.sm_budgets) {
      if (sms <= 0 || sms >= rep.device_sms) continue;
      rep.rows.push_back(row("combine-bf16-kernels@" + std::to_string(sms), run_combine(sms, true).kernels, combine_bytes));
    }

    // Overlap: an async dispatch with the default SM budget on `st` while a compute stand-in
    // (busy_kernel.h) fills the other SMs on a second stream; the busy kernel is sized to
    // take about as long as the dispatch alone. Wall-clock medians.
    {
      const int budget = std::min(IntranodeOptions::kDefaultNumSms, rep.device_sms - 1);
      const int ctas = rep.device_sms - budget;
      cuda::Stream compute;
      cuda::DeviceBuffer sink(sizeof(float));
      a.num_sms = budget;
      a.async = true;
      auto wall = [&](const std::function<void()>& fn) {
        std::vector<double> us;
        for (int i = 0; i < o.warmup + o.iters; ++i) {
          const auto t0 = std::chrono::steady_clock::now();
          fn();
          const auto t1 = std::chrono::steady_clock::now();
          if (i >= o.warmup) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
        }
        return median(us);
      };
      auto dispatch_alone = [&] {
        buf.dispatch(a, last);
        last.done->synchronize();
      };
      int64_t iters = 1 << 16;
      auto busy = [&] {
        launch_busy_kernel(ctas, iters, sink.as<float>(), compute.get());
        compute.synchronize();
      };
      const double t_d = wall(dispatch_alone);
      const double t_probe = wall(busy);
      iters = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(iters) * t_d / std::max(t_probe, 1.0)));
      const double t_c = wall(busy);
      const double t_both = wall([&] {
        launch_busy_kernel(ctas, iters, sink.as<float>(), compute.get());
        buf.dispatch(a, last);
        last.done->synchronize();
        compute.synchronize();
      });
      a.num_sms = 0;
      a.async = false;
      rep.rows.push_back(row("overlap-dispatch@" + std::to_string(budget) + "-alone", t_d, 0));
      rep.rows.push_back(row("overlap-compute@" + std::to_string(ctas) + "-alone", t_c, 0));
      rep.rows.push_back(row("overlap-both", t_both, 0));
      rep.overlap_hidden = (t_d + t_c - t_both) / std::max(std::min(t_d, t_c), 1e-9);
    }

    // FP8 payload (H bytes per row plus S scales, not counted): the copy kernels only.
    cuda::DeviceBuffer d_q8(T * H), d_s8(T * S * 4);
    quantize_fp8_tiles(d_x.as<uint16_t>(), T, H, false, d_q8.as<uint8_t>(), d_s8.as<float>(), st);
    a.x = d_q8.data();
    a.x_scales = d_s8.as<float>();
    a.dtype = comm::DataType::kFloat8E4M3;
    const Times f8 = run_dispatch(-1, false);
    rep.rows.push_back(row("dispatch-fp8-kernels", f8.kernels, H * (T + 3 * M + P)));
  }

  if (o.nccl && comm::NcclCommunicator::available()) {
    auto store = comm::make_memory_store();
    auto nccl = comm::NcclCommunicator::create(*store, 0, 1);
    const size_t n = static_cast<size_t>(T * H);  // BF16 elements
    const double ar = time_events(o, nccl->stream(), [&] {
      nccl->all_reduce(d_x.data(), d_copy.data(), n, comm::DataType::kBfloat16, comm::ReduceOp::kSum);
    });
    rep.rows.push_back(row("nccl-all-reduce-bf16", ar, 2 * static_cast<int64_t>(n) * 2));
    const size_t zero = 0;
    const double a2a = time_events(o, nccl->stream(), [&] {
      nccl->all_to_all_v(d_x.data(), &n, &zero, d_copy.data(), &n, &zero, comm::DataType::kBfloat16);
    });
    rep.rows.push_back(row("nccl-all-to-all-v-bf16", a2a, 2 * static_cast<int64_t>(n) * 2));
  }
  const double base = rep.rows.front().gbps;
  for (auto& r : rep.rows) r.vs_memcpy = base > 0 ? r.gbps / base : 0.0;
  return rep;
}

}  // namespace switchyard::dispatch::gpu
