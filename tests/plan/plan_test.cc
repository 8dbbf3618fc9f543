// sy-plan's model against independent references: parameter counts (config.h closed form),
// FLOPs from activated parameters, attention FLOPs by a naive loop over positions, expert
// traffic vs combinatorics, 1F1B bubble vs (PP-1)(F+B), and the DeepSeek-V3 report layout
// vs the report's 180K H800 GPU-hours per trillion tokens; measured (calibrated) rates enter
// as closed-form bytes / rate, and the calibration measures every op of the model.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "switchyard/common/error.h"
#include "switchyard/trainer/plan/calibrate.h"
#include "switchyard/trainer/plan/planner.h"

namespace switchyard::trainer::plan {
namespace {

ClusterSpec h800() {
  return cluster_from_file(std::string(SY_CLUSTERS_DIR) + "/h800.json");
}

TrainingSpec v3_spec() {
  TrainingSpec s;
  s.model = model_config_preset("v3");
  return s;
}

// A cluster where every rate is 1 TFLOP/s and links/memory are fast enough to vanish.
ClusterSpec unit_cluster(int gpus_per_node, int nodes) {
  ClusterSpec c;
  c.name = "unit";
  c.gpus_per_node = gpus_per_node;
  c.nodes = nodes;
  c.intra_node_gbps = c.network_gbps = c.memory_bandwidth_gbps = 1e12;
  c.memory_gib = 1e6;
  c.num_sms = 1;
  c.peak_tflops = {{"fp8", 1}, {"bf16", 1}, {"fp32", 1}};
  c.gemm_tflops = c.peak_tflops;
  c.attention_fwd_tflops = c.attention_bwd_tflops = 1;
  return c;
}

TEST(OpCostsTest, BlockParametersAddUpToConfigCounts) {
  for (const char* preset : {"tiny", "small", "v3"}) {
    const ModelConfig m = model_config_preset(preset);
    const ParameterCounts counts = count_parameters(m);
    const auto blocks = model_blocks(m, 1, 128, precision_recipe("fp8"), RecomputeOptions{});
    double total = 0;
    for (const BlockCost& b : blocks) total += static_cast<double>(b.dense_params + b.expert_params);
    EXPECT_EQ(total, static_cast<double>(counts.main + counts.mtp_unique)) << preset;
  }
}

TEST(OpCostsTest, GemmFlopsAreTwiceTheActivatedWeights) {
  // Main model only (no MTP): 2 FLOPs per activated weight, except the embedding lookup,
  // norms and the gate bias, which are not GEMM weights.
  const ModelConfig m = model_config_preset("v3");
  const ParameterCounts counts = count_parameters(m);
  const auto blocks = model_blocks(m, 0, 4096, precision_recipe("fp8"), RecomputeOptions{});
  double gemm = 0;
  for (const BlockCost& b : blocks)
    for (const OpCost& op : b.ops)
      if (op.kind == OpCost::Kind::kGemm) gemm += op.fwd_flops;
  int64_t moe_layers = 0;
  for (int64_t l = 0; l < m.num_hidden_layers; ++l) moe_layers += m.is_moe_layer(l) ? 1 : 0;
  const int64_t d = m.hidden_size;
  const int64_t norms = d + m.num_hidden_layers * (2 * d + m.q_lora_rank + m.kv_lora_rank);
  const int64_t weights = counts.activated_per_token - m.vocab_size * d - norms - moe_layers * m.n_routed_experts;
  EXPECT_DOUBLE_EQ(gemm, 2.0 * static_cast<double>(weights));
}

TEST(OpCostsTest, CausalAttentionFlopsMatchALoopOverPositions) {
  const ModelConfig m = model_config_preset("v3");
  const int64_t T = 1000;
  const BlockCost b = block_cost(m, BlockKind::kMoeLayer, T, precision_recipe("bf16"), RecomputeOptions{});
  double loop = 0;  // position t attends to t + 1 keys: QK^T (dqk) and PV (dv), 2 FLOPs per MAC
  for (int64_t t = 0; t < T; ++t)
    loop += 2.0 * m.num_attention_heads * (m.qk_head_dim() + m.v_head_dim) * static_cast<double>(t + 1);
  double core = 0;
  for (const OpCost& op : b.ops)
    if (op.kind == OpCost::Kind::kAttention) core += op.fwd_flops;
  EXPECT_NEAR(core, loop / T, 1e-6 * core);
}

TEST(OpCostsTest, RecomputationMovesFlopsIntoBackwardAndSavesActivations) {
  const ModelConfig m = model_config_preset("v3");
  RecomputeOptions none{false, false, false, false, true}, full{false, false, false, true, true};
  const BlockCost a = block_cost(m, BlockKind::kMoeLayer, 4096, precision_recipe("fp8"), none);
  const BlockCost b = block_cost(m, BlockKind::kMoeLayer, 4096, precision_recipe("fp8"), full);
  double fwd = 0, bwd_a = 0, bwd_b = 0;
  for (size_t i = 0; i < a.ops.size(); ++i) {
    fwd += a.ops[i].fwd_flops;
    bwd_a += a.ops[i].bwd_flops;
    bwd_b += b.ops[i].bwd_flops;
  }
  EXPECT_NEAR(bwd_b - bwd_a, fwd, 1e-9 * fwd);  // full recompute = one more forward
  EXPECT_DOUBLE_EQ(b.activation_bytes, m.hidden_size * 2.0);
  EXPECT_GT(a.activation_bytes, 10 * b.activation_bytes);
  EXPECT_DOUBLE_EQ(a.model_flops, b.model_flops);  // MFU FLOPs exclude recomputation
}

TEST(ExpertTrafficTest, UngroupedRoutingMatchesDistinctRankExpectation) {
  // One group: top-k of i.i.d. scores is a uniform K-subset, so a rank holding E/R experts is
  // hit with probability 1 - C(E - E/R, K) / C(E, K).
  ModelConfig m = model_config_preset("v3");
  m.n_group = 1;
  m.topk_group = 1;
  const int R = 64, E = 256, K = 8, per = E / R;
  double miss = 1;
  for (int i = 0; i < K; ++i) miss *= static_cast<double>(E - per - i) / (E - i);
  const ExpertTraffic t = simulate_expert_traffic(m, R, 8, 8192);
  EXPECT_NEAR(t.ranks_per_token, R * (1 - miss), 0.05);
  EXPECT_DOUBLE_EQ(t.experts_per_token, K);
}

TEST(ExpertTrafficTest, NodeLimitedRoutingReachesAtMostTopkGroupNodes) {
  const ModelConfig m = model_config_preset("v3");  // 8 groups, 4 kept: groups = nodes at EP 64 on 8 nodes
  const ExpertTraffic t = simulate_expert_traffic(m, 64, 8, 4096);
  EXPECT_LE(t.nodes_per_token, 4.0);
  EXPECT_GT(t.nodes_per_token, 3.0);
  // The home node is one of the 8 with probability nodes/8.
  EXPECT_NEAR(t.remote_nodes_per_token, t.nodes_per_token * 7.0 / 8.0, 0.1);
  const ExpertTraffic one_node = simulate_expert_traffic(m, 8, 1, 1024);
  EXPECT_DOUBLE_EQ(one_node.remote_nodes_per_token, 0.0);
  EXPECT_DOUBLE_EQ(one_node.nodes_per_token, 1.0);
}

TEST(PlannerTest, OneStagePlanIsFlopsOverRate) {
  // One rank, no pipeline, no MoE traffic, unit rates: step = compute = FLOPs / rate.
  TrainingSpec s;
  s.model = model_config_preset("tiny");
  s.seq_len = 64;
  s.global_batch = 8;
  s.micro_batch = 2;
  s.mtp_depth = 0;
  s.recipe = precision_recipe("fp32");
  s.recompute = RecomputeOptions{false, false, false, false, true};
  Layout l;
  l.pp = l.ep = l.dp = 1;
  l.schedule = "1f1b";
  l.comm_sms = 0;
  const PlanResult r = plan(s, unit_cluster(1, 1), l);
  double flops = 0;  // per token: linears 3x forward, attention 3.5x forward
  for (const BlockCost& b : model_blocks(s.model, 0, s.seq_len, s.recipe, s.recompute))
    for (const OpCost& op : b.ops)
      flops += op.kind == OpCost::Kind::kGemm        ? 3 * op.fwd_flops
               : op.kind == OpCost::Kind::kAttention ? 3.5 * op.fwd_flops
                                                     : 0;
  const double tokens = static_cast<double>(s.global_batch * s.seq_len);
  EXPECT_NEAR(r.time.compute, flops * tokens / 1e12, 1e-9 * r.time.compute);
  EXPECT_NEAR(r.time.bubble, 0.0, 1e-12);
  EXPECT_EQ(r.microbatches, 4);
}

TEST(PlannerTest, OneFOneBBubbleIsPpMinusOneChunks) {
  TrainingSpec s;
  s.model = model_config_preset("small");
  s.seq_len = 128;
  s.global_batch = 16;
  s.mtp_depth = 0;
  s.recipe = precision_recipe("fp32");
  Layout l;
  l.pp = 4;
  l.ep = l.dp = 1;
  l.schedule = "1f1b";
  l.comm_sms = 0;
  const PlanResult r = plan(s, unit_cluster(4, 1), l);
  const double chunk = r.time.compute / r.microbatches;  // f + b of the bottleneck stage
  EXPECT_NEAR(r.time.bubble, (l.pp - 1) * chunk, 1e-3 * r.time.bubble);
}

TEST(PlannerTest, MemoryWithoutShardingIsParametersTimesBytes) {
  TrainingSpec s;
  s.model = model_config_preset("tiny");
  s.seq_len = 64;
  s.global_batch = 4;
  s.mtp_depth = 1;
  s.recipe = precision_recipe("bf16");
  Layout l;
  l.pp = l.ep = l.dp = 1;
  l.schedule = "1f1b";
  l.comm_sms = 0;
  const PlanResult r = plan(s, unit_cluster(1, 1), l);
  const ParameterCounts c = count_parameters(s.model);
  const double params = static_cast<double>(c.main + c.mtp_unique);
  EXPECT_DOUBLE_EQ(r.memory.weights_high, 2 * params);
  EXPECT_DOUBLE_EQ(r.memory.master, 4 * params);
  EXPECT_DOUBLE_EQ(r.memory.moments, 8 * params);
  EXPECT_DOUBLE_EQ(r.memory.grads, 4 * params);
  EXPECT_DOUBLE_EQ(r.memory.weights_low, 0.0);
}

TEST(PlannerTest, DeepSeekV3ReportLayoutMatchesReportedGpuHours) {
  // DeepSeek-V3 report: 2048 H800, 16-way DualPipe, EP 64 over 8 nodes, ZeRO-1, 4K x 15360;
  // "each trillion tokens requires only 180K H800 GPU hours". No input is fitted to it.
  Layout l;  // defaults are the report's layout
  const PlanResult r = plan(v3_spec(), h800(), l);
  EXPECT_EQ(r.num_gpus, 2048);
  EXPECT_EQ(r.traffic.ep_nodes, 8);
  EXPECT_EQ(r.parameter_copies, 2);
  EXPECT_TRUE(r.fits) << r.memory.total() / (1 << 30) << " GiB";
  EXPECT_LE(r.memory.total(), 80.0 * (1 << 30));
  EXPECT_GT(r.gpu_hours_per_trillion_tokens, 0.75 * 180e3);
  EXPECT_LT(r.gpu_hours_per_trillion_tokens, 1.25 * 180e3);
  // Definitions: GPU-hours and MFU follow from the step time.
  EXPECT_NEAR(r.gpu_hours_per_trillion_tokens, 2048 * r.time.step / 3600 * 1e12 / (15360.0 * 4096), 1e-6);
  EXPECT_NEAR(r.mfu, r.tokens_per_second * r.model_flops_per_token / 2048 / 1979e12, 1e-9);
}

TEST(PlannerTest, SweepListsOnlyFittingLayoutsFastestFirst) {
  TrainingSpec s;
  s.model = model_config_preset("small");
  s.seq_len = 256;
  s.global_batch = 64;
  s.mtp_depth = 1;
  ClusterSpec c = h800();
  c.nodes = 2;
  const double cap = 20;
  const auto rs = sweep(s, c, cap, {"1f1b", "dualpipev"}, 50);
  ASSERT_FALSE(rs.empty());
  for (size_t i = 0; i < rs.size(); ++i) {
    EXPECT_LE(rs[i].memory.total(), cap * (1 << 30));
    EXPECT_EQ(rs[i].layout.pp * rs[i].layout.ep * rs[i].layout.dp, 16);
    if (i > 0) {
      EXPECT_LE(rs[i - 1].time.step, rs[i].time.step);
    }
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

TEST(PlannerTest, BadLayoutsGiveClearErrors) {
  const ClusterSpec c = h800();
  Layout l;
  l.ep = 48;
  l.dp = 2048 / 16 / 48;
  EXPECT_NE(error_of([&] { plan(v3_spec(), c, l); }).find("ep 48 does not divide the 256 routed experts"),
            std::string::npos);
  l = Layout{};
  l.dp = 4;
  EXPECT_NE(error_of([&] { plan(v3_spec(), c, l); }).find("4096 GPUs, but cluster h800 has 2048"), std::string::npos);
  l = Layout{};
  l.pp = 128;
  l.ep = 16;
  l.dp = 1;
  EXPECT_NE(error_of([&] { plan(v3_spec(), c, l); }).find("pipeline stages but the model has only"), std::string::npos);
  TrainingSpec s = v3_spec();
  s.global_batch = 15000;
  EXPECT_NE(error_of([&] { plan(s, c, Layout{}); }).find("not a multiple of ep x dp x micro_batch = 128"),
            std::string::npos);
  l = Layout{};
  l.schedule = "gpipe";
  EXPECT_NE(error_of([&] { plan(v3_spec(), c, l); }).find("gpipe"), std::string::npos);
  EXPECT_NE(error_of([] { precision_recipe("fp4"); }).find("fp8, bf16, fp32"), std::string::npos);
}

TEST(ClusterTest, MissingOrBadFieldsAreNamed) {
  const std::string good = R"({"name": "x", "gpus_per_node": 8, "nodes": 2, "intra_node_gbps": 160,
    "network_gbps": 50, "memory_bandwidth_gbps": 3350, "memory_gib": 80, "num_sms": 132,
    "peak_tflops": {"bf16": 989}, "gemm_tflops": {"bf16": 600}, "attention_fwd_tflops": 500,
    "attention_bwd_tflops": 400, "sources": {"intra_node_gbps": "a", "network_gbps": "a",
    "memory_bandwidth_gbps": "a", "memory_gib": "a", "num_sms": "a", "peak_tflops": "a",
    "gemm_tflops": "a", "attention_fwd_tflops": "a", "attention_bwd_tflops": "a"}})";
  EXPECT_EQ(cluster_from_json(good).num_gpus(), 16);
  auto without = [&](const std::string& field) {
    std::string t = good;
    const size_t at = t.find("\"" + field + "\"");
    t.replace(at, 1, "\"zz_");  // renames the first occurrence (the field, not its source)
    return t;
  };
  EXPECT_NE(error_of([&] { cluster_from_json(without("network_gbps")); }).find("missing field \"network_gbps\""),
            std::string::npos);
  EXPECT_NE(error_of([&] { cluster_from_json(without("gemm_tflops")); }).find("missing field \"gemm_tflops\""),
            std::string::npos);
  std::string no_source = good;
  no_source.replace(no_source.find("\"num_sms\": \"a\""), 9, "\"zz_sms\"");
  EXPECT_NE(error_of([&] { cluster_from_json(no_source); }).find("sources has no entry for \"num_sms\""),
            std::string::npos);
  std::string negative = good;
  negative.replace(negative.find("\"nodes\": 2"), 10, "\"nodes\": -1");
  EXPECT_NE(error_of([&] { cluster_from_json(negative); }).find("\"nodes\" must be an integer >= 1"),
            std::string::npos);
  EXPECT_NE(error_of([] { cluster_from_json("{"); }).find("malformed JSON"), std::string::npos);
  EXPECT_NE(error_of([] { cluster_from_file("/nonexistent/c.json"); }).find("cannot open"), std::string::npos);
  for (const char* name : {"h800", "h100", "h200", "cpu-2core"})
    EXPECT_NO_THROW(cluster_from_file(std::string(SY_CLUSTERS_DIR) + "/" + name + ".json")) << name;
}

// One rank (or two data-parallel ranks), fp32, tiny, no MTP: the setting of the CPU runs.
TrainingSpec cpu_spec() {
  TrainingSpec s;
  s.model = model_config_preset("tiny");
  s.seq_len = 64;
  s.global_batch = 4;
  s.micro_batch = 2;
  s.mtp_depth = 0;
  s.recipe = precision_recipe("fp32");
  s.recompute = RecomputeOptions{false, false, false, false, true};
  return s;
}

Layout cpu_layout(int ep, int dp) {
  Layout l;
  l.pp = 1;
  l.ep = ep;
  l.dp = dp;
  l.zero1 = false;
  l.schedule = "1f1b";
  l.comm_sms = 0;
  return l;
}

TEST(PlannerTest, MeasuredElementwiseRateReplacesMemoryBandwidthForThatOpOnly) {
  // Only element-wise ops cost time (GEMMs and attention at 1e9 TFLOP/s); memory at 2 GB/s,
  // the SwiGLU op of the dense layer measured at 0.5 GB/s. Its closed-form bytes per token
  // (op_costs.cc, fp32): norm 2d*4, SwiGLU 3F*4, residual 3d*4, forward; backward 2x.
  const TrainingSpec s = cpu_spec();
  ClusterSpec c = unit_cluster(1, 1);
  c.gemm_tflops = c.peak_tflops = {{"fp32", 1e9}};
  c.attention_fwd_tflops = c.attention_bwd_tflops = 1e9;
  c.memory_bandwidth_gbps = 2;
  const PlanResult before = plan(s, c, cpu_layout(1, 1));
  c.elementwise_gbps["ffn.norm_swiglu_residual"] = 0.5;
  const PlanResult after = plan(s, c, cpu_layout(1, 1));
  const double d = double(s.model.hidden_size), F = double(s.model.intermediate_size);
  const double tokens = double(s.global_batch * s.seq_len);
  const double dense_layers = double(s.model.first_k_dense_replace);
  const double bytes = 3 * (2 * d * 4 + 3 * F * 4 + 3 * d * 4) * tokens * dense_layers;  // fwd + 2x bwd
  EXPECT_NEAR(after.time.compute - before.time.compute, bytes / 0.5e9 - bytes / 2e9, 1e-9);
  double op_s = -1;
  for (const OpTime& t : after.time.compute_ops)
    if (t.name == "ffn.norm_swiglu_residual") op_s = t.seconds;
  EXPECT_NEAR(op_s, bytes / 0.5e9, 1e-12);
}

TEST(PlannerTest, MeasuredOptimizerAndAllReduceRatesGiveClosedFormTimes) {
  // Optimizer: fp32 recipe, no ZeRO: P params x (moments 2 x 4 B read+write + grad 4 + weight
  // 4) = 24 P bytes at optimizer_gbps. DP 2 all-reduce without ZeRO: ring 2 (g-1)/g x 4P bytes
  // at collective_gbps["all_reduce"] (dense params over EP x DP = 2, experts over DP = 2).
  const TrainingSpec s = cpu_spec();
  ClusterSpec c = unit_cluster(2, 1);
  c.optimizer_gbps = 3;
  c.collective_gbps["all_reduce"] = 0.25;
  const ParameterCounts counts = count_parameters(s.model);
  const double P = double(counts.main);
  const PlanResult r = plan(s, c, cpu_layout(1, 2));
  EXPECT_NEAR(r.time.optimizer, 24 * P / 3e9, 1e-9 * r.time.optimizer);
  EXPECT_NEAR(r.time.dp_sync, 2 * 0.5 * 4 * P / 0.25e9, 1e-9 * r.time.dp_sync);
  c.collective_gbps.clear();  // falls back to the shared-memory link: 1e12 GB/s
  EXPECT_LT(plan(s, c, cpu_layout(1, 2)).time.dp_sync, 1e-6);
}

TEST(PlannerTest, FullModelOptimizerCountsEveryExpertOnEveryRank) {
  // EP 2, fp32, no ZeRO: by default a rank updates the dense parameters and half the routed
  // experts; with optimizer_full_model (the CPU DistTrainer) all P of them. 24 bytes per
  // parameter at optimizer_gbps (as above); AdamW moments in memory 2 x 4 bytes per parameter.
  const TrainingSpec s = cpu_spec();
  ClusterSpec c = unit_cluster(2, 1);
  c.optimizer_gbps = 3;
  const ModelConfig& m = s.model;
  const double P = double(count_parameters(m).main);
  const double routed = double(m.num_hidden_layers - m.first_k_dense_replace) * double(m.n_routed_experts) * 3 *
                        double(m.hidden_size) * double(m.moe_intermediate_size);
  Layout l = cpu_layout(2, 1);
  const PlanResult own = plan(s, c, l);
  l.optimizer_full_model = true;
  const PlanResult full = plan(s, c, l);
  EXPECT_NEAR(full.time.optimizer, 24 * P / 3e9, 1e-9 * full.time.optimizer);
  EXPECT_NEAR(own.time.optimizer, 24 * (P - routed / 2) / 3e9, 1e-9 * own.time.optimizer);
  EXPECT_NEAR(full.memory.moments, 8 * P, 1e-6 * full.memory.moments);
  EXPECT_EQ(full.time.compute, own.time.compute);
}

TEST(PlannerTest, FirstTouchRateChargesTheKeptActivationsOfEveryMicroBatch) {
  // pp 1, 1F1B: the peak holds one micro-batch's kept activations (memory.activations); with
  // first_touch_gbps every micro-batch's forward writes them once into fresh memory.
  const TrainingSpec s = cpu_spec();
  ClusterSpec c = unit_cluster(1, 1);
  const PlanResult before = plan(s, c, cpu_layout(1, 1));
  c.first_touch_gbps = 0.5;
  const PlanResult after = plan(s, c, cpu_layout(1, 1));
  const double expected = after.memory.activations * after.microbatches / 0.5e9;
  EXPECT_EQ(after.microbatches, 2);
  EXPECT_NEAR(after.time.compute - before.time.compute, expected, 1e-9 * expected);
  double op_s = -1;
  for (const OpTime& t : after.time.compute_ops)
    if (t.name == "activations.first_touch") op_s = t.seconds;
  EXPECT_NEAR(op_s, expected, 1e-9 * expected);
}

TEST(ClusterTest, MeasuredFieldsRoundTripAndNeedSources) {
  ClusterSpec c = cluster_from_file(std::string(SY_CLUSTERS_DIR) + "/cpu-2core.json");
  c.gemm_shapes.push_back({"fp32", 256, 128, 0.125});
  c.elementwise_gbps["attn.norms_rope_residual"] = 3.5;
  c.optimizer_gbps = 1.25;
  c.collective_gbps["all_reduce"] = 0.75;
  c.first_touch_gbps = 2.5;
  for (const char* f : {"gemm_shapes", "elementwise_gbps", "optimizer_gbps", "collective_gbps", "first_touch_gbps"})
    c.sources[f] = "test";
  const std::string text = cluster_to_json(c);
  const ClusterSpec back = cluster_from_json(text);
  EXPECT_EQ(back.gemm_rate("fp32", 256, 128), 0.125);
  EXPECT_EQ(back.elementwise_rate("attn.norms_rope_residual"), 3.5);
  EXPECT_EQ(back.elementwise_rate("mtp.norms"), c.memory_bandwidth_gbps);  // not measured: fallback
  EXPECT_EQ(back.optimizer_gbps, 1.25);
  EXPECT_EQ(back.first_touch_gbps, 2.5);
  EXPECT_EQ(back.collective_rate("all_reduce", 9), 0.75);
  EXPECT_EQ(back.collective_rate("all_to_all", 9), 9.0);
  EXPECT_EQ(back.attention_fwd_tflops, c.attention_fwd_tflops);
  EXPECT_EQ(back.sources, c.sources);
  // A measured field without its source, or with a bad value, is named.
  std::string unsourced = text;
  unsourced.replace(unsourced.find("\"elementwise_gbps\": \"test\""), 18, "\"zz_elementwise_gbp\"");
  EXPECT_NE(error_of([&] { cluster_from_json(unsourced); }).find("sources has no entry for \"elementwise_gbps\""),
            std::string::npos);
  std::string negative = text;
  negative.replace(negative.find("\"all_reduce\": 0.75"), 19, "\"all_reduce\": -0.75");
  EXPECT_NE(error_of([&] { cluster_from_json(negative); }).find("collective_gbps.all_reduce must be a number > 0"),
            std::string::npos);
}

TEST(CalibrateTest, MeasuresEveryOperationOfTheModel) {
  // nano, tiny batch, one sample per op: every GEMM shape and element-wise op of the planner's
  // list gets a measured, finite, positive rate; no collectives without a world.
  TrainingSpec s = cpu_spec();
  s.model = model_config_preset("nano");
  s.seq_len = 32;
  s.micro_batch = 1;
  s.global_batch = 1;
  s.mtp_depth = 1;
  const ClusterSpec base = cluster_from_file(std::string(SY_CLUSTERS_DIR) + "/cpu-2core.json");
  const ClusterSpec c = calibrate_cpu(base, s, cpu_layout(1, 1), nullptr, 1, 0.0);
  size_t gemms = 0, elementwise = 0;
  for (const BlockCost& b : model_blocks(s.model, s.mtp_depth, s.seq_len, s.recipe, s.recompute))
    for (const OpCost& op : b.ops) {
      if (op.kind == OpCost::Kind::kGemm) {
        bool found = false;
        for (const GemmShapeRate& g : c.gemm_shapes) found |= g.n == op.n && g.k == op.k && g.precision == "fp32";
        EXPECT_TRUE(found) << op.name;
        ++gemms;
      } else if (op.kind == OpCost::Kind::kElementwise) {
        ASSERT_EQ(c.elementwise_gbps.count(op.name), 1u) << op.name;
        EXPECT_TRUE(std::isfinite(c.elementwise_gbps.at(op.name)) && c.elementwise_gbps.at(op.name) > 0);
        ++elementwise;
      }
    }
  EXPECT_GT(gemms, 5u);
  EXPECT_GT(elementwise, 4u);
  for (const GemmShapeRate& g : c.gemm_shapes) EXPECT_TRUE(std::isfinite(g.tflops) && g.tflops > 0);
  EXPECT_GT(c.attention_fwd_tflops, 0);
  EXPECT_GT(c.optimizer_gbps, 0);
  EXPECT_TRUE(std::isfinite(c.first_touch_gbps) && c.first_touch_gbps > 0);
  EXPECT_TRUE(c.collective_gbps.empty());
  EXPECT_NO_THROW(cluster_from_json(cluster_to_json(c)));  // every measured field has a source
  TrainingSpec fp8 = s;
  fp8.recipe = precision_recipe("fp8");
  EXPECT_NE(error_of([&] { calibrate_cpu(base, fp8, cpu_layout(1, 1)); }).find("fp32 recipe"), std::string::npos);
  EXPECT_NE(error_of([&] { calibrate_cpu(base, s, cpu_layout(1, 1), nullptr, 0); }).find("reps 0"),
            std::string::npos);
}

}  // namespace
}  // namespace switchyard::trainer::plan
