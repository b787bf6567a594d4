// Turns fuzz input into edits of a valid HDF5 file, so that the fuzzers of
// the capture and codebook readers explore what our readers do with what
// HDF5 returns (attributes of other values and types, datasets of other
// shapes, dtypes and contents, NaN and Inf, objects missing), not HDF5's own
// parsing of damaged bytes, which is the library's business.
#pragma once

#include <fuzzer/FuzzedDataProvider.h>
#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "capture/hdf5_util.h"

namespace spindlekv::fuzz {

namespace detail {

struct Objects {
  std::vector<std::string> datasets, all;  // paths; `all` holds groups and datasets
};

inline herr_t visit(hid_t, const char* name, const H5O_info_t* info, void* data) {
  auto* o = static_cast<Objects*>(data);
  const std::string path = std::string("/") + (std::string(name) == "." ? "" : name);
  o->all.push_back(path);
  if (info->type == H5O_TYPE_DATASET) o->datasets.push_back(path);
  return 0;
}

inline herr_t attr_name(hid_t, const char* name, const H5A_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->push_back(name);
  return 0;
}

inline const std::string& pick(FuzzedDataProvider& p, const std::vector<std::string>& v) {
  return v[p.ConsumeIntegralInRange<size_t>(0, v.size() - 1)];
}

inline int64_t pick_int(FuzzedDataProvider& p) {
  static const int64_t kInteresting[] = {0,
                                         1,
                                         2,
                                         3,
                                         4,
                                         5,
                                         6,
                                         7,
                                         8,
                                         -1,
                                         -2,
                                         17,
                                         18,
                                         19,
                                         1000,
                                         int64_t{1} << 31,
                                         -4,
                                         64,
                                         255,
                                         std::numeric_limits<int64_t>::max(),
                                         std::numeric_limits<int64_t>::min()};
  return p.ConsumeBool() ? p.PickValueInArray(kInteresting) : p.ConsumeIntegral<int64_t>();
}

inline double pick_double(FuzzedDataProvider& p) {
  static const double kInteresting[] = {0,
                                        1,
                                        -1,
                                        0.5,
                                        2,
                                        1.0001,
                                        -1e-9,
                                        1e300,
                                        std::numeric_limits<double>::quiet_NaN(),
                                        std::numeric_limits<double>::infinity(),
                                        -std::numeric_limits<double>::infinity()};
  return p.ConsumeBool() ? p.PickValueInArray(kInteresting)
                         : p.ConsumeFloatingPointInRange<double>(-1e6, 1e6);
}

inline std::string pick_string(FuzzedDataProvider& p) {
  static const char* kInteresting[] = {"",
                                       "float32",
                                       "float16",
                                       "shared",
                                       "per-head",
                                       "repeat",
                                       "spindlekv-capture",
                                       "{}",
                                       "[1, 2]",
                                       "none",
                                       "spindlekv-codebooks"};
  return p.ConsumeBool() ? std::string(p.PickValueInArray(kInteresting))
                         : p.ConsumeRandomLengthString(16);
}

inline hid_t pick_type(FuzzedDataProvider& p) {
  const hid_t kTypes[] = {H5T_STD_I8LE,  H5T_STD_I32LE,  H5T_STD_I64LE,
                          H5T_STD_U64LE, H5T_IEEE_F32LE, H5T_IEEE_F64LE};
  return p.PickValueInArray(kTypes);
}

// A dataset shape near `old`: the same, one dimension changed, or a rank
// more or less; at most 4096 elements.
inline std::vector<hsize_t> pick_dims(FuzzedDataProvider& p, std::vector<hsize_t> d) {
  switch (p.ConsumeIntegralInRange(0, 3)) {
    case 0:
      break;
    case 1:
      if (!d.empty()) {
        hsize_t& x = d[p.ConsumeIntegralInRange<size_t>(0, d.size() - 1)];
        x = p.ConsumeBool()
                ? x + 1
                : (x > 0 && p.ConsumeBool() ? x - 1 : p.ConsumeIntegralInRange<hsize_t>(0, 8));
      }
      break;
    case 2:
      if (!d.empty()) d.pop_back();
      break;
    default:
      d.push_back(p.ConsumeIntegralInRange<hsize_t>(0, 4));
  }
  if (d.empty()) d.push_back(1);
  hsize_t n = 1;
  for (hsize_t& x : d) {
    x = std::min<hsize_t>(x, 64);
    n *= std::max<hsize_t>(x, 1);
  }
  if (n > 4096) d.assign(d.size(), 1);
  return d;
}

}  // namespace detail

/// Applies up to 6 edits read from `p` to the HDF5 file at `path`. Edits
/// that HDF5 itself refuses are skipped.
inline void mutate_hdf5(const std::string& path, FuzzedDataProvider& p) {
  h5::Handle file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
  if (file.get() < 0) return;
  detail::Objects objects;
  H5Ovisit(file, H5_INDEX_NAME, H5_ITER_NATIVE, detail::visit, &objects);
  if (objects.all.empty()) return;
  for (int edit = 0; edit < 6 && p.remaining_bytes() > 0; ++edit) {
    const int op = p.ConsumeIntegralInRange(0, 7);
    const std::string object = detail::pick(p, objects.all);
    h5::Handle o(H5Oopen(file, object.c_str(), H5P_DEFAULT), H5Oclose);
    if (o.get() < 0) continue;  // deleted by an earlier edit
    std::vector<std::string> attrs;
    H5Aiterate2(o, H5_INDEX_NAME, H5_ITER_NATIVE, nullptr, detail::attr_name, &attrs);
    const std::string attr =
        attrs.empty() || p.ConsumeBool() ? p.ConsumeRandomLengthString(12) : detail::pick(p, attrs);
    try {
      switch (op) {
        case 0:
          h5::write_attr(o, attr, detail::pick_int(p));
          break;
        case 1:
          h5::write_attr(o, attr, detail::pick_double(p));
          break;
        case 2:
          h5::write_attr(o, attr, detail::pick_string(p));
          break;
        case 3: {
          std::vector<int64_t> v(p.ConsumeIntegralInRange(0, 5));
          for (auto& x : v) x = detail::pick_int(p);
          h5::write_attr(o, attr, v);
          break;
        }
        case 4:
          H5Adelete(o, attr.c_str());
          break;
        case 5:
          if (object != "/") H5Ldelete(file, object.c_str(), H5P_DEFAULT);
          break;
        default: {
          if (objects.datasets.empty()) break;
          const std::string name = detail::pick(p, objects.datasets);
          if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0) break;
          std::vector<hsize_t> dims;
          {
            h5::Handle ds(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
            dims = h5::dims(ds);
          }
          hsize_t n = 1;
          for (hsize_t x : dims) n *= x;
          std::vector<double> v;
          hid_t type = H5T_IEEE_F64LE;
          if (op == 6 && n <= 4096) {
            // Poke: one element set to an extreme, the rest kept.
            h5::Handle ds(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
            v.resize(n);
            h5::Handle t(H5Dget_type(ds), H5Tclose);
            if (H5Tget_class(t) != H5T_FLOAT && H5Tget_class(t) != H5T_INTEGER) break;
            type = H5Tget_class(t) == H5T_FLOAT ? H5T_IEEE_F64LE : H5T_STD_I64LE;
            if (n > 0) {
              H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
              const double x = type == H5T_STD_I64LE
                                   ? double(detail::pick_int(p) % (int64_t{1} << 50))
                                   : detail::pick_double(p);
              v[p.ConsumeIntegralInRange<size_t>(0, n - 1)] = x;
              H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
            }
            break;
          }
          // Replace: another dtype and shape, contents from the input.
          type = detail::pick_type(p);
          dims = detail::pick_dims(p, dims);
          n = 1;
          for (hsize_t x : dims) n *= x;
          v.assign(n, 0.0);
          for (double& x : v) {
            if (p.remaining_bytes() == 0) break;
            x = std::round(detail::pick_double(p) * 8) / 8;
          }
          H5Ldelete(file, name.c_str(), H5P_DEFAULT);
          h5::Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                           H5Sclose);
          h5::Handle ds(
              H5Dcreate2(file, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
              H5Dclose);
          if (ds.get() >= 0) {
            H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
          }
        }
      }
    } catch (const Error&) {
      // An edit HDF5 refused (an empty attribute name, say): skipped.
    }
  }
}

}  // namespace spindlekv::fuzz
