// ParallelLayout and its communicators (header).
#include "switchyard/trainer/dist/parallel_layout.h"

#include <sstream>

#include "switchyard/common/error.h"

namespace switchyard::trainer::dist {

void ParallelLayout::validate(int world_size) const {
  SY_REQUIRE(ep >= 1, "distributed layout: --ep " << ep << " must be >= 1");
  SY_REQUIRE(pp >= 1, "distributed layout: --pp " << pp << " must be >= 1");
  SY_REQUIRE(dp >= 1, "distributed layout: --dp " << dp << " must be >= 1");
  SY_REQUIRE(size() == world_size, "distributed layout: --ep " << ep << " x --pp " << pp << " x --dp " << dp << " = "
                                                               << size() << " ranks, the job has " << world_size);
}

std::string ParallelLayout::to_string() const {
  std::ostringstream s;
  s << "EP " << ep << " x PP " << pp << " x DP " << dp;
  return s.str();
}

ParallelGroups make_groups(std::shared_ptr<comm::Communicator> world, const ParallelLayout& layout) {
  SY_REQUIRE(world != nullptr, "make_groups: no world communicator");
  layout.validate(world->size());
  ParallelGroups g;
  g.layout = layout;
  g.world = world;
  const int r = world->rank();
  g.ep_index = r % layout.ep;
  g.dp_index = (r / layout.ep) % layout.dp;
  g.pp_index = r / (layout.ep * layout.dp);
  comm::ParallelGroups c = comm::make_parallel_groups(*world, layout.ep, layout.pp, layout.dp);
  g.ep = c.ep;
  g.pp = c.pp;
  g.dp = c.dp;
  g.replica = world->split(g.pp_index, r);
  return g;
}

}  // namespace switchyard::trainer::dist
