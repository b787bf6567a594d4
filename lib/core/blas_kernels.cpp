#include "core/blas_kernels.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>

namespace spindlekv {
namespace {

// OpenBLAS 0.3.21's x86-64 kernel sets by the newest vector extension they use.
enum Level { kSse = 0, kAvx = 1, kAvx2 = 2, kAvx512 = 3 };

const std::map<std::string, int>& core_levels() {
  static const std::map<std::string, int> levels = {
      {"Katmai", kSse},        {"Coppermine", kSse},
      {"Northwood", kSse},     {"Prescott", kSse},
      {"Banias", kSse},        {"Atom", kSse},
      {"Core2", kSse},         {"Penryn", kSse},
      {"Dunnington", kSse},    {"Nehalem", kSse},
      {"Athlon", kSse},        {"Opteron", kSse},
      {"Opteron_SSE3", kSse},  {"Barcelona", kSse},
      {"Nano", kSse},          {"Bobcat", kSse},
      {"Sandybridge", kAvx},   {"Bulldozer", kAvx},
      {"Piledriver", kAvx},    {"Steamroller", kAvx},
      {"Excavator", kAvx2},    {"Haswell", kAvx2},
      {"Zen", kAvx2},          {"SkylakeX", kAvx512},
      {"Cooperlake", kAvx512}, {"SapphireRapids", kAvx512},
  };
  return levels;
}

bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

}  // namespace

CpuFeatures detect_cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  f.avx = __builtin_cpu_supports("avx");
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
#endif
  return f;
}

std::string openblas_core_name() {
  // Looked up at run time: LibTorch links whichever libblas.so.3 the system's
  // alternatives point at, and only OpenBLAS has this symbol.
  using CoreName = char* (*)();
  auto fn = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (fn == nullptr) return "";
  const char* name = fn();
  return name != nullptr ? std::string(name) : std::string();
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) break;
    const size_t start = line.find_first_not_of(" \t", colon + 1);
    return start == std::string::npos ? "unknown" : line.substr(start);
  }
  return "unknown";
}

std::string better_openblas_core(const std::string& current, const CpuFeatures& cpu) {
  const auto it = core_levels().find(current);
  if (it == core_levels().end()) return "";  // not OpenBLAS, or a core we do not know
  if (cpu.avx512f && cpu.avx512bw && cpu.avx512dq && cpu.avx512vl && it->second < kAvx512) {
    return "SkylakeX";
  }
  if (cpu.avx2 && cpu.fma && it->second < kAvx2) return "Haswell";
  return "";
}

void fix_blas_kernels(int argc, char** argv) {
  if (env_set("SPINDLEKV_NO_BLAS_FIX") || std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no-blas-fix") == 0) return;
  }
  std::string current = openblas_core_name();
  const char* pretend = std::getenv("SPINDLEKV_BLAS_PRETEND_CORE");
  if (!current.empty() && pretend != nullptr && *pretend != '\0') current = pretend;
  const std::string better = better_openblas_core(current, detect_cpu_features());
  if (better.empty()) return;
  std::fprintf(stderr,
               "spindlekv: OpenBLAS chose its %s kernels on a CPU that runs %s; re-running with "
               "OPENBLAS_CORETYPE=%s (--no-blas-fix or SPINDLEKV_NO_BLAS_FIX=1 turns this off)\n",
               current.c_str(), better.c_str(), better.c_str());
  std::fflush(stderr);
  setenv("OPENBLAS_CORETYPE", better.c_str(), 1);
  unsetenv("SPINDLEKV_BLAS_PRETEND_CORE");
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "spindlekv: re-running failed (%s); continuing with the %s kernels\n",
               std::strerror(errno), current.c_str());
  unsetenv("OPENBLAS_CORETYPE");
}

std::string compute_environment() {
  const std::string core = openblas_core_name();
  return "blas " + (core.empty() ? std::string("not OpenBLAS") : "OpenBLAS " + core) + ", " +
         std::to_string(at::get_num_threads()) + " threads, " + cpu_model_name();
}

}  // namespace spindlekv
