// Cluster description files: JSON with required numeric fields and their sources.
#include "switchyard/trainer/plan/cluster.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "switchyard/common/error.h"

namespace switchyard::trainer::plan {
namespace {

using nlohmann::json;

const json& require(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) SY_THROW(InvalidArgument, "cluster file: missing field \"" << field << "\"");
  return *it;
}

double positive_number(const json& j, const char* field) {
  const json& v = require(j, field);
  if (!v.is_number())
    SY_THROW(InvalidArgument, "cluster file: field \"" << field << "\" must be a number, got " << v.dump());
  double x = v.get<double>();
  if (!(x > 0)) SY_THROW(InvalidArgument, "cluster file: field \"" << field << "\" must be > 0, got " << x);
  return x;
}

int positive_int(const json& j, const char* field) {
  const json& v = require(j, field);
  if (!v.is_number_integer() || v.get<int64_t>() < 1)
    SY_THROW(InvalidArgument, "cluster file: field \"" << field << "\" must be an integer >= 1, got " << v.dump());
  return v.get<int>();
}

std::map<std::string, double> rate_table(const json& j, const char* field) {
  const json& v = require(j, field);
  if (!v.is_object() || v.empty())
    SY_THROW(InvalidArgument, "cluster file: field \"" << field << "\" must be an object {precision: TFLOP/s}");
  std::map<std::string, double> out;
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (it.key() != "fp8" && it.key() != "bf16" && it.key() != "fp32")
      SY_THROW(InvalidArgument,
               "cluster file: " << field << "." << it.key() << ": precision must be fp8, bf16 or fp32");
    if (!it->is_number() || !(it->get<double>() > 0))
      SY_THROW(InvalidArgument,
               "cluster file: " << field << "." << it.key() << " must be a number > 0, got " << it->dump());
    out[it.key()] = it->get<double>();
  }
  return out;
}

// Optional {name: GB/s} table; every value a number > 0.
std::map<std::string, double> optional_gbps_table(const json& j, const char* field) {
  std::map<std::string, double> out;
  auto it = j.find(field);
  if (it == j.end()) return out;
  if (!it->is_object()) SY_THROW(InvalidArgument, "cluster file: \"" << field << "\" must be an object {name: GB/s}");
  for (auto e = it->begin(); e != it->end(); ++e) {
    if (!e->is_number() || !(e->get<double>() > 0))
      SY_THROW(InvalidArgument, "cluster file: " << field << "." << e.key() << " must be a number > 0, got " << e->dump());
    out[e.key()] = e->get<double>();
  }
  return out;
}

}  // namespace

double ClusterSpec::elementwise_rate(const std::string& op) const {
  auto it = elementwise_gbps.find(op);
  return it == elementwise_gbps.end() ? memory_bandwidth_gbps : it->second;
}

double ClusterSpec::collective_rate(const std::string& name, double fallback_gbps) const {
  auto it = collective_gbps.find(name);
  return it == collective_gbps.end() ? fallback_gbps : it->second;
}

double ClusterSpec::gemm_rate(const std::string& precision) const {
  auto it = gemm_tflops.find(precision);
  if (it == gemm_tflops.end())
    SY_THROW(InvalidArgument, "cluster " << name << ": no gemm_tflops entry for precision " << precision);
  return it->second;
}

double ClusterSpec::gemm_rate(const std::string& precision, int64_t n, int64_t k) const {
  for (const GemmShapeRate& r : gemm_shapes)
    if (r.precision == precision && r.n == n && r.k == k) return r.tflops;
  return gemm_rate(precision);
}

ClusterSpec cluster_from_json(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    SY_THROW(InvalidArgument, "cluster file: malformed JSON: " << e.what());
  }
  if (!j.is_object()) SY_THROW(InvalidArgument, "cluster file: top level must be an object");
  ClusterSpec c;
  const json& name = require(j, "name");
  if (!name.is_string()) SY_THROW(InvalidArgument, "cluster file: field \"name\" must be a string");
  c.name = name.get<std::string>();
  c.gpus_per_node = positive_int(j, "gpus_per_node");
  c.nodes = positive_int(j, "nodes");
  c.intra_node_gbps = positive_number(j, "intra_node_gbps");
  c.network_gbps = positive_number(j, "network_gbps");
  c.memory_bandwidth_gbps = positive_number(j, "memory_bandwidth_gbps");
  c.memory_gib = positive_number(j, "memory_gib");
  c.num_sms = positive_int(j, "num_sms");
  c.peak_tflops = rate_table(j, "peak_tflops");
  c.gemm_tflops = rate_table(j, "gemm_tflops");
  c.attention_fwd_tflops = positive_number(j, "attention_fwd_tflops");
  c.attention_bwd_tflops = positive_number(j, "attention_bwd_tflops");
  for (const auto& [p, rate] : c.gemm_tflops)
    if (!c.peak_tflops.count(p))
      SY_THROW(InvalidArgument, "cluster file: gemm_tflops has " << p << " but peak_tflops does not");
  if (auto it = j.find("gemm_shapes"); it != j.end()) {
    if (!it->is_array()) SY_THROW(InvalidArgument, "cluster file: \"gemm_shapes\" must be an array of {n, k, tflops}");
    for (const json& s : *it) {
      if (!s.is_object())
        SY_THROW(InvalidArgument, "cluster file: gemm_shapes entry must be an object, got " << s.dump());
      const json& prec = require(s, "precision");
      if (!prec.is_string() || !c.gemm_tflops.count(prec.get<std::string>()))
        SY_THROW(InvalidArgument,
                 "cluster file: gemm_shapes entry " << s.dump() << ": precision must be one of gemm_tflops");
      GemmShapeRate r{prec.get<std::string>(), positive_int(s, "n"), positive_int(s, "k"),
                      positive_number(s, "tflops")};
      c.gemm_shapes.push_back(r);
    }
  }
  c.elementwise_gbps = optional_gbps_table(j, "elementwise_gbps");
  c.collective_gbps = optional_gbps_table(j, "collective_gbps");
  if (j.contains("optimizer_gbps")) c.optimizer_gbps = positive_number(j, "optimizer_gbps");
  if (j.contains("first_touch_gbps")) c.first_touch_gbps = positive_number(j, "first_touch_gbps");
  const json& sources = require(j, "sources");
  if (!sources.is_object()) SY_THROW(InvalidArgument, "cluster file: \"sources\" must be an object {field: text}");
  for (auto it = sources.begin(); it != sources.end(); ++it)
    c.sources[it.key()] = it->is_string() ? it->get<std::string>() : it->dump();
  // Every number needs a source (the planner has no fitted parameters).
  for (const char* f : {"intra_node_gbps", "network_gbps", "memory_bandwidth_gbps", "memory_gib", "num_sms",
                        "peak_tflops", "gemm_tflops", "attention_fwd_tflops", "attention_bwd_tflops"})
    if (!c.sources.count(f)) SY_THROW(InvalidArgument, "cluster file: sources has no entry for \"" << f << "\"");
  for (const char* f : {"gemm_shapes", "elementwise_gbps", "optimizer_gbps", "collective_gbps", "first_touch_gbps"})
    if (j.contains(f) && !c.sources.count(f))
      SY_THROW(InvalidArgument, "cluster file: sources has no entry for \"" << f << "\"");
  return c;
}

ClusterSpec cluster_from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) SY_THROW(InvalidArgument, "cluster file " << path << ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return cluster_from_json(ss.str());
  } catch (const InvalidArgument& e) {
    SY_THROW(InvalidArgument, path << ": " << e.message());
  }
}

std::string cluster_to_json(const ClusterSpec& c) {
  json j = {{"name", c.name},
            {"gpus_per_node", c.gpus_per_node},
            {"nodes", c.nodes},
            {"intra_node_gbps", c.intra_node_gbps},
            {"network_gbps", c.network_gbps},
            {"memory_bandwidth_gbps", c.memory_bandwidth_gbps},
            {"memory_gib", c.memory_gib},
            {"num_sms", c.num_sms},
            {"peak_tflops", c.peak_tflops},
            {"gemm_tflops", c.gemm_tflops},
            {"attention_fwd_tflops", c.attention_fwd_tflops},
            {"attention_bwd_tflops", c.attention_bwd_tflops},
            {"sources", c.sources}};
  if (!c.gemm_shapes.empty()) {
    json shapes = json::array();
    for (const GemmShapeRate& r : c.gemm_shapes)
      shapes.push_back({{"precision", r.precision}, {"n", r.n}, {"k", r.k}, {"tflops", r.tflops}});
    j["gemm_shapes"] = shapes;
  }
  if (!c.elementwise_gbps.empty()) j["elementwise_gbps"] = c.elementwise_gbps;
  if (c.optimizer_gbps > 0) j["optimizer_gbps"] = c.optimizer_gbps;
  if (c.first_touch_gbps > 0) j["first_touch_gbps"] = c.first_touch_gbps;
  if (!c.collective_gbps.empty()) j["collective_gbps"] = c.collective_gbps;
  return j.dump(2) + "\n";
}

}  // namespace switchyard::trainer::plan
