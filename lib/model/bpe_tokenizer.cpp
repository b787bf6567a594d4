// Byte-level BPE from a Hugging Face tokenizer.json (GPT-2, Llama-3, Qwen2).
//
// Encoding follows the `tokenizers` library step by step:
//   1. added tokens that occur literally in the text are cut out first
//      (leftmost, then longest match) and map straight to their ids;
//   2. each remaining segment goes through the pre-tokenizer steps (a Split
//      regex and/or ByteLevel, whose regex is GPT-2's) into words;
//   3. each word's bytes become the GPT-2 "byte-to-unicode" symbols, which
//      are merged pairwise, lowest merge rank first.
// Decoding maps every token back through the byte-level table to raw bytes.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "model/tokenizer.h"

namespace spindlekv {

// ---------------------------------------------------------------------------
// Pre-tokenizer regexes, hand-written because std::regex lacks \p{L}/\p{N}.
// Each function returns the length of the match starting at `i` and mirrors
// the regex alternatives in order (the regex engines take the first
// alternative that matches, with backtracking inside it).
namespace detail {
namespace {

// Every byte >= 0x80 counts as a letter: the bytes of one non-ASCII code point
// then stay together, which is right for the letters of all scripts and is
// the documented approximation for non-ASCII digits, punctuation and spaces.
bool is_letter(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
// \s of the regex engines, restricted to ASCII: \t \n \v \f \r and space.
bool is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
bool is_newline(unsigned char c) { return c == '\r' || c == '\n'; }
// [^\s\p{L}\p{N}]
bool is_other(unsigned char c) { return !is_space(c) && !is_letter(c) && !is_digit(c); }

unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c; }

// 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive.
size_t match_contraction(const std::string& t, size_t i, bool ignore_case) {
  if (t[i] != '\'') return 0;
  static const char* const kSuffixes[] = {"s", "t", "re", "ve", "m", "ll", "d"};
  for (const char* suffix : kSuffixes) {
    size_t k = 0;
    for (; suffix[k] != '\0'; ++k) {
      if (i + 1 + k >= t.size()) break;
      const unsigned char c = t[i + 1 + k];
      if ((ignore_case ? lower(c) : c) != static_cast<unsigned char>(suffix[k])) break;
    }
    if (suffix[k] == '\0') return 1 + k;
  }
  return 0;
}

// The whitespace tail shared by both patterns: \s+(?!\S)|\s+ . `run_end` is
// the end of the whitespace run starting at i.
size_t match_trailing_space(const std::string& t, size_t i, size_t run_end) {
  const size_t run = run_end - i;
  // \s+(?!\S): at the end of the text the whole run; before a non-space the
  // run minus its last character, which then joins the next word.
  if (run_end == t.size()) return run;
  if (run >= 2) return run - 1;
  return run;  // \s+ : a lone space before a non-space that nothing else took
}

size_t match_llama3(const std::string& t, size_t i, size_t max_digits) {
  const size_t n = t.size();
  if (size_t len = match_contraction(t, i, /*ignore_case=*/true)) return len;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  size_t j = i;
  if (!is_letter(t[j]) && !is_digit(t[j]) && !is_newline(t[j])) ++j;
  if (j < n && is_letter(t[j])) {
    while (j < n && is_letter(t[j])) ++j;
    return j - i;
  }
  // \p{N}{1,max_digits}
  if (is_digit(t[i])) {
    j = i;
    while (j < n && j - i < max_digits && is_digit(t[j])) ++j;
    return j - i;
  }
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  j = (t[i] == ' ') ? i + 1 : i;
  if (j < n && is_other(t[j])) {
    while (j < n && is_other(t[j])) ++j;
    while (j < n && is_newline(t[j])) ++j;
    return j - i;
  }
  // Only whitespace is left at this point.
  size_t run_end = i;
  while (run_end < n && is_space(t[run_end])) ++run_end;
  // \s*[\r\n]+ : backtracking ends the match right after the run's last newline.
  for (size_t k = run_end; k > i; --k) {
    if (is_newline(t[k - 1])) return k - i;
  }
  return match_trailing_space(t, i, run_end);
}

size_t match_gpt2(const std::string& t, size_t i) {
  const size_t n = t.size();
  if (size_t len = match_contraction(t, i, /*ignore_case=*/false)) return len;
  // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: the optional space belongs to
  // whichever class follows it.
  const size_t start = (t[i] == ' ' && i + 1 < n) ? i + 1 : i;
  for (bool (*in_class)(unsigned char) : {is_letter, is_digit, is_other}) {
    if (in_class(t[start])) {
      size_t j = start;
      while (j < n && in_class(t[j])) ++j;
      return j - i;
    }
  }
  size_t run_end = i;
  while (run_end < n && is_space(t[run_end])) ++run_end;
  return match_trailing_space(t, i, run_end);
}

}  // namespace

std::vector<std::string> split_pretokens(const std::string& text, PretokenPattern pattern) {
  std::vector<std::string> pieces;
  for (size_t i = 0; i < text.size();) {
    const size_t len = pattern == PretokenPattern::kGpt2
                           ? match_gpt2(text, i)
                           : match_llama3(text, i, pattern == PretokenPattern::kLlama3 ? 3 : 1);
    SKV_ASSERT(len > 0, "pre-tokenizer made no progress at byte ", i);
    pieces.push_back(text.substr(i, len));
    i += len;
  }
  return pieces;
}

}  // namespace detail

namespace {

using detail::PretokenPattern;
using nlohmann::json;

// The Split regexes we recognise, spelled exactly as in tokenizer.json.
constexpr const char* kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// GPT-2's reversible byte -> printable code point table, so that every byte
// sequence has a spelling without spaces or control characters.
struct ByteLevelTable {
  std::array<std::string, 256> byte_to_utf8;
  std::unordered_map<uint32_t, unsigned char> code_point_to_byte;
};

const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable table = [] {
    ByteLevelTable t;
    uint32_t next_unprintable = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const uint32_t cp = printable ? b : next_unprintable++;
      std::string utf8;  // every cp here is < 0x800: one or two UTF-8 bytes
      if (cp < 0x80) {
        utf8.push_back(static_cast<char>(cp));
      } else {
        utf8.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        utf8.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
      t.byte_to_utf8[b] = utf8;
      t.code_point_to_byte[cp] = static_cast<unsigned char>(b);
    }
    return t;
  }();
  return table;
}

// Raw bytes of a vocabulary token spelled in byte-level code points. Like the
// `tokenizers` ByteLevel decoder, a token with any character outside the
// table (e.g. an added "<|x|>" with non-ASCII text) decodes to its own UTF-8.
std::string byte_level_to_bytes(const std::string& token) {
  const auto& table = byte_level_table().code_point_to_byte;
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    const unsigned char c = token[i];
    uint32_t cp = 0xFFFFFFFF;
    size_t len = 1;
    if (c < 0x80) {
      cp = c;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < token.size()) {
      cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(token[i + 1]) & 0x3Fu);
      len = 2;
    }
    const auto it = table.find(cp);
    if (it == table.end()) return token;
    bytes.push_back(static_cast<char>(it->second));
    i += len;
  }
  return bytes;
}

// --- JSON access that names the file and the key path in its errors. ------

// parent[key], which must exist and be of type `want`; `parent_key` is the
// dotted path of `parent` ("" for the root), for the message.
const json& member_of(const json& parent, const std::string& parent_key, const std::string& key,
                      json::value_t want, const std::string& path) {
  const std::string full = parent_key.empty() ? key : parent_key + "." + key;
  if (!parent.is_object()) {
    SKV_THROW(kInvalidInput, path, ": \"", parent_key.empty() ? "<root>" : parent_key,
              "\" must be an object, got ", parent.type_name());
  }
  const auto it = parent.find(key);
  if (it == parent.end()) SKV_THROW(kInvalidInput, path, ": missing key \"", full, "\"");
  // Integers come as number_integer or number_unsigned: compare by kind.
  if (want == json::value_t::number_integer ? !it->is_number_integer() : it->type() != want) {
    SKV_THROW(kInvalidInput, path, ": key \"", full, "\" must be ", json(want).type_name(),
              ", got ", it->type_name(), " ", it->dump().substr(0, 80));
  }
  return *it;
}

// Type of a pre-tokenizer/normalizer/decoder node ("" if the node is null).
std::string node_type(const json& node, const std::string& key, const std::string& path) {
  if (node.is_null()) return "";
  return member_of(node, key, "type", json::value_t::string, path).get<std::string>();
}

// One step of the pre-tokenizer pipeline.
struct PreStep {
  bool byte_level = false;                           // ByteLevel step, else a Split
  bool add_prefix_space = false;                     // ByteLevel: prepend " " to each piece
  bool use_regex = true;                             // ByteLevel: split with the GPT-2 regex
  PretokenPattern pattern = PretokenPattern::kGpt2;  // Split: its regex; ByteLevel: GPT-2
};

struct Merge {
  int32_t rank;
  int32_t id;  // id of the merged token
};

uint64_t pair_key(int64_t left, int64_t right) {
  return (static_cast<uint64_t>(left) << 32) | static_cast<uint64_t>(right);
}

class BpeTokenizer : public Tokenizer {
 public:
  BpeTokenizer(const json& root, const std::string& path) : path_(path) {
    const json& model = member_of(root, "", "model", json::value_t::object, path);
    const std::string type =
        member_of(model, "model", "type", json::value_t::string, path).get<std::string>();
    if (type != "BPE") {
      SKV_THROW(kUnsupported, path, ": model.type \"", type, "\" is not supported (only BPE)");
    }
    if (!detail::is_byte_level_bpe(root)) {
      SKV_THROW(kUnsupported, path,
                ": BPE without a ByteLevel pre_tokenizer or decoder is not supported");
    }
    // Real vocabularies number their tokens densely; a far larger id would
    // make the id table huge (the fuzzer found 10^9 -> a 33 GB allocation).
    const auto vocab_it = model.find("vocab");
    const auto added_it = root.find("added_tokens");
    const size_t entries = (vocab_it != model.end() ? vocab_it->size() : 0) +
                           (added_it != root.end() ? added_it->size() : 0);
    id_limit_ = static_cast<int64_t>(2 * entries + 1024);
    parse_vocab(model);
    parse_added_tokens(root);
    parse_merges(model);
    parse_normalizer(root);
    parse_pre_tokenizer(root);
  }

  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int64_t> ids;
    size_t segment_start = 0;
    for (size_t i = 0; i < text.size();) {
      const auto [added_id, added_len] = match_added(text, i);
      if (added_len == 0) {
        ++i;
        continue;
      }
      encode_segment(text.substr(segment_start, i - segment_start), &ids);
      ids.push_back(added_id);
      i += added_len;
      segment_start = i;
    }
    encode_segment(text.substr(segment_start), &ids);
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string text;
    for (int64_t id : ids) {
      if (id < 0 || id >= vocab_size() || id_kind_[id] == kHole) {
        SKV_THROW(kInvalidInput, path_, ": token id ", id, " is not in the vocabulary (size ",
                  vocab_size(), ")");
      }
      if (id_kind_[id] != kSpecial) text += id_bytes_[id];
    }
    return text;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(id_bytes_.size()); }
  std::string name() const override { return "bpe"; }

  std::optional<int64_t> token_to_id(const std::string& token) const override {
    if (auto it = added_.find(token); it != added_.end()) return it->second;
    if (auto it = vocab_.find(token); it != vocab_.end()) return it->second;
    return std::nullopt;
  }

 private:
  enum IdKind : uint8_t { kHole, kNormal, kSpecial };

  // Records id -> decoded bytes, growing the tables to cover `id`.
  void set_id(int64_t id, std::string bytes, IdKind kind, const std::string& key) {
    if (id < 0 || id >= id_limit_) {
      SKV_THROW(kInvalidInput, path_, ": key \"", key, "\" has id ", id, " outside [0, ", id_limit_,
                ") (ids must be about as dense as the vocabulary's ", (id_limit_ - 1024) / 2,
                " entries)");
    }
    if (id >= vocab_size()) {
      id_bytes_.resize(id + 1);
      id_kind_.resize(id + 1, kHole);
    }
    id_bytes_[id] = std::move(bytes);
    id_kind_[id] = kind;
  }

  void parse_vocab(const json& model) {
    const json& vocab = member_of(model, "model", "vocab", json::value_t::object, path_);
    for (const auto& [token, id] : vocab.items()) {
      if (!id.is_number_integer()) {
        SKV_THROW(kInvalidInput, path_, ": key \"model.vocab.", token,
                  "\" must be an integer id, got ", id.dump().substr(0, 80));
      }
      set_id(id.get<int64_t>(), byte_level_to_bytes(token), kNormal, "model.vocab." + token);
      vocab_[token] = id.get<int64_t>();
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      const auto it = model.find(key);
      if (it != model.end() && !it->is_null() && *it != "") {
        SKV_THROW(kUnsupported, path_, ": model.", key, " = ", it->dump(),
                  " is not supported with byte-level BPE");
      }
    }
    if (const auto it = model.find("ignore_merges"); it != model.end() && it->is_boolean()) {
      ignore_merges_ = it->get<bool>();
    }
    // Every byte needs a starting symbol. `tokenizers` silently drops a byte
    // without one; we refuse such a vocabulary instead of losing text.
    const auto& table = byte_level_table();
    for (int b = 0; b < 256; ++b) {
      const auto it = vocab_.find(table.byte_to_utf8[b]);
      if (it == vocab_.end()) {
        SKV_THROW(kInvalidInput, path_, ": model.vocab lacks the byte-level token \"",
                  table.byte_to_utf8[b], "\" for byte ", b);
      }
      byte_ids_[b] = it->second;
    }
  }

  void parse_added_tokens(const json& root) {
    const auto it = root.find("added_tokens");
    if (it == root.end() || it->is_null()) return;
    const json& added = member_of(root, "", "added_tokens", json::value_t::array, path_);
    for (size_t k = 0; k < added.size(); ++k) {
      const std::string key = "added_tokens[" + std::to_string(k) + "]";
      const json& entry = added[k];
      const int64_t id =
          member_of(entry, key, "id", json::value_t::number_integer, path_).get<int64_t>();
      const std::string content =
          member_of(entry, key, "content", json::value_t::string, path_).get<std::string>();
      SKV_CHECK(!content.empty(), path_, ": ", key, ".content is empty");
      const auto special = entry.find("special");
      const bool is_special =
          special != entry.end() && special->is_boolean() && special->get<bool>();
      set_id(id, content, is_special ? kSpecial : kNormal, key);
      added_[content] = id;
      added_by_first_byte_[static_cast<unsigned char>(content[0])].push_back(content);
    }
    // Longest first, so that "<|eot|>x" beats its prefix "<|eot|>".
    for (auto& candidates : added_by_first_byte_) {
      std::sort(candidates.begin(), candidates.end(),
                [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    }
  }

  int64_t vocab_id(const std::string& token, const std::string& key) const {
    const auto it = vocab_.find(token);
    if (it == vocab_.end()) {
      SKV_THROW(kInvalidInput, path_, ": ", key, " uses token \"", token,
                "\" which is not in model.vocab");
    }
    return it->second;
  }

  void parse_merges(const json& model) {
    const json& merges = member_of(model, "model", "merges", json::value_t::array, path_);
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const std::string key = "model.merges[" + std::to_string(rank) + "]";
      const json& merge = merges[rank];
      std::string left, right;
      if (merge.is_string()) {
        // "a b": byte-level tokens never contain a space (it is spelled "Ġ").
        const std::string s = merge.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
          SKV_THROW(kInvalidInput, path_, ": ", key, " = \"", s,
                    "\" is not two tokens separated by one space");
        }
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
                 merge[1].is_string()) {
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      } else {
        SKV_THROW(kInvalidInput, path_, ": ", key, " = ", merge.dump().substr(0, 80),
                  " is neither \"a b\" nor [\"a\", \"b\"]");
      }
      const int64_t merged = vocab_id(left + right, key);
      // emplace keeps the first (lowest) rank of a duplicated merge.
      merges_.emplace(pair_key(vocab_id(left, key), vocab_id(right, key)),
                      Merge{static_cast<int32_t>(rank), static_cast<int32_t>(merged)});
    }
  }

  void parse_normalizer(const json& root) {
    const auto it = root.find("normalizer");
    if (it == root.end()) return;
    const std::string type = node_type(*it, "normalizer", path_);
    // NFC (Qwen2) is accepted without running it: the text is assumed to be
    // NFC already, which holds for ASCII and for nearly all real input.
    if (type.empty() || type == "NFC") return;
    if (type == "Sequence" && it->value("normalizers", json::array()).empty()) return;
    SKV_THROW(kUnsupported, path_, ": normalizer.type \"", type,
              "\" is not supported (only none or NFC)");
  }

  void add_pre_step(const json& node, const std::string& key) {
    const std::string type = node_type(node, key, path_);
    PreStep step;
    if (type == "ByteLevel") {
      step.byte_level = true;
      step.add_prefix_space = node.value("add_prefix_space", false);
      step.use_regex = node.value("use_regex", true);
    } else if (type == "Split") {
      const json& pattern = member_of(node, key, "pattern", json::value_t::object, path_);
      const std::string regex =
          member_of(pattern, key + ".pattern", "Regex", json::value_t::string, path_)
              .get<std::string>();
      if (regex == kGpt2Regex) {
        step.pattern = PretokenPattern::kGpt2;
      } else if (regex == kLlama3Regex) {
        step.pattern = PretokenPattern::kLlama3;
      } else if (regex == kQwen2Regex) {
        step.pattern = PretokenPattern::kQwen2;
      } else {
        SKV_THROW(kUnsupported, path_, ": ", key, ".pattern.Regex \"", regex,
                  "\" is not one of the GPT-2, Llama-3 or Qwen2 patterns");
      }
      const std::string behavior = node.value("behavior", "Isolated");
      if (behavior != "Isolated" || node.value("invert", false)) {
        SKV_THROW(kUnsupported, path_, ": ", key, " with behavior \"", behavior,
                  "\" / invert is not supported (only Isolated, invert false)");
      }
    } else {
      SKV_THROW(kUnsupported, path_, ": ", key, ".type \"", type,
                "\" is not supported (only ByteLevel, Split, Sequence)");
    }
    steps_.push_back(step);
  }

  void parse_pre_tokenizer(const json& root) {
    const auto it = root.find("pre_tokenizer");
    if (it == root.end() || it->is_null()) return;  // the whole segment is one word
    if (node_type(*it, "pre_tokenizer", path_) != "Sequence") {
      add_pre_step(*it, "pre_tokenizer");
      return;
    }
    const json& list =
        member_of(*it, "pre_tokenizer", "pretokenizers", json::value_t::array, path_);
    for (size_t k = 0; k < list.size(); ++k) {
      add_pre_step(list[k], "pre_tokenizer.pretokenizers[" + std::to_string(k) + "]");
    }
  }

  // Id and length of the longest added token starting at text[i]; length 0
  // if none does.
  std::pair<int64_t, size_t> match_added(const std::string& text, size_t i) const {
    for (const std::string& candidate : added_by_first_byte_[static_cast<unsigned char>(text[i])]) {
      if (text.compare(i, candidate.size(), candidate) == 0) {
        return {added_.at(candidate), candidate.size()};
      }
    }
    return {-1, 0};
  }

  void encode_segment(const std::string& segment, std::vector<int64_t>* ids) const {
    if (segment.empty()) return;
    std::vector<std::string> words{segment};
    for (const PreStep& step : steps_) {
      std::vector<std::string> next;
      for (std::string& word : words) {
        if (step.byte_level && step.add_prefix_space && word[0] != ' ') word.insert(0, " ");
        if (step.byte_level && !step.use_regex) {
          next.push_back(std::move(word));
          continue;
        }
        // A ByteLevel step splits with GPT-2's regex, its PreStep default.
        for (auto& piece : detail::split_pretokens(word, step.pattern)) {
          next.push_back(std::move(piece));
        }
      }
      words = std::move(next);
    }
    for (const std::string& word : words) encode_word(word, ids);
  }

  // BPE on one word: start from one symbol per byte and repeatedly apply the
  // lowest-ranked merge (leftmost on ties), as `tokenizers` does. A heap of
  // candidate pairs keeps long words (e.g. CJK runs) at O(n log n).
  void encode_word(const std::string& word, std::vector<int64_t>* ids) const {
    if (ignore_merges_) {
      // Llama-3 sets ignore_merges: a word that is itself a token is taken
      // whole even if the merges would split it differently.
      std::string spelled;
      for (unsigned char c : word) spelled += byte_level_table().byte_to_utf8[c];
      if (auto it = vocab_.find(spelled); it != vocab_.end()) {
        ids->push_back(it->second);
        return;
      }
    }
    struct Symbol {
      int64_t id;
      int prev, next;  // neighbours in the linked list, -1 at the ends
    };
    struct Candidate {
      int32_t rank;
      int pos;
      int64_t left, right;  // ids expected at pos and its next when pushed
      int64_t merged;       // id they merge into
      bool operator>(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    const int n = static_cast<int>(word.size());
    if (n == 0) return;
    std::vector<Symbol> symbols(n);
    for (int k = 0; k < n; ++k) {
      symbols[k] = {byte_ids_[static_cast<unsigned char>(word[k])], k - 1, k + 1 < n ? k + 1 : -1};
    }
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    auto push = [&](int pos) {
      if (pos < 0 || symbols[pos].next < 0) return;
      const int64_t left = symbols[pos].id, right = symbols[symbols[pos].next].id;
      const auto it = merges_.find(pair_key(left, right));
      if (it != merges_.end()) heap.push({it->second.rank, pos, left, right, it->second.id});
    };
    for (int k = 0; k + 1 < n; ++k) push(k);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      Symbol& s = symbols[c.pos];
      // Stale entries (a neighbour merged since the push) no longer match.
      if (s.id != c.left || s.next < 0 || symbols[s.next].id != c.right) continue;
      const int removed = s.next;
      s.id = c.merged;
      s.next = symbols[removed].next;
      if (s.next >= 0) symbols[s.next].prev = c.pos;
      symbols[removed].id = -1;
      push(s.prev);
      push(c.pos);
    }
    for (int k = 0; k >= 0; k = symbols[k].next) ids->push_back(symbols[k].id);
  }

  std::string path_;
  std::unordered_map<std::string, int64_t> vocab_;  // byte-level spelling -> id
  std::unordered_map<uint64_t, Merge> merges_;      // (left id, right id) -> merge
  std::array<int64_t, 256> byte_ids_{};             // id of each single byte
  int64_t id_limit_ = 0;                            // ids must lie below this
  std::vector<std::string> id_bytes_;               // id -> bytes it decodes to
  std::vector<uint8_t> id_kind_;                    // id -> IdKind
  std::unordered_map<std::string, int64_t> added_;  // added token content -> id
  std::array<std::vector<std::string>, 256> added_by_first_byte_;
  std::vector<PreStep> steps_;
  bool ignore_merges_ = false;
};

}  // namespace

namespace detail {

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const json& root, const std::string& path) {
  try {
    return std::make_unique<BpeTokenizer>(root, path);
  } catch (const json::exception& e) {
    // Our accessors check types first; this catches what they missed.
    SKV_THROW(kInvalidInput, path, ": unexpected tokenizer.json layout: ", e.what());
  }
}

}  // namespace detail

std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::string& tokenizer_json_path) {
  return detail::make_bpe_tokenizer(detail::read_json_file(tokenizer_json_path),
                                    tokenizer_json_path);
}

}  // namespace spindlekv
