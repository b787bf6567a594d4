// The one registry of row codecs (runtime/row_codec.h). Each codec file in
// runtime/codecs/ defines <family>_codec_family(); adding a codec is one
// entry of SKV_ROW_CODEC_FAMILIES.
#include <ATen/ATen.h>

#include <cctype>

#include "core/error.h"
#include "runtime/detail/row_codec_family.h"
#include "runtime/row_codec.h"

#define SKV_ROW_CODEC_FAMILIES(X) \
  X(fp16) X(bf16) X(fp8) X(kivi) X(turboquant) X(q8_0) X(q4_0) X(plan)

namespace spindlekv {
namespace detail {

#define SKV_DECLARE_FAMILY(family) RowCodecFamily family##_codec_family();
SKV_ROW_CODEC_FAMILIES(SKV_DECLARE_FAMILY)
#undef SKV_DECLARE_FAMILY

namespace {

const std::vector<RowCodecFamily>& families() {
#define SKV_LIST_FAMILY(family) family##_codec_family(),
  static const std::vector<RowCodecFamily> all = {SKV_ROW_CODEC_FAMILIES(SKV_LIST_FAMILY)};
#undef SKV_LIST_FAMILY
  return all;
}

}  // namespace

int64_t parse_suffix_number(const std::string& name, const std::string& prefix) {
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  int64_t v = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(name[i])) || v > (int64_t{1} << 40)) return -1;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

}  // namespace detail

const char* to_string(KvSide side) { return side == KvSide::kKeys ? "keys" : "values"; }

int64_t RowField::entry_bytes() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n * static_cast<int64_t>(c10::elementSize(dtype));
}

std::vector<at::Tensor> RowCoder::initial_head_fields(const at::TensorOptions& options) const {
  std::vector<at::Tensor> out;
  for (const RowField& f : fields()) {
    if (f.per != RowField::Per::kHead) continue;
    SKV_THROW(kInternal, "a codec with per-head fields gives their initial values");
  }
  return out;
}

double coded_row_bytes(const RowCoder& coder) {
  double bytes = 0;
  for (const RowField& f : coder.fields()) {
    if (f.per == RowField::Per::kRow) bytes += static_cast<double>(f.entry_bytes());
    if (f.per == RowField::Per::kBlock) {
      bytes += static_cast<double>(f.entry_bytes()) / static_cast<double>(coder.block_rows());
    }
  }
  return bytes;
}

std::shared_ptr<const RowCodec> parse_row_codec(const std::string& name) {
  if (name == "none") return nullptr;
  for (const detail::RowCodecFamily& f : detail::families()) {
    if (auto codec = f.parse(name)) return codec;
  }
  SKV_THROW(kInvalidInput, "row codec '", name, "' is unknown (known: none, ", row_codec_grammar(),
            ")");
}

bool is_row_codec_name(const std::string& name) {
  if (name == "none") return false;
  for (const detail::RowCodecFamily& f : detail::families()) {
    try {
      if (f.parse(name)) return true;
    } catch (const Error&) {
      return false;  // the family's name with knobs it refuses
    }
  }
  return false;
}

std::vector<std::string> row_codec_names() {
  std::vector<std::string> out;
  for (const detail::RowCodecFamily& f : detail::families()) {
    out.insert(out.end(), f.names.begin(), f.names.end());
  }
  return out;
}

std::string row_codec_grammar() {
  std::string out;
  for (const detail::RowCodecFamily& f : detail::families()) {
    out += (out.empty() ? "" : ", ") + f.grammar;
  }
  return out;
}

}  // namespace spindlekv
