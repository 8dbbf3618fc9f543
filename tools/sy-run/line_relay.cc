// LineRelay: whole-line, prefixed copying of a rank's output (see line_relay.h).
#include "line_relay.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "unique_fd.h"

namespace switchyard::run {

void LineRelay::feed(const char* data, size_t size) {
  while (size > 0) {
    const char* newline = static_cast<const char*>(std::memchr(data, '\n', size));
    size_t take = newline != nullptr ? static_cast<size_t>(newline - data) : size;
    while (take > 0) {
      size_t n = std::min(take, kMaxLineBytes - pending_.size());
      pending_.append(data, n);
      data += n;
      size -= n;
      take -= n;
      if (pending_.size() == kMaxLineBytes) {
        emit(pending_.data(), pending_.size());
        pending_.clear();
        just_cut_ = true;
      } else {
        just_cut_ = false;
      }
    }
    if (newline == nullptr) return;
    // A line of exactly k * kMaxLineBytes bytes was written in full by the cuts.
    if (!(pending_.empty() && just_cut_)) emit(pending_.data(), pending_.size());
    pending_.clear();
    just_cut_ = false;
    data += 1;
    size -= 1;
  }
}

void LineRelay::finish() {
  if (!pending_.empty()) emit(pending_.data(), pending_.size());
  pending_.clear();
}

void LineRelay::emit(const char* line, size_t size) {
  scratch_.assign(prefix_);
  scratch_.append(line, size);
  scratch_.push_back('\n');
  // A closed stdout (reader gone) must not stop the job; the line is dropped.
  write_all(out_fd_, scratch_.data(), scratch_.size());
}

bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= n;
  }
  return true;
}

}  // namespace switchyard::run
