// Tokenizers: raw bytes (vocabulary 256, the default) and Hugging Face tokenizer.json files
// with a byte-level BPE model (GPT-2 / DeepSeek-V3 style).
//
// Byte-level BPE here: text is pre-split with an ASCII version of the GPT-2 pattern
// (contractions, " ?letters", " ?digits", " ?punctuation", whitespace runs; bytes >= 0x80
// count as letters), each piece's bytes are mapped to the GPT-2 byte-to-unicode characters,
// and merges are applied lowest rank first. Normalizers and special-token splitting of the
// input are not applied; added tokens are decoded but never produced by encode.
//
// Tokenizers are immutable after construction; const methods are thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace switchyard::trainer {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual int64_t vocab_size() const = 0;
  virtual std::vector<int64_t> encode(std::string_view text) const = 0;
  // Throws InvalidArgument on an id outside [0, vocab_size).
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  virtual std::string name() const = 0;  // "bytes" or "bpe:<path>"
};

std::unique_ptr<Tokenizer> make_byte_tokenizer();
// Throws IoError if the file cannot be read, InvalidArgument if it is not a byte-level BPE
// tokenizer.json (naming the field).
std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::string& path);
// "bytes" or a tokenizer.json path.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);

// GPT-2 pre-tokenization (ASCII version described above); exposed for tests.
std::vector<std::string> pretokenize_bytelevel(std::string_view text);

}  // namespace switchyard::trainer
