// The test executables' main: the BLAS kernel fix first (as in the CLI), then
// every test.
#include <gtest/gtest.h>

#include "core/blas_kernels.h"

int main(int argc, char** argv) {
  spindlekv::fix_blas_kernels(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
