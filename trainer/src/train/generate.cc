// Plain and MTP speculative decoding (see generate.h).
#include "switchyard/trainer/train/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "switchyard/common/error.h"
#include "switchyard/trainer/train/checkpoint.h"

namespace switchyard::trainer {

namespace {

// The token chosen from one row of logits [V].
int64_t pick(const float* logits, int64_t V, const GenerateOptions& o, std::mt19937_64& rng) {
  if (o.temperature <= 0) return std::max_element(logits, logits + V) - logits;
  std::vector<int64_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  int64_t k = o.top_k > 0 ? std::min(o.top_k, V) : V;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int64_t a, int64_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  std::vector<double> p(k);
  double mx = logits[idx[0]], sum = 0;
  for (int64_t i = 0; i < k; ++i) sum += p[i] = std::exp((logits[idx[i]] - mx) / o.temperature);
  double u = double(rng() >> 11) * 0x1.0p-53 * sum;
  for (int64_t i = 0; i < k; ++i) {
    if ((u -= p[i]) <= 0) return idx[i];
  }
  return idx[k - 1];
}

// Runs the model on main input `main` (T = main.size()) with `next` at position T (the
// MTP modules' input there) and padding after it.
void run(Model<float>& model, const std::vector<int64_t>& main, int64_t next) {
  const int64_t D = model.config().num_nextn_predict_layers;
  std::vector<int64_t> tokens(main);
  tokens.push_back(next);
  tokens.resize(main.size() + D + 1, 0);
  model.forward(tokens.data(), 1, static_cast<int64_t>(main.size()));
}

}  // namespace

GenerateResult generate(Model<float>& model, const std::vector<int64_t>& prompt, const GenerateOptions& o,
                        std::mt19937_64& rng) {
  SY_REQUIRE(!prompt.empty(), "generate: the prompt is empty");
  SY_REQUIRE(o.max_new_tokens >= 0, "generate: max_new_tokens " << o.max_new_tokens << " must be >= 0");
  const ModelConfig& c = model.config();
  const int64_t V = c.vocab_size, C = c.max_position_embeddings;
  const auto t0 = std::chrono::steady_clock::now();
  GenerateResult r;
  std::vector<int64_t> seq = prompt;
  auto row = [&](const std::vector<float>& logits, int64_t i) { return logits.data() + i * V; };
  auto done = [&] { return static_cast<int64_t>(r.tokens.size()) >= o.max_new_tokens; };
  auto emit = [&](int64_t t) {
    seq.push_back(t);
    r.tokens.push_back(t);
  };

  if (!o.speculative) {
    while (!done()) {
      std::vector<int64_t> ctx(seq.end() - std::min<int64_t>(C, seq.size()), seq.end());
      run(model, ctx, 0);
      ++r.main_passes;
      emit(pick(row(model.logits(), ctx.size() - 1), V, o, rng));
    }
  } else {
    SY_REQUIRE(c.num_nextn_predict_layers >= 1, "generate: speculative decoding needs an MTP module (--mtp-depth >= 1)");
    SY_REQUIRE(int64_t(prompt.size()) + o.max_new_tokens + 1 <= C,
               "generate: prompt (" << prompt.size() << ") + " << o.max_new_tokens
                                    << " new tokens + 1 exceed max_position_embeddings " << C
                                    << " (speculative decoding does not slide a window)");
    int64_t draft = -1;
    if (!done()) {  // first token, and the first draft from the same main input
      std::vector<int64_t> base = seq;
      run(model, base, 0);
      ++r.main_passes;
      emit(pick(row(model.logits(), base.size() - 1), V, o, rng));
      if (!done()) {
        run(model, base, seq.back());
        ++r.draft_passes;
        draft = std::max_element(row(model.mtp_logits(1), base.size() - 1),
                                 row(model.mtp_logits(1), base.size() - 1) + V) -
                row(model.mtp_logits(1), base.size() - 1);
      }
    }
    while (!done()) {
      std::vector<int64_t> verify = seq;
      verify.push_back(draft);
      const int64_t n = static_cast<int64_t>(seq.size());
      run(model, verify, 0);
      ++r.main_passes;
      ++r.drafted;
      int64_t a = pick(row(model.logits(), n - 1), V, o, rng);
      emit(a);
      std::vector<int64_t> base;  // main input whose last position's next token is seq.back()
      if (a == draft && !done()) {
        ++r.accepted;
        emit(pick(row(model.logits(), n), V, o, rng));
        base = verify;
      } else {
        base.assign(seq.begin(), seq.end() - 1);
      }
      if (done()) break;
      run(model, base, seq.back());
      ++r.draft_passes;
      const float* m = row(model.mtp_logits(1), base.size() - 1);
      draft = std::max_element(m, m + V) - m;
    }
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

LoadedModel load_checkpoint_model(const std::string& path) {
  namespace fs = std::filesystem;
  std::string folder = path;
  if (fs::exists(fs::path(path) / "latest")) folder = CheckpointManager(path, 1).latest();
  Checkpoint c = CheckpointManager::load(folder);
  LoadedModel m;
  m.folder = folder;
  m.step = c.step;
  ModelConfig config = model_config_from_json(c.config_json);
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(c.state_json);
  } catch (const nlohmann::json::exception& e) {
    SY_THROW(InvalidArgument, "checkpoint \"" << folder << "\": state.json is malformed: " << e.what());
  }
  std::string tok = state.value("tokenizer", std::string("bytes"));
  m.tokenizer = make_tokenizer(tok.rfind("bpe:", 0) == 0 ? tok.substr(4) : tok);
  SY_REQUIRE(m.tokenizer->vocab_size() == config.vocab_size,
             "checkpoint \"" << folder << "\": tokenizer " << tok << " has " << m.tokenizer->vocab_size()
                             << " tokens, the model " << config.vocab_size);
  m.model = std::make_unique<Model<float>>(config);
  m.model->load_weights(c.model);
  return m;
}

}  // namespace switchyard::trainer
