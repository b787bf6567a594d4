// Thread configuration for LibTorch and FAISS.
#pragma once

namespace spindlekv {

/// Sets LibTorch's intra-op thread count to `requested`, or to every core when
/// `requested` <= 0 (Debian's LibTorch otherwise starts with one thread on
/// some machines). Returns the count in effect.
int configure_threads(int requested);

}  // namespace spindlekv
