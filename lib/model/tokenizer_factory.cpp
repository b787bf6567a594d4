// load_tokenizer(): picks the tokenizer of a Hugging Face model directory
// (see tokenizer.h for the order), plus the JSON reading and the layout
// sniffing (is_byte_level_bpe) shared with the BPE loader.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "model/tokenizer.h"

namespace spindlekv {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Whether `node` is of `type` or a Sequence containing one (in `list_key`).
bool has_type(const json& node, const std::string& type, const char* list_key) {
  if (!node.is_object()) return false;
  const auto t = node.find("type");
  if (t == node.end() || !t->is_string()) return false;
  if (*t == type) return true;
  const auto list = node.find(list_key);
  if (*t != "Sequence" || list == node.end() || !list->is_array()) return false;
  for (const json& child : *list) {
    if (has_type(child, type, list_key)) return true;
  }
  return false;
}

}  // namespace

namespace detail {

json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) SKV_THROW(kIo, "cannot open ", path);
  // Read into memory first: nlohmann parses a string faster than a stream,
  // which matters for multi-megabyte tokenizer.json files.
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) SKV_THROW(kIo, "cannot read ", path);
  try {
    return json::parse(buffer.str());
  } catch (const json::parse_error& e) {
    SKV_THROW(kInvalidInput, path, ": malformed JSON: ", e.what());
  }
}

bool is_byte_level_bpe(const json& root) {
  if (!root.is_object()) return false;
  const auto model = root.find("model");
  if (model == root.end() || !model->is_object() || model->value("type", json()) != "BPE") {
    return false;
  }
  const auto pre = root.find("pre_tokenizer");
  const auto dec = root.find("decoder");
  return (pre != root.end() && has_type(*pre, "ByteLevel", "pretokenizers")) ||
         (dec != root.end() && has_type(*dec, "ByteLevel", "decoders"));
}

}  // namespace detail

namespace {

bool is_file(const fs::path& path) {
  std::error_code ec;  // an unreadable entry is treated as absent here
  return fs::is_regular_file(path, ec);
}

// root[key] as an optional integer: absent or null -> nullopt.
std::optional<int64_t> optional_int(const json& root, const char* key, const std::string& path) {
  const auto it = root.find(key);
  if (it == root.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer()) {
    SKV_THROW(kInvalidInput, path, ": key \"", key, "\" must be an integer, got ",
              it->dump().substr(0, 80));
  }
  return it->get<int64_t>();
}

// Whether `root` is our byte-tokenizer marker ({"spindlekv_tokenizer": "byte"})
// or the {"model": {"type": "byte"}} form.
bool is_byte_marker(const json& root, const std::string& path) {
  if (!root.is_object()) return false;
  if (const auto it = root.find("spindlekv_tokenizer"); it != root.end()) {
    // A marker naming another kind is a model of ours we cannot run: say so
    // rather than fall through to a misleading "nothing found".
    if (*it != "byte") {
      SKV_THROW(kUnsupported, path, ": spindlekv_tokenizer ", it->dump(),
                " is not supported (only \"byte\")");
    }
    return true;
  }
  const auto model = root.find("model");
  return model != root.end() && model->is_object() && model->value("type", json()) == "byte";
}

std::unique_ptr<Tokenizer> byte_from_marker(const json& root, const std::string& path) {
  return with_context(path, [&] {
    return make_byte_tokenizer(optional_int(root, "bos_token_id", path),
                               optional_int(root, "eos_token_id", path),
                               optional_int(root, "vocab_size", path).value_or(0));
  });
}

// Short description of a tokenizer.json we could not use, for the error.
std::string describe_tokenizer_json(const json& root) {
  if (!root.is_object()) return std::string("tokenizer.json holding a JSON ") + root.type_name();
  const auto model = root.find("model");
  if (model == root.end() || !model->is_object() || !model->contains("type")) {
    return "tokenizer.json without model.type";
  }
  const std::string type = (*model)["type"].dump();
  if (type == "\"BPE\"") {
    return "tokenizer.json with model.type \"BPE\" but no ByteLevel pre_tokenizer or decoder";
  }
  return "tokenizer.json with model.type " + type;
}

// Id of a special token given in tokenizer_config.json as "<s>" or
// {"content": "<s>", ...}; nullopt when the config sets none.
std::optional<int64_t> config_token_id(const Tokenizer& tokenizer, const json& config,
                                       const char* key, const std::string& path) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  const json* content = &*it;
  if (it->is_object()) {
    const auto c = it->find("content");
    if (c == it->end()) SKV_THROW(kInvalidInput, path, ": missing key \"", key, ".content\"");
    content = &*c;
  }
  if (!content->is_string()) {
    SKV_THROW(kInvalidInput, path, ": key \"", key, "\" must be a token string, got ",
              it->dump().substr(0, 80));
  }
  const auto id = tokenizer.token_to_id(content->get<std::string>());
  if (!id) {
    SKV_THROW(kInvalidInput, path, ": ", key, " \"", content->get<std::string>(),
              "\" is not in the tokenizer's vocabulary");
  }
  return id;
}

// config.json's "bos_token_id"/"eos_token_id": an integer, or a list of them
// (Llama-3.1 lists several stop ids; the first is the primary EOS).
std::optional<int64_t> config_id(const json& config, const char* key, const std::string& path) {
  const auto it = config.find(key);
  if (it != config.end() && it->is_array()) {
    if (it->empty()) return std::nullopt;
    if (!(*it)[0].is_number_integer()) {
      SKV_THROW(kInvalidInput, path, ": key \"", key, "\" must hold integers, got ",
                it->dump().substr(0, 80));
    }
    return (*it)[0].get<int64_t>();
  }
  return optional_int(config, key, path);
}

// tokenizer.json does not say which tokens are BOS/EOS; Hugging Face keeps
// that in tokenizer_config.json (by spelling) and config.json (by id).
void resolve_special_ids(Tokenizer* tokenizer, const fs::path& dir) {
  const std::string tokenizer_config = (dir / "tokenizer_config.json").string();
  if (is_file(tokenizer_config)) {
    const json config = detail::read_json_file(tokenizer_config);
    if (config.is_object()) {
      tokenizer->bos_id = config_token_id(*tokenizer, config, "bos_token", tokenizer_config);
      tokenizer->eos_id = config_token_id(*tokenizer, config, "eos_token", tokenizer_config);
    }
  }
  const std::string model_config = (dir / "config.json").string();
  if ((tokenizer->bos_id && tokenizer->eos_id) || !is_file(model_config)) return;
  const json config = detail::read_json_file(model_config);
  if (!config.is_object()) return;
  if (!tokenizer->bos_id) tokenizer->bos_id = config_id(config, "bos_token_id", model_config);
  if (!tokenizer->eos_id) tokenizer->eos_id = config_id(config, "eos_token_id", model_config);
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir) {
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) {
    SKV_THROW(kIo, "model directory ", model_dir, " does not exist or is not a directory");
  }
  const fs::path dir(model_dir);
  std::string found;  // what we saw but could not use, for the final error

  const std::string tokenizer_json = (dir / "tokenizer.json").string();
  if (is_file(tokenizer_json)) {
    const json root = detail::read_json_file(tokenizer_json);
    if (is_byte_marker(root, tokenizer_json)) return byte_from_marker(root, tokenizer_json);
    if (detail::is_byte_level_bpe(root)) {
      auto tokenizer = detail::make_bpe_tokenizer(root, tokenizer_json);
      resolve_special_ids(tokenizer.get(), dir);
      return tokenizer;
    }
    found = describe_tokenizer_json(root);
  }

  const std::string sentencepiece_model = (dir / "tokenizer.model").string();
  if (is_file(sentencepiece_model)) return load_sentencepiece_tokenizer(sentencepiece_model);

  const std::string tokenizer_config = (dir / "tokenizer_config.json").string();
  if (is_file(tokenizer_config)) {
    const json root = detail::read_json_file(tokenizer_config);
    if (is_byte_marker(root, tokenizer_config)) return byte_from_marker(root, tokenizer_config);
    found += std::string(found.empty() ? "" : " and ") +
             "tokenizer_config.json without a \"spindlekv_tokenizer\" marker";
  }

  SKV_THROW(
      kUnsupported, "no supported tokenizer in ", model_dir, ": found ",
      found.empty() ? "none of tokenizer.json, tokenizer.model, tokenizer_config.json" : found);
}

}  // namespace spindlekv
