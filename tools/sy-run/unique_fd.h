// UniqueFd: owns one file descriptor and closes it on destruction (RAII for fds).
//
// Move-only. Not thread-safe; sy-run is single-threaded.
#pragma once

#include <unistd.h>

#include <utility>

namespace switchyard::run {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Closes the current fd (if any) and takes ownership of fd.
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

// Writes all of text to fd, retrying on EINTR and short writes. Returns false on error
// (e.g. EPIPE when the reader went away); the caller decides whether that matters.
bool write_all(int fd, const char* data, size_t size);

}  // namespace switchyard::run
