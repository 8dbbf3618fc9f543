// Tokenizers (bytes, byte-level BPE from a synthetic tokenizer.json) and the dataset:
// documents, split, packing, deterministic order, position restore, errors.
#include "switchyard/trainer/train/data.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "switchyard/common/error.h"
#include "switchyard/testing/temp_dir.h"
#include "switchyard/trainer/train/tokenizer.h"

namespace switchyard::trainer {
namespace {

namespace fs = std::filesystem;

struct TempDir : ::switchyard::testing::TempDir {
  TempDir() : ::switchyard::testing::TempDir("sy_data_test") {}
  fs::path path = ::switchyard::testing::TempDir::path();
};

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

// The GPT-2 byte -> character table, as UTF-8 strings (written from its definition).
std::string byte_char(int b) {
  int n = 0;
  int cp = -1;
  for (int x = 0; x < 256; ++x) {
    bool printable = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
    int c = printable ? x : 256 + n++;
    if (x == b) cp = c;
  }
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

std::string write_tokenizer_json(const fs::path& dir) {
  nlohmann::json vocab;
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  const std::string G = byte_char(' ');  // "Ġ"
  vocab[G + "t"] = 256;
  vocab["he"] = 257;
  vocab[G + "the"] = 258;
  nlohmann::json j = {{"version", "1.0"},
                      {"added_tokens", {{{"id", 259}, {"content", "<eos>"}, {"special", true}}}},
                      {"pre_tokenizer", {{"type", "ByteLevel"}}},
                      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {G + " t", "h e", G + "t he"}}}}};
  fs::path p = dir / "tokenizer.json";
  write(p, j.dump());
  return p.string();
}

TEST(TokenizerTest, BytesRoundTrip) {
  auto tok = make_byte_tokenizer();
  std::string text = "In the beginning\n\xC3\xA9";
  std::vector<int64_t> ids = tok->encode(text);
  ASSERT_EQ(ids.size(), text.size());
  EXPECT_EQ(ids[0], 'I');
  EXPECT_EQ(ids.back(), 0xA9);
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_EQ(tok->vocab_size(), 256);
  EXPECT_THROW(tok->decode({256}), InvalidArgument);
}

TEST(TokenizerTest, PretokenizesLikeGpt2) {
  std::vector<std::string> want = {"Hello", " world", "'s", " ", " 123", "!!", "\n"};
  EXPECT_EQ(pretokenize_bytelevel("Hello world's  123!!\n"), want);
}

TEST(TokenizerTest, ByteLevelBpeAppliesMergesByRank) {
  TempDir dir;
  auto tok = load_bpe_tokenizer(write_tokenizer_json(dir.path));
  EXPECT_EQ(tok->vocab_size(), 260);
  // " the" -> Ġ t h e -> Ġt h e -> Ġt he -> Ġthe; " cat" has no merges.
  std::vector<int64_t> want = {258, ' ', 'c', 'a', 't', 't', 257};
  EXPECT_EQ(tok->encode(" the catthe"), (std::vector<int64_t>{258, ' ', 'c', 'a', 't', 't', 257}));
  std::string text = "the theme\n\tof 12 \xE2\x82\xAC!";
  EXPECT_EQ(tok->decode(tok->encode(text)), text);
  EXPECT_EQ(tok->decode({258, 259}), " the<eos>");
}

TEST(TokenizerTest, BadTokenizerFilesGiveClearErrors) {
  TempDir dir;
  EXPECT_THROW(load_bpe_tokenizer((dir.path / "missing.json").string()), IoError);
  write(dir.path / "wp.json", R"({"model": {"type": "WordPiece", "vocab": {}}})");
  try {
    load_bpe_tokenizer((dir.path / "wp.json").string());
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("BPE"), std::string::npos) << e.what();
  }
  write(dir.path / "nobytes.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  EXPECT_THROW(load_bpe_tokenizer((dir.path / "nobytes.json").string()), InvalidArgument);
  write(dir.path / "bad.json", "{not json");
  EXPECT_THROW(load_bpe_tokenizer((dir.path / "bad.json").string()), InvalidArgument);
}

TEST(TextDatasetTest, ReadsFoldersInPathOrderSplittingParagraphs) {
  TempDir dir;
  write(dir.path / "b.txt", "second file\n");
  write(dir.path / "a.txt", "para one\nline two\n\n\npara two\n");
  write(dir.path / "sub" / "c.txt", "third\n");
  write(dir.path / ".hidden", "skip me\n");
  std::vector<std::string> docs = read_documents(dir.path.string());
  std::vector<std::string> want = {"para one\nline two\n\n", "para two\n\n", "second file\n\n", "third\n\n"};
  EXPECT_EQ(docs, want);
  try {
    read_documents((dir.path / "nope").string());
    FAIL() << "no error";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos);
  }
  write(dir.path / "empty" / "e.txt", "\n\n");
  EXPECT_THROW(read_documents((dir.path / "empty").string()), InvalidArgument);
}

// 60 documents; document i is 10 + i % 7 copies of token i.
std::vector<std::vector<int64_t>> numbered_documents() {
  std::vector<std::vector<int64_t>> docs;
  for (int64_t i = 0; i < 60; ++i) docs.emplace_back(10 + i % 7, i);
  return docs;
}

TEST(TextDatasetTest, SplitIsByDocumentAndDeterministic) {
  DataOptions o;
  o.window = 9;
  o.val_fraction = 0.2;
  o.seed = 11;
  TextDataset a(o, numbered_documents()), b(o, numbered_documents());
  EXPECT_EQ(a.train_tokens(), b.train_tokens());
  EXPECT_EQ(a.val_tokens(), b.val_tokens());
  std::map<int64_t, int> where;  // document -> 1 train, 2 val
  for (int64_t t : a.train_tokens()) where[t] |= 1;
  for (int64_t t : a.val_tokens()) where[t] |= 2;
  EXPECT_EQ(where.size(), 60u);
  int nval = 0;
  for (auto [doc, w] : where) {
    EXPECT_TRUE(w == 1 || w == 2) << "document " << doc << " is in both splits";
    nval += w == 2;
  }
  EXPECT_GT(nval, 3);
  EXPECT_LT(nval, 25);
  o.seed = 12;
  TextDataset c(o, numbered_documents());
  EXPECT_NE(a.val_tokens(), c.val_tokens());
}

TEST(TextDatasetTest, EpochVisitsEveryWindowOnceInASeededOrder) {
  DataOptions o;
  o.window = 9;
  o.val_fraction = 0.1;
  o.seed = 3;
  TextDataset a(o, numbered_documents()), b(o, numbered_documents());
  const int64_t n = a.num_train_windows(), W = 9;
  ASSERT_GT(n, 10);
  std::vector<int64_t> batch_a(n * W), batch_b(n * W);
  a.next_batch(n, batch_a.data());
  b.next_batch(n, batch_b.data());
  EXPECT_EQ(batch_a, batch_b);
  // The windows of the epoch are exactly the packed stream's windows, permuted.
  std::vector<std::vector<int64_t>> got, want;
  for (int64_t w = 0; w < n; ++w) {
    got.emplace_back(batch_a.begin() + w * W, batch_a.begin() + (w + 1) * W);
    want.emplace_back(a.train_tokens().begin() + w * W, a.train_tokens().begin() + (w + 1) * W);
  }
  EXPECT_NE(got, want) << "not shuffled";
  std::sort(got.begin(), got.end());
  std::sort(want.begin(), want.end());
  EXPECT_EQ(got, want);
  // The next epoch has another order.
  std::vector<int64_t> epoch2(n * W);
  a.next_batch(n, epoch2.data());
  EXPECT_NE(epoch2, batch_a);
  EXPECT_EQ(a.position().epoch, 1);
}

TEST(TextDatasetTest, RestoredPositionContinuesTheSameStream) {
  DataOptions o;
  o.window = 9;
  o.seed = 5;
  TextDataset a(o, numbered_documents());
  std::vector<int64_t> buf(4 * 9);
  for (int i = 0; i < 7; ++i) a.next_batch(4, buf.data());  // crosses an epoch boundary
  DataPosition pos = a.position();
  TextDataset b(o, numbered_documents());
  b.set_position(pos);
  std::vector<int64_t> next_a(4 * 9), next_b(4 * 9);
  for (int i = 0; i < 5; ++i) {
    a.next_batch(4, next_a.data());
    b.next_batch(4, next_b.data());
    EXPECT_EQ(next_a, next_b) << "batch " << i;
  }
  EXPECT_THROW(b.set_position({0, 100000}), InvalidArgument);
}

TEST(TextDatasetTest, TooLittleDataIsAClearError) {
  DataOptions o;
  o.window = 1000;
  try {
    TextDataset d(o, numbered_documents());
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than one window"), std::string::npos) << e.what();
  }
}

TEST(TextDatasetTest, TokenizesTextFiles) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 40; ++i) text += "verse " + std::to_string(i) + " of the book\n\n";
  write(dir.path / "book.txt", text);
  DataOptions o;
  o.path = (dir.path / "book.txt").string();
  o.window = 17;
  o.val_fraction = 0.1;
  auto tok = make_byte_tokenizer();
  TextDataset d(o, *tok);
  EXPECT_EQ(int64_t(d.train_tokens().size() + d.val_tokens().size()), int64_t(text.size()));
}

TEST(DefaultCorpusTest, BibleTextWithoutVerseNumbers) {
  if (!fs::exists("/usr/bin/bible")) GTEST_SKIP() << "bible-kjv is not installed";
  TempDir dir;
  std::string path = ensure_default_corpus((dir.path / "kjv.txt").string());
  std::ifstream in(path);
  std::string first;
  std::getline(in, first);
  EXPECT_EQ(first, "In the beginning God created the heaven and the earth.");
  std::string line;
  int64_t lines = 1;
  while (std::getline(in, line)) {
    ++lines;
    if (!line.empty()) {
      ASSERT_FALSE(line[0] >= '0' && line[0] <= '9') << line;
    }
  }
  EXPECT_GT(lines, 31000);  // 31102 verses plus chapter breaks
}

}  // namespace
}  // namespace switchyard::trainer
