// Text tables and JSON of planner results (field names documented in docs/plan.md).
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "switchyard/trainer/plan/planner.h"

namespace switchyard::trainer::plan {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

nlohmann::json to_json(const PlanResult& r) {
  using nlohmann::json;
  json j;
  j["cluster"] = r.cluster;
  j["gpus"] = r.num_gpus;
  j["layout"] = {{"pp", r.layout.pp},
                 {"ep", r.layout.ep},
                 {"dp", r.layout.dp},
                 {"zero1", r.layout.zero1},
                 {"schedule", r.layout.schedule},
                 {"microbatches", r.microbatches},
                 {"micro_batch", r.spec.micro_batch},
                 {"comm_sms", r.layout.comm_sms},
                 {"stages", r.num_stages},
                 {"blocks_per_stage", r.layers_per_stage}};
  j["model"] = {{"seq_len", r.spec.seq_len},
                {"global_batch", r.spec.global_batch},
                {"mtp_depth", r.spec.mtp_depth},
                {"recipe", r.spec.recipe.name}};
  const MemoryBreakdown& m = r.memory;
  j["memory_gib"] = {{"weights_high", m.weights_high / kGiB},
                     {"weights_low", m.weights_low / kGiB},
                     {"master", m.master / kGiB},
                     {"moments", m.moments / kGiB},
                     {"grads", m.grads / kGiB},
                     {"activations", m.activations / kGiB},
                     {"comm_buffers", m.comm_buffers / kGiB},
                     {"total", m.total() / kGiB},
                     {"capacity", r.memory_capacity / kGiB},
                     {"fits", r.fits},
                     {"peak_activation_chunks", r.peak_activation_chunks}};
  json ops = json::object();
  for (const OpTime& o : r.time.compute_ops) ops[o.name] = o.seconds;
  j["time_s"] = {{"compute", r.time.compute}, {"compute_ops", ops},        {"exposed_a2a", r.time.exposed_a2a},
                 {"bubble", r.time.bubble},   {"dp_sync", r.time.dp_sync}, {"optimizer", r.time.optimizer},
                 {"step", r.time.step}};
  j["a2a"] = {{"ep_nodes", r.traffic.ep_nodes},
              {"ranks_per_token", r.traffic.ranks_per_token},
              {"nodes_per_token", r.traffic.nodes_per_token},
              {"remote_nodes_per_token", r.traffic.remote_nodes_per_token},
              {"nvlink_copies_per_token", r.traffic.nvlink_copies_per_token},
              {"network_bytes_per_token_layer", r.a2a_network_bytes_per_token},
              {"logical_bytes_per_token_layer", r.a2a_logical_bytes_per_token}};
  j["tokens_per_step"] = r.tokens_per_step;
  j["tokens_per_second"] = r.tokens_per_second;
  j["model_flops_per_token"] = r.model_flops_per_token;
  j["mfu"] = r.mfu;
  j["mfu_bf16"] = r.mfu_bf16;
  j["gpu_hours_per_trillion_tokens"] = r.gpu_hours_per_trillion_tokens;
  return j;
}

}  // namespace

std::string format_plan(const PlanResult& r) {
  std::ostringstream os;
  const MemoryBreakdown& m = r.memory;
  os << "cluster " << r.cluster << ", " << r.num_gpus << " GPUs; layout " << r.layout.describe() << "; "
     << r.microbatches << " micro-batches of " << r.spec.micro_batch << " x " << r.spec.seq_len << " tokens; "
     << r.num_stages << " stages, blocks per stage:";
  for (int n : r.layers_per_stage) os << " " << n;
  os << "\n\nmemory per GPU (GiB, most loaded rank)\n";
  auto row = [&](const char* name, double v) { os << "  " << name << fmt("%10.2f", v / kGiB) << "\n"; };
  row("weights BF16/FP32  ", m.weights_high);
  row("weights FP8        ", m.weights_low);
  row("FP32 master        ", m.master);
  row("AdamW moments      ", m.moments);
  row("gradients          ", m.grads);
  os << "  activations        " << fmt("%10.2f", m.activations / kGiB) << "  (" << r.peak_activation_chunks
     << " chunks at the schedule's peak)\n";
  row("comm buffers       ", m.comm_buffers);
  os << "  total              " << fmt("%10.2f", m.total() / kGiB) << "  of " << fmt("%.1f", r.memory_capacity / kGiB)
     << ": " << (r.fits ? "fits" : "DOES NOT FIT") << "\n\nstep time (s, bottleneck rank)\n";
  for (const OpTime& o : r.time.compute_ops)
    os << "    " << o.name << std::string(o.name.size() < 32 ? 32 - o.name.size() : 1, ' ') << fmt("%9.3f", o.seconds)
       << "\n";
  auto trow = [&](const char* name, double v) { os << "  " << name << fmt("%10.3f", v) << "\n"; };
  trow("compute            ", r.time.compute);
  trow("exposed all-to-all ", r.time.exposed_a2a);
  trow("pipeline bubble    ", r.time.bubble);
  trow("DP grad sync       ", r.time.dp_sync);
  trow("optimizer          ", r.time.optimizer);
  trow("step               ", r.time.step);
  os << "\nall-to-all per token and MoE layer: " << fmt("%.2f", r.traffic.ranks_per_token) << " ranks, "
     << fmt("%.2f", r.traffic.nodes_per_token) << " nodes (" << fmt("%.2f", r.traffic.remote_nodes_per_token)
     << " remote); wire " << fmt("%.1f", r.a2a_network_bytes_per_token / 1024) << " KiB vs logical "
     << fmt("%.1f", r.a2a_logical_bytes_per_token / 1024) << " KiB (fwd + bwd)\n";
  os << "tokens/s " << fmt("%.4g", r.tokens_per_second) << "; model FLOPs/token "
     << fmt("%.4g", r.model_flops_per_token) << "; MFU " << fmt("%.1f%%", 100 * r.mfu) << " of the "
     << r.spec.recipe.linear_gemm << " peak (" << fmt("%.1f%%", 100 * r.mfu_bf16)
     << " of BF16); GPU-hours per 1T tokens " << fmt("%.4g", r.gpu_hours_per_trillion_tokens) << "\n";
  return os.str();
}

std::string plan_to_json(const PlanResult& r) {
  return to_json(r).dump();
}

std::string format_sweep(const std::vector<PlanResult>& rs) {
  std::ostringstream os;
  os << "rank  layout                                   mb  mem GiB   step s  GPU-h/1T tok   MFU\n";
  int i = 1;
  for (const PlanResult& r : rs) {
    std::string l = r.layout.describe();
    os << fmt("%4.0f", i++) << "  " << l << std::string(l.size() < 40 ? 40 - l.size() : 1, ' ')
       << fmt("%3.0f", static_cast<double>(r.spec.micro_batch)) << fmt("%9.2f", r.memory.total() / kGiB)
       << fmt("%9.3f", r.time.step) << fmt("%14.4g", r.gpu_hours_per_trillion_tokens) << fmt("%6.1f%%", 100 * r.mfu)
       << "\n";
  }
  if (rs.empty()) os << "(no layout fits)\n";
  return os.str();
}

std::string sweep_to_json(const std::vector<PlanResult>& rs) {
  nlohmann::json j = nlohmann::json::array();
  for (const PlanResult& r : rs) j.push_back(to_json(r));
  return j.dump();
}

}  // namespace switchyard::trainer::plan
