#include "core/memory_policy.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace spindlekv {
namespace {

TEST(MemoryPolicy, LargeBlocksComeFromTheHeapAndStayMappedAfterFree) {
  if (!keep_freed_memory_mapped()) GTEST_SKIP() << "malloc is not glibc's";
#if defined(__GLIBC__)
  constexpr size_t kBlock = size_t{256} << 20;  // far above glibc's mmap threshold
  void* p = std::malloc(kBlock);
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, kBlock);
  const struct mallinfo2 during = mallinfo2();
  EXPECT_LT(during.hblkhd, kBlock);  // not a separate mapping
  EXPECT_GE(during.arena, kBlock);   // but heap
  std::free(p);
  const struct mallinfo2 after = mallinfo2();
  EXPECT_GE(after.arena, kBlock);     // not trimmed: still mapped
  EXPECT_GE(after.fordblks, kBlock);  // and free for the next step
  // The next block of that size reuses it: the heap does not grow.
  void* q = std::malloc(kBlock);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(mallinfo2().arena, after.arena);
  std::free(q);
#endif
}

}  // namespace
}  // namespace spindlekv
