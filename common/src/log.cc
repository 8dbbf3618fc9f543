// Logger: level and subsystem filters from the environment, one write(2) per line.
#include "switchyard/common/log.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

namespace switchyard::log {
namespace {

struct Config {
  Level level = Level::kWarn;
  bool all_subsys = true;
  std::set<std::string> subsys;
};

std::atomic<int> g_rank{-1};
std::mutex g_mutex;
Config g_config;
bool g_loaded = false;

Config parse_env() {
  Config c;
  if (const char* v = std::getenv("SWITCHYARD_LOG_LEVEL")) {
    std::string s(v);
    if (s == "error") c.level = Level::kError;
    else if (s == "warn") c.level = Level::kWarn;
    else if (s == "info") c.level = Level::kInfo;
    else if (s == "debug") c.level = Level::kDebug;
    else if (s == "trace") c.level = Level::kTrace;
  }
  if (const char* v = std::getenv("SWITCHYARD_LOG_SUBSYS")) {
    std::string s(v);
    if (!s.empty() && s != "all") {
      c.all_subsys = false;
      size_t pos = 0;
      while (pos <= s.size()) {
        size_t comma = s.find(',', pos);
        if (comma == std::string::npos) comma = s.size();
        if (comma > pos) c.subsys.insert(s.substr(pos, comma - pos));
        pos = comma + 1;
      }
    }
  }
  return c;
}

const Config& config() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_loaded) {
    g_config = parse_env();
    g_loaded = true;
  }
  return g_config;
}

const char* level_name(Level l) {
  switch (l) {
    case Level::kError: return "error";
    case Level::kWarn: return "warn";
    case Level::kInfo: return "info";
    case Level::kDebug: return "debug";
    case Level::kTrace: return "trace";
  }
  return "?";
}

}  // namespace

void reload_from_env() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_config = parse_env();
  g_loaded = true;
}

bool enabled(Level level, const char* subsys) {
  const Config& c = config();
  if (level > c.level) return false;
  if (level <= Level::kWarn || c.all_subsys) return true;
  return c.subsys.count(subsys) > 0;
}

void write(Level level, const char* subsys, const std::string& text) {
  char host[64] = "?";
  gethostname(host, sizeof host - 1);
  std::string line;
  line.reserve(text.size() + 96);
  line += host;
  line += ':' + std::to_string(getpid()) + ':' + std::to_string(static_cast<long>(syscall(SYS_gettid)));
  int r = g_rank.load(std::memory_order_relaxed);
  if (r >= 0) line += " r" + std::to_string(r);
  line += " [";
  line += subsys;
  line += "] ";
  if (level != Level::kInfo) {
    line += level_name(level);
    line += ": ";
  }
  line += text;
  line += '\n';
  ssize_t rc = ::write(2, line.data(), line.size());
  (void)rc;
}

void set_rank(int r) { g_rank.store(r, std::memory_order_relaxed); }
int rank() { return g_rank.load(std::memory_order_relaxed); }

}  // namespace switchyard::log
