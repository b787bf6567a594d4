#include "eval/compression_eval.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <tuple>

#include "core/error.h"
#include "core/model_fingerprint.h"
#include "eval/detail/eval_context.h"
#include "eval/eval_methods.h"
#include "eval/eval_records_file.h"
#include "eval/metrics.h"
#include "eval/retrieval_eval.h"
#include "eval/ruler_tasks.h"
#include "eval/statistics.h"
#include "model/compressed_prefill.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"
#include "runtime/artifact.h"
#include "runtime/paper_defaults.h"

namespace spindlekv {

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(EvalOptions, model_dir, artifact, out_dir, methods, ratios,
                                   tasks, text, ppl_samples, ppl_context, ppl_continuation,
                                   passkey_lengths, passkey_depths, passkey_trials, jsonl_max_new,
                                   jsonl_limit, window, ratio_tolerance, shared_requests, kv_dtype,
                                   model_dtype, device, ruler_lengths, ruler_samples,
                                   ruler_protocol, ruler_words, ruler_haystack, seed)

namespace {

// `--tasks` split into RULER's tasks and the others ("ruler:a,b" arrives as
// "ruler:a", "b": the task names after a "ruler:" item join it).
struct TaskList {
  std::vector<std::string> ruler, other;
};

TaskList split_tasks(const std::vector<std::string>& tasks) {
  TaskList out;
  bool in_ruler = false;
  for (const auto& t : tasks) {
    std::string name = t;
    if (t.rfind("ruler:", 0) == 0) {
      name = t.substr(6);
      in_ruler = true;
    } else if (!in_ruler || !is_ruler_task(t)) {
      in_ruler = false;
      out.other.push_back(t);
      continue;
    }
    if (name == "all") {
      for (const auto& n : ruler_task_names()) out.ruler.push_back(n);
    } else {
      SKV_CHECK(is_ruler_task(name), "RULER task '", name, "' is unknown (allowed: all, ",
                "niah_single, niah_multikey, niah_multikey_dense, niah_multivalue, ",
                "niah_multiquery, vt, cwe, fwe)");
      out.ruler.push_back(name);
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> ruler_tasks_of(const std::vector<std::string>& tasks) {
  return split_tasks(tasks).ruler;
}

std::string eval_options_json(const EvalOptions& options) { return nlohmann::json(options).dump(); }

EvalOptions eval_options_from_json(const std::string& json) {
  nlohmann::json merged = EvalOptions{};
  nlohmann::json given;
  try {
    given = nlohmann::json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    SKV_THROW(kInvalidInput, "eval options are not JSON (", e.what(), ")");
  }
  SKV_CHECK(given.is_object(), "eval options must be a JSON object, not ", given.type_name());
  for (const auto& [key, value] : given.items()) {
    SKV_CHECK(merged.contains(key), "eval options have an unknown key '", key, "'");
    merged[key] = value;
  }
  try {
    return merged.get<EvalOptions>();
  } catch (const nlohmann::json::exception& e) {
    SKV_THROW(kInvalidInput, "eval options have a value of the wrong type (", e.what(), ")");
  }
}

void RangeStat::add(double v) {
  if (std::isnan(v)) return;
  mean = n == 0 ? v : (mean * n + v) / (n + 1);
  min = n == 0 ? v : std::min(min, v);
  max = n == 0 ? v : std::max(max, v);
  ++n;
}

using namespace eval_detail;

std::vector<EvalRecord> run_eval(const EvalOptions& o,
                                 const std::function<void(const EvalProgress&)>& progress,
                                 const EvalContinuation& continuation) {
  return with_context("eval", [&] {
    SKV_CHECK(!o.methods.empty() && !o.tasks.empty(), "nothing to evaluate: no methods or tasks");
    std::vector<MethodSpec> methods;
    bool needs_artifact = false, needs_token_table = false;
    for (const auto& name : o.methods) {
      methods.push_back(method_spec(name));
      needs_artifact |= methods.back().needs_artifact();
      needs_token_table |= methods.back().token_id_layer0;
    }
    for (double r : o.ratios) SKV_CHECK(r > 0 && r <= 1, "ratio ", r, " outside (0, 1]");
    for (size_t i = 0; i < o.methods.size(); ++i) {
      for (size_t j = 0; j < i; ++j) {
        SKV_CHECK(o.methods[i] != o.methods[j], "method '", o.methods[i], "' is listed twice");
      }
    }
    for (size_t i = 0; i < o.ratios.size(); ++i) {
      for (size_t j = 0; j < i; ++j) {
        SKV_CHECK(o.ratios[i] != o.ratios[j], "ratio ", o.ratios[i], " is listed twice");
      }
    }
    SKV_CHECK_GE(o.shared_requests, 1, "--shared-requests");
    const TaskList task_list = split_tasks(o.tasks);
    const std::vector<std::string>& ruler = task_list.ruler;
    for (const auto& t : task_list.other) {
      SKV_CHECK(
          t == "ppl" || t == "kl" || t == "passkey" || t == "fidelity" || t.rfind("jsonl:", 0) == 0,
          "task '", t, "' is unknown (allowed: ppl, kl, passkey, fidelity, jsonl:FILE, ruler:T)");
    }
    std::vector<std::string> protocols = {o.ruler_protocol};
    if (o.ruler_protocol == "both") protocols = {"question-aware", "question-agnostic"};
    for (const auto& p : protocols) {
      SKV_CHECK(p == "question-aware" || p == "question-agnostic", "protocol '", p,
                "' is unknown (allowed: question-aware, question-agnostic, both)");
    }
    at::manual_seed(static_cast<int64_t>(o.seed));
    const c10::ScalarType model_dtype = parse_model_dtype(o.model_dtype, "model dtype");
    Context cx{o,
               LlamaModel::load(o.model_dir, parse_device(o.device, "--device"), model_dtype),
               load_tokenizer(o.model_dir),
               nullptr,
               "",
               {},
               {}};
    if (needs_token_table) cx.layer0_by_token = cx.model.token_kv_table(0);
    const bool keep_partial = !continuation.partial_path.empty();
    const std::string fingerprint =
        needs_artifact || keep_partial ? fingerprint_model(o.model_dir).to_string() : "";
    if (needs_artifact) {
      SKV_CHECK(!o.artifact.empty(),
                "methods spindle, spindle-hybrid and fp8-calibrated need --artifact");
      cx.artifact = std::make_shared<Artifact>(load_artifact_for_model(o.artifact, fingerprint));
      cx.artifact->check_geometry(cx.model.config().geometry());
    }
    // Finished settings: read back when continuing, written after each new one.
    EvalPartialResults partial;
    if (keep_partial) {
      partial.signature =
          eval_run_signature(o, fingerprint, cx.artifact ? cx.artifact->checksum : "");
      if (continuation.resume && std::filesystem::exists(continuation.partial_path)) {
        partial.settings = read_eval_partial(continuation.partial_path, partial.signature).settings;
      }
    }
    auto finished = [&](const std::string& method, double target) -> const EvalSettingRecords* {
      for (const auto& st : partial.settings) {
        if (st.method == method && st.target == target) return &st;
      }
      return nullptr;
    };
    {
      std::ifstream in(o.text, std::ios::binary);
      SKV_CHECK(in.good(), "cannot open text '", o.text, "'");
      cx.text.assign(std::istreambuf_iterator<char>(in), {});
    }
    if (cx.model.config().bos_token_id) cx.bos = {*cx.model.config().bos_token_id};
    const std::vector<TextSample> samples = text_samples(cx);
    // RULER samples: generated once for every method, and written out so
    // that any other tool can score the same inputs.
    std::vector<RulerSample> ruler_samples;
    if (!ruler.empty()) {
      RulerResources res;
      res.words = load_word_list(o.ruler_words);
      if (!o.ruler_haystack.empty()) {
        std::ifstream in(o.ruler_haystack, std::ios::binary);
        SKV_CHECK(in.good(), "cannot open RULER haystack '", o.ruler_haystack, "'");
        res.haystack = haystack_words(std::string(std::istreambuf_iterator<char>(in), {}));
      }
      SKV_CHECK_GT(o.ruler_samples, 0, "RULER samples per task and length");
      std::vector<int64_t> lengths = o.ruler_lengths;
      if (lengths.empty()) {
        lengths = {std::min<int64_t>(4096, cx.model.config().max_position_embeddings)};
      }
      for (const auto& task : ruler) {
        for (int64_t length : lengths) {
          std::vector<RulerSample> batch;
          for (int64_t i = 0; i < o.ruler_samples; ++i) {
            batch.push_back(make_ruler_sample(task, *cx.tokenizer, length, i, o.seed, res));
          }
          if (!o.out_dir.empty()) {
            std::filesystem::create_directories(std::filesystem::path(o.out_dir) / "ruler");
            write_ruler_jsonl(
                o.out_dir + "/ruler/" + task + "_" + std::to_string(length) + ".jsonl", batch);
          }
          ruler_samples.insert(ruler_samples.end(), batch.begin(), batch.end());
        }
      }
    }
    auto has = [&](const std::string& t) {
      return std::find(o.tasks.begin(), o.tasks.end(), t) != o.tasks.end();
    };
    std::vector<EvalRecord> records;
    int64_t total = 0, done = 0;
    for (const auto& m : methods) {
      total += m.single_setting() ? 1 : static_cast<int64_t>(o.ratios.size());
    }
    for (const auto& m : methods) {
      const std::vector<double> targets = m.single_setting() ? std::vector<double>{1.0} : o.ratios;
      // The held-out contexts, prefilled once per method (with the attention
      // rows its policy needs): the probes of the ratio search and the inputs
      // of the ppl and fidelity tasks. Not needed when every setting is done.
      std::vector<Prefill> prefills;
      const bool all_finished = std::all_of(targets.begin(), targets.end(),
                                            [&](double t) { return finished(m.name, t); });
      for (size_t i = 0; i < samples.size() && !all_finished; ++i) {
        prefills.push_back(
            run_prefill(cx, samples[i].context, rows_needed(cx, m, samples[i].context.size())));
      }
      for (double target : targets) {
        if (const EvalSettingRecords* st = finished(m.name, target)) {
          records.insert(records.end(), st->records.begin(), st->records.end());
          ++done;
          continue;
        }
        if (progress) progress({m.name, "", target, done, total});
        at::manual_seed(static_cast<int64_t>(o.seed));  // each setting on its own
        const size_t first_record = records.size();
        const SettingSearch search(cx, m, target);
        // Each held-out context gets its own setting; records keep their range.
        std::vector<Setting> settings;
        for (const Prefill& p : prefills) settings.push_back(search.for_prefill(p));
        const EvalRecord base = base_record(m, target);
        if (has("ppl") || has("kl") || has("fidelity")) {
          for (auto& r : task_ppl_and_fidelity(cx, m, base, samples, prefills, settings, has("ppl"),
                                               has("kl"), has("fidelity"))) {
            records.push_back(r);
          }
        }
        if (has("passkey")) records.push_back(task_passkey(cx, m, base, search));
        if (!ruler_samples.empty()) {
          for (auto& r : task_ruler(cx, m, base, search, ruler_samples, protocols)) {
            records.push_back(r);
          }
        }
        for (const auto& t : o.tasks) {
          if (t.rfind("jsonl:", 0) != 0) continue;
          for (auto& r : task_jsonl(cx, m, base, search, t.substr(6))) records.push_back(r);
        }
        if (keep_partial) {
          partial.settings.push_back(
              {m.name, target,
               std::vector<EvalRecord>(records.begin() + static_cast<int64_t>(first_record),
                                       records.end())});
          write_eval_partial(continuation.partial_path, partial);
        }
        ++done;
      }
    }
    if (progress) progress({"", "", 0, done, total});
    return records;
  });
}

}  // namespace spindlekv
