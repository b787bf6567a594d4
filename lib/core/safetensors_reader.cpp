#include "core/safetensors_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace spindlekv {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors stores little-endian data; big-endian hosts are not supported");

namespace {

// A 100 MB header would describe millions of tensors; anything larger is a
// corrupt length field, and refusing it early avoids a huge allocation.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DTypeEntry {
  const char* name;
  SafetensorsDType dtype;
  std::size_t size;
  at::ScalarType scalar;
};

constexpr DTypeEntry kDTypes[] = {
    {"F64", SafetensorsDType::kF64, 8, at::kDouble},
    {"F32", SafetensorsDType::kF32, 4, at::kFloat},
    {"F16", SafetensorsDType::kF16, 2, at::kHalf},
    {"BF16", SafetensorsDType::kBF16, 2, at::kBFloat16},
    {"I64", SafetensorsDType::kI64, 8, at::kLong},
    {"I32", SafetensorsDType::kI32, 4, at::kInt},
    {"I16", SafetensorsDType::kI16, 2, at::kShort},
    {"I8", SafetensorsDType::kI8, 1, at::kChar},
    {"U8", SafetensorsDType::kU8, 1, at::kByte},
    {"BOOL", SafetensorsDType::kBool, 1, at::kBool},
};

const DTypeEntry& entry_for(SafetensorsDType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e;
  }
  SKV_ASSERT(false, "unknown dtype enum");
  return kDTypes[0];
}

}  // namespace

std::size_t dtype_size(SafetensorsDType dtype) { return entry_for(dtype).size; }
const char* dtype_name(SafetensorsDType dtype) { return entry_for(dtype).name; }

struct SafetensorsReader::Impl {
  std::string path;
  int fd = -1;
  const uint8_t* map = nullptr;
  uint64_t file_size = 0;
  uint64_t data_start = 0;
  std::map<std::string, SafetensorsTensorInfo> tensors;
  std::map<std::string, std::string> metadata;

  ~Impl() {
    if (map != nullptr) ::munmap(const_cast<uint8_t*>(map), file_size);
    if (fd >= 0) ::close(fd);
  }

  void open_and_map() {
    fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) SKV_THROW(kIo, "cannot open: ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) SKV_THROW(kIo, "cannot stat: ", std::strerror(errno));
    if (!S_ISREG(st.st_mode)) SKV_THROW(kInvalidInput, "not a regular file");
    file_size = static_cast<uint64_t>(st.st_size);
    SKV_CHECK_GE(file_size, uint64_t{8}, "file too short for the 8-byte header length");
    void* p = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) SKV_THROW(kIo, "cannot map: ", std::strerror(errno));
    map = static_cast<const uint8_t*>(p);
  }

  void parse_header() {
    uint64_t header_len = 0;
    std::memcpy(&header_len, map, 8);
    SKV_CHECK_LE(header_len, kMaxHeaderBytes, "header length is implausible");
    SKV_CHECK_LE(header_len, file_size - 8,
                 "header length runs past the end of the file (truncated?)");
    data_start = 8 + header_len;
    const char* begin = reinterpret_cast<const char*>(map + 8);
    nlohmann::json header = nlohmann::json::parse(begin, begin + header_len, nullptr, false);
    SKV_CHECK(!header.is_discarded(), "header is not valid JSON");
    SKV_CHECK(header.is_object(), "header is not a JSON object");

    const uint64_t data_size = file_size - data_start;
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        SKV_CHECK(it.value().is_object(), "__metadata__ is not an object");
        for (auto m = it.value().begin(); m != it.value().end(); ++m) {
          SKV_CHECK(m.value().is_string(), "__metadata__ key '", m.key(), "' is not a string");
          metadata[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      with_context("tensor '" + it.key() + "'",
                   [&] { tensors[it.key()] = parse_tensor(it.key(), it.value(), data_size); });
    }
    check_layout(data_size);
  }

  static SafetensorsTensorInfo parse_tensor(const std::string& name, const nlohmann::json& j,
                                            uint64_t data_size) {
    SKV_CHECK(j.is_object(), "entry is not an object");
    SafetensorsTensorInfo info;
    info.name = name;
    SKV_CHECK(j.contains("dtype") && j["dtype"].is_string(), "missing string 'dtype'");
    const std::string dname = j["dtype"].get<std::string>();
    bool found = false;
    for (const auto& e : kDTypes) {
      if (dname == e.name) {
        info.dtype = e.dtype;
        found = true;
      }
    }
    if (!found) {
      SKV_THROW(kUnsupported, "dtype '", dname,
                "' is not supported (F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
    }
    SKV_CHECK(j.contains("shape") && j["shape"].is_array(), "missing array 'shape'");
    uint64_t numel = 1;
    for (const auto& d : j["shape"]) {
      SKV_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                "shape entry ", d.dump(), " is not a non-negative integer");
      const uint64_t dim = d.get<uint64_t>();
      SKV_CHECK(dim == 0 || numel <= std::numeric_limits<uint64_t>::max() / dim, "shape overflows");
      numel *= dim;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    SKV_CHECK(
        j.contains("data_offsets") && j["data_offsets"].is_array() && j["data_offsets"].size() == 2,
        "missing 'data_offsets' [begin, end]");
    for (const auto& o : j["data_offsets"]) {
      SKV_CHECK(o.is_number_unsigned() || (o.is_number_integer() && o.get<int64_t>() >= 0),
                "data_offsets entry ", o.dump(), " is not a non-negative integer");
    }
    info.begin = j["data_offsets"][0].get<uint64_t>();
    info.end = j["data_offsets"][1].get<uint64_t>();
    SKV_CHECK_LE(info.begin, info.end, "data_offsets are reversed");
    SKV_CHECK_LE(info.end, data_size, "data_offsets run past the end of the file (truncated?)");
    const uint64_t esize = dtype_size(info.dtype);
    SKV_CHECK(numel <= std::numeric_limits<uint64_t>::max() / esize, "byte size overflows");
    SKV_CHECK_EQ(info.end - info.begin, numel * esize,
                 "byte span does not match shape x dtype size");
    return info;
  }

  void check_layout(uint64_t data_size) const {
    std::vector<const SafetensorsTensorInfo*> order;
    for (const auto& kv : tensors) order.push_back(&kv.second);
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    uint64_t cursor = 0;
    for (const auto* t : order) {
      if (t->begin < cursor) {
        SKV_THROW(kInvalidInput, "tensor '", t->name, "' overlaps the previous tensor (begins at ",
                  t->begin, ", previous ends at ", cursor, ")");
      }
      if (t->begin > cursor) {
        SKV_THROW(kInvalidInput, "data section has a hole before tensor '", t->name, "' (bytes ",
                  cursor, " to ", t->begin, " are not indexed)");
      }
      cursor = t->end;
    }
    // Trailing bytes after the last tensor mean the header does not describe
    // the file (an incomplete header); the format forbids them.
    SKV_CHECK_EQ(cursor, data_size, "data section size does not match the tensors' byte spans");
  }
};

SafetensorsReader::SafetensorsReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  with_context("reading '" + path + "'", [&] {
    impl_->open_and_map();
    impl_->parse_header();
  });
}

SafetensorsReader::~SafetensorsReader() = default;

const std::string& SafetensorsReader::path() const { return impl_->path; }

std::vector<std::string> SafetensorsReader::tensor_names() const {
  std::vector<std::string> names;
  for (const auto& kv : impl_->tensors) names.push_back(kv.first);
  return names;
}

bool SafetensorsReader::contains(const std::string& name) const {
  return impl_->tensors.count(name) > 0;
}

const SafetensorsTensorInfo& SafetensorsReader::info(const std::string& name) const {
  auto it = impl_->tensors.find(name);
  if (it == impl_->tensors.end()) {
    SKV_THROW(kInvalidInput, "'", impl_->path, "': tensor '", name, "' not found");
  }
  return it->second;
}

at::Tensor SafetensorsReader::tensor(const std::string& name) const {
  const SafetensorsTensorInfo& ti = info(name);
  at::Tensor out = at::empty(ti.shape, at::TensorOptions().dtype(entry_for(ti.dtype).scalar));
  // memcpy rather than from_blob: the mapping may be unaligned for the dtype.
  if (ti.end > ti.begin) {
    std::memcpy(out.data_ptr(), impl_->map + impl_->data_start + ti.begin, ti.end - ti.begin);
  }
  return out;
}

const std::map<std::string, std::string>& SafetensorsReader::metadata() const {
  return impl_->metadata;
}

const uint8_t* SafetensorsReader::data_section() const { return impl_->map + impl_->data_start; }

uint64_t SafetensorsReader::data_section_size() const {
  return impl_->file_size - impl_->data_start;
}

}  // namespace spindlekv
