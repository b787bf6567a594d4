#include "core/checkpoint.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/safetensors_reader.h"

namespace spindlekv {
namespace fs = std::filesystem;

namespace {
std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}
}  // namespace

Checkpoint::Checkpoint(const std::string& model_dir) : dir_(model_dir) {
  with_context("loading checkpoint '" + model_dir + "'", [&] {
    SKV_CHECK(fs::is_directory(model_dir), "not a directory");
    const fs::path single = fs::path(model_dir) / "model.safetensors";
    const fs::path index = fs::path(model_dir) / "model.safetensors.index.json";
    if (fs::exists(single)) {
      readers_.push_back(std::make_unique<SafetensorsReader>(single.string()));
      for (const auto& n : readers_.back()->tensor_names()) where_[n] = readers_.back().get();
      return;
    }
    if (!fs::exists(index)) {
      SKV_THROW(kInvalidInput,
                "neither model.safetensors nor model.safetensors.index.json is present "
                "(.bin/.pth checkpoints are not supported: convert them to safetensors)");
    }
    with_context("reading '" + index.string() + "'", [&] {
      auto j = nlohmann::json::parse(read_file(index.string()), nullptr, false);
      SKV_CHECK(!j.is_discarded() && j.is_object(), "not a valid JSON object");
      SKV_CHECK(j.contains("weight_map") && j["weight_map"].is_object(),
                "missing object 'weight_map'");
      std::map<std::string, const SafetensorsReader*> by_file;
      for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
        SKV_CHECK(it.value().is_string(), "weight_map entry '", it.key(), "' is not a file name");
        const std::string file = it.value().get<std::string>();
        SKV_CHECK(file.find('/') == std::string::npos && file.find("..") == std::string::npos,
                  "weight_map entry '", it.key(), "' names a path outside the directory: ", file);
        if (!by_file.count(file)) {
          const fs::path shard = fs::path(model_dir) / file;
          SKV_CHECK(fs::exists(shard), "shard '", file, "' listed for tensor '", it.key(),
                    "' does not exist");
          readers_.push_back(std::make_unique<SafetensorsReader>(shard.string()));
          by_file[file] = readers_.back().get();
        }
        const SafetensorsReader* r = by_file[file];
        SKV_CHECK(r->contains(it.key()), "tensor '", it.key(), "' is listed in shard '", file,
                  "' but the shard does not hold it (incomplete checkpoint)");
        where_[it.key()] = r;
      }
    });
  });
}

Checkpoint::~Checkpoint() = default;

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> names;
  for (const auto& kv : where_) names.push_back(kv.first);
  return names;
}

bool Checkpoint::contains(const std::string& name) const { return where_.count(name) > 0; }

at::Tensor Checkpoint::get_float(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    SKV_THROW(kInvalidInput, "checkpoint '", dir_, "': tensor '", name,
              "' is missing (incomplete or not a Llama-family checkpoint)");
  }
  at::Tensor t = it->second->tensor(name);
  if (!at::isFloatingType(t.scalar_type())) {
    SKV_THROW(kInvalidInput, "checkpoint '", dir_, "': tensor '", name, "' has dtype ",
              at::toString(t.scalar_type()), ", expected a floating-point dtype");
  }
  return t.to(at::kFloat);
}

at::Tensor Checkpoint::get_float(const std::string& name, const std::vector<int64_t>& shape) const {
  if (contains(name)) {
    const auto actual = this->shape(name);
    if (actual != shape) {
      SKV_THROW(kInvalidInput, "checkpoint '", dir_, "': tensor '", name, "' has shape ",
                shape_str(actual), ", config.json implies ", shape_str(shape));
    }
  }
  return get_float(name);
}

std::string Checkpoint::dtype_name(const std::string& name) const {
  return spindlekv::dtype_name(where_.at(name)->info(name).dtype);
}

std::vector<int64_t> Checkpoint::shape(const std::string& name) const {
  auto it = where_.find(name);
  SKV_CHECK(it != where_.end(), "checkpoint '", dir_, "': tensor '", name, "' is missing");
  return it->second->info(name).shape;
}

std::vector<const SafetensorsReader*> Checkpoint::files() const {
  std::vector<const SafetensorsReader*> out;
  for (const auto& r : readers_) out.push_back(r.get());
  return out;
}

}  // namespace spindlekv
