#include "core/npy_writer.h"

#include <ATen/ATen.h>

#include <cstring>
#include <regex>

#include "core/atomic_file.h"
#include "core/error.h"

namespace spindlekv {
namespace {

const char* descr_for(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "<f4";
    case at::kDouble:
      return "<f8";
    case at::kLong:
      return "<i8";
    case at::kInt:
      return "<i4";
    default:
      SKV_THROW(kUnsupported, "npy: dtype ", at::toString(t), " not supported");
  }
}

at::ScalarType type_for(const std::string& descr, const std::string& path) {
  if (descr == "<f4") return at::kFloat;
  if (descr == "<f8") return at::kDouble;
  if (descr == "<i8") return at::kLong;
  if (descr == "<i4") return at::kInt;
  SKV_THROW(kUnsupported, "'", path, "': npy dtype '", descr, "' not supported");
}

}  // namespace

void write_npy(const std::string& path, const at::Tensor& tensor) {
  at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i) {
    shape += std::to_string(t.size(i)) + (t.dim() == 1 ? "," : (i + 1 < t.dim() ? ", " : ""));
  }
  shape += ")";
  std::string header = std::string("{'descr': '") + descr_for(t.scalar_type()) +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Magic (6) + version (2) + length (2) + header + '\n' is padded to 64 bytes.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  const uint16_t len = static_cast<uint16_t>(header.size());
  AtomicFileWriter w(path);
  w.write("\x93NUMPY\x01\x00", 8);
  w.write(&len, 2);
  w.write(header);
  w.write(t.data_ptr(), t.numel() * t.element_size());
  w.commit();
}

at::Tensor read_npy(const std::string& path) {
  return with_context("reading '" + path + "'", [&] {
    const std::string bytes = read_file(path);
    SKV_CHECK(bytes.size() >= 10 && bytes.compare(0, 6, "\x93NUMPY") == 0,
              "not a .npy file (bad magic)");
    SKV_CHECK_EQ(static_cast<int>(bytes[6]), 1, "only npy format version 1 is supported");
    uint16_t len = 0;
    std::memcpy(&len, bytes.data() + 8, 2);
    SKV_CHECK_LE(size_t{10} + len, bytes.size(), "header runs past the end of the file");
    const std::string header = bytes.substr(10, len);
    std::smatch m;
    SKV_CHECK(std::regex_search(header, m, std::regex("'descr': *'([^']+)'")), "no descr");
    const at::ScalarType type = type_for(m[1], path);
    SKV_CHECK(header.find("'fortran_order': False") != std::string::npos,
              "Fortran-order arrays are not supported");
    SKV_CHECK(std::regex_search(header, m, std::regex("'shape': *\\(([^)]*)\\)")), "no shape");
    std::vector<int64_t> shape;
    const std::string dims = m[1];
    std::regex num("[0-9]+");
    for (auto it = std::sregex_iterator(dims.begin(), dims.end(), num);
         it != std::sregex_iterator(); ++it) {
      shape.push_back(std::stoll(it->str()));
    }
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
    const size_t nbytes = t.numel() * t.element_size();
    SKV_CHECK_EQ(bytes.size() - 10 - len, nbytes, "data size does not match the shape");
    std::memcpy(t.data_ptr(), bytes.data() + 10 + len, nbytes);
    return t;
  });
}

}  // namespace spindlekv
