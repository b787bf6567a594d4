#include "core/blas_kernels.h"

#include <gtest/gtest.h>

namespace spindlekv {
namespace {

CpuFeatures avx2_cpu() {
  CpuFeatures f;
  f.avx = f.avx2 = f.fma = true;
  return f;
}

CpuFeatures avx512_cpu() {
  CpuFeatures f = avx2_cpu();
  f.avx512f = f.avx512bw = f.avx512dq = f.avx512vl = true;
  return f;
}

TEST(BlasKernels, GenericCoreOnAvx512CpuGetsSkylakeX) {
  EXPECT_EQ(better_openblas_core("Prescott", avx512_cpu()), "SkylakeX");
  EXPECT_EQ(better_openblas_core("Haswell", avx512_cpu()), "SkylakeX");
  EXPECT_EQ(better_openblas_core("Zen", avx512_cpu()), "SkylakeX");
  EXPECT_EQ(better_openblas_core("Sandybridge", avx512_cpu()), "SkylakeX");
}

TEST(BlasKernels, GenericCoreOnAvx2CpuGetsHaswell) {
  EXPECT_EQ(better_openblas_core("Prescott", avx2_cpu()), "Haswell");
  EXPECT_EQ(better_openblas_core("Nehalem", avx2_cpu()), "Haswell");
  EXPECT_EQ(better_openblas_core("Sandybridge", avx2_cpu()), "Haswell");
}

TEST(BlasKernels, NothingChangesWhenTheCoreIsAlreadyAsGood) {
  EXPECT_EQ(better_openblas_core("SkylakeX", avx512_cpu()), "");
  EXPECT_EQ(better_openblas_core("Cooperlake", avx512_cpu()), "");
  EXPECT_EQ(better_openblas_core("SapphireRapids", avx512_cpu()), "");
  EXPECT_EQ(better_openblas_core("Haswell", avx2_cpu()), "");
  EXPECT_EQ(better_openblas_core("Zen", avx2_cpu()), "");
}

TEST(BlasKernels, NothingChangesWhenTheCpuLacksTheFeatures) {
  EXPECT_EQ(better_openblas_core("Prescott", CpuFeatures{}), "");
  CpuFeatures avx_only;
  avx_only.avx = true;
  EXPECT_EQ(better_openblas_core("Prescott", avx_only), "");
  // AVX-512 foundation alone (Xeon Phi) is not enough for the SkylakeX kernels.
  CpuFeatures phi = avx2_cpu();
  phi.avx512f = true;
  EXPECT_EQ(better_openblas_core("Prescott", phi), "Haswell");
}

TEST(BlasKernels, NothingChangesForAnotherBlasOrAnUnknownCore) {
  EXPECT_EQ(better_openblas_core("", avx512_cpu()), "");
  EXPECT_EQ(better_openblas_core("NewCoreFrom2030", avx512_cpu()), "");
}

TEST(BlasKernels, EnvironmentLineNamesThreadsAndCpu) {
  const std::string line = compute_environment();
  EXPECT_EQ(line.rfind("blas ", 0), 0u) << line;
  EXPECT_NE(line.find(" threads, "), std::string::npos) << line;
}

}  // namespace
}  // namespace spindlekv
