// AdaCoF warp kernels for CUDA, written for this project.
//
// One source serves three compilers: NVRTC (through cupy.RawModule at run time), nvcc (compile check
// in the tests) and g++ (the host shim in host_shim.cpp, which defines the CUDA built-ins and loops
// over the launch grid so that these exact kernels can be tested on a CPU). So: no #include here, no
// shared memory, no __syncthreads, grid-stride loops only.
//
// Layouts: input (N, C, Hp, Wp), weight / offset_i / offset_j (N, F*F, H, W), output and grad_output
// (N, C, H, W), all contiguous. Accumulation and all outputs use acc_t (float for fp32 and fp16
// inputs, double for fp64); the input is read in its own type.

#ifndef ADACOF_HOST_SHIM
#define ADACOF_INLINE __device__ __forceinline__
#else
#define ADACOF_INLINE inline
#endif

typedef long long adacof_i64;

// Number of channels one forward thread accumulates in registers: the tap geometry is computed once
// per (pixel, tap, chunk) rather than once per channel.
#define ADACOF_CHUNK 8

// fp16 storage, read as raw bits so that no CUDA header is needed.
struct adacof_half {
    unsigned short bits;
};

ADACOF_INLINE float adacof_load(float v) { return v; }
ADACOF_INLINE double adacof_load(double v) { return v; }
ADACOF_INLINE float adacof_load(adacof_half h) {
#if defined(__CUDA_ARCH__)
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
    return f;
#else
    const unsigned int sign = (unsigned int)(h.bits & 0x8000u) << 16;
    const unsigned int expo = (h.bits >> 10) & 0x1fu;
    const unsigned int mant = h.bits & 0x3ffu;
    if (expo == 0) {
        const float mag = (float)mant * 5.9604644775390625e-8f;  // subnormal: mant * 2^-24
        return sign ? -mag : mag;
    }
    const unsigned int out = expo == 31 ? (sign | 0x7f800000u | (mant << 13))
                                        : (sign | ((expo + 112u) << 23) | (mant << 13));
    float f;
    __builtin_memcpy(&f, &out, sizeof(f));
    return f;
#endif
}

ADACOF_INLINE float adacof_floor(float v) { return floorf(v); }
ADACOF_INLINE double adacof_floor(double v) { return floor(v); }
ADACOF_INLINE float adacof_trunc(float v) { return truncf(v); }
ADACOF_INLINE double adacof_trunc(double v) { return trunc(v); }

ADACOF_INLINE int adacof_clamp(adacof_i64 v, int hi) { return v < 0 ? 0 : (v > hi ? hi : (int)v); }

// Geometry of one tap at one pixel: clamped corner offsets inside a channel plane and the four
// bilinear coefficients (weight not included) plus the two fractions the offset gradients need.
template <typename acc_t>
struct AdacofTap {
    adacof_i64 o00, o10, o01, o11;
    acc_t c00, c10, c01, c11, fa, fb;
};

// Integer part by the sampling rule (trunc: the published C cast; floor: true bilinear) and the
// fraction. Offsets are clamped to +-2^24 first so the cast is defined; any offset that large lands
// outside the image on both corners, where the sample no longer depends on it. NaN stays NaN.
template <typename acc_t>
ADACOF_INLINE void adacof_split(acc_t a, int floor_rule, adacof_i64* ip, acc_t* frac) {
    const acc_t big = (acc_t)16777216;
    const acc_t ac = a > big ? big : (a < -big ? -big : a);
    const acc_t r = floor_rule ? adacof_floor(ac) : adacof_trunc(ac);
    *ip = (r == r) ? (adacof_i64)r : 0;
    *frac = ac - r;
}

template <typename acc_t>
ADACOF_INLINE AdacofTap<acc_t> adacof_tap(acc_t a, acc_t b, int i, int j, int k, int l, int D, int Hp,
                                          int Wp, int floor_rule) {
    adacof_i64 A, B;
    acc_t fa, fb;
    adacof_split(a, floor_rule, &A, &fa);
    adacof_split(b, floor_rule, &B, &fb);
    const adacof_i64 y = (adacof_i64)i + (adacof_i64)k * D + A;
    const adacof_i64 x = (adacof_i64)j + (adacof_i64)l * D + B;
    const adacof_i64 y0 = adacof_clamp(y, Hp - 1), y1 = adacof_clamp(y + 1, Hp - 1);
    const adacof_i64 x0 = adacof_clamp(x, Wp - 1), x1 = adacof_clamp(x + 1, Wp - 1);
    AdacofTap<acc_t> t;
    t.o00 = y0 * Wp + x0;
    t.o10 = y1 * Wp + x0;
    t.o01 = y0 * Wp + x1;
    t.o11 = y1 * Wp + x1;
    t.c00 = (1 - fa) * (1 - fb);
    t.c10 = fa * (1 - fb);
    t.c01 = (1 - fa) * fb;
    t.c11 = fa * fb;
    t.fa = fa;
    t.fb = fb;
    return t;
}

#define ADACOF_FORWARD_PARAMS(IN_T, ACC_T)                                                               \
    const IN_T *__restrict__ input, const ACC_T *__restrict__ weight, const ACC_T *__restrict__ offset_i, \
        const ACC_T *__restrict__ offset_j, ACC_T *__restrict__ output, adacof_i64 total, int C, int Hp,  \
        int Wp, int H, int W, int F, int D, int floor_rule
#define ADACOF_FORWARD_ARGS input, weight, offset_i, offset_j, output, total, C, Hp, Wp, H, W, F, D, floor_rule

// One thread per (n, channel chunk, i, j); j fastest so that neighbouring threads read neighbouring
// weights and write neighbouring outputs. total = N * ceil(C / ADACOF_CHUNK) * H * W.
template <typename in_t, typename acc_t>
ADACOF_INLINE void adacof_forward_body(ADACOF_FORWARD_PARAMS(in_t, acc_t)) {
    const int chunks = (C + ADACOF_CHUNK - 1) / ADACOF_CHUNK;
    const adacof_i64 plane = (adacof_i64)Hp * Wp;
    const adacof_i64 stride = (adacof_i64)blockDim.x * gridDim.x;
    for (adacof_i64 idx = (adacof_i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int j = (int)(idx % W);
        adacof_i64 rest = idx / W;
        const int i = (int)(rest % H);
        rest /= H;
        const int c0 = (int)(rest % chunks) * ADACOF_CHUNK;
        const adacof_i64 n = rest / chunks;
        const int cn = C - c0 < ADACOF_CHUNK ? C - c0 : ADACOF_CHUNK;
        const in_t *base = input + (n * C + c0) * plane;
        acc_t acc[ADACOF_CHUNK];
#pragma unroll
        for (int c = 0; c < ADACOF_CHUNK; ++c) acc[c] = 0;
        for (int t = 0; t < F * F; ++t) {
            const adacof_i64 kidx = ((n * F * F + t) * H + i) * W + j;
            const acc_t w = weight[kidx];
            const AdacofTap<acc_t> g =
                adacof_tap<acc_t>(offset_i[kidx], offset_j[kidx], i, j, t / F, t % F, D, Hp, Wp, floor_rule);
#pragma unroll
            for (int c = 0; c < ADACOF_CHUNK; ++c) {
                if (c < cn) {
                    const in_t *p = base + c * plane;
                    acc[c] += w * (g.c00 * adacof_load(p[g.o00]) + g.c10 * adacof_load(p[g.o10]) +
                                   g.c01 * adacof_load(p[g.o01]) + g.c11 * adacof_load(p[g.o11]));
                }
            }
        }
#pragma unroll
        for (int c = 0; c < ADACOF_CHUNK; ++c) {
            if (c < cn) output[((n * C + c0 + c) * H + i) * W + j] = acc[c];
        }
    }
}

#define ADACOF_BACKWARD_PARAMS(IN_T, ACC_T)                                                               \
    const IN_T *__restrict__ input, const ACC_T *__restrict__ weight, const ACC_T *__restrict__ offset_i, \
        const ACC_T *__restrict__ offset_j, const ACC_T *__restrict__ grad_output, ACC_T *grad_input,     \
        ACC_T *__restrict__ grad_weight, ACC_T *__restrict__ grad_offset_i,                               \
        ACC_T *__restrict__ grad_offset_j, adacof_i64 total, int C, int Hp, int Wp, int H, int W, int F,  \
        int D, int floor_rule, int need_input_grad
#define ADACOF_BACKWARD_ARGS                                                                            \
    input, weight, offset_i, offset_j, grad_output, grad_input, grad_weight, grad_offset_i, grad_offset_j, \
        total, C, Hp, Wp, H, W, F, D, floor_rule, need_input_grad

// One thread per (n, tap, i, j), looping over all channels: the four corner dot products with the
// output gradient give the weight and offset gradients; the input gradient is scattered with
// atomicAdd (grad_input must be zeroed by the caller). total = N * F*F * H * W.
template <typename in_t, typename acc_t>
ADACOF_INLINE void adacof_backward_body(ADACOF_BACKWARD_PARAMS(in_t, acc_t)) {
    const adacof_i64 plane = (adacof_i64)Hp * Wp;
    const adacof_i64 oplane = (adacof_i64)H * W;
    const adacof_i64 stride = (adacof_i64)blockDim.x * gridDim.x;
    for (adacof_i64 idx = (adacof_i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const int j = (int)(idx % W);
        adacof_i64 rest = idx / W;
        const int i = (int)(rest % H);
        rest /= H;
        const int t = (int)(rest % (F * F));
        const adacof_i64 n = rest / (F * F);
        const acc_t w = weight[idx];
        const AdacofTap<acc_t> g =
            adacof_tap<acc_t>(offset_i[idx], offset_j[idx], i, j, t / F, t % F, D, Hp, Wp, floor_rule);
        acc_t d00 = 0, d10 = 0, d01 = 0, d11 = 0;
        const acc_t *go = grad_output + n * C * oplane + (adacof_i64)i * W + j;
        for (int c = 0; c < C; ++c) {
            const acc_t gv = go[c * oplane];
            const in_t *p = input + (n * C + c) * plane;
            d00 += gv * adacof_load(p[g.o00]);
            d10 += gv * adacof_load(p[g.o10]);
            d01 += gv * adacof_load(p[g.o01]);
            d11 += gv * adacof_load(p[g.o11]);
            if (need_input_grad) {
                acc_t *gi = grad_input + (n * C + c) * plane;
                const acc_t wg = w * gv;
                atomicAdd(gi + g.o00, wg * g.c00);
                atomicAdd(gi + g.o10, wg * g.c10);
                atomicAdd(gi + g.o01, wg * g.c01);
                atomicAdd(gi + g.o11, wg * g.c11);
            }
        }
        grad_weight[idx] = g.c00 * d00 + g.c10 * d10 + g.c01 * d01 + g.c11 * d11;
        grad_offset_i[idx] = w * ((1 - g.fb) * (d10 - d00) + g.fb * (d11 - d01));
        grad_offset_j[idx] = w * ((1 - g.fa) * (d01 - d00) + g.fa * (d11 - d10));
    }
}

#define ADACOF_DEFINE_KERNELS(SUFFIX, IN_T, ACC_T)                                                     \
    extern "C" __global__ void adacof_forward_##SUFFIX(ADACOF_FORWARD_PARAMS(IN_T, ACC_T)) {           \
        adacof_forward_body<IN_T, ACC_T>(ADACOF_FORWARD_ARGS);                                         \
    }                                                                                                  \
    extern "C" __global__ void adacof_backward_##SUFFIX(ADACOF_BACKWARD_PARAMS(IN_T, ACC_T)) {         \
        adacof_backward_body<IN_T, ACC_T>(ADACOF_BACKWARD_ARGS);                                       \
    }

ADACOF_DEFINE_KERNELS(f32, float, float)
ADACOF_DEFINE_KERNELS(f16, adacof_half, float)
ADACOF_DEFINE_KERNELS(f64, double, double)
