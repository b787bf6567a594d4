#include "eval/eval_records_file.h"

#include <cmath>
#include <fstream>
#include <iterator>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/model_fingerprint.h"
#include "core/version.h"

namespace spindlekv {
namespace {

constexpr const char* kPartialFormat = "spindlekv-eval-partial v1";

nlohmann::ordered_json range_json(const RangeStat& r) {
  if (r.n == 0) return nullptr;
  return {{"mean", r.mean}, {"min", r.min}, {"max", r.max}, {"n", r.n}};
}

// A number that may be stored as null (NaN: nlohmann writes NaN as null).
double number(const nlohmann::json& j, const char* key) {
  SKV_CHECK(j.is_object() && j.contains(key), "record has no key '", key, "'");
  const nlohmann::json& v = j.at(key);
  if (v.is_null()) return std::nan("");
  SKV_CHECK(v.is_number(), "record key '", key, "' is ", v.dump(), ", not a number");
  return v.get<double>();
}

template <typename T>
T value_of(const nlohmann::json& j, const char* key) {
  SKV_CHECK(j.is_object() && j.contains(key), "record has no key '", key, "'");
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    SKV_THROW(kInvalidInput, "record key '", key, "' has the wrong type: ", j.at(key).dump());
  }
}

// The JSON document in `path` (the caller adds the file to the context).
nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SKV_CHECK(in.good(), "cannot open the file");
  try {
    return nlohmann::json::parse(std::string(std::istreambuf_iterator<char>(in), {}));
  } catch (const nlohmann::json::exception& e) {
    SKV_THROW(kInvalidInput, "not JSON (", e.what(), ")");
  }
}

RangeStat range_from_json(const nlohmann::json& j, const char* key) {
  RangeStat r;
  SKV_CHECK(j.contains(key), "record settings have no key '", key, "'");
  const nlohmann::json& v = j.at(key);
  if (v.is_null()) return r;
  r.mean = number(v, "mean");
  r.min = number(v, "min");
  r.max = number(v, "max");
  r.n = v.contains("n") ? value_of<int64_t>(v, "n") : 1;
  return r;
}

}  // namespace

nlohmann::ordered_json eval_record_to_json(const EvalRecord& r) {
  const EvalMemory& m = r.memory;
  const EvalSettings& st = r.settings;
  nlohmann::ordered_json rec = {
      {"method", r.method},
      {"task", r.task},
      {"metric", r.metric},
      {"value", r.value},
      {"n", r.n},
      {"ci95", std::isnan(r.ci_low) ? nlohmann::ordered_json()
                                    : nlohmann::ordered_json({r.ci_low, r.ci_high})},
      {"target_ratio", r.target_ratio},
      {"measured_ratio", r.measured_ratio},
      {"ratio_matched", r.ratio_matched},
      {"fixed_ratio", r.fixed_ratio},
      {"paper_ratio", r.paper_ratio},
      {"prompt_ratios", r.prompt_ratios},
      {"memory",
       {{"held_bytes", m.held_bytes},
        {"shared_bytes_total", m.shared_bytes_total},
        {"shared_bytes_charged", m.shared_bytes_charged},
        {"full_bytes", m.full_bytes},
        {"ratio", m.ratio},
        {"ratio_n1", m.ratio_n1},
        {"ratio_n16", m.ratio_n16},
        {"ratio_excluding_shared", m.ratio_excluding_shared},
        {"kv_dtype", m.kv_dtype},
        {"shared_requests", m.shared_requests}}},
      {"settings",
       {{"reserve_ratio", range_json(st.reserve_ratio)},
        {"key_threshold", range_json(st.key_threshold)},
        {"value_threshold", range_json(st.value_threshold)},
        {"kept_fraction_per_layer", st.kept_fraction}}},
      {"compression_ms", r.compression_ms},
      {"decode_tokens_per_second", r.decode_tokens_per_second}};
  if (!r.outcomes.empty()) rec["outcomes"] = r.outcomes;
  rec["detail"] = nlohmann::ordered_json::parse(r.detail_json);
  return rec;
}

EvalRecord eval_record_from_json(const nlohmann::json& j) {
  EvalRecord r;
  r.method = value_of<std::string>(j, "method");
  return with_context("record of method '" + r.method + "'", [&] {
    r.task = value_of<std::string>(j, "task");
    r.metric = value_of<std::string>(j, "metric");
    r.value = number(j, "value");
    r.n = value_of<int64_t>(j, "n");
    SKV_CHECK(j.contains("ci95"), "record has no key 'ci95'");
    if (!j.at("ci95").is_null()) {
      const auto ci = value_of<std::vector<double>>(j, "ci95");
      SKV_CHECK_EQ(ci.size(), 2u, "record key 'ci95' must hold two numbers");
      r.ci_low = ci[0];
      r.ci_high = ci[1];
    }
    r.target_ratio = number(j, "target_ratio");
    r.measured_ratio = number(j, "measured_ratio");
    r.ratio_matched = value_of<bool>(j, "ratio_matched");
    r.fixed_ratio = value_of<bool>(j, "fixed_ratio");
    r.paper_ratio = number(j, "paper_ratio");
    if (j.contains("prompt_ratios")) {
      r.prompt_ratios = value_of<std::vector<double>>(j, "prompt_ratios");
    }
    const nlohmann::json& m = value_of<nlohmann::json>(j, "memory");
    r.memory.held_bytes = number(m, "held_bytes");
    r.memory.shared_bytes_total = number(m, "shared_bytes_total");
    r.memory.shared_bytes_charged = number(m, "shared_bytes_charged");
    r.memory.full_bytes = number(m, "full_bytes");
    r.memory.ratio = number(m, "ratio");
    // Records before whole-table charging lack these: NaN, not a made-up number.
    r.memory.ratio_n1 = m.contains("ratio_n1") ? number(m, "ratio_n1") : std::nan("");
    r.memory.ratio_n16 = m.contains("ratio_n16") ? number(m, "ratio_n16") : std::nan("");
    r.memory.ratio_excluding_shared = number(m, "ratio_excluding_shared");
    r.memory.kv_dtype = value_of<std::string>(m, "kv_dtype");
    r.memory.shared_requests = value_of<int64_t>(m, "shared_requests");
    const nlohmann::json& st = value_of<nlohmann::json>(j, "settings");
    r.settings.reserve_ratio = range_from_json(st, "reserve_ratio");
    r.settings.key_threshold = range_from_json(st, "key_threshold");
    r.settings.value_threshold = range_from_json(st, "value_threshold");
    r.settings.kept_fraction = value_of<std::vector<double>>(st, "kept_fraction_per_layer");
    r.compression_ms = number(j, "compression_ms");
    r.decode_tokens_per_second = number(j, "decode_tokens_per_second");
    if (j.contains("outcomes")) r.outcomes = value_of<std::vector<int>>(j, "outcomes");
    r.detail_json = value_of<nlohmann::json>(j, "detail").dump();
    return r;
  });
}

EvalResultsFile read_eval_results(const std::string& path) {
  return with_context("eval results '" + path + "'", [&] {
    nlohmann::json js = read_json_file(path);
    SKV_CHECK(js.is_object() && js.contains("options") && js.contains("records"),
              "not a results.json of spindlekv eval (it needs the keys 'options' and 'records')");
    EvalResultsFile out;
    out.options = eval_options_from_json(js.at("options").dump());
    const nlohmann::json& records = js.at("records");
    SKV_CHECK(records.is_array(), "key 'records' is ", records.type_name(), ", not an array");
    for (const auto& rec : records) out.records.push_back(eval_record_from_json(rec));
    js.erase("records");
    out.header = std::move(js);
    return out;
  });
}

nlohmann::json eval_run_signature(const EvalOptions& options, const std::string& model_fingerprint,
                                  const std::string& artifact_checksum) {
  nlohmann::json sig = nlohmann::json::parse(eval_options_json(options));
  // Inputs by content, not by path: a run continued from another directory,
  // machine or device is the same run, and an edited file is not.
  auto file_hash = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    SKV_CHECK(in.good(), "cannot open '", path, "'");
    return hash_bytes(std::string(std::istreambuf_iterator<char>(in), {}));
  };
  for (const char* key : {"methods", "ratios", "out_dir", "model_dir", "artifact", "text",
                          "ruler_words", "ruler_haystack", "device"}) {
    sig.erase(key);
  }
  sig["text"] = file_hash(options.text);
  if (!ruler_tasks_of(options.tasks).empty()) {
    sig["ruler_words"] = file_hash(options.ruler_words);
    if (!options.ruler_haystack.empty()) sig["ruler_haystack"] = file_hash(options.ruler_haystack);
  }
  for (auto& task : sig["tasks"]) {
    const std::string t = task.get<std::string>();
    if (t.rfind("jsonl:", 0) == 0) task = "jsonl:" + file_hash(t.substr(6));
  }
  sig["tool_version"] = version_string();
  sig["model_fingerprint"] = model_fingerprint;
  sig["artifact_checksum"] = artifact_checksum;
  return sig;
}

void write_eval_partial(const std::string& path, const EvalPartialResults& partial) {
  nlohmann::ordered_json js = {{"format", kPartialFormat}, {"signature", partial.signature}};
  js["settings"] = nlohmann::ordered_json::array();
  for (const auto& st : partial.settings) {
    nlohmann::ordered_json records = nlohmann::ordered_json::array();
    for (const auto& r : st.records) records.push_back(eval_record_to_json(r));
    js["settings"].push_back({{"method", st.method}, {"target", st.target}, {"records", records}});
  }
  write_file_atomically(path, js.dump(1) + "\n");
}

EvalPartialResults read_eval_partial(const std::string& path, const nlohmann::json& signature) {
  return with_context("partial eval results '" + path + "'", [&] {
    nlohmann::json js = read_json_file(path);
    SKV_CHECK(js.is_object() && js.value("format", "") == kPartialFormat,
              "not a partial-results file (format ",
              js.is_object() && js.contains("format") ? js.at("format").dump() : "missing",
              ", expected '", kPartialFormat, "')");
    EvalPartialResults out;
    out.signature = value_of<nlohmann::json>(js, "signature");
    for (const auto& [key, want] : signature.items()) {
      const nlohmann::json got = out.signature.contains(key) ? out.signature.at(key) : nullptr;
      SKV_CHECK(got == want, "written by a run with another '", key, "' (", got.dump(),
                "; this run has ", want.dump(), "): continue with the same options, or start ",
                "afresh with --overwrite");
    }
    for (const auto& st : value_of<nlohmann::json>(js, "settings")) {
      EvalSettingRecords done;
      done.method = value_of<std::string>(st, "method");
      done.target = number(st, "target");
      for (const auto& rec : value_of<nlohmann::json>(st, "records")) {
        done.records.push_back(eval_record_from_json(rec));
      }
      out.settings.push_back(std::move(done));
    }
    return out;
  });
}

}  // namespace spindlekv
