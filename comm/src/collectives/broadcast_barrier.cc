// broadcast (root sends to every member) and barrier (an empty message to and from
// every member), plus the debug-mode argument cross-check.
#include <sstream>

#include "collectives/collectives.h"
#include "switchyard/common/error.h"

namespace switchyard::comm::detail {

void add_broadcast(Op& op, const Group& g, TagSpace ts, uint8_t* buf, size_t bytes, int root) {
  int n = g.size(), me = g.me;
  if (n == 1) return;
  Step step;
  if (me == root) {
    for (int k = 1; k < n; ++k) step.transfers.push_back({true, g.ranks[(root + k) % n], ts.tag(0), buf, bytes, true});
  } else {
    step.transfers.push_back({false, g.ranks[root], ts.tag(0), buf, bytes, true});
  }
  op.steps.push_back(std::move(step));
}

void add_barrier(Op& op, const Group& g, TagSpace ts) {
  int n = g.size(), me = g.me;
  if (n == 1) return;
  Step step;
  for (int k = 1; k < n; ++k) {
    step.transfers.push_back({false, g.ranks[(me + n - k) % n], ts.tag(0), nullptr, 0, true});
    step.transfers.push_back({true, g.ranks[(me + k) % n], ts.tag(0), nullptr, 0, true});
  }
  op.steps.push_back(std::move(step));
}

void add_arg_check(Op& op, const Group& g, TagSpace ts, std::vector<int64_t> desc, ArgCheck check) {
  int n = g.size(), me = g.me;
  size_t bytes = desc.size() * sizeof(int64_t);
  auto* all = reinterpret_cast<int64_t*>(op.alloc(bytes * static_cast<size_t>(n)));
  std::copy(desc.begin(), desc.end(), all + static_cast<size_t>(me) * desc.size());
  Step step;
  for (int k = 1; k < n; ++k) {
    int from = (me + n - k) % n, to = (me + k) % n;
    step.transfers.push_back({false, g.ranks[from], ts.tag(250), all + static_cast<size_t>(from) * desc.size(), bytes, true});
    step.transfers.push_back({true, g.ranks[to], ts.tag(250), all + static_cast<size_t>(me) * desc.size(), bytes, true});
  }
  size_t len = desc.size();
  std::string name = op.name.str();
  step.then = [all, len, n, check, name](Op&) {
    std::vector<std::vector<int64_t>> v(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) v[static_cast<size_t>(r)].assign(all + static_cast<size_t>(r) * len, all + static_cast<size_t>(r + 1) * len);
    check(v, name.c_str());
  };
  op.steps.push_front(std::move(step));
}

}  // namespace switchyard::comm::detail
