// run_pipeline_training (header).
#include "switchyard/trainer/dist/pipeline_run.h"

#include "switchyard/common/error.h"
#include "switchyard/common/param.h"
#include "switchyard/trainer/dist/pipeline_trainer.h"
#include "training_loop.h"

namespace switchyard::trainer::dist {
namespace {

const Param<int64_t> kFbOverlap("TRAIN_FB_OVERLAP", 1, "bool",
                                "1: the schedule's FB pairs overlap one micro-batch's MoE dispatch/combine with the "
                                "other's compute; 0: forward then backward (the before/after measurement)");

}  // namespace

DistRunResult run_pipeline_training(std::shared_ptr<comm::Communicator> world, const TrainOptions& train,
                                    const DistRunOptions& run, std::ostream& out) {
  train.validate();
  run.layout.validate(world->size());
  const bool lead = world->rank() == 0;

  auto tokenizer = make_tokenizer(train.tokenizer);
  ModelConfig config = model_config_for(train, *tokenizer);
  const int64_t D = config.num_nextn_predict_layers;
  TextDataset dataset(data_options_for(train, D), *tokenizer);

  PipelineOptions o;
  o.dist.layout = run.layout;
  o.dist.wire = run.wire;
  o.dist.zero1 = run.zero1;
  o.dist.fp8 = train.fp8;
  o.dist.fp8_pow2 = train.fp8_pow2;
  o.dist.adam.weight_decay = train.weight_decay;
  o.dist.clip = train.clip;
  o.dist.seed = train.seed;
  o.dist.init_std = train.init_std;
  o.schedule = pipeline::parse_schedule_kind(run.schedule);
  o.microbatches = static_cast<int>(run.microbatches);
  o.fb_overlap = kFbOverlap.get() != 0;
  PipelineTrainer trainer(world, config, o);

  if (lead) {
    out << "distributed: " << world->size() << " ranks on " << world->rank_map().num_nodes() << " node(s), "
        << run.layout.to_string() << ", schedule " << trainer.schedule().name << " with " << run.microbatches
        << " micro-batches, " << trainer.schedule().num_stages << " stages, expert payload "
        << expert_wire_name(run.wire) << ", global batch " << train.batch << " x " << train.seq << " tokens\n";
    const pipeline::Schedule& sched = trainer.schedule();
    for (const StagePlan& s : plan_stages(config, sched.num_stages)) {
      out << "  stage " << s.stage << " on pipeline rank " << sched.paths[0][s.stage];
      if (sched.paths.size() > 1) out << " (mirrored copy on rank " << sched.paths[1][s.stage] << ")";
      out << ": " << (s.embed ? "embedding, " : "") << "layers [" << s.first << ", " << s.last << ")"
          << (s.head ? ", final norm, head, MTP" : "") << "\n";
    }
    out << std::flush;
  }

  TrainingLoopHooks hooks;
  hooks.step = [&](const int64_t* tokens, double lr, double bias_rate) {
    return trainer.step_accumulated(tokens, train.grad_accum, train.batch, train.seq, lr, bias_rate);
  };
  hooks.trace_title = "sy-train " + run.layout.to_string() + " " + trainer.schedule().name + " (measured, rank rows)";
  hooks.finish = [&](DistRunResult& result) {
    if (lead && result.breakdown.async_comm > 0)
      out << "FB pairs (traced steps): " << result.breakdown.async_comm
          << " s of communication overlapped with the other micro-batch's compute, "
          << static_cast<int>(100 * result.breakdown.pair_hidden_share() + 0.5) << "% of it hidden\n";
    if (!run.trace_path.empty() && result.steps > 0) {
      std::string path = run.trace_path;
      if (path.size() > 5 && path.compare(path.size() - 5, 5, ".json") == 0) path.resize(path.size() - 5);
      path += ".pipeline.json";
      trainer.write_pipeline_trace(path);
      if (lead) out << "pipeline trace of the last step (stages, micro-batches, P2P arrows): " << path << "\n";
    }
  };
  return run_training_loop(*world, trainer, train, run, config, *tokenizer, dataset, hooks, out);
}

}  // namespace switchyard::trainer::dist
