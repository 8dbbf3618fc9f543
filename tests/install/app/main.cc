// Uses the installed headers and libraries: a rank map and the comm library's types.
#include <cstdio>

#include "switchyard/comm/types.h"
#include "switchyard/topology/rank_map.h"

int main() {
  auto map = switchyard::topology::RankMap::contiguous(4, 2);
  std::printf("%s; float32 is %zu bytes\n", map.describe().c_str(),
              switchyard::comm::dtype_size(switchyard::comm::DataType::kFloat32));
  return map.rail_peer(0, 1) == 2 ? 0 : 1;
}
