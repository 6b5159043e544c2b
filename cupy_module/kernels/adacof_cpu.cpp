// AdaCoF warp for CPUs, written for this project: OpenMP over output rows, SIMD over channels and
// over pixels.
//
// The input (and the output gradient) come channels-last, (N, Hp, Wp, Cs) with the channel stride Cs
// padded to whole SIMD blocks (extra channels zero), so each bilinear corner of a tap is one
// contiguous vector of channels. The tap geometry (corner indices and bilinear coefficients) is
// computed once per (pixel, tap) for all channels, a tile of pixels at a time in a loop the compiler
// vectorises. The forward computes the geometry of a group of taps first and then, per output pixel,
// keeps the channel accumulators in registers across the group (the same operations in the same
// order as one tap at a time through memory, so the same bits; about 20% faster for CDFI). Weights and
// offsets are (N, F*F, H, W); the output is (N, C, H, W) or channels_last. Exposed through a C
// ABI and loaded with ctypes, so no PyTorch headers are compiled.
//
// The backward pass walks each thread's rows in vertical strips of BTILE columns (down the rows of a
// strip, then the next strip): consecutive tiles then share all but one input row of the region their
// taps touch, so the input and the input gradient stay in L2 instead of being refetched from L3 for
// every tile. The forward pass keeps row order, which measured faster for it (its output planes are
// written sequentially).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using i64 = int64_t;
using i32 = int32_t;

// Output pixels per tile: the tile's forward accumulators (TILE * Cs values) stay in L1.
constexpr int TILE = 32;
// Output pixels per backward tile (at most TILE, a multiple of every channel block width VB).
constexpr int BTILE = 16;

// A block of VB channels as one SIMD value (GCC/Clang vector extension). Loads and stores go through
// may_alias, element-aligned pointers, so any channel offset works.
template <typename T, int VB>
struct Block {
    typedef T vec __attribute__((vector_size(sizeof(T) * VB)));
    typedef T unaligned __attribute__((vector_size(sizeof(T) * VB), aligned(sizeof(T)), may_alias));
    static inline vec load(const T *p) { return *reinterpret_cast<const unaligned *>(p); }
    static inline void store(T *p, vec v) { *reinterpret_cast<unaligned *>(p) = v; }
};

// bfloat16 values are stored as their 16 bits, the upper half of a float32.
using bf16 = uint16_t;

// VB values of storage type S as one vector of T (S = T: a bf16 storage specialisation measured slower
// than float32 in the forward, the kernel being bound by its vector work, so only S = T is built).
template <typename T, typename S, int VB>
struct Load {
    static_assert(std::is_same_v<T, S>, "input storage is the compute type");
    static inline typename Block<T, VB>::vec get(const S *p) { return Block<T, VB>::load(p); }
};

// Scalar conversions between storage and compute types; bf16 rounds to nearest even (NaN stays NaN).
template <typename T, typename S>
inline T widen(S v) {
    return static_cast<T>(v);
}
template <>
inline float widen<float, bf16>(bf16 v) {
    const uint32_t u = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
template <typename S, typename T>
inline S narrow(T v) {
    return static_cast<S>(v);
}
template <>
inline bf16 narrow<bf16, float>(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16>((u >> 16) | 0x40u);
    return static_cast<bf16>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Any of float, double and bf16 to any of them, through float for bf16.
template <typename D, typename S>
inline D convert(S v) {
    if constexpr (std::is_same_v<S, bf16> && !std::is_same_v<D, bf16>) {
        return static_cast<D>(widen<float>(v));
    } else if constexpr (std::is_same_v<D, bf16> && !std::is_same_v<S, bf16>) {
        return narrow<bf16>(static_cast<float>(v));
    } else {
        return static_cast<D>(v);
    }
}

// Sums of VB vectors of VB lanes at once, as one vector of VB sums (transpose-reduce): each step
// adds the low and high halves of the lane groups of two vectors, VB - 1 shuffle-add steps in all
// instead of VB separate horizontal sums of log2(VB) steps each. The additions pair lanes as a
// halving horizontal sum would.
template <typename T, int VB>
struct Transposed {
    using V = typename Block<T, VB>::vec;
    // Lane o of the low (HI = 0) or high (HI = 1) half-group selection of (a, b), groups of G lanes.
    template <int G, int HI>
    static constexpr int lane(int o) {
        const int half = G / 2, q = o / half, r = o % half, n = VB / G;
        return (q < n ? q * G : VB + (q - n) * G) + r + HI * half;
    }
    template <int G, size_t... I>
    static inline V combine(V a, V b, std::index_sequence<I...>) {
        return __builtin_shufflevector(a, b, lane<G, 0>(I)...) + __builtin_shufflevector(a, b, lane<G, 1>(I)...);
    }
    // v holds G vectors whose lanes are groups of G partial sums; leaves the VB sums in v[0].
    template <int G>
    static inline void step(V *v) {
        if constexpr (G > 1) {
            for (int p = 0; p < G / 2; ++p) v[p] = combine<G>(v[2 * p], v[2 * p + 1], std::make_index_sequence<VB>{});
            step<G / 2>(v);
        }
    }
    // dst[k] = sum of the VB lanes of src vector k, for k < VB.
    static inline void sums(const T *src, T *dst) {
        V v[VB];
        for (int k = 0; k < VB; ++k) v[k] = Block<T, VB>::load(src + k * VB);
        step<VB>(v);
        Block<T, VB>::store(dst, v[0]);
    }
};

// Geometry of one tap for up to TILE consecutive output pixels of one row.
template <typename T>
struct Tile {
    i32 p00[TILE], p10[TILE], p01[TILE], p11[TILE];  // corner pixel indices y * Wp + x, clamped
    T c00[TILE], c10[TILE], c01[TILE], c11[TILE];    // bilinear coefficients (weight not included)
    T fa[TILE], fb[TILE];                            // fractions, for the offset gradients
};

// Integer part by the sampling rule: floor (true bilinear) or trunc (the published C cast).
template <typename T, bool FLOOR>
inline T integer_part(T v) {
    return FLOOR ? std::floor(v) : std::trunc(v);
}

// Same rule as adacof_split/adacof_tap in adacof_cuda.cu. Offsets are clamped to +-2^24 so the cast is
// defined (beyond that both corners sit on the border, where the sample no longer depends on the
// offset); a NaN offset gets integer part 0 and a NaN fraction.
template <typename T, bool FLOOR>
inline void tile_geometry(const T *offset_i, const T *offset_j, int jn, i32 y_base, i32 x_base, i32 Hp, i32 Wp,
                          Tile<T> &g) {
    const T big = T(16777216);
#pragma omp simd
    for (int jj = 0; jj < jn; ++jj) {
        T a = offset_i[jj], b = offset_j[jj];
        a = a > big ? big : (a < -big ? -big : a);
        b = b > big ? big : (b < -big ? -big : b);
        const T ra = integer_part<T, FLOOR>(a), rb = integer_part<T, FLOOR>(b);
        const i32 A = ra == ra ? static_cast<i32>(ra) : 0;
        const i32 B = rb == rb ? static_cast<i32>(rb) : 0;
        const i32 y = y_base + A, x = x_base + jj + B;
        const i32 y0 = std::min(std::max(y, 0), Hp - 1), y1 = std::min(std::max(y + 1, 0), Hp - 1);
        const i32 x0 = std::min(std::max(x, 0), Wp - 1), x1 = std::min(std::max(x + 1, 0), Wp - 1);
        g.p00[jj] = y0 * Wp + x0;
        g.p10[jj] = y1 * Wp + x0;
        g.p01[jj] = y0 * Wp + x1;
        g.p11[jj] = y1 * Wp + x1;
        const T fa = a - ra, fb = b - rb;
        g.c00[jj] = (1 - fa) * (1 - fb);
        g.c10[jj] = fa * (1 - fb);
        g.c01[jj] = (1 - fa) * fb;
        g.c11[jj] = fa * fb;
        g.fa[jj] = fa;
        g.fb[jj] = fb;
    }
}

inline int thread_count(int requested) { return requested > 0 ? requested : 1; }

// The channel loops run over blocks of VB channels (VB = 4, 8 or 16 divides Cs): a fixed-width inner
// loop that becomes whole SIMD registers with no scalar tail.
// A weight or offset tensor: PLANES (N, F*F, H, W) of T, or the channels_last layout of convolution
// outputs, (N, H, W, F*F) PIXELS of T or of bf16.
enum Layout : int { PLANES = 0, PIXELS_T = 1, PIXELS_BF16 = 2 };
struct Operand {
    const void *data;
    int layout;
};

// Row of tap 0 of the tile of pixels [j0, j0 + jn) of row i of sample n, as T, and the step to the
// next tap's row: planes are read in place; pixel layouts are copied (upcast) into buf, [tap][pixel].
template <typename T>
inline const T *tap_rows(Operand o, T *buf, i64 n, i64 i, i64 j0, int jn, i64 taps, i64 H, i64 W, i64 &step) {
    if (o.layout == PLANES) {
        step = H * W;
        return static_cast<const T *>(o.data) + (n * taps * H + i) * W + j0;
    }
    step = TILE;
    for (int jj = 0; jj < jn; ++jj) {
        const i64 at = ((n * H + i) * W + j0 + jj) * taps;
        if (o.layout == PIXELS_T) {
            const T *src = static_cast<const T *>(o.data) + at;
            for (i64 t = 0; t < taps; ++t) buf[t * TILE + jj] = src[t];
        } else {
            const bf16 *src = static_cast<const bf16 *>(o.data) + at;
            for (i64 t = 0; t < taps; ++t) buf[t * TILE + jj] = convert<T>(src[t]);
        }
    }
    return buf;
}

// Taps whose geometry is computed together for a tile: each output pixel then keeps its channel
// accumulators in registers over a whole group of taps instead of loading and storing them per tap.
constexpr int TAPGROUP = 11;
// Channel blocks of VB channels accumulated in registers at once (4 x 16 floats = a 63-channel CDFI side).
constexpr int NREG = 4;

// Corner indices and weighted bilinear coefficients q = weight * c of one tap for a tile of pixels.
template <typename T>
struct TapTile {
    i32 p00[TILE], p10[TILE], p01[TILE], p11[TILE];
    T q00[TILE], q10[TILE], q01[TILE], q11[TILE];
};

// a[b] += q00 * p00 + q10 * p10 + q01 * p01 + q11 * p11 over taps [0, tn) of the group, for NB blocks of
// VB channels starting at channel cb of pixel jj, in registers (the same operations, in the same order,
// as one tap at a time through memory, so the result is bitwise the same).
template <typename T, typename S, int VB, int NB>
inline void accumulate_group(const S *img, const TapTile<T> *g, int tn, int jj, i64 Cs, i64 cb, T *acc) {
    using B = Block<T, VB>;
    using V = typename B::vec;
    using L = Load<T, S, VB>;
    V a[NB];
    for (int b = 0; b < NB; ++b) a[b] = B::load(acc + cb + b * VB);
    for (int k = 0; k < tn; ++k) {
        const TapTile<T> &t = g[k];
        const T q00 = t.q00[jj], q10 = t.q10[jj], q01 = t.q01[jj], q11 = t.q11[jj];
        const S *p00 = img + t.p00[jj] * Cs + cb, *p10 = img + t.p10[jj] * Cs + cb;
        const S *p01 = img + t.p01[jj] * Cs + cb, *p11 = img + t.p11[jj] * Cs + cb;
        for (int b = 0; b < NB; ++b) {
            a[b] = a[b] + q00 * L::get(p00 + b * VB) + q10 * L::get(p10 + b * VB) + q01 * L::get(p01 + b * VB) +
                   q11 * L::get(p11 + b * VB);
        }
    }
    for (int b = 0; b < NB; ++b) B::store(acc + cb + b * VB, a[b]);
}

// The channel blocks [cb, Cs) left over after whole groups of NREG, tap by tap through memory.
template <typename T, typename S, int VB>
inline void accumulate_rest(const S *img, const TapTile<T> *g, int tn, int jj, i64 Cs, i64 cb0, T *acc) {
    using B = Block<T, VB>;
    using L = Load<T, S, VB>;
    for (int k = 0; k < tn; ++k) {
        const TapTile<T> &t = g[k];
        const T q00 = t.q00[jj], q10 = t.q10[jj], q01 = t.q01[jj], q11 = t.q11[jj];
        const S *__restrict p00 = img + t.p00[jj] * Cs;
        const S *__restrict p10 = img + t.p10[jj] * Cs;
        const S *__restrict p01 = img + t.p01[jj] * Cs;
        const S *__restrict p11 = img + t.p11[jj] * Cs;
        T *__restrict a = acc;
        for (i64 cb = cb0; cb < Cs; cb += VB) {
            B::store(a + cb, B::load(a + cb) + q00 * L::get(p00 + cb) + q10 * L::get(p10 + cb) +
                                 q01 * L::get(p01 + cb) + q11 * L::get(p11 + cb));
        }
    }
}

// Input and output are stored as S (T, or bf16 for T = float), accumulation is in T. Weights and
// offsets come in any Layout, each its own: pixel layouts are upcast a tile at a time (so no converted
// copy of the whole tensors is ever made). The output is (N, C, H, W) planes, or with out_pixels the
// channels_last layout (N, H, W, C), written a pixel's channels at a time.
template <typename T, typename S, int VB, bool FLOOR>
void forward(const S *input, Operand weight, Operand offset_i, Operand offset_j, S *output, i64 N, i64 C, i64 Cs,
             i64 Hp, i64 Wp, i64 H, i64 W, i64 F, i64 D, int out_pixels, int nthreads) {
    const i64 taps = F * F;
#pragma omp parallel num_threads(thread_count(nthreads))
    {
        std::vector<T> acc(static_cast<size_t>(TILE * Cs));
        std::vector<T> rows(static_cast<size_t>(3 * taps * TILE));  // [tensor][tap][pixel], for pixel layouts
        Tile<T> g;
        std::vector<TapTile<T>> group(TAPGROUP);
#pragma omp for schedule(static)
        for (i64 r = 0; r < N * H; ++r) {
            const i64 n = r / H, i = r % H;
            const S *img = input + n * Hp * Wp * Cs;
            for (i64 j0 = 0; j0 < W; j0 += TILE) {
                const int jn = static_cast<int>(std::min<i64>(TILE, W - j0));
                std::fill(acc.begin(), acc.begin() + jn * Cs, T(0));
                i64 wstep, astep, bstep;
                const T *wrow = tap_rows<T>(weight, rows.data(), n, i, j0, jn, taps, H, W, wstep);
                const T *arow = tap_rows<T>(offset_i, rows.data() + taps * TILE, n, i, j0, jn, taps, H, W, astep);
                const T *brow = tap_rows<T>(offset_j, rows.data() + 2 * taps * TILE, n, i, j0, jn, taps, H, W, bstep);
                for (i64 t0 = 0; t0 < taps; t0 += TAPGROUP) {
                    const int tn = static_cast<int>(std::min<i64>(TAPGROUP, taps - t0));
                    for (int k = 0; k < tn; ++k) {
                        const i64 t = t0 + k;
                        const T *wt = wrow + t * wstep;
                        tile_geometry<T, FLOOR>(arow + t * astep, brow + t * bstep, jn,
                                                static_cast<i32>(i + t / F * D), static_cast<i32>(j0 + t % F * D),
                                                static_cast<i32>(Hp), static_cast<i32>(Wp), g);
                        TapTile<T> &q = group[static_cast<size_t>(k)];
#pragma omp simd
                        for (int jj = 0; jj < jn; ++jj) {
                            const T w = wt[jj];
                            q.p00[jj] = g.p00[jj];
                            q.p10[jj] = g.p10[jj];
                            q.p01[jj] = g.p01[jj];
                            q.p11[jj] = g.p11[jj];
                            q.q00[jj] = w * g.c00[jj];
                            q.q10[jj] = w * g.c10[jj];
                            q.q01[jj] = w * g.c01[jj];
                            q.q11[jj] = w * g.c11[jj];
                        }
                    }
                    for (int jj = 0; jj < jn; ++jj) {
                        T *a = acc.data() + jj * Cs;
                        i64 cb = 0;
                        for (; cb + NREG * VB <= Cs; cb += NREG * VB) {
                            accumulate_group<T, S, VB, NREG>(img, group.data(), tn, jj, Cs, cb, a);
                        }
                        if (cb < Cs) accumulate_rest<T, S, VB>(img, group.data(), tn, jj, Cs, cb, a);
                    }
                }
                if (out_pixels) {
                    for (int jj = 0; jj < jn; ++jj) {
                        S *o = output + ((n * H + i) * W + j0 + jj) * C;
                        const T *a = acc.data() + jj * Cs;
                        for (i64 c = 0; c < C; ++c) o[c] = narrow<S>(a[c]);
                    }
                } else {
                    for (i64 c = 0; c < C; ++c) {
                        S *o = output + ((n * C + c) * H + i) * W + j0;
                        for (int jj = 0; jj < jn; ++jj) o[jj] = narrow<S>(acc[jj * Cs + c]);
                    }
                }
            }
        }
    }
}

// Rows of the input that output rows [band0, band1) of sample n touch, over all taps; offset_i in any
// Layout (planes: one tap's row at a time; pixel layouts: a pixel's taps at a time, per-tap bounds).
template <typename T, bool FLOOR>
void touched_rows(Operand offset_i, i64 n, i64 band0, i64 band1, i64 taps, i64 F, i64 D, i64 Hp, i64 H, i64 W,
                  i64 &ymin, i64 &ymax) {
    const T big = T(16777216);
    auto part = [big](T a) {
        a = a > big ? big : (a < -big ? -big : a);
        return integer_part<T, FLOOR>(a);
    };
    if (offset_i.layout == PLANES) {
        const T *off = static_cast<const T *>(offset_i.data);
        for (i64 t = 0; t < taps; ++t) {
            for (i64 i = band0; i < band1; ++i) {
                const T *oi = off + ((n * taps + t) * H + i) * W;
                T lo = 0, hi = 0;  // 0 covers NaN offsets, which sample at integer part 0
#pragma omp simd reduction(min : lo) reduction(max : hi)
                for (i64 j = 0; j < W; ++j) {
                    const T r = part(oi[j]);
                    lo = r < lo ? r : lo;
                    hi = r > hi ? r : hi;
                }
                const i64 base = i + t / F * D;
                ymin = std::min(ymin, std::clamp<i64>(base + static_cast<i64>(lo), 0, Hp - 1));
                ymax = std::max(ymax, std::clamp<i64>(base + static_cast<i64>(hi) + 1, 0, Hp - 1));
            }
        }
        return;
    }
    std::vector<T> lo(static_cast<size_t>(taps)), hi(static_cast<size_t>(taps));
    for (i64 i = band0; i < band1; ++i) {
        std::fill(lo.begin(), lo.end(), T(0));
        std::fill(hi.begin(), hi.end(), T(0));
        for (i64 j = 0; j < W; ++j) {
            const i64 at = ((n * H + i) * W + j) * taps;
            if (offset_i.layout == PIXELS_T) {
                const T *src = static_cast<const T *>(offset_i.data) + at;
#pragma omp simd
                for (i64 t = 0; t < taps; ++t) {
                    const T r = part(src[t]);
                    lo[t] = r < lo[t] ? r : lo[t];
                    hi[t] = r > hi[t] ? r : hi[t];
                }
            } else {
                const bf16 *src = static_cast<const bf16 *>(offset_i.data) + at;
#pragma omp simd
                for (i64 t = 0; t < taps; ++t) {
                    const T r = part(convert<T>(src[t]));
                    lo[t] = r < lo[t] ? r : lo[t];
                    hi[t] = r > hi[t] ? r : hi[t];
                }
            }
        }
        for (i64 t = 0; t < taps; ++t) {
            const i64 base = i + t / F * D;
            ymin = std::min(ymin, std::clamp<i64>(base + static_cast<i64>(lo[t]), 0, Hp - 1));
            ymax = std::max(ymax, std::clamp<i64>(base + static_cast<i64>(hi[t]) + 1, 0, Hp - 1));
        }
    }
}

// Prefetches the cache line of pixels [at, at + jn) of a plane of T: to read (rw = 0) or to write (1).
// The backward's strip order uses one line per plane and row, so the hardware prefetchers see no
// stream; without this every tap of every tile waited for six misses (weight, offsets, gradients).
template <int RW>
inline void prefetch_row(const void *plane, i64 at, int jn, size_t size) {
    const char *base = static_cast<const char *>(plane);
    __builtin_prefetch(base + at * static_cast<i64>(size), RW, 3);
    __builtin_prefetch(base + (at + jn - 1) * static_cast<i64>(size), RW, 3);
}

// A weight or offset gradient in the Layout of its argument: PLANES (N, F*F, H, W) of T, or the
// channels_last layouts (N, H, W, F*F) of T or bf16 (a convolution output's layout, so the gradient
// needs no transposing copy before the convolution's backward).
struct Gradient {
    void *data;
    int layout;
};

// Gradients for output rows [band0, band1) of sample n. Per pixel and tap one pass over the channel
// blocks reads the output gradient and the four corners once, accumulating the four corner dot
// products as vectors and (INPUT_GRAD) scattering into the input gradient ``local``, whose pixel 0 is
// input pixel ``shift``. The output gradient ``gimg`` is sample n's (C, H, W) planes, or with
// go_pixels its (H, W, C) pixels; each tile's pixels are first copied channels-last into a small
// buffer (lanes from C to Cs stay zero). Weights and offsets are read in their Layout: planes in
// place, pixel layouts upcast into a [tap][pixel] buffer per tile. The dot vectors of a tile go to a
// scratch buffer and are summed VB at a time by a transpose-reduce (a horizontal sum per vector cost
// more than the rest of the pass); the weight and offset gradients then follow in a loop over the
// tile's pixels, into their planes, or for pixel layouts into a [tap][pixel] buffer written out (and
// narrowed to bf16 where asked) once the tile's taps are done. Tiles run strip by strip (see the top
// of the file).
template <typename T, typename S, int VB, bool FLOOR, bool INPUT_GRAD>
void backward_band(const S *img, Operand weight, Operand offset_i, Operand offset_j, const S *gimg, int go_pixels,
                   T *local, i64 shift, Gradient grad_weight, Gradient grad_offset_i, Gradient grad_offset_j, i64 n,
                   i64 band0, i64 band1, i64 C, i64 Cs, i64 Hp, i64 Wp, i64 H, i64 W, i64 F, i64 D) {
    using B = Block<T, VB>;
    using V = typename B::vec;
    using L = Load<T, S, VB>;
    static_assert(BTILE % VB == 0 && BTILE <= TILE, "a tile holds whole groups of VB pixels");
    const i64 taps = F * F;
    Tile<T> g;
    std::vector<T> dots(static_cast<size_t>(4 * BTILE * VB), T(0));  // [corner][pixel][lane]
    std::vector<T> gtile(static_cast<size_t>(BTILE * Cs), T(0));    // output gradient, [pixel][channel]
    std::vector<T> rows(static_cast<size_t>(3 * taps * TILE));      // pixel-layout operands, [tensor][tap][pixel]
    std::vector<T> grows(static_cast<size_t>(3 * taps * BTILE));    // pixel-layout gradients, [tensor][tap][pixel]
    alignas(64) T e[4][BTILE];                                        // corner dot products
    const Gradient grads[3] = {grad_weight, grad_offset_i, grad_offset_j};
    const Operand operands[3] = {weight, offset_i, offset_j};
    for (i64 j0 = 0; j0 < W; j0 += BTILE) {
        const int jn = static_cast<int>(std::min<i64>(BTILE, W - j0));
        for (i64 i = band0; i < band1; ++i) {
            if (go_pixels) {
                for (int jj = 0; jj < jn; ++jj) {
                    const S *src = gimg + (i * W + j0 + jj) * C;
                    T *dst = gtile.data() + jj * Cs;
                    for (i64 c = 0; c < C; ++c) dst[c] = widen<T>(src[c]);
                }
            } else {
                for (i64 c = 0; c < C; ++c) {
                    const S *src = gimg + (c * H + i) * W + j0;
                    for (int jj = 0; jj < jn; ++jj) gtile[static_cast<size_t>(jj * Cs + c)] = widen<T>(src[jj]);
                }
            }
            i64 wstep, astep, bstep;
            const T *wrow = tap_rows<T>(weight, rows.data(), n, i, j0, jn, taps, H, W, wstep);
            const T *arow = tap_rows<T>(offset_i, rows.data() + taps * TILE, n, i, j0, jn, taps, H, W, astep);
            const T *brow = tap_rows<T>(offset_j, rows.data() + 2 * taps * TILE, n, i, j0, jn, taps, H, W, bstep);
            for (i64 t = 0; t < taps; ++t) {
                const i64 row = ((n * taps + t) * H + i) * W + j0;  // of tap t's plane, for planar tensors
                if (i + 1 < band1) {
                    for (int k = 0; k < 3; ++k) {
                        if (operands[k].layout == PLANES) prefetch_row<0>(operands[k].data, row + W, jn, sizeof(T));
                        if (grads[k].layout == PLANES) prefetch_row<1>(grads[k].data, row + W, jn, sizeof(T));
                    }
                }
                const T *wt = wrow + t * wstep;
                tile_geometry<T, FLOOR>(arow + t * astep, brow + t * bstep, jn, static_cast<i32>(i + t / F * D),
                                        static_cast<i32>(j0 + t % F * D), static_cast<i32>(Hp),
                                        static_cast<i32>(Wp), g);
                for (int jj = 0; jj < jn; ++jj) {
                    const T *go = gtile.data() + jj * Cs;
                    const S *p00 = img + g.p00[jj] * Cs, *p10 = img + g.p10[jj] * Cs;
                    const S *p01 = img + g.p01[jj] * Cs, *p11 = img + g.p11[jj] * Cs;
                    V d00 = {}, d10 = {}, d01 = {}, d11 = {};
                    if (INPUT_GRAD) {
                        const T w = wt[jj];
                        const T q00 = w * g.c00[jj], q10 = w * g.c10[jj], q01 = w * g.c01[jj], q11 = w * g.c11[jj];
                        // Corners coincide at the border: each scatter reloads what the previous one stored.
                        T *s00 = local + (g.p00[jj] - shift) * Cs, *s10 = local + (g.p10[jj] - shift) * Cs;
                        T *s01 = local + (g.p01[jj] - shift) * Cs, *s11 = local + (g.p11[jj] - shift) * Cs;
                        for (i64 cb = 0; cb < Cs; cb += VB) {
                            const V gv = B::load(go + cb);
                            d00 += gv * L::get(p00 + cb);
                            d10 += gv * L::get(p10 + cb);
                            d01 += gv * L::get(p01 + cb);
                            d11 += gv * L::get(p11 + cb);
                            B::store(s00 + cb, B::load(s00 + cb) + q00 * gv);
                            B::store(s10 + cb, B::load(s10 + cb) + q10 * gv);
                            B::store(s01 + cb, B::load(s01 + cb) + q01 * gv);
                            B::store(s11 + cb, B::load(s11 + cb) + q11 * gv);
                        }
                    } else {
                        for (i64 cb = 0; cb < Cs; cb += VB) {
                            const V gv = B::load(go + cb);
                            d00 += gv * L::get(p00 + cb);
                            d10 += gv * L::get(p10 + cb);
                            d01 += gv * L::get(p01 + cb);
                            d11 += gv * L::get(p11 + cb);
                        }
                    }
                    B::store(dots.data() + (0 * BTILE + jj) * VB, d00);
                    B::store(dots.data() + (1 * BTILE + jj) * VB, d10);
                    B::store(dots.data() + (2 * BTILE + jj) * VB, d01);
                    B::store(dots.data() + (3 * BTILE + jj) * VB, d11);
                }
                for (int k = 0; k < 4; ++k) {
                    for (int j = 0; j < jn; j += VB) {
                        Transposed<T, VB>::sums(dots.data() + (k * BTILE + j) * VB, e[k] + j);
                    }
                }
                T *gw = grad_weight.layout == PLANES ? static_cast<T *>(grad_weight.data) + row
                                                     : grows.data() + t * BTILE;
                T *ga = grad_offset_i.layout == PLANES ? static_cast<T *>(grad_offset_i.data) + row
                                                       : grows.data() + (taps + t) * BTILE;
                T *gb = grad_offset_j.layout == PLANES ? static_cast<T *>(grad_offset_j.data) + row
                                                       : grows.data() + (2 * taps + t) * BTILE;
#pragma omp simd
                for (int jj = 0; jj < jn; ++jj) {
                    const T w = wt[jj], fa = g.fa[jj], fb = g.fb[jj];
                    const T e00 = e[0][jj], e10 = e[1][jj], e01 = e[2][jj], e11 = e[3][jj];
                    gw[jj] = g.c00[jj] * e00 + g.c10[jj] * e10 + g.c01[jj] * e01 + g.c11[jj] * e11;
                    ga[jj] = w * ((1 - fb) * (e10 - e00) + fb * (e11 - e01));
                    gb[jj] = w * ((1 - fa) * (e01 - e00) + fa * (e11 - e10));
                }
            }
            for (int k = 0; k < 3; ++k) {  // pixel-layout gradients: the tile's pixels are one contiguous run
                if (grads[k].layout == PLANES) continue;
                const T *src = grows.data() + k * taps * BTILE;
                const i64 at = ((n * H + i) * W + j0) * taps;
                if (grads[k].layout == PIXELS_T) {
                    T *dst = static_cast<T *>(grads[k].data) + at;
                    for (int jj = 0; jj < jn; ++jj)
                        for (i64 t = 0; t < taps; ++t) dst[jj * taps + t] = src[t * BTILE + jj];
                } else {
                    bf16 *dst = static_cast<bf16 *>(grads[k].data) + at;
                    for (int jj = 0; jj < jn; ++jj)
                        for (i64 t = 0; t < taps; ++t) dst[jj * taps + t] = narrow<bf16>(src[t * BTILE + jj]);
                }
            }
        }
    }
}

// Weight/offset gradients for every (pixel, tap) and, when grad_input is given, the input gradient.
// With several threads the input gradient is written directly in two phases when that is race-free
// (see below); otherwise rows are split into one contiguous band per thread; each thread scatters its
// input gradient into a private buffer that spans only the input rows its band touches, and the
// buffers are then summed row by row. Memory: about one input-sized buffer plus a halo of
// (F - 1) * D + 2 rows per thread for ordinary offsets (at most one input-sized buffer per thread for
// wild ones).
template <typename T, typename S, int VB, bool FLOOR>
void backward(const S *input, Operand weight, Operand offset_i, Operand offset_j, const S *grad_output,
              int go_pixels, T *grad_input, Gradient grad_weight, Gradient grad_offset_i, Gradient grad_offset_j,
              i64 N, i64 C, i64 Cs, i64 Hp, i64 Wp, i64 H, i64 W, i64 F, i64 D, int nthreads) {
    const i64 taps = F * F;
    const i64 row_size = Wp * Cs;
    const int nt = thread_count(nthreads);
    std::vector<std::vector<T>> buffers(static_cast<size_t>(nt));
    std::vector<i64> lo(static_cast<size_t>(nt)), hi(static_cast<size_t>(nt));
    std::vector<i64> block_lo(static_cast<size_t>(2 * nt)), block_hi(static_cast<size_t>(2 * nt));
    for (i64 n = 0; n < N; ++n) {
        const S *img = input + n * Hp * row_size;
        const S *gimg = grad_output + n * C * H * W;
        T *gin = grad_input != nullptr ? grad_input + n * Hp * row_size : nullptr;
#pragma omp parallel num_threads(nt)
        {
#ifdef _OPENMP
            const int tid = omp_get_thread_num(), nthr = omp_get_num_threads();
#else
            const int tid = 0, nthr = 1;
#endif
            bool phased = false;
            if (gin != nullptr && nthr > 1) {
                // First choice: two phases over 2 * nthr row blocks, thread tid taking blocks 2 tid and
                // 2 tid + 1. If the input rows touched by the blocks of one phase are disjoint (ordinary
                // offsets on tall enough blocks), every thread scatters straight into grad_input.
                const int nb = 2 * nthr;
                for (int b = 2 * tid; b < 2 * tid + 2; ++b) {
                    i64 bmin = Hp, bmax = -1;
                    touched_rows<T, FLOOR>(offset_i, n, H * b / nb, H * (b + 1) / nb, taps, F, D, Hp, H, W, bmin,
                                           bmax);
                    block_lo[static_cast<size_t>(b)] = bmin;
                    block_hi[static_cast<size_t>(b)] = bmax;
                }
#pragma omp barrier
                bool disjoint = true;
                for (int b = 0; b < nb && disjoint; ++b) {
                    for (int c = b + 2; c < nb; c += 2) {
                        const size_t bu = static_cast<size_t>(b), cu = static_cast<size_t>(c);
                        if (!(block_hi[bu] < block_lo[cu] || block_hi[cu] < block_lo[bu])) disjoint = false;
                    }
                }
                if (disjoint) {
                    for (int phase = 0; phase < 2; ++phase) {
                        const int b = 2 * tid + phase;
                        backward_band<T, S, VB, FLOOR, true>(img, weight, offset_i, offset_j, gimg, go_pixels, gin, 0,
                                                             grad_weight, grad_offset_i, grad_offset_j, n, H * b / nb,
                                                             H * (b + 1) / nb, C, Cs, Hp, Wp, H, W, F, D);
#pragma omp barrier
                    }
                    phased = true;
                }
            }
            if (!phased) {
            const i64 band0 = H * tid / nthr, band1 = H * (tid + 1) / nthr;
            T *local = nullptr;  // input-gradient rows [ymin, ymax] of this thread, row ymin first
            i64 ymin = Hp, ymax = -1;
            if (gin != nullptr) {
                if (nthr == 1) {
                    ymin = 0;
                    ymax = Hp - 1;
                    local = gin;
                } else {
                    touched_rows<T, FLOOR>(offset_i, n, band0, band1, taps, F, D, Hp, H, W, ymin, ymax);
                    std::vector<T> &buf = buffers[static_cast<size_t>(tid)];
                    buf.assign(ymax >= ymin ? static_cast<size_t>((ymax - ymin + 1) * row_size) : 0, T(0));
                    local = buf.data();
                }
                lo[static_cast<size_t>(tid)] = ymin;
                hi[static_cast<size_t>(tid)] = ymax;
            }
            const i64 shift = ymin * Wp;  // in pixels
            if (local != nullptr) {
                backward_band<T, S, VB, FLOOR, true>(img, weight, offset_i, offset_j, gimg, go_pixels, local, shift,
                                                     grad_weight, grad_offset_i, grad_offset_j, n, band0, band1, C,
                                                     Cs, Hp, Wp, H, W, F, D);
            } else {
                backward_band<T, S, VB, FLOOR, false>(img, weight, offset_i, offset_j, gimg, go_pixels, nullptr, 0,
                                                      grad_weight, grad_offset_i, grad_offset_j, n, band0, band1, C,
                                                      Cs, Hp, Wp, H, W, F, D);
            }
            if (gin != nullptr && nthr > 1) {
#pragma omp barrier
#pragma omp for schedule(static)
                for (i64 y = 0; y < Hp; ++y) {
                    T *dst = gin + y * row_size;
                    for (int s = 0; s < nthr; ++s) {
                        const size_t su = static_cast<size_t>(s);
                        if (y < lo[su] || y > hi[su]) continue;
                        const T *src = buffers[su].data() + (y - lo[su]) * row_size;
#pragma omp simd
                        for (i64 c = 0; c < row_size; ++c) dst[c] += src[c];
                    }
                }
            }
            }  // !phased
        }
    }
}

// Channels-last (N, P, Cs) pixels to (N, C, P) planes, P = H * W, over blocks of PIXELS pixels: a
// block's channels-last side (PIXELS * Cs values) stays in L1 while each plane is written PIXELS
// contiguous values at a time (about 2.5x faster than torch's copy of the permuted view).
constexpr i64 PIXELS = 64;

template <typename T, typename S>
void to_planar(const T *src, S *dst, i64 N, i64 C, i64 Cs, i64 P, int nthreads) {
    const i64 blocks = (P + PIXELS - 1) / PIXELS;
#pragma omp parallel for schedule(static) num_threads(thread_count(nthreads))
    for (i64 b = 0; b < N * blocks; ++b) {
        const i64 n = b / blocks, p0 = b % blocks * PIXELS, pn = std::min(PIXELS, P - p0);
        const T *in = src + (n * P + p0) * Cs;
        for (i64 c = 0; c < C; ++c) {
            S *out = dst + (n * C + c) * P + p0;
            for (i64 p = 0; p < pn; ++p) out[p] = convert<S>(in[p * Cs + c]);
        }
    }
}

// Channel block width for a channel stride: the largest of 16, 8, 4 that divides it and fills at most
// 64 bytes (one AVX-512 register; wider blocks of doubles gain nothing and slow the build down).
template <typename T>
inline int block_width(i64 Cs) {
    return Cs % 16 == 0 && sizeof(T) <= 4 ? 16 : (Cs % 8 == 0 ? 8 : 4);
}

template <typename T, typename S>
using ForwardFn = void (*)(const S *, Operand, Operand, Operand, S *, i64, i64, i64, i64, i64, i64, i64, i64, i64,
                           int, int);
template <typename T, typename S>
using BackwardFn = void (*)(const S *, Operand, Operand, Operand, const S *, int, T *, Gradient, Gradient, Gradient,
                            i64, i64, i64, i64, i64, i64, i64, i64, i64, int);

template <typename T, typename S, bool FLOOR>
ForwardFn<T, S> pick_forward(int vb) {
    if constexpr (sizeof(T) <= 4) {
        if (vb == 16) return forward<T, S, 16, FLOOR>;
    }
    return vb == 8 ? forward<T, S, 8, FLOOR> : forward<T, S, 4, FLOOR>;
}

template <typename T, typename S, bool FLOOR>
BackwardFn<T, S> pick_backward(int vb) {
    if constexpr (sizeof(T) <= 4) {
        if (vb == 16) return backward<T, S, 16, FLOOR>;
    }
    return vb == 8 ? backward<T, S, 8, FLOOR> : backward<T, S, 4, FLOOR>;
}

// Arguments the kernels cannot take: 1 = channel stride, 2 = image too large for 32-bit pixel indices.
inline int check(i64 C, i64 Cs, i64 Hp, i64 Wp, i64 W, i64 F, i64 D) {
    if (Cs % 4 != 0 || Cs < C) return 1;
    if (Hp * Wp >= (i64{1} << 31) || W + (F - 1) * D >= (i64{1} << 30)) return 2;
    return 0;
}

}  // namespace

// C ABI; each returns 0, or a nonzero status for arguments it cannot take (3 = unknown layout). The input is channels-last
// with channel stride Cs (a multiple of 4, >= C, extra channels zero), stored as S; the output and
// grad_output are (N, C, H, W) in S; weights, offsets and all gradients are T, and grad_input (or
// null) is channels-last like the input, in T, and must be zeroed. The planar function converts
// channels-last (N, P, Cs) pixels of T to (N, C, P) planes of S. Suffixes: f32 and f64 (S = T).
#define ADACOF_CPU_EXPORT(SUFFIX, T, S)                                                                       \
    extern "C" int adacof_cpu_forward_##SUFFIX(const S *input, const T *weight, const T *offset_i,            \
                                               const T *offset_j, S *output, i64 N, i64 C, i64 Cs, i64 Hp,    \
                                               i64 Wp, i64 H, i64 W, i64 F, i64 D, int floor_rule,            \
                                               int nthreads) {                                                \
        if (const int status = check(C, Cs, Hp, Wp, W, F, D)) return status;                                  \
        const int vb = block_width<T>(Cs);                                                                    \
        const ForwardFn<T, S> run = floor_rule ? pick_forward<T, S, true>(vb) : pick_forward<T, S, false>(vb); \
        run(input, {weight, PLANES}, {offset_i, PLANES}, {offset_j, PLANES}, output, N, C, Cs, Hp, Wp, H, W, F, \
            D, 0, nthreads);                                                                                     \
        return 0;                                                                                             \
    }                                                                                                         \
    extern "C" int adacof_cpu_backward_##SUFFIX(                                                              \
        const S *input, const T *weight, const T *offset_i, const T *offset_j, const S *grad_output,         \
        T *grad_input, T *grad_weight, T *grad_offset_i, T *grad_offset_j, i64 N, i64 C, i64 Cs, i64 Hp,      \
        i64 Wp, i64 H, i64 W, i64 F, i64 D, int floor_rule, int nthreads) {                                   \
        if (const int status = check(C, Cs, Hp, Wp, W, F, D)) return status;                                  \
        const int vb = block_width<T>(Cs);                                                                    \
        const BackwardFn<T, S> run =                                                                          \
            floor_rule ? pick_backward<T, S, true>(vb) : pick_backward<T, S, false>(vb);                      \
        run(input, {weight, PLANES}, {offset_i, PLANES}, {offset_j, PLANES}, grad_output, 0, grad_input,     \
            {grad_weight, PLANES}, {grad_offset_i, PLANES}, {grad_offset_j, PLANES}, N, C, Cs, Hp, Wp, H, W, F, \
            D, nthreads);                                                                                     \
        return 0;                                                                                             \
    }                                                                                                         \
    extern "C" int adacof_cpu_planar_##SUFFIX(const T *src, S *dst, i64 N, i64 C, i64 Cs, i64 P, int nthreads) { \
        if (Cs < C) return 1;                                                                                 \
        to_planar(src, dst, N, C, Cs, P, nthreads);                                                           \
        return 0;                                                                                             \
    }

ADACOF_CPU_EXPORT(f32, float, float)
ADACOF_CPU_EXPORT(f64, double, double)

// The float32 forward with each of weight, offset_i and offset_j in its own Layout (0 = float32 planes,
// 1 = float32 channels_last pixels, 2 = bf16 channels_last pixels) and the output as planes (0) or as
// channels_last pixels (1), (N, H, W, C); otherwise as adacof_cpu_forward_f32.
extern "C" int adacof_cpu_forward_layouts_f32(const float *input, const void *weight, const void *offset_i,
                                              const void *offset_j, float *output, i64 N, i64 C, i64 Cs, i64 Hp,
                                              i64 Wp, i64 H, i64 W, i64 F, i64 D, int weight_layout,
                                              int offset_i_layout, int offset_j_layout, int output_layout,
                                              int floor_rule, int nthreads) {
    if (const int status = check(C, Cs, Hp, Wp, W, F, D)) return status;
    for (int layout : {weight_layout, offset_i_layout, offset_j_layout}) {
        if (layout < PLANES || layout > PIXELS_BF16) return 3;
    }
    if (output_layout != PLANES && output_layout != PIXELS_T) return 3;
    const int vb = block_width<float>(Cs);
    const ForwardFn<float, float> run =
        floor_rule ? pick_forward<float, float, true>(vb) : pick_forward<float, float, false>(vb);
    run(input, {weight, weight_layout}, {offset_i, offset_i_layout}, {offset_j, offset_j_layout}, output, N, C, Cs,
        Hp, Wp, H, W, F, D, output_layout == PIXELS_T, nthreads);
    return 0;
}

// Channels-last bf16 (N, P, Cs) to float32 (N, C, P) planes in one pass: the warp's upcast of weights
// and offsets that come out of bf16 convolutions in channels_last memory format.
extern "C" int adacof_cpu_planar_bf16_f32(const bf16 *src, float *dst, i64 N, i64 C, i64 Cs, i64 P, int nthreads) {
    if (Cs < C) return 1;
    to_planar(src, dst, N, C, Cs, P, nthreads);
    return 0;
}

// The float32 backward with weight, offset_i and offset_j each in its own Layout (as in the forward
// above); each gradient is written in its argument's Layout (so bf16 channels_last for a bf16
// channels_last argument), and grad_output is (N, C, H, W) planes (go_layout 0) or channels_last
// pixels (N, H, W, C) (1). Otherwise as adacof_cpu_backward_f32.
extern "C" int adacof_cpu_backward_layouts_f32(const float *input, const void *weight, const void *offset_i,
                                               const void *offset_j, const float *grad_output, float *grad_input,
                                               void *grad_weight, void *grad_offset_i, void *grad_offset_j, i64 N,
                                               i64 C, i64 Cs, i64 Hp, i64 Wp, i64 H, i64 W, i64 F, i64 D,
                                               int weight_layout, int offset_i_layout, int offset_j_layout,
                                               int go_layout, int floor_rule, int nthreads) {
    if (const int status = check(C, Cs, Hp, Wp, W, F, D)) return status;
    for (int layout : {weight_layout, offset_i_layout, offset_j_layout}) {
        if (layout < PLANES || layout > PIXELS_BF16) return 3;
    }
    if (go_layout != PLANES && go_layout != PIXELS_T) return 3;
    const int vb = block_width<float>(Cs);
    const BackwardFn<float, float> run =
        floor_rule ? pick_backward<float, float, true>(vb) : pick_backward<float, float, false>(vb);
    run(input, {weight, weight_layout}, {offset_i, offset_i_layout}, {offset_j, offset_j_layout}, grad_output,
        go_layout == PIXELS_T, grad_input, {grad_weight, weight_layout}, {grad_offset_i, offset_i_layout},
        {grad_offset_j, offset_j_layout}, N, C, Cs, Hp, Wp, H, W, F, D, nthreads);
    return 0;
}

// g_Spatial's channel means of weight * offset, for channels_last (N, H, W, C) rows of P pixels: one
// pass over the weights and both offsets of a kernel set (torch would make the fp32 products and their
// mixed-dtype gradients in separate passes over the 121-channel tensors). Each of weight, offset_i and
// offset_j is float32 or bf16 (Layout PIXELS_T or PIXELS_BF16); accumulation in float32.
namespace {

constexpr int MEAN_LANES = 16;

template <typename SW, typename SO>
void channel_means(const SW *weight, const SO *offset_i, const SO *offset_j, float *mean_i, float *mean_j, i64 P,
                   i64 C, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(thread_count(nthreads))
    for (i64 p = 0; p < P; ++p) {
        const SW *w = weight + p * C;
        const SO *a = offset_i + p * C, *b = offset_j + p * C;
        float sa[MEAN_LANES] = {}, sb[MEAN_LANES] = {};
        i64 c = 0;
        for (; c + MEAN_LANES <= C; c += MEAN_LANES) {
            for (int l = 0; l < MEAN_LANES; ++l) {
                const float wv = widen<float>(w[c + l]);
                sa[l] += wv * widen<float>(a[c + l]);
                sb[l] += wv * widen<float>(b[c + l]);
            }
        }
        for (int l = 0; c + l < C; ++l) {
            const float wv = widen<float>(w[c + l]);
            sa[l] += wv * widen<float>(a[c + l]);
            sb[l] += wv * widen<float>(b[c + l]);
        }
        float ta = 0.0f, tb = 0.0f;
        for (int l = 0; l < MEAN_LANES; ++l) {
            ta += sa[l];
            tb += sb[l];
        }
        mean_i[p] = ta / static_cast<float>(C);
        mean_j[p] = tb / static_cast<float>(C);
    }
}

// Gradients of channel_means: with s = grad_mean / C (the mean's gradient, as torch's mean backward
// computes it), grad_weight = s_i * offset_i + s_j * offset_j, grad_offset_i = s_i * weight and
// grad_offset_j = s_j * weight, in float32 and stored in each argument's dtype (bf16 rounded to
// nearest even). Products and their sum are not contracted into fused multiply-adds, so float32
// arguments get the same bits as torch's autograd of the product and mean.
template <typename SW, typename SO>
__attribute__((optimize("fp-contract=off"))) void channel_means_backward(
    const SW *weight, const SO *offset_i, const SO *offset_j, const float *grad_i, const float *grad_j,
    SW *grad_weight, SO *grad_offset_i, SO *grad_offset_j, i64 P, i64 C, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(thread_count(nthreads))
    for (i64 p = 0; p < P; ++p) {
        const float si = grad_i[p] / static_cast<float>(C), sj = grad_j[p] / static_cast<float>(C);
        const i64 at = p * C;
        for (i64 c = 0; c < C; ++c) {
            const float wv = widen<float>(weight[at + c]);
            const float ti = si * widen<float>(offset_i[at + c]);
            const float tj = sj * widen<float>(offset_j[at + c]);
            grad_weight[at + c] = narrow<SW>(ti + tj);
            grad_offset_i[at + c] = narrow<SO>(si * wv);
            grad_offset_j[at + c] = narrow<SO>(sj * wv);
        }
    }
}

template <typename SW, typename SO>
int channel_means_run(const void *w, const void *a, const void *b, float *mi, float *mj, i64 P, i64 C,
                      int nthreads) {
    channel_means(static_cast<const SW *>(w), static_cast<const SO *>(a), static_cast<const SO *>(b), mi, mj, P, C,
                  nthreads);
    return 0;
}

template <typename SW, typename SO>
int channel_means_backward_run(const void *w, const void *a, const void *b, const float *gi, const float *gj,
                               void *gw, void *ga, void *gb, i64 P, i64 C, int nthreads) {
    channel_means_backward(static_cast<const SW *>(w), static_cast<const SO *>(a), static_cast<const SO *>(b), gi, gj,
                           static_cast<SW *>(gw), static_cast<SO *>(ga), static_cast<SO *>(gb), P, C, nthreads);
    return 0;
}

}  // namespace

// mean_i[p] = mean over c of weight[p, c] * offset_i[p, c] (likewise j) for P pixels of C channels;
// weight_layout and offset_layout are PIXELS_T (float32) or PIXELS_BF16 (both offsets share one).
extern "C" int adacof_cpu_channel_means(const void *weight, const void *offset_i, const void *offset_j,
                                        float *mean_i, float *mean_j, i64 P, i64 C, int weight_layout,
                                        int offset_layout, int nthreads) {
    const bool wb = weight_layout == PIXELS_BF16, ob = offset_layout == PIXELS_BF16;
    if ((!wb && weight_layout != PIXELS_T) || (!ob && offset_layout != PIXELS_T) || C < 1) return 3;
    if (wb) {
        return ob ? channel_means_run<bf16, bf16>(weight, offset_i, offset_j, mean_i, mean_j, P, C, nthreads)
                  : channel_means_run<bf16, float>(weight, offset_i, offset_j, mean_i, mean_j, P, C, nthreads);
    }
    return ob ? channel_means_run<float, bf16>(weight, offset_i, offset_j, mean_i, mean_j, P, C, nthreads)
              : channel_means_run<float, float>(weight, offset_i, offset_j, mean_i, mean_j, P, C, nthreads);
}

// Gradients of adacof_cpu_channel_means for the float32 mean gradients grad_i, grad_j (P values each);
// each argument's gradient is written in its layout/dtype.
extern "C" int adacof_cpu_channel_means_backward(const void *weight, const void *offset_i, const void *offset_j,
                                                 const float *grad_i, const float *grad_j, void *grad_weight,
                                                 void *grad_offset_i, void *grad_offset_j, i64 P, i64 C,
                                                 int weight_layout, int offset_layout, int nthreads) {
    const bool wb = weight_layout == PIXELS_BF16, ob = offset_layout == PIXELS_BF16;
    if ((!wb && weight_layout != PIXELS_T) || (!ob && offset_layout != PIXELS_T) || C < 1) return 3;
    auto run = wb ? (ob ? channel_means_backward_run<bf16, bf16> : channel_means_backward_run<bf16, float>)
                  : (ob ? channel_means_backward_run<float, bf16> : channel_means_backward_run<float, float>);
    return run(weight, offset_i, offset_j, grad_i, grad_j, grad_weight, grad_offset_i, grad_offset_j, P, C, nthreads);
}

// Backward of a float32 softmax over rows of C values (the kernel weights' softmax over the last dim of
// channels_last (N, H, W, C) views) whose input was bf16: grad_x = y * (grad_y - sum(grad_y * y)) in
// float32, written as bf16 (rounded to nearest even) in the same pass, where torch writes the float32
// gradient and then converts it.
extern "C" int adacof_cpu_softmax_backward_bf16(const float *y, const float *grad_y, bf16 *grad_x, i64 P, i64 C,
                                               int nthreads) {
    if (C < 1) return 3;
#pragma omp parallel for schedule(static) num_threads(thread_count(nthreads))
    for (i64 p = 0; p < P; ++p) {
        const float *yr = y + p * C, *gr = grad_y + p * C;
        float s[MEAN_LANES] = {};
        i64 c = 0;
        for (; c + MEAN_LANES <= C; c += MEAN_LANES) {
            for (int l = 0; l < MEAN_LANES; ++l) s[l] += gr[c + l] * yr[c + l];
        }
        for (int l = 0; c + l < C; ++l) s[l] += gr[c + l] * yr[c + l];
        float dot = 0.0f;
        for (int l = 0; l < MEAN_LANES; ++l) dot += s[l];
        bf16 *out = grad_x + p * C;
        for (i64 k = 0; k < C; ++k) out[k] = narrow<bf16>(yr[k] * (gr[k] - dot));
    }
    return 0;
}
