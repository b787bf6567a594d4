// Codebook replacement of K/V vectors (SpindleKV stage 2): each vector x is
// split into its magnitude ||x|| and direction x / ||x||; a direction whose
// cosine similarity with a codebook entry exceeds the threshold is replaced
// by that entry's index, so x is stored as (index, magnitude) and rebuilt as
// entry[index] * magnitude.
//
// Two ways to get entries:
//   - a calibrated codebook (trained offline, shared by all requests):
//     assignment is a nearest-neighbour search, O(n * K);
//   - the paper's just-in-time builder (Algorithm 1), per input: greedy cover
//     of the similarity graph G = (cos > threshold).
//
// Shapes, float32 on any device: directions [n, head_dim] with unit rows (or
// zero rows for zero vectors); codebook [K, head_dim] with unit rows.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace spindlekv {

/// Where the stage-2 codebook entries come from.
enum class CodebookMode {
  kNone,        ///< no replacement: kept vectors stay exact (eviction only)
  kCalibrated,  ///< the artifact's codebook; vectors with no entry above theta stay exact
  kJustInTime,  ///< the paper: Algorithm 1 on each input at prefill, extended while decoding
  kHybrid,      ///< calibrated first, just-in-time for the vectors it misses
};

const char* to_string(CodebookMode mode);
/// Parses "none|calibrated|jit|hybrid"; throws naming the allowed values.
CodebookMode parse_codebook_mode(const std::string& name);

/// Unit rows of `vectors` [n, d]; zero rows stay zero (no direction). The
/// one definition of a direction: the trainer, the capture statistics and
/// the cache all use it.
at::Tensor unit_directions(const at::Tensor& vectors);

/// Splits `vectors` [n, d] into unit directions [n, d] and magnitudes [n].
/// Zero vectors have no direction: their direction row stays zero and their
/// magnitude is 0, so no entry ever matches them (they are kept exact).
std::pair<at::Tensor, at::Tensor> split_magnitude(const at::Tensor& vectors);

struct CodebookAssignment {
  at::Tensor index;       ///< [n] int64: nearest entry, or -1 when none is above the threshold
  at::Tensor similarity;  ///< [n] float32: cosine similarity with the nearest entry
};

/// Nearest entry of `codebook` [K, d] for each row of `directions` [n, d];
/// index -1 where the best cosine is not above `threshold` (or K = 0).
CodebookAssignment assign_to_codebook(const at::Tensor& directions, const at::Tensor& codebook,
                                      double threshold);

/// Fraction of the rows of `vectors` [n, d] (any norm) that the codebook
/// [K, d] covers: assign_to_codebook finds an entry above `threshold`. Zero
/// rows are never covered; 0 for n = 0. Works through n in blocks.
double codebook_coverage(const at::Tensor& codebook, const at::Tensor& vectors, double threshold);

struct JitCodebook {
  at::Tensor entries;  ///< [J, d] float32 unit rows: the chosen directions
  at::Tensor index;    ///< [n] int64 into entries; -1 for zero vectors
};

/// Algorithm 1 (greedy cover). Repeat until no vertex remains: pick the
/// remaining vertex with the most remaining neighbours (ties: lowest index);
/// its direction becomes an entry, and it and its remaining neighbours point
/// to it and leave the graph. A vertex always covers itself, so every
/// non-zero vector gets an entry. G is built on the directions' device in
/// blocked matrix products and read back to the host once, as bits (n^2 / 8
/// bytes); the cover then runs on the host with no device round trip per
/// pick: degrees are decremented as vertices leave (O(edges + n^2 / 64)) and
/// the next pick scans one best vertex per 64 (O(n / 64) per pick, plus 64
/// per block whose vertices changed).
JitCodebook build_jit_codebook(const at::Tensor& directions, double threshold);

/// build_jit_codebook on G sets of directions at once (a KV cache's heads).
struct JitCodebooks {
  at::Tensor entries;          ///< [J_0 + ... + J_{G-1}, d] float32 unit rows, set by set
  std::vector<int64_t> first;  ///< [G + 1]: set g's entries are rows first[g] .. first[g + 1]
  at::Tensor index;            ///< [G, n] int64 into set g's own entries; -1 for zero
                               ///< vectors and for rows at or past lengths[g]
};

/// Algorithm 1 on each set g: the leading `lengths[g]` rows of
/// `directions[g]` ([G, n, d] float32, unit or zero rows; the rows past
/// lengths[g] are ignored, whatever they hold). Set g's entries and index
/// are build_jit_codebook's on those rows. On a device, the G similarity
/// graphs are built in batched blocked products and read back together (as
/// many sets at a time as fit in 256 MiB of bits), and the covers run in
/// parallel on the host; on the CPU, set by set.
JitCodebooks build_jit_codebooks(const at::Tensor& directions, const std::vector<int64_t>& lengths,
                                 double threshold);

}  // namespace spindlekv
