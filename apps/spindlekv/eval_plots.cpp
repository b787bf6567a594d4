#include "eval_plots.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "eval/eval_report.h"

namespace spindlekv::cli {
namespace {

namespace fs = std::filesystem;

// A file name of letters, digits, '-' and '_' only.
std::string file_stem(const std::string& text) {
  std::string s = text;
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') c = '_';
  }
  return s;
}

// A gnuplot single-quoted string: quotes are doubled.
std::string gp_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

// A POSIX shell single-quoted word.
std::string sh_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

bool have_gnuplot() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

// Runs STEM.gp inside `dir` (it writes STEM.png.tmp) and renames the PNG into place.
bool run_gnuplot(const fs::path& dir, const std::string& stem) {
  const std::string cmd =
      "cd " + sh_quote(dir.string()) + " && gnuplot " + stem + ".gp 2> " + stem + ".gp.log";
  const fs::path png = dir / (stem + ".png"), log = dir / (stem + ".gp.log");
  if (std::system(cmd.c_str()) != 0 || !fs::exists(png.string() + ".tmp")) {
    spdlog::warn("gnuplot failed on {} (see {})", (dir / (stem + ".gp")).string(), log.string());
    return false;
  }
  fs::rename(png.string() + ".tmp", png);
  std::error_code ec;
  if (fs::file_size(log, ec) == 0) fs::remove(log, ec);
  return true;
}

}  // namespace

std::vector<std::string> write_eval_plots(const std::string& plots_dir,
                                          const std::vector<EvalRecord>& records) {
  return with_context("writing plots to '" + plots_dir + "'", [&] {
    const fs::path plots(plots_dir);
    fs::create_directories(plots);
    std::vector<std::string> pngs;
    const bool gp = have_gnuplot();
    if (!gp) spdlog::warn("gnuplot not found: plot scripts written, PNGs not made");
    auto emit = [&](const std::string& stem, const std::string& dat, const std::string& script) {
      write_file_atomically((plots / (stem + ".dat")).string(), dat);
      write_file_atomically((plots / (stem + ".gp")).string(), script);
      if (gp && run_gnuplot(plots, stem)) pngs.push_back((plots / (stem + ".png")).string());
    };
    for (const auto& [task, metric] : eval_task_metrics(records)) {
      const std::string stem = file_stem(task + "_" + metric);
      std::ostringstream dat, gpl;
      gpl << "set terminal pngcairo size 900,600\nset output " << gp_quote(stem + ".png.tmp")
          << "\nset title " << gp_quote(task + ": " + metric + " against memory ratio") << "\n"
          << "set xlabel 'measured memory ratio'\nset ylabel " << gp_quote(metric)
          << "\nset key outside\nset grid\nplot ";
      int index = 0;
      for (const auto& m : eval_methods_of(records)) {
        std::vector<const EvalRecord*> rs;
        for (const auto& r : records) {
          if (r.task == task && r.metric == metric && r.method == m) rs.push_back(&r);
        }
        if (rs.empty()) continue;
        dat << "# " << m << "\n";
        for (const auto* r : rs) {
          dat << r->measured_ratio << " " << r->value << " "
              << (std::isnan(r->ci_low) ? r->value : r->ci_low) << " "
              << (std::isnan(r->ci_high) ? r->value : r->ci_high) << "\n";
        }
        dat << "\n\n";
        gpl << (index ? ", " : "") << gp_quote(stem + ".dat") << " index " << index
            << (m == "full" || rs.front()->fixed_ratio ? " using 1:2:3:4 with yerrorbars pt 7 ps 2"
                                                       : " using 1:2:3:4 with yerrorlines")
            << " title " << gp_quote(m);
        ++index;
      }
      gpl << "\n";
      emit(stem, dat.str(), gpl.str());
    }
    // Pass-key heatmaps: per method, at the smallest target ratio (and full).
    double smallest = 1;
    for (const auto& r : records)
      if (r.task == "passkey" && !r.fixed_ratio) smallest = std::min(smallest, r.target_ratio);
    for (const auto& r : records) {
      const bool single = r.method == "full" || r.fixed_ratio;  // one record per method
      if (r.task != "passkey" || (!single && r.target_ratio != smallest)) continue;
      const auto cells = nlohmann::json::parse(r.detail_json).at("cells");
      const std::string stem = file_stem("passkey_heatmap_" + r.method);
      std::vector<double> depths;
      std::vector<int64_t> lengths;
      for (const auto& c : cells) {
        const double d = c.at("depth").get<double>();
        const int64_t l = c.at("length").get<int64_t>();
        if (std::find(depths.begin(), depths.end(), d) == depths.end()) depths.push_back(d);
        if (std::find(lengths.begin(), lengths.end(), l) == lengths.end()) lengths.push_back(l);
      }
      std::ostringstream dat, gpl;
      for (const auto& c : cells) {
        const auto x =
            std::find(depths.begin(), depths.end(), c.at("depth").get<double>()) - depths.begin();
        const auto y = std::find(lengths.begin(), lengths.end(), c.at("length").get<int64_t>()) -
                       lengths.begin();
        dat << x << " " << y << " "
            << static_cast<double>(c.at("correct").get<int64_t>()) / c.at("trials").get<int64_t>()
            << "\n";
      }
      gpl << "set terminal pngcairo size 700,500\nset output " << gp_quote(stem + ".png.tmp")
          << "\nset title "
          << gp_quote("pass-key accuracy, " + r.method + " at memory ratio " +
                      format_number("%.3f", r.measured_ratio))
          << "\nset xlabel 'insertion depth'\nset ylabel "
          << "'context length (tokens)'\nset cbrange [0:1]\nset palette defined (0 'red', 0.5 "
          << "'yellow', 1 'green')\nset xrange [-0.5:" << depths.size() - 0.5
          << "]\nset yrange [-0.5:" << lengths.size() - 0.5 << "]\nset xtics (";
      for (size_t i = 0; i < depths.size(); ++i)
        gpl << (i ? ", " : "") << "'" << depths[i] << "' " << i;
      gpl << ")\nset ytics (";
      for (size_t i = 0; i < lengths.size(); ++i)
        gpl << (i ? ", " : "") << "'" << lengths[i] << "' " << i;
      gpl << ")\nplot " << gp_quote(stem + ".dat")
          << " using 1:2:3 with image notitle, '' using 1:2:(sprintf('%.2f', $3)) with labels "
             "notitle\n";
      emit(stem, dat.str(), gpl.str());
    }
    return pngs;
  });
}

}  // namespace spindlekv::cli
