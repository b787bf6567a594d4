#include "capture/hdf5_util.h"

#include <algorithm>
#include <mutex>

#include "core/error.h"

namespace spindlekv::h5 {
namespace {

// HDF5 closes every open file again in an atexit handler. After a failed
// write (disk full, file-size limit) that second close crashes inside HDF5
// 1.10 and turns a clean error exit into a segfault. Our handles close
// their files themselves, so the handler is switched off before any use.
const bool kNoHdf5Atexit = [] {
  H5dont_atexit();
  return true;
}();

hid_t check(hid_t id, const std::string& what) {
  if (id < 0) SKV_THROW(kIo, "HDF5: ", what, " failed");
  return id;
}

void check_status(herr_t status, const std::string& what) {
  if (status < 0) SKV_THROW(kIo, "HDF5: ", what, " failed");
}

Handle string_type() {
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
  check_status(H5Tset_size(t, H5T_VARIABLE), "string type");
  check_status(H5Tset_cset(t, H5T_CSET_UTF8), "string type");
  return t;
}

Handle open_attr(hid_t loc, const std::string& name) {
  if (H5Aexists(loc, name.c_str()) <= 0) {
    SKV_THROW(kInvalidInput, "attribute '", name, "' is missing");
  }
  return Handle(check(H5Aopen(loc, name.c_str(), H5P_DEFAULT), "opening attribute " + name),
                H5Aclose);
}

// Creates (or replaces) attribute `name` with `dims` elements of `type`.
void put_attr(hid_t loc, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
              const void* data) {
  if (H5Aexists(loc, name.c_str()) > 0) {
    check_status(H5Adelete(loc, name.c_str()), "replacing attribute " + name);
  }
  Handle space(dims.empty() ? H5Screate(H5S_SCALAR)
                            : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
               H5Sclose);
  Handle attr(check(H5Acreate2(loc, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT),
                    "creating attribute " + name),
              H5Aclose);
  check_status(H5Awrite(attr, type, data), "writing attribute " + name);
}

template <typename T>
std::vector<T> read_attr_array(hid_t loc, const std::string& name, hid_t mem_type) {
  Handle attr = open_attr(loc, name);
  Handle type(H5Aget_type(attr), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type), want = H5Tget_class(mem_type);
  // Integers may be read as reals; nothing else converts.
  if (!(cls == want || (cls == H5T_INTEGER && want == H5T_FLOAT))) {
    SKV_THROW(kInvalidInput, "attribute '", name, "' is not ",
              want == H5T_INTEGER ? "an integer" : "a number");
  }
  Handle space(H5Aget_space(attr), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  std::vector<T> out(static_cast<size_t>(std::max<hssize_t>(n, 0)));
  if (!out.empty()) check_status(H5Aread(attr, mem_type, out.data()), "reading attribute " + name);
  return out;
}

}  // namespace

void Handle::reset() {
  if (id_ >= 0 && closer_ != nullptr) closer_(id_);
  id_ = -1;
}

void quiet_errors() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

Handle create_file(const std::string& path) {
  quiet_errors();
  return Handle(
      check(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT), "creating file"),
      H5Fclose);
}

Handle open_file(const std::string& path, bool write) {
  quiet_errors();
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    SKV_THROW(kInvalidInput, "not an HDF5 file (or it does not exist)");
  }
  return Handle(check(H5Fopen(path.c_str(), write ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT),
                      "opening file"),
                H5Fclose);
}

Handle create_group(hid_t loc, const std::string& name) {
  return Handle(check(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                      "creating group " + name),
                H5Gclose);
}

Handle open_group(hid_t loc, const std::string& name) {
  if (!exists(loc, name)) SKV_THROW(kInvalidInput, "group '", name, "' is missing");
  return Handle(check(H5Gopen2(loc, name.c_str(), H5P_DEFAULT), "opening group " + name), H5Gclose);
}

Handle open_dataset(hid_t loc, const std::string& name) {
  if (!exists(loc, name)) SKV_THROW(kInvalidInput, "dataset '", name, "' is missing");
  return Handle(check(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), "opening dataset " + name),
                H5Dclose);
}

bool exists(hid_t loc, const std::string& name) {
  return H5Lexists(loc, name.c_str(), H5P_DEFAULT) > 0;
}

void write_attr(hid_t loc, const std::string& name, const std::string& value) {
  Handle t = string_type();
  const char* p = value.c_str();
  put_attr(loc, name, t, {}, &p);
}
void write_attr(hid_t loc, const std::string& name, int64_t value) {
  put_attr(loc, name, H5T_NATIVE_INT64, {}, &value);
}
void write_attr(hid_t loc, const std::string& name, const Optional<const std::string>& value) {
  write_attr(loc, name, value.value);
}
void read_attr(hid_t loc, const std::string& name, const Optional<std::string>& out) {
  if (has_attr(loc, name)) out.value = read_attr_string(loc, name);
}
void write_attr(hid_t loc, const std::string& name, uint64_t value) {
  write_attr(loc, name, static_cast<int64_t>(value));
}
void read_attr(hid_t loc, const std::string& name, std::string& out) {
  out = read_attr_string(loc, name);
}
void read_attr(hid_t loc, const std::string& name, int64_t& out) { out = read_attr_int(loc, name); }
void read_attr(hid_t loc, const std::string& name, uint64_t& out) {
  out = static_cast<uint64_t>(read_attr_int(loc, name));
}
void read_attr(hid_t loc, const std::string& name, double& out) {
  out = read_attr_double(loc, name);
}
void read_attr(hid_t loc, const std::string& name, std::vector<int64_t>& out) {
  out = read_attr_ints(loc, name);
}
void read_attr(hid_t loc, const std::string& name, std::vector<double>& out) {
  out = read_attr_doubles(loc, name);
}
void write_attr(hid_t loc, const std::string& name, double value) {
  put_attr(loc, name, H5T_NATIVE_DOUBLE, {}, &value);
}
void write_attr(hid_t loc, const std::string& name, const std::vector<int64_t>& values) {
  put_attr(loc, name, H5T_NATIVE_INT64, {values.size()}, values.data());
}
void write_attr(hid_t loc, const std::string& name, const std::vector<double>& values) {
  put_attr(loc, name, H5T_NATIVE_DOUBLE, {values.size()}, values.data());
}

bool has_attr(hid_t loc, const std::string& name) { return H5Aexists(loc, name.c_str()) > 0; }

std::string read_attr_string(hid_t loc, const std::string& name) {
  Handle attr = open_attr(loc, name);
  Handle ftype(H5Aget_type(attr), H5Tclose);
  if (H5Tget_class(ftype) != H5T_STRING) {
    SKV_THROW(kInvalidInput, "attribute '", name, "' is not a string");
  }
  if (H5Tis_variable_str(ftype) > 0) {
    Handle t = string_type();
    char* p = nullptr;
    check_status(H5Aread(attr, t, &p), "reading attribute " + name);
    std::string out = p != nullptr ? p : "";
    H5free_memory(p);
    return out;
  }
  const size_t n = H5Tget_size(ftype);
  std::string out(n, '\0');
  check_status(H5Aread(attr, ftype, out.data()), "reading attribute " + name);
  out.resize(out.find('\0') == std::string::npos ? n : out.find('\0'));
  return out;
}

int64_t read_attr_int(hid_t loc, const std::string& name) {
  auto v = read_attr_array<int64_t>(loc, name, H5T_NATIVE_INT64);
  if (v.size() != 1) SKV_THROW(kInvalidInput, "attribute '", name, "' is not a scalar");
  return v[0];
}

double read_attr_double(hid_t loc, const std::string& name) {
  auto v = read_attr_array<double>(loc, name, H5T_NATIVE_DOUBLE);
  if (v.size() != 1) SKV_THROW(kInvalidInput, "attribute '", name, "' is not a scalar");
  return v[0];
}

std::vector<int64_t> read_attr_ints(hid_t loc, const std::string& name) {
  return read_attr_array<int64_t>(loc, name, H5T_NATIVE_INT64);
}

std::vector<double> read_attr_doubles(hid_t loc, const std::string& name) {
  return read_attr_array<double>(loc, name, H5T_NATIVE_DOUBLE);
}

void write_format(hid_t loc, const std::string& format, int64_t version) {
  write_attr(loc, "format", format);
  write_attr(loc, "format_version", version);
}

void check_format(hid_t loc, const std::string& format, int64_t version) {
  const std::string found = read_attr_string(loc, "format");
  SKV_CHECK(found == format, "attribute 'format' is '", found, "', expected '", format, "'");
  const int64_t found_version = read_attr_int(loc, "format_version");
  if (found_version != version) {
    SKV_THROW(kUnsupported, format, " format version ", found_version,
              " is not supported (this build reads ", version, ")");
  }
}

Handle create_row_dataset(hid_t loc, const std::string& name, hid_t type,
                          const std::vector<hsize_t>& row_shape, hsize_t chunk_rows,
                          int deflate_level) {
  std::vector<hsize_t> dims = {0}, maxdims = {H5S_UNLIMITED}, chunk = {chunk_rows};
  for (hsize_t d : row_shape) {
    dims.push_back(d);
    maxdims.push_back(d);
    chunk.push_back(std::max<hsize_t>(d, 1));
  }
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), maxdims.data()),
               H5Sclose);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  check_status(H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()), "chunking");
  if (deflate_level > 0) {
    // Shuffle groups bytes of equal significance: floats then deflate far better.
    check_status(H5Pset_shuffle(dcpl), "shuffle filter");
    check_status(H5Pset_deflate(dcpl, static_cast<unsigned>(deflate_level)), "deflate filter");
  }
  return Handle(check(H5Dcreate2(loc, name.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                      "creating dataset " + name),
                H5Dclose);
}

void write_dataset(hid_t loc, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                   const void* data) {
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  Handle d(check(H5Dcreate2(loc, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                 "creating dataset " + name),
           H5Dclose);
  check_status(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "writing dataset " + name);
}

std::vector<hsize_t> dims(hid_t dataset) {
  Handle space(H5Dget_space(dataset), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space);
  if (rank < 0) SKV_THROW(kIo, "HDF5: reading dataset shape failed");
  std::vector<hsize_t> out(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space, out.data(), nullptr);
  return out;
}

namespace {

// File and memory dataspaces selecting rows [first, first + rows) of a
// dataset whose current shape is `shape`.
std::pair<Handle, Handle> row_selection(hid_t dataset, const std::vector<hsize_t>& shape,
                                        hsize_t first, hsize_t rows) {
  Handle file_space(H5Dget_space(dataset), H5Sclose);
  std::vector<hsize_t> start(shape.size(), 0), count = shape;
  start[0] = first;
  count[0] = rows;
  check_status(
      H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
      "selecting rows");
  Handle mem_space(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr),
                   H5Sclose);
  return {std::move(file_space), std::move(mem_space)};
}

}  // namespace

void append_rows(hid_t dataset, hid_t mem_type, const void* data, hsize_t rows) {
  if (rows == 0) return;
  std::vector<hsize_t> d = dims(dataset);
  const hsize_t old_rows = d[0];
  d[0] += rows;
  check_status(H5Dset_extent(dataset, d.data()), "extending dataset");
  auto [file_space, mem_space] = row_selection(dataset, d, old_rows, rows);
  check_status(H5Dwrite(dataset, mem_type, mem_space, file_space, H5P_DEFAULT, data),
               "writing rows");
}

void set_rows(hid_t dataset, hsize_t rows) {
  std::vector<hsize_t> d = dims(dataset);
  d[0] = rows;
  check_status(H5Dset_extent(dataset, d.data()), "resizing dataset");
}

namespace {

std::string object_name(hid_t id) {
  const ssize_t n = H5Iget_name(id, nullptr, 0);
  if (n <= 0) return "?";
  std::string s(static_cast<size_t>(n) + 1, '\0');
  H5Iget_name(id, s.data(), s.size());
  s.resize(static_cast<size_t>(n));
  return s;
}

std::string shape_text(const std::vector<hsize_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

const char* class_name(H5T_class_t c) {
  switch (c) {
    case H5T_INTEGER:
      return "integer";
    case H5T_FLOAT:
      return "float";
    case H5T_STRING:
      return "string";
    default:
      return "non-numeric";
  }
}

}  // namespace

hsize_t check_rows(hid_t dataset, H5T_class_t cls, const std::vector<hsize_t>& row_shape) {
  Handle type(H5Dget_type(dataset), H5Tclose);
  const H5T_class_t have = type.get() < 0 ? H5T_NO_CLASS : H5Tget_class(type);
  if (have != cls) {
    SKV_THROW(kInvalidInput, "dataset '", object_name(dataset), "' holds ", class_name(have),
              " elements, expected ", class_name(cls));
  }
  const std::vector<hsize_t> d = dims(dataset);
  const bool same = d.size() == row_shape.size() + 1 &&
                    std::equal(row_shape.begin(), row_shape.end(), d.begin() + 1);
  if (!same) {
    std::vector<hsize_t> want = {0};
    want.insert(want.end(), row_shape.begin(), row_shape.end());
    std::string w = shape_text(want);
    w.replace(1, 1, "rows");
    SKV_THROW(kInvalidInput, "dataset '", object_name(dataset), "' has shape ", shape_text(d),
              ", expected ", w);
  }
  return d[0];
}

void read_all(hid_t dataset, hid_t mem_type, void* out, const std::vector<hsize_t>& shape) {
  if (shape.empty()) SKV_THROW(kInternal, "read_all needs a rank-1 or higher shape");
  const hsize_t rows = check_rows(dataset, H5Tget_class(mem_type),
                                  std::vector<hsize_t>(shape.begin() + 1, shape.end()));
  if (rows != shape[0]) {
    SKV_THROW(kInvalidInput, "dataset '", object_name(dataset), "' has ", rows, " rows, expected ",
              shape[0]);
  }
  read_rows(dataset, mem_type, out, 0, rows, std::vector<hsize_t>(shape.begin() + 1, shape.end()));
}

void read_rows(hid_t dataset, hid_t mem_type, void* out, hsize_t start_row, hsize_t count_rows,
               const std::vector<hsize_t>& row_shape) {
  check_rows(dataset, H5Tget_class(mem_type), row_shape);
  std::vector<hsize_t> d = dims(dataset);
  if (start_row > d[0] || count_rows > d[0] - start_row) {
    SKV_THROW(kInvalidInput, "dataset '", object_name(dataset), "': rows [", start_row, ", ",
              start_row + count_rows, ") are outside the dataset's ", d[0], " rows");
  }
  if (count_rows == 0) return;
  auto [file_space, mem_space] = row_selection(dataset, d, start_row, count_rows);
  check_status(H5Dread(dataset, mem_type, mem_space, file_space, H5P_DEFAULT, out), "reading rows");
}

}  // namespace spindlekv::h5
