// A pipeline schedule as data: where each stage lives, and per rank the ordered list of actions.
//
// Placement. Micro-batch m follows path microbatch_path[m]; paths[p][s] is the pipeline rank
// that runs stage s for micro-batches on path p. 1F1B has one path 0..N-1; the V schedules
// (ZBV, DualPipeV) fold 2N stages onto N ranks; DualPipe has two paths (rank r holds stage r
// for one direction and a mirrored copy of it for the other direction, so a stage has two
// parameter copies whose gradients REDUCE sums).
//
// Replicas. An expert-parallel (EP) job runs the same pipeline schedule on num_replicas copies
// of the pipeline; global rank = replica * pp_ranks + pp_rank, P2P stays inside a replica, and
// the ranks with the same pp_rank form an EP group (ep_groups) whose dispatch/combine
// collectives must be issued in the same order.
//
// Communication. A maximal run of consecutive SEND/RECV actions in a rank's list is one batch,
// posted together (like ncclGroupStart/End or batch_isend_irecv): the batch completes when
// each of its operations has met its partner (zero-buffer, rendezvous semantics). Per ordered
// rank pair the sends and receives match in issue order.
#pragma once

#include <string>
#include <vector>

#include "switchyard/pipeline/action.h"

namespace switchyard::pipeline {

struct Schedule {
  std::string name;          // generator name ("1f1b", "dualpipe", ...) or free text
  int num_stages = 0;
  int num_microbatches = 0;
  int num_replicas = 1;      // pipeline copies (EP/DP); 1 for a plain pipeline
  std::vector<std::vector<int>> paths;   // [path][stage] -> pipeline rank
  std::vector<int> microbatch_path;      // [microbatch] -> path
  std::vector<std::vector<int>> ep_groups;  // global ranks issuing the same EP collectives
  std::vector<std::vector<Action>> ranks;   // [global rank] -> ordered actions

  int num_ranks() const { return static_cast<int>(ranks.size()); }
  int pp_ranks() const { return num_ranks() / num_replicas; }
  int pp_rank(int rank) const { return rank % pp_ranks(); }
  int replica(int rank) const { return rank / pp_ranks(); }
  // Global rank that runs (stage, microbatch) in `replica`.
  int rank_of(int stage, int microbatch, int replica = 0) const;
  // Stages whose parameters live on pipeline rank `pp_rank` (sorted, unique).
  std::vector<int> stages_on(int pp_rank) const;
  // Number of ranks (per replica) that hold a copy of each stage; 2 for DualPipe.
  int parameter_copies() const;

  bool operator==(const Schedule&) const = default;
};

// Checks the placement tables (sizes, ranges) and that every action names valid stages,
// micro-batches and peers. Throws InvalidArgument saying which entry is wrong. The deeper
// ordering checks are in verifier.h.
void check_shape(const Schedule& s);

}  // namespace switchyard::pipeline
