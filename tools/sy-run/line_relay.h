// LineRelay: copies one rank's output stream to sy-run's stdout or stderr, whole lines only.
//
// Data arrives in arbitrary chunks (pipe reads); each complete line is written with a
// prefix ("[3] ") in a single write, so lines of different ranks never interleave
// mid-line. A partial line waits for its end; finish() flushes it with a newline added.
// A line longer than kMaxLineBytes is cut and written in pieces (memory stays bounded).
// Not thread-safe; one relay per (rank, stream).
#pragma once

#include <cstddef>
#include <string>

namespace switchyard::run {

class LineRelay {
 public:
  static constexpr size_t kMaxLineBytes = 64 * 1024;

  // prefix is prepended to every line ("" for bare lines); out_fd is not owned.
  LineRelay(std::string prefix, int out_fd) : prefix_(std::move(prefix)), out_fd_(out_fd) {}
  // Appends a chunk and writes every line it completes.
  void feed(const char* data, size_t size);
  // Writes a pending partial line (with '\n' added). Call at end of stream.
  void finish();

 private:
  void emit(const char* line, size_t size);  // line without its '\n'
  std::string prefix_;
  int out_fd_;
  std::string pending_;  // bytes of the current, unfinished line
  bool just_cut_ = false;  // the last bytes fed ended a kMaxLineBytes piece
  std::string scratch_;  // prefix + line + '\n', reused
};

}  // namespace switchyard::run
