// sy-train: trains the DeepSeek-V3 model on CPU (FP32 or the emulated FP8 recipe), writes
// checkpoints and JSONL metrics, and samples text from a checkpoint with MTP speculative
// decoding. `--demo --out DIR` is the `make demo` job: a small model on the default corpus
// (the King James Bible) for a few minutes, then a generated sample.
//
// Output: one progress line per --log-every steps; --json prints a final JSON summary.
// Exit status 1 with "sy-train: <reason>" on bad flags, missing files or a non-finite loss.
#include <cblas.h>
#include <gflags/gflags.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <vector>

#include "switchyard/common/error.h"
#include "switchyard/comm/communicator.h"
#include "switchyard/comm/launch_env.h"
#include "switchyard/trainer/dist/dist_run.h"
#include "switchyard/trainer/train/generate.h"
#include "switchyard/trainer/train/trainer.h"

DEFINE_string(preset, "nano", "model preset: nano, tiny, small, v3 (ignored with --config)");
DEFINE_string(config, "", "Hugging Face config.json of the model");
DEFINE_string(data, "", "text file or folder to train on; \"default\": the KJV Bible (also --demo's)");
DEFINE_string(tokenizer, "bytes", "\"bytes\" or a Hugging Face tokenizer.json (byte-level BPE)");
DEFINE_int64(steps, 200, "optimizer steps");
DEFINE_int64(batch, 8, "sequences per micro-batch");
DEFINE_int64(seq, 64, "sequence length T");
DEFINE_int64(grad_accum, 1, "micro-batches per optimizer step");
DEFINE_double(lr, 3e-3, "peak learning rate");
DEFINE_int64(warmup, 20, "linear warm-up steps");
DEFINE_string(lr_decay, "cosine", "after warm-up: constant or cosine (to --min-lr at --steps)");
DEFINE_double(min_lr, 3e-4, "final learning rate of the cosine decay");
DEFINE_double(clip, 1.0, "global gradient-norm clipping (0: off)");
DEFINE_double(weight_decay, 0.1, "AdamW weight decay");
DEFINE_bool(fp8, false, "emulate the FP8 E4M3 recipe for the Linear GEMMs");
DEFINE_bool(fp8_pow2, false, "power-of-two FP8 scales");
DEFINE_int64(mtp_depth, -1, "MTP depth D (-1: the config's num_nextn_predict_layers)");
DEFINE_string(mtp_weight, "", "MTP loss weight schedule, e.g. 0.3,1000:0.1 (default: the config's)");
DEFINE_string(bias_rate, "0.001", "bias-update speed schedule, e.g. 0.001,1800:0");
DEFINE_string(ckpt_dir, "", "checkpoint directory (empty: none)");
DEFINE_int64(ckpt_every, 0, "checkpoint every N steps (0: only at the end)");
DEFINE_int64(keep, 3, "checkpoints kept");
DEFINE_bool(resume, false, "continue from the latest checkpoint in --ckpt-dir");
DEFINE_int64(eval_every, 0, "validation loss every N steps (0: off)");
DEFINE_int64(eval_batches, 4, "validation batches per evaluation");
DEFINE_double(val_fraction, 0.05, "held-out fraction of the documents");
DEFINE_string(log_jsonl, "", "append one JSON object per step to this file");
DEFINE_int64(log_every, 10, "progress line every N steps");
DEFINE_uint64(seed, 1, "seed of the initialization (and of the data unless --data_seed)");
DEFINE_int64(data_seed, -1, "seed of the validation split and the data order (-1: --seed)");
DEFINE_int32(threads, 0, "OpenBLAS threads (0: its default)");
DEFINE_double(init_std, 0.02, "standard deviation of the initial weights");
DEFINE_bool(skip_nonfinite, false, "skip steps with a non-finite loss instead of stopping");
DEFINE_double(time_budget, 0, "stop training after this many seconds (0: no limit)");
DEFINE_int64(max_position, 0, "max_position_embeddings override (longer generation)");
DEFINE_bool(generate, false, "sample text from --checkpoint instead of training");
DEFINE_string(checkpoint, "", "checkpoint folder, or a checkpoint directory (its latest)");
DEFINE_string(prompt, "And God said", "generation prompt");
DEFINE_int64(max_new_tokens, 120, "tokens to generate");
DEFINE_double(temperature, 0, "sampling temperature (0: greedy)");
DEFINE_int64(top_k, 0, "sample among the k most likely tokens (0: all)");
DEFINE_bool(demo, false, "the `make demo` job: train a small model on the default corpus, then sample");
DEFINE_string(out, "runs/train", "output folder of --demo (checkpoints, metrics, corpus cache)");
DEFINE_string(corpus_cache, "runs/corpus/bible-kjv.txt", "where the default corpus is written");
DEFINE_bool(json, false, "print a JSON summary at the end");
// Distributed training (docs/distributed.md): on several ranks (sy-run, torchrun, mpirun).
DEFINE_int32(ep, 0, "expert-parallel ranks (0: world / (pp * dp))");
DEFINE_int32(pp, 1, "pipeline ranks (the layers cut into stages as --schedule places them)");
DEFINE_int32(dp, 1, "data-parallel replicas of each expert-parallel group");
DEFINE_string(schedule, "dualpipev", "pipeline schedule with --pp > 1: dualpipev, dualpipe, zbv, 1f1b");
DEFINE_int64(microbatches, 1, "pipeline micro-batches per step (with --pp > 1; the gradient accumulation; dualpipev needs >= 2 * pp)");
DEFINE_string(expert_payload, "fp8", "MoE payload on several ranks: fp8 (FP8 dispatch, BF16 combine) or fp32");
DEFINE_bool(zero1, false, "ZeRO-1: optimizer state sharded over the ranks that replicate each parameter");
DEFINE_string(trace, "", "several ranks: Perfetto trace of the traced steps (rank 0 writes it)");
DEFINE_string(timeline, "", "several ranks: SVG timeline of the same steps");

namespace sy = switchyard::trainer;

namespace {

sy::TrainOptions options_from_flags() {
  sy::TrainOptions o;
  o.preset = FLAGS_preset;
  o.config_path = FLAGS_config;
  o.data = FLAGS_data;
  o.tokenizer = FLAGS_tokenizer;
  o.steps = FLAGS_steps;
  o.batch = FLAGS_batch;
  o.seq = FLAGS_seq;
  o.grad_accum = FLAGS_grad_accum;
  o.mtp_depth = FLAGS_mtp_depth;
  o.lr = FLAGS_lr;
  o.warmup = FLAGS_warmup;
  o.lr_decay = FLAGS_lr_decay;
  o.min_lr = FLAGS_min_lr;
  o.clip = FLAGS_clip;
  o.weight_decay = FLAGS_weight_decay;
  o.mtp_weight = FLAGS_mtp_weight;
  o.bias_rate = FLAGS_bias_rate;
  o.fp8 = FLAGS_fp8;
  o.fp8_pow2 = FLAGS_fp8_pow2;
  o.init_std = FLAGS_init_std;
  o.seed = FLAGS_seed;
  o.data_seed = FLAGS_data_seed;
  o.val_fraction = FLAGS_val_fraction;
  o.eval_every = FLAGS_eval_every;
  o.eval_batches = FLAGS_eval_batches;
  o.ckpt_dir = FLAGS_ckpt_dir;
  o.ckpt_every = FLAGS_ckpt_every;
  o.keep = FLAGS_keep;
  o.skip_nonfinite = FLAGS_skip_nonfinite;
  o.max_position = FLAGS_max_position;
  return o;
}

// Plain greedy vs speculative greedy from the same prompt; prints text and the statistics.
nlohmann::json sample(sy::Model<float>& model, const sy::Tokenizer& tok, std::ostream& out) {
  std::vector<int64_t> prompt = tok.encode(FLAGS_prompt);
  sy::GenerateOptions g;
  g.max_new_tokens = FLAGS_max_new_tokens;
  g.temperature = FLAGS_temperature;
  g.top_k = FLAGS_top_k;
  std::mt19937_64 rng(FLAGS_seed);
  sy::GenerateResult plain = sy::generate(model, prompt, g, rng);
  nlohmann::json j = {{"prompt", FLAGS_prompt}, {"text", tok.decode(plain.tokens)}, {"plain_seconds", plain.seconds}};
  char mode[64];
  std::snprintf(mode, sizeof mode, g.temperature > 0 ? "temperature %g, top-k %lld" : "greedy", g.temperature,
                (long long)g.top_k);
  out << "--- sample (" << mode << ") ---\n"
      << FLAGS_prompt << tok.decode(plain.tokens) << "\n---\n";
  if (model.config().num_nextn_predict_layers >= 1) {
    g.speculative = true;
    rng.seed(FLAGS_seed);
    sy::GenerateResult spec = sy::generate(model, prompt, g, rng);
    bool same = spec.tokens == plain.tokens;
    char line[400];
    std::snprintf(line, sizeof line,
                  "MTP speculative decoding: acceptance %.1f%% (%lld/%lld drafts), %.2f tokens per main-model pass "
                  "(the speed-up of a KV-cached decoder), wall %.2fs vs plain %.2fs (x%.2f here: no KV cache, the "
                  "draft pass is a full recompute); tokens %s plain decoding\n",
                  100 * spec.acceptance(), (long long)spec.accepted, (long long)spec.drafted,
                  spec.tokens_per_main_pass(), spec.seconds, plain.seconds, plain.seconds / std::max(spec.seconds, 1e-9),
                  same ? "identical to" : "DIFFER from");
    out << line;
    j["speculative"] = {{"acceptance", spec.acceptance()},      {"accepted", spec.accepted},
                        {"drafted", spec.drafted},             {"tokens_per_main_pass", spec.tokens_per_main_pass()},
                        {"seconds", spec.seconds},             {"identical_to_plain", same}};
  }
  return j;
}

// The job on several ranks (or with --ep/--pp/--dp > 1): DP x EP over the dispatch library.
int run_distributed(sy::TrainOptions o, const sy::RunOptions& r, int world_size) {
  namespace fs = std::filesystem;
  namespace dist = switchyard::trainer::dist;
  dist::DistRunOptions d;
  d.layout.pp = FLAGS_pp;
  d.layout.dp = FLAGS_dp;
  d.layout.ep = FLAGS_ep > 0 ? FLAGS_ep : world_size / std::max(1, FLAGS_pp * FLAGS_dp);
  d.schedule = FLAGS_schedule;
  d.microbatches = FLAGS_microbatches;
  d.wire = dist::parse_expert_wire(FLAGS_expert_payload);
  d.zero1 = FLAGS_zero1;
  d.log_every = r.log_every;
  d.resume = r.resume;
  d.jsonl_path = r.jsonl_path;
  d.time_budget_s = r.time_budget_s;
  d.trace_path = FLAGS_trace;
  d.timeline_path = FLAGS_timeline;
  if (FLAGS_demo) {
    if (d.trace_path.empty()) d.trace_path = (fs::path(FLAGS_out) / "trace.json").string();
    if (d.timeline_path.empty()) d.timeline_path = (fs::path(FLAGS_out) / "timeline.svg").string();
    d.sample_prompt = FLAGS_prompt;
    d.sample_tokens = FLAGS_max_new_tokens;
    d.sample_temperature = FLAGS_temperature;
    d.sample_top_k = FLAGS_top_k;
    o.eval_every = 0;
  }
  auto world = switchyard::comm::Communicator::init();
  const bool lead = world->rank() == 0;
  dist::DistRunResult res = dist::run_distributed_training(world, o, d, std::cout);
  if (!lead) return 0;
  std::printf("main loss: mean of the first 20 steps %.3f, of the last 20 steps %.3f (drop %.3f nats) over %lld steps\n",
              res.first_mean, res.last_mean, res.first_mean - res.last_mean, (long long)res.steps);
  const dist::StepBreakdown& b = res.breakdown;
  std::printf("step time (traced steps, s): compute %.3f, exposed communication %.3f, other %.3f of %.3f; "
              "communication hidden %.0f%%; %.0f tokens/s (median)\n",
              b.compute, b.exposed_comm, b.idle, b.wall, 100 * b.hidden_share(), res.tokens_per_s);
  if (!res.sample.empty()) std::cout << "sample: " << res.sample << "\n";
  if (!d.trace_path.empty()) std::cout << "trace (Perfetto, ui.perfetto.dev): " << d.trace_path << "\n";
  if (!d.timeline_path.empty()) std::cout << "timeline picture: " << d.timeline_path << "\n";
  if (FLAGS_json)
    std::cout << nlohmann::json({{"steps", res.steps},
                                 {"first_mean", res.first_mean},
                                 {"last_mean", res.last_mean},
                                 {"tokens_per_s", res.tokens_per_s},
                                 {"compute_s", b.compute},
                                 {"exposed_comm_s", b.exposed_comm},
                                 {"other_s", b.idle},
                                 {"wall_s", b.wall},
                                 {"hidden_share", b.hidden_share()},
                                 {"sample", res.sample}})
                     .dump()
              << "\n";
  return 0;
}

int run() {
  if (FLAGS_threads > 0) openblas_set_num_threads(FLAGS_threads);
  nlohmann::json summary;
  if (FLAGS_generate) {
    std::string path = FLAGS_checkpoint.empty() ? FLAGS_ckpt_dir : FLAGS_checkpoint;
    SY_REQUIRE(!path.empty(), "--generate needs --checkpoint (a checkpoint folder or directory)");
    sy::LoadedModel m = sy::load_checkpoint_model(path);
    std::cout << "model from " << m.folder << " (step " << m.step << ")\n";
    summary = sample(*m.model, *m.tokenizer, std::cout);
  } else {
    sy::TrainOptions o = options_from_flags();
    sy::RunOptions r;
    r.resume = FLAGS_resume;
    r.log_every = FLAGS_log_every;
    r.jsonl_path = FLAGS_log_jsonl;
    r.time_budget_s = FLAGS_time_budget;
    if (FLAGS_demo) {
      namespace fs = std::filesystem;
      fs::create_directories(FLAGS_out);
      if (o.data.empty()) {
        std::cout << "default corpus: King James Bible (Debian bible-kjv-text), cached in " << FLAGS_corpus_cache
                  << "\n";
        o.data = sy::ensure_default_corpus(FLAGS_corpus_cache);
      }
      // Flags left at their defaults get the demo's values.
      auto set_default = [](const char* flag, auto& field, auto value) {
        gflags::CommandLineFlagInfo info;
        if (gflags::GetCommandLineFlagInfo(flag, &info) && info.is_default) field = value;
      };
      set_default("steps", o.steps, int64_t(2000));
      set_default("batch", o.batch, int64_t(16));
      set_default("time_budget", r.time_budget_s, 170.0);
      set_default("eval_every", o.eval_every, int64_t(100));
      set_default("mtp_depth", o.mtp_depth, int64_t(1));
      set_default("max_position", o.max_position, int64_t(256));
      set_default("log_every", r.log_every, int64_t(20));
      set_default("bias_rate", o.bias_rate, std::string("0.01"));  // balance within a short run
      set_default("temperature", FLAGS_temperature, 0.8);
      set_default("top_k", FLAGS_top_k, int64_t(20));
      set_default("ckpt_dir", o.ckpt_dir, (fs::path(FLAGS_out) / "ckpt").string());
      set_default("log_jsonl", r.jsonl_path, (fs::path(FLAGS_out) / "metrics.jsonl").string());
      if (!r.jsonl_path.empty()) fs::remove(r.jsonl_path);
      std::cout << "training preset " << o.preset << " on " << o.data << " (" << r.time_budget_s
                << " s budget); metrics in " << r.jsonl_path << ", checkpoints in " << o.ckpt_dir << "\n";
    }
    if (o.data == "default") o.data = sy::ensure_default_corpus(FLAGS_corpus_cache);
    SY_REQUIRE(!o.data.empty(), "--data is empty: pass a text file or folder (or --demo for the default corpus)");
    const int world_size = switchyard::comm::LaunchEnv::detect().world_size;
    if (world_size > 1 || FLAGS_ep > 1 || FLAGS_pp > 1 || FLAGS_dp > 1) return run_distributed(o, r, world_size);
    sy::Trainer trainer(o);
    std::cout << "model: " << trainer.model().parameters().total_numel() << " parameters, vocab "
              << trainer.model().config().vocab_size << ", MTP depth " << trainer.model().config().num_nextn_predict_layers
              << (o.fp8 ? ", FP8 recipe (emulated)" : ", FP32") << "; data: " << trainer.data().num_train_windows()
              << " training windows of " << trainer.data().window() << " tokens\n";
    std::vector<double> losses;  // main loss per step, for the demo's summary
    sy::StepMetrics last = sy::run_training(trainer, r, std::cout);
    summary = {{"step", trainer.step()}, {"loss", last.loss}, {"main_loss", last.main_loss},
               {"mtp_loss", last.mtp_loss}, {"tokens_per_s", last.tokens_per_s}};
    if (FLAGS_demo) {
      if (!r.jsonl_path.empty()) {  // the loss drop, from the metrics file
        std::ifstream in(r.jsonl_path);
        std::string line;
        while (std::getline(in, line)) {
          auto j = nlohmann::json::parse(line);
          if (j["type"] == "train") losses.push_back(j["main_loss"].get<double>());
        }
        if (losses.size() >= 40) {
          double first = 0, final = 0;
          for (size_t i = 0; i < 20; ++i) first += losses[i] / 20, final += losses[losses.size() - 20 + i] / 20;
          std::printf("main loss: mean of the first 20 steps %.3f, of the last 20 steps %.3f (drop %.3f nats)\n", first,
                      final, first - final);
          summary["loss_drop_nats"] = first - final;
        }
      }
      summary["sample"] = sample(trainer.model(), trainer.tokenizer(), std::cout);
    }
  }
  if (FLAGS_json) std::cout << summary.dump() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("sy-train [--preset nano|tiny|...] --data TEXT [--steps N] [--fp8] ... | --generate "
                          "--checkpoint DIR | --demo --out DIR");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (argc > 1) {
    std::fprintf(stderr, "sy-train: unexpected argument \"%s\" (flags are --name=value)\n", argv[1]);
    return 1;
  }
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sy-train: %s\n", e.what());
    std::fflush(stdout);
    return 1;
  }
}
