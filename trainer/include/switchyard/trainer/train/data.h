// Training data: text documents from a file or a folder, tokenized and packed into one
// stream per split, cut into fixed windows of T + D + 1 tokens (trainer/configs/README.md),
// served in a deterministic order from a seed.
//
// Documents: every file of a folder (recursively, sorted by path, hidden files skipped)
// and, inside a file, the paragraphs separated by blank lines. Packing concatenates the
// documents (each keeps a trailing "\n\n") without cross-document masks, as V3 does.
// Split: a document goes to validation when a hash of (seed, document index) falls below
// val_fraction; with a single document, or when the held-out documents hold less than one
// window, the tail of the stream (val_fraction of it, at least one window) is held out.
// Order: epoch e visits the training windows in a Fisher-Yates permutation drawn from
// splitmix64(seed, e); the position (epoch, index) is all the loader's state.
//
// Not thread-safe; the dataset owns its token streams.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/trainer/train/tokenizer.h"

namespace switchyard::trainer {

// Text documents of a file or folder. Throws IoError naming a path that does not exist or
// cannot be read, InvalidArgument when there is no text.
std::vector<std::string> read_documents(const std::string& path);

// The default corpus (King James Bible from Debian's bible-kjv-text, verse numbers
// stripped, one document per chapter), written once to cache_path and reused. Throws
// IoError when the `bible` program is missing (apt install bible-kjv).
std::string ensure_default_corpus(const std::string& cache_path);

struct DataOptions {
  std::string path;           // text file or folder
  double val_fraction = 0.05;
  uint64_t seed = 1;
  int64_t window = 0;         // tokens per sample: T + D + 1
};

struct DataPosition {
  int64_t epoch = 0;
  int64_t index = 0;  // next window of the epoch's permutation
};

class TextDataset {
 public:
  // Reads, tokenizes, splits and packs. Throws InvalidArgument when the training split
  // holds less than one window (naming the token counts).
  TextDataset(const DataOptions& options, const Tokenizer& tokenizer);
  // From already tokenized documents (tests).
  TextDataset(const DataOptions& options, const std::vector<std::vector<int64_t>>& documents);

  int64_t window() const { return options_.window; }
  int64_t num_train_windows() const { return static_cast<int64_t>(train_.size()) / options_.window; }
  int64_t num_val_windows() const { return static_cast<int64_t>(val_.size()) / options_.window; }
  const std::vector<int64_t>& train_tokens() const { return train_; }
  const std::vector<int64_t>& val_tokens() const { return val_; }

  // tokens: [batch, window] int64, the next training windows; advances the position.
  void next_batch(int64_t batch, int64_t* tokens);
  // tokens: [batch, window], validation windows first*batch .. (wrapping); no state.
  void val_batch(int64_t first, int64_t batch, int64_t* tokens) const;

  DataPosition position() const { return position_; }
  // Throws InvalidArgument when the position is outside the dataset.
  void set_position(DataPosition position);

 private:
  void build(const std::vector<std::vector<int64_t>>& documents);
  void make_permutation();

  DataOptions options_;
  std::vector<int64_t> train_, val_;
  std::vector<int64_t> order_;  // permutation of the current epoch
  DataPosition position_;
};

}  // namespace switchyard::trainer
