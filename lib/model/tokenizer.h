// Tokenizers of the model runtime: text <-> token ids.
//
// Three kinds cover the models SpindleKV runs:
//   * "byte": our own byte-level models; id = byte value, ids >= 256 special.
//   * "sentencepiece": a tokenizer.model (Llama-2, Mistral, Gemma, ...).
//   * "bpe": a Hugging Face tokenizer.json with byte-level BPE (GPT-2,
//     Llama-3, Qwen2).
// load_tokenizer() picks one from a Hugging Face model directory, so callers
// never need to know which kind a checkpoint uses.
//
// All loaders throw spindlekv::Error whose message names the file and the
// offending key or value. Encoding and decoding are const and keep no caches,
// so one tokenizer may be shared by threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace spindlekv {

/// Converts between text (UTF-8 bytes) and token ids.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// Tokenizes `text` (arbitrary bytes, normally UTF-8). Never adds BOS/EOS:
  /// the caller decides whether a sequence starts with bos_id.
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;

  /// Turns `ids` back into bytes. Special tokens (BOS, EOS, control tokens)
  /// are left out. The result may end inside a UTF-8 sequence when `ids`
  /// stops inside a multi-byte character. Throws kInvalidInput for an id that
  /// the tokenizer does not know (negative or beyond the vocabulary).
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;

  /// Number of ids: one more than the largest valid id.
  virtual int64_t vocab_size() const = 0;

  /// Kind of tokenizer: "byte", "sentencepiece" or "bpe".
  virtual std::string name() const = 0;

  /// Id of the single token spelled `token` (e.g. "<|eot_id|>"), if the
  /// vocabulary has one; used to resolve special tokens named in configs.
  virtual std::optional<int64_t> token_to_id(const std::string& token) const = 0;

  /// Beginning-of-sequence id, if the model has one.
  std::optional<int64_t> bos_id;
  /// End-of-sequence id, if the model has one.
  std::optional<int64_t> eos_id;
};

/// Byte tokenizer: id = byte value 0..255; ids >= 256 are special tokens that
/// decode() skips.
/// `bos_id`, `eos_id`: optional special ids; each must be >= 256 so that it
///   cannot collide with a byte.
/// `vocab_size`: 0 derives it as max(256, largest special id + 1); otherwise
///   it must cover every byte and special id.
std::unique_ptr<Tokenizer> make_byte_tokenizer(std::optional<int64_t> bos_id = std::nullopt,
                                               std::optional<int64_t> eos_id = std::nullopt,
                                               int64_t vocab_size = 0);

/// Loads a SentencePiece model file (`model_path`, usually tokenizer.model).
/// bos_id/eos_id come from the model (unset when the model disables them).
/// Throws kIo if the file cannot be read, kInvalidInput if it is not a model.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& model_path);

/// Loads a Hugging Face tokenizer.json (`tokenizer_json_path`) holding a
/// byte-level BPE model (GPT-2, Llama-3, Qwen2 layouts). bos_id/eos_id stay
/// unset: tokenizer.json does not say which tokens they are (load_tokenizer
/// reads them from the configs beside it). decode() drops added tokens marked
/// "special" and keeps the others as text.
/// Limitations: the pre-tokenizer regex must be the GPT-2, Llama-3 or Qwen2
/// one (see PretokenPattern, with its non-ASCII approximation); an NFC
/// normalizer is accepted but not run (input is assumed to be NFC already);
/// the lstrip/rstrip/single_word flags of added tokens are ignored (none of
/// the supported models sets them).
/// Throws kIo if the file cannot be read, kInvalidInput for malformed JSON or
/// missing keys, kUnsupported for a valid layout we do not implement (other
/// model types, unknown pre-tokenizer regexes or normalizers).
std::unique_ptr<Tokenizer> load_bpe_tokenizer(const std::string& tokenizer_json_path);

/// Picks and loads the tokenizer of the model directory `model_dir`, in this
/// order:
///   1. tokenizer.json with {"spindlekv_tokenizer": "byte"} (our marker) or
///      {"model": {"type": "byte"}} -> byte tokenizer. Optional top-level
///      "bos_token_id", "eos_token_id" and "vocab_size" (integers) configure
///      it, e.g. {"spindlekv_tokenizer": "byte", "bos_token_id": 256,
///      "eos_token_id": 257}.
///   2. tokenizer.json with model.type "BPE" and a ByteLevel pre-tokenizer or
///      decoder -> bpe. bos/eos come from tokenizer_config.json
///      ("bos_token"/"eos_token", a string or {"content": ...}), else from
///      config.json ("bos_token_id"/"eos_token_id"; of a list, the first).
///   3. tokenizer.model -> sentencepiece (also when tokenizer.json holds a
///      layout that is not byte-level BPE, e.g. Llama-2's Metaspace BPE).
///   4. tokenizer_config.json with the marker of step 1 -> byte tokenizer.
/// Anything else throws kUnsupported naming the directory and what was found;
/// a missing directory throws kIo.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir);

// Internals shared by the tokenizer sources and exposed for tests only.
namespace detail {

/// Reads and parses the JSON file `path`: kIo if it cannot be opened,
/// kInvalidInput naming the file if it is not valid JSON.
nlohmann::json read_json_file(const std::string& path);

/// Whether the parsed tokenizer.json `root` holds a BPE model with byte-level
/// pre-tokenization or decoding (the layouts load_bpe_tokenizer accepts).
bool is_byte_level_bpe(const nlohmann::json& root);

/// Builds a BPE tokenizer from the parsed tokenizer.json `root`; `path` only
/// names the file in error messages.
std::unique_ptr<Tokenizer> make_bpe_tokenizer(const nlohmann::json& root, const std::string& path);

/// The pre-tokenizer regexes we implement by hand (std::regex has no \p{L}).
enum class PretokenPattern {
  /// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kGpt2,
  /// Llama-3 / GPT-4 (cl100k): (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|
  /// \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kLlama3,
  /// Qwen2: the Llama-3 pattern with \p{N} (single digits) instead of \p{N}{1,3}.
  kQwen2,
};

/// Splits `text` into the successive matches of `pattern` (the matches cover
/// the whole text). Exact for ASCII; every byte >= 0x80 (any non-ASCII code
/// point, and stray bytes of invalid UTF-8) counts as a letter, so non-ASCII
/// digits, punctuation and spaces differ from the real \p{N}/\p{P}/\s.
std::vector<std::string> split_pretokens(const std::string& text, PretokenPattern pattern);

}  // namespace detail

}  // namespace spindlekv
