#include "train/train_runner.h"

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "capture/capture_file.h"
#include "capture/capture_runner.h"
#include "core/error.h"
#include "core/model_fingerprint.h"
#include "core/version.h"

namespace spindlekv {

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(CodebookTrainingParameters, threshold, max_codewords,
                                   kmeans_centroids, kmeans_iterations, greedy_sample,
                                   selection_sample, greedy_candidates, merge_threshold,
                                   min_support, max_rounds, seed)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(TrainOptions, capture, out, layers, model_dir, sharing,
                                   key_threshold, value_threshold, max_codewords, target_coverage,
                                   sample_size, heldout_size, heldout_every, trainer, overwrite)

std::string train_options_json(const TrainOptions& options) {
  nlohmann::json j = options;
  // Set per codebook from key_threshold / value_threshold and max_codewords.
  j["trainer"].erase("threshold");
  j["trainer"].erase("max_codewords");
  return j.dump();
}

namespace fs = std::filesystem;

std::vector<int64_t> curve_sizes_up_to(int64_t max) {
  std::vector<int64_t> out;
  for (int64_t k = 1; k < max; k *= 2) out.push_back(k);
  out.push_back(max);
  return out;
}

namespace {

// Up to `limit` row indices among `rows`, uniformly, sorted.
std::vector<int64_t> sample_rows(std::vector<int64_t> rows, int64_t limit, std::mt19937_64& rng) {
  if (static_cast<int64_t>(rows.size()) > limit) {
    std::shuffle(rows.begin(), rows.end(), rng);
    rows.resize(limit);
    std::sort(rows.begin(), rows.end());
  }
  return rows;
}

// Reads the rows `wanted` (sorted) of keys or values in blocks: [n, kv_heads, d].
at::Tensor read_selected(const CaptureReader& r, int64_t layer, bool keys,
                         const std::vector<int64_t>& wanted) {
  const int64_t total = r.vector_count(layer);
  constexpr int64_t kBlock = 65536;
  std::vector<at::Tensor> parts;
  size_t w = 0;
  for (int64_t start = 0; start < total && w < wanted.size(); start += kBlock) {
    const int64_t n = std::min(kBlock, total - start);
    std::vector<int64_t> local;
    while (w < wanted.size() && wanted[w] < start + n) local.push_back(wanted[w++] - start);
    if (local.empty()) continue;
    at::Tensor block = keys ? r.read_keys(layer, start, n) : r.read_values(layer, start, n);
    parts.push_back(block.index_select(0, at::tensor(local, at::kLong)));
  }
  const auto& m = r.metadata();
  return parts.empty() ? at::empty({0, m.num_kv_heads, m.head_dim}, at::kFloat) : at::cat(parts, 0);
}

// [n, kv_heads, d] -> one [m, d] matrix per group.
std::vector<at::Tensor> groups_of(const at::Tensor& v, const std::string& sharing) {
  std::vector<at::Tensor> out;
  if (sharing == "shared") {
    out.push_back(v.reshape({-1, v.size(2)}).contiguous());
  } else {
    for (int64_t g = 0; g < v.size(1); ++g) out.push_back(v.select(1, g).contiguous());
  }
  return out;
}

CodebookSet train_set(const std::vector<at::Tensor>& train, const std::vector<at::Tensor>& heldout,
                      const TrainOptions& o, double threshold, int64_t head_dim,
                      const std::vector<int64_t>& curve_sizes, const std::function<void()>& tick) {
  CodebookTrainingParameters p = o.trainer;
  p.threshold = threshold;
  p.max_codewords = o.max_codewords;
  std::vector<Codebook> books;
  CodebookSet set;
  int64_t K = 0;
  for (size_t g = 0; g < train.size(); ++g) {
    Codebook cb = train_codebook(train[g], p);
    std::vector<double> curve = coverage_curve(cb.codewords, heldout[g], threshold, curve_sizes);
    int64_t size = cb.codewords.size(0);
    if (o.target_coverage > 0) {
      // Smallest curve size reaching the target on held-out vectors.
      for (size_t i = 0; i < curve_sizes.size(); ++i) {
        if (curve[i] >= o.target_coverage) {
          size = std::min(size, curve_sizes[i]);
          break;
        }
      }
    }
    cb.codewords = cb.codewords.narrow(0, 0, size);
    cb.support = cb.support.narrow(0, 0, size);
    set.sizes.push_back(size);
    set.train_coverage.push_back(codebook_coverage(cb.codewords, train[g], threshold));
    set.heldout_coverage.push_back(codebook_coverage(cb.codewords, heldout[g], threshold));
    set.heldout_curve.push_back(curve);
    K = std::max(K, size);
    books.push_back(std::move(cb));
    if (tick) tick();
  }
  set.codewords = at::zeros({static_cast<int64_t>(books.size()), K, head_dim}, at::kFloat);
  set.support = at::zeros({static_cast<int64_t>(books.size()), K}, at::kLong);
  for (size_t g = 0; g < books.size(); ++g) {
    const int64_t n = books[g].codewords.size(0);
    set.codewords[g].narrow(0, 0, n).copy_(books[g].codewords);
    set.support[g].narrow(0, 0, n).copy_(books[g].support);
  }
  return set;
}

}  // namespace

CodebookFile run_train(const TrainOptions& o,
                       const std::function<void(const TrainProgress&)>& on_progress) {
  const auto t0 = std::chrono::steady_clock::now();
  SKV_CHECK(o.sharing == "per-head" || o.sharing == "shared", "--sharing '", o.sharing,
            "' (allowed: per-head, shared)");
  SKV_CHECK(o.key_threshold > 0 && o.key_threshold < 1, "--key-threshold must lie in (0, 1), got ",
            o.key_threshold);
  SKV_CHECK(o.value_threshold > 0 && o.value_threshold < 1,
            "--value-threshold must lie in (0, 1), got ", o.value_threshold);
  SKV_CHECK(o.target_coverage >= 0 && o.target_coverage <= 1,
            "--target-coverage must lie in [0, 1], got ", o.target_coverage);
  SKV_CHECK_GE(o.heldout_every, 2, "--heldout-every must be at least 2");
  SKV_CHECK(!o.out.empty(), "no output file given");
  if (fs::exists(o.out) && !o.overwrite) {
    SKV_THROW(kInvalidInput, "output '", o.out, "' exists (use --overwrite to replace it)");
  }
  CaptureReader reader(o.capture);
  const CaptureMetadata& cm = reader.metadata();
  if (!reader.finished()) {
    SKV_THROW(kInvalidInput, "capture '", o.capture,
              "' is not finished (an interrupted capture: ", "resume it first)");
  }
  if (!o.model_dir.empty()) {
    const std::string fp = fingerprint_model(o.model_dir).to_string();
    if (fp != cm.model_fingerprint) {
      SKV_THROW(kInvalidInput, "capture '", o.capture,
                "' was made with another model (fingerprint ", cm.model_fingerprint, ") than '",
                o.model_dir, "' (", fp, ")");
    }
  }
  std::vector<int64_t> layers = parse_layer_spec(o.layers, cm.num_layers);
  for (int64_t l : layers) {
    if (std::find(cm.layers.begin(), cm.layers.end(), l) == cm.layers.end()) {
      std::string have;
      for (int64_t c : cm.layers) have += (have.empty() ? "" : ",") + std::to_string(c);
      SKV_THROW(kInvalidInput, "layer ", l, " is not in capture '", o.capture,
                "' (captured layers: ", have, ")");
    }
  }

  CodebookFile file;
  CodebookFileMetadata& m = file.metadata;
  m.tool_version = version_string();
  m.capture_file = fs::absolute(o.capture).string();
  m.model_fingerprint = cm.model_fingerprint;
  m.calibration_hash = cm.calibration_hash;
  m.sharing = o.sharing;
  m.key_threshold = o.key_threshold;
  m.value_threshold = o.value_threshold;
  m.num_kv_heads = cm.num_kv_heads;
  m.head_dim = cm.head_dim;
  m.curve_sizes = curve_sizes_up_to(o.max_codewords);
  m.seed = o.trainer.seed;
  m.config_json = train_options_json(o);

  TrainProgress progress;
  const int64_t groups = o.sharing == "shared" ? 1 : cm.num_kv_heads;
  progress.total = static_cast<int64_t>(layers.size()) * groups * 2;
  for (int64_t l : layers) {
    with_context("layer " + std::to_string(l), [&] {
      at::Tensor seq = reader.read_index(l, "sequence_ids");
      std::vector<int64_t> train_rows, heldout_rows;
      auto acc = seq.accessor<int64_t, 1>();
      for (int64_t i = 0; i < seq.size(0); ++i) {
        (acc[i] % o.heldout_every == o.heldout_every - 1 ? heldout_rows : train_rows).push_back(i);
      }
      SKV_CHECK(!train_rows.empty() && !heldout_rows.empty(), "capture '", o.capture, "' has ",
                reader.complete_sequences(), " sequences: too few to hold out every ",
                o.heldout_every, "th (capture at least ", o.heldout_every, ")");
      std::mt19937_64 rng(o.trainer.seed + static_cast<uint64_t>(l));
      // Per-head sample sizes are per group; a shared codebook sees all heads.
      const int64_t per_row = o.sharing == "shared" ? cm.num_kv_heads : 1;
      const auto train_sel =
          sample_rows(train_rows, std::max<int64_t>(1, o.sample_size / per_row), rng);
      const auto held_sel =
          sample_rows(heldout_rows, std::max<int64_t>(1, o.heldout_size / per_row), rng);
      LayerCodebooks L;
      L.layer = l;
      auto tick = [&] {
        ++progress.done;
        progress.layer = l;
        progress.seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (on_progress) on_progress(progress);
      };
      L.keys = train_set(groups_of(read_selected(reader, l, true, train_sel), o.sharing),
                         groups_of(read_selected(reader, l, true, held_sel), o.sharing), o,
                         o.key_threshold, cm.head_dim, m.curve_sizes, tick);
      L.values = train_set(groups_of(read_selected(reader, l, false, train_sel), o.sharing),
                           groups_of(read_selected(reader, l, false, held_sel), o.sharing), o,
                           o.value_threshold, cm.head_dim, m.curve_sizes, tick);
      file.layers.push_back(std::move(L));
    });
  }
  // Replaced by rename: a crash before it leaves the previous file intact.
  write_codebook_file(o.out, file);
  return file;
}

}  // namespace spindlekv
