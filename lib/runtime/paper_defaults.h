// The SpindleKV paper's hyperparameters (../shared/SPINDLEKV.md), defined
// once: every stage's defaults refer to these.
#pragma once

#include <cstdint>

namespace spindlekv::paper {

/// theta_K: cosine similarity above which a codebook entry stands for a key.
inline constexpr double kKeyThreshold = 0.98;
/// theta_V: the same for values.
inline constexpr double kValueThreshold = 0.95;
/// beta: the pyramid's smallest per-layer keep fraction.
inline constexpr double kPyramidBeta = 0.05;
/// l_w: the observation window (last prefill tokens, always kept).
inline constexpr int64_t kWindow = 32;

}  // namespace spindlekv::paper
