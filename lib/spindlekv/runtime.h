// SpindleKV's engine API in one include: what an inference engine links
// (SpindleKV::spindlekv_runtime) to compress a live KV cache and attend over
// it. Each header documents its own tensors; start with compressed_cache.h.
//
//   CacheGeometry          core/cache_geometry.h     the engine's model: layers, heads, RoPE
//   CompressedCache        runtime/compressed_cache.h  prefill, decode, memory, save/load
//   CompressionParameters  runtime/compressed_cache.h  reserve ratio, budgets, codebook mode
//   Artifact               runtime/artifact.h        calibrated codebooks and budgets
//   EvictionPolicy         runtime/eviction_policy.h   stage 1, and the baselines' plug-in point
//   AttentionCache         runtime/attention_cache.h   the interface a decoder attends through
#pragma once

#include "core/cache_geometry.h"
#include "core/error.h"
#include "runtime/artifact.h"
#include "runtime/attention_cache.h"
#include "runtime/baseline_policies.h"
#include "runtime/codebook_builder.h"
#include "runtime/compressed_cache.h"
#include "runtime/eviction_policy.h"
#include "runtime/layer_budgets.h"
#include "runtime/paper_defaults.h"
