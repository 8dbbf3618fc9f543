// Errors carry their class, message, rank and source location.
#include <gtest/gtest.h>

#include "switchyard/common/error.h"
#include "switchyard/common/log.h"

namespace switchyard {
namespace {

TEST(ErrorTest, RequireThrowsInvalidArgumentWithContext) {
  int experts = 7;
  try {
    SY_REQUIRE(experts % 2 == 0, "buffer: num_experts " << experts << " is not divisible by 2 ranks");
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(e.message(), "buffer: num_experts 7 is not divisible by 2 ranks");
    EXPECT_NE(std::string(e.what()).find("invalid argument: buffer: num_experts 7"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("error_test.cc:"), std::string::npos);
  }
}

TEST(ErrorTest, RankAppearsOnceSet) {
  log::set_rank(3);
  PeerFailure e(5, "recv from rank 5: connection reset");
  log::set_rank(-1);
  EXPECT_EQ(e.peer(), 5);
  EXPECT_EQ(e.rank(), 3);
  EXPECT_NE(std::string(e.what()).find("[rank 3]"), std::string::npos);
}

TEST(ErrorTest, CheckRaisesInternalError) {
  EXPECT_THROW(SY_CHECK(1 + 1 == 3), InternalError);
  EXPECT_NO_THROW(SY_CHECK(1 + 1 == 2));
}

}  // namespace
}  // namespace switchyard
