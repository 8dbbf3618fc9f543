// The CUDA backend's runtime basics: what this build can do, and RAII owners for GPU
// memory, pinned host memory, streams and events.
//
// No CUDA header is included here, so callers that do not use the GPU stay free of the
// toolkit: streams and events are the runtime's opaque handle types (cudaStream_t is
// CUstream_st*, cudaEvent_t is CUevent_st*), forward-declared below. In a build without the
// CUDA backend every allocating call throws Unsupported; built() and device_count() work in
// every build.
//
// Errors: a failing CUDA call throws Unsupported when there is no usable driver or device
// (cudaErrorInsufficientDriver, cudaErrorNoDevice), InvalidArgument for bad arguments, and
// InternalError otherwise; the message names the call, the CUDA error name and text, the
// device and what the caller was doing (see cuda_check.h for the macro).
//
// Threading: the owners are not synchronized; use one from one thread at a time (a stream
// may be passed to other threads by handle). Destructors never throw: a failing free is
// logged (subsystem "cuda") and ignored.
#pragma once

#include <cstddef>
#include <string>

struct CUstream_st;
struct CUevent_st;

namespace switchyard::cuda {

using StreamHandle = CUstream_st*;  // == cudaStream_t
using EventHandle = CUevent_st*;    // == cudaEvent_t

// True when this build compiled the CUDA backend (SY_CUDA=AUTO found nvcc, or ON).
bool built();
// Number of usable GPUs: 0 when the build has no CUDA, no driver is loaded or no GPU exists.
int device_count();
// Versions as integers (e.g. 13000 for CUDA 13.0): the driver's (0 without a driver) and
// the runtime's this build links.
int driver_version();
int runtime_version();
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)". Throws Unsupported without a device.
std::string device_description(int device);

// Makes `device` current for this thread. Throws InvalidArgument when out of range.
void set_device(int device);
int current_device();
// Blocks until all work on the current device has finished.
void device_synchronize();

// Throws the error class matching a CUDA error code (see the file comment). `code` is a
// cudaError_t; `expr` the failing call, `context` what the caller was doing.
[[noreturn]] void throw_error(int code, const char* expr, const std::string& context, const char* file, int line);

// Global memory on the current device (cudaMalloc). Moves, does not copy.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }
  int device() const { return device_; }

  // Synchronous copies (cudaMemcpy) between this buffer and host memory; `bytes` must fit.
  // They return when the data has arrived (safe for work on any stream issued after).
  void copy_from_host(const void* src, size_t bytes, size_t offset = 0);
  void copy_to_host(void* dst, size_t bytes, size_t offset = 0) const;
  // cudaMemsetAsync on `stream` (nullptr = the legacy default stream).
  void fill_zero(StreamHandle stream = nullptr);

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  int device_ = -1;
};

// Page-locked host memory (cudaMallocHost), for asynchronous copies.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return ptr_; }
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A non-blocking stream on the current device (cudaStreamCreateWithFlags).
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(Stream&& o) noexcept;
  Stream& operator=(Stream&& o) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  StreamHandle get() const { return stream_; }
  void synchronize() const;
  // Makes later work on this stream wait for `event` (cudaStreamWaitEvent).
  void wait(EventHandle event) const;

 private:
  StreamHandle stream_ = nullptr;
};

// An event (cudaEventCreate; timing enabled unless `timing` is false).
class Event {
 public:
  explicit Event(bool timing = true);
  ~Event();
  Event(Event&& o) noexcept;
  Event& operator=(Event&& o) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  EventHandle get() const { return event_; }
  void record(StreamHandle stream) const;
  void synchronize() const;
  bool done() const;  // cudaEventQuery == cudaSuccess
  // Milliseconds from `start` to this event (both recorded and finished).
  float elapsed_ms_since(const Event& start) const;

 private:
  EventHandle event_ = nullptr;
};

}  // namespace switchyard::cuda
