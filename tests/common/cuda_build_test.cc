// CUDA must not vanish silently: when nvcc exists on this machine (on PATH or in
// /usr/local/cuda/bin), the CUDA targets must have been built. GPU checks skip without a GPU.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <string>

#include "switchyard/common/cuda.h"

namespace switchyard {
namespace {

bool nvcc_exists() {
  if (access("/usr/local/cuda/bin/nvcc", X_OK) == 0) return true;
  const char* path = std::getenv("PATH");
  if (!path) return false;
  std::stringstream ss(path);
  std::string dir;
  while (std::getline(ss, dir, ':'))
    if (!dir.empty() && access((dir + "/nvcc").c_str(), X_OK) == 0) return true;
  return false;
}

TEST(CudaBuildTest, TargetsBuiltWhenNvccExists) {
  if (std::string(SY_CUDA_SETTING) == "OFF") GTEST_SKIP() << "build configured with SY_CUDA=OFF on purpose";
  if (!nvcc_exists()) GTEST_SKIP() << "nvcc not found; CUDA backend not expected";
  EXPECT_TRUE(cuda::built()) << "nvcc exists but this build has no CUDA backend: configure with SY_CUDA=AUTO or ON";
}

TEST(CudaBuildTest, DeviceCountIsZeroWithoutDriver) {
  int n = cuda::device_count();
  if (n == 0) GTEST_SKIP() << "no GPU on this machine";
  EXPECT_GT(n, 0);
}

}  // namespace
}  // namespace switchyard
