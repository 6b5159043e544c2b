// Host-side shim that runs the CUDA kernels of adacof_cuda.cu on a CPU, for testing without a GPU.
//
// It defines the CUDA built-ins the kernels use (threadIdx, blockIdx, blockDim, gridDim, atomicAdd,
// the qualifiers) and launches a kernel by looping over every (block, thread) pair of the launch grid,
// one after another. The kernels share no memory between threads and never synchronise, so running
// the threads in sequence gives what the device gives, up to the order of the atomic additions.
#include <math.h>

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
    extern "C" void shim_adacof_backward_##SUFFIX(unsigned int grid, unsigned int block,                \
                                                  ADACOF_BACKWARD_PARAMS(IN_T, ACC_T)) {                \
        shim_set_launch(grid, block);                                                                   \
        for (unsigned int b = 0; b < grid; ++b)                                                         \
            for (unsigned int t = 0; t < block; ++t) {                                                  \
                blockIdx = dim3{b, 0, 0};                                                               \
                threadIdx = dim3{t, 0, 0};                                                              \
                adacof_backward_##SUFFIX(ADACOF_BACKWARD_ARGS);                                         \
            }                                                                                           \
    }

ADACOF_SHIM_LAUNCHERS(f32, float, float)
ADACOF_SHIM_LAUNCHERS(f16, adacof_half, float)
ADACOF_SHIM_LAUNCHERS(f64, double, double)
