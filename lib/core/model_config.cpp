#include "core/model_config.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"

namespace spindlekv {
namespace {

using nlohmann::json;

int64_t get_int(const json& j, const char* key, std::optional<int64_t> fallback = std::nullopt) {
  if (!j.contains(key) || j[key].is_null()) {
    if (fallback) return *fallback;
    SKV_THROW(kInvalidInput, "missing key '", key, "'");
  }
  SKV_CHECK(j[key].is_number_integer(), "key '", key, "' must be an integer, got ", j[key].dump());
  return j[key].get<int64_t>();
}

double get_double(const json& j, const char* key, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  SKV_CHECK(j[key].is_number(), "key '", key, "' must be a number, got ", j[key].dump());
  return j[key].get<double>();
}

bool get_bool(const json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  SKV_CHECK(j[key].is_boolean(), "key '", key, "' must be true or false, got ", j[key].dump());
  return j[key].get<bool>();
}

std::optional<int64_t> get_token_id(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const json& v = j[key];
  if (v.is_number_integer()) return v.get<int64_t>();
  // Llama 3 lists several end-of-turn ids; the first is the end of text.
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
  SKV_THROW(kInvalidInput, "key '", key, "' must be an integer or a list of integers, got ",
            v.dump());
}

void parse_rope(const json& j, ModelConfig& c) {
  c.rope.theta = get_double(j, "rope_theta", 10000.0);
  const char* key = "rope_scaling";
  if ((!j.contains(key) || j[key].is_null()) && j.contains("rope_parameters") &&
      !j["rope_parameters"].is_null()) {
    // transformers >= 5 writes theta and scaling together in rope_parameters.
    key = "rope_parameters";
    const json& p = j[key];
    SKV_CHECK(p.is_object() && (p.contains("rope_type") || p.contains("rope_theta")),
              "key 'rope_parameters' must be an object with rope_type or rope_theta (one set "
              "for every layer), got ",
              p.dump());
    c.rope.theta = get_double(p, "rope_theta", c.rope.theta);
  }
  if (!j.contains(key) || j[key].is_null()) return;
  const json& s = j[key];
  SKV_CHECK(s.is_object(), "key '", key, "' must be an object or null, got ", s.dump());
  std::string type;
  if (s.contains("rope_type"))
    type = s["rope_type"].get<std::string>();
  else if (s.contains("type"))
    type = s["type"].get<std::string>();
  if (type == "default" || type.empty()) return;
  c.rope.factor = get_double(s, "factor", 1.0);
  SKV_CHECK_GT(c.rope.factor, 0.0, "rope_scaling.factor must be positive");
  if (type == "linear") {
    c.rope.scaling = RopeScaling::kLinear;
  } else if (type == "llama3") {
    c.rope.scaling = RopeScaling::kLlama3;
    c.rope.low_freq_factor = get_double(s, "low_freq_factor", 1.0);
    c.rope.high_freq_factor = get_double(s, "high_freq_factor", 4.0);
    c.rope.original_max_position_embeddings =
        get_int(s, "original_max_position_embeddings", int64_t{8192});
    SKV_CHECK_GT(c.rope.high_freq_factor, c.rope.low_freq_factor,
                 "rope_scaling: high_freq_factor must exceed low_freq_factor");
  } else {
    SKV_THROW(kUnsupported, key, " type '", type,
              "' is not supported (supported: default, linear, llama3)");
  }
}

}  // namespace

void CacheGeometry::validate() const {
  SKV_CHECK_GT(num_layers, 0, "num_hidden_layers must be positive");
  SKV_CHECK_GT(num_heads, 0, "num_attention_heads must be positive");
  SKV_CHECK_GT(num_kv_heads, 0, "num_key_value_heads must be positive");
  SKV_CHECK_EQ(num_heads % num_kv_heads, 0,
               "num_attention_heads must be a multiple of num_key_value_heads");
  SKV_CHECK_GT(head_dim, 0, "head_dim must be positive");
  SKV_CHECK_EQ(head_dim % 2, 0, "head_dim must be even for rotary embeddings");
  SKV_CHECK_GT(rope.theta, 0.0, "rope_theta must be positive");
  SKV_CHECK_GE(sliding_window, 0, "sliding_window must be non-negative");
}

CacheGeometry ModelConfig::geometry() const {
  CacheGeometry g;
  g.num_layers = num_layers;
  g.num_heads = num_heads;
  g.num_kv_heads = num_kv_heads;
  g.head_dim = head_dim;
  g.rope = rope;
  g.sliding_window = sliding_window;
  return g;
}

void ModelConfig::validate() const {
  SKV_CHECK_GT(vocab_size, 0, "vocab_size must be positive");
  SKV_CHECK_GT(hidden_size, 0, "hidden_size must be positive");
  SKV_CHECK_GT(intermediate_size, 0, "intermediate_size must be positive");
  geometry().validate();
  SKV_CHECK_GT(max_position_embeddings, 0, "max_position_embeddings must be positive");
  SKV_CHECK_GT(rms_norm_eps, 0.0, "rms_norm_eps must be positive");
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& source) {
  return with_context("parsing '" + source + "'", [&] {
    json j = json::parse(json_text, nullptr, false);
    SKV_CHECK(!j.is_discarded(), "not valid JSON");
    SKV_CHECK(j.is_object(), "top level is not a JSON object");
    ModelConfig c;
    if (j.contains("architectures") && j["architectures"].is_array() &&
        !j["architectures"].empty()) {
      c.architecture = j["architectures"][0].get<std::string>();
    }
    if (j.contains("model_type") && j["model_type"].is_string()) {
      c.model_type = j["model_type"].get<std::string>();
    }
    const bool known_arch = c.architecture == "LlamaForCausalLM" ||
                            c.architecture == "MistralForCausalLM" ||
                            c.architecture == "Qwen2ForCausalLM";
    if (!known_arch) {
      SKV_THROW(kUnsupported, "architecture '", c.architecture,
                "' is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
    }
    if (j.contains("hidden_act") && j["hidden_act"].is_string()) {
      const std::string act = j["hidden_act"].get<std::string>();
      if (act != "silu") SKV_THROW(kUnsupported, "hidden_act '", act, "' is not supported (silu)");
    }
    c.vocab_size = get_int(j, "vocab_size");
    c.hidden_size = get_int(j, "hidden_size");
    c.intermediate_size = get_int(j, "intermediate_size");
    c.num_layers = get_int(j, "num_hidden_layers");
    c.num_heads = get_int(j, "num_attention_heads");
    c.num_kv_heads = get_int(j, "num_key_value_heads", c.num_heads);
    SKV_CHECK_GT(c.num_heads, 0, "num_attention_heads must be positive");
    c.head_dim = get_int(j, "head_dim", c.hidden_size / c.num_heads);
    c.max_position_embeddings = get_int(j, "max_position_embeddings", int64_t{2048});
    c.rms_norm_eps = get_double(j, "rms_norm_eps", 1e-6);
    c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false);
    // Qwen2 always has q/k/v biases and its config does not say so.
    c.attention_bias = get_bool(j, "attention_bias", c.architecture == "Qwen2ForCausalLM");
    if (c.architecture == "Qwen2ForCausalLM") {
      if (get_bool(j, "use_sliding_window", false)) {
        c.sliding_window = get_int(j, "sliding_window", int64_t{0});
      }
    } else {
      c.sliding_window = get_int(j, "sliding_window", int64_t{0});
    }
    if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) {
      c.torch_dtype = j["torch_dtype"].get<std::string>();
    }
    c.bos_token_id = get_token_id(j, "bos_token_id");
    c.eos_token_id = get_token_id(j, "eos_token_id");
    parse_rope(j, c);
    c.validate();
    return c;
  });
}

ModelConfig load_model_config(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  if (!std::filesystem::exists(path)) {
    SKV_THROW(kInvalidInput, "model directory '", model_dir, "' has no config.json");
  }
  return parse_model_config(read_file(path), path);
}

std::string model_config_to_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope.theta;
  switch (c.rope.scaling) {
    case RopeScaling::kNone:
      j["rope_scaling"] = nullptr;
      break;
    case RopeScaling::kLinear:
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope.factor}};
      break;
    case RopeScaling::kLlama3:
      j["rope_scaling"] = {
          {"rope_type", "llama3"},
          {"factor", c.rope.factor},
          {"low_freq_factor", c.rope.low_freq_factor},
          {"high_freq_factor", c.rope.high_freq_factor},
          {"original_max_position_embeddings", c.rope.original_max_position_embeddings}};
      break;
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["attention_bias"] = c.attention_bias;
  if (c.architecture == "Qwen2ForCausalLM") j["use_sliding_window"] = c.sliding_window > 0;
  j["sliding_window"] = c.sliding_window > 0 ? nlohmann::ordered_json(c.sliding_window)
                                             : nlohmann::ordered_json(nullptr);
  j["torch_dtype"] = c.torch_dtype;
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_id) j["eos_token_id"] = *c.eos_token_id;
  return j.dump(2) + "\n";
}

}  // namespace spindlekv
