// Fuzzes the tokenizers: the input is a tokenizer.json for the byte-level
// BPE builder; the byte tokenizer and, when the JSON loads, the BPE
// tokenizer encode and decode the raw input.
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    auto bytes = spindlekv::make_byte_tokenizer();
    bytes->decode(bytes->encode(text));
  } catch (const spindlekv::Error&) {
  }
  nlohmann::json root = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return 0;
  try {
    auto bpe = spindlekv::detail::make_bpe_tokenizer(root, "fuzz");
    bpe->decode(bpe->encode("Hello, world! 123 ünïcode"));
    bpe->decode(bpe->encode(text));
  } catch (const spindlekv::Error&) {
  }
  return 0;
}
