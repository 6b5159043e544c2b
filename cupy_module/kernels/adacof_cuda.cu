// AdaCoF warp kernels for CUDA, written for this project.
//
// One source serves three compilers: NVRTC (through cupy.RawModule at run time), nvcc (compile check
// in the tests) and g++ (the host shim in host_shim.cpp, which defines the CUDA built-ins and runs the
// threads of each block as cooperative host threads, so that these exact kernels can be tested on a
// CPU). So: no #include here, no shared memory and no __syncthreads; the only cooperation between
// threads is __shfl_xor_sync over full warps (the shim emulates it); grid-stride loops only.
//
// Layouts: forward: input (N, C, Hp, Wp), output (N, C, H, W); backward: input, grad_output and
// grad_input channels last (see adacof_backward_body); weight / offset_i / offset_j and their gradients
// (N, F*F, H, W) in both; all dense. Accumulation and all outputs use acc_t (float for fp32 and fp16
// inputs, double for fp64); the input is read in its own type.

#ifndef ADACOF_HOST_SHIM
#define ADACOF_INLINE __device__ __forceinline__
#define ADACOF_BACKWARD_BOUNDS(MIN_BLOCKS) __launch_bounds__(ADACOF_BACKWARD_BLOCK, MIN_BLOCKS)
#else
#define ADACOF_INLINE inline
#define ADACOF_BACKWARD_BOUNDS(MIN_BLOCKS)
#endif

typedef long long adacof_i64;

// Number of channels one forward thread accumulates in registers: the tap geometry is computed once
// per (pixel, tap, chunk) rather than once per channel.
#define ADACOF_CHUNK 8

// Channels one backward lane loads per round (all loads of a round are in flight together), and the
// largest block the backward is launched with (the register budget of each variant is set for a number
// of such blocks per SM: four for fp32 and fp16, two for fp64, with no spills on sm_90).
#define ADACOF_BATCH 4
#define ADACOF_BACKWARD_BLOCK 256

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

#define ADACOF_BACKWARD_PARAMS(IN_T, ACC_T)                                                                 \
    const IN_T *__restrict__ input, const ACC_T *__restrict__ weight, const ACC_T *__restrict__ offset_i,   \
        const ACC_T *__restrict__ offset_j, const ACC_T *__restrict__ grad_output, ACC_T *grad_input,       \
        ACC_T *__restrict__ grad_weight, ACC_T *__restrict__ grad_offset_i,                                 \
        ACC_T *__restrict__ grad_offset_j, adacof_i64 pixels, int C, int Hp, int Wp, int H, int W, int F,   \
        int D, int floor_rule, int need_input_grad, int lanes, int in_stride, int go_stride
#define ADACOF_BACKWARD_ARGS                                                                            \
    input, weight, offset_i, offset_j, grad_output, grad_input, grad_weight, grad_offset_i, grad_offset_j, \
        pixels, C, Hp, Wp, H, W, F, D, floor_rule, need_input_grad, lanes, in_stride, go_stride

// Sum of v over each aligned group of `lanes` lanes of the warp (lanes: a power of two up to 32), by a
// butterfly of shuffles, so every lane of a group gets its group's sum. Every lane of the warp must
// call it with the same `lanes` (the kernel's loops are warp-uniform around it).
template <typename acc_t>
ADACOF_INLINE acc_t adacof_group_sum(acc_t v, int lanes) {
    for (int step = lanes >> 1; step > 0; step >>= 1) v += __shfl_xor_sync(0xffffffffu, v, step);
    return v;
}

// Backward: one fused pass over the output pixels; the weight and offset gradients need no atomics.
//
// Layouts: input and grad_input (N, Hp, Wp, *), grad_output (N, H, W, *): rows of channels (channels
// last) whose first C elements are the channels, one row every in_stride (input and grad_input) or
// go_stride elements; the caller pads the rows of grad_input (and so of the input) to whole 32-byte
// sectors, so that a group's atomics on one corner never straddle more sectors than they must. Weight,
// offsets and their gradients are (N, F*F, H, W). The launch block is a multiple of 32.
//
// Each warp is split into groups of `lanes` lanes; a group owns one output pixel (n, i, j) and walks
// its F*F taps, and lane r of the group takes channels r, r + lanes, ... . The groups of a warp hold
// consecutive pixels j, so a tap's weight/offset loads and gradient stores are contiguous runs, and
// consecutive warps walk along the rows, so the input rows they gather from and scatter to stay in
// L2. Per tap:
//   - the group's lanes read the four corners of their channels (contiguous runs in rows of channels)
//     and the output gradient of their channels, and form the four corner dot products over them;
//   - with need_input_grad, each lane adds weight * coefficient * grad_output to the four corners of
//     its channels: per corner a group's atomics are one contiguous run of channels, never two lanes
//     on one address (grad_input must be zeroed by the caller);
//   - the three per-lane partial gradients (weight, offset_i, offset_j) are summed over the group by
//     shuffles and the group's first lane stores them: each gradient element has one writer.
// Accumulation is in acc_t (fp32 for fp32 and fp16 inputs). pixels = N * H * W.
template <typename in_t, typename acc_t>
ADACOF_INLINE void adacof_backward_body(ADACOF_BACKWARD_PARAMS(in_t, acc_t)) {
    const int lane = (int)(threadIdx.x & 31u);
    const int sub = lane & (lanes - 1);
    const int per_warp = 32 / lanes;
    const adacof_i64 plane = (adacof_i64)Hp * Wp;
    const adacof_i64 oplane = (adacof_i64)H * W;
    const int taps = F * F;
    const adacof_i64 warps = ((adacof_i64)blockDim.x * gridDim.x) >> 5;
    for (adacof_i64 wv = ((adacof_i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; wv * per_warp < pixels;
         wv += warps) {
        const adacof_i64 pix = wv * per_warp + lane / lanes;
        const bool active = pix < pixels;
        const adacof_i64 p = active ? pix : 0;
        const int j = (int)(p % W);
        const int i = (int)((p / W) % H);
        const adacof_i64 n = p / oplane;
        const in_t *in = input + n * plane * in_stride;
        acc_t *gin = grad_input + n * plane * in_stride;
        const acc_t *go = grad_output + p * go_stride;
        adacof_i64 kidx = n * taps * oplane + (adacof_i64)i * W + j;
        int k = 0, l = 0;
        for (int t = 0; t < taps; ++t, kidx += oplane) {
            const acc_t w = active ? weight[kidx] : (acc_t)0;
            const acc_t a = active ? offset_i[kidx] : (acc_t)0;
            const acc_t b = active ? offset_j[kidx] : (acc_t)0;
            const AdacofTap<acc_t> g = adacof_tap<acc_t>(a, b, i, j, k, l, D, Hp, Wp, floor_rule);
            const adacof_i64 r00 = g.o00 * in_stride, r10 = g.o10 * in_stride;
            const adacof_i64 r01 = g.o01 * in_stride, r11 = g.o11 * in_stride;
            const acc_t w00 = w * g.c00, w10 = w * g.c10, w01 = w * g.c01, w11 = w * g.c11;
            acc_t d00 = 0, d10 = 0, d01 = 0, d11 = 0;
            // ADACOF_BATCH channels per lane at a time: all their loads are issued before the atomics,
            // which the compiler does not move loads across.
            for (int c0 = active ? sub : C; c0 < C; c0 += ADACOF_BATCH * lanes) {
                acc_t gv[ADACOF_BATCH], v00[ADACOF_BATCH], v10[ADACOF_BATCH];
                acc_t v01[ADACOF_BATCH], v11[ADACOF_BATCH];
#pragma unroll
                for (int u = 0; u < ADACOF_BATCH; ++u) {
                    const int c = c0 + u * lanes;
                    const bool in_range = c < C;
                    gv[u] = in_range ? go[c] : (acc_t)0;
                    v00[u] = in_range ? adacof_load(in[r00 + c]) : (acc_t)0;
                    v10[u] = in_range ? adacof_load(in[r10 + c]) : (acc_t)0;
                    v01[u] = in_range ? adacof_load(in[r01 + c]) : (acc_t)0;
                    v11[u] = in_range ? adacof_load(in[r11 + c]) : (acc_t)0;
                }
#pragma unroll
                for (int u = 0; u < ADACOF_BATCH; ++u) {
                    d00 += gv[u] * v00[u];
                    d10 += gv[u] * v10[u];
                    d01 += gv[u] * v01[u];
                    d11 += gv[u] * v11[u];
                }
                if (need_input_grad) {
#pragma unroll
                    for (int u = 0; u < ADACOF_BATCH; ++u) {
                        const int c = c0 + u * lanes;
                        if (c < C) {
                            atomicAdd(gin + r00 + c, w00 * gv[u]);
                            atomicAdd(gin + r10 + c, w10 * gv[u]);
                            atomicAdd(gin + r01 + c, w01 * gv[u]);
                            atomicAdd(gin + r11 + c, w11 * gv[u]);
                        }
                    }
                }
            }
            const acc_t gw =
                adacof_group_sum<acc_t>(g.c00 * d00 + g.c10 * d10 + g.c01 * d01 + g.c11 * d11, lanes);
            const acc_t ga = adacof_group_sum<acc_t>((1 - g.fb) * (d10 - d00) + g.fb * (d11 - d01), lanes);
            const acc_t gb = adacof_group_sum<acc_t>((1 - g.fa) * (d01 - d00) + g.fa * (d11 - d10), lanes);
            if (active && sub == 0) {
                grad_weight[kidx] = gw;
                grad_offset_i[kidx] = w * ga;
                grad_offset_j[kidx] = w * gb;
            }
            if (++l == F) {
                l = 0;
                ++k;
            }
        }
    }
}

#define ADACOF_DEFINE_KERNELS(SUFFIX, IN_T, ACC_T, MIN_BLOCKS)                                         \
    extern "C" __global__ void adacof_forward_##SUFFIX(ADACOF_FORWARD_PARAMS(IN_T, ACC_T)) {           \
        adacof_forward_body<IN_T, ACC_T>(ADACOF_FORWARD_ARGS);                                         \
    }                                                                                                  \
    extern "C" __global__ void ADACOF_BACKWARD_BOUNDS(MIN_BLOCKS) adacof_backward_##SUFFIX(            \
        ADACOF_BACKWARD_PARAMS(IN_T, ACC_T)) {                                                         \
        adacof_backward_body<IN_T, ACC_T>(ADACOF_BACKWARD_ARGS);                                       \
    }

ADACOF_DEFINE_KERNELS(f32, float, float, 4)
ADACOF_DEFINE_KERNELS(f16, adacof_half, float, 4)
ADACOF_DEFINE_KERNELS(f64, double, double, 2)
