// TcpStore: the bootstrap key-value service over TCP (rank 0 hosts it in a thread).
//
// Wire format: frames of [u32 length][bytes]. The first client frame is the token; the
// server answers "ok" or closes the connection (and logs the refusal). Requests are
// [u8 op][u32 key length][key][value]; get/check/add answer one frame.
// Waiting get()s poll with a growing back-off (1 ms .. 20 ms): bootstrap only.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "switchyard/comm/store.h"
#include "switchyard/common/error.h"
#include "switchyard/common/log.h"

namespace switchyard::comm {
namespace {

enum Op : uint8_t { kSet = 1, kGet = 2, kAdd = 3, kCheck = 4 };
constexpr uint32_t kMaxFrame = 64u << 20;

// RAII file descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    reset();
    fd_ = o.fd_;
    o.fd_ = -1;
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Reads exactly n bytes; false on EOF/error. Gives up after `timeout_ms` without data.
bool read_all(int fd, void* p, size_t n, int timeout_ms) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    int pr = ::poll(&pfd, 1, timeout_ms);
    if (pr <= 0) return false;
    ssize_t r = ::recv(fd, c, n, 0);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return false;
    }
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool write_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t r = ::send(fd, c, n, MSG_NOSIGNAL);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return false;
    }
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool write_frame(int fd, const std::vector<uint8_t>& data) {
  uint32_t n = static_cast<uint32_t>(data.size());
  return write_all(fd, &n, 4) && write_all(fd, data.data(), data.size());
}

bool read_frame(int fd, std::vector<uint8_t>& data, int timeout_ms) {
  uint32_t n = 0;
  if (!read_all(fd, &n, 4, timeout_ms) || n > kMaxFrame) return false;
  data.resize(n);
  return read_all(fd, data.data(), n, timeout_ms);
}

std::string peer_name(const sockaddr_storage& a) {
  char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?";
  getnameinfo(reinterpret_cast<const sockaddr*>(&a), sizeof a, host, sizeof host, serv, sizeof serv,
              NI_NUMERICHOST | NI_NUMERICSERV);
  return std::string(host) + ":" + serv;
}

// The key-value map with the store semantics; shared by the server and rank 0's own calls.
class KeyValueMap {
 public:
  void set(const std::string& k, std::vector<uint8_t> v) {
    std::lock_guard<std::mutex> lock(mu_);
    map_[k] = std::move(v);
  }
  bool get(const std::string& k, std::vector<uint8_t>& v) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(k);
    if (it == map_.end()) return false;
    v = it->second;
    return true;
  }
  int64_t add(const std::string& k, int64_t delta) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& v = map_[k];
    int64_t x = 0;
    if (v.size() == 8) std::memcpy(&x, v.data(), 8);
    x += delta;
    v.resize(8);
    std::memcpy(v.data(), &x, 8);
    return x;
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::vector<uint8_t>> map_;
};

std::vector<uint8_t> encode_request(Op op, const std::string& key, const std::vector<uint8_t>& value) {
  std::vector<uint8_t> f(1 + 4 + key.size() + value.size());
  f[0] = op;
  uint32_t kl = static_cast<uint32_t>(key.size());
  std::memcpy(&f[1], &kl, 4);
  std::memcpy(&f[5], key.data(), key.size());
  if (!value.empty()) std::memcpy(&f[5 + key.size()], value.data(), value.size());
  return f;
}

class TcpStoreServer {
 public:
  TcpStoreServer(int port, std::string token, KeyValueMap* map) : token_(std::move(token)), map_(map) {
    listen_ = Fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    bool v6 = listen_.get() >= 0;
    if (!v6) listen_ = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (listen_.get() < 0) SY_THROW(IoError, "store: socket: " << errno_text(errno));
    int one = 1, zero = 0;
    setsockopt(listen_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (v6) {
      setsockopt(listen_.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_any;
      a.sin6_port = htons(static_cast<uint16_t>(port));
      rc = ::bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    } else {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_ANY);
      a.sin_port = htons(static_cast<uint16_t>(port));
      rc = ::bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    if (rc != 0) SY_THROW(IoError, "store: bind to port " << port << ": " << errno_text(errno));
    if (::listen(listen_.get(), 128) != 0) SY_THROW(IoError, "store: listen: " << errno_text(errno));
    accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~TcpStoreServer() {
    stop_ = true;
    if (accept_thread_.joinable()) accept_thread_.join();
    std::lock_guard<std::mutex> lock(threads_mu_);
    for (auto& t : threads_) t.join();
  }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd pfd{listen_.get(), POLLIN, 0};
      if (::poll(&pfd, 1, 50) <= 0) continue;
      sockaddr_storage addr{};
      socklen_t len = sizeof addr;
      int fd = ::accept4(listen_.get(), reinterpret_cast<sockaddr*>(&addr), &len, SOCK_CLOEXEC);
      if (fd < 0) continue;
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::lock_guard<std::mutex> lock(threads_mu_);
      threads_.emplace_back([this, fd, addr] { serve(Fd(fd), peer_name(addr)); });
    }
  }

  void serve(Fd fd, const std::string& who) {
    std::vector<uint8_t> frame;
    if (!read_frame(fd.get(), frame, 10000) || std::string(frame.begin(), frame.end()) != token_) {
      SY_WARN("comm", "store: refused connection from " << who << ": missing or wrong token (SY_TOKEN)");
      return;
    }
    if (!write_frame(fd.get(), {'o', 'k'})) return;
    while (!stop_) {
      uint32_t n = 0;
      pollfd pfd{fd.get(), POLLIN, 0};
      int pr = ::poll(&pfd, 1, 50);
      if (pr == 0) continue;
      if (pr < 0 || !read_all(fd.get(), &n, 4, 10000) || n < 5 || n > kMaxFrame) return;
      frame.resize(n);
      if (!read_all(fd.get(), frame.data(), n, 10000)) return;
      uint32_t kl = 0;
      std::memcpy(&kl, &frame[1], 4);
      if (5 + size_t{kl} > n) return;
      std::string key(frame.begin() + 5, frame.begin() + 5 + kl);
      std::vector<uint8_t> value(frame.begin() + 5 + kl, frame.end());
      std::vector<uint8_t> reply;
      switch (frame[0]) {
        case kSet:
          map_->set(key, std::move(value));
          continue;
        case kGet: {
          std::vector<uint8_t> v;
          bool found = map_->get(key, v);
          reply.push_back(found ? 1 : 0);
          reply.insert(reply.end(), v.begin(), v.end());
          break;
        }
        case kCheck: {
          std::vector<uint8_t> v;
          reply.push_back(map_->get(key, v) ? 1 : 0);
          break;
        }
        case kAdd: {
          int64_t d = 0;
          if (value.size() == 8) std::memcpy(&d, value.data(), 8);
          int64_t r = map_->add(key, d);
          reply.resize(8);
          std::memcpy(reply.data(), &r, 8);
          break;
        }
        default:
          SY_WARN("comm", "store: bad request " << int{frame[0]} << " from " << who);
          return;
      }
      if (!write_frame(fd.get(), reply)) return;
    }
  }

  std::string token_;
  KeyValueMap* map_;
  Fd listen_;
  std::atomic<bool> stop_{false};
  std::thread accept_thread_;
  std::mutex threads_mu_;
  std::vector<std::thread> threads_;
};

class TcpStore : public Store {
 public:
  explicit TcpStore(const TcpStoreOptions& o) : options_(o) {
    if (o.is_server) {
      server_ = std::make_unique<TcpStoreServer>(o.port, o.token, &map_);
    } else {
      connect();
    }
  }

  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    if (server_) return map_.set(key, value);
    std::lock_guard<std::mutex> lock(mu_);
    send(encode_request(kSet, key, value));
  }

  std::vector<uint8_t> get(const std::string& key, std::chrono::milliseconds timeout) override {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::chrono::milliseconds backoff{1};
    for (;;) {
      std::vector<uint8_t> v;
      if (try_get(key, v)) return v;
      if (std::chrono::steady_clock::now() >= deadline)
        SY_THROW(Timeout, "store: key '" << key << "' not set within " << timeout.count() << " ms");
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(20));
    }
  }

  int64_t add(const std::string& key, int64_t delta) override {
    if (server_) return map_.add(key, delta);
    std::vector<uint8_t> d(8);
    std::memcpy(d.data(), &delta, 8);
    std::lock_guard<std::mutex> lock(mu_);
    auto r = request(encode_request(kAdd, key, d));
    SY_REQUIRE(r.size() == 8, "store: malformed add reply from " << where());
    int64_t x;
    std::memcpy(&x, r.data(), 8);
    return x;
  }

  bool check(const std::string& key) override {
    if (server_) {
      std::vector<uint8_t> v;
      return map_.get(key, v);
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto r = request(encode_request(kCheck, key, {}));
    return !r.empty() && r[0] == 1;
  }

 private:
  std::string where() const { return options_.host + ":" + std::to_string(options_.port); }

  bool try_get(const std::string& key, std::vector<uint8_t>& v) {
    if (server_) return map_.get(key, v);
    std::lock_guard<std::mutex> lock(mu_);
    auto r = request(encode_request(kGet, key, {}));
    if (r.empty() || r[0] != 1) return false;
    v.assign(r.begin() + 1, r.end());
    return true;
  }

  void send(const std::vector<uint8_t>& frame) {
    if (!write_frame(fd_.get(), frame))
      SY_THROW(IoError, "store: lost connection to " << where() << " (rank 0 gone?)");
  }
  std::vector<uint8_t> request(const std::vector<uint8_t>& frame) {
    send(frame);
    std::vector<uint8_t> reply;
    if (!read_frame(fd_.get(), reply, static_cast<int>(options_.timeout.count())))
      SY_THROW(IoError, "store: no reply from " << where() << " (rank 0 gone?)");
    return reply;
  }

  void connect() {
    auto deadline = std::chrono::steady_clock::now() + options_.timeout;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    std::string last_error;
    for (;;) {
      addrinfo* res = nullptr;
      int gai = getaddrinfo(options_.host.c_str(), std::to_string(options_.port).c_str(), &hints, &res);
      if (gai != 0) {
        last_error = std::string("resolve: ") + gai_strerror(gai);
      } else {
        for (addrinfo* a = res; a; a = a->ai_next) {
          Fd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
          if (fd.get() < 0) continue;
          if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) == 0) {
            int one = 1;
            setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            fd_ = std::move(fd);
            break;
          }
          last_error = errno_text(errno);
        }
        freeaddrinfo(res);
      }
      if (fd_.get() >= 0) break;
      if (std::chrono::steady_clock::now() >= deadline)
        SY_THROW(Timeout, "store: cannot connect to rank 0 at " << where() << " within " << options_.timeout.count()
                                                                << " ms: " << last_error);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::vector<uint8_t> tok(options_.token.begin(), options_.token.end()), reply;
    if (!write_frame(fd_.get(), tok) || !read_frame(fd_.get(), reply, static_cast<int>(options_.timeout.count())) ||
        reply != std::vector<uint8_t>{'o', 'k'}) {
      SY_THROW(InvalidArgument, "store: rank 0 at " << where()
                                                    << " refused the connection: the token (SY_TOKEN) does not match");
    }
  }

  TcpStoreOptions options_;
  KeyValueMap map_;
  std::unique_ptr<TcpStoreServer> server_;
  std::mutex mu_;
  Fd fd_;
};

class MemoryStore : public Store {
 public:
  void set(const std::string& key, const std::vector<uint8_t>& value) override { map_.set(key, value); }
  std::vector<uint8_t> get(const std::string& key, std::chrono::milliseconds timeout) override {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<uint8_t> v;
    while (!map_.get(key, v)) {
      if (std::chrono::steady_clock::now() >= deadline)
        SY_THROW(Timeout, "store: key '" << key << "' not set within " << timeout.count() << " ms");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return v;
  }
  int64_t add(const std::string& key, int64_t delta) override { return map_.add(key, delta); }
  bool check(const std::string& key) override {
    std::vector<uint8_t> v;
    return map_.get(key, v);
  }

 private:
  KeyValueMap map_;
};

}  // namespace

std::unique_ptr<Store> make_memory_store() { return std::make_unique<MemoryStore>(); }

std::unique_ptr<Store> make_tcp_store(const TcpStoreOptions& options) {
  SY_REQUIRE(options.port > 0 && options.port < 65536, "store: port " << options.port << " is out of range");
  SY_REQUIRE(!options.token.empty(), "store: empty token");
  return std::make_unique<TcpStore>(options);
}

}  // namespace switchyard::comm
