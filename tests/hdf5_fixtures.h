// Tiny, valid capture and codebook files written through the real writers,
// and the edits that make each of them lie in one way: shared by the reader
// tests (capture_file_test, codebook_file_test) and the fuzz targets, whose
// seeds they are.
#pragma once

#include <ATen/ATen.h>
#include <hdf5.h>

#include <algorithm>
#include <string>
#include <vector>

#include "capture/capture_file.h"
#include "capture/hdf5_util.h"
#include "train/codebook_file.h"

namespace spindlekv::fixtures {

/// The tiny capture's shape: 2 layers, 4 query heads over 2 KV heads of
/// head_dim 4, 3 sequences of 6 tokens, 3 keep fractions.
struct TinyCapture {
  int64_t layers = 2, heads = 4, kv_heads = 2, head_dim = 4, seq_len = 6, sequences = 3;
  std::vector<double> keep_fractions = {0.25, 0.5, 1.0};
};

/// Writes the tiny capture to `path` (finished, every row committed).
inline void write_tiny_capture(const std::string& path, const TinyCapture& t = {}) {
  CaptureMetadata m;
  m.tool_version = "test";
  m.model_fingerprint = "fp";
  m.calibration_hash = "hash";
  m.tokenizer = "byte";
  m.num_layers = t.layers;
  m.num_heads = t.heads;
  m.num_kv_heads = t.kv_heads;
  m.head_dim = t.head_dim;
  m.rope_theta = 10000;
  m.rope_scaling = "none";
  m.seq_len = t.seq_len;
  m.window = 2;
  for (int64_t l = 0; l < t.layers; ++l) m.layers.push_back(l);
  m.keep_fractions = t.keep_fractions;
  m.sink_tokens = 1;
  m.key_threshold = 0.98;
  m.value_threshold = 0.95;
  auto w = CaptureWriter::create(path, m);
  at::manual_seed(1);
  for (int64_t s = 0; s < t.sequences; ++s) {
    std::vector<LayerSequenceData> per_layer;
    for (int64_t l = 0; l < t.layers; ++l) {
      LayerSequenceData d;
      d.keys = at::randn({t.seq_len, t.kv_heads, t.head_dim});
      d.values = at::randn({t.seq_len, t.kv_heads, t.head_dim});
      d.positions = at::arange(t.seq_len, at::kLong);
      d.token_ids = at::arange(t.seq_len, at::kLong) + 3 * s;
      for (int64_t h = 0; h < t.heads; ++h) {
        HeadAttentionStatistics hs;
        for (double f : t.keep_fractions) hs.retained_mass.push_back(f);
        hs.sink_mass = 0.5;
        hs.entropy_bits = 1.5;
        hs.fraction_for_90_percent = 0.75;
        d.stats.heads.push_back(hs);
      }
      d.stats.key_pair_fraction.assign(t.kv_heads, 0.1);
      d.stats.value_pair_fraction.assign(t.kv_heads, 0.2);
      per_layer.push_back(std::move(d));
    }
    w->append_sequence(s, per_layer);
  }
  w->finish();
}

/// Reads from the capture at `path` everything `train` and `export` read:
/// every layer's keys and values (at most `max_rows` rows), index columns
/// and statistics. Throws what the reader throws.
inline void read_whole_capture(const std::string& path, int64_t max_rows = 4096) {
  CaptureReader r(path);
  for (int64_t l : r.metadata().layers) {
    const int64_t n = std::min<int64_t>(r.vector_count(l), max_rows);
    r.read_keys(l, 0, n);
    r.read_values(l, 0, n);
    for (const char* name : {"positions", "token_ids", "sequence_ids"}) r.read_index(l, name);
    for (const char* name :
         {"retained_mass", "sink_mass", "entropy_bits", "fraction_for_90_percent",
          "key_pair_fraction", "value_pair_fraction"}) {
      r.read_statistic(l, name);
    }
  }
}

/// Writes a tiny codebook file to `path`: layers 0 and 1, per-head
/// codebooks of 3 unit entries (2 in use in group 1) over 2 KV heads of
/// head_dim 4, coverage curves over curve sizes 1, 2, 3.
inline void write_tiny_codebooks(const std::string& path) {
  CodebookFile f;
  CodebookFileMetadata& m = f.metadata;
  m.tool_version = "test";
  m.capture_file = "cap.h5";
  m.model_fingerprint = "fp";
  m.calibration_hash = "hash";
  m.config_json = "{}";
  m.sharing = "per-head";
  m.num_kv_heads = 2;
  m.head_dim = 4;
  m.curve_sizes = {1, 2, 3};
  at::manual_seed(2);
  auto set = [] {
    CodebookSet s;
    s.codewords = at::randn({2, 3, 4});
    s.codewords = s.codewords / s.codewords.norm(2, -1, true);
    s.codewords[1][2].zero_();
    s.support = at::tensor({5, 4, 3, 6, 2, 0}, at::kLong).view({2, 3});
    s.sizes = {3, 2};
    s.train_coverage = {0.5, 0.6};
    s.heldout_coverage = {0.4, 0.5};
    s.heldout_curve = {{0.2, 0.3, 0.4}, {0.3, 0.5, 0.5}};
    return s;
  };
  for (int64_t l = 0; l < 2; ++l) {
    LayerCodebooks L;
    L.layer = l;
    L.keys = set();
    L.values = set();
    f.layers.push_back(std::move(L));
  }
  write_codebook_file(path, f);
}

/// Replaces dataset `name` (a path in the file) by one of `type` and
/// `dims` holding `data` (converted from double); the edits the reader
/// tests make to lie about a shape or dtype.
inline void replace_dataset(const std::string& path, const std::string& name, hid_t type,
                            const std::vector<hsize_t>& dims, const std::vector<double>& data) {
  h5::Handle f = h5::open_file(path, /*write=*/true);
  H5Ldelete(f, name.c_str(), H5P_DEFAULT);
  size_t n = 1;
  for (hsize_t d : dims) n *= d;
  std::vector<double> v(n, 0.0);
  for (size_t i = 0; i < n && i < data.size(); ++i) v[i] = data[i];
  h5::Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  h5::Handle ds(H5Dcreate2(f, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                H5Dclose);
  H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
}

/// Sets one element (flat index) of a numeric dataset to `value`.
inline void poke(const std::string& path, const std::string& name, size_t index, double value) {
  h5::Handle f = h5::open_file(path, /*write=*/true);
  h5::Handle ds = h5::open_dataset(f, name);
  size_t n = 1;
  for (hsize_t d : h5::dims(ds)) n *= d;
  std::vector<double> v(n);
  H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
  if (index < n) v[index] = value;
  H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
}

/// Sets attribute `attr` of object `object` ("/" for the file) to an int64.
inline void set_int_attr(const std::string& path, const std::string& object,
                         const std::string& attr, int64_t value) {
  h5::Handle f = h5::open_file(path, /*write=*/true);
  h5::Handle o(H5Oopen(f, object.c_str(), H5P_DEFAULT), H5Oclose);
  h5::write_attr(o, attr, value);
}

}  // namespace spindlekv::fixtures
