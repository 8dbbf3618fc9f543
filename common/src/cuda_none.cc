// switchyard::cuda when the build has no CUDA backend: queries answer "nothing", and every
// call that would need the GPU throws Unsupported naming itself.
#include "switchyard/common/cuda.h"

#include "switchyard/common/error.h"

namespace switchyard::cuda {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  SY_THROW(Unsupported, what << ": this build has no CUDA backend; hint: configure with -DSY_CUDA=ON on a machine "
                                "with the CUDA toolkit");
}
}  // namespace

bool built() { return false; }
int device_count() { return 0; }
int driver_version() { return 0; }
int runtime_version() { return 0; }
std::string device_description(int) { no_cuda("cuda::device_description"); }
void set_device(int) { no_cuda("cuda::set_device"); }
int current_device() { no_cuda("cuda::current_device"); }
void device_synchronize() { no_cuda("cuda::device_synchronize"); }
void throw_error(int code, const char* expr, const std::string& context, const char* file, int line) {
  SY_THROW(Unsupported, context << ": " << expr << " failed with CUDA error " << code << " at " << file << ":" << line
                                << " (build without CUDA)");
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) no_cuda("cuda::DeviceBuffer");
}
DeviceBuffer::~DeviceBuffer() = default;
DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_), device_(o.device_) {}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&&) noexcept { return *this; }
void DeviceBuffer::copy_from_host(const void*, size_t, size_t) { no_cuda("cuda::DeviceBuffer::copy_from_host"); }
void DeviceBuffer::copy_to_host(void*, size_t, size_t) const { no_cuda("cuda::DeviceBuffer::copy_to_host"); }
void DeviceBuffer::fill_zero(StreamHandle) { no_cuda("cuda::DeviceBuffer::fill_zero"); }

PinnedBuffer::PinnedBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) no_cuda("cuda::PinnedBuffer");
}
PinnedBuffer::~PinnedBuffer() = default;
PinnedBuffer::PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {}
PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&&) noexcept { return *this; }

Stream::Stream() { no_cuda("cuda::Stream"); }
Stream::~Stream() = default;
Stream::Stream(Stream&&) noexcept {}
Stream& Stream::operator=(Stream&&) noexcept { return *this; }
void Stream::synchronize() const { no_cuda("cuda::Stream::synchronize"); }
void Stream::wait(EventHandle) const { no_cuda("cuda::Stream::wait"); }

Event::Event(bool) { no_cuda("cuda::Event"); }
Event::~Event() = default;
Event::Event(Event&&) noexcept {}
Event& Event::operator=(Event&&) noexcept { return *this; }
void Event::record(StreamHandle) const { no_cuda("cuda::Event::record"); }
void Event::synchronize() const { no_cuda("cuda::Event::synchronize"); }
bool Event::done() const { no_cuda("cuda::Event::done"); }
float Event::elapsed_ms_since(const Event&) const { no_cuda("cuda::Event::elapsed_ms_since"); }

}  // namespace switchyard::cuda
