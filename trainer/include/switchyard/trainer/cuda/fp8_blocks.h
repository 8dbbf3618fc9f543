// The 128x128 weight-block FP8 E4M3 quantiser of the GPU model's FP8 recipe (the weights'
// side of gemm_fp8_nt; the activations' 1x128 tiles are dispatch::gpu::quantize_fp8_tiles).
// Bit-identical to the CPU's fp8_quantize_blocks (train/fp8_gemm.h): per block, scale =
// fp8_tile_scale(amax) (optionally a power of two) and code = e4m3(x / scale), the codec of
// dispatch/fp8.h; a partial block's scale covers only its elements.
//
// Pointers are device memory; asynchronous on `stream`. Without CUDA it throws Unsupported.
#pragma once

#include <cstdint>

#include "switchyard/common/cuda.h"

namespace switchyard::trainer::gpu {

// w [rows x cols] FP32 -> codes [rows x cols] E4M3 and scales in cuBLASLt's BLK128x128
// layout (gemm.h kBlock128): [ceil(rows/128)] x [L4], L4 = ceil(cols/128) rounded up to 4,
// padding entries set to 0 (block128_scales_for_device of the CPU scales). One thread block
// per 128x128 block.
void quantize_fp8_blocks(const float* w, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* codes, float* scales,
                         cuda::StreamHandle stream);

}  // namespace switchyard::trainer::gpu
