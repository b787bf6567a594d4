// Row codecs: every way a compressed cache stores a K or V row (one KV
// head's vector of head_dim elements) other than plainly in its storage
// dtype. A codec is a plug-in with one name registry (row_codec_registry.cpp,
// after FAISS's index_factory): fp8, KIVI, TurboQuant-style rotation +
// Lloyd-Max, llama.cpp's q8_0 / q4_0, and later trained codecs. A new codec
// is one file in runtime/codecs/ and one line of the registry.
//
// A codec says what it stores as a list of fields (RowField): tensors per
// coded row, per block of coded rows, or per KV head, each with its exact
// shape and dtype, so the cache's byte count, its saved file and its checks
// come from the fields alone. Rows wait in the storage dtype (a recent
// window, as KIVI keeps) until rows_to_code() says to code them; a codec
// without a window codes every row as it arrives. Tables that every request
// of a model shares (a rotation, a scalar codebook) are the codec's own and
// are charged as whole tables (shared_bytes()).
//
// Shapes: rows x [m, head_dim] float32 (keys before RoPE); decoded rows
// [kv_heads, m, head_dim] float32. Field tensors live on the cache's device.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/storage_cost.h"

namespace spindlekv {

struct Artifact;

/// Which side of the cache a codec codes.
enum class KvSide {
  kKeys,    ///< pre-RoPE keys
  kValues,  ///< values
};
const char* to_string(KvSide side);

/// One tensor a codec stores. Its full shape in the cache is [kv_heads,
/// entries, shape...] for kRow (an entry per coded row) and kBlock (an entry
/// per block_rows() coded rows), and [kv_heads, shape...] for kHead.
struct RowField {
  enum class Per { kRow, kBlock, kHead };
  std::string name;  ///< in a saved cache: <keys|values>.quant.<name>
  Per per = Per::kRow;
  std::vector<int64_t> shape;  ///< sizes after the leading ones above
  at::ScalarType dtype = at::kByte;
  /// Bytes of one entry (one row's, one block's or one head's).
  int64_t entry_bytes() const;
};

/// What a codec is bound to: one (layer, side) of a cache. Only what an
/// engine knows: the cache geometry, its storage dtype and the artifact.
struct RowCodecContext {
  KvSide side = KvSide::kKeys;
  int64_t layer = 0;
  int64_t kv_heads = 1;
  int64_t head_dim = 0;
  StorageDtype dtype = StorageDtype::kFloat16;  ///< rows waiting uncoded are held in it
  at::Device device = at::kCPU;                 ///< where the cache and the codec's tables live
  /// The artifact, for codecs whose tables come from calibration
  /// (RowCodec::needs_artifact()); null otherwise.
  const Artifact* artifact = nullptr;
};

/// A codec bound to one (layer, side): it codes and decodes that layer's rows.
class RowCoder {
 public:
  virtual ~RowCoder() = default;
  /// The tensors it stores, in a fixed order (fields of a saved cache).
  virtual const std::vector<RowField>& fields() const = 0;
  /// The kHead fields' values before any row is coded, [kv_heads, shape...]
  /// each, on `options`' device (default: zeros).
  virtual std::vector<at::Tensor> initial_head_fields(const at::TensorOptions& options) const;
  /// Rows coded together (kBlock fields hold one entry per block); 1 for
  /// codecs that code each row on its own.
  virtual int64_t block_rows() const { return 1; }
  /// Given `waiting` rows of a head not yet coded (oldest first), how many of
  /// the oldest to code now: a multiple of block_rows(), at most `waiting`.
  virtual int64_t rows_to_code(int64_t waiting) const { return waiting; }
  /// Codes rows x [m, head_dim] float32 of KV head `head` (m a multiple of
  /// block_rows()): one tensor per kRow or kBlock field, in fields() order,
  /// of [m or m / block_rows(), shape...]. It may set the head's entries of
  /// the kHead fields (`head_fields`, in fields() order of the kHead ones),
  /// as fp8 fixes a head's scale from its first rows.
  virtual std::vector<at::Tensor> encode(const at::Tensor& x, int64_t head,
                                         std::vector<at::Tensor>& head_fields) const = 0;
  /// Decodes `m` coded rows of every head: `fields` in fields() order, kRow
  /// ones [kv_heads, m, ...], kBlock ones [kv_heads, m / block_rows(), ...],
  /// kHead ones whole. Returns [kv_heads, m, head_dim] float32.
  virtual at::Tensor decode(const std::vector<at::Tensor>& fields, int64_t m) const = 0;
  /// Optional fast path on the host: decodes rows [0, coded[g]) of each head
  /// g into out [kv_heads, rows, head_dim] float32 (rows >= every coded[g])
  /// from the whole fields; returns false where it has none (the cache then
  /// calls decode() a block at a time). Must equal decode() bit for bit.
  virtual bool decode_on_host(const std::vector<at::Tensor>& fields,
                              const std::vector<int64_t>& coded, int64_t rows, float* out) const {
    return false;
  }
  /// Bytes of the tables it holds for every request of the model (a
  /// rotation, a codebook), charged to requests as whole tables.
  virtual int64_t shared_bytes() const { return 0; }
};

/// A codec as named: its knobs parsed, not yet bound to a layer.
class RowCodec {
 public:
  virtual ~RowCodec() = default;
  /// The name it was parsed from (the registry's canonical spelling).
  virtual std::string name() const = 0;
  /// True when bind() needs the artifact (calibrated tables).
  virtual bool needs_artifact() const { return false; }
  /// The coder of one (layer, side). Throws kInvalidInput naming the codec
  /// and the value where the geometry cannot be coded (a head_dim its
  /// blocks do not divide) or the artifact lacks its tables.
  virtual std::shared_ptr<const RowCoder> bind(const RowCodecContext& context) const = 0;
};

/// Bytes one coded row costs in `coder`: its kRow fields' entry bytes plus
/// its share of the kBlock ones (per-head fields and rows still waiting
/// uncoded apart).
double coded_row_bytes(const RowCoder& coder);

/// The codec named `name` ("fp8", "kivi4", "tq2.5", "q4_0", ...); null for
/// "none" (rows in the storage dtype). Throws kInvalidInput naming the
/// grammar of every registered codec for an unknown name.
std::shared_ptr<const RowCodec> parse_row_codec(const std::string& name);
/// True when `name` is a registered codec (not "none").
bool is_row_codec_name(const std::string& name);
/// One name per registered codec family and setting that the documentation
/// and `spindlekv eval` list ("fp8", "fp8-calibrated", "kivi4", "kivi2",
/// "tq2", "tq2.5", "tq3", "tq4", "q8_0", "q4_0").
std::vector<std::string> row_codec_names();
/// The grammar of every family, for error messages and --help.
std::string row_codec_grammar();

}  // namespace spindlekv
