// The plugin module itself: the only translation unit that includes
// libsentencepiece's headers. Built as a MODULE library and loaded with
// dlopen; see sentencepiece_plugin.h for why.
#include <sentencepiece_processor.h>

#include <memory>

#include "model/sentencepiece_plugin.h"

namespace {

using spindlekv::detail::SentencePieceApi;

sentencepiece::SentencePieceProcessor* get(void* h) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(h);
}

void* load(const char* model_path, std::string* error) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = sp->Load(model_path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return sp.release();
}

void release(void* h) { delete get(h); }

bool encode(void* h, const std::string& text, std::vector<int>* ids, std::string* error) {
  const auto status = get(h)->Encode(text, ids);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

bool decode(void* h, const std::vector<int>& ids, std::string* text, std::string* error) {
  const auto status = get(h)->Decode(ids, text);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

int vocab_size(void* h) { return get(h)->GetPieceSize(); }
int bos_id(void* h) { return get(h)->bos_id(); }
int eos_id(void* h) { return get(h)->eos_id(); }
int unk_id(void* h) { return get(h)->unk_id(); }
int piece_to_id(void* h, const std::string& piece) { return get(h)->PieceToId(piece); }
bool id_to_piece(void* h, int id, std::string* piece) {
  if (id < 0 || id >= get(h)->GetPieceSize()) return false;
  *piece = get(h)->IdToPiece(id);
  return true;
}

const SentencePieceApi kApi = {spindlekv::detail::kSentencePieceAbiVersion,
                               load,
                               release,
                               encode,
                               decode,
                               vocab_size,
                               bos_id,
                               eos_id,
                               unk_id,
                               piece_to_id,
                               id_to_piece};

}  // namespace

extern "C" __attribute__((visibility("default"))) const SentencePieceApi*
spindlekv_sentencepiece_api() {
  return &kApi;
}
