// Which BLAS kernels this process runs, and a fix for OpenBLAS builds that do
// not recognise the CPU.
//
// Debian's OpenBLAS (0.3.21, DYNAMIC_ARCH) picks its kernels from the CPU id
// at load time; on CPUs newer than the release (some Xeons, for example) it
// falls back to its SSE3 "Prescott" kernels, which run sgemm about 5x slower.
// OPENBLAS_CORETYPE overrides the choice, but only before the library loads,
// so the fix re-executes the process once with it set.
#pragma once

#include <string>

namespace spindlekv {

/// The instruction sets that decide which OpenBLAS kernels a CPU can run.
struct CpuFeatures {
  bool avx = false;
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512dq = false;
  bool avx512vl = false;
};

/// This CPU's features (__builtin_cpu_supports; all false off x86-64).
CpuFeatures detect_cpu_features();

/// The kernel set OpenBLAS chose ("Haswell", "SkylakeX", ...), read through
/// openblas_get_corename; empty when the BLAS in this process is not OpenBLAS.
std::string openblas_core_name();

/// The CPU's model name from /proc/cpuinfo ("unknown" when unreadable).
std::string cpu_model_name();

/// The OpenBLAS kernel set to force for a CPU with `cpu` features when OpenBLAS
/// picked `current`: "SkylakeX" where AVX-512 (F, BW, DQ, VL) is available and
/// `current` is an older kernel set, "Haswell" where AVX2 and FMA are and
/// `current` predates them; empty when `current` is already as good, is empty
/// (another BLAS) or is a name this function does not know.
std::string better_openblas_core(const std::string& current, const CpuFeatures& cpu);

/// Called first thing in main(): when OpenBLAS picked kernels below what the
/// CPU supports (better_openblas_core) and OPENBLAS_CORETYPE is unset, logs one
/// line to stderr and re-executes the program with OPENBLAS_CORETYPE set; it
/// then returns only if the re-exec failed. Does nothing when argv holds
/// "--no-blas-fix" or SPINDLEKV_NO_BLAS_FIX is set to anything but "0".
/// SPINDLEKV_BLAS_PRETEND_CORE replaces the detected core name, to exercise
/// the fix on a machine whose OpenBLAS detects its CPU correctly.
void fix_blas_kernels(int argc, char** argv);

/// One line for benchmark output and logs: BLAS kernels, LibTorch's thread
/// count and the CPU model, e.g. "blas OpenBLAS Cooperlake, 2 threads, AMD EPYC".
std::string compute_environment();

}  // namespace spindlekv
