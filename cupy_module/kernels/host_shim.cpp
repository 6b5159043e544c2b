// Host-side shim that runs the CUDA kernels of adacof_cuda.cu on a CPU, for testing without a GPU.
//
// It defines the CUDA built-ins the kernels use (threadIdx, blockIdx, blockDim, gridDim, atomicAdd,
// __shfl_xor_sync, the qualifiers) and launches a kernel by running every block of the launch grid in
// turn. Kernels without warp cooperation (the forward) run their threads one after another. Kernels
// that shuffle (the backward) run the threads of a block as cooperative threads (ucontext): a thread
// that reaches a shuffle waits there until every lane of its warp has arrived, so each lane reads what
// its partner held at the same shuffle, as on the device. A warp whose lanes do not all reach the same
// shuffles (divergent control flow around one, which is undefined on the device) is reported on
// stderr and aborts the process. Atomic additions happen in the order the threads run, so results
// match the device up to that order.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include <memory>
#include <vector>

struct dim3 {
    unsigned int x, y, z;
};

static dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict

template <typename T>
inline T atomicAdd(T *address, T value) {
    const T old = *address;
    *address = old + value;
    return old;
}

namespace shim {

[[noreturn]] void fail(const char *what) {
    fprintf(stderr, "adacof host shim: %s\n", what);
    abort();
}

// The cooperative threads of the block being run.
struct Thread {
    ucontext_t context;
    bool done;
    unsigned int parity;  // which of the two exchange slots the next shuffle uses
};

constexpr size_t kStack = 64 * 1024;  // the kernels need a few hundred bytes; fprintf in fail() more
static std::vector<Thread> threads;
static std::unique_ptr<char[]> stacks;  // uninitialised: never read before written
static size_t stack_threads = 0;
static std::vector<double> slots[2];          // one value per thread and parity
static std::vector<unsigned int> arrived;     // per warp: lanes waiting at the current shuffle
static std::vector<unsigned int> generation;  // per warp: shuffles completed
static ucontext_t scheduler;
static unsigned int current = 0;
static unsigned long long stalls = 0;  // consecutive switches without any thread moving on
static void (*body)() = nullptr;

inline void switch_to(unsigned int next) {
    const unsigned int from = current;
    current = next;
    threadIdx = dim3{next, 0, 0};
    if (swapcontext(&threads[from].context, &threads[next].context) != 0) fail("swapcontext failed");
}

// Hand over to the next unfinished thread of the block.
inline void yield() {
    const unsigned int count = (unsigned int)threads.size();
    if (++stalls > 4ull * count + 8) fail("the lanes of a warp do not all reach the same shuffle");
    unsigned int next = current;
    do next = (next + 1) % count;
    while (threads[next].done);
    if (next != current) switch_to(next);
}

// Wait until every lane of the calling thread's warp has arrived here.
inline void warp_barrier() {
    const unsigned int warp = threadIdx.x / 32;
    const unsigned int lanes = blockDim.x - warp * 32 < 32 ? blockDim.x - warp * 32 : 32;
    const unsigned int seen = generation[warp];
    if (++arrived[warp] == lanes) {
        arrived[warp] = 0;
        ++generation[warp];
        stalls = 0;
        return;
    }
    while (generation[warp] == seen) yield();
}

void entry() {
    body();
    threads[current].done = true;
    stalls = 0;
}  // returns to the scheduler (uc_link)

// Run body() once for every thread of block `b` as cooperative threads.
void run_block(unsigned int b) {
    const unsigned int count = blockDim.x;
    threads.assign(count, Thread{});
    if (stack_threads < count) {
        stacks.reset(new char[count * kStack]);
        stack_threads = count;
    }
    for (auto &s : slots) s.assign(count, 0.0);
    arrived.assign((count + 31) / 32, 0);
    generation.assign((count + 31) / 32, 0);
    blockIdx = dim3{b, 0, 0};
    for (unsigned int t = 0; t < count; ++t) {
        Thread &th = threads[t];
        if (getcontext(&th.context) != 0) fail("getcontext failed");
        th.context.uc_stack.ss_sp = stacks.get() + (size_t)t * kStack;
        th.context.uc_stack.ss_size = kStack;
        th.context.uc_link = &scheduler;
        makecontext(&th.context, entry, 0);
    }
    // Each finished thread comes back here; start or resume the next unfinished one.
    for (unsigned int t = 0; t < count; ++t) {
        if (threads[t].done) continue;
        current = t;
        threadIdx = dim3{t, 0, 0};
        if (swapcontext(&scheduler, &threads[t].context) != 0) fail("swapcontext failed");
        t = (unsigned int)-1;  // rescan from the start: finished threads may have left others waiting
    }
    for (unsigned int w = 0; w < arrived.size(); ++w)
        if (arrived[w] != 0) fail("a warp finished with lanes still waiting at a shuffle");
}

void launch_cooperative(unsigned int grid, unsigned int block, void (*kernel)()) {
    gridDim = dim3{grid, 1, 1};
    blockDim = dim3{block, 1, 1};
    body = kernel;
    for (unsigned int b = 0; b < grid; ++b) run_block(b);
}

}  // namespace shim

// The device shuffle over a full warp: the value held by lane (lane ^ lane_mask) at this shuffle.
template <typename T>
inline T __shfl_xor_sync(unsigned int mask, T value, int lane_mask) {
    if (mask != 0xffffffffu) shim::fail("only full-warp shuffles are emulated");
    const unsigned int self = threadIdx.x;
    const unsigned int partner = (self & ~31u) | ((self & 31u) ^ ((unsigned int)lane_mask & 31u));
    if (partner >= blockDim.x) shim::fail("shuffle with a lane beyond the block (block not a multiple of 32)");
    // Two slots alternate, so a lane that runs on to its next shuffle never overwrites a value its
    // partner has not read yet (that partner must first pass this shuffle's barrier, then the next).
    const unsigned int p = shim::threads[self].parity;
    shim::threads[self].parity ^= 1u;
    shim::slots[p][self] = (double)value;
    shim::warp_barrier();
    return (T)shim::slots[p][partner];
}

#define ADACOF_HOST_SHIM
#include "adacof_cuda.cu"

static void shim_set_launch(unsigned int grid, unsigned int block) {
    gridDim = dim3{grid, 1, 1};
    blockDim = dim3{block, 1, 1};
}

#define ADACOF_SHIM_LAUNCHERS(SUFFIX, IN_T, ACC_T)                                                      \
    extern "C" void shim_adacof_forward_##SUFFIX(unsigned int grid, unsigned int block,                 \
                                                 ADACOF_FORWARD_PARAMS(IN_T, ACC_T)) {                  \
        shim_set_launch(grid, block);                                                                   \
        for (unsigned int b = 0; b < grid; ++b)                                                         \
            for (unsigned int t = 0; t < block; ++t) {                                                  \
                blockIdx = dim3{b, 0, 0};                                                               \
                threadIdx = dim3{t, 0, 0};                                                              \
                adacof_forward_##SUFFIX(ADACOF_FORWARD_ARGS);                                           \
            }                                                                                           \
    }                                                                                                   \
    namespace shim_args_##SUFFIX {                                                                      \
    static struct {                                                                                     \
        const IN_T *input;                                                                              \
        const ACC_T *weight, *offset_i, *offset_j, *grad_output;                                        \
        ACC_T *grad_input, *grad_weight, *grad_offset_i, *grad_offset_j;                                \
        adacof_i64 pixels;                                                                              \
        int C, Hp, Wp, H, W, F, D, floor_rule, need_input_grad, lanes, in_stride, go_stride;             \
    } a;                                                                                                \
    static void run() {                                                                                 \
        adacof_backward_##SUFFIX(a.input, a.weight, a.offset_i, a.offset_j, a.grad_output, a.grad_input, \
                                 a.grad_weight, a.grad_offset_i, a.grad_offset_j, a.pixels, a.C, a.Hp,  \
                                 a.Wp, a.H, a.W, a.F, a.D, a.floor_rule, a.need_input_grad, a.lanes,    \
                                 a.in_stride, a.go_stride);                                             \
    }                                                                                                   \
    }                                                                                                   \
    extern "C" void shim_adacof_backward_##SUFFIX(unsigned int grid, unsigned int block,                \
                                                  ADACOF_BACKWARD_PARAMS(IN_T, ACC_T)) {                \
        shim_args_##SUFFIX::a = {ADACOF_BACKWARD_ARGS};                                                 \
        shim::launch_cooperative(grid, block, shim_args_##SUFFIX::run);                                 \
    }

ADACOF_SHIM_LAUNCHERS(f32, float, float)
ADACOF_SHIM_LAUNCHERS(f16, adacof_half, float)
ADACOF_SHIM_LAUNCHERS(f64, double, double)
