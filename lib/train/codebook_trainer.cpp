#include "train/codebook_trainer.h"

#include <ATen/ATen.h>
#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <faiss/impl/AuxIndexStructures.h>

#include <algorithm>
#include <numeric>
#include <queue>
#include <random>

#include "core/error.h"

namespace spindlekv {
namespace {

using Lists = std::vector<std::vector<int64_t>>;

const float* fptr(const at::Tensor& t) { return t.data_ptr<float>(); }

// For every row of `queries`, the rows of `base` with inner product > radius.
Lists range_lists(const at::Tensor& base, const at::Tensor& queries, double radius) {
  faiss::IndexFlatIP index(base.size(1));
  index.add(base.size(0), fptr(base));
  faiss::RangeSearchResult res(queries.size(0));
  index.range_search(queries.size(0), fptr(queries), static_cast<float>(radius), &res);
  Lists out(queries.size(0));
  for (int64_t q = 0; q < queries.size(0); ++q) {
    out[q].assign(res.labels + res.lims[q], res.labels + res.lims[q + 1]);
  }
  return out;
}

// Best codeword per vector: (index [n] int64, cosine [n] float32).
std::pair<at::Tensor, at::Tensor> best_match(const at::Tensor& codewords, const at::Tensor& unit) {
  const int64_t n = unit.size(0);
  at::Tensor idx = at::full({n}, -1, at::kLong);
  at::Tensor sim = at::full({n}, -2.0f, at::kFloat);
  if (codewords.size(0) == 0 || n == 0) return {idx, sim};
  faiss::IndexFlatIP index(codewords.size(1));
  index.add(codewords.size(0), fptr(codewords));
  std::vector<faiss::Index::idx_t> labels(n);
  index.search(n, fptr(unit), 1, sim.data_ptr<float>(), labels.data());
  std::copy(labels.begin(), labels.end(), idx.data_ptr<int64_t>());
  return {idx, sim};
}

// Lazy greedy maximum coverage: picks, one at a time, the candidate whose
// list holds the most still-uncovered items, until `max_picks` or no
// candidate adds `min_gain` items. `covered` is updated in place.
std::vector<int64_t> greedy_max_cover(const Lists& lists, std::vector<char>& covered,
                                      int64_t max_picks, int64_t min_gain) {
  std::priority_queue<std::pair<int64_t, int64_t>> queue;  // (gain bound, -candidate)
  for (int64_t c = 0; c < static_cast<int64_t>(lists.size()); ++c) {
    queue.push({static_cast<int64_t>(lists[c].size()), -c});
  }
  std::vector<int64_t> picked;
  while (!queue.empty() && static_cast<int64_t>(picked.size()) < max_picks) {
    auto [bound, neg] = queue.top();
    queue.pop();
    const int64_t c = -neg;
    int64_t gain = 0;
    for (int64_t i : lists[c]) gain += !covered[i];
    if (gain < min_gain) continue;
    if (!queue.empty() && gain < queue.top().first) {
      queue.push({gain, neg});  // stale bound: re-queue with the true gain
      continue;
    }
    for (int64_t i : lists[c]) covered[i] = 1;
    picked.push_back(c);
  }
  return picked;
}

at::Tensor kmeans_candidates(const at::Tensor& unit, int64_t k,
                             const CodebookTrainingParameters& p) {
  k = std::min<int64_t>(k, unit.size(0));
  if (k <= 0) return at::empty({0, unit.size(1)}, at::kFloat);
  faiss::ClusteringParameters cp;
  cp.niter = static_cast<int>(p.kmeans_iterations);
  cp.spherical = true;
  cp.seed = static_cast<int>(p.seed % 2147483647u);
  cp.verbose = false;
  cp.min_points_per_centroid = 1;        // small captures are fine
  cp.max_points_per_centroid = 1 << 20;  // we sample ourselves
  faiss::Clustering clus(static_cast<int>(unit.size(1)), static_cast<size_t>(k), cp);
  faiss::IndexFlatIP index(unit.size(1));
  clus.train(unit.size(0), fptr(unit), index);
  at::Tensor c = at::from_blob(clus.centroids.data(), {k, unit.size(1)}, at::kFloat).clone();
  return unit_directions(c);
}

// Up to `limit` rows of `unit`, uniformly at random, in their original order.
at::Tensor sample_of(const at::Tensor& unit, int64_t limit, std::mt19937_64& rng) {
  if (unit.size(0) <= limit) return unit;
  std::vector<int64_t> idx(unit.size(0));
  std::iota(idx.begin(), idx.end(), 0);
  std::shuffle(idx.begin(), idx.end(), rng);
  idx.resize(limit);
  std::sort(idx.begin(), idx.end());
  return unit.index_select(0, at::tensor(idx, at::kLong)).contiguous();
}

// The paper's greedy cover (Algorithm 1, the runtime's just-in-time builder)
// on a sample of the vectors: its first entries are the vertices of the
// similarity graph G = (cos > threshold) with the most neighbours.
at::Tensor greedy_cover_candidates(const at::Tensor& unit, int64_t max_candidates,
                                   const CodebookTrainingParameters& p, std::mt19937_64& rng) {
  const at::Tensor entries =
      build_jit_codebook(sample_of(unit, p.greedy_sample, rng), p.threshold).entries;
  return entries.narrow(0, 0, std::min<int64_t>(max_candidates, entries.size(0))).contiguous();
}

// Greedy selection among candidates of at most `slots` codewords that cover
// the most vectors of `unit` not yet covered by `kept`. `covered` (one flag
// per vector) says which `kept` already covers and is updated.
at::Tensor select_codewords(const at::Tensor& kept, const at::Tensor& candidates,
                            const at::Tensor& unit, int64_t slots, std::vector<char>& covered,
                            const CodebookTrainingParameters& p) {
  if (slots <= 0 || candidates.size(0) == 0) return kept;
  // Only uncovered vectors can add coverage: search among them alone.
  std::vector<int64_t> open;
  for (int64_t i = 0; i < unit.size(0); ++i) {
    if (!covered[i]) open.push_back(i);
  }
  if (open.empty()) return kept;
  at::Tensor open_idx = at::tensor(open, at::kLong);
  const Lists local =
      range_lists(unit.index_select(0, open_idx).contiguous(), candidates, p.threshold);
  std::vector<char> local_covered(open.size(), 0);
  std::vector<int64_t> picked = greedy_max_cover(local, local_covered, slots, p.min_support);
  for (size_t j = 0; j < open.size(); ++j) covered[open[j]] = covered[open[j]] || local_covered[j];
  at::Tensor chosen = candidates.index_select(0, at::tensor(picked, at::kLong));
  return kept.size(0) > 0 ? at::cat({kept, chosen}, 0).contiguous() : chosen.contiguous();
}

double mean_of(const std::vector<char>& flags) {
  return flags.empty()
             ? 0.0
             : static_cast<double>(std::count(flags.begin(), flags.end(), 1)) / flags.size();
}

// One merging round: re-centre each codeword on the vectors it covers, merge
// codewords closer than merge_threshold, drop those with too little support.
at::Tensor merge_round(const at::Tensor& codewords, const at::Tensor& unit,
                       const CodebookTrainingParameters& p) {
  auto [idx, sim] = best_match(codewords, unit);
  const int64_t K = codewords.size(0), d = codewords.size(1);
  at::Tensor covered = sim > p.threshold;
  at::Tensor owner = idx.masked_select(covered);
  at::Tensor members = unit.index_select(0, covered.nonzero().view({-1}));
  at::Tensor sums = at::zeros({K, d}, at::kFloat).index_add_(0, owner, members);
  at::Tensor support = at::zeros({K}, at::kLong).index_add_(0, owner, at::ones_like(owner));
  // Re-centre where there are members; keep the old direction elsewhere.
  at::Tensor centred = at::where(support.unsqueeze(1) > 0, unit_directions(sums), codewords);

  // Merge: union of codewords whose directions are within merge_threshold.
  const Lists close = range_lists(centred, centred, p.merge_threshold);
  std::vector<int64_t> parent(K);
  std::iota(parent.begin(), parent.end(), 0);
  std::function<int64_t(int64_t)> find = [&](int64_t x) {
    return parent[x] == x ? x : parent[x] = find(parent[x]);
  };
  for (int64_t a = 0; a < K; ++a) {
    for (int64_t b : close[a]) parent[find(a)] = find(b);
  }
  at::Tensor group = at::empty({K}, at::kLong);
  for (int64_t a = 0; a < K; ++a) group[a] = find(a);
  at::Tensor weight = support.to(at::kFloat).clamp_min(1e-3).unsqueeze(1);
  at::Tensor merged_sum = at::zeros({K, d}, at::kFloat).index_add_(0, group, centred * weight);
  at::Tensor merged_support = at::zeros({K}, at::kLong).index_add_(0, group, support);
  at::Tensor roots = (group == at::arange(K, at::kLong)).nonzero().view({-1});
  at::Tensor keep = roots.masked_select(merged_support.index_select(0, roots) >= p.min_support);
  return unit_directions(merged_sum.index_select(0, keep)).contiguous();
}

// Support per codeword and codewords ordered by it.
Codebook finalize(const at::Tensor& codewords, const at::Tensor& unit, double threshold) {
  Codebook cb;
  auto [idx, sim] = best_match(codewords, unit);
  at::Tensor covered = sim > threshold;
  at::Tensor support = at::zeros({codewords.size(0)}, at::kLong)
                           .index_add_(0, idx.masked_select(covered),
                                       at::ones({covered.sum().item<int64_t>()}, at::kLong));
  at::Tensor order = support.argsort(0, /*descending=*/true);
  cb.codewords = codewords.index_select(0, order).contiguous();
  cb.support = support.index_select(0, order);
  cb.coverage = unit.size(0) > 0 ? covered.to(at::kDouble).mean().item<double>() : 0.0;
  return cb;
}

}  // namespace

Codebook train_codebook(const at::Tensor& vectors, const CodebookTrainingParameters& p) {
  SKV_CHECK_EQ(vectors.dim(), 2, "codebook training expects vectors [n, dim]");
  SKV_CHECK(p.threshold > -1 && p.threshold < 1, "threshold must lie in (-1, 1), got ",
            p.threshold);
  SKV_CHECK_GT(p.max_codewords, 0, "max_codewords must be positive");
  SKV_CHECK(at::isfinite(vectors).all().item<bool>(), "vectors contain NaN or Inf");
  at::Tensor all = unit_directions(vectors.to(at::kCPU, at::kFloat));
  // Zero vectors have no direction: they can never be covered, and would
  // only pull k-means centroids towards the origin.
  at::Tensor nonzero = (vectors.to(at::kCPU).norm(2, 1) > 0).nonzero().view({-1});
  at::Tensor unit = all.index_select(0, nonzero).contiguous();
  std::mt19937_64 rng(p.seed);
  const int64_t K = p.max_codewords;
  if (unit.size(0) == 0) {
    Codebook empty;
    empty.codewords = at::empty({0, vectors.size(1)}, at::kFloat);
    empty.support = at::empty({0}, at::kLong);
    return empty;
  }

  at::Tensor candidates = at::cat(
      {kmeans_candidates(unit, p.kmeans_centroids > 0 ? p.kmeans_centroids : K, p),
       greedy_cover_candidates(unit, p.greedy_candidates > 0 ? p.greedy_candidates : K, p, rng)},
      0);
  // Selection and merging work on a sample; finalize() measures on all.
  const at::Tensor work = sample_of(unit, p.selection_sample, rng);
  std::vector<char> covered(work.size(0), 0);
  at::Tensor codewords =
      select_codewords(at::empty({0, unit.size(1)}, at::kFloat), candidates, work, K, covered, p);
  double best = mean_of(covered);
  at::Tensor best_codewords = codewords;
  int64_t rounds = 0;
  for (int64_t r = 0; r < p.max_rounds && codewords.size(0) > 0; ++r) {
    ++rounds;
    at::Tensor merged = merge_round(codewords, work, p);
    at::Tensor sim = best_match(merged, work).second;
    auto acc = sim.accessor<float, 1>();
    for (int64_t i = 0; i < work.size(0); ++i) covered[i] = acc[i] > p.threshold;
    // Refill the slots merging freed from the vectors still uncovered.
    const int64_t slots = K - merged.size(0);
    if (slots > 0) {
      at::Tensor uncovered =
          work.index_select(0, (sim <= p.threshold).nonzero().view({-1})).contiguous();
      if (uncovered.size(0) > 0) {
        at::Tensor fresh = greedy_cover_candidates(uncovered, slots, p, rng);
        merged = select_codewords(merged, fresh, work, slots, covered, p);
      }
    }
    const double cov = mean_of(covered);
    codewords = merged;
    if (cov <= best + 1e-6 && merged.size(0) >= best_codewords.size(0)) break;
    if (cov >= best - 1e-6) {
      best = cov;
      best_codewords = merged;
    }
  }
  Codebook cb = finalize(best_codewords, all, p.threshold);
  cb.rounds = rounds;
  return cb;
}

std::vector<double> coverage_curve(const at::Tensor& codewords, const at::Tensor& vectors,
                                   double threshold, const std::vector<int64_t>& sizes) {
  std::vector<double> out;
  if (vectors.size(0) == 0) return std::vector<double>(sizes.size(), 0.0);
  // Index of the first codeword (in order) above the threshold, per vector:
  // a vector is covered by the first k codewords iff that index is < k.
  // Blocks of rows bound the [rows, K] similarity matrix.
  at::Tensor unit = unit_directions(vectors);
  const int64_t K = codewords.size(0);
  std::vector<int64_t> hits(sizes.size(), 0);
  for (int64_t start = 0; start < unit.size(0); start += 8192) {
    const int64_t n = std::min<int64_t>(8192, unit.size(0) - start);
    at::Tensor above = at::matmul(unit.narrow(0, start, n), codewords.t()) > threshold;  // [n, K]
    at::Tensor first =
        at::where(above.any(1), above.to(at::kFloat).argmax(1), at::full({n}, K, at::kLong));
    for (size_t i = 0; i < sizes.size(); ++i) hits[i] += (first < sizes[i]).sum().item<int64_t>();
  }
  for (int64_t h : hits) out.push_back(static_cast<double>(h) / unit.size(0));
  return out;
}

}  // namespace spindlekv
