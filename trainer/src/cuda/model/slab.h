// The GPU model's parameters (internal): one FP32 value slab, one FP32 gradient slab and a
// BF16 copy of the values, with named views in registration order (the CPU ParameterSet's
// order, so init_random draws the same numbers for the same names).
//
// Two phases: add() registers names and shapes; allocate() places them, makes the slabs,
// zeroed, and fills every view's pointers. Placement: every matrix (2-D: weight decay
// applies) first, then the 1-D norm weights, so AdamW is one launch per run; each tensor
// starts at a multiple of 64 elements (256-byte aligned for cuBLASLt). The zero gaps
// between tensors stay zero under AdamW.
// Owns its device memory; SlabParam pointers stay valid for the slab's lifetime. Not
// thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/common/cuda.h"

namespace switchyard::trainer::gpu {

struct SlabParam {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0, numel = 0;  // in the slabs, elements (offset set by allocate)
  float* w = nullptr;             // value (FP32)
  float* g = nullptr;             // gradient (FP32)
  uint16_t* wb = nullptr;         // BF16 copy of the value
};

class ParameterSlab {
 public:
  // Throws InvalidArgument on a duplicate name or after allocate().
  SlabParam* add(const std::string& name, std::vector<int64_t> shape);
  void allocate();
  SlabParam* find(const std::string& name) const;
  const std::vector<std::unique_ptr<SlabParam>>& all() const { return params_; }
  int64_t size() const { return size_; }  // elements of a slab (gaps included)
  float* values() const { return values_.as<float>(); }
  float* grads() const { return grads_.as<float>(); }
  uint16_t* values_bf16() const { return bf16_.as<uint16_t>(); }
  // Elements [0, decay_size()) hold the matrices (weight decay), the rest the norm weights.
  int64_t decay_size() const { return decay_size_; }

 private:
  std::vector<std::unique_ptr<SlabParam>> params_;
  std::map<std::string, SlabParam*> by_name_;
  int64_t size_ = 0, decay_size_ = 0;
  bool allocated_ = false;
  cuda::DeviceBuffer values_, grads_, bf16_;
};

}  // namespace switchyard::trainer::gpu
