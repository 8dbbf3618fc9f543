// Placement queries and the shape check of a Schedule.
#include "switchyard/pipeline/schedule.h"

#include <algorithm>
#include <set>

#include "switchyard/common/error.h"

namespace switchyard::pipeline {

int Schedule::rank_of(int stage, int microbatch, int rep) const {
  return rep * pp_ranks() + paths.at(microbatch_path.at(microbatch)).at(stage);
}

std::vector<int> Schedule::stages_on(int pp_rank) const {
  std::set<int> stages;
  for (const auto& path : paths)
    for (int s = 0; s < static_cast<int>(path.size()); ++s)
      if (path[s] == pp_rank) stages.insert(s);
  return {stages.begin(), stages.end()};
}

int Schedule::parameter_copies() const {
  int copies = 0;
  for (int s = 0; s < num_stages; ++s) {
    std::set<int> holders;
    for (const auto& path : paths) holders.insert(path[s]);
    copies = std::max(copies, static_cast<int>(holders.size()));
  }
  return copies;
}

void check_shape(const Schedule& s) {
  SY_REQUIRE(s.num_stages > 0, "schedule '" << s.name << "': num_stages = " << s.num_stages << " must be > 0");
  SY_REQUIRE(s.num_microbatches > 0,
             "schedule '" << s.name << "': num_microbatches = " << s.num_microbatches << " must be > 0");
  SY_REQUIRE(s.num_replicas > 0 && s.num_ranks() > 0 && s.num_ranks() % s.num_replicas == 0,
             "schedule '" << s.name << "': " << s.num_ranks() << " ranks is not a multiple of num_replicas = "
                          << s.num_replicas);
  SY_REQUIRE(!s.paths.empty(), "schedule '" << s.name << "': no placement path");
  for (size_t p = 0; p < s.paths.size(); ++p) {
    SY_REQUIRE(static_cast<int>(s.paths[p].size()) == s.num_stages,
               "schedule '" << s.name << "': path " << p << " has " << s.paths[p].size() << " stages, expected "
                            << s.num_stages);
    for (int r : s.paths[p])
      SY_REQUIRE(r >= 0 && r < s.pp_ranks(),
                 "schedule '" << s.name << "': path " << p << " names rank " << r << " outside [0, " << s.pp_ranks()
                              << ")");
  }
  SY_REQUIRE(static_cast<int>(s.microbatch_path.size()) == s.num_microbatches,
             "schedule '" << s.name << "': microbatch_path has " << s.microbatch_path.size() << " entries, expected "
                          << s.num_microbatches);
  for (int m = 0; m < s.num_microbatches; ++m)
    SY_REQUIRE(s.microbatch_path[m] >= 0 && s.microbatch_path[m] < static_cast<int>(s.paths.size()),
               "schedule '" << s.name << "': micro-batch " << m << " uses path " << s.microbatch_path[m]
                            << " which does not exist");
  for (const auto& g : s.ep_groups)
    for (int r : g)
      SY_REQUIRE(r >= 0 && r < s.num_ranks(), "schedule '" << s.name << "': EP group names rank " << r);
  auto stage_ok = [&](int st) { return st >= 0 && st < s.num_stages; };
  auto mb_ok = [&](int m) { return m >= 0 && m < s.num_microbatches; };
  for (int r = 0; r < s.num_ranks(); ++r) {
    for (size_t i = 0; i < s.ranks[r].size(); ++i) {
      const Action& a = s.ranks[r][i];
      SY_REQUIRE(stage_ok(a.stage), "schedule '" << s.name << "': rank " << r << " action " << i << " ("
                                                 << to_string(a) << ") has stage outside [0, " << s.num_stages << ")");
      if (a.kind == OpKind::kReduceGrad) continue;
      SY_REQUIRE(mb_ok(a.microbatch), "schedule '" << s.name << "': rank " << r << " action " << i << " ("
                                                   << to_string(a) << ") has micro-batch outside [0, "
                                                   << s.num_microbatches << ")");
      if (a.kind == OpKind::kForwardBackward)
        SY_REQUIRE(stage_ok(a.bwd_stage) && mb_ok(a.bwd_microbatch),
                   "schedule '" << s.name << "': rank " << r << " action " << i << " (" << to_string(a)
                                << ") has a bad backward half");
      if (is_p2p(a.kind))
        SY_REQUIRE(a.peer >= 0 && a.peer < s.num_ranks() && a.peer != r,
                   "schedule '" << s.name << "': rank " << r << " action " << i << " (" << to_string(a)
                                << ") has peer " << a.peer << " (must be another rank in [0, " << s.num_ranks()
                                << "))");
    }
  }
}

}  // namespace switchyard::pipeline
