// FileStore: the bootstrap store as files in a directory of a shared file system.
// One file per key (name escaped), written to a temporary then renamed; add() under flock.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "switchyard/comm/store.h"
#include "switchyard/common/error.h"

namespace switchyard::comm {
namespace {

class FileStore : public Store {
 public:
  explicit FileStore(std::string dir) : dir_(std::move(dir)) {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    SY_REQUIRE(std::filesystem::is_directory(dir_), "store: file rendezvous '" << dir_ << "' is not a directory"
                                                                               << (ec ? ": " + ec.message() : ""));
  }

  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    std::string path = path_of(key);
    std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter_++);
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      f.write(reinterpret_cast<const char*>(value.data()), static_cast<std::streamsize>(value.size()));
      if (!f) SY_THROW(IoError, "store: write " << tmp << ": " << errno_text(errno));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      SY_THROW(IoError, "store: rename " << tmp << ": " << errno_text(errno));
  }

  std::vector<uint8_t> get(const std::string& key, std::chrono::milliseconds timeout) override {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::chrono::milliseconds backoff{1};
    for (;;) {
      std::vector<uint8_t> v;
      if (read(path_of(key), v)) return v;
      if (std::chrono::steady_clock::now() >= deadline)
        SY_THROW(Timeout, "store: key '" << key << "' not set in " << dir_ << " within " << timeout.count() << " ms");
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(20));
    }
  }

  int64_t add(const std::string& key, int64_t delta) override {
    std::string lock_path = dir_ + "/.lock";
    int fd = ::open(lock_path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) SY_THROW(IoError, "store: open " << lock_path << ": " << errno_text(errno));
    ::flock(fd, LOCK_EX);
    int64_t x = 0;
    std::vector<uint8_t> v;
    if (read(path_of(key), v) && v.size() == 8) std::memcpy(&x, v.data(), 8);
    x += delta;
    v.resize(8);
    std::memcpy(v.data(), &x, 8);
    try {
      set(key, v);
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);  // releases the lock
    return x;
  }

  bool check(const std::string& key) override { return ::access(path_of(key).c_str(), F_OK) == 0; }

 private:
  std::string path_of(const std::string& key) const {
    std::string name;
    for (char c : key) name += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.') ? c : '_';
    return dir_ + "/" + name;
  }
  static bool read(const std::string& path, std::vector<uint8_t>& v) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    v.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return true;
  }

  std::string dir_;
  std::atomic<uint64_t> counter_{0};
};

}  // namespace

std::unique_ptr<Store> make_file_store(const std::string& directory) { return std::make_unique<FileStore>(directory); }

std::vector<std::vector<uint8_t>> store_get_all(Store& store, const std::vector<std::string>& keys,
                                                const std::vector<std::string>& what,
                                                std::chrono::milliseconds timeout, const std::string& context) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::vector<uint8_t>> values(keys.size());
  std::vector<bool> have(keys.size(), false);
  std::chrono::milliseconds backoff{1};
  for (;;) {
    bool all = true;
    std::string lost;
    try {
      for (size_t i = 0; i < keys.size(); ++i) {
        if (have[i]) continue;
        if (store.check(keys[i])) {
          values[i] = store.get(keys[i], std::chrono::milliseconds(1000));
          have[i] = true;
        } else {
          all = false;
        }
      }
    } catch (const IoError& e) {
      // Rank 0 closed the store (typically: it gave up waiting for the same ranks).
      lost = e.message();
      all = false;
    }
    if (all) return values;
    if (!lost.empty() || std::chrono::steady_clock::now() >= deadline) {
      std::string missing;
      for (size_t i = 0; i < keys.size(); ++i)
        if (!have[i]) missing += (missing.empty() ? "" : ", ") + what[i];
      if (!lost.empty())
        SY_THROW(Timeout, context << ": " << missing << " did not arrive before the store closed (" << lost << ")");
      SY_THROW(Timeout, context << ": " << missing << " did not arrive within " << timeout.count() << " ms");
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(20));
  }
}

}  // namespace switchyard::comm
