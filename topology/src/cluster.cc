// Cluster: loading the cluster JSON format (docs/topology.md) and per-rank queries.
#include "switchyard/topology/cluster.h"

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "switchyard/common/error.h"

namespace switchyard::topology {

namespace {

using Json = nlohmann::json;

// Re-throws a topology error from loading a host's XML with the cluster file and host named.
[[noreturn]] void rethrow_with_context(const Error& e, const std::string& context) {
  if (e.code() == ErrorCode::kIo) throw IoError(context + ": " + e.message());
  throw InvalidArgument(context + ": " + e.message());
}

std::string known_hosts(const std::map<std::string, int>& index) {
  std::string s;
  for (const auto& [name, i] : index) s += (s.empty() ? "" : ", ") + name;
  return s;
}

}  // namespace

Cluster::Cluster(RankMap map, std::vector<std::string> node_names,
                 std::vector<std::shared_ptr<const HostTopology>> hosts, std::vector<int> gpu_of_rank,
                 std::string source)
    : rank_map_(std::move(map)),
      node_names_(std::move(node_names)),
      hosts_(std::move(hosts)),
      gpu_of_rank_(std::move(gpu_of_rank)),
      source_(std::move(source)) {}

Cluster Cluster::load_json(const std::string& path) {
  const std::string where = "cluster file '" + path + "'";
  std::ifstream in(path);
  if (!in) SY_THROW(IoError, where << ": cannot open: " << errno_text(errno));
  Json doc;
  try {
    doc = Json::parse(in);
  } catch (const Json::exception& e) {
    SY_THROW(InvalidArgument, where << ": not valid JSON: " << e.what());
  }
  SY_REQUIRE(doc.is_object(), where << ": top level must be an object with \"hosts\" and \"ranks\"");
  for (const auto& [key, value] : doc.items())
    SY_REQUIRE(key == "hosts" || key == "ranks" || key == "comment",
               where << ": unknown key \"" << key << "\" (expected \"hosts\", \"ranks\", \"comment\")");
  SY_REQUIRE(doc.contains("hosts") && doc["hosts"].is_array() && !doc["hosts"].empty(),
             where << ": \"hosts\" must be a non-empty array of {\"name\", \"xml\"}");
  SY_REQUIRE(doc.contains("ranks") && doc["ranks"].is_array() && !doc["ranks"].empty(),
             where << ": \"ranks\" must be a non-empty array of {\"host\", \"gpu\"}");

  // Hosts: name -> index; XML paths relative to the JSON file; one load per distinct file.
  const std::filesystem::path base = std::filesystem::path(path).parent_path();
  std::map<std::string, int> host_index;
  std::vector<std::string> host_names;
  std::vector<std::shared_ptr<const HostTopology>> host_topos;
  std::map<std::string, std::shared_ptr<const HostTopology>> by_file;
  for (size_t h = 0; h < doc["hosts"].size(); ++h) {
    const Json& e = doc["hosts"][h];
    std::string at = where + ": hosts[" + std::to_string(h) + "]";
    SY_REQUIRE(e.is_object() && e.contains("name") && e["name"].is_string() && !e["name"].get<std::string>().empty(),
               at << ": needs a non-empty string \"name\"");
    for (const auto& [key, value] : e.items())
      SY_REQUIRE(key == "name" || key == "xml", at << ": unknown key \"" << key << "\" (expected \"name\", \"xml\")");
    std::string name = e["name"];
    SY_REQUIRE(host_index.emplace(name, static_cast<int>(h)).second, at << ": duplicate host name '" << name << "'");
    host_names.push_back(name);
    std::shared_ptr<const HostTopology> topo;
    if (e.contains("xml")) {
      SY_REQUIRE(e["xml"].is_string(), at << ": \"xml\" must be a string (a path relative to the cluster file)");
      std::string file = (base / e["xml"].get<std::string>()).string();
      auto it = by_file.find(file);
      if (it != by_file.end()) {
        topo = it->second;
      } else {
        try {
          topo = std::make_shared<const HostTopology>(HostTopology::load_xml(file));
        } catch (const Error& err) {
          rethrow_with_context(err, at + " (host '" + name + "')");
        }
        by_file.emplace(file, topo);
      }
    }
    host_topos.push_back(std::move(topo));
  }

  std::vector<int> host_of_rank;
  std::vector<int> gpu_of_rank;
  for (size_t r = 0; r < doc["ranks"].size(); ++r) {
    const Json& e = doc["ranks"][r];
    std::string at = where + ": ranks[" + std::to_string(r) + "]";
    SY_REQUIRE(e.is_object() && e.contains("host") && e["host"].is_string(), at << ": needs a string \"host\"");
    for (const auto& [key, value] : e.items())
      SY_REQUIRE(key == "host" || key == "gpu", at << ": unknown key \"" << key << "\" (expected \"host\", \"gpu\")");
    std::string name = e["host"];
    auto it = host_index.find(name);
    SY_REQUIRE(it != host_index.end(),
               at << ": unknown host '" << name << "' (hosts: " << known_hosts(host_index) << ")");
    int gpu = -1;
    if (e.contains("gpu")) {
      SY_REQUIRE(e["gpu"].is_number_integer(), at << ": \"gpu\" must be an integer");
      gpu = e["gpu"];
      SY_REQUIRE(gpu >= 0, at << ": gpu " << gpu << " must be >= 0");
      const auto& topo = host_topos[it->second];
      if (topo)
        SY_REQUIRE(gpu < topo->num_gpus(), at << ": gpu " << gpu << " out of range: host '" << name << "' ("
                                              << topo->source() << ") has " << topo->num_gpus() << " GPUs");
    }
    host_of_rank.push_back(it->second);
    gpu_of_rank.push_back(gpu);
  }
  std::vector<bool> used(host_names.size(), false);
  for (int h : host_of_rank) used[h] = true;
  for (size_t h = 0; h < used.size(); ++h)
    SY_REQUIRE(used[h], where << ": host '" << host_names[h] << "' has no ranks");

  // RankMap numbers nodes by first appearance; order names and hosts the same way.
  RankMap map(host_of_rank);
  std::vector<std::string> node_names(map.num_nodes());
  std::vector<std::shared_ptr<const HostTopology>> node_hosts(map.num_nodes());
  for (int r = 0; r < map.size(); ++r) {
    node_names[map.node_of(r)] = host_names[host_of_rank[r]];
    node_hosts[map.node_of(r)] = host_topos[host_of_rank[r]];
  }
  return Cluster(std::move(map), std::move(node_names), std::move(node_hosts), std::move(gpu_of_rank), path);
}

Cluster Cluster::contiguous(int num_ranks, int num_nodes) {
  RankMap map = RankMap::contiguous(num_ranks, num_nodes);
  std::vector<std::string> names;
  for (int n = 0; n < num_nodes; ++n) names.push_back("node" + std::to_string(n));
  return Cluster(std::move(map), std::move(names), std::vector<std::shared_ptr<const HostTopology>>(num_nodes),
                 std::vector<int>(num_ranks, -1), "contiguous");
}

Cluster Cluster::local(int num_ranks, int num_nodes) {
  RankMap map = RankMap::contiguous(num_ranks, num_nodes);
  auto host = std::make_shared<const HostTopology>(HostTopology::discover_local());
  std::vector<int> gpus(num_ranks, -1);
  if (host->num_gpus() > 0)
    for (int r = 0; r < num_ranks; ++r) gpus[r] = map.local_rank(r) % host->num_gpus();
  std::vector<std::string> names;
  for (int n = 0; n < num_nodes; ++n)
    names.push_back(num_nodes == 1 ? host->hostname() : host->hostname() + "/node" + std::to_string(n));
  return Cluster(std::move(map), std::move(names), std::vector<std::shared_ptr<const HostTopology>>(num_nodes, host),
                 std::move(gpus), "local");
}

void Cluster::require_num_ranks(int n, const std::string& who) const {
  SY_REQUIRE(n == num_ranks(), who << ": the rank map " << source_ << " describes " << num_ranks() << " rank"
                                   << (num_ranks() == 1 ? "" : "s") << " but the job has " << n);
}

void Cluster::check_rank(int rank, const char* what) const {
  SY_REQUIRE(rank >= 0 && rank < num_ranks(),
             "cluster " << source_ << ": " << what << ": rank " << rank << " out of range [0, " << num_ranks() << ")");
}

const std::string& Cluster::node_name(int node) const {
  rank_map_.ranks_of_node(node);  // range check
  return node_names_[node];
}

const HostTopology* Cluster::host(int node) const {
  rank_map_.ranks_of_node(node);
  return hosts_[node].get();
}

int Cluster::gpu_of(int rank) const {
  check_rank(rank, "gpu_of");
  return gpu_of_rank_[rank];
}

int Cluster::nic_of(int rank) const {
  int gpu = gpu_of(rank);
  const HostTopology* h = host(node_of(rank));
  if (gpu < 0 || !h) return -1;
  return h->gpu(gpu).nic;
}

std::string Cluster::nic_name(int rank) const {
  int nic = nic_of(rank);
  return nic < 0 ? std::string() : host(node_of(rank))->nic(nic).name;
}

int Cluster::rail_of(int rank) const {
  int nic = nic_of(rank);
  return nic >= 0 ? nic : local_rank(rank);
}

LinkClass Cluster::link_class(int a, int b) const {
  check_rank(a, "link_class");
  check_rank(b, "link_class");
  if (a == b) return LinkClass::kSameDevice;
  if (!rank_map_.same_node(a, b)) return LinkClass::kNetwork;
  int ga = gpu_of_rank_[a];
  int gb = gpu_of_rank_[b];
  const HostTopology* h = host(node_of(a));
  if (ga >= 0 && ga == gb) return LinkClass::kSameDevice;
  if (ga >= 0 && gb >= 0 && h) return h->gpu_link_class(ga, gb);
  return LinkClass::kSameNode;
}

namespace {

Json rank_object(const Cluster& c, int r) {
  int node = c.node_of(r);
  return Json{{"rank", r},
              {"world_size", c.num_ranks()},
              {"node", node},
              {"node_name", c.node_name(node)},
              {"num_nodes", c.num_nodes()},
              {"local_rank", c.local_rank(r)},
              {"local_size", c.rank_map().local_size(r)},
              {"gpu", c.gpu_of(r)},
              {"nic", c.nic_name(r)},
              {"rail", c.rail_of(r)},
              {"rail_peers", c.rail_peers(r)}};
}

}  // namespace

std::string Cluster::rank_summary(int r) const {
  std::ostringstream os;
  int node = node_of(r);
  os << "rank " << r << "/" << num_ranks() << ": node " << node << " (" << node_names_[node] << ") local_rank "
     << local_rank(r) << "/" << rank_map_.local_size(r) << " gpu " << gpu_of(r) << " nic "
     << (nic_name(r).empty() ? "-" : nic_name(r)) << " rail " << rail_of(r) << " rail_peers ";
  auto peers = rail_peers(r);
  for (size_t i = 0; i < peers.size(); ++i) os << (i ? "," : "") << peers[i];
  return os.str();
}

std::string Cluster::rank_json(int r) const {
  check_rank(r, "rank_json");
  return rank_object(*this, r).dump();
}

std::string Cluster::summary() const {
  std::ostringstream os;
  os << "cluster (" << source_ << "): " << rank_map_.describe() << "\n";
  for (int n = 0; n < num_nodes(); ++n) {
    os << "node" << n << " " << node_names_[n];
    if (hosts_[n])
      os << " (" << hosts_[n]->source() << ": " << hosts_[n]->num_gpus() << " GPUs, " << hosts_[n]->num_nics()
         << " NICs)";
    else
      os << " (no topology)";
    os << "\n";
  }
  for (int r = 0; r < num_ranks(); ++r) os << rank_summary(r) << "\n";
  return os.str();
}

std::string Cluster::to_json() const {
  Json j;
  j["source"] = source_;
  j["num_ranks"] = num_ranks();
  j["num_nodes"] = num_nodes();
  j["nodes"] = Json::array();
  for (int n = 0; n < num_nodes(); ++n) {
    Json node{{"node", n}, {"name", node_names_[n]}, {"ranks", rank_map_.ranks_of_node(n)}};
    node["host"] = hosts_[n] ? Json::parse(hosts_[n]->to_json()) : Json(nullptr);
    j["nodes"].push_back(std::move(node));
  }
  j["ranks"] = Json::array();
  for (int r = 0; r < num_ranks(); ++r) j["ranks"].push_back(rank_object(*this, r));
  return j.dump();
}

}  // namespace switchyard::topology
