// run_pipeline_training: the sy-train job with pipeline stages (--pp > 1) on EP x PP x DP
// ranks; run_distributed_training hands --pp > 1 over to it.
//
// Same tokenizer, data stream, LR/MTP/bias schedules, progress lines, JSONL, time budget
// (decided on rank 0, broadcast), trace/timeline and closing sample as the EP x DP loop
// (dist_run.h); TrainOptions::batch is the global batch, split into
// DistRunOptions::microbatches micro-batches and over the ep * dp data ranks; --grad_accum A
// runs A rounds of the schedule per step (A global batches, one update). --fp8 runs the FP8
// Linear recipe on every stage. Checkpoints (TrainOptions::ckpt_dir, ckpt_every) are sharded
// (PipelineTrainer::save_sharded) into ckpt_dir/step-<N> with the data position; --resume
// continues from the newest.
//
// Collective over world: call on every rank.
#pragma once

#include <memory>
#include <ostream>

#include "switchyard/comm/communicator.h"
#include "switchyard/trainer/dist/dist_run.h"

namespace switchyard::trainer::dist {

DistRunResult run_pipeline_training(std::shared_ptr<comm::Communicator> world, const TrainOptions& train,
                                    const DistRunOptions& run, std::ostream& out);

}  // namespace switchyard::trainer::dist
