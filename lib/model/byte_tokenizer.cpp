// Byte tokenizer: the identity between bytes and ids 0..255, for our own
// byte-level models. Ids from 256 up are reserved for special tokens.
#include <algorithm>

#include "core/error.h"
#include "model/tokenizer.h"

namespace spindlekv {
namespace {

constexpr int64_t kNumBytes = 256;

class ByteTokenizer : public Tokenizer {
 public:
  explicit ByteTokenizer(int64_t vocab_size) : vocab_size_(vocab_size) {}

  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int64_t> ids;
    ids.reserve(text.size());
    // Through unsigned char: plain char is signed on x86 and bytes >= 0x80
    // would otherwise become negative ids.
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string text;
    text.reserve(ids.size());
    for (int64_t id : ids) {
      SKV_CHECK_GE(id, 0, "byte tokenizer: cannot decode negative token id ", id);
      // Ids >= 256 are special (BOS, EOS, padding) and carry no text.
      if (id < kNumBytes) text.push_back(static_cast<char>(id));
    }
    return text;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  std::string name() const override { return "byte"; }

  std::optional<int64_t> token_to_id(const std::string& token) const override {
    // A byte tokenizer's only spellable tokens are single bytes.
    if (token.size() == 1) return static_cast<unsigned char>(token[0]);
    return std::nullopt;
  }

 private:
  int64_t vocab_size_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer(std::optional<int64_t> bos_id,
                                               std::optional<int64_t> eos_id, int64_t vocab_size) {
  int64_t needed = kNumBytes;
  if (bos_id) {
    SKV_CHECK_GE(*bos_id, kNumBytes, "byte tokenizer: bos_token_id must not be a byte value");
    needed = std::max(needed, *bos_id + 1);
  }
  if (eos_id) {
    SKV_CHECK_GE(*eos_id, kNumBytes, "byte tokenizer: eos_token_id must not be a byte value");
    needed = std::max(needed, *eos_id + 1);
  }
  if (vocab_size == 0) vocab_size = needed;
  SKV_CHECK_GE(vocab_size, needed,
               "byte tokenizer: vocab_size must cover the 256 bytes and the special ids");
  auto tokenizer = std::make_unique<ByteTokenizer>(vocab_size);
  tokenizer->bos_id = bos_id;
  tokenizer->eos_id = eos_id;
  return tokenizer;
}

}  // namespace spindlekv
