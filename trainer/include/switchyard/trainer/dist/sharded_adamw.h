// ShardedAdamW: ZeRO stage 1 for the DP x EP trainer. Optimizer state (BF16 moments) is
// sharded over the ranks that replicate a parameter; one step is
//   reduce_scatter(gradients, sum) -> * 1/R -> global-norm clip -> AdamW on this rank's
//   shard -> all_gather(parameters),
// with two segments: non-expert parameters over the replica group (EP x DP of the stage)
// and this EP rank's routed experts over DP. Each segment is one flat buffer, padded to a
// multiple of its group size. The per-element arithmetic is AdamW::step's (same float
// operations and order), so parameters equal the unsharded path's.
// The norm counts every element once: sum of squares of every shard, summed over the
// replica group (expert shards partition the EP rank's experts over DP), then over PP.
//
// Checkpoints: state_shards() gives this rank's slice of every parameter's moments (ranks
// together hold each element once), load_state() takes this rank's shard from whole
// per-parameter moments, so a checkpoint can be resumed on any layout, with or without
// ZeRO-1 (DistTrainer::save_sharded / load_sharded).
//
// Collective over the groups (step only). Not thread-safe. Keeps pointers to the parameters.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/trainer/dist/parallel_layout.h"
#include "switchyard/trainer/parameters.h"
#include "switchyard/trainer/safetensors.h"
#include "switchyard/trainer/train/optimizer.h"

namespace switchyard::trainer::dist {

class ShardedAdamW {
 public:
  // stage_params: the parameters of this rank's pipeline stages (empty = all); others are
  // left alone.
  ShardedAdamW(ParameterSet<float>& params, int64_t num_experts, const ParallelGroups& groups, AdamWConfig config,
               const std::vector<const Parameter<float>*>& stage_params = {});
  // Returns the global gradient norm before clipping (max_norm <= 0: no clipping).
  double step(double lr, double max_norm);
  int64_t steps() const { return step_; }
  // false: this rank's stages are mirrored copies (DualPipe) counted by another pipeline
  // rank; it adds nothing to the norm (it still joins the collectives).
  void set_counts_in_norm(bool on) { counts_in_norm_ = on; }
  // Elements of optimizer state (each of m and v) held by this rank.
  int64_t state_elements() const;

  // This rank's moments as BF16 1-D slices of the parameters its shards overlap, named
  // "exp_avg.<name>@<first element>" and "exp_avg_sq.<name>@<first element>". Local.
  TensorMap state_shards() const;
  // Takes this rank's shard from whole moments {"exp_avg.<name>", "exp_avg_sq.<name>"}
  // (BF16, the parameter's shape; AdamW::state() naming) of every parameter of its
  // segments, and sets the step count. Throws InvalidArgument naming a missing or
  // mis-shaped tensor. Local.
  void load_state(const TensorMap& moments, int64_t steps);

 private:
  struct Segment {
    std::shared_ptr<comm::Communicator> group;
    std::vector<Parameter<float>*> params;
    int64_t size = 0;       // unpadded elements
    int64_t shard = 0;      // elements per rank (padded size / group size)
    int64_t begin = 0;      // this rank's first element
    std::vector<float> flat, mine;          // [shard * G] gradients then values; [shard]
    std::vector<uint16_t> m, v;             // [shard] BF16 moments
    std::vector<uint8_t> decay;             // [shard] 1 for matrix elements
  };
  void pack_grads(Segment& s);
  AdamWConfig config_;
  ParallelGroups groups_;
  std::vector<Segment> segments_;
  int64_t step_ = 0;
  bool counts_in_norm_ = true;
};

}  // namespace switchyard::trainer::dist
