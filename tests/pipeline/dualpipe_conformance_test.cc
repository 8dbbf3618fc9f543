// DualPipe and DualPipeV generators against an independent Python re-statement of DeepSeek's
// reference step loops (dualpipe_order.py, run with /usr/bin/python3): the per-rank order of
// F, B, W, BW, overlapped FB pairs and P2P operations must be identical, for several sizes
// including the smallest ones where the special cases dominate.
#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>

#include "switchyard/pipeline/generators.h"

namespace switchyard::pipeline {
namespace {

// Per rank, the action lines printed by the Python script.
std::vector<std::vector<std::string>> reference_order(const char* kind, int ranks, int microbatches) {
  std::ostringstream cmd;
  cmd << "/usr/bin/python3 " << SY_DUALPIPE_ORDER_SCRIPT << " " << kind << " " << ranks << " " << microbatches;
  FILE* p = popen(cmd.str().c_str(), "r");
  EXPECT_NE(p, nullptr);
  std::vector<std::vector<std::string>> out;
  if (!p) return out;
  char buf[256];
  while (fgets(buf, sizeof buf, p)) {
    std::string line(buf);
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
    if (line.rfind("rank ", 0) == 0) {
      out.emplace_back();
    } else if (!out.empty()) {
      out.back().push_back(line.substr(2));
    }
  }
  EXPECT_EQ(pclose(p), 0) << cmd.str();
  return out;
}

void expect_same_order(ScheduleKind kind, int ranks, int microbatches) {
  const char* name = schedule_kind_name(kind);
  GeneratorOptions g;
  g.num_ranks = ranks;
  g.num_microbatches = microbatches;
  g.reduce_mirrored = false;  // the reference leaves the mirrored-gradient sum to the user
  Schedule s = generate(kind, g);
  auto expected = reference_order(name, ranks, microbatches);
  ASSERT_EQ(static_cast<int>(expected.size()), ranks) << name;
  for (int r = 0; r < ranks; ++r) {
    std::vector<std::string> got;
    for (const Action& a : s.ranks[r]) got.push_back(to_string(a));
    ASSERT_EQ(got.size(), expected[r].size()) << name << " ranks " << ranks << " mb " << microbatches << " rank " << r;
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], expected[r][i]) << name << " ranks " << ranks << " mb " << microbatches << " rank " << r
                                        << " action " << i;
  }
}

TEST(DualPipeConformanceTest, DualPipeMatchesReferenceOrder) {
  for (auto [n, m] : {std::pair{2, 4}, {2, 6}, {4, 8}, {4, 10}, {4, 16}, {6, 12}, {6, 14}, {8, 16}, {8, 20}, {8, 32}})
    expect_same_order(ScheduleKind::kDualPipe, n, m);
}

TEST(DualPipeConformanceTest, DualPipeVMatchesReferenceOrder) {
  for (auto [n, m] : {std::pair{1, 2}, {1, 3}, {2, 4}, {2, 5}, {3, 6}, {3, 7}, {4, 8}, {4, 9}, {4, 20}, {8, 16}, {8, 20}})
    expect_same_order(ScheduleKind::kDualPipeV, n, m);
}

}  // namespace
}  // namespace switchyard::pipeline
