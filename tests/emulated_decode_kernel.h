// The fused decode kernels (runtime/detail/decode_kernels.cuh) run on the
// CPU under tests/simt.h: a launcher for detail::set_cpu_decode_launcher.
#pragma once

#include <cstdint>

namespace spindlekv::detail {
struct DecodeLaunch;  // runtime/detail/decode_launch.h
struct AppendLaunch;
}  // namespace spindlekv::detail

namespace spindlekv::testutil {

/// Runs both kernels of `launch` to completion on the calling thread
/// (`stream` is ignored); returns the dispatcher's error, or nullptr.
const char* emulated_decode_launch(const detail::DecodeLaunch& launch, void* stream);

/// The same for the fused append's kernel.
const char* emulated_append_launch(const detail::AppendLaunch& launch, void* stream);

/// Launches emulated_decode_launch has run since the process started.
int64_t emulated_decode_launches();
/// Launches emulated_append_launch has run since the process started.
int64_t emulated_append_launches();

}  // namespace spindlekv::testutil
