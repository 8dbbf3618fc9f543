// run_distributed_training (header).
#include "switchyard/trainer/dist/dist_run.h"

#include "switchyard/common/error.h"
#include "switchyard/trainer/config.h"
#include "switchyard/trainer/dist/pipeline_run.h"
#include "training_loop.h"

namespace switchyard::trainer::dist {

DistRunResult run_distributed_training(std::shared_ptr<comm::Communicator> world, const TrainOptions& train,
                                       const DistRunOptions& run, std::ostream& out) {
  train.validate();
  run.layout.validate(world->size());
  if (run.layout.pp > 1) return run_pipeline_training(world, train, run, out);  // pipeline_run.h
  const bool lead = world->rank() == 0;

  auto tokenizer = make_tokenizer(train.tokenizer);
  ModelConfig config = model_config_for(train, *tokenizer);
  const int64_t D = config.num_nextn_predict_layers;
  TextDataset dataset(data_options_for(train, D), *tokenizer);

  DistOptions o;
  o.layout = run.layout;
  o.wire = run.wire;
  o.zero1 = run.zero1;
  o.adam.weight_decay = train.weight_decay;
  o.clip = train.clip;
  o.seed = train.seed;
  o.init_std = train.init_std;
  o.fp8 = train.fp8;
  o.fp8_pow2 = train.fp8_pow2;
  DistTrainer trainer(world, config, o);

  if (lead)
    out << "distributed: " << world->size() << " ranks on " << world->rank_map().num_nodes() << " node(s), "
        << run.layout.to_string() << ", expert payload " << expert_wire_name(run.wire) << ", global batch "
        << train.batch << " x " << train.seq << " tokens\n"
        << std::flush;
  TrainingLoopHooks hooks;
  hooks.step = [&](const int64_t* tokens, double lr, double bias_rate) {
    return trainer.step_micro_batches(tokens, train.grad_accum, train.batch, train.seq, lr, bias_rate);
  };
  hooks.trace_title = "sy-train " + run.layout.to_string() + " (measured, rank rows)";
  return run_training_loop(*world, trainer, train, run, config, *tokenizer, dataset, hooks, out);
}

}  // namespace switchyard::trainer::dist
