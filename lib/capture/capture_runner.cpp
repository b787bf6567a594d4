#include "capture/capture_runner.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "capture/capture_file.h"
#include "capture/text_source.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/model_fingerprint.h"
#include "core/version.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"

namespace spindlekv {

void to_json(nlohmann::json& j, GqaMode mode) { j = to_string(mode); }
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AttentionStatisticsParameters, keep_fractions, sink_tokens,
                                   key_threshold, value_threshold, max_pair_tokens, gqa,
                                   pooling_kernel)
// Every field but stop_requested (a pointer, not an option).
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(CaptureOptions, model_dir, text_paths, out, layers, seq_len,
                                   max_sequences, max_tokens, window, positions_per_sequence, seed,
                                   flush_every, compression_level, resume, overwrite, stats, device,
                                   dtype)

std::string capture_options_json(const CaptureOptions& options) {
  return nlohmann::json(options).dump();
}
namespace fs = std::filesystem;

std::vector<int64_t> parse_layer_spec(const std::string& spec, int64_t num_layers) {
  std::vector<int64_t> out;
  if (spec == "all") {
    for (int64_t l = 0; l < num_layers; ++l) out.push_back(l);
    return out;
  }
  std::stringstream ss(spec);
  std::string part;
  while (std::getline(ss, part, ',')) {
    int64_t a = 0, b = 0;
    try {
      const size_t dash = part.find('-');
      size_t used = 0;
      if (dash == std::string::npos) {
        a = b = std::stoll(part, &used);
        if (used != part.size()) throw std::invalid_argument(part);
      } else {
        a = std::stoll(part.substr(0, dash), &used);
        b = std::stoll(part.substr(dash + 1));
      }
    } catch (const std::logic_error&) {
      SKV_THROW(kInvalidInput, "layers '", spec, "': '", part,
                "' is not a layer, a range like 0-7, or 'all'");
    }
    if (a < 0 || b >= num_layers || a > b) {
      SKV_THROW(kInvalidInput, "layers '", spec, "': '", part, "' is outside the model's layers 0-",
                num_layers - 1);
    }
    for (int64_t l = a; l <= b; ++l) {
      if (std::find(out.begin(), out.end(), l) == out.end()) out.push_back(l);
    }
  }
  SKV_CHECK(!out.empty(), "layers '", spec, "' selects no layer");
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

const char* rope_scaling_name(RopeScaling s) {
  return s == RopeScaling::kNone ? "none" : s == RopeScaling::kLinear ? "linear" : "llama3";
}

// Positions kept for one sequence: all, or a sorted uniform sample that
// depends only on (seed, sequence id), so a resumed run samples the same.
at::Tensor sample_positions(int64_t T, int64_t keep, uint64_t seed, int64_t sequence_id) {
  if (keep <= 0 || keep >= T) return at::arange(T, at::kLong);
  std::mt19937_64 rng(seed * 1000003ull + static_cast<uint64_t>(sequence_id));
  std::vector<int64_t> all(T);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(keep);
  std::sort(all.begin(), all.end());
  return at::tensor(all, at::kLong);
}

}  // namespace

namespace {

CaptureSummary capture_loop(const CaptureOptions& o, const CaptureMetadata& meta,
                            const LlamaModel& model, const Tokenizer& tokenizer, TextSource& source,
                            std::unique_ptr<CaptureWriter>& writer, const std::string& partial,
                            std::chrono::steady_clock::time_point t0,
                            const std::function<void(const CaptureProgress&)>& on_progress) {
  CaptureSummary summary;
  summary.resumed_sequences = writer->complete_sequences();
  const int64_t skip = summary.resumed_sequences;
  uint64_t total_bytes = 0;
  for (const auto& f : source.files()) total_bytes += fs::file_size(f);
  int64_t limit = o.max_sequences > 0 ? o.max_sequences : INT64_MAX;
  if (o.max_tokens > 0) limit = std::min(limit, std::max<int64_t>(1, o.max_tokens / o.seq_len));

  c10::InferenceMode inference;
  TokenSequencer sequencer(tokenizer, o.seq_len);
  TextDocument doc;
  uint64_t bytes_read = 0;
  int64_t index = 0;  // sequence id in the text stream
  int64_t tokens = 0;
  std::vector<int64_t> seq;
  while (index < limit) {
    if (o.stop_requested != nullptr && o.stop_requested->load()) break;
    bool have = false;
    while (!(have = sequencer.next_sequence(&seq))) {
      if (!source.next(&doc)) break;
      bytes_read += doc.text.size();
      sequencer.add_document(doc.text);
    }
    if (!have) break;  // the text ran out
    const int64_t id = index++;
    if (id < skip) continue;  // already in the resumed file

    at::Tensor ids = at::tensor(seq, at::kLong).view({1, -1});
    ForwardCapture cap;
    cap.layers = meta.layers;
    cap.attention_rows = o.window;
    model.forward(ids, nullptr, &cap, /*last_logits_only=*/true);
    at::Tensor keep = sample_positions(o.seq_len, o.positions_per_sequence, o.seed, id);
    std::vector<LayerSequenceData> per_layer;
    for (int64_t l : meta.layers) {
      const ForwardCapture::Layer& L = cap.out[l];
      LayerSequenceData d;
      d.stats = compute_attention_statistics(L.attention, L.keys_pre_rope, L.values, o.stats);
      // [1, kv_heads, T, d] -> [T, kv_heads, d], then the kept positions.
      d.keys =
          L.keys_pre_rope[0].transpose(0, 1).index_select(0, keep.to(L.keys_pre_rope.device()));
      d.values = L.values[0].transpose(0, 1).index_select(0, keep.to(L.values.device()));
      d.positions = keep;
      d.token_ids = ids[0].index_select(0, keep);
      per_layer.push_back(std::move(d));
    }
    writer->append_sequence(id, per_layer);
    tokens += o.seq_len;
    if ((id + 1 - skip) % o.flush_every == 0) writer->flush();

    if (on_progress) {
      CaptureProgress p;
      p.sequences = id + 1;
      p.tokens = tokens;
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      p.tokens_per_second = tokens / std::max(secs, 1e-9);
      const double by_count = limit < INT64_MAX ? double(id + 1) / limit : 0.0;
      const double by_bytes = total_bytes > 0 ? double(bytes_read) / total_bytes : 0.0;
      p.fraction = std::min(1.0, std::max(by_count, by_bytes));
      const double start = limit < INT64_MAX ? double(skip) / limit : 0.0;
      p.eta_seconds = secs * (1.0 - p.fraction) / std::max(1e-9, p.fraction - start);
      on_progress(p);
    }
  }
  writer->flush();
  summary.sequences = writer->complete_sequences();
  const bool stopped = o.stop_requested != nullptr && o.stop_requested->load();
  if (summary.sequences == 0) {
    writer.reset();
    fs::remove(partial);  // nothing worth resuming: leave no file behind
    SKV_THROW(kInvalidInput, "the calibration text yields no complete sequence of ", o.seq_len,
              " tokens (", sequencer.pending(), " tokens from ", source.files().size(),
              " file(s)); give more text or a smaller --seq-len");
  }
  if (!stopped) {
    writer->finish();
    writer.reset();
    // rename replaces an old output atomically: never a moment without one.
    test_hook_before_commit(o.out);
    fs::rename(partial, o.out);
    summary.finished = true;
  }
  summary.vectors_per_layer =
      summary.sequences *
      (o.positions_per_sequence > 0 ? std::min(o.positions_per_sequence, o.seq_len) : o.seq_len);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

}  // namespace

CaptureSummary run_capture(const CaptureOptions& o,
                           const std::function<void(const CaptureProgress&)>& on_progress) {
  const auto t0 = std::chrono::steady_clock::now();
  SKV_CHECK(!o.out.empty(), "no output file given");
  SKV_CHECK_GE(o.seq_len, 2, "--seq-len must be at least 2");
  SKV_CHECK(o.window >= 1 && o.window < o.seq_len, "--window must lie in [1, seq_len), got ",
            o.window);
  SKV_CHECK_GE(o.flush_every, 1, "--flush-every must be at least 1");
  SKV_CHECK(!(o.resume && o.overwrite), "--resume and --overwrite exclude each other");
  const std::string partial = o.out + ".partial";
  if (fs::exists(o.out) && !o.overwrite) {
    SKV_THROW(kInvalidInput, "output '", o.out, "' exists (use --overwrite to replace it)");
  }
  if (fs::exists(partial) && !o.resume && !o.overwrite) {
    SKV_THROW(kInvalidInput, "an interrupted capture exists at '", partial,
              "' (use --resume to continue it or --overwrite to start over)");
  }

  LlamaModel model = LlamaModel::load(o.model_dir, parse_device(o.device, "--device"),
                                      parse_model_dtype(o.dtype, "--dtype"));
  const ModelConfig& c = model.config();
  SKV_CHECK_LE(o.seq_len, c.max_position_embeddings, "--seq-len exceeds the model's ",
               "max_position_embeddings");
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(o.model_dir);
  TextSource source(o.text_paths);

  CaptureMetadata meta;
  meta.tool_version = version_string();
  meta.model_dir = fs::absolute(o.model_dir).string();
  meta.model_fingerprint = fingerprint_model(o.model_dir).to_string();
  meta.model_config_json = model_config_to_json(c);
  meta.tokenizer = tokenizer->name();
  meta.calibration_sources_json = nlohmann::json(source.files()).dump();
  meta.calibration_hash = source.content_hash();
  meta.num_layers = c.num_layers;
  meta.num_heads = c.num_heads;
  meta.num_kv_heads = c.num_kv_heads;
  meta.head_dim = c.head_dim;
  meta.rope_theta = c.rope.theta;
  meta.rope_scaling = rope_scaling_name(c.rope.scaling);
  meta.seq_len = o.seq_len;
  meta.window = o.window;
  meta.positions_per_sequence = o.positions_per_sequence;
  meta.seed = o.seed;
  meta.options_json = capture_options_json(o);
  meta.layers = parse_layer_spec(o.layers, c.num_layers);
  meta.keep_fractions = o.stats.keep_fractions;
  meta.sink_tokens = o.stats.sink_tokens;
  meta.key_threshold = o.stats.key_threshold;
  meta.value_threshold = o.stats.value_threshold;
  SKV_CHECK(o.compression_level >= 0 && o.compression_level <= 9,
            "--compression-level must lie in [0, 9], got ", o.compression_level);
  meta.compression_level = o.compression_level;

  std::unique_ptr<CaptureWriter> writer;
  if (o.resume && fs::exists(partial)) {
    writer = CaptureWriter::resume(partial, meta);
  } else {
    if (fs::exists(partial)) fs::remove(partial);
    writer = CaptureWriter::create(partial, meta);
  }
  try {
    return with_context("capturing into '" + partial + "'", [&] {
      return capture_loop(o, meta, model, *tokenizer, source, writer, partial, t0, on_progress);
    });
  } catch (...) {
    // A partial file with no complete sequence is worth nothing to --resume.
    if (writer && writer->complete_sequences() == 0) {
      writer.reset();
      std::error_code ec;
      fs::remove(partial, ec);
    }
    throw;
  }
}

}  // namespace spindlekv
