// Documents, the default corpus, and the packed/split/shuffled dataset (see data.h).
#include "switchyard/trainer/train/data.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "switchyard/common/error.h"

namespace switchyard::trainer {

namespace fs = std::filesystem;

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) SY_THROW(IoError, "data: cannot read \"" << path.string() << "\"");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Paragraphs separated by blank lines; each keeps a trailing "\n\n".
void split_paragraphs(const std::string& text, std::vector<std::string>& docs) {
  std::string cur;
  std::istringstream in(text);
  std::string line;
  auto flush = [&] {
    if (!cur.empty()) docs.push_back(cur + "\n");
    cur.clear();
  };
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) {
      flush();
    } else {
      cur += line + "\n";
    }
  }
  flush();
}

}  // namespace

std::vector<std::string> read_documents(const std::string& path) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) SY_THROW(IoError, "data: \"" << path << "\" does not exist");
  std::vector<fs::path> files;
  if (fs::is_directory(st)) {
    for (const auto& e : fs::recursive_directory_iterator(path)) {
      if (!e.is_regular_file()) continue;
      bool hidden = false;
      for (const auto& part : fs::relative(e.path(), path))
        if (part.string().size() > 0 && part.string()[0] == '.') hidden = true;
      if (!hidden) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  std::vector<std::string> docs;
  for (const auto& f : files) split_paragraphs(read_file(f), docs);
  SY_REQUIRE(!docs.empty(), "data: \"" << path << "\" holds no text");
  return docs;
}

std::string ensure_default_corpus(const std::string& cache_path) {
  if (fs::exists(cache_path) && fs::file_size(cache_path) > 0) return cache_path;
  FILE* p = popen("bible -l0 gen1:1-rev22:21 2>/dev/null", "r");
  if (!p) SY_THROW(IoError, "data: cannot run `bible` for the default corpus (apt install bible-kjv)");
  std::string raw;
  char buf[65536];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, p)) > 0) raw.append(buf, got);
  int rc = pclose(p);
  SY_REQUIRE(rc == 0 && raw.size() > 1000000,
             "data: `bible -l0 gen1:1-rev22:21` failed (exit " << rc << ", " << raw.size()
                                                                << " bytes); install bible-kjv and bible-kjv-text");
  // "Book N" headers start a chapter (a blank line); "  N text" verses lose their numbers.
  std::string out;
  std::istringstream in(raw);
  std::string line;
  while (std::getline(in, line)) {
    size_t i = line.find_first_not_of(' ');
    if (i == std::string::npos) continue;
    if (i == 0) {  // chapter header
      if (!out.empty()) out += "\n";
      continue;
    }
    size_t j = i;
    while (j < line.size() && line[j] >= '0' && line[j] <= '9') ++j;
    if (j < line.size() && line[j] == ' ') ++j;
    out += line.substr(j) + "\n";
  }
  fs::path target(cache_path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  // Several ranks may build the cache at once: each writes its own file, and the atomic
  // rename makes whichever lands last the (identical) cache.
  std::string tmp = cache_path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream o(tmp, std::ios::binary);
    o << out;
    if (!o) SY_THROW(IoError, "data: cannot write \"" << tmp << "\"");
  }
  fs::rename(tmp, target);
  return cache_path;
}

TextDataset::TextDataset(const DataOptions& options, const Tokenizer& tokenizer) : options_(options) {
  std::vector<std::string> docs = read_documents(options.path);
  std::vector<std::vector<int64_t>> tokens;
  tokens.reserve(docs.size());
  for (const auto& d : docs) tokens.push_back(tokenizer.encode(d));
  build(tokens);
}

TextDataset::TextDataset(const DataOptions& options, const std::vector<std::vector<int64_t>>& documents)
    : options_(options) {
  build(documents);
}

void TextDataset::build(const std::vector<std::vector<int64_t>>& documents) {
  SY_REQUIRE(options_.window >= 2, "data: window " << options_.window << " must be at least 2 tokens");
  SY_REQUIRE(options_.val_fraction >= 0 && options_.val_fraction < 1,
             "data: val_fraction " << options_.val_fraction << " must be in [0, 1)");
  if (documents.size() == 1) {
    const auto& d = documents[0];
    size_t nval = static_cast<size_t>(double(d.size()) * options_.val_fraction);
    train_.assign(d.begin(), d.end() - nval);
    val_.assign(d.end() - nval, d.end());
  } else {
    for (size_t i = 0; i < documents.size(); ++i) {
      uint64_t s = options_.seed * 0x100000001B3ull + i;
      double u = double(splitmix64(s) >> 11) * 0x1.0p-53;
      auto& dst = u < options_.val_fraction ? val_ : train_;
      dst.insert(dst.end(), documents[i].begin(), documents[i].end());
    }
  }
  // Too few held-out documents for one window: hold out the tail of the training stream.
  if (options_.val_fraction > 0 && static_cast<int64_t>(val_.size()) < options_.window) {
    size_t total = train_.size() + val_.size();
    size_t n = std::max<size_t>(options_.window, static_cast<size_t>(double(total) * options_.val_fraction));
    n = std::min(n, train_.size());
    val_.insert(val_.begin(), train_.end() - n, train_.end());
    train_.resize(train_.size() - n);
  }
  SY_REQUIRE(num_train_windows() >= 1, "data: the training split has " << train_.size()
                                                                       << " tokens, fewer than one window of "
                                                                       << options_.window << " (T + D + 1)");
  make_permutation();
}

void TextDataset::make_permutation() {
  int64_t n = num_train_windows();
  order_.resize(n);
  for (int64_t i = 0; i < n; ++i) order_[i] = i;
  uint64_t s = options_.seed ^ (0xD1B54A32D192ED03ull * uint64_t(position_.epoch + 1));
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(splitmix64(s) % uint64_t(i + 1));
    std::swap(order_[i], order_[j]);
  }
}

void TextDataset::next_batch(int64_t batch, int64_t* tokens) {
  const int64_t W = options_.window;
  for (int64_t b = 0; b < batch; ++b) {
    if (position_.index >= num_train_windows()) {
      ++position_.epoch;
      position_.index = 0;
      make_permutation();
    }
    int64_t w = order_[position_.index++];
    std::copy_n(train_.begin() + w * W, W, tokens + b * W);
  }
}

void TextDataset::val_batch(int64_t first, int64_t batch, int64_t* tokens) const {
  const int64_t W = options_.window;
  const int64_t n = num_val_windows();
  SY_REQUIRE(n > 0, "data: the validation split has " << val_.size() << " tokens, fewer than one window of " << W);
  for (int64_t b = 0; b < batch; ++b) {
    int64_t w = (first * batch + b) % n;
    std::copy_n(val_.begin() + w * W, W, tokens + b * W);
  }
}

void TextDataset::set_position(DataPosition position) {
  SY_REQUIRE(position.epoch >= 0 && position.index >= 0 && position.index <= num_train_windows(),
             "data: position (epoch " << position.epoch << ", index " << position.index
                                      << ") is outside the dataset of " << num_train_windows() << " windows");
  bool new_epoch = position.epoch != position_.epoch;
  position_ = position;
  if (new_epoch) make_permutation();
}

}  // namespace switchyard::trainer
