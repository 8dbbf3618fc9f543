// Switchyard errors: one exception hierarchy for every layer.
//
// The class says what the caller should do (abseil's status codes, gloo's errors.md):
//   InvalidArgument  fix the call; retrying cannot help.
//   Timeout          a wait ran out; the peers it waited for are named in the message.
//   PeerFailure      a peer died or misbehaved; rebuild the communicator (carries the peer rank).
//   IoError          the operating system refused (file, socket, shared memory); carries errno text.
//   Unsupported      the build or the machine lacks a feature (e.g. no GPU).
//   InternalError    a Switchyard invariant broke (a bug): SY_CHECK raises it.
// Messages name the operation, the argument and its value, the rank and file:line, and are
// raised where the problem is first detected, with the exact cause.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace switchyard {

enum class ErrorCode { kInvalidArgument, kTimeout, kPeerFailure, kIo, kUnsupported, kInternal };

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  // what() is "<code>: <message> [rank R] (file:line)"; message() is the bare text.
  Error(ErrorCode code, std::string message, const char* file = nullptr, int line = 0);
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  int rank() const { return rank_; }  // rank that raised it, -1 when not in a job

 private:
  ErrorCode code_;
  std::string message_;
  int rank_;
};

class InvalidArgument : public Error {
 public:
  InvalidArgument(std::string m, const char* f = nullptr, int l = 0) : Error(ErrorCode::kInvalidArgument, std::move(m), f, l) {}
};
class Timeout : public Error {
 public:
  Timeout(std::string m, const char* f = nullptr, int l = 0) : Error(ErrorCode::kTimeout, std::move(m), f, l) {}
};
class PeerFailure : public Error {
 public:
  PeerFailure(int peer, std::string m, const char* f = nullptr, int l = 0)
      : Error(ErrorCode::kPeerFailure, std::move(m), f, l), peer_(peer) {}
  int peer() const { return peer_; }  // the rank that failed

 private:
  int peer_;
};
class IoError : public Error {
 public:
  IoError(std::string m, const char* f = nullptr, int l = 0) : Error(ErrorCode::kIo, std::move(m), f, l) {}
};
class Unsupported : public Error {
 public:
  Unsupported(std::string m, const char* f = nullptr, int l = 0) : Error(ErrorCode::kUnsupported, std::move(m), f, l) {}
};
class InternalError : public Error {
 public:
  InternalError(std::string m, const char* f = nullptr, int l = 0) : Error(ErrorCode::kInternal, std::move(m), f, l) {}
};

// Text of errno for IoError messages ("open /x: No such file or directory").
std::string errno_text(int err);

}  // namespace switchyard

// SY_THROW(InvalidArgument, "dispatch: topk_idx[" << i << "] = " << e << " is out of range");
#define SY_THROW(Type, stream_expr)                                  \
  do {                                                               \
    std::ostringstream sy_msg_;                                      \
    sy_msg_ << stream_expr;                                          \
    throw ::switchyard::Type(sy_msg_.str(), __FILE__, __LINE__);     \
  } while (0)

// Argument check on user input: throws InvalidArgument with the message.
#define SY_REQUIRE(cond, stream_expr)              \
  do {                                             \
    if (!(cond)) SY_THROW(InvalidArgument, stream_expr); \
  } while (0)

// Invariant check (a bug if it fails): throws InternalError naming the condition.
#define SY_CHECK(cond)                                                        \
  do {                                                                        \
    if (!(cond)) SY_THROW(InternalError, "invariant failed: " #cond);         \
  } while (0)
