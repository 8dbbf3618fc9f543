// Text and JSON forms round-trip every generated schedule, with and without MoE sub-steps;
// malformed input is rejected with a message naming the problem.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "switchyard/common/error.h"
#include "switchyard/pipeline/generators.h"
#include "switchyard/pipeline/schedule_format.h"

namespace switchyard::pipeline {
namespace {

std::vector<Schedule> samples() {
  std::vector<Schedule> out;
  for (ScheduleKind k : all_schedule_kinds()) {
    GeneratorOptions g;
    g.num_ranks = 4;
    g.num_microbatches = 8;
    out.push_back(generate(k, g));
  }
  Schedule moe = replicate(generate(ScheduleKind::kDualPipeV, {2, 4}), 2);
  add_moe_sub_steps(moe, 2);
  out.push_back(moe);
  return out;
}

TEST(ScheduleFormatTest, TextRoundTrip) {
  for (const Schedule& s : samples()) {
    const std::string text = to_text(s);
    Schedule back = parse_text(text);
    EXPECT_EQ(back, s) << s.name;
    EXPECT_EQ(to_text(back), text);
  }
}

TEST(ScheduleFormatTest, JsonRoundTrip) {
  for (const Schedule& s : samples()) {
    nlohmann::json j = to_json(s);
    Schedule back = from_json(nlohmann::json::parse(j.dump()));
    EXPECT_EQ(back, s) << s.name;
  }
}

TEST(ScheduleFormatTest, TextIsReadable) {
  const std::string text =
      "schedule hand stages 2 microbatches 1 replicas 1 ranks 2\n"
      "path 0 0 1\nmbpath 0\n"
      "rank 0\n  F s0 m0\n  SEND_ACT s0 m0 r1\n  RECV_GRAD s1 m0 r1  # comment\n  BW s0 m0\n"
      "rank 1\n  RECV_ACT s0 m0 r0\n  F s1 m0\n  B s1 m0\n  SEND_GRAD s1 m0 r0\n  W s1 m0\n";
  Schedule s = parse_text(text);
  ASSERT_EQ(s.num_ranks(), 2);
  ASSERT_EQ(s.ranks[1].size(), 5u);
  EXPECT_EQ(s.ranks[1][2], make_compute(OpKind::kBackwardInput, 1, 0));
  EXPECT_EQ(s.ranks[0][2], make_p2p(OpKind::kRecvGrad, 1, 0, 1));
}

TEST(ScheduleFormatTest, RejectsMalformedText) {
  const std::string head = "schedule x stages 2 microbatches 1 replicas 1 ranks 2\npath 0 0 1\nmbpath 0\n";
  auto message = [](const std::string& text) {
    try {
      parse_text(text);
    } catch (const InvalidArgument& e) {
      return e.message();
    }
    return std::string("no error");
  };
  EXPECT_NE(message(head + "rank 0\n  FX s0 m0\n").find("unknown schedule op 'FX'"), std::string::npos);
  EXPECT_NE(message(head + "rank 0\n  F sx m0\n").find("expected stage"), std::string::npos);
  EXPECT_NE(message(head + "  F s0 m0\n").find("before any 'rank N'"), std::string::npos);
  EXPECT_NE(message(head + "rank 0\n  F s5 m0\n").find("stage outside"), std::string::npos);
  EXPECT_NE(message(head + "rank 0\n  SEND_ACT s0 m0 r0\n").find("peer 0"), std::string::npos);
  EXPECT_NE(message("schedule x stages 2 microbatches 1 replicas 1 ranks 2\npath 0 0 7\nmbpath 0\n").find("rank 7"),
            std::string::npos);
}

}  // namespace
}  // namespace switchyard::pipeline
