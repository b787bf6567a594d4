// How a compressed cache stores one layer (runtime/detail/compressed_storage.h):
// code widths and tensors that grow by a column per decode step.
#include "runtime/detail/compressed_storage.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/compressed_cache.h"
#include "runtime/detail/cache_access.h"
#include "runtime/detail/compressed_cache_impl.h"
#include "test_util.h"

namespace spindlekv {
namespace {

// Codes held as int16 widen to int32, keeping every code, once the caller's
// bounds leave int16: here the 32769th exact row of a head.
TEST(CompressedStorage, CodesWidenWhenTheyOutgrowSixteenBits) {
  detail::CodedVectors c = detail::empty_coded(1, 4, at::TensorOptions(), StorageDtype::kFloat16);
  ASSERT_EQ(c.code.scalar_type(), at::kShort);
  at::Tensor first =
      at::tensor({0L, -1L, -32768L, static_cast<int64_t>(detail::kZeroCode)}).view({1, 4});
  detail::append_codes(c, first, -32768, 0);
  EXPECT_EQ(c.code.scalar_type(), at::kShort);
  EXPECT_TRUE(at::equal(detail::codes_long(c), first));
  at::Tensor next = at::tensor({-32769L, 40000L}).view({1, 2});
  detail::append_codes(c, next, -32769, 40000);
  EXPECT_EQ(c.code.scalar_type(), at::kInt);
  EXPECT_TRUE(at::equal(detail::codes_long(c), at::cat({first, next}, 1)));
}

// The largest int16 is kZeroCode16, so a code bound reaching it widens.
TEST(CompressedStorage, CodesWidenWhenTheBoundReachesTheZeroCode) {
  detail::CodedVectors c = detail::empty_coded(1, 4, at::TensorOptions(), StorageDtype::kFloat16);
  at::Tensor codes = at::tensor({5L, 7L}).view({1, 2});
  detail::append_codes(c, codes, 0, detail::kZeroCode16 - 1);
  EXPECT_EQ(c.code.scalar_type(), at::kShort);
  detail::append_codes(c, codes, 0, detail::kZeroCode16);
  EXPECT_EQ(c.code.scalar_type(), at::kInt);
  EXPECT_TRUE(at::equal(detail::codes_long(c), at::cat({codes, codes}, 1)));
}

// The nearest entry, in blocks of directions or all at once, is the best
// of a plain product over the entries each head uses.
TEST(CompressedStorage, NearestEntryInBlocksEqualsOneProduct) {
  at::manual_seed(7);
  const int64_t kv = 2, n = 50, d = 8, K = 9;
  at::Tensor dirs = at::randn({kv, n, d});
  dirs = dirs / dirs.norm(2, -1, true);
  for (const bool shared : {true, false}) {
    at::Tensor table = at::randn({shared ? 1 : kv, K, d});
    table = table / table.norm(2, -1, true);
    const std::vector<int64_t> counts =
        shared ? std::vector<int64_t>{K} : std::vector<int64_t>{5, K};  // head 0: 5 in use
    at::Tensor expected_best = at::empty({kv, n}), expected_arg = at::empty({kv, n}, at::kLong);
    for (int64_t g = 0; g < kv; ++g) {
      const int64_t used = counts[shared ? 0 : g];
      auto [b, a] = at::mm(dirs[g], table[shared ? 0 : g].narrow(0, 0, used).t()).max(1);
      expected_best[g].copy_(b);
      expected_arg[g].copy_(a);
    }
    for (int64_t block : {0, 1, 7, 50, 64}) {
      auto [best, arg] = detail::nearest(dirs, table, counts, block);
      EXPECT_TRUE(at::equal(arg, expected_arg)) << "block " << block << ", shared " << shared;
      EXPECT_TRUE(at::allclose(best, expected_best, 1e-6, 1e-6))
          << "block " << block << ", shared " << shared;
    }
    // Narrower tables are widened to the directions' dtype.
    auto [best16, arg16] = detail::nearest(dirs, table.to(at::kHalf), counts, 7);
    EXPECT_TRUE(at::allclose(best16, expected_best, 2e-3, 2e-3));
    EXPECT_LT(arg16.narrow(1, 0, n).select(0, 0).max().item<int64_t>(), counts[0]);
  }
}

// One column at a time: the result equals at::cat, and until the capacity
// is reached every step writes into the same buffer (nothing held is copied).
TEST(CompressedStorage, AppendColumnsGrowsInPlaceUntilTheCapacityDoubles) {
  at::Tensor buffer;
  at::Tensor held = at::arange(6, at::kInt).view({2, 3});
  at::Tensor expected = held.clone();
  held = detail::append_columns(buffer, held, at::full({2, 1}, 100, at::kInt));
  expected = at::cat({expected, at::full({2, 1}, 100, at::kInt)}, 1);
  ASSERT_EQ(buffer.size(1), 16);  // at least 16 columns, else twice what it held
  const void* storage = buffer.data_ptr();
  int reallocations = 0;
  for (int step = 0; step < 40; ++step) {
    const at::Tensor column = at::full({2, 1}, step, at::kInt);
    const void* before = buffer.data_ptr();
    held = detail::append_columns(buffer, held, column);
    reallocations += buffer.data_ptr() != before;
    expected = at::cat({expected, column}, 1);
    ASSERT_TRUE(at::equal(held, expected)) << "step " << step;
    EXPECT_EQ(held.data_ptr(), buffer.data_ptr());
  }
  // 44 columns: capacity 16 -> 32 -> 64.
  EXPECT_EQ(reallocations, 2);
  EXPECT_EQ(buffer.size(1), 64);
  EXPECT_NE(buffer.data_ptr(), storage);
  EXPECT_EQ(detail::allocated_bytes(held, buffer), 2 * 64 * 4);
  // A tensor that is not a view of the buffer counts its own bytes.
  EXPECT_EQ(detail::allocated_bytes(expected, buffer), 2 * 44 * 4);
}

// A tensor assigned from elsewhere (a loaded cache, an eviction's result)
// or of another dtype is copied into a fresh buffer, never written through.
TEST(CompressedStorage, AppendColumnsCopiesATensorThatIsNotItsView) {
  at::Tensor buffer;
  at::Tensor held = detail::append_columns(buffer, at::zeros({1, 2}), at::ones({1, 1}));
  const at::Tensor other = at::full({1, 2}, 7.0f);
  at::Tensor grown = detail::append_columns(buffer, other, at::ones({1, 1}));
  EXPECT_TRUE(at::equal(grown, at::tensor({7.0f, 7.0f, 1.0f}).view({1, 3})));
  EXPECT_TRUE(at::equal(other, at::full({1, 2}, 7.0f)));
  EXPECT_TRUE(at::equal(held, at::tensor({0.0f, 0.0f, 1.0f}).view({1, 3})));  // old buffer kept
  at::Tensor wide = detail::append_columns(buffer, grown.to(at::kDouble), at::ones({1, 1}));
  EXPECT_EQ(wide.scalar_type(), at::kDouble);
  EXPECT_EQ(buffer.scalar_type(), at::kDouble);
  EXPECT_SKV_ERROR(detail::append_columns(buffer, wide, at::ones({2, 1})), "cannot append");
}

// Decoding many steps keeps every tensor a view of its growing buffer, and
// the cache reports the buffers' capacity as allocated.
TEST(CompressedStorage, DecodedCacheHoldsViewsOfGrowingBuffers) {
  ModelConfig c = testutil::tiny_config(2, 1, 4);
  c.num_layers = 1;
  CompressionParameters p;
  p.codebook = CodebookMode::kJustInTime;
  p.extend_codebook_when_decoding = true;
  p.reserve_ratio = 1.0;
  CompressedCache cache(c.geometry(), 1, p);
  at::manual_seed(3);
  cache.prefill(0, 0, at::randn({1, 5, 4}), at::randn({1, 5, 4}), at::Tensor());
  for (int step = 0; step < 30; ++step) {
    const at::Tensor pos = at::full({1, 1}, 5 + step, at::kLong);
    cache.append_and_attend(0, at::randn({1, 2, 1, 4}), at::randn({1, 1, 1, 4}),
                            at::randn({1, 1, 1, 4}), pos);
    cache.advance(1);
  }
  const detail::SequenceLayer& S = detail::CacheAccess::impl(cache).sequences[0][0];
  ASSERT_EQ(S.positions.size(1), 35);
  for (const auto& [view, buffer] :
       {std::pair<const at::Tensor&, const at::Tensor&>{S.positions, S.positions_buffer},
        {S.keys.code, S.keys.code_buffer},
        {S.values.magnitude, S.values.magnitude_buffer}}) {
    EXPECT_EQ(view.data_ptr(), buffer.data_ptr());
    EXPECT_EQ(buffer.size(1), 64);  // 5 + 1 -> 16 -> 32 -> 64
  }
  EXPECT_TRUE(at::equal(S.positions[0], at::arange(35, at::kInt)));
  const LayerMemory m = cache.memory().layers[0];
  EXPECT_GE(m.allocated_bytes, m.held_bytes());
}

// Vectors with no entry join their head's exact rows in order after the
// rows it holds, also when the heads hold different numbers of rows; the
// rows no head uses stay zero.
TEST(CompressedStorage, MissesJoinEachHeadsExactRowsInOrder) {
  detail::CodedVectors c = detail::empty_coded(2, 3, at::TensorOptions(), StorageDtype::kFloat32);
  const detail::CodebookTables none;
  at::manual_seed(7);
  const at::Tensor first = at::randn({2, 4, 3}), second = at::randn({2, 3, 3});
  // Head 0 keeps columns 1 and 3 of the first four, head 1 all four; then
  // head 0 all three, head 1 only column 2.
  const at::Tensor valid_first = at::tensor({0, 1, 0, 1, 1, 1, 1, 1}).view({2, 4}).to(at::kBool);
  const at::Tensor valid_second = at::tensor({1, 1, 1, 0, 0, 1}).view({2, 3}).to(at::kBool);
  detail::append_coded(c, first, valid_first, none, CodebookMode::kNone, false);
  detail::append_coded(c, second, valid_second, none, CodebookMode::kNone, false);
  EXPECT_EQ(c.exact_count, (std::vector<int64_t>{5, 5}));
  const at::Tensor want0 =
      at::stack({first[0][1], first[0][3], second[0][0], second[0][1], second[0][2]});
  const at::Tensor want1 =
      at::stack({first[1][0], first[1][1], first[1][2], first[1][3], second[1][2]});
  EXPECT_TRUE(at::equal(c.exact[0].narrow(0, 0, 5), want0));
  EXPECT_TRUE(at::equal(c.exact[1].narrow(0, 0, 5), want1));
  const int64_t cap = c.exact.size(1);
  EXPECT_TRUE(at::equal(c.exact.narrow(1, 5, cap - 5), at::zeros({2, cap - 5, 3})));
  // Codes: -(row + 1) for the kept vectors, the zero code elsewhere.
  const int64_t z = detail::kZeroCode;
  EXPECT_TRUE(at::equal(
      detail::codes_long(c),
      at::tensor({z, -1L, z, -2L, -3L, -4L, -5L, -1L, -2L, -3L, -4L, z, z, -5L}).view({2, 7})));
}

}  // namespace
}  // namespace spindlekv
