// Byte and byte-level BPE tokenizers (see tokenizer.h).
#include "switchyard/trainer/train/tokenizer.h"

#include <nlohmann/json.hpp>

#include <array>
#include <climits>
#include <fstream>
#include <sstream>

#include "switchyard/common/error.h"

namespace switchyard::trainer {

namespace {

class ByteTokenizer : public Tokenizer {
 public:
  int64_t vocab_size() const override { return 256; }
  std::vector<int64_t> encode(std::string_view text) const override {
    std::vector<int64_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string s(ids.size(), '\0');
    for (size_t i = 0; i < ids.size(); ++i) {
      SY_REQUIRE(ids[i] >= 0 && ids[i] < 256, "byte tokenizer: token id " << ids[i] << " is outside [0, 256)");
      s[i] = static_cast<char>(ids[i]);
    }
    return s;
  }
  std::string name() const override { return "bytes"; }
};

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to 256, 257, ...
std::array<uint32_t, 256> byte_to_codepoint() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    map[b] = printable ? uint32_t(b) : next++;
  }
  return map;
}

bool is_letter(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80; }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool is_other(unsigned char c) { return !is_letter(c) && !is_digit(c) && !is_space(c); }

class BpeTokenizer : public Tokenizer {
 public:
  explicit BpeTokenizer(const std::string& path) : path_(path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) SY_THROW(IoError, "tokenizer: cannot read \"" << path << "\"");
    std::stringstream text;
    text << in.rdbuf();
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::exception& e) {
      SY_THROW(InvalidArgument, "tokenizer \"" << path << "\": malformed JSON: " << e.what());
    }
    SY_REQUIRE(j.contains("model") && j["model"].is_object(), "tokenizer \"" << path << "\": no \"model\" object");
    const auto& model = j["model"];
    SY_REQUIRE(model.value("type", std::string()) == "BPE",
               "tokenizer \"" << path << "\": model.type is not \"BPE\" (only byte-level BPE is supported)");
    SY_REQUIRE(model.contains("vocab") && model["vocab"].is_object(),
               "tokenizer \"" << path << "\": model.vocab is missing");
    for (const auto& [token, id] : model["vocab"].items()) {
      SY_REQUIRE(id.is_number_integer() && id.get<int64_t>() >= 0,
                 "tokenizer \"" << path << "\": model.vocab[\"" << token << "\"] is not a non-negative integer");
      add_token(token, id.get<int64_t>());
    }
    if (model.contains("merges")) {
      int64_t rank = 0;
      for (const auto& m : model["merges"]) {
        std::string a, b;
        if (m.is_string()) {
          std::string s = m.get<std::string>();
          size_t sp = s.find(' ');
          SY_REQUIRE(sp != std::string::npos, "tokenizer \"" << path << "\": merge \"" << s << "\" is not \"A B\"");
          a = s.substr(0, sp);
          b = s.substr(sp + 1);
        } else {
          SY_REQUIRE(m.is_array() && m.size() == 2, "tokenizer \"" << path << "\": merge " << rank << " is malformed");
          a = m[0].get<std::string>();
          b = m[1].get<std::string>();
        }
        merges_.emplace(a + ' ' + b, rank++);
      }
    }
    if (j.contains("added_tokens") && j["added_tokens"].is_array())
      for (const auto& t : j["added_tokens"]) added_[t.at("id").get<int64_t>()] = t.at("content").get<std::string>();
    for (const auto& [id, content] : added_) vocab_size_ = std::max(vocab_size_, id + 1);
    auto map = byte_to_codepoint();
    for (int b = 0; b < 256; ++b) {
      std::string s;
      append_utf8(s, map[b]);
      byte_char_[b] = s;
      char_byte_[map[b]] = static_cast<unsigned char>(b);
      SY_REQUIRE(vocab_.count(s), "tokenizer \"" << path << "\": byte " << b << " (\"" << s
                                                 << "\") is not in the vocabulary; not a byte-level BPE");
    }
  }

  int64_t vocab_size() const override { return vocab_size_; }
  std::string name() const override { return "bpe:" + path_; }

  std::vector<int64_t> encode(std::string_view text) const override {
    std::vector<int64_t> ids;
    for (const std::string& piece : pretokenize_bytelevel(text)) {
      std::vector<std::string> sym;
      for (unsigned char c : piece) sym.push_back(byte_char_[c]);
      while (sym.size() > 1) {
        int64_t best = LLONG_MAX;
        size_t at = 0;
        for (size_t i = 0; i + 1 < sym.size(); ++i) {
          auto it = merges_.find(sym[i] + ' ' + sym[i + 1]);
          if (it != merges_.end() && it->second < best) {
            best = it->second;
            at = i;
          }
        }
        if (best == LLONG_MAX) break;
        sym[at] += sym[at + 1];
        sym.erase(sym.begin() + at + 1);
      }
      for (const std::string& s : sym) {
        auto it = vocab_.find(s);
        if (it != vocab_.end()) {
          ids.push_back(it->second);
        } else {  // a merge whose result is not in the vocabulary: fall back to its bytes
          std::vector<int64_t> sub = encode_chars(s);
          ids.insert(ids.end(), sub.begin(), sub.end());
        }
      }
    }
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string out;
    for (int64_t id : ids) {
      SY_REQUIRE(id >= 0 && id < vocab_size_, "tokenizer: token id " << id << " is outside [0, " << vocab_size_ << ")");
      auto added = added_.find(id);
      if (added != added_.end()) {
        out += added->second;
        continue;
      }
      auto it = id_token_.find(id);
      if (it == id_token_.end()) continue;  // an unused id (padding of the vocabulary)
      const std::string& s = it->second;
      for (size_t i = 0; i < s.size();) {  // UTF-8 code points -> bytes
        unsigned char c = s[i];
        uint32_t cp;
        int len = c < 0x80 ? 1 : c < 0xE0 ? 2 : 3;
        cp = len == 1 ? c : len == 2 ? (c & 0x1F) : (c & 0x0F);
        for (int k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
        i += len;
        auto b = char_byte_.find(cp);
        if (b != char_byte_.end()) out += static_cast<char>(b->second);
      }
    }
    return out;
  }

 private:
  void add_token(const std::string& token, int64_t id) {
    vocab_[token] = id;
    id_token_[id] = token;
    vocab_size_ = std::max(vocab_size_, id + 1);
  }
  // The ids of the single byte characters of a mapped string.
  std::vector<int64_t> encode_chars(const std::string& s) const {
    std::vector<int64_t> ids;
    for (size_t i = 0; i < s.size();) {
      unsigned char c = s[i];
      size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : 3;
      ids.push_back(vocab_.at(s.substr(i, len)));
      i += len;
    }
    return ids;
  }

  std::string path_;
  std::map<std::string, int64_t> vocab_;
  std::map<int64_t, std::string> id_token_;
  std::map<std::string, int64_t> merges_;  // "A B" -> rank
  std::map<int64_t, std::string> added_;
  std::array<std::string, 256> byte_char_;
  std::map<uint32_t, unsigned char> char_byte_;
  int64_t vocab_size_ = 0;
};

}  // namespace

std::vector<std::string> pretokenize_bytelevel(std::string_view text) {
  std::vector<std::string> out;
  const size_t n = text.size();
  size_t i = 0;
  auto run = [&](size_t j, bool (*pred)(unsigned char)) {
    while (j < n && pred(static_cast<unsigned char>(text[j]))) ++j;
    return j;
  };
  while (i < n) {
    unsigned char c = text[i];
    size_t j = i;
    if (c == '\'' && i + 1 < n) {  // contractions 's 't 'm 'd 're 've 'll
      char a = text[i + 1], b = i + 2 < n ? text[i + 2] : '\0';
      if (a == 's' || a == 't' || a == 'm' || a == 'd') j = i + 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) j = i + 3;
    }
    if (j == i) {
      size_t k = (c == ' ' && i + 1 < n && !is_space(static_cast<unsigned char>(text[i + 1]))) ? i + 1 : i;
      unsigned char d = text[k];
      if (is_letter(d)) j = run(k, is_letter);
      else if (is_digit(d)) j = run(k, is_digit);
      else if (is_other(d)) j = run(k, is_other);
      else {  // whitespace: a run, leaving its last space to the next word when one follows
        j = run(i, is_space);
        if (j < n && j - i > 1) --j;
      }
    }
    out.emplace_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::string& path) { return std::make_unique<BpeTokenizer>(path); }

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec.empty() || spec == "bytes") return make_byte_tokenizer();
  return load_bpe_tokenizer(spec);
}

}  // namespace switchyard::trainer
