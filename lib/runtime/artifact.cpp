#include "runtime/artifact.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/model_fingerprint.h"
#include "core/safetensors_reader.h"
#include "core/safetensors_writer.h"
#include "core/version.h"
#include "runtime/eviction_policy.h"
#include "runtime/storage_cost.h"

namespace spindlekv {
namespace {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

std::string layer_key(int64_t layer, const char* kind, const char* what) {
  return "layers." + std::to_string(layer) + "." + kind + "." + what;
}

// The file holds exactly the layout's tensors and metadata keys.
void check_layout(const std::vector<std::string>& tensor_names,
                  const std::map<std::string, std::string>& metadata, int64_t num_layers) {
  std::vector<std::string> want = artifact_tensor_names(num_layers, false), have = tensor_names;
  std::vector<std::string> allowed = artifact_tensor_names(num_layers, true);
  std::sort(want.begin(), want.end());
  std::sort(allowed.begin(), allowed.end());
  std::sort(have.begin(), have.end());
  std::vector<std::string> missing, extra;
  std::set_difference(want.begin(), want.end(), have.begin(), have.end(),
                      std::back_inserter(missing));
  std::set_difference(have.begin(), have.end(), allowed.begin(), allowed.end(),
                      std::back_inserter(extra));
  SKV_CHECK(missing.empty(), "tensor '", missing.empty() ? "" : missing[0], "' is missing");
  SKV_CHECK(extra.empty(), "tensor '", extra.empty() ? "" : extra[0],
            "' is not part of the artifact format");
  for (const auto& e : kArtifactMetadata) {
    SKV_CHECK(e.optional || metadata.count(e.name), "metadata key '", e.name, "' is missing");
  }
  for (const auto& entry : metadata) {
    const std::string& key = entry.first;
    const bool known = std::any_of(std::begin(kArtifactMetadata), std::end(kArtifactMetadata),
                                   [&](const ArtifactEntry& e) { return key == e.name; });
    SKV_CHECK(known, "metadata key '", key, "' is not part of the artifact format");
  }
}

// XXH3-128 over every metadata entry but the checksum itself and every
// tensor's name, dtype, shape and bytes, in name order: any edit shows.
std::string artifact_checksum(const std::map<std::string, std::string>& metadata,
                              NamedTensors tensors) {
  StreamingHash h;
  for (const auto& [k, v] : metadata) {
    if (k == "checksum") continue;
    h.update(k + "=" + std::to_string(v.size()) + ":" + v + ";");
  }
  std::sort(tensors.begin(), tensors.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [name, t] : tensors) {
    at::Tensor c = t.to(at::kCPU).contiguous();
    std::ostringstream head;
    head << name << ":" << at::toString(c.scalar_type()) << ":" << c.sizes() << ";";
    h.update(head.str());
    h.update(c.data_ptr(), c.numel() * c.element_size());
  }
  return h.hex_digest();
}

at::Tensor budget_tensor(const BudgetTable& t) {
  const int64_t R = static_cast<int64_t>(t.fractions.size());
  const int64_t L = R > 0 ? static_cast<int64_t>(t.fractions[0].size()) : 0;
  at::Tensor out = at::zeros({R, L}, at::kDouble);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t l = 0; l < L; ++l) out[r][l] = t.fractions[r][l];
  }
  return out;
}

std::vector<double> to_doubles(const at::Tensor& t) {
  at::Tensor c = t.to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

std::vector<int64_t> to_longs(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

std::string format_double(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

double parse_double(const std::map<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  SKV_CHECK(it != m.end(), "metadata key '", key, "' is missing");
  try {
    size_t used = 0;
    const double v = std::stod(it->second, &used);
    SKV_CHECK(used == it->second.size(), "trailing characters");
    return v;
  } catch (const std::exception&) {
    SKV_THROW(kInvalidInput, "metadata key '", key, "' is not a number: '", it->second, "'");
  }
}

const std::string& get(const std::map<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  SKV_CHECK(it != m.end(), "metadata key '", key, "' is missing");
  return it->second;
}

void check_codebook(const at::Tensor& cb, const std::vector<int64_t>& sizes,
                    const std::vector<double>& coverage, int64_t groups_allowed_a, int64_t head_dim,
                    const std::string& what) {
  SKV_CHECK(cb.defined() && cb.dim() == 3, what, ": codebook must be [groups, K, head_dim]");
  SKV_CHECK(cb.size(0) == 1 || cb.size(0) == groups_allowed_a, what, ": ", cb.size(0),
            " groups, expected 1 or ", groups_allowed_a);
  SKV_CHECK_EQ(cb.size(2), head_dim, what, ": codebook head_dim");
  SKV_CHECK(cb.scalar_type() == at::kFloat, what, ": codebook must be float32");
  SKV_CHECK_EQ(static_cast<int64_t>(sizes.size()), cb.size(0), what, ": sizes per group");
  SKV_CHECK_EQ(coverage.size(), sizes.size(), what, ": coverage per group");
  SKV_CHECK(at::isfinite(cb).all().item<bool>(), what, ": codebook holds NaN or Inf");
  for (size_t g = 0; g < sizes.size(); ++g) {
    SKV_CHECK(sizes[g] >= 0 && sizes[g] <= cb.size(1), what, ": group ", g, " size ", sizes[g],
              " outside [0, ", cb.size(1), "]");
    if (sizes[g] == 0) continue;
    at::Tensor norms = cb[g].narrow(0, 0, sizes[g]).norm(2, 1);
    const double worst = (norms - 1).abs().max().item<double>();
    SKV_CHECK(worst < 1e-3, what, ": group ", g, " has a codeword of norm off 1 by ", worst);
  }
}

}  // namespace

std::vector<std::string> artifact_tensor_names(int64_t num_layers, bool with_optional) {
  std::vector<std::string> out;
  for (const auto& e : kArtifactTensors) {
    if (e.optional && !with_optional) continue;
    const std::string name = e.name;
    const size_t at = name.find("<L>");
    if (at == std::string::npos) {
      out.push_back(name);
      continue;
    }
    for (int64_t l = 0; l < num_layers; ++l) {
      out.push_back(name.substr(0, at) + std::to_string(l) + name.substr(at + 3));
    }
  }
  return out;
}

void Artifact::validate() const {
  SKV_CHECK_GT(num_layers, 0, "artifact: num_layers");
  SKV_CHECK(num_kv_heads > 0 && num_heads % num_kv_heads == 0, "artifact: ", num_heads,
            " heads are not a multiple of ", num_kv_heads, " KV heads");
  SKV_CHECK(head_dim > 0 && head_dim % 2 == 0, "artifact: head_dim ", head_dim, " must be even");
  SKV_CHECK(key_threshold > -1 && key_threshold <= 1, "artifact: key_threshold ", key_threshold,
            " outside (-1, 1]");
  SKV_CHECK(value_threshold > -1 && value_threshold <= 1, "artifact: value_threshold ",
            value_threshold, " outside (-1, 1]");
  SKV_CHECK_GE(window, 0, "artifact: window");
  with_context("artifact", [&] { parse_gqa_mode(gqa_mode); });
  with_context("artifact", [&] { parse_storage_dtype(storage_dtype); });
  SKV_CHECK(sharing == "per-head" || sharing == "shared", "artifact: sharing '", sharing,
            "' (allowed: per-head, shared)");
  SKV_CHECK_EQ(static_cast<int64_t>(layers.size()), num_layers, "artifact: codebook layers");
  for (int64_t l = 0; l < num_layers; ++l) {
    const ArtifactLayer& L = layers[l];
    check_codebook(L.key_codebook, L.key_sizes, L.key_coverage, num_kv_heads, head_dim,
                   "layer " + std::to_string(l) + " keys");
    check_codebook(L.value_codebook, L.value_sizes, L.value_coverage, num_kv_heads, head_dim,
                   "layer " + std::to_string(l) + " values");
    SKV_CHECK(L.fp8_key_scale.defined() == layers[0].fp8_key_scale.defined() &&
                  L.fp8_value_scale.defined() == L.fp8_key_scale.defined(),
              "artifact: fp8 scales must be given for keys and values of every layer or none");
    for (const at::Tensor& s : {L.fp8_key_scale, L.fp8_value_scale}) {
      if (!s.defined()) continue;
      SKV_CHECK(s.dim() == 1 && s.size(0) == num_kv_heads, "artifact: layer ", l,
                " fp8 scales must be [", num_kv_heads, "], got ", s.sizes());
      SKV_CHECK(at::isfinite(s).all().item<bool>() && (s > 0).all().item<bool>(),
                "artifact: layer ", l, " fp8 scales must be finite and positive");
    }
  }
  with_context("pyramid budgets", [&] { pyramid.validate(num_layers); });
  with_context("calibrated budgets", [&] { calibrated.validate(num_layers); });
  with_context("artifact", [&] { codec_plans.validate(num_layers); });
}

void Artifact::check_model_fingerprint(const std::string& fingerprint) const {
  if (fingerprint == model_fingerprint) return;
  // Say which part differs: the architecture, the tensor layout or the weights.
  const char* part = "weights";
  if (fingerprint.substr(0, 32) != model_fingerprint.substr(0, 32)) {
    part = "architecture";
  } else if (fingerprint.substr(0, 65) != model_fingerprint.substr(0, 65)) {
    part = "tensor names, dtypes or shapes";
  }
  SKV_THROW(kInvalidInput, "artifact was calibrated for another model (they differ in ", part,
            "): artifact fingerprint ", model_fingerprint, ", model fingerprint ", fingerprint);
}

void Artifact::check_geometry(const CacheGeometry& c) const {
  SKV_CHECK_EQ(c.num_layers, num_layers, "artifact and model differ in num_hidden_layers");
  SKV_CHECK_EQ(c.num_heads, num_heads, "artifact and model differ in num_attention_heads");
  SKV_CHECK_EQ(c.num_kv_heads, num_kv_heads, "artifact and model differ in num_key_value_heads");
  SKV_CHECK_EQ(c.head_dim, head_dim, "artifact and model differ in head_dim");
}

void save_artifact(const std::string& path, Artifact& a) {
  with_context("writing artifact '" + path + "'", [&] {
    a.validate();
    NamedTensors tensors;
    at::Tensor kcov = at::zeros({a.num_layers, a.layers[0].key_codebook.size(0)}, at::kDouble);
    at::Tensor vcov = at::zeros({a.num_layers, a.layers[0].value_codebook.size(0)}, at::kDouble);
    for (int64_t l = 0; l < a.num_layers; ++l) {
      const ArtifactLayer& L = a.layers[l];
      SKV_CHECK_EQ(L.key_codebook.size(0), kcov.size(1), "layer ", l, " key groups");
      SKV_CHECK_EQ(L.value_codebook.size(0), vcov.size(1), "layer ", l, " value groups");
      tensors.emplace_back(layer_key(l, "keys", "codebook"), L.key_codebook.contiguous());
      tensors.emplace_back(layer_key(l, "keys", "sizes"), at::tensor(L.key_sizes, at::kLong));
      tensors.emplace_back(layer_key(l, "values", "codebook"), L.value_codebook.contiguous());
      tensors.emplace_back(layer_key(l, "values", "sizes"), at::tensor(L.value_sizes, at::kLong));
      kcov[l] = at::tensor(L.key_coverage, at::kDouble);
      vcov[l] = at::tensor(L.value_coverage, at::kDouble);
    }
    tensors.emplace_back("coverage.keys", kcov);
    tensors.emplace_back("coverage.values", vcov);
    tensors.emplace_back("budgets.context_ratios",
                         at::tensor(a.pyramid.context_ratios, at::kDouble));
    SKV_CHECK(a.pyramid.context_ratios == a.calibrated.context_ratios,
              "pyramid and calibrated budgets must share their context ratios");
    tensors.emplace_back("budgets.pyramid", budget_tensor(a.pyramid));
    tensors.emplace_back("budgets.calibrated", budget_tensor(a.calibrated));
    if (a.layers[0].fp8_key_scale.defined()) {
      std::vector<at::Tensor> ks, vs;
      for (const ArtifactLayer& L : a.layers) {
        ks.push_back(L.fp8_key_scale.to(at::kFloat));
        vs.push_back(L.fp8_value_scale.to(at::kFloat));
      }
      tensors.emplace_back("fp8.key_scales", at::stack(ks).contiguous());
      tensors.emplace_back("fp8.value_scales", at::stack(vs).contiguous());
    }

    nlohmann::json geometry = {{"num_layers", a.num_layers},
                               {"num_heads", a.num_heads},
                               {"num_kv_heads", a.num_kv_heads},
                               {"head_dim", a.head_dim}};
    std::map<std::string, std::string> meta = {
        {"format", kArtifactFormat},
        {"format_version", std::to_string(kArtifactFormatVersion)},
        {"tool_version", a.tool_version.empty() ? version_string() : a.tool_version},
        {"model_fingerprint", a.model_fingerprint},
        {"geometry", geometry.dump()},
        {"key_threshold", format_double(a.key_threshold)},
        {"value_threshold", format_double(a.value_threshold)},
        {"window", std::to_string(a.window)},
        {"gqa_mode", a.gqa_mode},
        {"sharing", a.sharing},
        {"pyramid_beta", format_double(a.pyramid_beta)},
        {"storage_dtype", a.storage_dtype},
        {"sources", a.sources_json}};
    if (!a.codec_plans.plans.empty() || !a.codec_plans.sensitivity.empty()) {
      meta["codec_plans"] = codec_plans_to_json(a.codec_plans);
    }
    meta["checksum"] = artifact_checksum(meta, tensors);
    a.checksum = meta["checksum"];
    std::vector<std::string> names;
    for (const auto& t : tensors) names.push_back(t.first);
    check_layout(names, meta, a.num_layers);
    write_safetensors(path, tensors, meta);
  });
}

Artifact load_artifact(const std::string& path) {
  return with_context("loading artifact '" + path + "'", [&] {
    SafetensorsReader reader(path);
    const auto& m = reader.metadata();
    SKV_CHECK(m.count("format") && m.at("format") == kArtifactFormat,
              "not a SpindleKV artifact: metadata 'format' is '",
              m.count("format") ? m.at("format") : std::string("(missing)"), "', expected '",
              kArtifactFormat, "'");
    const double version = parse_double(m, "format_version");
    if (version > kArtifactFormatVersion) {
      SKV_THROW(kUnsupported, "artifact format version ", get(m, "format_version"),
                " is newer than this build reads (", kArtifactFormatVersion,
                "); upgrade SpindleKV");
    }
    SKV_CHECK(version == kArtifactFormatVersion, "unknown artifact format version '",
              get(m, "format_version"), "'");
    NamedTensors tensors;
    for (const std::string& name : reader.tensor_names()) {
      tensors.emplace_back(name, reader.tensor(name));
    }
    const std::string expected = get(m, "checksum");
    const std::string actual = artifact_checksum(m, tensors);
    SKV_CHECK(expected == actual, "checksum mismatch: the file says ", expected,
              " but its contents hash to ", actual, " (the artifact was modified or corrupted)");
    auto tensor = [&](const std::string& name) { return reader.tensor(name); };

    Artifact a;
    a.checksum = expected;
    a.tool_version = get(m, "tool_version");
    a.model_fingerprint = get(m, "model_fingerprint");
    nlohmann::json geometry;
    try {
      geometry = nlohmann::json::parse(get(m, "geometry"));
      a.num_layers = geometry.at("num_layers").get<int64_t>();
      a.num_heads = geometry.at("num_heads").get<int64_t>();
      a.num_kv_heads = geometry.at("num_kv_heads").get<int64_t>();
      a.head_dim = geometry.at("head_dim").get<int64_t>();
    } catch (const nlohmann::json::exception& e) {
      SKV_THROW(kInvalidInput, "metadata 'geometry': ", e.what());
    }
    SKV_CHECK(a.num_layers > 0 && a.num_layers < 100000, "metadata 'geometry': num_layers ",
              a.num_layers);
    check_layout(reader.tensor_names(), m, a.num_layers);
    a.key_threshold = parse_double(m, "key_threshold");
    a.value_threshold = parse_double(m, "value_threshold");
    a.window = static_cast<int64_t>(parse_double(m, "window"));
    a.gqa_mode = get(m, "gqa_mode");
    a.sharing = get(m, "sharing");
    a.pyramid_beta = parse_double(m, "pyramid_beta");
    if (m.count("storage_dtype")) a.storage_dtype = get(m, "storage_dtype");
    a.sources_json = get(m, "sources");
    if (m.count("codec_plans")) a.codec_plans = codec_plans_from_json(get(m, "codec_plans"));
    at::Tensor kcov = tensor("coverage.keys"), vcov = tensor("coverage.values");
    SKV_CHECK(kcov.dim() == 2 && kcov.size(0) == a.num_layers && vcov.dim() == 2 &&
                  vcov.size(0) == a.num_layers,
              "coverage tensors must be [layers, groups]");
    for (int64_t l = 0; l < a.num_layers; ++l) {
      ArtifactLayer L;
      L.key_codebook = tensor(layer_key(l, "keys", "codebook"));
      L.value_codebook = tensor(layer_key(l, "values", "codebook"));
      L.key_sizes = to_longs(tensor(layer_key(l, "keys", "sizes")));
      L.value_sizes = to_longs(tensor(layer_key(l, "values", "sizes")));
      L.key_coverage = to_doubles(kcov[l]);
      L.value_coverage = to_doubles(vcov[l]);
      a.layers.push_back(std::move(L));
    }
    const std::vector<double> ratios = to_doubles(tensor("budgets.context_ratios"));
    auto table = [&](const std::string& name) {
      at::Tensor t = tensor(name);
      SKV_CHECK(t.dim() == 2 && t.size(0) == static_cast<int64_t>(ratios.size()) &&
                    t.size(1) == a.num_layers,
                "tensor '", name, "' must be [", ratios.size(), ", ", a.num_layers, "], got ",
                t.sizes());
      BudgetTable b;
      b.context_ratios = ratios;
      for (int64_t r = 0; r < t.size(0); ++r) b.fractions.push_back(to_doubles(t[r]));
      return b;
    };
    if (reader.contains("fp8.key_scales") || reader.contains("fp8.value_scales")) {
      at::Tensor ks = tensor("fp8.key_scales"), vs = tensor("fp8.value_scales");
      SKV_CHECK(ks.dim() == 2 && ks.size(0) == a.num_layers && ks.sizes() == vs.sizes() &&
                    ks.scalar_type() == at::kFloat && vs.scalar_type() == at::kFloat,
                "tensors 'fp8.*_scales' must both be [", a.num_layers, ", kv_heads] float32, got ",
                ks.sizes(), " and ", vs.sizes());
      for (int64_t l = 0; l < a.num_layers; ++l) {
        a.layers[l].fp8_key_scale = ks[l].clone();
        a.layers[l].fp8_value_scale = vs[l].clone();
      }
    }
    a.pyramid = table("budgets.pyramid");
    a.calibrated = table("budgets.calibrated");
    a.validate();
    return a;
  });
}

Artifact load_artifact_for_model(const std::string& path, const std::string& fingerprint) {
  Artifact a = load_artifact(path);
  with_context("artifact '" + path + "'", [&] { a.check_model_fingerprint(fingerprint); });
  return a;
}

}  // namespace spindlekv
