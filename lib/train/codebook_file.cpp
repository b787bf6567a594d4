#include "train/codebook_file.h"

#include <ATen/ATen.h>

#include <cerrno>
#include <cstring>

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

template <typename T>
std::vector<T> read_vector(hid_t group, const std::string& name, hid_t type) {
  h5::Handle ds = h5::open_dataset(group, name);
  auto d = h5::dims(ds);
  size_t n = 1;
  for (auto x : d) n *= x;
  std::vector<T> out(n);
  if (n > 0) h5::read_rows(ds, type, out.data(), 0, d.empty() ? 1 : d[0]);
  return out;
}

CodebookSet read_set(hid_t group, const std::string& prefix, const CodebookFileMetadata& m) {
  CodebookSet s;
  h5::Handle ds = h5::open_dataset(group, prefix + "_codebook");
  auto d = h5::dims(ds);
  SKV_CHECK(d.size() == 3, "dataset '", prefix, "_codebook' must be [groups, K, head_dim]");
  SKV_CHECK_EQ(static_cast<int64_t>(d[2]), m.head_dim, "dataset '", prefix,
               "_codebook' has the wrong head_dim");
  s.codewords = at::empty({int64_t(d[0]), int64_t(d[1]), int64_t(d[2])}, at::kFloat);
  h5::read_rows(ds, H5T_NATIVE_FLOAT, s.codewords.data_ptr(), 0, d[0]);
  SKV_CHECK(at::isfinite(s.codewords).all().item<bool>(), "dataset '", prefix,
            "_codebook' contains NaN or Inf");
  s.support = at::empty({int64_t(d[0]), int64_t(d[1])}, at::kLong);
  h5::read_rows(h5::open_dataset(group, prefix + "_support"), H5T_NATIVE_INT64,
                s.support.data_ptr(), 0, d[0]);
  s.sizes = read_vector<int64_t>(group, prefix + "_sizes", H5T_NATIVE_INT64);
  s.train_coverage = read_vector<double>(group, prefix + "_train_coverage", H5T_NATIVE_DOUBLE);
  s.heldout_coverage = read_vector<double>(group, prefix + "_coverage", H5T_NATIVE_DOUBLE);
  SKV_CHECK_EQ(s.sizes.size(), static_cast<size_t>(d[0]), "'", prefix, "_sizes' length");
  std::vector<double> curve =
      read_vector<double>(group, prefix + "_coverage_curve", H5T_NATIVE_DOUBLE);
  const size_t C = m.curve_sizes.size();
  for (size_t g = 0; g < d[0] && C > 0; ++g) {
    s.heldout_curve.emplace_back(curve.begin() + g * C, curve.begin() + (g + 1) * C);
  }
  for (size_t g = 0; g < d[0]; ++g) {
    SKV_CHECK(s.sizes[g] >= 0 && s.sizes[g] <= int64_t(d[1]), "'", prefix, "_sizes'[", g,
              "] = ", s.sizes[g], " outside [0, ", d[1], "]");
    if (s.sizes[g] == 0) continue;
    at::Tensor norms = s.codewords[g].narrow(0, 0, s.sizes[g]).norm(2, 1);
    SKV_CHECK(at::allclose(norms, at::ones_like(norms), 1e-3, 1e-3), "dataset '", prefix,
              "_codebook' group ", g, " has rows that are not unit vectors");
  }
  return s;
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
    h5::Handle layers = h5::open_group(file, "layers");
    for (int64_t l : h5::read_attr_ints(file, "layers")) {
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
