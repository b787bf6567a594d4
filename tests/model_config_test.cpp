#include "core/model_config.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace spindlekv {
namespace {

const char* kLlama3 = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
  "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
  "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "hidden_act": "silu", "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]})";

TEST(ModelConfig, ParsesLlama3WithRopeScalingAndEosList) {
  ModelConfig c = parse_model_config(kLlama3, "config.json");
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.group_size(), 4);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rope.scaling, RopeScaling::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(*c.eos_token_id, 128001);
  EXPECT_EQ(c.kv_bytes_per_token(2), 2 * 32 * 8 * 128 * 2);
}

TEST(ModelConfig, Qwen2HasAttentionBiasAndNoWindowUnlessEnabled) {
  ModelConfig c = parse_model_config(R"({"architectures":["Qwen2ForCausalLM"],
    "hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
    "num_key_value_heads":2,"vocab_size":100,"sliding_window":32,"use_sliding_window":false})",
                                     "q.json");
  EXPECT_TRUE(c.attention_bias);
  EXPECT_EQ(c.sliding_window, 0);
}

TEST(ModelConfig, MistralKeepsSlidingWindow) {
  ModelConfig c = parse_model_config(R"({"architectures":["MistralForCausalLM"],
    "hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
    "num_key_value_heads":1,"vocab_size":100,"sliding_window":4096})",
                                     "m.json");
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_FALSE(c.attention_bias);
}

TEST(ModelConfig, JsonRoundTripPreservesEveryField) {
  ModelConfig c = parse_model_config(kLlama3, "config.json");
  ModelConfig back = parse_model_config(model_config_to_json(c), "round trip");
  EXPECT_EQ(back.hidden_size, c.hidden_size);
  EXPECT_EQ(back.num_kv_heads, c.num_kv_heads);
  EXPECT_EQ(back.rope.scaling, c.rope.scaling);
  EXPECT_DOUBLE_EQ(back.rope.high_freq_factor, c.rope.high_freq_factor);
  EXPECT_EQ(back.bos_token_id, c.bos_token_id);
  EXPECT_EQ(back.max_position_embeddings, c.max_position_embeddings);
}

TEST(ModelConfig, MissingKeyIsNamedWithTheFile) {
  EXPECT_SKV_ERROR(parse_model_config(R"({"architectures":["LlamaForCausalLM"],
    "hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":10})",
                                      "/models/x/config.json"),
                   "parsing '/models/x/config.json': missing key 'intermediate_size'");
}

TEST(ModelConfig, UnknownArchitectureIsUnsupported) {
  EXPECT_SKV_ERROR(parse_model_config(R"({"architectures":["GPT2LMHeadModel"]})", "c.json"),
                   "architecture 'GPT2LMHeadModel' is not supported");
}

TEST(ModelConfig, HeadsNotDivisibleByKvHeadsIsRefused) {
  EXPECT_SKV_ERROR(parse_model_config(R"({"architectures":["LlamaForCausalLM"],
    "hidden_size":60,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":6,
    "num_key_value_heads":4,"vocab_size":100})",
                                      "c.json"),
                   "num_key_value_heads");
}

TEST(ModelConfig, UnsupportedRopeTypeIsNamed) {
  EXPECT_SKV_ERROR(parse_model_config(R"({"architectures":["LlamaForCausalLM"],
    "hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
    "vocab_size":100,"rope_scaling":{"type":"yarn","factor":4.0}})",
                                      "c.json"),
                   "rope_scaling type 'yarn'");
}

// transformers >= 5 writes rope_theta and the scaling together.
TEST(ModelConfig, ReadsRopeParametersOfTransformersFive) {
  ModelConfig c = parse_model_config(R"({"architectures":["LlamaForCausalLM"],
    "hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
    "vocab_size":100,"rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,
    "factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
    "original_max_position_embeddings":8192}})",
                                     "c.json");
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
  EXPECT_EQ(c.rope.scaling, RopeScaling::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
  ModelConfig plain = parse_model_config(R"({"architectures":["LlamaForCausalLM"],
    "hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
    "vocab_size":100,"rope_parameters":{"rope_type":"default","rope_theta":250000.0}})",
                                         "c.json");
  EXPECT_DOUBLE_EQ(plain.rope.theta, 250000.0);
  EXPECT_EQ(plain.rope.scaling, RopeScaling::kNone);
}

TEST(ModelConfig, RopeParametersPerLayerTypeAreRefused) {
  EXPECT_SKV_ERROR(parse_model_config(R"({"architectures":["LlamaForCausalLM"],
    "hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
    "vocab_size":100,"rope_parameters":{"full_attention":{"rope_theta":1e6}}})",
                                      "c.json"),
                   "key 'rope_parameters' must be an object with rope_type or rope_theta");
}

TEST(ModelConfig, WrongTypeIsNamedWithValue) {
  EXPECT_SKV_ERROR(parse_model_config(R"({"architectures":["LlamaForCausalLM"],
    "hidden_size":"big","intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
    "vocab_size":100})",
                                      "c.json"),
                   "'hidden_size' must be an integer, got \"big\"");
}

TEST(ModelConfig, MissingConfigFileNamesDirectory) {
  testutil::TempDir dir;
  EXPECT_SKV_ERROR(load_model_config(dir.path()), "has no config.json");
}

TEST(CacheGeometry, CarriesWhatTheCacheNeedsFromTheConfig) {
  ModelConfig c = testutil::tiny_config();
  c.sliding_window = 16;
  c.rope.theta = 500000;
  const CacheGeometry g = c.geometry();
  EXPECT_EQ(g.num_layers, c.num_layers);
  EXPECT_EQ(g.num_heads, c.num_heads);
  EXPECT_EQ(g.num_kv_heads, c.num_kv_heads);
  EXPECT_EQ(g.head_dim, c.head_dim);
  EXPECT_EQ(g.sliding_window, 16);
  EXPECT_EQ(g.rope.theta, 500000);
  EXPECT_NO_THROW(g.validate());
}

TEST(CacheGeometry, InconsistentNumbersAreRefusedByTheirConfigNames) {
  CacheGeometry g;  // nothing set
  EXPECT_SKV_ERROR(g.validate(), "num_hidden_layers must be positive");
  g = testutil::tiny_config().geometry();
  g.head_dim = 7;
  EXPECT_SKV_ERROR(g.validate(), "head_dim must be even");
  g = testutil::tiny_config().geometry();
  g.num_kv_heads = 3;
  EXPECT_SKV_ERROR(g.validate(), "multiple of num_key_value_heads");
}

}  // namespace
}  // namespace spindlekv
