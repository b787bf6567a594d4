#include "capture/capture_file.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "capture/hdf5_util.h"
#include "core/error.h"

namespace spindlekv {
namespace {

constexpr hsize_t kChunkRows = 1024;

const char* kStatsPerHead[] = {"sink_mass", "entropy_bits", "fraction_for_90_percent"};
const char* kStatsPerKvHead[] = {"key_pair_fraction", "value_pair_fraction"};

std::string layer_path(int64_t layer) { return "layers/" + std::to_string(layer); }

// The capture's file attributes, once: the writer and the reader both walk
// this table (docs/capture_format.md lists the same keys).
template <class M, class F>
void metadata_fields(M& m, F&& field) {
  field("tool_version", m.tool_version);
  field("model_dir", m.model_dir);
  field("model_fingerprint", m.model_fingerprint);
  field("model_config", m.model_config_json);
  field("tokenizer", m.tokenizer);
  field("calibration_sources", m.calibration_sources_json);
  field("calibration_hash", m.calibration_hash);
  field("options", h5::optional(m.options_json));  // captures written before it lack it
  field("dtype", m.dtype);
  field("num_layers", m.num_layers);
  field("num_heads", m.num_heads);
  field("num_kv_heads", m.num_kv_heads);
  field("head_dim", m.head_dim);
  field("rope_theta", m.rope_theta);
  field("rope_scaling", m.rope_scaling);
  field("seq_len", m.seq_len);
  field("window", m.window);
  field("positions_per_sequence", m.positions_per_sequence);
  field("seed", m.seed);
  field("layers", m.layers);
  field("keep_fractions", m.keep_fractions);
  field("sink_tokens", m.sink_tokens);
  field("key_threshold", m.key_threshold);
  field("value_threshold", m.value_threshold);
}

// What every capture's attributes satisfy; the writer checks it before the
// first byte and the reader before it trusts any attribute to size a read.
void validate_metadata(const CaptureMetadata& m) {
  constexpr int64_t kMaxDim = int64_t{1} << 20, kMaxSeqLen = int64_t{1} << 26;
  auto in_range = [](const char* name, int64_t v, int64_t lo, int64_t hi) {
    SKV_CHECK(v >= lo && v <= hi, "attribute '", name, "' is ", v, ", outside [", lo, ", ", hi,
              "]");
  };
  SKV_CHECK(m.dtype == "float32", "attribute 'dtype' is '", m.dtype, "' (allowed: float32)");
  in_range("num_layers", m.num_layers, 1, kMaxDim);
  in_range("num_heads", m.num_heads, 1, kMaxDim);
  in_range("num_kv_heads", m.num_kv_heads, 1, m.num_heads);
  SKV_CHECK(m.num_heads % m.num_kv_heads == 0, "attribute 'num_heads' (", m.num_heads,
            ") is not a multiple of 'num_kv_heads' (", m.num_kv_heads, ")");
  in_range("head_dim", m.head_dim, 1, kMaxDim);
  in_range("seq_len", m.seq_len, 1, kMaxSeqLen);
  in_range("window", m.window, 0, m.seq_len);
  in_range("positions_per_sequence", m.positions_per_sequence, 0, kMaxSeqLen);
  in_range("sink_tokens", m.sink_tokens, 0, kMaxSeqLen);
  SKV_CHECK(!m.layers.empty(), "attribute 'layers' is empty");
  for (size_t i = 0; i < m.layers.size(); ++i) {
    in_range("layers", m.layers[i], 0, m.num_layers - 1);
    for (size_t j = 0; j < i; ++j) {
      SKV_CHECK(m.layers[j] != m.layers[i], "attribute 'layers' lists layer ", m.layers[i],
                " twice");
    }
  }
  for (double f : m.keep_fractions) {
    SKV_CHECK(f >= 0 && f <= 1, "attribute 'keep_fractions' holds ", f, ", outside [0, 1]");
  }
  for (const auto& [name, t] : {std::pair<const char*, double>{"key_threshold", m.key_threshold},
                                {"value_threshold", m.value_threshold}}) {
    SKV_CHECK(t >= -1 && t <= 1, "attribute '", name, "' is ", t, ", outside [-1, 1]");
  }
  SKV_CHECK(std::isfinite(m.rope_theta) && m.rope_theta >= 0, "attribute 'rope_theta' is ",
            m.rope_theta, ", not a finite number >= 0");
}

void write_metadata(hid_t f, const CaptureMetadata& m) {
  validate_metadata(m);
  h5::write_format(f, kCaptureFormat, kCaptureFormatVersion);
  metadata_fields(m, h5::AttrWriter{f});
}

CaptureMetadata read_metadata(hid_t f) {
  h5::check_format(f, kCaptureFormat, kCaptureFormatVersion);
  CaptureMetadata m;
  metadata_fields(m, h5::AttrReader{f});
  validate_metadata(m);
  return m;
}

struct LayerDatasets {
  h5::Handle group, keys, values, positions, token_ids, sequence_ids;
  h5::Handle retained_mass;
  std::vector<h5::Handle> per_head, per_kv_head;
  int64_t rows = 0;       // appended vectors
  int64_t sequences = 0;  // appended statistics rows
};

}  // namespace

// ---------------------------------------------------------------- writer ---

struct CaptureWriter::Impl {
  std::string path;
  CaptureMetadata meta;
  h5::Handle file;
  std::vector<LayerDatasets> layers;
  int64_t appended = 0;  // sequences appended
  int64_t complete = 0;  // sequences flushed

  void create_layout() {
    h5::Handle root = h5::create_group(file, "layers");
    const hsize_t hkv = meta.num_kv_heads, d = meta.head_dim, h = meta.num_heads;
    const hsize_t F = meta.keep_fractions.size();
    const int compress = meta.compression_level;
    for (int64_t l : meta.layers) {
      LayerDatasets L;
      L.group = h5::create_group(root, std::to_string(l));
      L.keys =
          h5::create_row_dataset(L.group, "keys", H5T_IEEE_F32LE, {hkv, d}, kChunkRows, compress);
      L.values =
          h5::create_row_dataset(L.group, "values", H5T_IEEE_F32LE, {hkv, d}, kChunkRows, compress);
      for (const char* n : {"positions", "token_ids", "sequence_ids"}) {
        // Index columns are small and compress ~20x: always deflated.
        h5::Handle ds = h5::create_row_dataset(L.group, n, H5T_STD_I64LE, {}, kChunkRows, 1);
        (std::string(n) == "positions"   ? L.positions
         : std::string(n) == "token_ids" ? L.token_ids
                                         : L.sequence_ids) = std::move(ds);
      }
      h5::Handle stats = h5::create_group(L.group, "stats");
      L.retained_mass =
          h5::create_row_dataset(stats, "retained_mass", H5T_IEEE_F64LE, {h, F}, 64, 0);
      for (const char* n : kStatsPerHead) {
        L.per_head.push_back(h5::create_row_dataset(stats, n, H5T_IEEE_F64LE, {h}, 64, 0));
      }
      for (const char* n : kStatsPerKvHead) {
        L.per_kv_head.push_back(h5::create_row_dataset(stats, n, H5T_IEEE_F64LE, {hkv}, 64, 0));
      }
      h5::write_attr(L.group, "committed_vectors", int64_t{0});
      h5::write_attr(L.group, "committed_sequences", int64_t{0});
      layers.push_back(std::move(L));
    }
    h5::write_attr(file, "complete_sequences", int64_t{0});
    h5::write_attr(file, "finished", int64_t{0});
  }

  void open_layout() {
    for (int64_t l : meta.layers) {
      LayerDatasets L;
      L.group = h5::open_group(file, layer_path(l));
      L.keys = h5::open_dataset(L.group, "keys");
      L.values = h5::open_dataset(L.group, "values");
      L.positions = h5::open_dataset(L.group, "positions");
      L.token_ids = h5::open_dataset(L.group, "token_ids");
      L.sequence_ids = h5::open_dataset(L.group, "sequence_ids");
      h5::Handle stats = h5::open_group(L.group, "stats");
      L.retained_mass = h5::open_dataset(stats, "retained_mass");
      for (const char* n : kStatsPerHead) L.per_head.push_back(h5::open_dataset(stats, n));
      for (const char* n : kStatsPerKvHead) L.per_kv_head.push_back(h5::open_dataset(stats, n));
      // Rows past the last flush may be incomplete: drop them.
      L.rows = h5::read_attr_int(L.group, "committed_vectors");
      L.sequences = h5::read_attr_int(L.group, "committed_sequences");
      for (hid_t ds : {L.keys.get(), L.values.get(), L.positions.get(), L.token_ids.get(),
                       L.sequence_ids.get()}) {
        SKV_CHECK_GE(static_cast<int64_t>(h5::dims(ds)[0]), L.rows, "layer ", l,
                     ": a dataset is shorter than its committed_vectors (damaged file)");
        h5::set_rows(ds, L.rows);
      }
      h5::set_rows(L.retained_mass, L.sequences);
      for (auto& ds : L.per_head) h5::set_rows(ds, L.sequences);
      for (auto& ds : L.per_kv_head) h5::set_rows(ds, L.sequences);
      layers.push_back(std::move(L));
    }
    complete = appended = h5::read_attr_int(file, "complete_sequences");
  }
};

CaptureWriter::CaptureWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CaptureWriter::~CaptureWriter() = default;

std::unique_ptr<CaptureWriter> CaptureWriter::create(const std::string& path,
                                                     const CaptureMetadata& meta) {
  return with_context("creating capture '" + path + "'", [&] {
    auto impl = std::make_unique<Impl>();
    impl->path = path;
    impl->meta = meta;
    impl->file = h5::create_file(path);
    write_metadata(impl->file, meta);
    impl->create_layout();
    H5Fflush(impl->file, H5F_SCOPE_GLOBAL);
    return std::unique_ptr<CaptureWriter>(new CaptureWriter(std::move(impl)));
  });
}

std::unique_ptr<CaptureWriter> CaptureWriter::resume(const std::string& path,
                                                     const CaptureMetadata& expected) {
  return with_context("resuming capture '" + path + "'", [&] {
    auto impl = std::make_unique<Impl>();
    impl->path = path;
    impl->file = h5::open_file(path, /*write=*/true);
    impl->meta = read_metadata(impl->file);
    const CaptureMetadata& m = impl->meta;
    auto same = [](const std::string& what, const auto& a, const auto& b) {
      if (!(a == b)) {
        SKV_THROW(
            kInvalidInput, "cannot resume: '", what,
            "' differs between the partial file and this run (use --overwrite to start over)");
      }
    };
    same("model_fingerprint", m.model_fingerprint, expected.model_fingerprint);
    same("calibration_hash", m.calibration_hash, expected.calibration_hash);
    same("seq_len", m.seq_len, expected.seq_len);
    same("layers", m.layers, expected.layers);
    same("window", m.window, expected.window);
    same("positions_per_sequence", m.positions_per_sequence, expected.positions_per_sequence);
    same("seed", m.seed, expected.seed);
    SKV_CHECK(h5::read_attr_int(impl->file, "finished") == 0, "the capture is already finished");
    impl->open_layout();
    return std::unique_ptr<CaptureWriter>(new CaptureWriter(std::move(impl)));
  });
}

int64_t CaptureWriter::complete_sequences() const { return impl_->complete; }

void CaptureWriter::append_sequence(int64_t sequence_id,
                                    const std::vector<LayerSequenceData>& per_layer) {
  with_context("writing capture '" + impl_->path + "'", [&] {
    SKV_ASSERT(per_layer.size() == impl_->layers.size(), "one entry per captured layer expected");
    for (size_t i = 0; i < per_layer.size(); ++i) {
      const LayerSequenceData& d = per_layer[i];
      LayerDatasets& L = impl_->layers[i];
      at::Tensor k = d.keys.to(at::kCPU, at::kFloat).contiguous();
      at::Tensor v = d.values.to(at::kCPU, at::kFloat).contiguous();
      at::Tensor pos = d.positions.to(at::kCPU, at::kLong).contiguous();
      at::Tensor tok = d.token_ids.to(at::kCPU, at::kLong).contiguous();
      const hsize_t n = static_cast<hsize_t>(k.size(0));
      at::Tensor seq = at::full({k.size(0)}, sequence_id, at::kLong);
      h5::append_rows(L.keys, H5T_NATIVE_FLOAT, k.data_ptr(), n);
      h5::append_rows(L.values, H5T_NATIVE_FLOAT, v.data_ptr(), n);
      h5::append_rows(L.positions, H5T_NATIVE_INT64, pos.data_ptr(), n);
      h5::append_rows(L.token_ids, H5T_NATIVE_INT64, tok.data_ptr(), n);
      h5::append_rows(L.sequence_ids, H5T_NATIVE_INT64, seq.data_ptr(), n);
      L.rows += static_cast<int64_t>(n);

      std::vector<double> retained, per_head[3], per_kv[2];
      for (const auto& h : d.stats.heads) {
        retained.insert(retained.end(), h.retained_mass.begin(), h.retained_mass.end());
        per_head[0].push_back(h.sink_mass);
        per_head[1].push_back(h.entropy_bits);
        per_head[2].push_back(h.fraction_for_90_percent);
      }
      per_kv[0] = d.stats.key_pair_fraction;
      per_kv[1] = d.stats.value_pair_fraction;
      h5::append_rows(L.retained_mass, H5T_NATIVE_DOUBLE, retained.data(), 1);
      for (int j = 0; j < 3; ++j)
        h5::append_rows(L.per_head[j], H5T_NATIVE_DOUBLE, per_head[j].data(), 1);
      for (int j = 0; j < 2; ++j)
        h5::append_rows(L.per_kv_head[j], H5T_NATIVE_DOUBLE, per_kv[j].data(), 1);
      ++L.sequences;
    }
    ++impl_->appended;
  });
}

void CaptureWriter::flush() {
  with_context("flushing capture '" + impl_->path + "'", [&] {
    // Data first, then the counters that declare it complete, then the counters.
    if (H5Fflush(impl_->file, H5F_SCOPE_GLOBAL) < 0)
      SKV_THROW(kIo, "HDF5 flush failed (last system error: ", std::strerror(errno), ")");
    for (auto& L : impl_->layers) {
      h5::write_attr(L.group, "committed_vectors", L.rows);
      h5::write_attr(L.group, "committed_sequences", L.sequences);
    }
    h5::write_attr(impl_->file, "complete_sequences", impl_->appended);
    if (H5Fflush(impl_->file, H5F_SCOPE_GLOBAL) < 0)
      SKV_THROW(kIo, "HDF5 flush failed (last system error: ", std::strerror(errno), ")");
    impl_->complete = impl_->appended;
  });
}

void CaptureWriter::finish() {
  flush();
  with_context("finishing capture '" + impl_->path + "'", [&] {
    h5::write_attr(impl_->file, "finished", int64_t{1});
    impl_->layers.clear();
    impl_->file.reset();
  });
}

// ---------------------------------------------------------------- reader ---

struct CaptureReader::Impl {
  std::string path;
  h5::Handle file;
  CaptureMetadata meta;
  int64_t complete = 0;
  bool finished = false;
  std::vector<int64_t> vectors, sequences;  // committed, per entry of meta.layers

  size_t layer_index(int64_t layer) const {
    for (size_t i = 0; i < meta.layers.size(); ++i) {
      if (meta.layers[i] == layer) return i;
    }
    SKV_THROW(kInvalidInput, "layer ", layer, " was not captured");
  }

  // Every dataset of every captured layer against the attributes, before a
  // row is read: element class, shape, and rows enough for the counters.
  void check_layout() {
    const hsize_t kv = meta.num_kv_heads, d = meta.head_dim, h = meta.num_heads;
    const hsize_t F = meta.keep_fractions.size();
    for (int64_t l : meta.layers) {
      with_context("layer " + std::to_string(l), [&] {
        h5::Handle g = h5::open_group(file, layer_path(l));
        const int64_t nv = h5::read_attr_int(g, "committed_vectors");
        const int64_t ns = h5::read_attr_int(g, "committed_sequences");
        SKV_CHECK(ns >= complete && (!finished || ns == complete),
                  "attribute 'committed_sequences' is ", ns, " but the file's complete_sequences ",
                  "is ", complete);
        // Each sequence adds at most seq_len vectors.
        SKV_CHECK(nv >= 0 && static_cast<double>(nv) <=
                                 static_cast<double>(ns) * static_cast<double>(meta.seq_len),
                  "attribute 'committed_vectors' is ", nv, ", outside [0, ", ns,
                  " sequences x seq_len ", meta.seq_len, "]");
        auto rows = [&](hid_t loc, const char* name, H5T_class_t cls,
                        const std::vector<hsize_t>& row, int64_t need) {
          h5::Handle ds = h5::open_dataset(loc, name);
          const hsize_t n = h5::check_rows(ds, cls, row);
          SKV_CHECK(n >= static_cast<hsize_t>(need), "dataset '", name, "' has ", n,
                    " rows, fewer than the ", need, " committed");
        };
        rows(g, "keys", H5T_FLOAT, {kv, d}, nv);
        rows(g, "values", H5T_FLOAT, {kv, d}, nv);
        for (const char* n : {"positions", "token_ids", "sequence_ids"}) {
          rows(g, n, H5T_INTEGER, {}, nv);
        }
        h5::Handle stats = h5::open_group(g, "stats");
        rows(stats, "retained_mass", H5T_FLOAT, {h, F}, ns);
        for (const char* n : kStatsPerHead) rows(stats, n, H5T_FLOAT, {h}, ns);
        for (const char* n : kStatsPerKvHead) rows(stats, n, H5T_FLOAT, {kv}, ns);
        vectors.push_back(nv);
        sequences.push_back(ns);
      });
    }
  }

  h5::Handle layer_group(int64_t layer) const {
    layer_index(layer);
    return h5::open_group(file, layer_path(layer));
  }
};

CaptureReader::CaptureReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  with_context("reading capture '" + path + "'", [&] {
    impl_->file = h5::open_file(path, /*write=*/false);
    impl_->meta = read_metadata(impl_->file);
    impl_->complete = h5::read_attr_int(impl_->file, "complete_sequences");
    const int64_t finished = h5::read_attr_int(impl_->file, "finished");
    SKV_CHECK(finished == 0 || finished == 1, "attribute 'finished' is ", finished,
              " (allowed: 0, 1)");
    impl_->finished = finished == 1;
    SKV_CHECK_GE(impl_->complete, 0, "attribute 'complete_sequences'");
    impl_->check_layout();
  });
}

CaptureReader::~CaptureReader() = default;

const CaptureMetadata& CaptureReader::metadata() const { return impl_->meta; }
int64_t CaptureReader::complete_sequences() const { return impl_->complete; }
bool CaptureReader::finished() const { return impl_->finished; }

int64_t CaptureReader::vector_count(int64_t layer) const {
  return with_context("reading capture '" + impl_->path + "'",
                      [&] { return impl_->vectors[impl_->layer_index(layer)]; });
}

namespace {
at::Tensor read_vectors(const h5::Handle& group, const std::string& name, int64_t start,
                        int64_t count, int64_t committed, const CaptureMetadata& m) {
  SKV_CHECK(start >= 0 && count >= 0 && start <= committed && count <= committed - start, "rows [",
            start, ", ", start + count, ") of '", name, "' are outside the ", committed,
            " committed vectors");
  h5::Handle ds = h5::open_dataset(group, name);
  at::Tensor out = at::empty({count, m.num_kv_heads, m.head_dim}, at::kFloat);
  h5::read_rows(ds, H5T_NATIVE_FLOAT, out.data_ptr(), start, count,
                {static_cast<hsize_t>(m.num_kv_heads), static_cast<hsize_t>(m.head_dim)});
  SKV_CHECK(at::isfinite(out).all().item<bool>(), "dataset '", name, "' holds NaN or Inf in rows [",
            start, ", ", start + count, ")");
  return out;
}
}  // namespace

at::Tensor CaptureReader::read_keys(int64_t layer, int64_t start, int64_t count) const {
  return with_context("reading capture '" + impl_->path + "' layer " + std::to_string(layer), [&] {
    return read_vectors(impl_->layer_group(layer), "keys", start, count,
                        impl_->vectors[impl_->layer_index(layer)], impl_->meta);
  });
}

at::Tensor CaptureReader::read_values(int64_t layer, int64_t start, int64_t count) const {
  return with_context("reading capture '" + impl_->path + "' layer " + std::to_string(layer), [&] {
    return read_vectors(impl_->layer_group(layer), "values", start, count,
                        impl_->vectors[impl_->layer_index(layer)], impl_->meta);
  });
}

at::Tensor CaptureReader::read_index(int64_t layer, const std::string& name) const {
  return with_context("reading capture '" + impl_->path + "' layer " + std::to_string(layer), [&] {
    SKV_CHECK(name == "positions" || name == "token_ids" || name == "sequence_ids",
              "unknown index dataset '", name, "'");
    const size_t i = impl_->layer_index(layer);
    h5::Handle ds = h5::open_dataset(impl_->layer_group(layer), name);
    const int64_t n = impl_->vectors[i];
    at::Tensor out = at::empty({n}, at::kLong);
    h5::read_rows(ds, H5T_NATIVE_INT64, out.data_ptr(), 0, n, {});
    // positions lie in a sequence, sequence ids count the committed sequences.
    const int64_t hi = name == "positions"      ? impl_->meta.seq_len
                       : name == "sequence_ids" ? impl_->sequences[i]
                                                : std::numeric_limits<int64_t>::max();
    if (n > 0) {
      const int64_t lo_seen = out.min().item<int64_t>(), hi_seen = out.max().item<int64_t>();
      SKV_CHECK(lo_seen >= 0 && hi_seen < hi, "dataset '", name, "' holds values in [", lo_seen,
                ", ", hi_seen, "], outside [0, ", hi, ")");
    }
    return out;
  });
}

at::Tensor CaptureReader::read_statistic(int64_t layer, const std::string& name) const {
  return with_context("reading capture '" + impl_->path + "' layer " + std::to_string(layer), [&] {
    const CaptureMetadata& m = impl_->meta;
    const hsize_t h = m.num_heads, kv = m.num_kv_heads, F = m.keep_fractions.size();
    std::vector<hsize_t> row;
    if (name == "retained_mass") {
      row = {h, F};
    } else if (std::find(std::begin(kStatsPerHead), std::end(kStatsPerHead), name) !=
               std::end(kStatsPerHead)) {
      row = {h};
    } else if (std::find(std::begin(kStatsPerKvHead), std::end(kStatsPerKvHead), name) !=
               std::end(kStatsPerKvHead)) {
      row = {kv};
    } else {
      SKV_THROW(kInvalidInput, "unknown statistic '", name, "'");
    }
    h5::Handle stats = h5::open_group(impl_->layer_group(layer), "stats");
    h5::Handle ds = h5::open_dataset(stats, name);
    const int64_t n = impl_->sequences[impl_->layer_index(layer)];
    std::vector<int64_t> shape = {n};
    for (hsize_t x : row) shape.push_back(static_cast<int64_t>(x));
    at::Tensor out = at::empty(shape, at::kDouble);
    h5::read_rows(ds, H5T_NATIVE_DOUBLE, out.data_ptr(), 0, n, row);
    // Masses and fractions lie in [0, 1] (rounding aside), entropies are >= 0.
    const double hi = name == "entropy_bits" ? std::numeric_limits<double>::max() : 1 + 1e-3;
    SKV_CHECK(
        out.numel() == 0 || (at::isfinite(out).all().item<bool>() &&
                             out.min().item<double>() >= -1e-3 && out.max().item<double>() <= hi),
        "dataset 'stats/", name, "' holds NaN, Inf or values outside [0, ",
        name == "entropy_bits" ? "inf" : "1", "]");
    return out;
  });
}

}  // namespace spindlekv
