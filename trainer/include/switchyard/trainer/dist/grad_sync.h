// GradientSync: gradient reduction, global-norm clipping and load-count sums of a DP x EP
// (x PP) job, counting every parameter once.
//
// After each rank's backward on its slice of the global batch (its loss is the mean over its
// own tokens), reduce() makes every gradient the gradient of the global-batch mean loss:
// - non-expert parameters: summed over the replica group (EP x DP of the stage), / R;
// - routed experts this EP rank owns: summed over DP, / R (each owner already holds the
//   contributions of all EP ranks' tokens, routed to it by dispatch);
// - routed experts of other EP ranks: zeroed (this rank never steps them);
// where R = ep * dp is the number of data ranks. Packed into one flat buffer per group.
// clip() computes the L2 norm over the stage's non-expert parameters once plus every
// owned expert once (summed over EP), then over pipeline stages (sum over PP; a rank whose
// stages are mirrored copies adds nothing, set_counts_in_norm), and scales
// every gradient by max_norm / (norm + 1e-6) when norm > max_norm (as clip_grad_norm).
//
// Collective over the groups; call in the same order on every rank. Not thread-safe. Keeps
// a reference to the parameters (must outlive it).
#pragma once

#include <cstdint>
#include <vector>

#include "switchyard/trainer/dist/parallel_layout.h"
#include "switchyard/trainer/parameters.h"

namespace switchyard::trainer::dist {

// Routed expert index of a parameter name (".mlp.experts.<e>."), or -1.
int64_t routed_expert_of(const std::string& name);

class GradientSync {
 public:
  // num_experts: E (divisible by layout.ep). stage_params: the parameters this pipeline
  // stage holds (nullptr = all). Parameters outside the stage are left alone.
  GradientSync(ParameterSet<float>& params, int64_t num_experts, const ParallelGroups& groups,
               std::vector<const Parameter<float>*> stage_params = {});

  // True when this rank updates p (non-expert of the stage, or an owned expert).
  bool owns(const Parameter<float>& p) const;
  void reduce();
  double clip(double max_norm);
  // false: this rank's stages are mirrored copies (DualPipe) counted by another pipeline
  // rank, so clip() adds nothing of its own to the norm (it still joins the collectives).
  void set_counts_in_norm(bool on) { counts_in_norm_ = on; }
  // v: [n] summed over the replica group in place (FP64, e.g. expert load counts).
  void sum_over_replica(std::vector<double>& v);
  // Mean over the replica group in place.
  void mean_over_replica(std::vector<double>& v);
  // Seconds spent in reduce() and clip() collectives since construction.
  double comm_seconds() const { return comm_seconds_; }

 private:
  ParameterSet<float>& params_;
  ParallelGroups groups_;
  int64_t experts_per_rank_;
  std::vector<Parameter<float>*> dense_, owned_experts_, foreign_experts_;
  std::vector<float> send_, recv_;
  double comm_seconds_ = 0;
  bool counts_in_norm_ = true;
};

}  // namespace switchyard::trainer::dist
