// The sharded checkpoint folder shared by DistTrainer (EP x DP) and PipelineTrainer (stages).
//
// Layout of folder `dir`: rank-<r>.safetensors per world rank with the tensors that rank is
// the first holder of (parameters and router biases by name, FP32; their AdamW moments as
// whole BF16 tensors "exp_avg.<name>" / "exp_avg_sq.<name>", or ZeRO-1 slices
// "exp_avg.<name>@<first element>"), and meta.json written by rank 0 ({step, world, layout,
// extra, ...}). The union of the rank files holds every tensor and every moment element
// exactly once, so any layout of the same model can read it back.
//
// Atomicity: written into dir + ".tmp" (removed first), barrier, rank 0 renames it to dir
// (replacing an old one), barrier; a crash never leaves a half checkpoint under `dir`.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "switchyard/comm/communicator.h"
#include "switchyard/trainer/parameters.h"
#include "switchyard/trainer/safetensors.h"

namespace switchyard::trainer::dist {

// Collective over world: every rank passes the tensors it writes (`mine`); meta is used
// on rank 0 only ("world" is set here). Throws IoError naming the file.
void write_sharded_checkpoint(comm::Communicator& world, const std::string& dir, const TensorMap& mine,
                              nlohmann::json meta);

struct ShardedCheckpoint {
  TensorMap weights;    // every non-moment tensor of every rank file
  TensorMap moments;    // "exp_avg.<name>", "exp_avg_sq.<name>" [shape of name] BF16, whole,
                        // for every parameter of the ParameterSet passed in
  nlohmann::json meta;  // meta.json
};

// Reads every rank file of `dir` (local, not collective) and reassembles each parameter's
// moments from whole tensors or slices. Throws IoError (no meta.json, unreadable file) or
// InvalidArgument (malformed meta, a slice that does not fit, moments not fully covered),
// naming the folder and tensor.
ShardedCheckpoint read_sharded_checkpoint(const std::string& dir, const ParameterSet<float>& params);

// Newest ckpt_dir/step-<N> holding a meta.json, or "" (none, or no such folder).
std::string latest_sharded_checkpoint(const std::string& ckpt_dir);

}  // namespace switchyard::trainer::dist
