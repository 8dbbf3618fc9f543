// CUDA side of switchyard::cuda: device discovery that degrades to 0 without a driver, the
// error mapping behind SY_CUDA_CHECK, and the RAII owners of cuda.h.
#include <cuda_runtime.h>

#include <utility>

#include "switchyard/common/cuda.h"
#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/common/log.h"

namespace switchyard::cuda {

// A tiny kernel keeps the device code path compiled and linked for sm_90a in every build.
__global__ void probe_kernel(int* out) { *out = 1; }

bool built() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear "insufficient driver" so later calls start clean
    return 0;
  }
  return n;
}

int driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) return 0;
  return v;
}

int runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) return 0;
  return v;
}

std::string device_description(int device) {
  cudaDeviceProp p{};
  SY_CUDA_CHECK(cudaGetDeviceProperties(&p, device), "device_description of device " << device);
  std::ostringstream s;
  s << p.name << " (sm_" << p.major << p.minor << ", " << p.multiProcessorCount << " SMs, "
    << static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0) << " GiB)";
  return s.str();
}

void throw_error(int code, const char* expr, const std::string& context, const char* file, int line) {
  const auto err = static_cast<cudaError_t>(code);
  cudaGetLastError();  // clear a sticky-free error so the next call starts clean
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) {
    device = -1;
    cudaGetLastError();
  }
  std::ostringstream m;
  m << context << ": " << expr << " failed with " << cudaGetErrorName(err) << " (" << cudaGetErrorString(err)
    << ") on device " << device;
  if (err == cudaErrorInsufficientDriver || err == cudaErrorNoDevice)
    throw Unsupported(m.str() + "; hint: this machine has no usable GPU or driver", file, line);
  if (err == cudaErrorInvalidValue || err == cudaErrorInvalidDevice || err == cudaErrorInvalidDevicePointer ||
      err == cudaErrorInvalidConfiguration)
    throw InvalidArgument(m.str(), file, line);
  throw InternalError(m.str(), file, line);
}

void set_device(int device) {
  const int n = device_count();
  if (n == 0) SY_THROW(Unsupported, "cuda::set_device " << device << ": no GPU is usable on this machine");
  if (device < 0 || device >= n)
    SY_THROW(InvalidArgument, "cuda::set_device: device " << device << " is out of range [0, " << n << ")");
  SY_CUDA_CHECK(cudaSetDevice(device), "set_device " << device);
}

int current_device() {
  int d = 0;
  SY_CUDA_CHECK(cudaGetDevice(&d), "current_device");
  return d;
}

void device_synchronize() { SY_CUDA_CHECK(cudaDeviceSynchronize(), "device_synchronize"); }

// ---- DeviceBuffer ----

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes), device_(current_device()) {
  if (bytes == 0) return;  // an empty buffer holds no memory
  SY_CUDA_CHECK(cudaMalloc(&ptr_, bytes), "DeviceBuffer: allocate " << bytes << " bytes on device " << device_);
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ == nullptr) return;
  const cudaError_t e = cudaFree(ptr_);
  if (e != cudaSuccess) SY_WARN("cuda", "DeviceBuffer: cudaFree of " << bytes_ << " bytes failed: " << cudaGetErrorString(e));
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)), device_(o.device_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    DeviceBuffer old(std::move(*this));
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    device_ = o.device_;
  }
  return *this;
}

void DeviceBuffer::copy_from_host(const void* src, size_t bytes, size_t offset) {
  if (offset + bytes > bytes_)
    SY_THROW(InvalidArgument, "DeviceBuffer::copy_from_host: " << bytes << " bytes at offset " << offset
                                                               << " exceed the buffer's " << bytes_);
  if (bytes == 0) return;
  SY_CUDA_CHECK(cudaMemcpy(static_cast<char*>(ptr_) + offset, src, bytes, cudaMemcpyHostToDevice),
                "DeviceBuffer::copy_from_host of " << bytes << " bytes");
  // A pageable upload may still be in flight when cudaMemcpy returns; work on non-blocking
  // streams would not wait for it, so wait here: the data is on the device on return.
  SY_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy), "DeviceBuffer::copy_from_host: wait for the upload");
}

void DeviceBuffer::copy_to_host(void* dst, size_t bytes, size_t offset) const {
  if (offset + bytes > bytes_)
    SY_THROW(InvalidArgument, "DeviceBuffer::copy_to_host: " << bytes << " bytes at offset " << offset
                                                             << " exceed the buffer's " << bytes_);
  if (bytes == 0) return;
  SY_CUDA_CHECK(cudaMemcpy(dst, static_cast<const char*>(ptr_) + offset, bytes, cudaMemcpyDeviceToHost),
                "DeviceBuffer::copy_to_host of " << bytes << " bytes");
}

void DeviceBuffer::fill_zero(StreamHandle stream) {
  if (bytes_ == 0) return;
  SY_CUDA_CHECK(cudaMemsetAsync(ptr_, 0, bytes_, stream), "DeviceBuffer::fill_zero of " << bytes_ << " bytes");
}

// ---- PinnedBuffer ----

PinnedBuffer::PinnedBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  SY_CUDA_CHECK(cudaMallocHost(&ptr_, bytes), "PinnedBuffer: allocate " << bytes << " pinned host bytes");
}

PinnedBuffer::~PinnedBuffer() {
  if (ptr_ == nullptr) return;
  const cudaError_t e = cudaFreeHost(ptr_);
  if (e != cudaSuccess) SY_WARN("cuda", "PinnedBuffer: cudaFreeHost failed: " << cudaGetErrorString(e));
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& o) noexcept
    : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    PinnedBuffer old(std::move(*this));
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

// ---- Stream ----

Stream::Stream() { SY_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "Stream: create"); }

Stream::~Stream() {
  if (stream_ == nullptr) return;
  const cudaError_t e = cudaStreamDestroy(stream_);
  if (e != cudaSuccess) SY_WARN("cuda", "Stream: cudaStreamDestroy failed: " << cudaGetErrorString(e));
}

Stream::Stream(Stream&& o) noexcept : stream_(std::exchange(o.stream_, nullptr)) {}

Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    Stream old(std::move(*this));
    stream_ = std::exchange(o.stream_, nullptr);
  }
  return *this;
}

void Stream::synchronize() const { SY_CUDA_CHECK(cudaStreamSynchronize(stream_), "Stream::synchronize"); }

void Stream::wait(EventHandle event) const {
  SY_CUDA_CHECK(cudaStreamWaitEvent(stream_, event, 0), "Stream::wait on an event");
}

// ---- Event ----

Event::Event(bool timing) {
  SY_CUDA_CHECK(cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming), "Event: create");
}

Event::~Event() {
  if (event_ == nullptr) return;
  const cudaError_t e = cudaEventDestroy(event_);
  if (e != cudaSuccess) SY_WARN("cuda", "Event: cudaEventDestroy failed: " << cudaGetErrorString(e));
}

Event::Event(Event&& o) noexcept : event_(std::exchange(o.event_, nullptr)) {}

Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    Event old(std::move(*this));
    event_ = std::exchange(o.event_, nullptr);
  }
  return *this;
}

void Event::record(StreamHandle stream) const { SY_CUDA_CHECK(cudaEventRecord(event_, stream), "Event::record"); }

void Event::synchronize() const { SY_CUDA_CHECK(cudaEventSynchronize(event_), "Event::synchronize"); }

bool Event::done() const {
  const cudaError_t e = cudaEventQuery(event_);
  if (e == cudaErrorNotReady) return false;
  SY_CUDA_CHECK(e, "Event::done");
  return true;
}

float Event::elapsed_ms_since(const Event& start) const {
  float ms = 0.0f;
  SY_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, event_), "Event::elapsed_ms_since");
  return ms;
}

}  // namespace switchyard::cuda
