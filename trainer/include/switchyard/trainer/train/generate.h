// Text generation from a trained model: plain decoding and MTP speculative decoding.
//
// The CPU model has no KV cache: every pass recomputes the whole sequence (at most
// max_position_embeddings tokens; plain decoding slides a window beyond that, speculative
// decoding requires the sequence to fit). Speculative decoding with the first MTP module:
//   verify pass: main model on seq + [draft]; its prediction after seq is the next token;
//                if it equals the draft, the prediction after the draft is one more token.
//   draft pass:  MTP module 1 at the last position whose next token is known, fed that
//                token's embedding, proposes the token after it (the next draft).
// Drafts only decide how many main-model predictions of one pass are used, so greedy
// speculative decoding yields exactly the tokens of plain greedy decoding, and sampling
// (temperature > 0) samples the main model's distribution. With a KV cache the draft pass
// costs one MTP module; here it is a full recompute, so `main_passes` (verify passes) is the
// cost a cached decoder pays, and wall-clock time is also reported.
//
// Not thread-safe (uses the model's forward state).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <random>
#include <vector>

#include "switchyard/trainer/model.h"
#include "switchyard/trainer/train/tokenizer.h"

namespace switchyard::trainer {

struct GenerateOptions {
  int64_t max_new_tokens = 100;
  double temperature = 0;  // 0: greedy (argmax, lowest index on ties)
  int64_t top_k = 0;       // > 0: sample among the k most likely tokens
  bool speculative = false;  // needs num_nextn_predict_layers >= 1
};

struct GenerateResult {
  std::vector<int64_t> tokens;  // the new tokens only
  int64_t main_passes = 0;      // passes whose main-model predictions were used
  int64_t draft_passes = 0;     // passes run only for the MTP draft
  int64_t drafted = 0, accepted = 0;
  double seconds = 0;
  double acceptance() const { return drafted > 0 ? double(accepted) / double(drafted) : 0; }
  double tokens_per_main_pass() const { return main_passes > 0 ? double(tokens.size()) / double(main_passes) : 0; }
};

// prompt: >= 1 token ids. Throws InvalidArgument for an empty prompt, a bad option, or
// speculative decoding without MTP module or beyond max_position_embeddings.
GenerateResult generate(Model<float>& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                        std::mt19937_64& rng);

// A model and its tokenizer from a checkpoint folder, or from the `latest` one of a
// checkpoint directory. Throws as CheckpointManager::load, and InvalidArgument when the
// tokenizer does not fit the model.
struct LoadedModel {
  std::unique_ptr<Model<float>> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string folder;
  int64_t step = 0;
};
LoadedModel load_checkpoint_model(const std::string& path);

}  // namespace switchyard::trainer
