// CompressedCache::save / load: a compressed context as a safetensors file.
//
// Tensors: s<b>.l<L>.{positions, member, keys.code, keys.magnitude,
// keys.exact, keys.jit, values.*}, and where a row codec holds exact rows
// keys.quant.tail and keys.quant.<field> for each of the codec's fields
// (runtime/row_codec.h; values the same). Metadata: format
// "spindlekv-compressed-cache", format_version, geometry, parameters,
// artifact_checksum ("none" without artifact), state (JSON: next positions,
// tokens seen and just-in-time entry counts).
#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>

#include "core/error.h"
#include "core/safetensors_reader.h"
#include "core/safetensors_writer.h"
#include "runtime/compressed_cache.h"
#include "runtime/detail/compressed_cache_impl.h"

namespace spindlekv {
namespace {

constexpr const char* kCacheFormat = "spindlekv-compressed-cache";
// 2: row codecs by name (key_codec, value_codec); 1 had quantization,
// quant_group, quant_residual and fp8_scales, still read.
constexpr int64_t kCacheFormatVersion = 2;

std::string prefix(int64_t b, int64_t l) {
  return "s" + std::to_string(b) + ".l" + std::to_string(l) + ".";
}

// CompressionParameters in the file, once: the writer and the reader walk
// this table. An optional key is one older files lack (the default is kept).
template <class P, class F>
void parameter_fields(P& p, F&& field) {
  field("reserve_ratio", p.reserve_ratio);
  field("budget", p.budget);
  field("pyramid_beta", p.pyramid_beta);
  field("window", p.window);
  field("gqa", p.gqa);
  field("codebook", p.codebook);
  field("key_threshold", p.key_threshold);
  field("value_threshold", p.value_threshold);
  field("extend_codebook_when_decoding", p.extend_codebook_when_decoding);
  field("storage_dtype", p.storage_dtype, /*optional=*/true);  // float32 before it was recorded
  field("key_codec", p.key_codec, /*optional=*/true);          // format 1: legacy_codec below
  field("value_codec", p.value_codec, /*optional=*/true);
}

// Format 1's quantisation fields as a codec name ("none" without them).
std::string legacy_codec(const nlohmann::json& j) {
  const std::string q = j.value("quantization", std::string("none"));
  if (q == "none") return q;
  if (q == "fp8")
    return j.value("fp8_scales", std::string("dynamic")) == "calibrated" ? "fp8-calibrated" : "fp8";
  SKV_CHECK(q == "kivi4" || q == "kivi2", "parameter 'quantization' is '", q,
            "' (allowed: none, fp8, kivi4, kivi2)");
  const int64_t group = j.value("quant_group", int64_t{32});
  const int64_t recent = j.value("quant_residual", int64_t{32});
  return q + (group != 32 ? "-g" + std::to_string(group) : "") +
         (recent != 32 ? "-r" + std::to_string(recent) : "");
}

template <class T>
nlohmann::json json_value(const T& v) {
  return v;
}
nlohmann::json json_value(BudgetKind v) { return to_string(v); }
nlohmann::json json_value(GqaMode v) { return to_string(v); }
nlohmann::json json_value(CodebookMode v) { return to_string(v); }
nlohmann::json json_value(StorageDtype v) { return to_string(v); }

template <class T>
void from_json_value(const nlohmann::json& j, T& v) {
  v = j.get<T>();
}
void from_json_value(const nlohmann::json& j, BudgetKind& v) {
  v = parse_budget_kind(j.get<std::string>());
}
void from_json_value(const nlohmann::json& j, GqaMode& v) {
  v = parse_gqa_mode(j.get<std::string>());
}
void from_json_value(const nlohmann::json& j, CodebookMode& v) {
  v = parse_codebook_mode(j.get<std::string>());
}
void from_json_value(const nlohmann::json& j, StorageDtype& v) {
  v = parse_storage_dtype(j.get<std::string>());
}

// A coded table's tensors in the file, once: the writer and the reader walk
// this list (name suffix, tensor): the recent rows, then the codec's fields.
template <class Q, class F>
void quantized_tensors(Q& q, F&& tensor) {
  tensor("quant.tail", q.tail);
  const std::vector<RowField>& fields = q.coder->fields();
  for (size_t i = 0; i < fields.size(); ++i) tensor("quant." + fields[i].name, q.fields[i]);
}

// Checks a coded table read from a file against the empty one the
// parameters give (`like`): dtypes and every size but the capacity, and
// counts that fit the tables and add up to the exact rows.
void check_quantized(const detail::QuantizedRows& q, const detail::QuantizedRows& like,
                     const std::vector<int64_t>& exact_count, const std::string& what) {
  const std::vector<RowField>& fields = q.coder->fields();
  auto same_layout = [&](const at::Tensor& got, const at::Tensor& want, bool growing,
                         const std::string& name) {
    bool ok = got.defined() && got.dim() == want.dim() && got.scalar_type() == want.scalar_type();
    for (int64_t i = 0; ok && i < want.dim(); ++i) {
      ok = (growing && i == 1) || got.size(i) == want.size(i);
    }
    SKV_CHECK(ok, "tensor '", what, ".quant.", name, "' is ",
              got.defined() ? c10::toString(got.scalar_type()) : "missing", " ",
              got.defined() ? got.sizes() : at::IntArrayRef{}, ", the codec stores ",
              c10::toString(want.scalar_type()), " ", want.sizes(),
              growing ? " (any length along dim 1)" : "");
  };
  same_layout(q.tail, like.tail, true, "tail");
  for (size_t i = 0; i < fields.size(); ++i) {
    same_layout(q.fields[i], like.fields[i], fields[i].per != RowField::Per::kHead, fields[i].name);
  }
  const int64_t block = q.coder->block_rows();
  for (size_t g = 0; g < q.quantized.size(); ++g) {
    const int64_t n = q.quantized[g], t = q.tail_count[g];
    bool ok = n >= 0 && t >= 0 && n % block == 0 && t <= q.tail.size(1) && n + t == exact_count[g];
    for (size_t i = 0; ok && i < fields.size(); ++i) {
      if (fields[i].per != RowField::Per::kHead)
        ok = q.entries(fields[i], n) <= q.fields[i].size(1);
    }
    SKV_CHECK(ok, "state of '", what, "': coded and recent rows (", n, ", ", t,
              ") do not fit the tables or add up to ", exact_count[g], " exact rows");
  }
}

nlohmann::json parameters_json(const CompressionParameters& p) {
  nlohmann::json j = nlohmann::json::object();
  parameter_fields(p,
                   [&](const char* name, const auto& v, bool = false) { j[name] = json_value(v); });
  return j;
}

CompressionParameters parameters_from_json(const nlohmann::json& j, int64_t version) {
  CompressionParameters p;
  p.storage_dtype = StorageDtype::kFloat32;  // files without the key were float32
  if (version == 1) p.set_codec(legacy_codec(j));
  parameter_fields(p, [&](const char* name, auto& v, bool optional = false) {
    if (optional && !j.contains(name)) return;
    from_json_value(j.at(name), v);
  });
  return p;
}

}  // namespace

void CompressedCache::save(const std::string& path) const {
  const Impl& I = *impl_;
  with_context("saving compressed cache '" + path + "'", [&] {
    for (size_t l = 0; l < I.token_id_layer.size(); ++l) {
      if (I.token_id_layer[l]) {
        SKV_THROW(kUnsupported, "layer ", l, " is held as token ids; saving such a cache is not ",
                  "supported yet");
      }
    }
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    nlohmann::json state = nlohmann::json::array();
    for (int64_t b = 0; b < I.batch; ++b) {
      nlohmann::json seq = {{"next_position", I.next_positions[b]},
                            {"layers", nlohmann::json::array()}};
      for (int64_t l = 0; l < I.geometry.num_layers; ++l) {
        const detail::SequenceLayer& S = I.sequences[b][l];
        seq["layers"].push_back({{"filled", S.filled},
                                 {"tokens_seen", S.tokens_seen},
                                 {"key_jit_count", detail::jit_entries_in_use(S.keys)},
                                 {"value_jit_count", detail::jit_entries_in_use(S.values)},
                                 {"key_exact_count", detail::exact_rows_in_use(S.keys)},
                                 {"value_exact_count", detail::exact_rows_in_use(S.values)}});
        if (S.keys.quantized()) {
          seq["layers"].back()["key_quantized"] = S.keys.quant.quantized;
          seq["layers"].back()["key_recent"] = S.keys.quant.tail_count;
        }
        if (S.values.quantized()) {
          seq["layers"].back()["value_quantized"] = S.values.quant.quantized;
          seq["layers"].back()["value_recent"] = S.values.quant.tail_count;
        }
        if (!S.filled) continue;
        const std::string p = prefix(b, l);
        tensors.emplace_back(p + "positions", S.positions);
        if (S.member.defined()) tensors.emplace_back(p + "member", S.member);
        for (const auto& [kind, c] :
             {std::pair<const char*, const detail::CodedVectors*>{"keys", &S.keys},
              {"values", &S.values}}) {
          tensors.emplace_back(p + kind + ".code", c->code);
          tensors.emplace_back(p + kind + ".magnitude", c->magnitude);
          tensors.emplace_back(p + kind + ".exact", c->exact);
          tensors.emplace_back(p + kind + ".jit", c->jit);
          if (c->quantized()) {
            const std::string stem = p + kind + ".";  // lambdas cannot capture bindings (C++17)
            quantized_tensors(c->quant, [&](const std::string& name, const at::Tensor& t) {
              tensors.emplace_back(stem + name, t);
            });
          }
        }
      }
      state.push_back(seq);
    }
    nlohmann::json geometry = {{"num_layers", I.geometry.num_layers},
                               {"num_heads", I.geometry.num_heads},
                               {"num_kv_heads", I.geometry.num_kv_heads},
                               {"head_dim", I.geometry.head_dim},
                               {"batch", I.batch}};
    std::map<std::string, std::string> meta = {
        {"format", kCacheFormat},
        {"format_version", std::to_string(kCacheFormatVersion)},
        {"geometry", geometry.dump()},
        {"parameters", parameters_json(I.params).dump()},
        {"artifact_checksum", I.artifact ? I.artifact->checksum : "none"},
        {"state", state.dump()}};
    write_safetensors(path, tensors, meta);
  });
}

CompressedCache CompressedCache::load(const std::string& path, const CacheGeometry& expected,
                                      std::shared_ptr<const Artifact> artifact,
                                      c10::Device device) {
  return with_context("loading compressed cache '" + path + "'", [&] {
    SafetensorsReader reader(path);
    const auto& m = reader.metadata();
    auto get = [&](const std::string& k) -> const std::string& {
      auto it = m.find(k);
      SKV_CHECK(it != m.end(), "metadata key '", k, "' is missing");
      return it->second;
    };
    SKV_CHECK(get("format") == kCacheFormat, "not a compressed cache: format '", get("format"),
              "'");
    const std::string version = get("format_version");
    SKV_CHECK(version == "1" || version == std::to_string(kCacheFormatVersion),
              "compressed cache format version '", version, "' is not 1 or ", kCacheFormatVersion);
    const std::string wanted = get("artifact_checksum");
    const std::string have = artifact ? artifact->checksum : "none";
    SKV_CHECK(wanted == have, "the cache was compressed with artifact checksum ", wanted,
              " but the artifact given has ", have);
    try {
      const auto geometry = nlohmann::json::parse(get("geometry"));
      SKV_CHECK(geometry.at("num_layers").get<int64_t>() == expected.num_layers &&
                    geometry.at("num_heads").get<int64_t>() == expected.num_heads &&
                    geometry.at("num_kv_heads").get<int64_t>() == expected.num_kv_heads &&
                    geometry.at("head_dim").get<int64_t>() == expected.head_dim,
                "the cache's geometry ", geometry.dump(), " is not the model's");
      CompressedCache cache(
          expected, geometry.at("batch").get<int64_t>(),
          parameters_from_json(nlohmann::json::parse(get("parameters")), std::stoll(version)),
          artifact, device);
      Impl& I = *cache.impl_;
      const auto state = nlohmann::json::parse(get("state"));
      SKV_CHECK_EQ(static_cast<int64_t>(state.size()), I.batch, "state entries");
      const int64_t kv = expected.num_kv_heads, d = expected.head_dim;
      for (int64_t b = 0; b < I.batch; ++b) {
        I.next_positions[b] = state[b].at("next_position").get<int64_t>();
        // Positions are int32 in the file; RoPE tables are sized by them.
        SKV_CHECK(I.next_positions[b] >= 0 && I.next_positions[b] <= (int64_t{1} << 31),
                  "state of sequence ", b, ": next_position ", I.next_positions[b],
                  " is outside [0, 2^31]");
        const auto& layers = state[b].at("layers");
        SKV_CHECK_EQ(static_cast<int64_t>(layers.size()), expected.num_layers, "state layers");
        for (int64_t l = 0; l < expected.num_layers; ++l) {
          detail::SequenceLayer& S = I.sequences[b][l];
          if (!layers[l].at("filled").get<bool>()) continue;
          const std::string p = prefix(b, l);
          auto t = [&](const std::string& name) { return reader.tensor(p + name).to(device); };
          S.positions = t("positions");
          SKV_CHECK(S.positions.dim() == 2 && S.positions.size(0) == kv &&
                        S.positions.scalar_type() == at::kInt,
                    "tensor '", p, "positions' must be [", kv, ", slots] int32");
          const int64_t n = S.positions.size(1);
          // Every held token came before the next position (decoding grows
          // the RoPE table to cover it); -1 marks a padding slot.
          if (n > 0) {
            const int64_t lo = S.positions.min().item<int64_t>();
            const int64_t hi = S.positions.max().item<int64_t>();
            SKV_CHECK(lo >= -1 && hi < I.next_positions[b], "tensor '", p, "positions' holds [", lo,
                      ", ", hi, "], outside [-1 (padding), next_position ", I.next_positions[b],
                      ")");
          }
          if (reader.contains(p + "member")) {
            S.member = t("member");
            SKV_CHECK(S.member.dim() == 2 && S.member.size(0) == expected.num_heads &&
                          S.member.size(1) == n && S.member.scalar_type() == at::kBool,
                      "tensor '", p, "member' has the wrong shape or dtype");
          }
          for (const auto& [kind, c] :
               {std::pair<std::string, detail::CodedVectors*>{"keys", &S.keys},
                {"values", &S.values}}) {
            const std::string k = kind;
            const std::string singular = k == "keys" ? "key" : "value";
            c->code = t(k + ".code");
            c->magnitude = t(k + ".magnitude");
            c->exact = t(k + ".exact");
            c->jit = t(k + ".jit");
            c->jit_count = layers[l].at(singular + "_jit_count").get<std::vector<int64_t>>();
            c->exact_count = layers[l].at(singular + "_exact_count").get<std::vector<int64_t>>();
            c->exact_used = at::Tensor();
            c->exact_unsettled = 0;
            c->jit_used = at::Tensor();
            c->jit_unsettled = 0;
            SKV_CHECK(c->exact.scalar_type() == detail::entry_scalar_type(I.params.storage_dtype) &&
                          c->jit.scalar_type() == c->exact.scalar_type() &&
                          c->magnitude.scalar_type() ==
                              detail::magnitude_scalar_type(I.params.storage_dtype),
                      "tensors '", p, k, ".*' are not in the storage dtype ",
                      to_string(I.params.storage_dtype));
            SKV_CHECK(c->code.sizes() == S.positions.sizes() &&
                          (c->code.scalar_type() == at::kInt ||
                           (c->code.scalar_type() == at::kShort &&
                            I.params.storage_dtype != StorageDtype::kFloat32)) &&
                          c->magnitude.sizes() == S.positions.sizes() && c->exact.dim() == 3 &&
                          c->exact.size(0) == kv && c->exact.size(2) == d && c->jit.dim() == 3 &&
                          c->jit.size(0) == kv && c->jit.size(2) == d &&
                          static_cast<int64_t>(c->jit_count.size()) == kv &&
                          static_cast<int64_t>(c->exact_count.size()) == kv,
                      "tensors '", p, k, ".*' have inconsistent shapes");
            // Rows a codec holds (its table is checked below), not `exact`.
            const bool coded_rows =
                (k == "keys" ? I.key_coders[l] : I.value_coders[l]) && !I.token_id_layer[l];
            for (int64_t g = 0; g < kv; ++g) {
              SKV_CHECK(c->jit_count[g] >= 0 && c->jit_count[g] <= c->jit.size(1) &&
                            c->exact_count[g] >= 0 &&
                            (c->exact_count[g] <= c->exact.size(1) || coded_rows),  // checked below
                        "state of '", p, k, "': counts exceed the tables");
            }
            int64_t exact_rows = c->exact.size(1);
            if (detail::CodedVectors empty = I.empty_coded(k == "keys", l); empty.quantized()) {
              detail::QuantizedRows& q = c->quant;
              q = empty.quant;
              const detail::QuantizedRows like = q;
              quantized_tensors(q, [&](const std::string& name, at::Tensor& dst) {
                dst = reader.contains(p + k + "." + name) ? t(k + "." + name) : at::Tensor();
              });
              q.quantized = layers[l].at(singular + "_quantized").get<std::vector<int64_t>>();
              q.tail_count = layers[l].at(singular + "_recent").get<std::vector<int64_t>>();
              SKV_CHECK(static_cast<int64_t>(q.quantized.size()) == kv &&
                            static_cast<int64_t>(q.tail_count.size()) == kv,
                        "state of '", p, k, "': coded counts per KV head");
              check_quantized(q, like, c->exact_count, p + k);
              exact_rows = 0;
              for (int64_t g = 0; g < kv; ++g) exact_rows = std::max(exact_rows, q.rows(g));
            }
            // Codes must point inside the tables, or reconstruction would read garbage.
            const int64_t Kc =
                (k == "keys" ? I.key_tables[l] : I.value_tables[l]).calibrated_capacity();
            at::Tensor code = detail::codes_long(*c);
            at::Tensor bad = (code < -exact_rows) |
                             ((code >= Kc + c->jit.size(1)) & (code != detail::kZeroCode));
            SKV_CHECK(!bad.any().item<bool>(), "tensor '", p, k,
                      ".code' points outside its tables");
          }
          S.tokens_seen = layers[l].at("tokens_seen").get<int64_t>();
          S.filled = true;
        }
      }
      return cache;
    } catch (const nlohmann::json::exception& e) {
      SKV_THROW(kInvalidInput, "metadata: ", e.what());
    }
  });
}

}  // namespace spindlekv
