// Store: the small key-value service ranks use to find each other (bootstrap).
//
// Implementations: TcpStore (rank 0 hosts it; every connection presents the job's secret
// token) and FileStore (a directory on a shared file system; SY_RENDEZVOUS=file:PATH).
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace switchyard::comm {

class Store {
 public:
  virtual ~Store() = default;
  // Sets key to value (overwrites). Never blocks on other ranks.
  virtual void set(const std::string& key, const std::vector<uint8_t>& value) = 0;
  // Returns the value of key, waiting until some rank sets it. Throws Timeout naming the
  // key after `timeout`.
  virtual std::vector<uint8_t> get(const std::string& key, std::chrono::milliseconds timeout) = 0;
  // Atomically adds delta to the integer stored at key (0 if absent) and returns the result.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
  // True when key is set (does not wait).
  virtual bool check(const std::string& key) = 0;
};

}  // namespace switchyard::comm
