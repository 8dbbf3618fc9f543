// Store: the small key-value service ranks use to find each other (bootstrap).
//
// Implementations: TcpStore (rank 0 hosts it; every connection presents the job's secret
// token) and FileStore (a directory on a shared file system; SY_RENDEZVOUS=file:PATH).
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
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

namespace switchyard::comm {

// TcpStore: rank 0 (is_server) listens on `port` on all interfaces and serves the keys in
// memory; every rank (rank 0 too, in process) uses it as a Store. A client first presents
// `token`; the server refuses and logs any connection that does not. Clients retry the
// connection until `timeout`. The server stops when its owner is destroyed.
struct TcpStoreOptions {
  std::string host = "127.0.0.1";  // where the server runs (clients connect here)
  int port = 0;
  std::string token;
  bool is_server = false;
  std::chrono::milliseconds timeout{60000};
};
std::unique_ptr<Store> make_tcp_store(const TcpStoreOptions& options);

// FileStore: one file per key in `directory` (created if missing), written atomically
// (write then rename); add() takes an flock on a lock file. For a shared file system.
std::unique_ptr<Store> make_file_store(const std::string& directory);

// Waits for every key in `keys` up to `timeout`; throws Timeout listing the keys (by the
// `what` of each, e.g. "rank 3") still missing. Returns the values in order.
std::vector<std::vector<uint8_t>> store_get_all(Store& store, const std::vector<std::string>& keys,
                                                const std::vector<std::string>& what,
                                                std::chrono::milliseconds timeout, const std::string& context);

}  // namespace switchyard::comm

namespace switchyard::comm {
// MemoryStore: keys in this process only (a single-process job, tests).
std::unique_ptr<Store> make_memory_store();
}  // namespace switchyard::comm
