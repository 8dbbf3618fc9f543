// The NVML (dlopen) NVLink path against a fake libnvidia-ml (fake_nvml.cc), and its graceful
// absence when the library is missing.
#include "nvml_links.h"

#include <gtest/gtest.h>

namespace switchyard::topology {
namespace {

TEST(NvmlLinksTest, MatrixFromFakeNvml) {
  auto m = nvml_nvlink_matrix({"0000:12:00.0", "0000:1a:00.0", "0000:92:00.0", "0000:9a:00.0"}, SY_FAKE_NVML);
  ASSERT_TRUE(m.has_value());
  // Fake: GPU i has i + 1 active links; NVLink P2P within pairs {0,1} and {2,3}.
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      double want = (i != j && i / 2 == j / 2) ? (i + 1) * kNvlinkLinkGbps : 0.0;
      EXPECT_EQ((*m)[i][j], want) << i << "," << j;
    }
}

TEST(NvmlLinksTest, SubsetKeepsCallerOrder) {
  auto m = nvml_nvlink_matrix({"0000:9a:00.0", "0000:92:00.0"}, SY_FAKE_NVML);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ((*m)[0][1], 4 * kNvlinkLinkGbps);
  EXPECT_EQ((*m)[1][0], 3 * kNvlinkLinkGbps);
}

TEST(NvmlLinksTest, UnknownGpuOrMissingLibraryGivesNothing) {
  EXPECT_FALSE(nvml_nvlink_matrix({"0000:12:00.0", "0000:55:00.0"}, SY_FAKE_NVML).has_value());
  EXPECT_FALSE(nvml_nvlink_matrix({"0000:12:00.0"}, "/nonexistent/libnvidia-ml.so.1").has_value());
  EXPECT_FALSE(nvml_nvlink_matrix({}, SY_FAKE_NVML).has_value());
}

}  // namespace
}  // namespace switchyard::topology
