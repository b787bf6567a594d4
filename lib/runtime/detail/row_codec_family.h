// Internal: how a codec file offers its codecs to the registry
// (row_codec_registry.cpp). Not installed.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

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

/// The integer after `prefix` in `name` ("g32" -> 32), or -1 when `name`
/// does not start with `prefix` followed by digits only.
int64_t parse_suffix_number(const std::string& name, const std::string& prefix);

}  // namespace detail
}  // namespace spindlekv
