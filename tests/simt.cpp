#include "simt.h"

#include <ucontext.h>

#include <exception>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace spindlekv::simt {
namespace {

constexpr size_t kStackBytes = 128 * 1024;
constexpr int kMaxThreads = 1024;
constexpr int kWarp = 32;

struct Barrier {
  int expected = 0;
  int arrived = 0;
  uint64_t generation = 0;  // barriers passed
  int site = -1;            // the call site of this generation's first arrival
};

// The lanes of one warp that shuffle together (one mask): a barrier and two
// buffers, alternating by the barrier's generation, so that a lane writing
// the next round's value never overwrites one a slower lane has yet to read.
struct ShuffleGroup {
  Barrier barrier;
  float values[2][kWarp] = {};
};

struct Fiber {
  ucontext_t context;
  Dim3 index;
  bool done = false;
};

struct State {
  Dim3 grid, block, block_index;
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  int current = -1;
  Barrier block_barrier;
  std::map<std::pair<int, unsigned>, ShuffleGroup> groups;  // (warp, mask)
  const std::function<void()>* body = nullptr;
  int64_t progress = 0;  // arrivals at barriers and finished threads
  std::exception_ptr error;
};

State* g_state = nullptr;
int64_t g_switches = 0;
std::vector<std::unique_ptr<char[]>> g_stacks;  // reused by every run

State& state() {
  if (g_state == nullptr) throw std::logic_error("simt: called outside simt::run");
  return *g_state;
}

void yield() {
  State& s = state();
  ++g_switches;
  swapcontext(&s.fibers[s.current].context, &s.scheduler);
}

void wait(Barrier& b) {
  State& s = state();
  ++s.progress;
  if (++b.arrived == b.expected) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  const uint64_t generation = b.generation;
  while (b.generation == generation) yield();
}

void fiber_entry(int index) {
  State& s = state();
  try {
    (*s.body)();
  } catch (...) {
    if (!s.error) s.error = std::current_exception();
  }
  s.fibers[index].done = true;
  ++s.progress;
}  // returns to uc_link: the scheduler

std::string text(const Dim3& d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

}  // namespace

const Dim3& thread_index() {
  State& s = state();
  return s.fibers[s.current].index;
}
const Dim3& block_index() { return state().block_index; }
const Dim3& block_dim() { return state().block; }
const Dim3& grid_dim() { return state().grid; }
int64_t switches() { return g_switches; }

void sync_threads(int site) {
  State& s = state();
  Barrier& b = s.block_barrier;
  if (b.arrived == 0) {
    b.site = site;
  } else if (b.site != site) {
    throw std::logic_error("simt: __syncthreads at line " + std::to_string(site) +
                           " while other threads of block " + text(s.block_index) +
                           " wait at line " + std::to_string(b.site) + " (divergent barrier)");
  }
  wait(b);
}

float shuffle_xor(unsigned mask, float value, int lane_mask) {
  State& s = state();
  const int lane = s.current % kWarp, warp = s.current / kWarp, other = lane ^ lane_mask;
  if (!((mask >> lane) & 1u)) {
    throw std::logic_error("simt: __shfl_xor_sync by lane " + std::to_string(lane) +
                           ", which its mask " + std::to_string(mask) + " leaves out");
  }
  if (other < 0 || other >= kWarp || !((mask >> other) & 1u)) {
    throw std::logic_error("simt: __shfl_xor_sync from lane " + std::to_string(lane) +
                           " reads lane " + std::to_string(other) + ", outside its mask " +
                           std::to_string(mask));
  }
  ShuffleGroup& group = s.groups[{warp, mask}];
  if (group.barrier.expected == 0) group.barrier.expected = __builtin_popcount(mask);
  const int buffer = static_cast<int>(group.barrier.generation & 1u);
  group.values[buffer][lane] = value;
  wait(group.barrier);
  return group.values[buffer][other];
}

void run(const std::function<void()>& body, Dim3 grid, Dim3 block) {
  if (g_state != nullptr) throw std::logic_error("simt::run is not reentrant");
  const int n = static_cast<int>(block.count());
  if (n <= 0 || n > kMaxThreads || grid.count() == 0) {
    throw std::invalid_argument("simt::run: block " + text(block) + ", grid " + text(grid) +
                                ": 1 to 1024 threads per block and at least one block");
  }
  while (static_cast<int>(g_stacks.size()) < n) g_stacks.emplace_back(new char[kStackBytes]);
  State s;
  s.grid = grid;
  s.block = block;
  s.body = &body;
  s.fibers.resize(n);
  g_state = &s;
  struct Reset {
    ~Reset() { g_state = nullptr; }
  } reset;
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        s.block_index = Dim3(bx, by, bz);
        s.block_barrier = Barrier{n, 0, 0};
        s.groups.clear();
        for (int t = 0; t < n; ++t) {
          Fiber& f = s.fibers[t];
          f.done = false;
          f.index = Dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
          getcontext(&f.context);
          f.context.uc_stack.ss_sp = g_stacks[t].get();
          f.context.uc_stack.ss_size = kStackBytes;
          f.context.uc_link = &s.scheduler;
          makecontext(&f.context, reinterpret_cast<void (*)()>(fiber_entry), 1, t);
        }
        int remaining = n;
        while (remaining > 0) {
          const int64_t before = s.progress;
          for (int t = 0; t < n; ++t) {
            if (s.fibers[t].done) continue;
            s.current = t;
            ++g_switches;
            swapcontext(&s.scheduler, &s.fibers[t].context);
            if (s.fibers[t].done) --remaining;
          }
          s.current = -1;
          if (remaining > 0 && s.progress == before) {
            if (s.error) std::rethrow_exception(s.error);
            throw std::runtime_error("simt: deadlock in block " + text(s.block_index) + ": " +
                                     std::to_string(remaining) +
                                     " threads wait at barriers that cannot be passed");
          }
        }
        if (s.error) std::rethrow_exception(s.error);
      }
    }
  }
}

}  // namespace spindlekv::simt
