#include "runtime/codebook_builder.h"
#include "runtime/detail/jit_reference.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "core/error.h"

namespace spindlekv {
namespace {

void check_directions(const at::Tensor& directions) {
  SKV_CHECK_EQ(directions.dim(), 2, "directions must be [n, head_dim]");
  SKV_CHECK(directions.scalar_type() == at::kFloat, "directions must be float32, got ",
            at::toString(directions.scalar_type()));
}

// Rows of the similarity graph as bitsets, built a block of rows at a time so
// the float similarity matrix never exists whole. Zero rows have no edges.
struct BitGraph {
  int64_t n = 0;
  int64_t words = 0;
  std::vector<uint64_t> bits;
  bool edge(int64_t i, int64_t j) const { return (bits[i * words + j / 64] >> (j % 64)) & 1u; }
  const uint64_t* row(int64_t i) const { return bits.data() + i * words; }
};

BitGraph similarity_graph(const at::Tensor& unit, double threshold) {
  BitGraph g;
  g.n = unit.size(0);
  g.words = (g.n + 63) / 64;
  g.bits.assign(static_cast<size_t>(g.n * g.words), 0);
  const at::Tensor cpu = unit.to(at::kCPU).contiguous();
  const int64_t block = 1024;
  for (int64_t start = 0; start < g.n; start += block) {
    const int64_t rows = std::min(block, g.n - start);
    at::Tensor above = (at::mm(cpu.narrow(0, start, rows), cpu.t()) > threshold).contiguous();
    const bool* a = above.data_ptr<bool>();
    for (int64_t r = 0; r < rows; ++r) {
      uint64_t* out = g.bits.data() + (start + r) * g.words;
      for (int64_t j = 0; j < g.n; ++j) {
        if (a[r * g.n + j] && j != start + r) out[j / 64] |= uint64_t{1} << (j % 64);
      }
    }
  }
  return g;
}

std::vector<uint8_t> nonzero_rows(const at::Tensor& unit) {
  at::Tensor nz = (unit.to(at::kCPU).abs().sum(1) > 0).to(at::kByte).contiguous();
  const uint8_t* p = nz.data_ptr<uint8_t>();
  return std::vector<uint8_t>(p, p + unit.size(0));
}

JitCodebook finish(const at::Tensor& directions, const std::vector<int64_t>& picked,
                   const std::vector<int64_t>& index) {
  JitCodebook out;
  at::Tensor idx = at::tensor(picked, at::kLong).to(directions.device());
  out.entries = directions.index_select(0, idx);
  out.index = at::tensor(index, at::kLong).to(directions.device());
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
  const int64_t n = directions.size(0);
  const std::vector<uint8_t> alive_init = nonzero_rows(directions);
  const BitGraph g = similarity_graph(directions, threshold);
  // remaining[] as bits too, so a row's remaining neighbours are word ANDs.
  std::vector<uint64_t> remaining(static_cast<size_t>(g.words), 0);
  std::vector<int64_t> degree(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (alive_init[i]) remaining[i / 64] |= uint64_t{1} << (i % 64);
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!alive_init[i]) continue;
    const uint64_t* row = g.row(i);
    int64_t d = 0;
    for (int64_t w = 0; w < g.words; ++w) d += __builtin_popcountll(row[w] & remaining[w]);
    degree[i] = d;
  }
  std::vector<int64_t> index(n, -1), picked;
  std::vector<int64_t> removed;
  int64_t left = 0;
  for (uint8_t a : alive_init) left += a;
  while (left > 0) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; ++i) {
      if (((remaining[i / 64] >> (i % 64)) & 1u) && (best < 0 || degree[i] > degree[best]))
        best = i;
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
    }
    left -= static_cast<int64_t>(removed.size());
    // Every vertex still in the graph loses one neighbour per removed vertex
    // it was linked to: O(n / 64) words per removed vertex.
    for (int64_t r : removed) {
      const uint64_t* rr = g.row(r);
      for (int64_t w = 0; w < g.words; ++w) {
        uint64_t m = rr[w] & remaining[w];
        while (m) {
          --degree[w * 64 + __builtin_ctzll(m)];
          m &= m - 1;
        }
      }
    }
  }
  return finish(directions, picked, index);
}

JitCodebook build_jit_codebook_naive(const at::Tensor& directions, double threshold) {
  check_directions(directions);
  const int64_t n = directions.size(0);
  at::Tensor unit = directions.to(at::kCPU).contiguous();
  at::Tensor graph = (at::mm(unit, unit.t()) > threshold).contiguous();
  graph.fill_diagonal_(false);
  const bool* G = graph.data_ptr<bool>();
  std::vector<uint8_t> alive = nonzero_rows(unit);
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
