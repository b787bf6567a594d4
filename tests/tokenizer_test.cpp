// Tests of the byte, BPE and SentencePiece tokenizers and of load_tokenizer.
//
// The BPE tests build a tiny tokenizer.json by hand (all 256 byte tokens with
// id = byte value, a handful of merges, three added tokens), so every expected
// id below can be worked out on paper.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include "test_util.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"
#include "model/tokenizer.h"

namespace spindlekv {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using Ids = std::vector<int64_t>;

// A fresh directory under the system temp dir, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("skv_tok_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

  void write(const std::string& name, const std::string& content) const {
    std::ofstream(file(name), std::ios::binary) << content;
  }

 private:
  fs::path path_;
};

// Expects `fn` to throw spindlekv::Error of `kind` whose message contains
// every string of `needles` (typically the file name and the key).
template <typename Fn>
void expect_error(Fn&& fn, ErrorKind kind, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected spindlekv::Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const auto& needle : needles) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << "message lacks \"" << needle << "\": " << e.what();
    }
  }
}

// GPT-2's byte -> code point table, written out independently of the library.
std::string byte_char(int b) {
  int n = 0;
  for (int x = 0; x < b; ++x) {
    if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174)) ++n;
  }
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
  const int cp = printable ? b : 256 + n;
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Token ids of the tiny model beyond the 256 bytes.
constexpr int64_t kSpaceT = 256, kHe = 257, kSpaceThe = 258, k12 = 259, k123 = 260, kApostS = 261,
                  kLl = 262, kNewlines = 263, kHel = 264, kBegin = 300, kEot = 301, kTool = 302;

// A Llama-3-style tokenizer.json: Split(Llama-3 regex) + ByteLevel.
json tiny_bpe_json() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  const std::string sp = byte_char(' '), nl = byte_char('\n');
  vocab[sp + "t"] = kSpaceT;
  vocab["he"] = kHe;
  vocab[sp + "the"] = kSpaceThe;
  vocab["12"] = k12;
  vocab["123"] = k123;
  vocab["'s"] = kApostS;
  vocab["ll"] = kLl;
  vocab[nl + nl] = kNewlines;
  vocab["hel"] = kHel;  // reachable only through ignore_merges: no merge makes it
  // Both merge spellings of tokenizer.json: "a b" strings and [a, b] pairs.
  json merges = {sp + " t", "h e", json::array({sp + "t", "he"}), "1 2", "12 3",
                 "' s",     "l l", json::array({nl, nl})};
  json added = json::array({
      {{"id", kBegin}, {"content", "<|begin_of_text|>"}, {"special", true}},
      {{"id", kEot}, {"content", "<|eot_id|>"}, {"special", true}},
      {{"id", kTool}, {"content", "<tool>"}, {"special", false}},
  });
  return {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", kLlama3Regex}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"unk_token", nullptr},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merges}}},
  };
}

std::unique_ptr<Tokenizer> load_json(const TempDir& dir, const json& j) {
  dir.write("tokenizer.json", j.dump());
  return load_bpe_tokenizer(dir.file("tokenizer.json"));
}

// ----------------------------------------------------------------- byte ---

TEST(Tokenizer, ByteRoundTripsWhenTextHasArbitraryBytesAndUtf8) {
  const auto tok = make_byte_tokenizer();
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  const Ids ids = tok->encode(all_bytes);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  EXPECT_EQ(tok->decode(ids), all_bytes);

  const std::string utf8 = "h\xC3\xA9llo \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x99\x82";
  EXPECT_EQ(tok->encode(utf8).size(), utf8.size());
  EXPECT_EQ(tok->decode(tok->encode(utf8)), utf8);
  EXPECT_EQ(tok->name(), "byte");
  EXPECT_EQ(tok->vocab_size(), 256);
  EXPECT_FALSE(tok->bos_id.has_value());
}

TEST(Tokenizer, ByteDecodeSkipsSpecialIdsWhenAbove255) {
  const auto tok = make_byte_tokenizer(256, 257);
  EXPECT_EQ(tok->vocab_size(), 258);
  EXPECT_EQ(tok->bos_id, 256);
  EXPECT_EQ(tok->eos_id, 257);
  EXPECT_EQ(tok->decode({256, 'h', 'i', 257, 999}), "hi");
  expect_error([&] { tok->decode({-1}); }, ErrorKind::kInvalidInput, {"-1"});
}

TEST(Tokenizer, ByteFactoryThrowsWhenSpecialIdCollidesWithByte) {
  expect_error([] { make_byte_tokenizer(3); }, ErrorKind::kInvalidInput, {"bos_token_id", "3"});
  expect_error([] { make_byte_tokenizer(256, 300, 100); }, ErrorKind::kInvalidInput,
               {"vocab_size"});
}

// ------------------------------------------------------- pre-tokenizers ---

using detail::PretokenPattern;
using Pieces = std::vector<std::string>;

TEST(Tokenizer, PretokenizerSplitsLikeTheRegexWhenTextIsAscii) {
  const auto split = detail::split_pretokens;
  // Digits: groups of three (Llama-3), single (Qwen2), unbounded (GPT-2).
  EXPECT_EQ(split("12345", PretokenPattern::kLlama3), (Pieces{"123", "45"}));
  EXPECT_EQ(split("1234", PretokenPattern::kQwen2), (Pieces{"1", "2", "3", "4"}));
  EXPECT_EQ(split("a 12345", PretokenPattern::kGpt2), (Pieces{"a", " 12345"}));
  // Contractions: case-insensitive only in the Llama-3 pattern.
  EXPECT_EQ(split("HE'S it's", PretokenPattern::kLlama3), (Pieces{"HE", "'S", " it", "'s"}));
  EXPECT_EQ(split("HE'S it's", PretokenPattern::kGpt2), (Pieces{"HE", "'", "S", " it", "'s"}));
  EXPECT_EQ(split("we'll", PretokenPattern::kGpt2), (Pieces{"we", "'ll"}));
  // Spaces: a run gives its last space to the next word; a trailing run stays whole.
  EXPECT_EQ(split("a   b  ", PretokenPattern::kLlama3), (Pieces{"a", "  ", " b", "  "}));
  EXPECT_EQ(split("a   b  ", PretokenPattern::kGpt2), (Pieces{"a", "  ", " b", "  "}));
  // Newlines: Llama-3 keeps the whitespace up to the last newline together.
  EXPECT_EQ(split("a \n\n b", PretokenPattern::kLlama3), (Pieces{"a", " \n\n", " b"}));
  EXPECT_EQ(split("a \n\n b", PretokenPattern::kGpt2), (Pieces{"a", " \n\n", " b"}));
  EXPECT_EQ(split("x\n\ny", PretokenPattern::kGpt2), (Pieces{"x", "\n", "\n", "y"}));
  // Punctuation: Llama-3 lets one non-letter lead a word and glues newlines on.
  EXPECT_EQ(split("(hi) ...\n", PretokenPattern::kLlama3), (Pieces{"(hi", ")", " ...\n"}));
  EXPECT_EQ(split("(hi) ...\n", PretokenPattern::kGpt2), (Pieces{"(", "hi", ")", " ...", "\n"}));
}

TEST(Tokenizer, PretokenizerTreatsNonAsciiAsLettersWhenTextIsUtf8) {
  // "café 中文": the non-ASCII bytes join the letters around them.
  EXPECT_EQ(
      detail::split_pretokens("caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87!", PretokenPattern::kLlama3),
      (Pieces{"caf\xC3\xA9", " \xE4\xB8\xAD\xE6\x96\x87", "!"}));
}

// ------------------------------------------------------------------ BPE ---

TEST(Tokenizer, BpeEncodesExpectedIdsWhenMergesApply) {
  TempDir dir;
  const auto tok = load_json(dir, tiny_bpe_json());
  EXPECT_EQ(tok->name(), "bpe");
  EXPECT_EQ(tok->vocab_size(), 303);
  EXPECT_EQ(tok->encode("the"), (Ids{'t', kHe}));
  EXPECT_EQ(tok->encode(" the"), (Ids{kSpaceThe}));
  EXPECT_EQ(tok->encode("the the"), (Ids{'t', kHe, kSpaceThe}));
  EXPECT_EQ(tok->encode("hello world"), (Ids{kHe, kLl, 'o', ' ', 'w', 'o', 'r', 'l', 'd'}));
  // Digits in groups of three: "123" merges, "45" stays bytes.
  EXPECT_EQ(tok->encode("12345"), (Ids{k123, '4', '5'}));
  EXPECT_EQ(tok->encode("1212"), (Ids{k12, '1', '2'}));
  // Contractions are their own words, case-insensitively.
  EXPECT_EQ(tok->encode("he's"), (Ids{kHe, kApostS}));
  EXPECT_EQ(tok->encode("HE'S"), (Ids{'H', 'E', '\'', 'S'}));
  // Newlines: "\n\n" is one word and one merged token.
  EXPECT_EQ(tok->encode("a\n\nb"), (Ids{'a', kNewlines, 'b'}));
  EXPECT_EQ(tok->encode(""), Ids{});
}

TEST(Tokenizer, BpeRoundTripsWhenTextHasSpacesDigitsNewlinesAndUtf8) {
  TempDir dir;
  const auto tok = load_json(dir, tiny_bpe_json());
  for (const std::string& text :
       std::vector<std::string>{"the the  the   ", "I'm sure he'll say it's 1234567 or 89.",
                                "line one\n\n  line two\r\n", "\ttabs\tand   spaces ",
                                "caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x99\x82",
                                std::string("nul\0byte\xFF", 9)}) {
    EXPECT_EQ(tok->decode(tok->encode(text)), text) << text;
  }
}

TEST(Tokenizer, BpeMatchesAddedTokensFirstWhenTheyAppearInText) {
  TempDir dir;
  const auto tok = load_json(dir, tiny_bpe_json());
  const Ids ids = tok->encode("<|begin_of_text|>the<|eot_id|><tool> the");
  EXPECT_EQ(ids, (Ids{kBegin, 't', kHe, kEot, kTool, kSpaceThe}));
  // Special tokens are dropped by decode; the non-special one is text.
  EXPECT_EQ(tok->decode(ids), "the<tool> the");
  EXPECT_EQ(tok->token_to_id("<|eot_id|>"), kEot);
  EXPECT_EQ(tok->token_to_id("he"), kHe);
  EXPECT_FALSE(tok->token_to_id("nope").has_value());
  // A partial special token is plain text.
  EXPECT_EQ(tok->decode(tok->encode("<|eot_id")), "<|eot_id");
}

TEST(Tokenizer, BpeDecodeThrowsWhenIdIsNotInVocabulary) {
  TempDir dir;
  const auto tok = load_json(dir, tiny_bpe_json());
  expect_error([&] { tok->decode({280}); }, ErrorKind::kInvalidInput, {"280", "tokenizer.json"});
  expect_error([&] { tok->decode({303}); }, ErrorKind::kInvalidInput, {"303"});
  expect_error([&] { tok->decode({-2}); }, ErrorKind::kInvalidInput, {"-2"});
}

TEST(Tokenizer, BpeUsesGpt2PatternWhenOnlyByteLevelPreTokenizer) {
  TempDir dir;
  json j = tiny_bpe_json();
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  const auto tok = load_json(dir, j);
  // GPT-2 splits "\n\n" before a letter into two words, so no merge.
  EXPECT_EQ(tok->encode("a\n\nb"), (Ids{'a', '\n', '\n', 'b'}));
  EXPECT_EQ(tok->encode("12345"), (Ids{k123, '4', '5'}));  // one word "12345"
  EXPECT_EQ(tok->decode(tok->encode("x\n\ny 42")), "x\n\ny 42");
}

TEST(Tokenizer, BpePrependsSpaceWhenAddPrefixSpaceIsSet) {
  TempDir dir;
  json j = tiny_bpe_json();
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}};
  EXPECT_EQ(load_json(dir, j)->encode("the"), (Ids{kSpaceThe}));
}

TEST(Tokenizer, BpeTakesWholeWordWhenIgnoreMergesAndWordInVocab) {
  TempDir dir;
  json j = tiny_bpe_json();
  EXPECT_EQ(load_json(dir, j)->encode("hel"), (Ids{kHe, 'l'}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(load_json(dir, j)->encode("hel"), (Ids{kHel}));
}

TEST(Tokenizer, BpeLoadThrowsNamingFileWhenJsonIsMissingOrMalformed) {
  TempDir dir;
  const std::string path = dir.file("tokenizer.json");
  expect_error([&] { load_bpe_tokenizer(path); }, ErrorKind::kIo, {path});
  dir.write("tokenizer.json", "{\"model\": {\"type\": \"BPE\",");
  expect_error([&] { load_bpe_tokenizer(path); }, ErrorKind::kInvalidInput,
               {path, "malformed JSON"});
}

TEST(Tokenizer, BpeLoadThrowsNamingKeyWhenLayoutIsWrong) {
  TempDir dir;
  const std::string path = dir.file("tokenizer.json");
  json j = tiny_bpe_json();
  j["model"].erase("vocab");
  expect_error([&] { load_json(dir, j); }, ErrorKind::kInvalidInput, {path, "model.vocab"});

  j = tiny_bpe_json();
  j["model"]["merges"].push_back("he zz");
  expect_error([&] { load_json(dir, j); }, ErrorKind::kInvalidInput,
               {path, "model.merges[8]", "zz"});

  j = tiny_bpe_json();
  j["model"]["merges"].push_back(42);
  expect_error([&] { load_json(dir, j); }, ErrorKind::kInvalidInput, {path, "model.merges[8]"});

  j = tiny_bpe_json();
  j["model"]["vocab"]["he"] = "x";
  expect_error([&] { load_json(dir, j); }, ErrorKind::kInvalidInput, {path, "model.vocab.he"});

  j = tiny_bpe_json();
  j["added_tokens"][1].erase("id");
  expect_error([&] { load_json(dir, j); }, ErrorKind::kInvalidInput, {path, "added_tokens[1].id"});

  j = tiny_bpe_json();
  j["model"]["vocab"].erase(byte_char(0));
  expect_error([&] { load_json(dir, j); }, ErrorKind::kInvalidInput, {path, "byte 0"});
}

TEST(Tokenizer, BpeLoadThrowsUnsupportedWhenLayoutIsUnknown) {
  TempDir dir;
  const std::string path = dir.file("tokenizer.json");
  json j = tiny_bpe_json();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+";
  expect_error([&] { load_json(dir, j); }, ErrorKind::kUnsupported, {path, "\\w+"});

  j = tiny_bpe_json();
  j["normalizer"] = {{"type", "Lowercase"}};
  expect_error([&] { load_json(dir, j); }, ErrorKind::kUnsupported, {path, "Lowercase"});

  j = tiny_bpe_json();
  j["model"]["type"] = "WordPiece";
  expect_error([&] { load_json(dir, j); }, ErrorKind::kUnsupported, {path, "WordPiece"});
}

// -------------------------------------------------------- SentencePiece ---

// A runtime-only build without the SentencePiece library has no plugin
// (CMakeLists.txt: SPINDLEKV_RUNTIME_ONLY); its SentencePiece tests skip.
#if !SPINDLEKV_HAVE_SENTENCEPIECE
#define SKIP_WITHOUT_SENTENCEPIECE() GTEST_SKIP() << "built without the SentencePiece plugin"
#else
// The fixture is trained by Debian's spm_train (scripts/setup.sh installs
// it); a machine with the library but not the tool (the GPU machine's
// Python sentencepiece) skips.
#define SKIP_WITHOUT_SENTENCEPIECE()                                        \
  if (std::system("command -v spm_train > /dev/null 2>&1") != 0) {          \
    GTEST_SKIP() << "spm_train is not installed: cannot train the fixture"; \
  }
#endif

// Trains a tiny model into `dir`/tokenizer.model.
void train_sentencepiece(const TempDir& dir) {
  std::string corpus;
  for (int i = 0; i < 50; ++i) {
    corpus += "the quick brown fox jumps over the lazy dog " + std::to_string(i) + "\n";
    corpus += "hello world, tokenizers turn text into numbers\n";
  }
  dir.write("corpus.txt", corpus);
  // Debian's spm_train (package sentencepiece, installed by scripts/setup.sh)
  // builds the fixture; the library's trainer cannot run in-process beside
  // LibTorch (see model/sentencepiece_plugin.h).
  const std::string cmd = "spm_train --input=" + dir.file("corpus.txt") +
                          " --model_prefix=" + dir.file("tokenizer") +
                          " --vocab_size=64 --model_type=bpe --character_coverage=1.0"
                          " --minloglevel=2 > " +
                          dir.file("spm.log") + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "spm_train failed or is not installed: " << cmd;
}

TEST(Tokenizer, SentencePieceRoundTripsWhenModelIsTrained) {
  SKIP_WITHOUT_SENTENCEPIECE();
  TempDir dir;
  train_sentencepiece(dir);
  const auto tok = load_tokenizer(dir.str());
  EXPECT_EQ(tok->name(), "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 64);
  EXPECT_EQ(tok->bos_id, 1);  // sentencepiece defaults: unk 0, bos 1, eos 2
  EXPECT_EQ(tok->eos_id, 2);
  const std::string text = "the lazy fox says hello world";
  const Ids ids = tok->encode(text);
  EXPECT_LT(ids.size(), text.size());  // merges happened
  EXPECT_EQ(tok->decode(ids), text);
  // BOS/EOS are control tokens: decode drops them.
  Ids with_specials = ids;
  with_specials.insert(with_specials.begin(), *tok->bos_id);
  with_specials.push_back(*tok->eos_id);
  EXPECT_EQ(tok->decode(with_specials), text);
  expect_error([&] { tok->decode({64}); }, ErrorKind::kInvalidInput, {"64", "tokenizer.model"});
}

TEST(Tokenizer, SentencePieceLoadThrowsNamingFileWhenMissingOrCorrupt) {
  SKIP_WITHOUT_SENTENCEPIECE();
  TempDir dir;
  const std::string path = dir.file("tokenizer.model");
  expect_error([&] { load_sentencepiece_tokenizer(path); }, ErrorKind::kIo, {path});
  dir.write("tokenizer.model", "this is not a protobuf");
  expect_error([&] { load_sentencepiece_tokenizer(path); }, ErrorKind::kInvalidInput, {path});
  expect_error([&] { load_tokenizer(dir.str()); }, ErrorKind::kInvalidInput, {path});
}

// -------------------------------------------------------- load_tokenizer ---

TEST(Tokenizer, LoadPicksByteWhenDirectoryHasSpindleMarker) {
  TempDir dir;
  dir.write("tokenizer.json", R"({"spindlekv_tokenizer": "byte", "bos_token_id": 256,
                                  "eos_token_id": 257, "vocab_size": 260})");
  const auto tok = load_tokenizer(dir.str());
  EXPECT_EQ(tok->name(), "byte");
  EXPECT_EQ(tok->bos_id, 256);
  EXPECT_EQ(tok->eos_id, 257);
  EXPECT_EQ(tok->vocab_size(), 260);

  TempDir bare;  // ids are optional
  bare.write("tokenizer.json", R"({"model": {"type": "byte"}})");
  EXPECT_EQ(load_tokenizer(bare.str())->name(), "byte");
  EXPECT_FALSE(load_tokenizer(bare.str())->bos_id.has_value());

  TempDir config;  // the marker may also sit in tokenizer_config.json
  config.write("tokenizer_config.json", R"({"spindlekv_tokenizer": "byte", "eos_token_id": 256})");
  EXPECT_EQ(load_tokenizer(config.str())->eos_id, 256);
}

TEST(Tokenizer, LoadThrowsNamingFileWhenByteMarkerIsInvalid) {
  TempDir dir;
  dir.write("tokenizer.json", R"({"spindlekv_tokenizer": "byte", "bos_token_id": 5})");
  expect_error([&] { load_tokenizer(dir.str()); }, ErrorKind::kInvalidInput,
               {dir.file("tokenizer.json"), "bos_token_id"});
  dir.write("tokenizer.json", R"({"spindlekv_tokenizer": "byte", "eos_token_id": "x"})");
  expect_error([&] { load_tokenizer(dir.str()); }, ErrorKind::kInvalidInput,
               {dir.file("tokenizer.json"), "eos_token_id"});
  dir.write("tokenizer.json", R"({"spindlekv_tokenizer": "trie"})");
  expect_error([&] { load_tokenizer(dir.str()); }, ErrorKind::kUnsupported,
               {dir.file("tokenizer.json"), "trie"});
}

TEST(Tokenizer, LoadPicksBpeWithSpecialIdsWhenDirectoryHasHfFiles) {
  TempDir dir;
  dir.write("tokenizer.json", tiny_bpe_json().dump());
  dir.write("tokenizer_config.json",
            R"({"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"}})");
  auto tok = load_tokenizer(dir.str());
  EXPECT_EQ(tok->name(), "bpe");
  EXPECT_EQ(tok->bos_id, kBegin);
  EXPECT_EQ(tok->eos_id, kEot);

  // Without tokenizer_config.json the ids come from config.json (list: first).
  fs::remove(dir.file("tokenizer_config.json"));
  dir.write("config.json", R"({"bos_token_id": 300, "eos_token_id": [301, 300]})");
  tok = load_tokenizer(dir.str());
  EXPECT_EQ(tok->bos_id, kBegin);
  EXPECT_EQ(tok->eos_id, kEot);

  dir.write("tokenizer_config.json", R"({"bos_token": "<s>"})");
  expect_error([&] { load_tokenizer(dir.str()); }, ErrorKind::kInvalidInput,
               {dir.file("tokenizer_config.json"), "<s>"});
}

TEST(Tokenizer, LoadPrefersSentencePieceWhenTokenizerJsonIsNotByteLevel) {
  SKIP_WITHOUT_SENTENCEPIECE();
  TempDir dir;
  train_sentencepiece(dir);
  json j = tiny_bpe_json();  // Llama-2 style: BPE with a Metaspace pre-tokenizer
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  j["decoder"] = {{"type", "Metaspace"}};
  dir.write("tokenizer.json", j.dump());
  EXPECT_EQ(load_tokenizer(dir.str())->name(), "sentencepiece");
}

TEST(Tokenizer, LoadThrowsNamingDirectoryWhenNothingUsable) {
  expect_error([] { load_tokenizer("/nonexistent/skv_model"); }, ErrorKind::kIo,
               {"/nonexistent/skv_model"});

  TempDir empty;
  expect_error([&] { load_tokenizer(empty.str()); }, ErrorKind::kUnsupported,
               {empty.str(), "none of tokenizer.json"});

  TempDir wordpiece;
  wordpiece.write("tokenizer.json", R"({"model": {"type": "WordPiece", "vocab": {}}})");
  wordpiece.write("tokenizer_config.json", R"({"do_lower_case": true})");
  expect_error([&] { load_tokenizer(wordpiece.str()); }, ErrorKind::kUnsupported,
               {wordpiece.str(), "WordPiece", "tokenizer_config.json"});

  TempDir malformed;
  malformed.write("tokenizer.json", "[1, 2,");
  expect_error([&] { load_tokenizer(malformed.str()); }, ErrorKind::kInvalidInput,
               {malformed.file("tokenizer.json")});

  TempDir missing_key;  // byte-level BPE without merges
  json j = tiny_bpe_json();
  j["model"].erase("merges");
  missing_key.write("tokenizer.json", j.dump());
  expect_error([&] { load_tokenizer(missing_key.str()); }, ErrorKind::kInvalidInput,
               {missing_key.file("tokenizer.json"), "model.merges"});
}

}  // namespace
}  // namespace spindlekv

namespace spindlekv {
namespace {

// Found by tokenizer_fuzz: a vocabulary id of 1,055,555,550 made the id
// table allocate 33 GB. Such ids are now refused with the key named.
TEST(FuzzRegression, BpeRefusesAnIdFarBeyondTheVocabulary) {
  const std::string path =
      std::string(SPINDLEKV_SOURCE_DIR) + "/tests/fuzz_regressions/tokenizer_sparse_id.json";
  EXPECT_SKV_ERROR(load_bpe_tokenizer(path), "has id 1055555550 outside [0, ");
}

}  // namespace
}  // namespace spindlekv
