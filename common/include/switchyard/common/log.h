// Logging by level and subsystem (NCCL debug.h style), to stderr with a rank prefix.
//
//   SWITCHYARD_LOG_LEVEL  = error | warn (default) | info | debug | trace
//   SWITCHYARD_LOG_SUBSYS = all (default) or a comma list of topo,comm,dispatch,pipe,train,env,tool
//
// Lines look like "host:pid:tid r3 [comm] all_reduce: hierarchical (8 MiB, 2 nodes)".
// Text follows UCX's LoggingStyle: lowercase, "device %s", the exact cause.
// The rank in the prefix is the only global mutable state (set by the communicator).
#pragma once

#include <sstream>
#include <string>

namespace switchyard::log {

enum class Level { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3, kTrace = 4 };

// True when a message at this level and subsystem would be printed.
bool enabled(Level level, const char* subsys);
// Writes one line (adds the prefix and newline); thread-safe, one write(2) per line.
void write(Level level, const char* subsys, const std::string& text);
// Rank shown in the prefix; -1 (default) prints none.
void set_rank(int rank);
int rank();
// Re-reads SWITCHYARD_LOG_LEVEL / SWITCHYARD_LOG_SUBSYS (tests change them at run time).
void reload_from_env();

}  // namespace switchyard::log

#define SY_LOG(level, subsys, stream_expr)                                              \
  do {                                                                                  \
    if (::switchyard::log::enabled(::switchyard::log::Level::level, subsys)) {           \
      std::ostringstream sy_log_;                                                       \
      sy_log_ << stream_expr;                                                           \
      ::switchyard::log::write(::switchyard::log::Level::level, subsys, sy_log_.str()); \
    }                                                                                   \
  } while (0)

#define SY_WARN(subsys, s) SY_LOG(kWarn, subsys, s)
#define SY_INFO(subsys, s) SY_LOG(kInfo, subsys, s)
#define SY_DEBUG(subsys, s) SY_LOG(kDebug, subsys, s)
