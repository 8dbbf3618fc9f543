// The tensors a GPU dispatch returns, shared by IntranodeBuffer (intranode.h) and
// StagedBuffer (staged.h): the received tokens in canonical order and their expert-major
// layout, on the device, with the per-expert counts and offsets on the host. Each result
// type adds its own routing handle. Legend as in buffer.h.
#pragma once

#include <cstdint>
#include <vector>

#include "switchyard/comm/types.h"
#include "switchyard/common/cuda.h"

namespace switchyard::dispatch::gpu {

struct DeviceDispatchOutputs {
  comm::DataType dtype = comm::DataType::kBfloat16;
  int64_t num_recv_tokens = 0;                      // M
  cuda::DeviceBuffer recv_x;                        // [M x H] of dtype
  cuda::DeviceBuffer recv_x_scales;                 // [M x S] FP32 (FP8 only)
  cuda::DeviceBuffer recv_src_rank;                 // [M] int32
  cuda::DeviceBuffer recv_src_token;                // [M] int32
  cuda::DeviceBuffer recv_topk_idx;                 // [M x K] int64, local expert or -1
  cuda::DeviceBuffer recv_topk_weights;             // [M x K] FP32
  std::vector<int64_t> num_recv_tokens_per_expert;  // [L] (host)
  std::vector<int64_t> expert_offsets;              // [L + 1] (host)
  cuda::DeviceBuffer expert_row_token;              // [P] int32, -1 = padding
  cuda::DeviceBuffer expert_row_slot;               // [P] int32, -1 = padding
  cuda::DeviceBuffer expert_x;                      // [P x H] of dtype, padding rows zero
  cuda::DeviceBuffer expert_x_scales;               // [P x S] FP32 (FP8 only)
};

}  // namespace switchyard::dispatch::gpu
