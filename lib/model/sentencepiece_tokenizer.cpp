// SentencePiece tokenizer: a thin wrapper over sentencepiece's own processor,
// so that Llama-2-style tokenizer.model files behave exactly as in Python.
// libsentencepiece is reached through a dlopen'd plugin (see
// sentencepiece_plugin.h for why it cannot be linked directly).
#include <fstream>

#include "core/error.h"
#include "model/sentencepiece_plugin.h"
#include "model/tokenizer.h"

namespace spindlekv {
namespace {

using detail::SentencePieceApi;

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(const SentencePieceApi& api, void* handle, std::string path)
      : api_(api), handle_(handle), path_(std::move(path)) {
    // sentencepiece reports a disabled BOS/EOS as -1.
    if (api_.bos_id(handle_) >= 0) bos_id = api_.bos_id(handle_);
    if (api_.eos_id(handle_) >= 0) eos_id = api_.eos_id(handle_);
  }
  ~SentencePieceTokenizer() override { api_.release(handle_); }

  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int> ids;
    std::string error;
    if (!api_.encode(handle_, text, &ids, &error)) {
      SKV_THROW(kInvalidInput, path_, ": sentencepiece could not encode the text: ", error);
    }
    return std::vector<int64_t>(ids.begin(), ids.end());
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    const int64_t size = vocab_size();
    std::vector<int> narrow;
    narrow.reserve(ids.size());
    for (int64_t id : ids) {
      // Checked here so that the message names the id and the vocabulary
      // size; the int narrowing below is safe only after this check.
      if (id < 0 || id >= size) {
        SKV_THROW(kInvalidInput, path_, ": token id ", id, " is outside the vocabulary [0, ", size,
                  ")");
      }
      narrow.push_back(static_cast<int>(id));
    }
    std::string text, error;
    if (!api_.decode(handle_, narrow, &text, &error)) {
      SKV_THROW(kInvalidInput, path_, ": sentencepiece could not decode: ", error);
    }
    return text;
  }

  int64_t vocab_size() const override { return api_.vocab_size(handle_); }
  std::string name() const override { return "sentencepiece"; }

  std::optional<int64_t> token_to_id(const std::string& token) const override {
    const int id = api_.piece_to_id(handle_, token);
    // PieceToId answers unk_id for unknown pieces; only the unk piece itself
    // may legitimately map there.
    std::string piece;
    if (id == api_.unk_id(handle_) && (!api_.id_to_piece(handle_, id, &piece) || piece != token)) {
      return std::nullopt;
    }
    return id;
  }

 private:
  const SentencePieceApi& api_;
  void* handle_;
  std::string path_;  // names the model in errors raised after loading
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& model_path) {
  // Probe the file first: sentencepiece's "NotFound" message does not say
  // whether the path or the content is at fault.
  if (!std::ifstream(model_path, std::ios::binary)) {
    SKV_THROW(kIo, "cannot open sentencepiece model ", model_path);
  }
  const SentencePieceApi& api = detail::sentencepiece_api();
  std::string error;
  void* handle = api.load(model_path.c_str(), &error);
  if (handle == nullptr) {
    SKV_THROW(kInvalidInput, model_path, ": not a valid sentencepiece model: ", error);
  }
  return std::make_unique<SentencePieceTokenizer>(api, handle, model_path);
}

}  // namespace spindlekv
