// sy-topo: the machine as Switchyard sees it.
//
//   sy-topo                       this machine (hwloc discovery)
//   sy-topo --xml FILE            a simulated host from an hwloc XML file
//   sy-topo --cluster FILE        a simulated cluster (docs/topology.md)
//   sy-run -n 4 --nodes 2 -- sy-topo   each rank prints its rank, node, local rank and rail
// Add --json for one JSON document (one JSON line per rank under sy-run). Errors go to stderr
// and exit with status 1.
#include <gflags/gflags.h>

#include <iostream>

#include "switchyard/common/error.h"
#include "switchyard/topology/cluster.h"
#include "switchyard/topology/job_env.h"

DEFINE_string(xml, "", "hwloc XML file of a simulated host to print instead of this machine");
DEFINE_string(cluster, "", "cluster JSON file to print (hosts, ranks, GPUs, NICs, rails)");
DEFINE_bool(json, false, "print JSON instead of the readable summary");

namespace topo = switchyard::topology;

int main(int argc, char** argv) {
  gflags::SetUsageMessage("prints a host, a cluster, or each rank's place in a sy-run job");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  try {
    if (argc > 1) SY_THROW(InvalidArgument, "unexpected argument '" << argv[1] << "' (see --help)");
    if (!FLAGS_xml.empty() && !FLAGS_cluster.empty()) SY_THROW(InvalidArgument, "--xml and --cluster are exclusive");
    if (!FLAGS_xml.empty()) {
      auto host = topo::HostTopology::load_xml(FLAGS_xml);
      std::cout << (FLAGS_json ? host.to_json() + "\n" : host.summary());
    } else if (!FLAGS_cluster.empty()) {
      auto cluster = topo::Cluster::load_json(FLAGS_cluster);
      std::cout << (FLAGS_json ? cluster.to_json() + "\n" : cluster.summary());
    } else if (auto job = topo::JobEnv::from_environment()) {
      auto cluster = job->cluster();
      std::cout << (FLAGS_json ? cluster.rank_json(job->rank) + "\n" : cluster.rank_summary(job->rank) + "\n");
    } else {
      auto host = topo::HostTopology::discover_local();
      std::cout << (FLAGS_json ? host.to_json() + "\n" : host.summary());
    }
  } catch (const std::exception& e) {
    std::cerr << "sy-topo: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
