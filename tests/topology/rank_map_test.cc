// RankMap against naive per-rank loops over random node assignments.
#include "switchyard/topology/rank_map.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "switchyard/common/error.h"

namespace switchyard::topology {
namespace {

// Dense node ids in order of first appearance, computed the slow way.
std::vector<int> dense_nodes(const std::vector<int>& ids) {
  std::vector<int> seen, out;
  for (int id : ids) {
    int n = -1;
    for (size_t i = 0; i < seen.size(); ++i)
      if (seen[i] == id) n = static_cast<int>(i);
    if (n < 0) {
      n = static_cast<int>(seen.size());
      seen.push_back(id);
    }
    out.push_back(n);
  }
  return out;
}

TEST(RankMapTest, MatchesNaiveLoopsOnRandomMaps) {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 50; ++trial) {
    int size = 1 + static_cast<int>(rng() % 24);
    int ids = 1 + static_cast<int>(rng() % 5);
    std::vector<int> raw(size);
    for (auto& v : raw) v = 10 * static_cast<int>(rng() % ids);
    RankMap map(raw);
    std::vector<int> node = dense_nodes(raw);
    for (int r = 0; r < size; ++r) {
      EXPECT_EQ(map.node_of(r), node[r]);
      int local = 0, local_size = 0;
      for (int q = 0; q < size; ++q) {
        if (node[q] != node[r]) continue;
        local_size++;
        if (q < r) local++;
      }
      EXPECT_EQ(map.local_rank(r), local);
      EXPECT_EQ(map.local_size(r), local_size);
      // Rail: on every node, the rank with the same local index, if it has one.
      std::vector<int> rail;
      for (int n = 0; n < map.num_nodes(); ++n) {
        int count = 0;
        for (int q = 0; q < size; ++q)
          if (node[q] == n && count++ == local) rail.push_back(q);
      }
      std::sort(rail.begin(), rail.end());
      EXPECT_EQ(map.rail(r), rail) << "rank " << r << " trial " << trial;
    }
    // Leaders, uniformity and the largest node, by counting.
    std::vector<int> count(map.num_nodes(), 0);
    for (int r = 0; r < size; ++r) count[node[r]]++;
    for (int n = 0; n < map.num_nodes(); ++n) {
      int first = -1;
      for (int r = size - 1; r >= 0; --r)
        if (node[r] == n) first = r;
      EXPECT_EQ(map.leader(n), first);
    }
    EXPECT_EQ(map.max_local_size(), *std::max_element(count.begin(), count.end()));
    EXPECT_EQ(map.uniform(), std::count(count.begin(), count.end(), count[0]) == map.num_nodes());
    // node_major_order is a permutation that keeps each node's ranks together.
    auto order = map.node_major_order();
    ASSERT_EQ(static_cast<int>(order.size()), size);
    std::vector<int> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (int i = 0; i < size; ++i) EXPECT_EQ(sorted[i], i);
    int changes = 0;
    for (int i = 1; i < size; ++i) changes += node[order[i]] != node[order[i - 1]];
    EXPECT_EQ(changes, map.num_nodes() - 1);
  }
}

TEST(RankMapTest, ContiguousBlocks) {
  RankMap map = RankMap::contiguous(8, 2);
  EXPECT_EQ(map.num_nodes(), 2);
  for (int r = 0; r < 8; ++r) {
    EXPECT_EQ(map.node_of(r), r / 4);
    EXPECT_EQ(map.local_rank(r), r % 4);
    EXPECT_EQ(map.rail_peer(r, 1 - r / 4), r % 4 + 4 * (1 - r / 4));
  }
  EXPECT_TRUE(map.nodes_contiguous());
  EXPECT_FALSE(RankMap({0, 1, 0, 1}).nodes_contiguous());
}

TEST(RankMapTest, DescribeListsNodes) {
  EXPECT_EQ(RankMap({0, 1, 0, 1}).describe(), "4 ranks on 2 nodes: node0={0,2} node1={1,3}");
  EXPECT_EQ(RankMap({7}).describe(), "1 rank on 1 node: node0={0}");
}

TEST(RankMapTest, UnevenNodesHaveShortRails) {
  RankMap map({0, 0, 0, 1});
  EXPECT_EQ(map.rail_peer(2, 1), -1);
  EXPECT_EQ(map.rail(2), std::vector<int>({2}));
  EXPECT_EQ(map.rail(0), std::vector<int>({0, 3}));
}

TEST(RankMapTest, BadInputNamesTheProblem) {
  try {
    RankMap({0, -2});
    FAIL() << "negative node id accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 has node id -2"), std::string::npos) << e.what();
  }
  try {
    RankMap::contiguous(6, 4);
    FAIL() << "uneven split accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("6 ranks cannot be spread evenly over 4 nodes"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(RankMap(std::vector<int>{}), InvalidArgument);
  RankMap map({0, 1});
  try {
    map.node_of(2);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("rank 2 out of range [0, 2)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(map.ranks_of_node(2), InvalidArgument);
}

}  // namespace
}  // namespace switchyard::topology
