// Locates and dlopens the sentencepiece plugin (see sentencepiece_plugin.h).
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "core/error.h"
#include "model/sentencepiece_plugin.h"

namespace spindlekv::detail {
namespace {

namespace fs = std::filesystem;
constexpr const char* kPluginName = "libspindlekv_sentencepiece.so";

// Where to look, in order: $SPINDLEKV_PLUGIN_DIR, the build tree, beside the
// executable's ../lib/spindlekv (an installed tree), the install prefix.
std::vector<std::string> candidate_paths() {
  std::vector<std::string> out;
  if (const char* dir = std::getenv("SPINDLEKV_PLUGIN_DIR")) {
    out.push_back((fs::path(dir) / kPluginName).string());
  }
#ifdef SPINDLEKV_PLUGIN_BUILD_DIR
  out.push_back((fs::path(SPINDLEKV_PLUGIN_BUILD_DIR) / kPluginName).string());
#endif
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) out.push_back((exe.parent_path() / ".." / "lib" / "spindlekv" / kPluginName).string());
#ifdef SPINDLEKV_PLUGIN_INSTALL_DIR
  out.push_back((fs::path(SPINDLEKV_PLUGIN_INSTALL_DIR) / kPluginName).string());
#endif
  return out;
}

const SentencePieceApi* load_plugin() {
  std::string tried;
  for (const std::string& path : candidate_paths()) {
    if (!fs::exists(path)) {
      tried += "\n  " + path + " (absent)";
      continue;
    }
    // RTLD_DEEPBIND keeps libsentencepiece's bundled protobuf from binding to
    // (or being bound by) the system libprotobuf that LibTorch loaded.
    void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) {
      tried += "\n  " + path + " (" + ::dlerror() + ")";
      continue;
    }
    using Getter = const SentencePieceApi* (*)();
    auto getter = reinterpret_cast<Getter>(::dlsym(handle, "spindlekv_sentencepiece_api"));
    if (getter == nullptr || getter()->abi_version != kSentencePieceAbiVersion) {
      tried += "\n  " + path + " (not a matching SpindleKV sentencepiece plugin)";
      continue;
    }
    return getter();
  }
  SKV_THROW(kUnsupported, "SentencePiece support is not available: cannot load ", kPluginName,
            "; looked in:", tried, "\n(set SPINDLEKV_PLUGIN_DIR to the directory holding it)");
}

}  // namespace

const SentencePieceApi& sentencepiece_api() {
  static std::once_flag once;
  static const SentencePieceApi* api = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    try {
      api = load_plugin();
    } catch (const Error& e) {
      failure = e.message();
    }
  });
  if (api == nullptr) SKV_THROW(kUnsupported, failure);
  return *api;
}

}  // namespace spindlekv::detail
