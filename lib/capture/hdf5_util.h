// Internal: a thin RAII layer over the HDF5 C API for SpindleKV's files
// (captures, codebooks). Every failure throws spindlekv::Error naming the
// object; callers add the file name with with_context. HDF5's own error
// stack printing is switched off.
#pragma once

#include <hdf5.h>

#include <string>
#include <utility>
#include <vector>

namespace spindlekv::h5 {

/// Owns an hid_t and closes it with the matching H5*close.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*closer)(hid_t)) : id_(id), closer_(closer) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, -1)), closer_(o.closer_) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, -1);
      closer_ = o.closer_;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  void reset();

 private:
  hid_t id_ = -1;
  herr_t (*closer_)(hid_t) = nullptr;
};

/// Silences HDF5's automatic error printing (once per process).
void quiet_errors();

Handle create_file(const std::string& path);  ///< fails if it exists
Handle open_file(const std::string& path, bool write);
Handle create_group(hid_t loc, const std::string& name);
Handle open_group(hid_t loc, const std::string& name);
Handle open_dataset(hid_t loc, const std::string& name);
bool exists(hid_t loc, const std::string& name);

void write_attr(hid_t loc, const std::string& name, const std::string& value);
void write_attr(hid_t loc, const std::string& name, int64_t value);
void write_attr(hid_t loc, const std::string& name, double value);
void write_attr(hid_t loc, const std::string& name, const std::vector<int64_t>& values);
void write_attr(hid_t loc, const std::string& name, const std::vector<double>& values);
bool has_attr(hid_t loc, const std::string& name);
std::string read_attr_string(hid_t loc, const std::string& name);
int64_t read_attr_int(hid_t loc, const std::string& name);
double read_attr_double(hid_t loc, const std::string& name);
std::vector<int64_t> read_attr_ints(hid_t loc, const std::string& name);
std::vector<double> read_attr_doubles(hid_t loc, const std::string& name);

// Attribute I/O chosen by the field's type, so that one table of (name,
// field) pairs per file kind serves both its writer and its reader:
//   template <class M, class F> void metadata_fields(M& m, F&& field) {
//     field("seq_len", m.seq_len); ...
//   }
//   metadata_fields(meta, h5::AttrWriter{file});  // or AttrReader
void write_attr(hid_t loc, const std::string& name, uint64_t value);  ///< stored as int64
void read_attr(hid_t loc, const std::string& name, std::string& out);
void read_attr(hid_t loc, const std::string& name, int64_t& out);
void read_attr(hid_t loc, const std::string& name, uint64_t& out);
void read_attr(hid_t loc, const std::string& name, double& out);
void read_attr(hid_t loc, const std::string& name, std::vector<int64_t>& out);
void read_attr(hid_t loc, const std::string& name, std::vector<double>& out);

/// A field older files may lack: written always, read when present (left
/// as is otherwise). In a field table: field("key", h5::optional(m.key)).
template <class S>
struct Optional {
  S& value;
};
template <class S>
Optional<S> optional(S& value) {
  return {value};
}
void write_attr(hid_t loc, const std::string& name, const Optional<const std::string>& value);
void read_attr(hid_t loc, const std::string& name, const Optional<std::string>& out);

struct AttrWriter {
  hid_t loc;
  template <class T>
  void operator()(const char* name, const T& value) const {
    write_attr(loc, name, value);
  }
};
struct AttrReader {
  hid_t loc;
  template <class T>
  void operator()(const char* name, T& value) const {
    read_attr(loc, name, value);
  }
  template <class S>
  void operator()(const char* name, const Optional<S>& value) const {
    read_attr(loc, name, value);
  }
};

/// Writes the "format" and "format_version" attributes that name a file kind.
void write_format(hid_t loc, const std::string& format, int64_t version);
/// Checks them: kInvalidInput for another format, kUnsupported for another version.
void check_format(hid_t loc, const std::string& format, int64_t version);

/// A dataset of rows shaped `row_shape`, growing along dimension 0, chunked
/// by `chunk_rows` and (when `deflate_level` > 0) shuffled and deflated.
Handle create_row_dataset(hid_t loc, const std::string& name, hid_t type,
                          const std::vector<hsize_t>& row_shape, hsize_t chunk_rows,
                          int deflate_level);
/// A fixed-size dataset written at once.
void write_dataset(hid_t loc, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                   const void* data);
std::vector<hsize_t> dims(hid_t dataset);
/// Checks a dataset before any row is read from it: its elements are of
/// `cls` (H5T_FLOAT or H5T_INTEGER; floats are never read as integers or the
/// reverse), it has 1 + row_shape.size() dimensions, and those after the
/// first equal `row_shape`. Returns its row count. Throws kInvalidInput
/// naming the dataset, what it has and what was expected.
hsize_t check_rows(hid_t dataset, H5T_class_t cls, const std::vector<hsize_t>& row_shape);
/// Appends `rows` rows from `data` (C order) to a row dataset.
void append_rows(hid_t dataset, hid_t mem_type, const void* data, hsize_t rows);
/// Sets the row count (drops rows beyond it).
void set_rows(hid_t dataset, hsize_t rows);
/// Reads rows [start, start + count) into `out` (C order), which holds
/// `count` rows shaped `row_shape` of `mem_type`: the dataset is checked
/// against both first (check_rows), so a file whose shapes disagree with
/// what the caller allocated is refused, never read past the buffer.
void read_rows(hid_t dataset, hid_t mem_type, void* out, hsize_t start, hsize_t count,
               const std::vector<hsize_t>& row_shape);
/// The whole of a dataset that must be exactly `shape` (rank included).
void read_all(hid_t dataset, hid_t mem_type, void* out, const std::vector<hsize_t>& shape);

}  // namespace spindlekv::h5
