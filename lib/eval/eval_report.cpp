#include "eval/eval_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "eval/eval_methods.h"
#include "eval/eval_records_file.h"
#include "eval/statistics.h"

namespace spindlekv {
namespace {

namespace fs = std::filesystem;

}  // namespace

std::string format_number(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

std::vector<std::string> eval_methods_of(const std::vector<EvalRecord>& rs) {
  std::vector<std::string> out;
  for (const auto& r : rs) {
    if (std::find(out.begin(), out.end(), r.method) == out.end()) out.push_back(r.method);
  }
  return out;
}

namespace {

std::string range_text(const RangeStat& r, const char* f = "%.3f") {
  if (r.n == 0) return "-";
  if (r.min == r.max) return format_number(f, r.mean);
  return format_number(f, r.mean) + " [" + format_number(f, r.min) + ", " +
         format_number(f, r.max) + "]";
}

// Records from before whole-table charging have no N = 1 / N = 16 ratios.
std::string ratio_or_dash(double r) { return std::isnan(r) ? "-" : format_number("%.3f", r); }

// A record's value and, where it has one, its 95% interval. KL values are
// small (hundredths of a nat): more digits than accuracies.
std::string value_cell(const EvalRecord& r) {
  const bool small = r.metric == "kl_mean";
  std::string cell = format_number(small ? "%.4f" : "%.3f", r.value);
  if (!std::isnan(r.ci_low)) {
    const char* f = small ? "%.4f" : "%.2f";
    cell += " [" + format_number(f, r.ci_low) + ", " + format_number(f, r.ci_high) + "]";
  }
  return cell;
}

std::vector<const EvalRecord*> select(const std::vector<EvalRecord>& records,
                                      const std::string& task, const std::string& metric) {
  std::vector<const EvalRecord*> out;
  for (const auto& r : records) {
    if (r.task == task && r.metric == metric) out.push_back(&r);
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> eval_task_metrics(
    const std::vector<EvalRecord>& records) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& r : records) {
    const auto key = std::make_pair(r.task, r.metric);
    if (std::find(out.begin(), out.end(), key) == out.end()) out.push_back(key);
  }
  return out;
}

std::string summary_table(const std::vector<EvalRecord>& records, const std::string& task,
                          const std::string& metric) {
  std::set<double> targets;
  for (const auto& r : records) {
    if (r.task == task && r.metric == metric && r.method != "full" && !r.fixed_ratio) {
      targets.insert(r.target_ratio);
    }
  }
  std::ostringstream s;
  s << "| method |";
  for (double t : targets) s << " ratio " << format_number("%.4g", t) << " |";
  s << "\n|---|";
  for (size_t i = 0; i < targets.size(); ++i) s << "---|";
  s << "\n";
  for (const auto& m : eval_methods_of(records)) {
    std::map<double, const EvalRecord*> by_target;
    for (const auto& r : records) {
      if (r.task == task && r.metric == metric && r.method == m) by_target[r.target_ratio] = &r;
    }
    if (by_target.empty()) continue;
    s << "| " << m << " |";
    if (by_target.begin()->second->fixed_ratio) {
      // A pure quantiser: one result at its own ratio, in its own column.
      const EvalRecord& r = *by_target.begin()->second;
      const std::string cell =
          value_cell(r) + " (" + format_number("%.3f", r.measured_ratio) + " fixed)";
      for (size_t i = 0; i < targets.size(); ++i) s << " " << (i == 0 ? cell : "-") << " |";
    } else if (m == "full") {
      const EvalRecord& r = *by_target.begin()->second;
      const char* value_format = metric == "kl_mean" ? "%.4f" : "%.3f";  // as value_cell's
      for (size_t i = 0; i < targets.size(); ++i)
        s << " " << format_number(value_format, r.value) << " |";
    } else {
      for (double t : targets) {
        auto it = by_target.find(t);
        if (it == by_target.end()) {
          s << " |";
          continue;
        }
        const EvalRecord& r = *it->second;
        s << " " << value_cell(r) << " (" << format_number("%.3f", r.measured_ratio)
          << (r.ratio_matched ? "" : "*") << ") |";
      }
    }
    s << "\n";
  }
  return s.str();
}

std::string ruler_table(const std::vector<EvalRecord>& records) {
  // Task names are "ruler:<task>@<length>:<protocol>" and "ruler:average:<protocol>".
  using Row = std::pair<std::string, double>;  // method, target ratio
  struct Table {
    std::vector<std::string> columns;  // in order of first appearance, without "average"
    std::vector<Row> rows;             // in order of first appearance
    std::map<Row, std::map<std::string, const EvalRecord*>> cells;
  };
  std::vector<std::string> protocols;
  std::map<std::string, Table> tables;
  for (const auto& r : records) {
    if (r.task.rfind("ruler:", 0) != 0 || r.metric != "string_match_all") continue;
    const size_t colon = r.task.rfind(':');
    const std::string protocol = r.task.substr(colon + 1), column = r.task.substr(6, colon - 6);
    if (tables.count(protocol) == 0) protocols.push_back(protocol);
    Table& t = tables[protocol];
    if (column != "average" &&
        std::find(t.columns.begin(), t.columns.end(), column) == t.columns.end()) {
      t.columns.push_back(column);
    }
    // A fixed-ratio codec's tasks measure slightly different ratios: one row.
    const Row row{r.method, r.fixed_ratio ? -1.0 : r.target_ratio};
    if (t.cells.count(row) == 0) t.rows.push_back(row);
    t.cells[row][column] = &r;
  }
  std::ostringstream s;
  for (const auto& protocol : protocols) {
    const Table& t = tables[protocol];
    std::vector<std::string> cols = t.columns;
    cols.push_back("average");
    s << "\n### RULER, " << protocol << " (mean string_match_all)\n\n| method | ratio |";
    for (const auto& c : cols) s << " " << c << " |";
    s << "\n|---|---|";
    for (size_t i = 0; i < cols.size(); ++i) s << "---|";
    s << "\n";
    for (const Row& row : t.rows) {
      const auto& c = t.cells.at(row);
      const EvalRecord* any = c.count("average") ? c.at("average") : c.begin()->second;
      s << "| " << row.first << " | "
        << (any->method == "full" ? std::string("1") : format_number("%.3f", any->measured_ratio))
        << (any->fixed_ratio ? " fixed" : "") << " |";
      for (const auto& col : cols) {
        auto it = c.find(col);
        s << " " << (it == c.end() ? "-" : format_number("%.3f", it->second->value)) << " |";
      }
      s << "\n";
    }
  }
  return s.str();
}

std::string paired_comparison(const std::vector<EvalRecord>& records, const std::string& task,
                              const std::string& metric) {
  const auto rs = select(records, task, metric);
  std::set<double> targets;
  for (const auto* r : rs) {
    if (r->method != "full" && !r->fixed_ratio && !r->outcomes.empty()) {
      targets.insert(r->target_ratio);
    }
  }
  std::ostringstream s;
  for (double t : targets) {
    const EvalRecord* best = nullptr;
    std::vector<const EvalRecord*> spindle;
    for (const auto* r : rs) {
      if (r->target_ratio != t || r->method == "full" || r->fixed_ratio || r->outcomes.empty()) {
        continue;
      }
      if (method_spec(r->method).is_spindle()) {
        spindle.push_back(r);
      } else if (best == nullptr || r->value > best->value) {
        best = r;
      }
    }
    if (best == nullptr) continue;
    if (s.tellp() == 0) {
      s << "| ratio | method | score | best baseline | its score | difference | McNemar p | n |\n"
        << "|---|---|---|---|---|---|---|---|\n";
    }
    if (spindle.empty()) {
      s << "| " << format_number("%.4g", t) << " | - | - | " << best->method << " | "
        << format_number("%.3f", best->value) << " | - | - | " << best->n << " |\n";
    }
    for (const auto* r : spindle) {
      const bool paired = r->outcomes.size() == best->outcomes.size();
      s << "| " << format_number("%.4g", t) << " | " << r->method << " | "
        << format_number("%.3f", r->value) << " | " << best->method << " | "
        << format_number("%.3f", best->value) << " | "
        << format_number("%+.3f", r->value - best->value) << " | "
        << (paired ? format_number("%.2g", mcnemar_exact_p(r->outcomes, best->outcomes))
                   : "unpaired")
        << " | " << r->n << " |\n";
    }
  }
  return s.str();
}

std::string settings_table(const std::vector<EvalRecord>& records, const std::string& task,
                           const std::string& metric) {
  std::ostringstream s;
  s << "| method | target | reserve | key theta | value theta | kept fraction by layer | ratio "
       "| prompts' ratios | N = 1 | N = 16 | excl. shared | shared tables (KiB) |\n"
    << "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto* r : select(records, task, metric)) {
    std::string kept;
    for (double k : r->settings.kept_fraction)
      kept += (kept.empty() ? "" : " ") + format_number("%.2f", k);
    const EvalMemory& m = r->memory;
    std::string prompts = "-";
    if (!r->prompt_ratios.empty()) {
      const auto [lo, hi] = std::minmax_element(r->prompt_ratios.begin(), r->prompt_ratios.end());
      prompts = format_number("%.3f", *lo) + "-" + format_number("%.3f", *hi);
    }
    s << "| " << r->method << " | " << format_number("%.4g", r->target_ratio) << " | "
      << range_text(r->settings.reserve_ratio) << " | " << range_text(r->settings.key_threshold)
      << " | " << range_text(r->settings.value_threshold) << " | " << kept << " | "
      << format_number("%.3f", m.ratio) << " | " << prompts << " | " << ratio_or_dash(m.ratio_n1)
      << " | " << ratio_or_dash(m.ratio_n16) << " | "
      << format_number("%.3f", m.ratio_excluding_shared) << " | "
      << format_number("%.1f", m.shared_bytes_total / 1024.0) << " |\n";
  }
  return s.str();
}

std::string task_protocol(const std::string& task) {
  if (task == "ppl" || task == "kl") {
    return "Each context is prefilled and compressed; the continuation after it is then "
           "teacher-forced through the compressed cache, token by token" +
           std::string(task == "kl" ? ", and KL(full || method) of each next-token distribution "
                                      "is averaged (mean over contexts, bootstrap interval)."
                                    : ", and scored in bits per byte.");
  }
  if (task == "passkey") {
    return "Question-aware: the whole prompt (filler, pass key, question) is prefilled and "
           "compressed, then the answer is decoded greedily through the compressed cache.";
  }
  if (task == "fidelity") {
    return "Per layer, attention outputs of the same queries over the compressed cache "
           "against the full cache (relative error).";
  }
  if (task.rfind("jsonl:", 0) == 0) {
    return "Question-aware: context + input are prefilled and compressed, then the answer is "
           "decoded greedily up to the first newline.";
  }
  return "";
}

bool lower_is_better(const std::string& metric) {
  return metric == "bits_per_byte" || metric == "kl_mean" || metric == "kl_p99" ||
         metric.find("error") != std::string::npos;
}

namespace {

// The per-prompt values of a record that a paired test can use: 0/1
// outcomes, or the KL task's per-context means.
std::vector<double> paired_values(const EvalRecord& r) {
  if (!r.outcomes.empty()) return std::vector<double>(r.outcomes.begin(), r.outcomes.end());
  const auto detail = nlohmann::json::parse(r.detail_json, nullptr, false);
  if (detail.is_object() && detail.contains("per_context") && detail["per_context"].is_array()) {
    return detail["per_context"].get<std::vector<double>>();
  }
  return {};
}

}  // namespace

std::string which_method_table(const std::vector<EvalRecord>& records, const std::string& task,
                               const std::string& metric, double tolerance) {
  const auto rs = select(records, task, metric);
  const bool lower = lower_is_better(metric);
  // Rows: each ratio a method was searched to, and each fixed codec's own,
  // one per printed label (the largest ratio that prints so).
  std::map<std::string, double> rows;
  const EvalRecord* full = nullptr;
  for (const auto* r : rs) {
    if (r->method == "full") {
      full = r;
      continue;
    }
    const double t = r->fixed_ratio ? r->measured_ratio : r->target_ratio;
    double& row = rows.emplace(format_number("%.3g", t), t).first->second;
    row = std::max(row, t);
  }
  std::vector<double> thresholds;
  for (const auto& [label, t] : rows) thresholds.push_back(t);
  std::sort(thresholds.begin(), thresholds.end());
  // Better value first; at equal values, fewer bytes.
  auto better = [&](const EvalRecord* a, const EvalRecord* b) {
    if (a->value != b->value) return lower ? a->value < b->value : a->value > b->value;
    return a->measured_ratio < b->measured_ratio;
  };
  std::ostringstream s;
  s << "| memory (of float16) | best method | " << metric << " [95%] | its ratio | runner-up | "
    << metric << " [95%] | paired p | full cache |\n|---|---|---|---|---|---|---|---|\n";
  for (double t : thresholds) {
    // Each method's best record that fits: its measured ratio is at most the
    // row's, or it was searched to a target at most the row's and landed
    // within the tolerance of it (as the eval's own tables count it).
    std::map<std::string, const EvalRecord*> per_method;
    for (const auto* r : rs) {
      const bool landed = !r->fixed_ratio && r->ratio_matched && r->target_ratio <= t &&
                          r->measured_ratio <= r->target_ratio + tolerance;
      if (r->method == "full" || !(landed || r->measured_ratio <= t)) continue;
      const EvalRecord*& best = per_method[r->method];
      if (best == nullptr || better(r, best)) best = r;
    }
    std::vector<const EvalRecord*> fit;
    for (const auto& [method, r] : per_method) fit.push_back(r);
    std::sort(fit.begin(), fit.end(), better);
    const EvalRecord& best = *fit[0];  // the row's own record fits, so fit is not empty
    s << "| <= " << format_number("%.3g", t) << " | " << best.method << " | " << value_cell(best)
      << " | " << format_number("%.3f", best.measured_ratio) << (best.fixed_ratio ? " fixed" : "")
      << " | ";
    if (fit.size() > 1) {
      const EvalRecord& second = *fit[1];
      const auto a = paired_values(best), b = paired_values(second);
      std::string p = "-";
      if (!a.empty() && a.size() == b.size()) {
        p = format_number("%.2g", best.outcomes.empty()
                                      ? sign_test_exact_p(a, b)
                                      : mcnemar_exact_p(best.outcomes, second.outcomes));
      }
      s << second.method << " | " << value_cell(second) << " | " << p << " | ";
    } else {
      s << "- | - | - | ";
    }
    s << (full ? value_cell(*full) : "-") << " |\n";
  }
  return s.str();
}

std::string eval_summary_page(const EvalOptions& o, const std::vector<EvalRecord>& records,
                              const std::string& header_json) {
  const auto header = nlohmann::json::parse(header_json);
  bool whole_tables = true;  // records from before whole-table charging lack ratio_n1
  for (const auto& r : records) whole_tables = whole_tables && !std::isnan(r.memory.ratio_n1);
  std::ostringstream md;
  md << "# spindlekv eval\n\n";
  if (header.contains("date")) md << "Run finished " << header["date"].get<std::string>() << ". ";
  if (header.contains("tool_version")) {
    md << "spindlekv " << header["tool_version"].get<std::string>();
    if (header.contains("threads")) md << ", " << header["threads"].dump() << " threads";
    if (header.contains("seconds")) {
      md << ", " << format_number("%.0f", header["seconds"].get<double>()) << " s";
    }
    md << ". ";
  }
  md << "Written by `spindlekv report` from this run's results.json.\n\nModel `" << o.model_dir
     << "` (" << o.model_dtype << ", on " << o.device << "); cells are the score, its 95% "
     << "interval (Wilson for accuracies, bootstrap for KL), and, in parentheses, the measured "
        "memory ratio: ";
  if (whole_tables) {
    md << "(bytes held + every shared table the method needs, whole (calibrated codebooks, "
          "token tables, codec rotations and codebooks), divided by the "
       << o.shared_requests << " concurrent request(s) said to share them) / dense ";
  } else {
    md << "(bytes held + the shared table rows each prompt referenced, at most the whole "
          "table divided by the "
       << o.shared_requests
       << " concurrent request(s) said to share it: this run predates whole-table "
          "charging, so its shared tables are NOT charged in full) / dense ";
  }
  md << o.kv_dtype << " K/V bytes; * = the search could not land within " << o.ratio_tolerance
     << " of the target; \"fixed\" = a pure quantiser (a row codec alone: fp8, kivi4, tq3, "
        "q4_0, ...), which has no knob: it is reported once, at its own measured ratio, and "
        "left out of the paired comparisons at the target ratios.";
  if (whole_tables) {
    md << " The settings tables give each record's ratio with the tables charged in full to one "
          "request (N = 1) and shared by 16 (N = 16), and the range of the prompts' ratios.";
  }
  md << "\n";
  const std::string ruler = ruler_table(records);
  if (!ruler.empty()) {
    md << "\n## RULER\n\nEach sample's score is the share of its expected strings found "
       << "in the greedy answer; `all_found` below is the share of samples with every one "
       << "found, with Wilson intervals.\n"
       << ruler;
  }
  for (const auto& [task, metric] : eval_task_metrics(records)) {
    md << "\n## " << task << ": " << metric << "\n\n";
    const std::string protocol = task_protocol(task);
    if (!protocol.empty()) md << protocol << "\n\n";
    md << summary_table(records, task, metric);
    const std::string paired = paired_comparison(records, task, metric);
    if (!paired.empty()) {
      md << "\nAgainst the best baseline at each ratio, same prompts (exact McNemar test):\n\n"
         << paired;
    }
  }
  // Settings: once per task (its first metric).
  std::set<std::string> seen;
  for (const auto& [task, metric] : eval_task_metrics(records)) {
    if (!seen.insert(task).second) continue;
    md << "\n## What the ratio search chose: " << task << "\n\n"
       << settings_table(records, task, metric);
  }
  md << "\nPlots (`spindlekv eval` with gnuplot on PATH): `plots/`.\n";
  return md.str();
}

void write_eval_report(const std::string& out_dir, const EvalOptions& o,
                       const std::vector<EvalRecord>& records, const std::string& header_json) {
  with_context("writing eval results to '" + out_dir + "'", [&] {
    fs::create_directories(out_dir);
    nlohmann::ordered_json js = nlohmann::ordered_json::parse(header_json);
    js["records"] = nlohmann::ordered_json::array();
    std::ostringstream csv;
    csv << "method,task,metric,value,n,ci_low,ci_high,target_ratio,measured_ratio,"
           "ratio_excluding_shared,shared_bytes_total,shared_bytes_charged,shared_requests,"
           "ratio_n1,ratio_n16,paper_ratio,ratio_matched,"
           "reserve_mean,reserve_min,reserve_max,key_threshold_mean,value_threshold_mean,"
           "compression_ms,decode_tokens_per_second,fixed_ratio\n";
    for (const auto& r : records) {
      const EvalMemory& m = r.memory;
      const EvalSettings& st = r.settings;
      js["records"].push_back(eval_record_to_json(r));
      csv << r.method << ",\"" << r.task << "\"," << r.metric << "," << r.value << "," << r.n << ","
          << r.ci_low << "," << r.ci_high << "," << r.target_ratio << "," << r.measured_ratio << ","
          << m.ratio_excluding_shared << "," << m.shared_bytes_total << ","
          << m.shared_bytes_charged << "," << m.shared_requests << "," << m.ratio_n1 << ","
          << m.ratio_n16 << "," << r.paper_ratio << "," << (r.ratio_matched ? 1 : 0) << ","
          << st.reserve_ratio.mean << "," << st.reserve_ratio.min << "," << st.reserve_ratio.max
          << "," << st.key_threshold.mean << "," << st.value_threshold.mean << ","
          << r.compression_ms << "," << r.decode_tokens_per_second << "," << (r.fixed_ratio ? 1 : 0)
          << "\n";
    }
    write_file_atomically((fs::path(out_dir) / "results.json").string(), js.dump(2) + "\n");
    write_file_atomically((fs::path(out_dir) / "results.csv").string(), csv.str());

    write_file_atomically((fs::path(out_dir) / "summary.md").string(),
                          eval_summary_page(o, records, header_json));
  });
}

}  // namespace spindlekv
