// Knobs read SWITCHYARD_<NAME>, parse sizes and booleans, and reject malformed values.
#include <gtest/gtest.h>
#include <stdlib.h>

#include "switchyard/common/error.h"
#include "switchyard/common/param.h"

namespace switchyard {
namespace {

const Param<int64_t> kTestChunk("TEST_CHUNK_BYTES", 4096, "bytes", "test knob");
const Param<bool> kTestFlag("TEST_FLAG", false, "", "test knob");
const Param<int64_t> kTestBad("TEST_BAD", 1, "", "test knob");

TEST(ParamTest, EnvironmentOverridesDefaultWithSuffix) {
  setenv("SWITCHYARD_TEST_CHUNK_BYTES", "8k", 1);
  setenv("SWITCHYARD_TEST_FLAG", "yes", 1);
  EXPECT_EQ(kTestChunk.get(), 8192);
  EXPECT_TRUE(kTestFlag.get());
}

TEST(ParamTest, MalformedValueNamesTheVariable) {
  setenv("SWITCHYARD_TEST_BAD", "12q", 1);
  try {
    kTestBad.get();
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("SWITCHYARD_TEST_BAD=12q"), std::string::npos) << e.what();
  }
}

TEST(ParamTest, RegistryListsKnobsSorted) {
  auto reg = param_registry();
  bool found = false;
  for (size_t i = 0; i < reg.size(); ++i) {
    if (i) {
      EXPECT_LT(reg[i - 1].name, reg[i].name);
    }
    if (reg[i].name == "TEST_CHUNK_BYTES") {
      found = true;
      EXPECT_EQ(reg[i].default_value, "4096");
      EXPECT_EQ(reg[i].units, "bytes");
    }
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace switchyard
