#include "core/memory_policy.h"

#include <cstdlib>  // defines __GLIBC__ where the C library is glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace spindlekv {

bool keep_freed_memory_mapped() {
#if defined(__GLIBC__)
  // mallopt returns 1 on success; a sanitizer's interceptor returns 0.
  if (mallopt(M_MMAP_MAX, 0) != 1) return false;
  mallopt(M_TRIM_THRESHOLD, -1);  // -1: never give the heap's free top back
  mallopt(M_TOP_PAD, 64 << 20);   // grow the heap 64 MiB at a time
  return true;
#else
  return false;
#endif
}

}  // namespace spindlekv
