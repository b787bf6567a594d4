// Test fixtures for device and cache tests: the test device and a random
// artifact (implemented in test_util.cpp, part of spindlekv_test_util).
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>

#include "core/model_config.h"

namespace spindlekv {
struct Artifact;  // runtime/artifact.h
}  // namespace spindlekv

namespace spindlekv::testutil {

/// The device the device tests run on: $SPINDLEKV_TEST_DEVICE ("cuda",
/// "cuda:1", ...), CPU when unset. Throws naming the variable and its value
/// when LibTorch cannot parse it or this build has no such device.
c10::Device test_device();

/// An artifact of random unit codebooks for `c`: 16 key entries per KV head
/// and 16 value entries shared by the heads, per layer; budgets keep all.
std::shared_ptr<Artifact> random_artifact(const ModelConfig& c, uint64_t seed);

}  // namespace spindlekv::testutil
