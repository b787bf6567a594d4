// RoPE (core/rope.h): the fused row kernel against the tensor form.
#include "core/rope.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace spindlekv {
namespace {

// The row kernel (whichever CPU variant the loader picked) rotates a scaled
// row exactly as apply_rope rotates the widened, scaled tensor, for rows
// stored in every storage dtype, and for a head size with a short tail.
TEST(Rope, RowKernelEqualsApplyRopeForEveryStorageDtype) {
  for (const int64_t d : {128, 64, 6}) {
    RopeParameters rope;
    const at::Tensor positions = at::tensor({0L, 1L, 17L, 2047L, 100000L});
    const RopeTables t = rope_tables(rope_inverse_frequencies(rope, d), positions);
    at::manual_seed(d);
    for (const at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
      const at::Tensor rows = at::randn({5, d}).to(dtype);
      const float scale = 1.75f;
      const at::Tensor expected = apply_rope(rows.to(at::kFloat) * scale, t);
      at::Tensor got = at::empty({5, d});
      const at::Tensor cos = t.cos.contiguous(), sin = t.sin.contiguous();
      for (int64_t i = 0; i < 5; ++i) {
        const float* c = cos.data_ptr<float>() + i * d;
        const float* s = sin.data_ptr<float>() + i * d;
        float* out = got.data_ptr<float>() + i * d;
        if (dtype == at::kFloat) {
          apply_rope_row(rows.data_ptr<float>() + i * d, scale, c, s, out, d);
        } else if (dtype == at::kHalf) {
          apply_rope_row(rows.data_ptr<at::Half>() + i * d, scale, c, s, out, d);
        } else {
          apply_rope_row(rows.data_ptr<at::BFloat16>() + i * d, scale, c, s, out, d);
        }
      }
      EXPECT_TRUE(at::equal(got, expected)) << "d " << d << ", " << dtype << ": largest difference "
                                            << (got - expected).abs().max().item<float>();
    }
  }
}

// unapply_rope undoes apply_rope.
TEST(Rope, UnapplyRopeRecoversThePreRopeVectors) {
  RopeParameters rope;
  const RopeTables t = rope_tables(rope_inverse_frequencies(rope, 64), at::arange(300));
  at::manual_seed(1);
  const at::Tensor x = at::randn({2, 300, 64});
  EXPECT_TRUE(at::allclose(unapply_rope(apply_rope(x, t), t), x, 1e-5, 1e-5));
}

}  // namespace
}  // namespace spindlekv
