// StagedBuffer (cuda/staged.h): device tensors through host memory and the CPU Buffer.
// Down: synchronize the caller's stream, cudaMemcpy each input to a host vector. Across:
// Buffer's collective (two-hop over UCX between nodes). Up: one device buffer per output.
#include "switchyard/dispatch/cuda/staged.h"

#include <cuda_runtime.h>

#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"

namespace switchyard::dispatch::gpu {

namespace {

int64_t scale_cols(int64_t hidden) { return (hidden + 127) / 128; }

void sync(cuda::StreamHandle stream, const char* what) {
  SY_CUDA_CHECK(cudaStreamSynchronize(stream), std::string("StagedBuffer::") + what + ": the input stream");
}

template <class T>
std::vector<T> download(const void* device, int64_t count, const char* what) {
  std::vector<T> host(static_cast<size_t>(count));
  if (count > 0) {
    SY_REQUIRE(device != nullptr, "StagedBuffer: " << what << " is null");
    SY_CUDA_CHECK(cudaMemcpy(host.data(), device, host.size() * sizeof(T), cudaMemcpyDeviceToHost),
                  std::string("StagedBuffer: copy ") + what + " to the host");
  }
  return host;
}

template <class T>
cuda::DeviceBuffer upload(const std::vector<T>& host) {
  cuda::DeviceBuffer d(host.empty() ? 1 : host.size() * sizeof(T));
  if (!host.empty()) d.copy_from_host(host.data(), host.size() * sizeof(T));
  return d;
}

}  // namespace

StagedBuffer::StagedBuffer(std::shared_ptr<comm::Communicator> comm, const BufferOptions& options) {
  if (cuda::device_count() == 0) SY_THROW(Unsupported, "StagedBuffer: no GPU is usable on this machine");
  host_ = std::make_unique<Buffer>(std::move(comm), options);
}

StagedBuffer::~StagedBuffer() = default;

StagedDispatchResult StagedBuffer::dispatch(const StagedDispatchArgs& a) {
  SY_REQUIRE(a.num_tokens >= 0 && a.top_k > 0, "StagedBuffer::dispatch: num_tokens " << a.num_tokens << ", top_k "
                                                                                       << a.top_k);
  const int64_t T = a.num_tokens, K = a.top_k, H = host_->options().hidden, S = scale_cols(H);
  const bool fp8 = a.dtype == comm::DataType::kFloat8E4M3;
  sync(a.stream, "dispatch");
  const auto x = download<uint8_t>(a.x, T * H * static_cast<int64_t>(payload_elem_bytes(a.dtype)), "x");
  const auto scales = fp8 ? download<float>(a.x_scales, T * S, "x_scales") : std::vector<float>{};
  const auto idx = a.cached_handle ? std::vector<int64_t>{} : download<int64_t>(a.topk_idx, T * K, "topk_idx");
  const auto w = a.topk_weights ? download<float>(a.topk_weights, T * K, "topk_weights") : std::vector<float>{};

  DispatchArgs d;
  d.x = x.data();
  d.dtype = a.dtype;
  d.x_scales = fp8 ? scales.data() : nullptr;
  d.topk_idx = a.cached_handle ? nullptr : idx.data();
  d.topk_weights = a.topk_weights ? w.data() : nullptr;
  d.num_tokens = T;
  d.top_k = a.top_k;
  d.expert_alignment = a.expert_alignment;
  d.cached_handle = a.cached_handle;
  DispatchResult r = host_->dispatch(d);

  StagedDispatchResult out;
  out.dtype = r.dtype;
  out.num_recv_tokens = r.num_recv_tokens;
  out.recv_x = upload(r.recv_x);
  out.recv_x_scales = upload(r.recv_x_scales);
  out.recv_src_rank = upload(r.recv_src_rank);
  out.recv_src_token = upload(r.recv_src_token);
  out.recv_topk_idx = upload(r.recv_topk_idx);
  out.recv_topk_weights = upload(r.recv_topk_weights);
  out.num_recv_tokens_per_expert = std::move(r.num_recv_tokens_per_expert);
  out.expert_offsets = std::move(r.expert_offsets);
  out.expert_row_token = upload(r.expert_row_token);
  out.expert_row_slot = upload(r.expert_row_slot);
  out.expert_x = upload(r.expert_x);
  out.expert_x_scales = upload(r.expert_x_scales);
  out.handle = std::move(r.handle);
  out.stats = r.stats;
  return out;
}

StagedCombineResult StagedBuffer::combine(const void* expert_out, comm::DataType dtype, const Handle& handle,
                                          const float* weights, cuda::StreamHandle stream) {
  SY_REQUIRE(handle.valid(), "StagedBuffer::combine: the handle is not valid (no dispatch made it)");
  const int64_t H = host_->options().hidden, P = handle.num_expert_rows();
  const int64_t M = handle.num_recv_tokens(), K = handle.top_k();
  sync(stream, "combine");
  const auto x = download<uint8_t>(expert_out, P * H * static_cast<int64_t>(payload_elem_bytes(dtype)), "expert_out");
  const auto w = weights ? download<float>(weights, M * K, "weights") : std::vector<float>{};
  CombineArgs c;
  c.expert_out = x.data();
  c.dtype = dtype;
  c.handle = &handle;
  c.weights = weights ? w.data() : nullptr;
  CombineResult r = host_->combine(c);
  return {r.dtype, upload(r.y), r.stats};
}

StagedCombineResult StagedBuffer::dispatch_backward(const void* grad_expert_x, comm::DataType dtype,
                                                    const Handle& handle, cuda::StreamHandle stream) {
  SY_REQUIRE(handle.valid(), "StagedBuffer::dispatch_backward: the handle is not valid");
  const int64_t H = host_->options().hidden, P = handle.num_expert_rows();
  sync(stream, "dispatch_backward");
  const auto g =
      download<uint8_t>(grad_expert_x, P * H * static_cast<int64_t>(payload_elem_bytes(dtype)), "grad_expert_x");
  CombineResult r = host_->dispatch_backward(g.data(), dtype, handle);
  return {r.dtype, upload(r.y), r.stats};
}

StagedCombineBackwardResult StagedBuffer::combine_backward(const void* grad_y, comm::DataType dtype,
                                                           const Handle& handle, const void* expert_out,
                                                           const float* weights, cuda::StreamHandle stream) {
  SY_REQUIRE(handle.valid(), "StagedBuffer::combine_backward: the handle is not valid");
  const int64_t H = host_->options().hidden, P = handle.num_expert_rows(), T = handle.num_tokens();
  const int64_t M = handle.num_recv_tokens(), K = handle.top_k();
  const auto eb = static_cast<int64_t>(payload_elem_bytes(dtype));
  sync(stream, "combine_backward");
  const auto gy = download<uint8_t>(grad_y, T * H * eb, "grad_y");
  const auto eo = download<uint8_t>(expert_out, P * H * eb, "expert_out");
  const auto w = weights ? download<float>(weights, M * K, "weights") : std::vector<float>{};
  CombineBackwardArgs c;
  c.grad_y = gy.data();
  c.dtype = dtype;
  c.handle = &handle;
  c.expert_out = eo.data();
  c.weights = weights ? w.data() : nullptr;
  CombineBackwardResult r = host_->combine_backward(c);
  return {upload(r.grad_expert_out), upload(r.grad_topk_weights), r.stats};
}

}  // namespace switchyard::dispatch::gpu
