#include "train/codebook_file.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "capture/hdf5_util.h"
#include "core/atomic_file.h"
#include "core/error.h"

namespace spindlekv {
namespace {

// The codebook file's attributes, once: the writer and the reader both walk
// this table (docs/codebook_format.md lists the same keys).
template <class M, class F>
void metadata_fields(M& m, F&& field) {
  field("tool_version", m.tool_version);
  field("capture_file", m.capture_file);
  field("model_fingerprint", m.model_fingerprint);
  field("calibration_hash", m.calibration_hash);
  field("config", m.config_json);
  field("sharing", m.sharing);
  field("key_threshold", m.key_threshold);
  field("value_threshold", m.value_threshold);
  field("num_kv_heads", m.num_kv_heads);
  field("head_dim", m.head_dim);
  field("curve_sizes", m.curve_sizes);
  field("seed", m.seed);
}

void write_set(hid_t group, const std::string& prefix, const CodebookSet& set) {
  at::Tensor cw = set.codewords.to(at::kCPU, at::kFloat).contiguous();
  at::Tensor sup = set.support.to(at::kCPU, at::kLong).contiguous();
  std::vector<hsize_t> dims(cw.sizes().begin(), cw.sizes().end());
  h5::write_dataset(group, prefix + "_codebook", H5T_IEEE_F32LE, dims, cw.data_ptr());
  h5::write_dataset(group, prefix + "_support", H5T_STD_I64LE, {dims[0], dims[1]}, sup.data_ptr());
  h5::write_dataset(group, prefix + "_sizes", H5T_STD_I64LE, {set.sizes.size()}, set.sizes.data());
  h5::write_dataset(group, prefix + "_train_coverage", H5T_IEEE_F64LE, {set.train_coverage.size()},
                    set.train_coverage.data());
  h5::write_dataset(group, prefix + "_coverage", H5T_IEEE_F64LE, {set.heldout_coverage.size()},
                    set.heldout_coverage.data());
  std::vector<double> curve;
  for (const auto& c : set.heldout_curve) curve.insert(curve.end(), c.begin(), c.end());
  const hsize_t C = set.heldout_curve.empty() ? 0 : set.heldout_curve[0].size();
  h5::write_dataset(group, prefix + "_coverage_curve", H5T_IEEE_F64LE,
                    {set.heldout_curve.size(), C}, curve.data());
}

// A whole dataset that must be exactly `shape`, as a flat vector.
template <typename T>
std::vector<T> read_exact(hid_t group, const std::string& name, hid_t type,
                          const std::vector<hsize_t>& shape) {
  h5::Handle ds = h5::open_dataset(group, name);
  size_t n = 1;
  for (hsize_t x : shape) n *= x;
  std::vector<T> out(n);
  h5::read_all(ds, type, out.data(), shape);
  return out;
}

void check_fractions(const std::vector<double>& v, const std::string& name) {
  for (double x : v) {
    SKV_CHECK(x >= 0 && x <= 1, "dataset '", name, "' holds ", x, ", outside [0, 1]");
  }
}

CodebookSet read_set(hid_t group, const std::string& prefix, const CodebookFileMetadata& m) {
  CodebookSet s;
  const hsize_t groups = m.sharing == "shared" ? 1 : static_cast<hsize_t>(m.num_kv_heads);
  h5::Handle ds = h5::open_dataset(group, prefix + "_codebook");
  const std::vector<hsize_t> d = h5::dims(ds);
  SKV_CHECK(d.size() == 3 && d[0] == groups && d[2] == static_cast<hsize_t>(m.head_dim),
            "dataset '", prefix, "_codebook' has ", d.size(), " dimensions ",
            d.size() == 3 ? "[" + std::to_string(d[0]) + ", " + std::to_string(d[1]) + ", " +
                                std::to_string(d[2]) + "]"
                          : std::string(),
            ", expected [", groups, ", K, ", m.head_dim, "] (", m.sharing,
            " codebooks of head_dim ", m.head_dim, ")");
  const hsize_t K = d[1];
  SKV_CHECK(K <= (hsize_t{1} << 24), "dataset '", prefix, "_codebook' claims ", K,
            " entries per group (at most 16777216)");
  s.codewords = at::empty({int64_t(groups), int64_t(K), m.head_dim}, at::kFloat);
  h5::read_all(ds, H5T_NATIVE_FLOAT, s.codewords.data_ptr(), d);
  SKV_CHECK(at::isfinite(s.codewords).all().item<bool>(), "dataset '", prefix,
            "_codebook' contains NaN or Inf");
  s.support = at::empty({int64_t(groups), int64_t(K)}, at::kLong);
  h5::read_all(h5::open_dataset(group, prefix + "_support"), H5T_NATIVE_INT64, s.support.data_ptr(),
               {groups, K});
  SKV_CHECK(s.support.numel() == 0 || s.support.min().item<int64_t>() >= 0, "dataset '", prefix,
            "_support' holds a negative count");
  s.sizes = read_exact<int64_t>(group, prefix + "_sizes", H5T_NATIVE_INT64, {groups});
  s.train_coverage =
      read_exact<double>(group, prefix + "_train_coverage", H5T_NATIVE_DOUBLE, {groups});
  s.heldout_coverage = read_exact<double>(group, prefix + "_coverage", H5T_NATIVE_DOUBLE, {groups});
  check_fractions(s.train_coverage, prefix + "_train_coverage");
  check_fractions(s.heldout_coverage, prefix + "_coverage");
  // [groups, curve sizes], or [0, 0] when no curve was recorded.
  const hsize_t C = m.curve_sizes.size();
  h5::Handle curve_ds = h5::open_dataset(group, prefix + "_coverage_curve");
  const std::vector<hsize_t> cd = h5::dims(curve_ds);
  if (!(cd.size() == 2 && cd[0] == 0 && cd[1] == 0)) {
    std::vector<double> curve(groups * C);
    h5::read_all(curve_ds, H5T_NATIVE_DOUBLE, curve.data(), {groups, C});
    check_fractions(curve, prefix + "_coverage_curve");
    for (size_t g = 0; g < groups && C > 0; ++g) {
      s.heldout_curve.emplace_back(curve.begin() + g * C, curve.begin() + (g + 1) * C);
    }
  }
  for (size_t g = 0; g < groups; ++g) {
    SKV_CHECK(s.sizes[g] >= 0 && s.sizes[g] <= int64_t(K), "'", prefix, "_sizes'[", g,
              "] = ", s.sizes[g], " outside [0, ", K, "]");
    if (s.sizes[g] == 0) continue;
    at::Tensor norms = s.codewords[g].narrow(0, 0, s.sizes[g]).norm(2, 1);
    SKV_CHECK(at::allclose(norms, at::ones_like(norms), 1e-3, 1e-3), "dataset '", prefix,
              "_codebook' group ", g, " has rows that are not unit vectors");
  }
  return s;
}

// What every codebook file's attributes satisfy, checked by the writer and
// the reader (before any attribute sizes a read).
void validate_metadata(const CodebookFileMetadata& m) {
  constexpr int64_t kMaxDim = int64_t{1} << 20;
  SKV_CHECK(m.sharing == "per-head" || m.sharing == "shared", "attribute 'sharing' is '", m.sharing,
            "' (allowed: per-head, shared)");
  SKV_CHECK(m.num_kv_heads >= 1 && m.num_kv_heads <= kMaxDim, "attribute 'num_kv_heads' is ",
            m.num_kv_heads, ", outside [1, ", kMaxDim, "]");
  SKV_CHECK(m.head_dim >= 1 && m.head_dim <= kMaxDim, "attribute 'head_dim' is ", m.head_dim,
            ", outside [1, ", kMaxDim, "]");
  for (const auto& [name, t] : {std::pair<const char*, double>{"key_threshold", m.key_threshold},
                                {"value_threshold", m.value_threshold}}) {
    SKV_CHECK(t > 0 && t < 1, "attribute '", name, "' is ", t, ", outside (0, 1)");
  }
  for (size_t i = 0; i < m.curve_sizes.size(); ++i) {
    SKV_CHECK(m.curve_sizes[i] >= 1 && (i == 0 || m.curve_sizes[i] > m.curve_sizes[i - 1]),
              "attribute 'curve_sizes' must rise from 1 or more, got ", m.curve_sizes[i],
              " at index ", i);
  }
}

}  // namespace

const LayerCodebooks& CodebookFile::layer(int64_t l) const {
  std::string present;
  for (const auto& e : layers) {
    if (e.layer == l) return e;
    present += (present.empty() ? "" : ", ") + std::to_string(e.layer);
  }
  SKV_THROW(kInvalidInput, "codebooks hold no layer ", l, " (layers present: ", present, ")");
}

void write_codebook_file(const std::string& path, const CodebookFile& f) {
  with_context("writing codebooks '" + path + "'", [&] {
    TempFileGuard guard(path);
    {
      h5::Handle file = h5::create_file(guard.temp_path());
      const CodebookFileMetadata& m = f.metadata;
      validate_metadata(m);
      h5::write_format(file, kCodebookFormat, kCodebookFormatVersion);
      metadata_fields(m, h5::AttrWriter{file});
      std::vector<int64_t> layer_ids;
      h5::Handle layers = h5::create_group(file, "layers");
      for (const auto& L : f.layers) {
        layer_ids.push_back(L.layer);
        h5::Handle g = h5::create_group(layers, std::to_string(L.layer));
        write_set(g, "key", L.keys);
        write_set(g, "value", L.values);
      }
      h5::write_attr(file, "layers", layer_ids);
      if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0)
        SKV_THROW(kIo, "HDF5 flush failed (last system error: ", std::strerror(errno), ")");
    }
    guard.commit();
  });
}

CodebookFile read_codebook_file(const std::string& path) {
  return with_context("reading codebooks '" + path + "'", [&] {
    CodebookFile f;
    h5::Handle file = h5::open_file(path, false);
    h5::check_format(file, kCodebookFormat, kCodebookFormatVersion);
    CodebookFileMetadata& m = f.metadata;
    metadata_fields(m, h5::AttrReader{file});
    validate_metadata(m);
    h5::Handle layers = h5::open_group(file, "layers");
    const std::vector<int64_t> ids = h5::read_attr_ints(file, "layers");
    for (size_t i = 0; i < ids.size(); ++i) {
      SKV_CHECK(ids[i] >= 0 && std::find(ids.begin(), ids.begin() + i, ids[i]) == ids.begin() + i,
                "attribute 'layers' holds ", ids[i], " (negative or listed twice)");
    }
    for (int64_t l : ids) {
      with_context("layer " + std::to_string(l), [&] {
        h5::Handle g = h5::open_group(layers, std::to_string(l));
        LayerCodebooks L;
        L.layer = l;
        L.keys = read_set(g, "key", m);
        L.values = read_set(g, "value", m);
        f.layers.push_back(std::move(L));
      });
    }
    return f;
  });
}

}  // namespace spindlekv
