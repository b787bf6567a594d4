#include "runtime/compressed_cache.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "core/error.h"
#include "core/rope.h"
#include "runtime/detail/coded_reads.h"
#include "runtime/detail/compressed_cache_impl.h"
#include "runtime/detail/decode_attention.h"
#include "runtime/detail/host_transfer.h"
#include "runtime/layer_budgets.h"
#include "runtime/paper_defaults.h"

namespace spindlekv {

using detail::SequenceLayer;

const char* to_string(BudgetKind k) {
  switch (k) {
    case BudgetKind::kUniform:
      return "uniform";
    case BudgetKind::kPyramid:
      return "pyramid";
    case BudgetKind::kCalibrated:
      return "calibrated";
  }
  return "?";
}

BudgetKind parse_budget_kind(const std::string& s) {
  if (s == "uniform") return BudgetKind::kUniform;
  if (s == "pyramid") return BudgetKind::kPyramid;
  if (s == "calibrated") return BudgetKind::kCalibrated;
  SKV_THROW(kInvalidInput, "budget '", s, "' is unknown (allowed: uniform, pyramid, calibrated)");
}

CompressedCache::Impl::Impl(const CacheGeometry& g, int64_t b, CompressionParameters p,
                            std::shared_ptr<const Artifact> a, c10::Device dev)
    : geometry(g), batch(b), params(p), artifact(std::move(a)), device(dev) {
  geometry.validate();
  SKV_CHECK_GT(batch, 0, "batch size");
  SKV_CHECK(params.reserve_ratio > 0 && params.reserve_ratio <= 1, "reserve_ratio must lie in ",
            "(0, 1], got ", params.reserve_ratio);
  SKV_CHECK_GE(params.window, 0, "window");
  if (artifact) artifact->check_geometry(geometry);
  // The row codecs, bound to every layer here so that a layout they cannot
  // hold fails now, not at the first prefill.
  const std::shared_ptr<const RowCodec> key_codec =
      with_context("key codec", [&] { return parse_row_codec(params.key_codec); });
  const std::shared_ptr<const RowCodec> value_codec =
      with_context("value codec", [&] { return parse_row_codec(params.value_codec); });
  const bool codec_needs_artifact =
      (key_codec && key_codec->needs_artifact()) || (value_codec && value_codec->needs_artifact());
  const bool needs_artifact = params.codebook == CodebookMode::kCalibrated ||
                              params.codebook == CodebookMode::kHybrid ||
                              params.budget == BudgetKind::kCalibrated || codec_needs_artifact;
  SKV_CHECK(!needs_artifact || artifact != nullptr, "codebook mode '", to_string(params.codebook),
            "' with budget '", to_string(params.budget), "' and codecs '", params.key_codec,
            "' / '", params.value_codec, "' needs an artifact");
  key_coders.assign(geometry.num_layers, nullptr);
  value_coders.assign(geometry.num_layers, nullptr);
  for (int64_t l = 0; l < geometry.num_layers; ++l) {
    for (const auto& entry : {std::pair{key_codec.get(), KvSide::kKeys},
                              std::pair{value_codec.get(), KvSide::kValues}}) {
      // Named copies, not a structured binding: clang 14 cannot capture one in the lambda below.
      const RowCodec* codec = entry.first;
      const KvSide side = entry.second;
      if (codec == nullptr) continue;
      RowCodecContext c;
      c.side = side;
      c.layer = l;
      c.kv_heads = geometry.num_kv_heads;
      c.head_dim = geometry.head_dim;
      c.dtype = params.storage_dtype;
      c.device = device;
      c.artifact = artifact.get();
      auto coder = with_context(
          "row codec '" + codec->name() + "' of layer " + std::to_string(l) + " " + to_string(side),
          [&] { return codec->bind(c); });
      (side == KvSide::kKeys ? key_coders : value_coders)[l] = std::move(coder);
    }
  }
  if (std::isnan(params.key_threshold))
    params.key_threshold = artifact ? artifact->key_threshold : paper::kKeyThreshold;
  if (std::isnan(params.value_threshold)) {
    params.value_threshold = artifact ? artifact->value_threshold : paper::kValueThreshold;
  }
  SKV_CHECK(params.key_threshold > -1 && params.key_threshold <= 1, "key threshold ",
            params.key_threshold, " outside (-1, 1]");
  SKV_CHECK(params.value_threshold > -1 && params.value_threshold <= 1, "value threshold ",
            params.value_threshold, " outside (-1, 1]");
  key_tables.resize(geometry.num_layers);
  value_tables.resize(geometry.num_layers);
  for (int64_t l = 0; l < geometry.num_layers; ++l) {
    key_tables[l].threshold = params.key_threshold;
    value_tables[l].threshold = params.value_threshold;
    if (artifact && (params.codebook == CodebookMode::kCalibrated ||
                     params.codebook == CodebookMode::kHybrid)) {
      const ArtifactLayer& L = artifact->layers[l];
      const at::ScalarType entry = detail::entry_scalar_type(params.storage_dtype);
      key_tables[l].calibrated = L.key_codebook.to(device, entry);
      key_tables[l].calibrated_sizes = L.key_sizes;
      value_tables[l].calibrated = L.value_codebook.to(device, entry);
      value_tables[l].calibrated_sizes = L.value_sizes;
    }
  }
  policy = std::make_shared<WindowAttentionPolicy>(params.gqa);
  inv_freq = rope_inverse_frequencies(geometry.rope, geometry.head_dim).to(device);
  sequences.assign(batch, std::vector<SequenceLayer>(geometry.num_layers));
  next_positions.assign(batch, 0);
  token_id_layer.assign(geometry.num_layers, false);
}

void CompressedCache::Impl::append_token_ids(int64_t layer, SequenceLayer& S, const at::Tensor& ids,
                                             const at::Tensor& keys, const at::Tensor& values) {
  const int64_t kv = geometry.num_kv_heads, t = ids.numel();
  SKV_CHECK(ids.dim() == 1 && keys.size(1) == t, "layer ", layer,
            " is held as token ids and needs ", keys.size(1), " token ids, got ", ids.sizes());
  at::Tensor id = ids.to(device, at::kLong);
  if (t > 0) {
    const int64_t lo = id.min().item<int64_t>(), hi = id.max().item<int64_t>();
    SKV_CHECK(lo >= 0 && hi < token_vocab, "token ids must lie in [0, ", token_vocab, "), got [",
              lo, ", ", hi, "]");
  }
  // Only a layer whose K/V are a function of the token id may be held so.
  for (const auto& [given, table, what] :
       {std::tuple<const at::Tensor&, const detail::CodebookTables&, const char*>{
            keys, key_tables[layer], "keys"},
        {values, value_tables[layer], "values"}}) {
    at::Tensor rows = table.calibrated.index_select(1, id).to(at::kFloat);  // [kv, t, d]
    const double diff = t > 0 ? (given.to(at::kFloat) - rows).abs().max().item<double>() : 0.0;
    const double scale = t > 0 ? std::max(1.0, rows.abs().max().item<double>()) : 1.0;
    // The table holds rows in the storage dtype: allow its rounding.
    const double tolerance = params.storage_dtype == StorageDtype::kFloat32   ? 1e-5
                             : params.storage_dtype == StorageDtype::kFloat16 ? 1e-3
                                                                              : 8e-3;
    SKV_CHECK(diff <= tolerance * scale, "layer ", layer, " cannot be held as token ids: its ",
              what, " differ from the token table's rows by up to ", diff,
              " (only a layer whose K/V depend on the token id alone can, such as layer 0 of a "
              "Llama-family model)");
  }
  at::Tensor code = id.unsqueeze(0).expand({kv, t});
  at::Tensor ones =
      at::ones({kv, t}, float_options().dtype(detail::magnitude_scalar_type(params.storage_dtype)));
  for (detail::CodedVectors* c : {&S.keys, &S.values}) {
    detail::append_codes(*c, code, 0, token_vocab - 1);
    detail::append_magnitudes(*c, ones);
  }
}

void CompressedCache::hold_as_token_ids(int64_t layer, const at::Tensor& keys_by_token,
                                        const at::Tensor& values_by_token) {
  Impl& I = *impl_;
  with_context("holding layer " + std::to_string(layer) + " as token ids", [&] {
    const int64_t kv = I.geometry.num_kv_heads, d = I.geometry.head_dim;
    SKV_CHECK(layer >= 0 && layer < I.geometry.num_layers, "layer ", layer, " outside [0, ",
              I.geometry.num_layers, ")");
    SKV_CHECK(keys_by_token.dim() == 3 && keys_by_token.size(1) == kv &&
                  keys_by_token.size(2) == d && keys_by_token.size(0) > 0,
              "keys_by_token must be [vocab, ", kv, ", ", d, "], got ", keys_by_token.sizes());
    SKV_CHECK(values_by_token.sizes() == keys_by_token.sizes(), "values_by_token ",
              values_by_token.sizes(), " differ from keys_by_token ", keys_by_token.sizes());
    const int64_t V = keys_by_token.size(0);
    SKV_CHECK(I.token_vocab == 0 || I.token_vocab == V, "token tables of ", V,
              " rows, another layer's have ", I.token_vocab);
    for (const auto& seq : I.sequences) {
      SKV_CHECK(!seq[layer].filled, "the layer already holds tokens");
    }
    I.token_vocab = V;
    I.token_id_layer[layer] = true;
    const at::ScalarType entry = detail::entry_scalar_type(I.params.storage_dtype);
    I.key_tables[layer].calibrated = keys_by_token.to(I.device, entry).transpose(0, 1).contiguous();
    I.key_tables[layer].calibrated_sizes.assign(kv, V);
    I.value_tables[layer].calibrated =
        values_by_token.to(I.device, entry).transpose(0, 1).contiguous();
    I.value_tables[layer].calibrated_sizes.assign(kv, V);
  });
}

void CompressedCache::observe_tokens(const at::Tensor& tokens) {
  impl_->pending_tokens = tokens.to(impl_->device, at::kLong);
}

detail::CodedVectors CompressedCache::Impl::empty_coded(bool keys, int64_t layer) const {
  detail::CodedVectors c = detail::empty_coded(geometry.num_kv_heads, geometry.head_dim,
                                               float_options(), params.storage_dtype);
  const std::shared_ptr<const RowCoder>& coder = keys ? key_coders[layer] : value_coders[layer];
  if (coder && !token_id_layer[layer]) {
    c.quant = detail::QuantizedRows::empty(coder, params.storage_dtype, geometry.num_kv_heads,
                                           geometry.head_dim, float_options());
  }
  return c;
}

at::TensorOptions CompressedCache::Impl::float_options() const {
  return at::TensorOptions().dtype(at::kFloat).device(device);
}

void CompressedCache::Impl::ensure_rope(int64_t needed) {
  if (!rope_cos.defined() || rope_cos.size(0) < needed) {
    const int64_t P = std::max<int64_t>(needed, rope_cos.defined() ? 2 * rope_cos.size(0) : 1024);
    RopeTables t =
        rope_tables(inv_freq, at::arange(P, at::TensorOptions().dtype(at::kLong).device(device)));
    rope_cos = t.cos;
    rope_sin = t.sin;
  }
}

SequenceLayer& CompressedCache::Impl::slot(int64_t sequence, int64_t layer) {
  SKV_CHECK(sequence >= 0 && sequence < batch, "sequence ", sequence, " outside [0, ", batch, ")");
  SKV_CHECK(layer >= 0 && layer < geometry.num_layers, "layer ", layer, " outside [0, ",
            geometry.num_layers, ")");
  return sequences[sequence][layer];
}

CompressedCache::CompressedCache(const CacheGeometry& geometry, int64_t batch,
                                 CompressionParameters params,
                                 std::shared_ptr<const Artifact> artifact, c10::Device device)
    : impl_(std::make_unique<Impl>(geometry, batch, params, std::move(artifact), device)) {}
CompressedCache::~CompressedCache() = default;
CompressedCache::CompressedCache(CompressedCache&&) noexcept = default;
CompressedCache& CompressedCache::operator=(CompressedCache&&) noexcept = default;

void CompressedCache::set_policy(std::shared_ptr<const EvictionPolicy> policy) {
  SKV_CHECK(policy != nullptr, "eviction policy is null");
  impl_->policy = std::move(policy);
}

const CompressionParameters& CompressedCache::parameters() const { return impl_->params; }
const EvictionPolicy& CompressedCache::policy() const { return *impl_->policy; }
int64_t CompressedCache::batch_size() const { return impl_->batch; }

int64_t CompressedCache::next_position(int64_t sequence) const {
  SKV_CHECK(sequence >= 0 && sequence < impl_->batch, "sequence ", sequence, " outside [0, ",
            impl_->batch, ")");
  return impl_->next_positions[sequence];
}

int64_t CompressedCache::layer_budget(int64_t layer, int64_t tokens) const {
  const Impl& I = *impl_;
  const int64_t window = std::min(I.params.window, tokens);
  const int64_t context = tokens - window;
  if (I.params.reserve_ratio >= 1) return context;
  const double rc = context_reserve_ratio(I.params.reserve_ratio, tokens, window);
  std::vector<double> fractions;
  switch (I.params.budget) {
    case BudgetKind::kUniform:
      fractions.assign(I.geometry.num_layers, rc);
      break;
    case BudgetKind::kPyramid:
      fractions = pyramid_keep_fractions(rc, I.geometry.num_layers, I.params.pyramid_beta);
      break;
    case BudgetKind::kCalibrated:
      fractions = I.artifact->calibrated.at(rc);
      break;
  }
  return kept_context_tokens(fractions[layer], context);
}

void CompressedCache::prefill(int64_t sequence, int64_t layer, const at::Tensor& keys_in,
                              const at::Tensor& values_in, const at::Tensor& window_attention,
                              const at::Tensor& token_ids) {
  Impl& I = *impl_;
  with_context(
      "prefill of sequence " + std::to_string(sequence) + " layer " + std::to_string(layer), [&] {
        RECORD_USER_SCOPE("spindlekv::prefill");  // profilers and bench/gpu_bench see it
        SequenceLayer& S = I.slot(sequence, layer);
        SKV_CHECK(!S.filled, "the layer already holds tokens; prefill a fresh sequence");
        const int64_t kv = I.geometry.num_kv_heads, heads = I.geometry.num_heads,
                      d = I.geometry.head_dim;
        SKV_CHECK(keys_in.dim() == 3 && keys_in.size(0) == kv && keys_in.size(2) == d,
                  "keys must be [", kv, ", tokens, ", d, "], got ", keys_in.sizes());
        SKV_CHECK(values_in.sizes() == keys_in.sizes(), "values ", values_in.sizes(),
                  " differ from keys ", keys_in.sizes());
        const int64_t T = keys_in.size(1);
        SKV_CHECK_GT(T, 0, "no tokens to prefill");
        for (const SequenceLayer& other : I.sequences[sequence]) {
          SKV_CHECK(!other.filled || other.tokens_seen == T, "another layer of this sequence was ",
                    "prefilled with ", other.tokens_seen, " tokens, this one has ", T);
        }
        const at::Tensor keys = keys_in.to(I.device, at::kFloat);
        const at::Tensor values = values_in.to(I.device, at::kFloat);
        if (I.token_id_layer[layer]) {  // every token, as its id
          SKV_CHECK(token_ids.defined(), "layer ", layer,
                    " is held as token ids: prefill needs the prompt's token ids");
          S.positions = at::arange(T, keys.options().dtype(at::kInt)).unsqueeze(0).expand({kv, T});
          S.keys = I.empty_coded(true, layer);
          S.values = I.empty_coded(false, layer);
          I.append_token_ids(layer, S, token_ids.reshape({-1}), keys, values);
          S.tokens_seen = T;
          S.filled = true;
          I.next_positions[sequence] = T;
          return;
        }
        const int64_t window = std::min(I.params.window, T);
        const int64_t keep = layer_budget(layer, T);

        at::Tensor kept;
        if (keep >= T - window) {
          kept = at::ones({heads, T}, at::TensorOptions().dtype(at::kBool).device(I.device));
        } else {
          const int64_t rows = std::min(T, I.policy->attention_rows(T, window));
          SKV_CHECK(window_attention.defined() && window_attention.dim() == 3 &&
                        window_attention.size(0) == heads && window_attention.size(2) == T &&
                        window_attention.size(1) >= rows,
                    "attention must be [", heads, ", >= ", rows, ", ", T, "] for policy '",
                    I.policy->name(), "', got ",
                    window_attention.defined() ? window_attention.sizes() : at::IntArrayRef{});
          EvictionInput in;
          in.layer = layer;
          in.num_layers = I.geometry.num_layers;
          in.num_kv_heads = kv;
          in.tokens = T;
          in.window = window;
          in.keep_context = keep;
          in.attention =
              window_attention.narrow(1, window_attention.size(1) - rows, rows).to(I.device);
          kept = I.policy->select(in).to(I.device, at::kBool);
          SKV_CHECK(kept.dim() == 2 && kept.size(0) == heads && kept.size(1) == T, "policy '",
                    I.policy->name(), "' returned ", kept.sizes(), ", expected [", heads, ", ", T,
                    "]");
        }
        // Each KV head holds the union of its query heads' tokens, in position order.
        const int64_t group = heads / kv;
        at::Tensor kept3 = kept.view({kv, group, T});
        at::Tensor uni = kept3.any(1);  // [kv, T]
        // One read-back: the widest head's count, and whether some query
        // head kept less than its KV head's union.
        const at::Tensor facts = detail::read_back(
            at::stack({uni.sum(1).max(), (kept3.all(1) != uni).any().to(at::kLong)}));
        const int64_t n = facts.data_ptr<int64_t>()[0];
        const bool partial = facts.data_ptr<int64_t>()[1] != 0;
        at::Tensor order = detail::set_columns_first(uni, n);
        at::Tensor valid = order < T;
        at::Tensor index = order.clamp_max(T - 1);
        S.positions = at::where(valid, order, at::full_like(order, -1)).to(at::kInt);
        if (partial) {
          S.member =
              (kept3.gather(2, index.unsqueeze(1).expand({kv, group, n})) & valid.unsqueeze(1))
                  .reshape({heads, n});
        }
        at::Tensor gather_index = index.unsqueeze(2).expand({kv, n, d});
        const bool build = I.params.codebook == CodebookMode::kJustInTime ||
                           I.params.codebook == CodebookMode::kHybrid;
        S.keys = I.empty_coded(true, layer);
        S.values = I.empty_coded(false, layer);
        detail::append_coded(S.keys, keys.gather(1, gather_index), valid, I.key_tables[layer],
                             I.params.codebook, build);
        detail::append_coded(S.values, values.gather(1, gather_index), valid, I.value_tables[layer],
                             I.params.codebook, build);
        S.tokens_seen = T;
        S.filled = true;
        I.next_positions[sequence] = T;
      });
}

at::Tensor CompressedCache::append_and_attend(int64_t layer, const at::Tensor& queries,
                                              const at::Tensor& keys_pre_rope,
                                              const at::Tensor& values_in,
                                              const at::Tensor& positions_in) {
  Impl& I = *impl_;
  const int64_t B = I.batch, kv = I.geometry.num_kv_heads, heads = I.geometry.num_heads;
  const int64_t d = I.geometry.head_dim, group = heads / kv;
  SKV_CHECK(queries.dim() == 4 && queries.size(0) == B && queries.size(1) == heads &&
                queries.size(3) == d,
            "queries must be [", B, ", ", heads, ", new, ", d, "], got ", queries.sizes());
  const int64_t t = queries.size(2);
  SKV_CHECK(keys_pre_rope.dim() == 4 && keys_pre_rope.size(0) == B && keys_pre_rope.size(1) == kv &&
                keys_pre_rope.size(2) == t && keys_pre_rope.size(3) == d,
            "keys must be [", B, ", ", kv, ", ", t, ", ", d, "], got ", keys_pre_rope.sizes());
  SKV_CHECK(values_in.sizes() == keys_pre_rope.sizes(), "values differ from keys in shape");
  SKV_CHECK(positions_in.dim() == 2 && positions_in.size(0) == B && positions_in.size(1) == t,
            "positions must be [", B, ", ", t, "]");
  const bool extend =
      I.params.extend_codebook_when_decoding && (I.params.codebook == CodebookMode::kJustInTime ||
                                                 I.params.codebook == CodebookMode::kHybrid);
  std::vector<const SequenceLayer*> layers;  // this layer of each sequence
  at::Tensor positions;                      // [B, t] int64 on the cache's device
  {
    // Profilers (and bench/gpu_bench's operation counts) see the two halves
    // of a step as "spindlekv::decode_append" and "spindlekv::decode_attend".
    RECORD_USER_SCOPE("spindlekv::decode_append");
    // The RoPE table must cover every new position: read on the host where
    // the caller keeps positions (as engines do), else once for the batch.
    int64_t last_position = -1;
    if (positions_in.numel() > 0) {
      if (positions_in.is_cpu()) {
        const at::Tensor p = positions_in.to(at::kLong).contiguous();
        const int64_t* pp = p.data_ptr<int64_t>();
        last_position = *std::max_element(pp, pp + p.numel());
      } else {
        last_position = positions_in.max().item<int64_t>();
      }
    }
    // ... and every held token, which came before each sequence's next position.
    for (int64_t b = 0; b < I.batch; ++b) {
      last_position = std::max(last_position, I.next_positions[b] - 1);
    }
    I.ensure_rope(last_position + 1);
    positions = positions_in.to(I.device, at::kLong, /*non_blocking=*/true);
    // Every sequence's new K/V are matched against the shared tables at once
    // (one product per step, not one per sequence); each sequence then appends
    // its columns. What is the same for every sequence is made once.
    detail::SharedMatch key_match, value_match;
    const bool token_ids = I.token_id_layer[layer];
    // On a GPU, one kernel codes every sequence's new token (decode_kernels.cuh).
    const bool fused_append =
        t == 1 && !token_ids && I.params.fused_decode &&
        detail::fused_append_applies(
            I.params.codebook, I.key_coders[layer] != nullptr || I.value_coders[layer] != nullptr,
            I.params.storage_dtype, I.key_tables[layer], I.value_tables[layer], I.device, kv, d);
    std::vector<SequenceLayer*> appended;  // by fused_append, after the loop
    if (!token_ids && !fused_append) {
      auto columns = [&](const at::Tensor& x) {  // [B, kv, t, d] -> [kv, B * t, d]
        return x.to(I.device, at::kFloat).transpose(0, 1).reshape({kv, B * t, d});
      };
      const at::Tensor every = at::Tensor();  // every new row is valid
      key_match = detail::match_shared(columns(keys_pre_rope), every, I.key_tables[layer],
                                       I.params.codebook);
      value_match =
          detail::match_shared(columns(values_in), every, I.value_tables[layer], I.params.codebook);
      // Exact rows as they come, for every sequence at once, where no
      // just-in-time stage changes which vectors stay exact.
      // (Rows a codec holds are coded on the host's schedule instead.)
      if (I.params.codebook == CodebookMode::kNone ||
          I.params.codebook == CodebookMode::kCalibrated) {
        const at::ScalarType entry = detail::entry_scalar_type(I.params.storage_dtype);
        if (!I.key_coders[layer]) key_match.prepare_exact_rows(B, entry);
        if (!I.value_coders[layer]) value_match.prepare_exact_rows(B, entry);
      }
    }
    const at::Tensor new_positions =
        fused_append ? at::Tensor() : positions.to(at::kInt);  // [B, t]
    at::Tensor member_ones;  // [heads, t], made when a sequence has a membership mask
    for (int64_t b = 0; b < B; ++b) {
      SequenceLayer& S = I.slot(b, layer);
      if (!S.filled) {  // decoding from an empty cache
        S.positions = at::empty({kv, 0}, positions.options().dtype(at::kInt));
        S.keys = I.empty_coded(true, layer);
        S.values = I.empty_coded(false, layer);
        S.filled = true;
      }
      if (fused_append) {
        S.tokens_seen += t;
        appended.push_back(&S);
        layers.push_back(&S);
        continue;
      }
      S.positions = detail::append_columns(S.positions_buffer, S.positions,
                                           new_positions[b].unsqueeze(0).expand({kv, t}));
      if (S.member.defined()) {
        if (!member_ones.defined()) member_ones = at::ones({heads, t}, S.member.options());
        S.member = detail::append_columns(S.member_buffer, S.member, member_ones);
      }
      if (token_ids) {
        SKV_CHECK(I.pending_tokens.defined() && I.pending_tokens.dim() == 2 &&
                      I.pending_tokens.size(0) == B && I.pending_tokens.size(1) == t,
                  "layer ", layer, " is held as token ids: call observe_tokens([", B, ", ", t,
                  "] ids) before append_and_attend");
        I.append_token_ids(layer, S, I.pending_tokens[b], keys_pre_rope[b].to(I.device),
                           values_in[b].to(I.device));
      } else {
        detail::append_matched(S.keys, key_match.columns(b, t), I.key_tables[layer],
                               I.params.codebook, extend, /*defer_counts=*/true);
        detail::append_matched(S.values, value_match.columns(b, t), I.value_tables[layer],
                               I.params.codebook, extend, /*defer_counts=*/true);
      }
      S.tokens_seen += t;
      layers.push_back(&S);
    }
    if (fused_append) {
      detail::fused_append(appended, I.key_tables[layer], I.value_tables[layer], I.params.codebook,
                           extend, keys_pre_rope, values_in, positions, heads);
    }
  }
  RECORD_USER_SCOPE("spindlekv::decode_attend");
  if (t == 1 && I.params.fused_decode &&
      detail::fused_decode_applies(layers, I.key_tables[layer], I.value_tables[layer], I.device,
                                   heads, d)) {
    return detail::fused_decode_attention(layers, I.key_tables[layer], I.value_tables[layer],
                                          queries, positions, I.rope_cos, I.rope_sin,
                                          I.geometry.sliding_window);
  }
  // The value codebook widened to float32 once for the batch, not once per
  // sequence (weighted_sum widens a narrower table slice by slice).
  detail::CodebookTables value_table = I.value_tables[layer];
  if (B > 1 && value_table.calibrated.defined() &&
      value_table.calibrated.scalar_type() != at::kFloat) {
    value_table.calibrated = value_table.calibrated.to(at::kFloat);
  }
  std::vector<at::Tensor> outputs;
  for (int64_t b = 0; b < B; ++b) {
    const SequenceLayer& S = *layers[b];
    at::Tensor pos_b = positions[b];
    at::Tensor K = detail::reconstruct_rotated(S.keys, I.key_tables[layer], S.positions, I.rope_cos,
                                               I.rope_sin, &I.workspace);
    const int64_t n = K.size(1);
    at::Tensor q = queries[b].to(I.device, at::kFloat).reshape({kv, group * t, d});
    at::Tensor scores = at::bmm(q, K.transpose(1, 2))
                            .mul_(1.0 / std::sqrt(static_cast<double>(d)))
                            .view({kv, group, t, n});
    at::Tensor kpos = S.positions.to(at::kLong).reshape({kv, 1, 1, n});
    at::Tensor qpos = pos_b.view({1, 1, t, 1});
    at::Tensor visible = (kpos >= 0) & (kpos <= qpos);
    if (I.geometry.sliding_window > 0)
      visible = visible & (kpos > qpos - I.geometry.sliding_window);
    if (S.member.defined()) visible = visible & S.member.reshape({kv, group, 1, n});
    scores.masked_fill_(visible.logical_not(), -std::numeric_limits<float>::infinity());
    at::Tensor probs = at::softmax(scores, -1).view({kv, group * t, n});
    // Values are never rebuilt: probabilities are summed per entry first.
    outputs.push_back(
        detail::weighted_sum(S.values, value_table, probs, &I.workspace).view({heads, t, d}));
  }
  return at::stack(outputs, 0);
}

void CompressedCache::advance(int64_t tokens) {
  for (int64_t& p : impl_->next_positions) p += tokens;
  impl_->pending_tokens = at::Tensor();
}

}  // namespace spindlekv
