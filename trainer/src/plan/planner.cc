// The planner: per-block costs -> pipeline stages -> simulated step, memory per GPU.
// Model and assumptions: docs/plan.md.
#include "switchyard/trainer/plan/planner.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <sstream>

#include "switchyard/common/error.h"
#include "switchyard/pipeline/generators.h"
#include "switchyard/pipeline/simulator.h"

namespace switchyard::trainer::plan {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Per micro-batch times of one block on one GPU.
struct BlockTime {
  double f = 0, b = 0, w = 0;  // compute: forward, full backward, weight-gradient part of b
  double a2a_f = 0, a2a_b = 0;  // all-to-all (dispatch + combine) forward, backward
  std::map<std::string, double> per_op;  // op name -> f + b seconds
};

struct Stage {
  int first = 0, last = 0;  // blocks [first, last)
  BlockTime t;
  double activation_bytes_per_token = 0;
  double dense_params = 0, expert_params = 0, lowp_dense = 0, lowp_expert = 0;
};

int stages_per_rank(pipeline::ScheduleKind kind, int num_chunks) {
  switch (kind) {
    case pipeline::ScheduleKind::kZBV:
    case pipeline::ScheduleKind::kDualPipeV:
      return 2;
    case pipeline::ScheduleKind::kInterleaved1F1B:
      return num_chunks;
    default:
      return 1;
  }
}

bool overlaps_pairs(pipeline::ScheduleKind kind) {
  return kind == pipeline::ScheduleKind::kDualPipe || kind == pipeline::ScheduleKind::kDualPipeV;
}

// Contiguous partition of costs into k parts minimising the largest part (exact DP).
std::vector<int> partition(const std::vector<double>& cost, int k) {
  const int n = static_cast<int>(cost.size());
  std::vector<double> prefix(n + 1, 0);
  for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + cost[i];
  const double inf = std::numeric_limits<double>::infinity();
  // best[j][i]: smallest max part for the first i blocks in j parts; cut[j][i]: start of part j.
  std::vector<std::vector<double>> best(k + 1, std::vector<double>(n + 1, inf));
  std::vector<std::vector<int>> cut(k + 1, std::vector<int>(n + 1, 0));
  best[0][0] = 0;
  for (int j = 1; j <= k; ++j)
    for (int i = j; i <= n; ++i)
      for (int s = j - 1; s < i; ++s) {
        double v = std::max(best[j - 1][s], prefix[i] - prefix[s]);
        if (v < best[j][i]) {
          best[j][i] = v;
          cut[j][i] = s;
        }
      }
  std::vector<int> starts(k + 1, n);
  for (int j = k, i = n; j >= 1; --j) {
    starts[j - 1] = cut[j][i];
    i = cut[j][i];
  }
  return starts;  // stage j = blocks [starts[j], starts[j + 1])
}

// Peak activation bytes of each rank: walks its action list like pipeline's peak_activations,
// weighting each chunk by its stage's bytes (F and FB add; BW, W and FB's backward free).
std::vector<double> peak_activation_bytes(const pipeline::Schedule& s, const std::vector<double>& stage_bytes) {
  std::vector<double> peak(s.num_ranks(), 0.0);
  for (int r = 0; r < s.num_ranks(); ++r) {
    double alive = 0;
    for (const pipeline::Action& a : s.ranks[r]) {
      switch (a.kind) {
        case pipeline::OpKind::kForward:
        case pipeline::OpKind::kForwardBackward:
          alive += stage_bytes[a.stage];
          break;
        case pipeline::OpKind::kBackward:
        case pipeline::OpKind::kBackwardWeight:
          alive -= stage_bytes[a.stage];
          break;
        default:
          break;
      }
      peak[r] = std::max(peak[r], alive);
      if (a.kind == pipeline::OpKind::kForwardBackward) alive -= stage_bytes[a.bwd_stage];
    }
  }
  return peak;
}

double ring_time(double bytes, int group, double gbps) {
  if (group <= 1) return 0;
  return bytes * (group - 1) / group / (gbps * 1e9);
}

}  // namespace

std::string Layout::describe() const {
  std::ostringstream os;
  os << "pp" << pp << " ep" << ep << " dp" << dp << (zero1 ? " zero1 " : " ") << schedule;
  if (microbatches > 0) os << " m" << microbatches;
  os << " sms" << comm_sms;
  return os.str();
}

PlanResult plan(const TrainingSpec& spec, const ClusterSpec& cluster, const Layout& layout) {
  const ModelConfig& m = spec.model;
  m.validate();
  SY_REQUIRE(spec.seq_len >= 1, "plan: seq_len " << spec.seq_len << " must be >= 1");
  SY_REQUIRE(spec.micro_batch >= 1, "plan: micro_batch " << spec.micro_batch << " must be >= 1");
  SY_REQUIRE(spec.global_batch >= 1, "plan: global_batch " << spec.global_batch << " must be >= 1");
  SY_REQUIRE(layout.pp >= 1 && layout.ep >= 1 && layout.dp >= 1,
             "plan: layout " << layout.describe() << ": pp, ep and dp must be >= 1");
  const bool moe_model = m.n_routed_experts > 0;
  SY_REQUIRE(!moe_model || m.n_routed_experts % layout.ep == 0,
             "plan: ep " << layout.ep << " does not divide the " << m.n_routed_experts << " routed experts");
  const int gpus = layout.pp * layout.ep * layout.dp;
  SY_REQUIRE(gpus == cluster.num_gpus(), "plan: layout pp " << layout.pp << " x ep " << layout.ep << " x dp "
                                                            << layout.dp << " = " << gpus << " GPUs, but cluster "
                                                            << cluster.name << " has " << cluster.num_gpus());
  const int gpn = cluster.gpus_per_node;
  SY_REQUIRE(layout.ep <= gpn ? gpn % layout.ep == 0 : layout.ep % gpn == 0,
             "plan: an EP group of " << layout.ep << " ranks does not tile nodes of " << gpn << " GPUs");
  const int ep_nodes = layout.ep <= gpn ? 1 : layout.ep / gpn;
  const int64_t replicas = static_cast<int64_t>(layout.ep) * layout.dp;
  SY_REQUIRE(spec.global_batch % (replicas * spec.micro_batch) == 0,
             "plan: global batch " << spec.global_batch
                                   << " is not a multiple of ep x dp x micro_batch = " << replicas * spec.micro_batch);
  const int M = static_cast<int>(spec.global_batch / (replicas * spec.micro_batch));
  SY_REQUIRE(
      layout.microbatches == 0 || layout.microbatches == M,
      "plan: microbatches " << layout.microbatches << " disagrees with global batch / (ep x dp x micro_batch) = " << M);
  SY_REQUIRE(layout.comm_sms >= 0 && layout.comm_sms < cluster.num_sms,
             "plan: comm_sms " << layout.comm_sms << " must be in [0, " << cluster.num_sms << ")");
  const pipeline::ScheduleKind kind = pipeline::parse_schedule_kind(layout.schedule);
  pipeline::GeneratorOptions gen;
  gen.num_ranks = layout.pp;
  gen.num_microbatches = M;
  gen.num_chunks = layout.num_chunks;
  SY_REQUIRE(pipeline::is_valid(kind, gen),
             "plan: schedule " << layout.schedule << " with pp " << layout.pp << " and " << M
                               << " micro-batches is not valid; valid: " << pipeline::valid_sizes(kind));
  const int S = layout.pp * stages_per_rank(kind, layout.num_chunks);

  // Blocks and their per micro-batch times.
  const std::vector<BlockCost> blocks = model_blocks(m, spec.mtp_depth, spec.seq_len, spec.recipe, spec.recompute);
  SY_REQUIRE(static_cast<int>(blocks.size()) >= S, "plan: " << S << " pipeline stages but the model has only "
                                                            << blocks.size() << " blocks (embedding, layers, heads)");
  const double tokens_mb = static_cast<double>(spec.micro_batch * spec.seq_len);
  const double sm_fraction = static_cast<double>(cluster.num_sms - layout.comm_sms) / cluster.num_sms;
  const ExpertTraffic traffic = moe_model ? simulate_expert_traffic(m, layout.ep, ep_nodes) : ExpertTraffic{};
  const double d = static_cast<double>(m.hidden_size);
  const double a = spec.recipe.act_bytes;
  const double dispatch_bytes = spec.recipe.linear_gemm == "fp8" ? d + d / 128 * 4 : d * a;  // FP8 + 1x128 scales
  const double combine_bytes = d * a;  // BF16 combine
  const double a2a_net_per_token = traffic.remote_nodes_per_token * (dispatch_bytes + combine_bytes);
  const double a2a_nvl_per_token = traffic.nvlink_copies_per_token * (dispatch_bytes + combine_bytes);
  const double a2a_one_way =
      std::max(a2a_net_per_token / (cluster.collective_rate("all_to_all", cluster.network_gbps) * 1e9),
               a2a_nvl_per_token / (cluster.collective_rate("all_to_all", cluster.intra_node_gbps) * 1e9));
  std::vector<BlockTime> bt(blocks.size());
  std::vector<double> cost(blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) {
    for (const OpCost& op : blocks[i].ops) {
      double f = 0, b = 0, w = 0;
      if (op.kind == OpCost::Kind::kGemm) {
        const double rate = cluster.gemm_rate(op.precision, op.n, op.k) * 1e12 * sm_fraction;
        f = op.fwd_flops / rate, b = op.bwd_flops / rate, w = op.wgrad_flops / rate;
      } else if (op.kind == OpCost::Kind::kAttention) {
        f = op.fwd_flops / (cluster.attention_fwd_tflops * 1e12 * sm_fraction);
        b = op.bwd_flops / (cluster.attention_bwd_tflops * 1e12 * sm_fraction);
      } else {
        const double gbps = cluster.elementwise_rate(op.name);
        f = op.fwd_bytes / (gbps * 1e9);
        b = op.bwd_bytes / (gbps * 1e9);
      }
      bt[i].f += f * tokens_mb;
      bt[i].b += b * tokens_mb;
      bt[i].w += w * tokens_mb;
      bt[i].per_op[op.name] += (f + b) * tokens_mb;
    }
    if (blocks[i].moe) bt[i].a2a_f = bt[i].a2a_b = a2a_one_way * tokens_mb;
    if (cluster.first_touch_gbps > 0) {  // kept activations written into fresh pages in the forward
      const double f = blocks[i].activation_bytes * tokens_mb / (cluster.first_touch_gbps * 1e9);
      bt[i].f += f;
      bt[i].per_op["activations.first_touch"] += f;
    }
  }

  // Stages: contiguous blocks balancing what a chunk occupies the rank for (compute, plus the
  // all-to-all when it is not hidden under a paired micro-batch).
  const bool overlap = layout.overlap_a2a && overlaps_pairs(kind);
  for (size_t i = 0; i < blocks.size(); ++i) cost[i] = bt[i].f + bt[i].b + (overlap ? 0.0 : bt[i].a2a_f + bt[i].a2a_b);
  const std::vector<int> starts = partition(cost, S);
  std::vector<Stage> stages(S);
  for (int s = 0; s < S; ++s) {
    Stage& st = stages[s];
    st.first = starts[s];
    st.last = starts[s + 1];
    for (int i = st.first; i < st.last; ++i) {
      st.t.f += bt[i].f, st.t.b += bt[i].b, st.t.w += bt[i].w;
      st.t.a2a_f += bt[i].a2a_f, st.t.a2a_b += bt[i].a2a_b;
      for (const auto& [name, sec] : bt[i].per_op) st.t.per_op[name] += sec;
      st.activation_bytes_per_token += blocks[i].activation_bytes;
      st.dense_params += static_cast<double>(blocks[i].dense_params);
      st.expert_params += static_cast<double>(blocks[i].expert_params) / layout.ep;
      const double lowp_expert = static_cast<double>(std::min(blocks[i].lowp_params, blocks[i].expert_params));
      st.lowp_expert += lowp_expert / layout.ep;
      st.lowp_dense += static_cast<double>(blocks[i].lowp_params) - lowp_expert;
    }
  }
  pipeline::Schedule schedule = pipeline::generate(kind, gen);

  // The simulator takes one duration per chunk kind: use the busiest pipeline rank's mean over
  // the stages it holds (each of its stages sees the same number of chunks).
  Stage hot;
  double hot_cost = -1;
  for (int rank = 0; rank < layout.pp; ++rank) {
    const std::vector<int> mine = schedule.stages_on(rank);
    Stage mean;
    for (int s : mine) {
      const double k = 1.0 / static_cast<double>(mine.size());
      mean.t.f += k * stages[s].t.f, mean.t.b += k * stages[s].t.b, mean.t.w += k * stages[s].t.w;
      mean.t.a2a_f += k * stages[s].t.a2a_f, mean.t.a2a_b += k * stages[s].t.a2a_b;
      for (const auto& [name, sec] : stages[s].t.per_op) mean.t.per_op[name] += k * sec;
      mean.dense_params += k * stages[s].dense_params;  // per stage (one REDUCE each)
      mean.expert_params += k * stages[s].expert_params;
    }
    const double c = overlap ? std::max(mean.t.f + mean.t.b, mean.t.a2a_f + mean.t.a2a_b)
                             : mean.t.f + mean.t.b + mean.t.a2a_f + mean.t.a2a_b;
    if (c > hot_cost) hot_cost = c, hot = mean;
  }
  // Pipeline simulation with the busiest rank's durations for every chunk.
  pipeline::SimOptions sim;
  sim.f = hot.t.f + hot.t.a2a_f;
  sim.b = hot.t.b + hot.t.a2a_b;
  sim.w = hot.t.w;
  if (overlap) sim.fb = std::max(hot.t.f + hot.t.b, hot.t.a2a_f + hot.t.a2a_b);
  const bool pp_same_node = replicas < gpn;  // PP neighbours are ep x dp ranks apart
  const double p2p_gbps = pp_same_node ? cluster.intra_node_gbps : cluster.network_gbps;
  sim.p2p_latency = layout.pp > 1 ? tokens_mb * d * a / (p2p_gbps * 1e9) : 0.0;
  // REDUCE of DualPipe's mirrored copies: the busiest rank's gradients, once over the network.
  const double stage_grad_bytes = (hot.dense_params + hot.expert_params) * spec.recipe.grad_bytes;
  sim.reduce_time = stage_grad_bytes / (cluster.network_gbps * 1e9);
  const pipeline::SimResult sr = pipeline::simulate(schedule, sim);

  PlanResult r;
  r.spec = spec;
  r.layout = layout;
  r.layout.microbatches = M;
  r.cluster = cluster.name;
  r.num_gpus = gpus;
  r.num_stages = S;
  for (const Stage& st : stages) r.layers_per_stage.push_back(st.last - st.first);
  r.microbatches = M;
  r.parameter_copies = sr.parameter_copies;
  r.traffic = traffic;
  r.a2a_network_bytes_per_token = 2 * a2a_net_per_token;
  r.a2a_logical_bytes_per_token = 2 * traffic.experts_per_token * (dispatch_bytes + combine_bytes);

  // Step time on the busiest rank.
  int busiest = 0;
  for (int i = 0; i < static_cast<int>(sr.busy.size()); ++i)
    if (sr.busy[i] > sr.busy[busiest]) busiest = i;
  const double chunks = static_cast<double>(M) * S / layout.pp;
  StepBreakdown& t = r.time;
  for (const auto& [name, sec] : hot.t.per_op) t.compute_ops.push_back({name, sec * chunks});
  std::sort(t.compute_ops.begin(), t.compute_ops.end(),
            [](const OpTime& x, const OpTime& y) { return x.seconds > y.seconds; });
  t.compute = chunks * (hot.t.f + hot.t.b);
  t.exposed_a2a = std::max(0.0, sr.busy[busiest] - t.compute);
  t.bubble = sr.makespan - sr.busy[busiest];

  // Memory of each pipeline rank (all stages it holds); the largest is reported.
  const double dense_shards = layout.zero1 ? static_cast<double>(replicas) : 1.0;
  const double expert_shards = layout.zero1 ? static_cast<double>(layout.dp) : 1.0;
  const double a2a_buffer = tokens_mb * traffic.ranks_per_token * (dispatch_bytes + combine_bytes);
  std::vector<double> stage_act_bytes(S);
  for (int st = 0; st < S; ++st) stage_act_bytes[st] = stages[st].activation_bytes_per_token * tokens_mb;
  const std::vector<double> act_peak = peak_activation_bytes(schedule, stage_act_bytes);
  double busiest_dense = 0, busiest_expert = 0, busiest_lowp = 0;
  for (int rank = 0; rank < layout.pp; ++rank) {
    double dense = 0, expert = 0, lowp = 0;
    for (int s : schedule.stages_on(rank)) {
      dense += stages[s].dense_params;
      expert += stages[s].expert_params;
      lowp += stages[s].lowp_dense + stages[s].lowp_expert;
    }
    const double sharded = layout.optimizer_full_model ? dense + expert * layout.ep
                                                       : dense / dense_shards + expert / expert_shards;
    MemoryBreakdown mem;
    mem.weights_high = (dense + expert - (spec.recipe.linear_high_copy ? 0.0 : lowp)) * spec.recipe.weight_copy_bytes;
    mem.weights_low = lowp * spec.recipe.low_precision_copy_bytes;
    mem.master = sharded * spec.recipe.master_bytes;
    mem.moments = sharded * 2 * spec.recipe.moment_bytes;
    mem.grads = (dense + expert) * spec.recipe.grad_bytes;
    mem.activations = act_peak[rank];
    mem.comm_buffers = (overlap ? 2 : 1) * a2a_buffer + 4 * tokens_mb * d * a;  // + P2P send/recv both ways
    if (rank == 0 || mem.total() > r.memory.total()) {
      r.memory = mem;
      r.peak_activation_chunks = sr.peak_activations[rank];
    }
    if (rank == schedule.pp_rank(busiest)) busiest_dense = dense, busiest_expert = expert, busiest_lowp = lowp;
  }
  r.memory_capacity = cluster.memory_gib * kGiB;
  r.fits = r.memory.total() <= r.memory_capacity;

  const double dense = busiest_dense, expert = busiest_expert, lowp = busiest_lowp;
  const double sharded = dense / dense_shards + expert / expert_shards;
  // Data-parallel gradient synchronisation and the optimizer pass.
  const double dense_gbps =
      cluster.collective_rate("all_reduce", replicas <= gpn ? cluster.intra_node_gbps : cluster.network_gbps);
  const double expert_gbps = dense_gbps;  // expert replicas are ep ranks apart: same span
  double sync = 0;
  if (layout.zero1) {  // reduce-scatter gradients, all-gather updated weights
    sync += ring_time(dense * (spec.recipe.grad_bytes + spec.recipe.weight_copy_bytes), static_cast<int>(replicas),
                      dense_gbps);
    sync += ring_time(expert * (spec.recipe.grad_bytes + spec.recipe.weight_copy_bytes), layout.dp, expert_gbps);
  } else {  // all-reduce
    sync += ring_time(2 * dense * spec.recipe.grad_bytes, static_cast<int>(replicas), dense_gbps);
    sync += ring_time(2 * expert * spec.recipe.grad_bytes, layout.dp, expert_gbps);
  }
  t.dp_sync = layout.overlap_dp_sync ? 0.0 : sync;
  // Parameters this rank's optimizer updates (all experts of its stages with optimizer_full_model).
  const double updated = layout.optimizer_full_model ? dense + expert * layout.ep : sharded;
  const double opt_bytes =
      updated * (2 * spec.recipe.master_bytes + 4 * spec.recipe.moment_bytes + spec.recipe.grad_bytes) +
      (layout.optimizer_full_model ? updated : dense + expert) * spec.recipe.weight_copy_bytes + lowp * spec.recipe.low_precision_copy_bytes;
  t.optimizer = opt_bytes / ((cluster.optimizer_gbps > 0 ? cluster.optimizer_gbps : cluster.memory_bandwidth_gbps) * 1e9);
  t.step = sr.makespan + t.dp_sync + t.optimizer;

  r.tokens_per_step = static_cast<double>(spec.global_batch * spec.seq_len);
  r.tokens_per_second = r.tokens_per_step / t.step;
  for (const BlockCost& bc : blocks) r.model_flops_per_token += bc.model_flops;
  const double achieved = r.tokens_per_second * r.model_flops_per_token / gpus;
  auto peak = [&](const std::string& p) {
    auto it = cluster.peak_tflops.find(p);
    return it == cluster.peak_tflops.end() ? std::nan("") : it->second * 1e12;
  };
  r.mfu = achieved / peak(spec.recipe.linear_gemm);
  r.mfu_bf16 = achieved / peak("bf16");
  r.gpu_hours_per_trillion_tokens = gpus * t.step / 3600.0 * (1e12 / r.tokens_per_step);
  return r;
}

std::vector<PlanResult> sweep(const TrainingSpec& spec, const ClusterSpec& cluster, double mem_cap_gib,
                              const std::vector<std::string>& schedules, size_t max_results) {
  SY_REQUIRE(mem_cap_gib > 0, "plan: memory cap " << mem_cap_gib << " GiB must be > 0");
  std::vector<PlanResult> out;
  const int gpus = cluster.num_gpus();
  const int64_t E = std::max<int64_t>(1, spec.model.n_routed_experts);
  for (int pp = 1; pp <= gpus; ++pp) {
    if (gpus % pp) continue;
    for (int ep = 1; ep <= gpus / pp; ++ep) {
      if ((gpus / pp) % ep || E % ep) continue;
      for (const std::string& sched : schedules)
        for (int64_t mb : {1, 2}) {
          TrainingSpec s = spec;
          s.micro_batch = mb;
          Layout l;
          l.pp = pp;
          l.ep = ep;
          l.dp = gpus / pp / ep;
          l.schedule = sched;
          l.comm_sms = std::min(l.comm_sms, cluster.num_sms - 1);
          try {
            PlanResult r = plan(s, cluster, l);
            if (r.memory.total() <= mem_cap_gib * kGiB) out.push_back(std::move(r));
          } catch (const InvalidArgument&) {
            // Layouts that do not divide the model or the batch are skipped.
          }
        }
    }
  }
  std::sort(out.begin(), out.end(), [](const PlanResult& x, const PlanResult& y) { return x.time.step < y.time.step; });
  if (out.size() > max_results) out.resize(max_results);
  return out;
}

}  // namespace switchyard::trainer::plan
