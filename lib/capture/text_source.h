// Calibration text: files, directories of .txt files, or JSONL with a "text"
// field, read one document at a time (memory does not grow with the corpus),
// and cut into fixed-length token sequences.
#pragma once

#include <cstdint>
#include <deque>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace spindlekv {

class Tokenizer;

struct TextDocument {
  std::string source;  ///< "path" or "path:line" (JSONL), for error messages
  std::string text;
};

/// Throws kInvalidInput naming `source` and the byte offset of the first
/// invalid UTF-8 sequence in `text`.
void check_utf8(const std::string& text, const std::string& source);

class TextSource {
 public:
  /// Expands directories (every *.txt and *.jsonl below, sorted) and checks
  /// that every path exists. Throws naming the path.
  explicit TextSource(const std::vector<std::string>& paths);
  ~TextSource();

  /// The files to be read, in order.
  const std::vector<std::string>& files() const { return files_; }
  /// XXH3-128 over the files' names and bytes (reads them once).
  std::string content_hash() const;
  /// Next non-empty document; false at the end. Validates UTF-8 and JSONL.
  bool next(TextDocument* doc);

 private:
  std::vector<std::string> files_;
  size_t file_index_ = 0;
  std::unique_ptr<std::ifstream> jsonl_;  ///< open JSONL file, read line by line
  int64_t jsonl_line_ = 0;
};

/// Cuts documents into sequences of exactly `seq_len` tokens: BOS (when the
/// tokenizer has one) followed by the token stream, documents separated by
/// EOS (when it has one).
class TokenSequencer {
 public:
  TokenSequencer(const Tokenizer& tokenizer, int64_t seq_len);
  void add_document(const std::string& text);
  /// Pops the next complete sequence into `out`; false if not enough tokens.
  bool next_sequence(std::vector<int64_t>* out);
  /// Tokens waiting for the next sequence.
  size_t pending() const { return buffer_.size(); }

 private:
  const Tokenizer& tokenizer_;
  int64_t seq_len_;
  std::deque<int64_t> buffer_;
};

}  // namespace spindlekv
