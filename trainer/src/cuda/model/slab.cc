// Parameter slabs of the GPU model (see slab.h).
#include "slab.h"

#include "switchyard/common/error.h"

namespace switchyard::trainer::gpu {

namespace {
constexpr int64_t kAlign = 64;  // elements: 256 bytes of FP32, 128 of BF16
int64_t round_up(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

SlabParam* ParameterSlab::add(const std::string& name, std::vector<int64_t> shape) {
  SY_REQUIRE(!allocated_, "gpu model: parameter \"" << name << "\" added after the slabs were allocated");
  SY_REQUIRE(by_name_.count(name) == 0, "gpu model: duplicate parameter \"" << name << "\"");
  auto p = std::make_unique<SlabParam>();
  p->name = name;
  p->numel = 1;
  for (int64_t s : shape) p->numel *= s;
  p->shape = std::move(shape);
  SlabParam* raw = p.get();
  by_name_[name] = raw;
  params_.push_back(std::move(p));
  return raw;
}

void ParameterSlab::allocate() {
  SY_REQUIRE(!allocated_, "gpu model: slabs allocated twice");
  size_ = 0;
  for (auto& p : params_)
    if (p->shape.size() == 2) p->offset = size_, size_ += round_up(p->numel);
  decay_size_ = size_;
  for (auto& p : params_)
    if (p->shape.size() != 2) p->offset = size_, size_ += round_up(p->numel);
  const size_t n = static_cast<size_t>(size_ > 0 ? size_ : 1);
  values_ = cuda::DeviceBuffer(n * sizeof(float));
  grads_ = cuda::DeviceBuffer(n * sizeof(float));
  bf16_ = cuda::DeviceBuffer(n * sizeof(uint16_t));
  values_.fill_zero();
  grads_.fill_zero();
  bf16_.fill_zero();
  cuda::device_synchronize();  // the fills ran on the legacy stream; the model uses its own
  for (auto& p : params_) {
    p->w = values() + p->offset;
    p->g = grads() + p->offset;
    p->wb = values_bf16() + p->offset;
  }
  allocated_ = true;
}

SlabParam* ParameterSlab::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

}  // namespace switchyard::trainer::gpu
