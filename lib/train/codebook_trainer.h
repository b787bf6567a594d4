// Learns a codebook of unit directions that covers a set of K or V vectors:
// a vector is covered when its best codeword has cosine similarity above the
// threshold (the paper's theta_K = 0.98 for keys, theta_V = 0.95 for values).
// The objective is coverage for as few codewords as possible.
//
// FAISS does the heavy lifting:
//   1. spherical k-means (faiss::Clustering, inner product) proposes centroids;
//   2. the paper's greedy cover (the runtime's build_jit_codebook, Algorithm 1)
//      on a sample proposes the vectors with the most neighbours above the
//      threshold;
//   3. from those candidates a greedy selection keeps, one at a time, the
//      codeword that covers the most still-uncovered vectors;
//   4. merging rounds: codewords closer than merge_threshold are merged, each
//      codeword is re-centred on the vectors it covers, codewords covering
//      fewer than min_support vectors are dropped; rounds repeat while
//      coverage improves.
// Codewords come out ordered by support (most vectors first), so the first k
// rows are the best codebook of size k.
//
// Shapes: vectors [n, dim] float32 (any norm; zero rows have no direction and
// are never covered); codewords [K, dim] float32 unit rows.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

#include "runtime/codebook_builder.h"
#include "runtime/paper_defaults.h"

namespace spindlekv {

struct CodebookTrainingParameters {
  double threshold = paper::kKeyThreshold;  ///< cosine above which a codeword covers a vector
  int64_t max_codewords = 1024;             ///< upper bound on the codebook size
  /// Spherical k-means centroids proposed as candidates (0: max_codewords).
  int64_t kmeans_centroids = 0;
  int64_t kmeans_iterations = 20;
  /// Vectors the greedy cover's similarity graph is built on (n^2 bits).
  int64_t greedy_sample = 4096;
  /// Vectors the selection and merging rounds work on (a uniform sample);
  /// support and coverage are then measured on all vectors. Keeps the cost
  /// beyond k-means small (bench/codebook_bench).
  int64_t selection_sample = 16384;
  /// Greedy-cover candidates proposed (0: max_codewords).
  int64_t greedy_candidates = 0;
  double merge_threshold = 0.995;  ///< codewords closer than this are merged
  int64_t min_support = 2;         ///< codewords covering fewer vectors are dropped
  int64_t max_rounds = 2;          ///< merging / re-centring rounds
  uint64_t seed = 1234;
};

struct Codebook {
  at::Tensor codewords;  ///< [K, dim] float32, unit rows, by descending support
  at::Tensor support;    ///< [K] int64: training vectors each codeword covers (best match)
  double coverage = 0;   ///< on the training vectors
  int64_t rounds = 0;    ///< merging rounds run
};

/// Trains a codebook on `vectors`. Deterministic for a fixed seed and thread count.
Codebook train_codebook(const at::Tensor& vectors, const CodebookTrainingParameters& params);

/// Coverage (runtime's codebook_coverage) by the first k codewords for every
/// k in `sizes`, in one pass.
std::vector<double> coverage_curve(const at::Tensor& codewords, const at::Tensor& vectors,
                                   double threshold, const std::vector<int64_t>& sizes);

}  // namespace spindlekv
