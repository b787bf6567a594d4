// Internal: the reference the just-in-time builder is tested and benchmarked
// against (not installed).
#pragma once

#include <ATen/Tensor.h>

#include "runtime/codebook_builder.h"

namespace spindlekv {

/// build_jit_codebook's greedy cover written as printed (degrees recounted
/// over the remaining graph every round, O(n^3)); the same result.
JitCodebook build_jit_codebook_naive(const at::Tensor& directions, double threshold);

}  // namespace spindlekv
