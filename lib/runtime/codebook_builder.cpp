#include "runtime/codebook_builder.h"
#include "runtime/detail/host_transfer.h"
#include "runtime/detail/jit_reference.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/error.h"

namespace spindlekv {

namespace {

// Packs `above` [G, rows, n] bool, rows start.. of each graph, into `packed`
// [G, n, words * 8] uint8 on the CPU with a loop on the host. Bit k of byte b
// of row i: column 8 b + k; no self-loops.
void pack_on_host(const at::Tensor& above, int64_t start, at::Tensor& packed) {
  const int64_t G = above.size(0), rows = above.size(1), n = above.size(2);
  const int64_t bytes = packed.size(2);
  const at::Tensor above_cpu = above.is_cpu() ? above : detail::read_back(above);
  const bool* a = above_cpu.data_ptr<bool>();
  uint8_t* base = packed.data_ptr<uint8_t>();
  at::parallel_for(0, G * rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t gr = begin; gr < end; ++gr) {
      const int64_t g = gr / rows, r = gr % rows;
      const bool* in = a + gr * n;
      uint8_t* o = base + (g * n + start + r) * bytes;
      for (int64_t j = 0; j < n; ++j) o[j >> 3] |= static_cast<uint8_t>(in[j]) << (j & 7);
      const int64_t self = start + r;
      o[self >> 3] &= static_cast<uint8_t>(~(1u << (self & 7)));
    }
  });
}

// The same packing as tensor operations on `above`'s device, into `packed`
// on that device.
void pack_with_tensor_ops(at::Tensor above, int64_t start, at::Tensor& packed) {
  const int64_t G = above.size(0), rows = above.size(1), n = above.size(2);
  const int64_t bytes = packed.size(2);
  const at::Tensor r = at::arange(rows, above.options().dtype(at::kLong));
  above.view({G, rows * n}).index_fill_(1, r * n + (r + start), false);
  const at::Tensor b = at::constant_pad_nd(above.to(at::kByte), {0, bytes * 8 - n})
                           .view({G, rows, bytes, 8});  // [G, rows, byte, bit]
  at::Tensor out = packed.narrow(1, start, rows);
  out.copy_(b.select(3, 0));
  for (int64_t k = 1; k < 8; ++k) out.bitwise_or_(b.select(3, k).__lshift__(k));
}

}  // namespace

at::Tensor similarity_bits(const at::Tensor& unit, double threshold, int64_t block_rows,
                           BitPacking packing) {
  SKV_CHECK(unit.dim() == 2 || unit.dim() == 3, "directions must be [n, d] or [G, n, d], got ",
            unit.sizes());
  const bool batched = unit.dim() == 3;
  const at::Tensor u = batched ? unit.contiguous() : unit.unsqueeze(0).contiguous();
  const int64_t G = u.size(0), n = u.size(1), words = (n + 63) / 64;
  if (n == 0 || G == 0) {
    return batched ? at::empty({G, n, 0}, at::kByte) : at::empty({0, 0}, at::kByte);
  }
  const bool on_host =
      packing == BitPacking::kHostLoop || (packing == BitPacking::kAuto && u.is_cpu());
  // A block's similarities: about 2^26 floats on a device; on the host 2^22,
  // so the temporaries stay below malloc's mmap threshold and are reused
  // instead of being faulted in afresh for every block.
  const int64_t block =
      block_rows > 0
          ? block_rows
          : std::max<int64_t>(64, (int64_t{1} << (on_host ? 22 : 26)) / (G * words * 64));
  at::Tensor packed = at::zeros({G, n, words * 8}, on_host ? at::TensorOptions().dtype(at::kByte)
                                                           : u.options().dtype(at::kByte));
  const at::Tensor ut = u.transpose(1, 2);
  for (int64_t start = 0; start < n; start += block) {
    const int64_t rows = std::min(block, n - start);
    const at::Tensor a = u.narrow(1, start, rows);
    // One set: the plain product, as build_jit_codebook always computed it.
    const at::Tensor sims = G == 1 ? at::mm(a[0], ut[0]).unsqueeze(0) : at::bmm(a, ut);
    at::Tensor above = (sims > threshold).contiguous();
    on_host ? pack_on_host(above, start, packed) : pack_with_tensor_ops(above, start, packed);
  }
  if (!on_host) packed = detail::read_back(packed);
  return batched ? packed : packed[0];
}

namespace {

void check_directions(const at::Tensor& directions) {
  SKV_CHECK_EQ(directions.dim(), 2, "directions must be [n, head_dim]");
  SKV_CHECK(directions.scalar_type() == at::kFloat, "directions must be float32, got ",
            at::toString(directions.scalar_type()));
}

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the similarity graph's bytes are read back as little-endian 64-bit words");

// One similarity graph's rows as bitsets on the host (similarity_bits):
// `n` rows of `words` little-endian 64-bit words from `rows`.
struct BitGraph {
  const uint64_t* rows;
  int64_t n, words;
  const uint64_t* row(int64_t i) const { return rows + i * words; }
};

// Algorithm 1 on graph `g` over the vertices with alive[i] != 0: index[i]
// gets the entry covering vertex i (-1 for the others), picked the vertex
// each entry is.
void greedy_cover(const BitGraph& g, const uint8_t* alive_init, int64_t* index,
                  std::vector<int64_t>& picked) {
  const int64_t n = g.n;
  // remaining[] as bits too, so a row's remaining neighbours are word ANDs.
  std::vector<uint64_t> remaining(static_cast<size_t>(g.words), 0);
  std::vector<int64_t> degree(n, 0);
  int64_t left = 0;
  for (int64_t i = 0; i < n; ++i) {
    index[i] = -1;
    if (alive_init[i]) remaining[i / 64] |= uint64_t{1} << (i % 64), ++left;
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!alive_init[i]) continue;
    const uint64_t* row = g.row(i);
    int64_t d = 0;
    for (int64_t w = 0; w < g.words; ++w) d += __builtin_popcountll(row[w] & remaining[w]);
    degree[i] = d;
  }
  std::vector<int64_t> removed;
  // The next pick: the vertices in blocks of 64 (one word of `remaining`),
  // each with its best vertex (most remaining neighbours, ties: the lowest
  // index; -1 when the block is empty). A pick scans the n / 64 block bests
  // in order; only blocks whose vertices left or lost neighbours are
  // rescanned after it.
  std::vector<int64_t> block_best(static_cast<size_t>(g.words), -1);
  std::vector<uint8_t> dirty(static_cast<size_t>(g.words), 1);
  const auto rescan = [&](int64_t w) {
    int64_t best = -1;
    for (uint64_t m = remaining[w]; m; m &= m - 1) {
      const int64_t i = w * 64 + __builtin_ctzll(m);
      if (best < 0 || degree[i] > degree[best]) best = i;
    }
    block_best[w] = best;
    dirty[w] = 0;
  };
  while (left > 0) {
    int64_t best = -1;
    for (int64_t w = 0; w < g.words; ++w) {
      if (dirty[w]) rescan(w);
      const int64_t i = block_best[w];
      if (i >= 0 && (best < 0 || degree[i] > degree[best])) best = i;
    }
    const int64_t entry = static_cast<int64_t>(picked.size());
    picked.push_back(best);
    removed.clear();
    removed.push_back(best);
    const uint64_t* row = g.row(best);
    for (int64_t w = 0; w < g.words; ++w) {
      uint64_t m = row[w] & remaining[w];
      while (m) {
        removed.push_back(w * 64 + __builtin_ctzll(m));
        m &= m - 1;
      }
    }
    for (int64_t r : removed) {
      index[r] = entry;
      remaining[r / 64] &= ~(uint64_t{1} << (r % 64));
      dirty[r / 64] = 1;
    }
    left -= static_cast<int64_t>(removed.size());
    // Every vertex still in the graph loses one neighbour per removed vertex
    // it was linked to: O(n / 64) words per removed vertex.
    for (int64_t r : removed) {
      const uint64_t* rr = g.row(r);
      for (int64_t w = 0; w < g.words; ++w) {
        uint64_t m = rr[w] & remaining[w];
        if (m) dirty[w] = 1;
        while (m) {
          --degree[w * 64 + __builtin_ctzll(m)];
          m &= m - 1;
        }
      }
    }
  }
}

// [rows..., n] of `unit` [..., n, d]: 1 where the row is not zero, on the host.
at::Tensor nonzero_rows(const at::Tensor& unit) {
  return detail::read_back((unit.abs().sum(-1) > 0).to(at::kByte));
}

JitCodebook finish(const at::Tensor& directions, const std::vector<int64_t>& picked,
                   const std::vector<int64_t>& index) {
  JitCodebook out;
  at::Tensor idx = detail::to_device(picked, at::kLong, directions.device());
  out.entries = directions.index_select(0, idx);
  out.index = detail::to_device(index, at::kLong, directions.device());
  return out;
}

}  // namespace

const char* to_string(CodebookMode m) {
  switch (m) {
    case CodebookMode::kNone:
      return "none";
    case CodebookMode::kCalibrated:
      return "calibrated";
    case CodebookMode::kJustInTime:
      return "jit";
    case CodebookMode::kHybrid:
      return "hybrid";
  }
  return "?";
}

CodebookMode parse_codebook_mode(const std::string& s) {
  if (s == "none") return CodebookMode::kNone;
  if (s == "calibrated") return CodebookMode::kCalibrated;
  if (s == "jit") return CodebookMode::kJustInTime;
  if (s == "hybrid") return CodebookMode::kHybrid;
  SKV_THROW(kInvalidInput, "codebook mode '", s,
            "' is unknown (allowed: none, calibrated, jit, hybrid)");
}

at::Tensor unit_directions(const at::Tensor& vectors) {
  at::Tensor mag = vectors.norm(2, -1, /*keepdim=*/true);
  return at::where(mag > 0, vectors / mag.clamp_min(1e-30), at::zeros_like(vectors)).contiguous();
}

std::pair<at::Tensor, at::Tensor> split_magnitude(const at::Tensor& vectors) {
  return {unit_directions(vectors), vectors.norm(2, -1)};
}

double codebook_coverage(const at::Tensor& codebook, const at::Tensor& vectors, double threshold) {
  const int64_t n = vectors.size(0);
  if (n == 0) return 0.0;
  const at::Tensor entries = codebook.to(vectors.device(), at::kFloat).contiguous();
  int64_t covered = 0;
  for (int64_t start = 0; start < n; start += 8192) {
    const int64_t rows = std::min<int64_t>(8192, n - start);
    at::Tensor dirs = unit_directions(vectors.narrow(0, start, rows).to(at::kFloat));
    covered += (assign_to_codebook(dirs, entries, threshold).index >= 0).sum().item<int64_t>();
  }
  return static_cast<double>(covered) / static_cast<double>(n);
}

CodebookAssignment assign_to_codebook(const at::Tensor& directions, const at::Tensor& codebook,
                                      double threshold) {
  check_directions(directions);
  const int64_t n = directions.size(0);
  CodebookAssignment a;
  if (codebook.size(0) == 0 || n == 0) {
    a.index = at::full({n}, -1, directions.options().dtype(at::kLong));
    a.similarity = at::zeros({n}, directions.options());
    return a;
  }
  SKV_CHECK_EQ(codebook.size(1), directions.size(1), "codebook and vectors differ in head_dim");
  auto [best, arg] = at::mm(directions, codebook.t()).max(1);
  a.similarity = best;
  a.index = at::where(best > threshold, arg, at::full_like(arg, -1));
  return a;
}

JitCodebook build_jit_codebook(const at::Tensor& directions, double threshold) {
  check_directions(directions);
  JitCodebooks b = build_jit_codebooks(directions.unsqueeze(0), {directions.size(0)}, threshold);
  return {b.entries, b.index[0]};
}

JitCodebooks build_jit_codebooks(const at::Tensor& directions, const std::vector<int64_t>& lengths,
                                 double threshold) {
  return build_jit_codebooks(directions, lengths, threshold, JitGraphs::kAuto, kJitGraphBytes);
}

JitCodebooks build_jit_codebooks(const at::Tensor& directions, const std::vector<int64_t>& lengths,
                                 double threshold, JitGraphs graphs, int64_t max_graph_bytes,
                                 bool skip_zero_rows) {
  SKV_CHECK_EQ(directions.dim(), 3, "directions must be [sets, n, head_dim]");
  SKV_CHECK(directions.scalar_type() == at::kFloat, "directions must be float32, got ",
            at::toString(directions.scalar_type()));
  const int64_t G = directions.size(0), n = directions.size(1), d = directions.size(2);
  SKV_CHECK_EQ(static_cast<int64_t>(lengths.size()), G, "one length per set of directions");
  for (int64_t len : lengths) {
    SKV_CHECK(len >= 0 && len <= n, "length ", len, " outside [0, ", n, "]");
  }
  // Alive: the non-zero rows in use.
  at::Tensor alive = skip_zero_rows ? nonzero_rows(directions)  // [G, n] on the host
                                    : at::ones({G, n}, at::kByte);
  uint8_t* a = alive.data_ptr<uint8_t>();
  for (int64_t g = 0; g < G; ++g) std::fill(a + g * n + lengths[g], a + (g + 1) * n, uint8_t{0});
  std::vector<int64_t> index(static_cast<size_t>(G * n), -1);
  std::vector<std::vector<int64_t>> picked(static_cast<size_t>(G));
  if (graphs == JitGraphs::kPerSet || (graphs == JitGraphs::kAuto && directions.is_cpu())) {
    // Set by set at its own length: a batched product would also multiply
    // the rows past the shorter sets' lengths, and saves nothing here.
    for (int64_t g = 0; g < G; ++g) {
      if (lengths[g] == 0) continue;
      const at::Tensor bits = similarity_bits(directions[g].narrow(0, 0, lengths[g]), threshold, 0);
      greedy_cover(BitGraph{reinterpret_cast<const uint64_t*>(bits.data_ptr<uint8_t>()), lengths[g],
                            bits.size(1) / 8},
                   a + g * n, index.data() + g * n, picked[g]);
    }
  } else {
    // On a device: the graphs of as many sets as fit in max_graph_bytes in
    // one batched product and one read-back, then their covers in parallel.
    int64_t m = 0;  // rows any set uses
    for (int64_t len : lengths) m = std::max(m, len);
    const at::Tensor used = directions.narrow(1, 0, m);
    const int64_t graph_bytes = std::max<int64_t>(1, m * ((m + 63) / 64) * 8);
    const int64_t per_chunk = std::max<int64_t>(1, max_graph_bytes / graph_bytes);
    for (int64_t g0 = 0; g0 < G && m > 0; g0 += per_chunk) {
      const int64_t sets = std::min(per_chunk, G - g0);
      const at::Tensor bits = similarity_bits(used.narrow(0, g0, sets), threshold, 0);
      const int64_t row_words = bits.size(2) / 8;
      const uint64_t* rows = reinterpret_cast<const uint64_t*>(bits.data_ptr<uint8_t>());
      at::parallel_for(0, sets, 1, [&](int64_t begin, int64_t end) {
        for (int64_t s = begin; s < end; ++s) {
          const int64_t g = g0 + s;
          greedy_cover(BitGraph{rows + s * m * row_words, m, row_words}, a + g * n,
                       index.data() + g * n, picked[g]);
        }
      });
    }
  }
  JitCodebooks out;
  out.first.assign(1, 0);
  std::vector<int64_t> flat;  // rows of directions [G * n, d]
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t p : picked[g]) flat.push_back(g * n + p);
    out.first.push_back(static_cast<int64_t>(flat.size()));
  }
  const at::Device device = directions.device();
  out.entries =
      directions.reshape({G * n, d}).index_select(0, detail::to_device(flat, at::kLong, device));
  out.index = detail::to_device(index, at::kLong, device).view({G, n});
  return out;
}

JitCodebook build_jit_codebook_naive(const at::Tensor& directions, double threshold) {
  check_directions(directions);
  const int64_t n = directions.size(0);
  at::Tensor unit = directions.to(at::kCPU).contiguous();
  at::Tensor graph = (at::mm(unit, unit.t()) > threshold).contiguous();
  graph.fill_diagonal_(false);
  const bool* G = graph.data_ptr<bool>();
  const at::Tensor nonzero = nonzero_rows(unit);
  std::vector<uint8_t> alive(nonzero.data_ptr<uint8_t>(), nonzero.data_ptr<uint8_t>() + n);
  std::vector<int64_t> index(n, -1), picked;
  for (;;) {
    int64_t best = -1, best_degree = -1;
    for (int64_t i = 0; i < n; ++i) {  // recount every degree: the printed algorithm
      if (!alive[i]) continue;
      int64_t d = 0;
      for (int64_t j = 0; j < n; ++j) d += alive[j] && G[i * n + j];
      if (d > best_degree) best = i, best_degree = d;
    }
    if (best < 0) break;
    const int64_t entry = static_cast<int64_t>(picked.size());
    picked.push_back(best);
    std::vector<int64_t> take{best};
    for (int64_t j = 0; j < n; ++j) {
      if (alive[j] && G[best * n + j]) take.push_back(j);
    }
    for (int64_t j : take) index[j] = entry, alive[j] = 0;
  }
  return finish(directions, picked, index);
}

}  // namespace spindlekv
