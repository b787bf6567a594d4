// How the process keeps the memory it frees. Training and long prompts
// allocate and free large tensors (attention scores, logits, activations)
// every step; glibc's malloc serves blocks above its mmap threshold (at most
// 32 MB) with fresh mappings and unmaps them on free, so every step faults
// each of their pages in again. On the project's 2-core AMD EPYC VM those
// faults took about a third of the training time at 1024 tokens.
#pragma once

namespace spindlekv {

/// Makes glibc's malloc serve every block from its heap and keep freed memory
/// mapped (M_MMAP_MAX 0, no trimming, M_TOP_PAD 64 MiB), so a block
/// freed in one step is reused by the next without page faults. The process
/// keeps its peak heap until it exits. Returns false, changing nothing, where
/// malloc is not glibc's (another libc, or a sanitizer's allocator).
bool keep_freed_memory_mapped();

}  // namespace spindlekv
