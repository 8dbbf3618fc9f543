// all_to_all_v: direct exchange, every pair at once; the self chunk is a local copy.
// Sends start at peer me+1 and wrap, so ranks do not all hit the same peer first.
#include <cstring>

#include "collectives/collectives.h"
#include "switchyard/common/error.h"
#include "transport/shm/shm_transport.h"

namespace switchyard::comm::detail {

void add_all_to_all_v(Op& op, const Group& g, TagSpace ts, const uint8_t* send, const size_t* sc, const size_t* sd,
                      uint8_t* recv, const size_t* rc, const size_t* rd, size_t esize) {
  int n = g.size(), me = g.me;
  Step step;
  for (int k = 1; k < n; ++k) {
    int j = (me + n - k) % n;
    step.transfers.push_back({false, g.ranks[j], ts.tag(0), recv + rd[j] * esize, rc[j] * esize, true});
  }
  for (int k = 1; k < n; ++k) {
    int j = (me + k) % n;
    step.transfers.push_back({true, g.ranks[j], ts.tag(0), const_cast<uint8_t*>(send + sd[j] * esize), sc[j] * esize, true});
  }
  const uint8_t* self_src = send + sd[me] * esize;
  uint8_t* self_dst = recv + rd[me] * esize;
  size_t self_bytes = sc[me] * esize;
  step.then = [self_src, self_dst, self_bytes](Op&) {
    if (self_bytes && self_src != self_dst) stream_copy(self_dst, self_src, self_bytes);
  };
  op.steps.push_back(std::move(step));
}

}  // namespace switchyard::comm::detail
