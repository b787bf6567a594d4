#include "capture/text_source.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/model_fingerprint.h"
#include "model/tokenizer.h"

namespace spindlekv {
namespace fs = std::filesystem;

void check_utf8(const std::string& text, const std::string& source) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    size_t len = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      SKV_THROW(kInvalidInput, source, ": invalid UTF-8 at byte ", i, " (byte 0x", std::hex,
                static_cast<int>(c), ")");
    }
    if (i + len > n) {
      SKV_THROW(kInvalidInput, source, ": truncated UTF-8 sequence at byte ", i);
    }
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) {
        SKV_THROW(kInvalidInput, source, ": invalid UTF-8 continuation at byte ", i + k);
      }
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      SKV_THROW(kInvalidInput, source, ": invalid UTF-8 code point at byte ", i);
    }
    i += len;
  }
}

namespace {
bool is_jsonl(const std::string& path) { return fs::path(path).extension() == ".jsonl"; }
}  // namespace

TextSource::TextSource(const std::vector<std::string>& paths) {
  SKV_CHECK(!paths.empty(), "no calibration text given");
  for (const std::string& p : paths) {
    if (fs::is_directory(p)) {
      std::vector<std::string> found;
      for (const auto& e : fs::recursive_directory_iterator(p)) {
        const std::string ext = e.path().extension().string();
        if (e.is_regular_file() && (ext == ".txt" || ext == ".jsonl")) found.push_back(e.path());
      }
      std::sort(found.begin(), found.end());
      SKV_CHECK(!found.empty(), "text directory '", p, "' holds no .txt or .jsonl files");
      files_.insert(files_.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(p)) {
      files_.push_back(p);
    } else {
      SKV_THROW(kInvalidInput, "text path '", p, "' does not exist");
    }
  }
}

TextSource::~TextSource() = default;

std::string TextSource::content_hash() const {
  StreamingHash h;
  for (const std::string& f : files_) {
    h.update(fs::path(f).filename().string() + "\n");
    h.update(read_file(f));
  }
  return h.hex_digest();
}

bool TextSource::next(TextDocument* doc) {
  while (true) {
    if (jsonl_) {
      std::string line;
      while (std::getline(*jsonl_, line)) {
        ++jsonl_line_;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const std::string where = files_[file_index_ - 1] + ":" + std::to_string(jsonl_line_);
        auto j = nlohmann::json::parse(line, nullptr, false);
        SKV_CHECK(!j.is_discarded() && j.is_object(), where, ": not a JSON object");
        SKV_CHECK(j.contains("text") && j["text"].is_string(), where,
                  ": missing string field 'text'");
        doc->source = where;
        doc->text = j["text"].get<std::string>();
        if (doc->text.empty()) continue;
        check_utf8(doc->text, where);
        return true;
      }
      jsonl_.reset();
    }
    if (file_index_ >= files_.size()) return false;
    const std::string& path = files_[file_index_++];
    if (is_jsonl(path)) {
      jsonl_ = std::make_unique<std::ifstream>(path, std::ios::binary);
      SKV_CHECK(jsonl_->good(), "cannot open '", path, "'");
      jsonl_line_ = 0;
      continue;
    }
    doc->source = path;
    doc->text = read_file(path);
    if (doc->text.empty()) continue;
    check_utf8(doc->text, path);
    return true;
  }
}

TokenSequencer::TokenSequencer(const Tokenizer& tokenizer, int64_t seq_len)
    : tokenizer_(tokenizer), seq_len_(seq_len) {
  SKV_CHECK_GE(seq_len, 2, "sequence length must be at least 2");
}

void TokenSequencer::add_document(const std::string& text) {
  std::vector<int64_t> ids = tokenizer_.encode(text);
  buffer_.insert(buffer_.end(), ids.begin(), ids.end());
  if (tokenizer_.eos_id) buffer_.push_back(*tokenizer_.eos_id);
}

bool TokenSequencer::next_sequence(std::vector<int64_t>* out) {
  const bool bos = tokenizer_.bos_id.has_value();
  const size_t body = static_cast<size_t>(seq_len_ - (bos ? 1 : 0));
  if (buffer_.size() < body) return false;
  out->clear();
  if (bos) out->push_back(*tokenizer_.bos_id);
  out->insert(out->end(), buffer_.begin(), buffer_.begin() + body);
  buffer_.erase(buffer_.begin(), buffer_.begin() + body);
  return true;
}

}  // namespace spindlekv
