// StagedBuffer in a build without CUDA: construction throws Unsupported.
#include "switchyard/common/error.h"
#include "switchyard/dispatch/cuda/staged.h"

namespace switchyard::dispatch::gpu {

StagedBuffer::StagedBuffer(std::shared_ptr<comm::Communicator>, const BufferOptions&) {
  SY_THROW(Unsupported, "StagedBuffer: this build has no CUDA backend; hint: configure with -DSY_CUDA=ON");
}
StagedBuffer::~StagedBuffer() = default;
StagedDispatchResult StagedBuffer::dispatch(const StagedDispatchArgs&) { return {}; }
StagedCombineResult StagedBuffer::combine(const void*, comm::DataType, const Handle&, const float*,
                                          cuda::StreamHandle) {
  return {};
}
StagedCombineResult StagedBuffer::dispatch_backward(const void*, comm::DataType, const Handle&, cuda::StreamHandle) {
  return {};
}
StagedCombineBackwardResult StagedBuffer::combine_backward(const void*, comm::DataType, const Handle&, const void*,
                                                           const float*, cuda::StreamHandle) {
  return {};
}

}  // namespace switchyard::dispatch::gpu
