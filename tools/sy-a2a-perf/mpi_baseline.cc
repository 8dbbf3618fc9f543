// Open MPI baseline of sy-a2a-perf (see mpi_baseline.h).
#include "mpi_baseline.h"

#include <cstdlib>
#include <string>

#include "switchyard/common/error.h"

#if SY_HAVE_MPI
#include <arpa/inet.h>
#include <mpi.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>
#include <fstream>
#include <vector>
#endif

namespace switchyard::tools {

bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr;
}

#if !SY_HAVE_MPI

bool mpi_built_in() {
  return false;
}

std::unique_ptr<PerfBackend> make_mpi_baseline(int*, char***, int) {
  SY_THROW(Unsupported, "sy-a2a-perf was built without MPI (CMake found no MPI_C); --baseline mpi is unavailable");
}

#else

bool mpi_built_in() {
  return true;
}

namespace {

using comm::DataType;
using comm::ReduceOp;

#define SY_MPI_CHECK(call) \
  do { \
    int sy_rc_ = (call); \
    if (sy_rc_ != MPI_SUCCESS) SY_THROW(InternalError, #call " returned " << sy_rc_); \
  } while (0)

MPI_Datatype mpi_type(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return MPI_FLOAT;
    case DataType::kFloat64:
      return MPI_DOUBLE;
    case DataType::kInt32:
      return MPI_INT32_T;
    case DataType::kInt64:
      return MPI_INT64_T;
    case DataType::kBfloat16:
      return MPI_UINT16_T;  // moved, never reduced
    default:
      SY_THROW(Unsupported, "no MPI type for " << comm::dtype_name(type));
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_SUM;
}

// MPI counts are int.
void to_int(const std::vector<size_t>& v, std::vector<int>& out) {
  out.resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    SY_REQUIRE(v[i] <= static_cast<size_t>(INT_MAX), "MPI counts are int; " << v[i] << " elements is too many");
    out[i] = static_cast<int>(v[i]);
  }
}

// A TCP port that was free a moment ago on this host.
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) close(fd);
    SY_THROW(IoError, "sy-a2a-perf: cannot find a free port: " << errno_text(errno));
  }
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

std::string random_token() {
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  unsigned char bytes[16];
  urandom.read(reinterpret_cast<char*>(bytes), sizeof(bytes));
  static const char* kHex = "0123456789abcdef";
  std::string token;
  for (unsigned char b : bytes) {
    token += kHex[b >> 4];
    token += kHex[b & 15];
  }
  return token;
}

// Broadcasts a string from rank 0.
std::string bcast_string(const std::string& s, int rank) {
  int len = rank == 0 ? static_cast<int>(s.size()) : 0;
  SY_MPI_CHECK(MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD));
  std::string out = rank == 0 ? s : std::string(len, '\0');
  SY_MPI_CHECK(MPI_Bcast(out.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD));
  return out;
}

class MpiBaseline : public PerfBackend {
 public:
  MpiBaseline(int* argc, char*** argv, int virtual_nodes) {
    SY_MPI_CHECK(MPI_Init(argc, argv));
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    if (std::getenv("SY_RENDEZVOUS") == nullptr && std::getenv("MASTER_ADDR") == nullptr) {
      std::string where, token;
      if (rank_ == 0) {
        char host[256] = {};
        gethostname(host, sizeof(host) - 1);
        where = std::string(host) + ":" + std::to_string(free_port());
        token = random_token();
      }
      where = bcast_string(where, rank_);
      token = bcast_string(token, rank_);
      setenv("SY_RENDEZVOUS", where.c_str(), 1);
      if (std::getenv("SY_TOKEN") == nullptr) setenv("SY_TOKEN", token.c_str(), 1);
    }
    if (virtual_nodes > 1 && std::getenv("SY_NODE") == nullptr) {
      SY_REQUIRE(size_ % virtual_nodes == 0,
                 "--virtual_nodes " << virtual_nodes << " does not divide the " << size_ << " ranks");
      setenv("SY_NODE", ("vnode" + std::to_string(rank_ / (size_ / virtual_nodes))).c_str(), 1);
    }
  }
  ~MpiBaseline() override { MPI_Finalize(); }

  const char* name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool supports(PerfOp op, DataType type) const override {
    return !(op == PerfOp::kAllReduce && type == DataType::kBfloat16);
  }

  void run(const PerfCall& c) override {
    const PerfLayout& l = *c.layout;
    MPI_Datatype t = mpi_type(c.type);
    switch (c.op) {
      case PerfOp::kAllToAll:
        SY_MPI_CHECK(MPI_Alltoall(c.send, static_cast<int>(l.send_counts[0]), t, c.recv,
                                  static_cast<int>(l.recv_counts[0]), t, MPI_COMM_WORLD));
        return;
      case PerfOp::kAllToAllV:
        to_int(l.send_counts, send_counts_);
        to_int(l.send_displs, send_displs_);
        to_int(l.recv_counts, recv_counts_);
        to_int(l.recv_displs, recv_displs_);
        SY_MPI_CHECK(MPI_Alltoallv(c.send, send_counts_.data(), send_displs_.data(), t, c.recv, recv_counts_.data(),
                                   recv_displs_.data(), t, MPI_COMM_WORLD));
        return;
      case PerfOp::kAllReduce:
        SY_MPI_CHECK(MPI_Allreduce(c.send, c.recv, static_cast<int>(l.count), t, mpi_op(c.redop), MPI_COMM_WORLD));
        return;
      case PerfOp::kP2P:
        if (rank_ == 0) {
          SY_MPI_CHECK(MPI_Send(c.send, static_cast<int>(l.count), t, 1, 0, MPI_COMM_WORLD));
        } else if (rank_ == 1) {
          SY_MPI_CHECK(MPI_Recv(c.recv, static_cast<int>(l.count), t, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        }
        return;
    }
  }

  void p2p_ack() override {
    if (rank_ == 1) SY_MPI_CHECK(MPI_Send(nullptr, 0, MPI_BYTE, 0, 1, MPI_COMM_WORLD));
    if (rank_ == 0) SY_MPI_CHECK(MPI_Recv(nullptr, 0, MPI_BYTE, 1, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
  }
  void barrier() override { SY_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD)); }
  double max_over_ranks(double v) override {
    double out = 0;
    SY_MPI_CHECK(MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
    return out;
  }
  int64_t sum_over_ranks(int64_t v) override {
    int64_t out = 0;
    SY_MPI_CHECK(MPI_Allreduce(&v, &out, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD));
    return out;
  }

 private:
  int rank_ = 0, size_ = 1;
  std::vector<int> send_counts_, send_displs_, recv_counts_, recv_displs_;
};

}  // namespace

std::unique_ptr<PerfBackend> make_mpi_baseline(int* argc, char*** argv, int virtual_nodes) {
  return std::make_unique<MpiBaseline>(argc, argv, virtual_nodes);
}

#endif

}  // namespace switchyard::tools
