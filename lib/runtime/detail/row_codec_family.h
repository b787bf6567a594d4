// Internal: how a codec file offers its codecs to the registry
// (row_codec_registry.cpp). Not installed.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "runtime/row_codec.h"

namespace spindlekv {
namespace detail {

/// One codec family (fp8, KIVI, ...): its name grammar, the names listed in
/// documentation and eval, and its parser, which returns null for a name
/// that is not the family's and throws for one that is but has bad knobs.
struct RowCodecFamily {
  std::string grammar;             ///< e.g. "kivi<2|4>[-g<group>][-r<recent>]"
  std::vector<std::string> names;  ///< e.g. {"kivi4", "kivi2"}
  std::function<std::shared_ptr<const RowCodec>(const std::string& name)> parse;
};

/// The family of one codec without knobs, named `name`: its coder is
/// Coder(context), for a head_dim that is a multiple of `block`. `listed`:
/// among row_codec_names() (what eval runs by default).
template <class Coder>
RowCodecFamily single_codec_family(const std::string& name, int64_t block, bool listed = true);

/// The integer after `prefix` in `name` ("g32" -> 32), or -1 when `name`
/// does not start with `prefix` followed by digits only.
int64_t parse_suffix_number(const std::string& name, const std::string& prefix);

template <class Coder>
RowCodecFamily single_codec_family(const std::string& name, int64_t block, bool listed) {
  class Codec : public RowCodec {
   public:
    Codec(std::string name, int64_t block) : name_(std::move(name)), block_(block) {}
    std::string name() const override { return name_; }
    std::shared_ptr<const RowCoder> bind(const RowCodecContext& c) const override {
      SKV_CHECK(c.head_dim % block_ == 0, "row codec '", name_, "' codes blocks of ", block_,
                " values; head_dim ", c.head_dim, " is not a multiple");
      return std::make_shared<Coder>(c);
    }

   private:
    std::string name_;
    int64_t block_;
  };
  return {name, listed ? std::vector<std::string>{name} : std::vector<std::string>{},
          [name, block](const std::string& n) -> std::shared_ptr<const RowCodec> {
            return n == name ? std::make_shared<Codec>(name, block) : nullptr;
          }};
}

}  // namespace detail
}  // namespace spindlekv
