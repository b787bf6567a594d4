// Internal: the boundary between SpindleKV and Debian's libsentencepiece.
//
// Why a plugin: Debian's libsentencepiece bundles its own copy of
// protobuf-lite and exports those symbols. Linked into a process that also
// loads LibTorch (which links the system libprotobuf), the two copies
// interpose each other and the process crashes during static initialisation.
// So libsentencepiece is only ever loaded through this small module, with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND): its protobuf stays private to it.
// The trainer is deliberately not exposed: it logs through std::cerr, and
// under RTLD_DEEPBIND the library sees libstdc++'s own (uninitialised) cerr
// rather than the executable's copy-relocated one. Use Debian's spm_train.
#pragma once

#include <string>
#include <vector>

namespace spindlekv::detail {

/// Function table exported by the plugin as `spindlekv_sentencepiece_api`.
/// No exception crosses it: failures return false / nullptr with `error` set.
struct SentencePieceApi {
  int abi_version;  ///< kSentencePieceAbiVersion
  void* (*load)(const char* model_path, std::string* error);
  void (*release)(void* handle);
  bool (*encode)(void* handle, const std::string& text, std::vector<int>* ids, std::string* error);
  bool (*decode)(void* handle, const std::vector<int>& ids, std::string* text, std::string* error);
  int (*vocab_size)(void* handle);
  int (*bos_id)(void* handle);  ///< -1 when the model has none
  int (*eos_id)(void* handle);  ///< -1 when the model has none
  int (*unk_id)(void* handle);
  int (*piece_to_id)(void* handle, const std::string& piece);  ///< unk_id when unknown
  bool (*id_to_piece)(void* handle, int id, std::string* piece);
};

constexpr int kSentencePieceAbiVersion = 1;

/// Loads the plugin once per process; throws spindlekv::Error (kUnsupported)
/// saying where it looked when it cannot be loaded.
const SentencePieceApi& sentencepiece_api();

}  // namespace spindlekv::detail
