// Training checkpoints: one folder per step with
//   model.safetensors      weights by Hugging Face DeepSeek-V3 name (F32) and the FP32
//                          e_score_correction_bias buffers,
//   optimizer.safetensors  AdamW moments (BF16) and step,
//   config.json            the model configuration (HF config.json fields),
//   state.json             step, data position, RNG state, training options,
//   manifest.json          format version, size and FNV-1a 64 checksum of every file.
// Saving is atomic: files go to <dir>/.tmp-step-N-<pid>/, each is fsync'ed, the folder is
// renamed to <dir>/step-N, then <dir>/latest (the folder name) is replaced through a
// temporary file and rename; the directory is fsync'ed after each rename. A crash at any
// point leaves the previous `latest` loadable. After a save only the last K step folders
// are kept. Loading checks the manifest and names the corrupt or missing file.
//
// Not thread-safe; one writer per directory.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "switchyard/trainer/safetensors.h"

namespace switchyard::trainer {

struct Checkpoint {
  int64_t step = 0;
  TensorMap model;
  TensorMap optimizer;
  std::string config_json;
  std::string state_json;  // trainer-defined JSON object
};

class CheckpointManager {
 public:
  // keep_last >= 1. The directory is created on the first save.
  CheckpointManager(std::string dir, int64_t keep_last);

  // Writes the checkpoint as <dir>/step-<step> (replacing one of the same step) and points
  // `latest` at it. Returns the folder path. Throws IoError on a write failure.
  std::string save(const Checkpoint& checkpoint);

  // Folder named by <dir>/latest, or "" when there is none.
  std::string latest() const;
  // Step folders present, oldest first.
  std::vector<std::string> list() const;

  // Throws IoError for a missing folder or file and InvalidArgument for a corrupt file or
  // an unknown format, naming the file.
  static Checkpoint load(const std::string& folder);

  // Called with a stage name ("model", "optimizer", "files", "renamed", "latest") during
  // save; tests use it to kill the process mid-save.
  void set_stage_hook(std::function<void(const std::string&)> hook) { hook_ = std::move(hook); }

 private:
  std::string dir_;
  int64_t keep_last_;
  std::function<void(const std::string&)> hook_;
};

// Reads a Hugging Face checkpoint folder (model.safetensors.index.json and its shards, or a
// single model.safetensors) into F32 tensors by name. F8_E4M3 weights are dequantized with
// their "<name>_scale_inv" FP32 [ceil(out/128), ceil(in/128)] block scales (w = q * s), which
// are then dropped; BF16/F16/F32/F64 become F32, integer tensors stay as they are.
// Throws IoError / InvalidArgument naming the shard and tensor at fault.
TensorMap import_hf_checkpoint(const std::string& folder);

}  // namespace switchyard::trainer
