#include "core/model_fingerprint.h"

// Inlined so the runtime library links no xxHash shared object.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstdio>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/model_config.h"
#include "core/safetensors_reader.h"

namespace spindlekv {

StreamingHash::StreamingHash() : state_(XXH3_createState()) {
  SKV_ASSERT(state_ != nullptr, "XXH3_createState failed");
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_));
}

StreamingHash::~StreamingHash() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void StreamingHash::update(const void* data, size_t size) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), data, size);
}

std::string StreamingHash::hex_digest() const {
  const XXH128_hash_t h = XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_));
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return buf;
}

std::string hash_bytes(const std::string& bytes) {
  StreamingHash h;
  h.update(bytes);
  return h.hex_digest();
}

std::string ModelFingerprint::to_string() const {
  return architecture_hash + ":" + tensors_hash + ":" + weights_hash;
}

ModelFingerprint fingerprint_model(const std::string& model_dir) {
  return with_context("fingerprinting model '" + model_dir + "'", [&] {
    const ModelConfig c = load_model_config(model_dir);
    const Checkpoint ckpt(model_dir);
    ModelFingerprint fp;
    // Only fields that change the KV cache or the weights' meaning; the
    // stored dtype is covered by the tensor hash.
    ModelConfig arch = c;
    arch.torch_dtype.clear();
    fp.architecture_hash = hash_bytes(model_config_to_json(arch));
    StreamingHash tensors, weights;
    for (const std::string& name : ckpt.tensor_names()) {
      std::string line = name + "|" + ckpt.dtype_name(name);
      for (int64_t d : ckpt.shape(name)) line += "|" + std::to_string(d);
      tensors.update(line + "\n");
    }
    // Files in name order; each data section whole (it holds every tensor).
    for (const SafetensorsReader* r : ckpt.files()) {
      weights.update(r->data_section(), r->data_section_size());
    }
    fp.tensors_hash = tensors.hex_digest();
    fp.weights_hash = weights.hex_digest();
    return fp;
  });
}

}  // namespace spindlekv
