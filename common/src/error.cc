// Error formatting: "<code>: <message> [rank R] (file:line)".
#include "switchyard/common/error.h"

#include <cstring>

#include "switchyard/common/log.h"

namespace switchyard {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kTimeout: return "timeout";
    case ErrorCode::kPeerFailure: return "peer failure";
    case ErrorCode::kIo: return "i/o error";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kInternal: return "internal error";
  }
  return "error";
}

static std::string format_what(ErrorCode code, const std::string& message, int rank, const char* file, int line) {
  std::ostringstream os;
  os << error_code_name(code) << ": " << message;
  if (rank >= 0) os << " [rank " << rank << "]";
  if (file) {
    const char* base = std::strrchr(file, '/');
    os << " (" << (base ? base + 1 : file) << ":" << line << ")";
  }
  return os.str();
}

Error::Error(ErrorCode code, std::string message, const char* file, int line)
    : std::runtime_error(format_what(code, message, log::rank(), file, line)),
      code_(code),
      message_(std::move(message)),
      rank_(log::rank()) {}

std::string errno_text(int err) {
  char buf[256];
  return std::string(strerror_r(err, buf, sizeof buf));
}

}  // namespace switchyard
