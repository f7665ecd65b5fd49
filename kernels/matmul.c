/*
 * kernels/matmul.c - register-blocked f32 matmul with a fixed per-element
 * accumulation order (see matmul.h for the contract).
 *
 * Schedule: the caller's column range is cut into panels of MM_NB rows of W
 * (MM_NB * K floats, a few tens of KiB, stays in L2 while every row of x
 * streams past it).  Inside a panel an MR x NR tile of outputs keeps MR*NR
 * accumulators of 8 lanes in registers; each step over k loads 8 floats of
 * NR rows of W and of MR rows of x.  Tile shapes differ per instruction set
 * (SSE2 2x2, AVX2 4x3, AVX-512VL 6x4, and 1xN for a single row), which does
 * not change any element's arithmetic; the variant is picked at run time
 * from cpuid, so the build needs no -march.  K tails (K % 8) are added lane by lane in scalar code with
 * the same lane assignment, so every variant and every tile shape computes
 * bit-identical results.
 */
#include "matmul.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* GCC vector extension: 8 floats; unaligned, may alias float. */
typedef float mm_v8 __attribute__((vector_size(32), aligned(4), __may_alias__));

enum { MM_NB = 32 };

/* A macro, not a function: returning a 32-byte vector by value from code
 * compiled without AVX changes the ABI.  mm_v8 is declared with 4-byte
 * alignment and may_alias, so this is an unaligned, alias-safe load. */
#define MM_LOAD(v, p)                                                         \
    do {                                                                      \
        if (WIDE)                                                             \
            (v) = *(const mm_v8 *)(const void *)(p);                          \
        else                                                                  \
            memcpy(&(v), (p), sizeof(v));                                     \
    } while (0)

static inline __attribute__((always_inline)) float mm_reduce(const float l[8]) {
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* 8 bf16 weights widened exactly to f32: each becomes the high half of a
 * 32-bit lane whose low half is zero.  Interleaving with a zero vector
 * compiles to one permute + one unpack on AVX2 (a widening convert and a
 * shift take five instructions with GCC 12). */
typedef uint16_t mm_h8 __attribute__((vector_size(16), aligned(2), __may_alias__));
typedef uint16_t mm_h16 __attribute__((vector_size(32)));
#define MM_LOADH(v, p)                                                        \
    do {                                                                      \
        mm_h8 h_, z_ = {0, 0, 0, 0, 0, 0, 0, 0};                              \
        if (WIDE)                                                             \
            h_ = *(const mm_h8 *)(const void *)(p);                           \
        else                                                                  \
            memcpy(&h_, (p), sizeof h_);                                      \
        mm_h16 r_ = __builtin_shufflevector(z_, h_, 0, 8, 0, 9, 0, 10, 0, 11, \
                                            0, 12, 0, 13, 0, 14, 0, 15);      \
        (v) = (mm_v8)r_;                                                      \
    } while (0)

/* One MR x NR tile; MR, NR, WIDE and BF are constants after inlining.  WIDE
 * selects the load idiom each target compiles best (a direct unaligned
 * vector load for AVX2, memcpy for SSE2); BF says W holds bf16 values,
 * widened exactly on load.  The arithmetic is identical in every case. */
static inline __attribute__((always_inline)) void
mm_tile(const int MR, const int NR, const int WIDE, const int BF, const float *x, int ldx,
        const void *wp, int ldw, float *y, int ldy, int K) {
    const float *w = wp;
    const uint16_t *wh = wp;
    mm_v8 acc[6][8];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++)
            acc[i][j] = (mm_v8){0, 0, 0, 0, 0, 0, 0, 0};
    const int K8 = K & ~7;
    for (int k = 0; k < K8; k += 8) {
        mm_v8 wv[8];
        for (int j = 0; j < NR; j++) {
            if (BF)
                MM_LOADH(wv[j], wh + (size_t)j * ldw + k);
            else
                MM_LOAD(wv[j], w + (size_t)j * ldw + k);
        }
        for (int i = 0; i < MR; i++) {
            mm_v8 xv;
            MM_LOAD(xv, x + (size_t)i * ldx + k);
            for (int j = 0; j < NR; j++)
                acc[i][j] += xv * wv[j];
        }
    }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) {
            float l[8]; /* AVX2: by subscript (taking acc's address keeps it
                           out of registers); SSE2 compiles memcpy better */
            if (WIDE)
                for (int q = 0; q < 8; q++)
                    l[q] = acc[i][j][q];
            else
                memcpy(l, &acc[i][j], sizeof l);
            for (int k = K8; k < K; k++) {
                float wk = BF ? asa_bf16_to_f32(wh[(size_t)j * ldw + k])
                              : w[(size_t)j * ldw + k];
                float p = x[(size_t)i * ldx + k] * wk;
                l[k - K8] += p;
            }
            y[(size_t)i * ldy + j] = mm_reduce(l);
        }
}

#define MM_CASE(mr, nr)                                                       \
    case (mr) * 16 + (nr):                                                    \
        mm_tile(mr, nr, WIDE_, BF_, xr, ldx, wr, ldw, yr, ldy, K);            \
        break;

/* A driver per variant: panels, then MRMAX x NRMAX tiles (smaller at the
 * edges).  A single row (decode) uses wider 1 x NR1MAX tiles: with one row
 * the accumulators are the only independent add chains, and more of them
 * hide the add latency. */
#define MM_DRIVER(NAME, ATTR, WIDE, BF, MRMAX, NRMAX, NR1MAX, CASES)          \
    ATTR static void NAME(const float *x, int ldx, const void *w, int ldw,    \
                          float *y, int ldy, int M, int K, int n0, int n1) {  \
        const int WIDE_ = WIDE, BF_ = BF;                                     \
        const size_t esz = BF ? sizeof(uint16_t) : sizeof(float);             \
        for (int nb = n0; nb < n1; nb += MM_NB) {                             \
            int nbe = nb + MM_NB < n1 ? nb + MM_NB : n1;                      \
            for (int m = 0; m < M; m += MRMAX) {                              \
                int mr = M - m < MRMAX ? M - m : MRMAX;                       \
                int nrmax = mr == 1 ? NR1MAX : NRMAX;                         \
                for (int n = nb; n < nbe; n += nrmax) {                       \
                    int nr = nbe - n < nrmax ? nbe - n : nrmax;               \
                    const float *xr = x + (size_t)m * ldx;                    \
                    const void *wr = (const char *)w + (size_t)n * ldw * esz; \
                    float *yr = y + (size_t)m * ldy + n;                      \
                    switch (mr * 16 + nr) { CASES }                           \
                }                                                             \
            }                                                                 \
        }                                                                     \
    }

#define MM_CASES_2x2                                                          \
    MM_CASE(1, 1) MM_CASE(1, 2) MM_CASE(1, 3) MM_CASE(1, 4) MM_CASE(2, 1)     \
    MM_CASE(2, 2)
#define MM_CASES_4x3                                                          \
    MM_CASE(1, 1) MM_CASE(1, 2) MM_CASE(1, 3) MM_CASE(2, 1) MM_CASE(2, 2)     \
    MM_CASE(2, 3) MM_CASE(3, 1) MM_CASE(3, 2) MM_CASE(3, 3) MM_CASE(4, 1)     \
    MM_CASE(4, 2) MM_CASE(4, 3) MM_CASE(1, 4) MM_CASE(1, 5) MM_CASE(1, 6)     \
    MM_CASE(1, 7) MM_CASE(1, 8)

/* bf16 weights with many rows of x (prefill): widen a panel of W rows
 * once into an f32 buffer on the stack and run the f32 kernel over it, so the
 * widening is paid once per panel instead of once per row tile.  Few rows
 * (decode) read the bf16 bits directly: half the bytes. */
enum { MM_PANEL_FLOATS = 16384 }; /* 64 KiB of stack */
#define MM_DRIVER_BFP(NAME, ATTR, F32, BF)                                    \
    ATTR static void NAME(const float *x, int ldx, const void *w, int ldw,    \
                          float *y, int ldy, int M, int K, int n0, int n1) {  \
        int pr = K > 0 ? MM_PANEL_FLOATS / K : MM_NB;                         \
        if (pr > MM_NB)                                                       \
            pr = MM_NB;                                                       \
        if (M < 8 || pr < 4) {                                                \
            BF(x, ldx, w, ldw, y, ldy, M, K, n0, n1);                         \
            return;                                                           \
        }                                                                     \
        float buf[MM_PANEL_FLOATS];                                           \
        const uint16_t *wh = w;                                               \
        for (int nb = n0; nb < n1; nb += pr) {                                \
            int nbe = nb + pr < n1 ? nb + pr : n1;                            \
            for (int r = nb; r < nbe; r++)                                    \
                for (int k = 0; k < K; k++)                                   \
                    buf[(size_t)(r - nb) * K + k] =                           \
                        asa_bf16_to_f32(wh[(size_t)r * ldw + k]);             \
            F32(x, ldx, buf, K, y + nb, ldy, M, K, 0, nbe - nb);              \
        }                                                                     \
    }

MM_DRIVER(mm_cols_generic, , 0, 0, 2, 2, 4, MM_CASES_2x2)
MM_DRIVER(mm_cols_generic_bfd, , 0, 1, 2, 2, 4, MM_CASES_2x2)
MM_DRIVER_BFP(mm_cols_generic_bf, , mm_cols_generic, mm_cols_generic_bfd)

#if defined(__x86_64__) && defined(__GNUC__)
#define MM_HAVE_AVX2 1
MM_DRIVER(mm_cols_avx2, __attribute__((target("avx2"))), 1, 0, 4, 3, 8, MM_CASES_4x3)
MM_DRIVER(mm_cols_avx2_bfd, __attribute__((target("avx2"))), 1, 1, 4, 3, 8, MM_CASES_4x3)
#define MM_CASES_6x4                                                          \
    MM_CASES_4x3 MM_CASE(2, 4) MM_CASE(3, 4) MM_CASE(4, 4)                    \
    MM_CASE(5, 1) MM_CASE(5, 2) MM_CASE(5, 3) MM_CASE(5, 4) MM_CASE(6, 1)     \
    MM_CASE(6, 2) MM_CASE(6, 3) MM_CASE(6, 4)
/* AVX-512VL: the same 8-lane (256-bit) arithmetic, but 32 vector registers
 * hold a 6 x 4 tile. */
#define MM_T512 __attribute__((target("avx512f,avx512vl")))
MM_DRIVER(mm_cols_avx512, MM_T512, 1, 0, 6, 4, 8, MM_CASES_6x4)
MM_DRIVER(mm_cols_avx512_bfd, MM_T512, 1, 1, 6, 4, 8, MM_CASES_6x4)
MM_DRIVER_BFP(mm_cols_avx512_bf, MM_T512, mm_cols_avx512, mm_cols_avx512_bfd)
MM_DRIVER_BFP(mm_cols_avx2_bf, __attribute__((target("avx2"))), mm_cols_avx2, mm_cols_avx2_bfd)
#else
#define MM_HAVE_AVX2 0
#endif

/* 0 portable, 1 AVX2, 2 AVX-512VL: the best variant this CPU runs. */
static int mm_level(void) {
#if MM_HAVE_AVX2
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") ? 2
                 : __builtin_cpu_supports("avx2")                                        ? 1
                                                                                         : 0;
    }
    return cached;
#else
    return 0;
#endif
}

typedef void (*mm_cols_fn)(const float *x, int ldx, const void *w, int ldw, float *y,
                           int ldy, int M, int K, int n0, int n1);

/* The variant for isa (0, 1, 2) or NULL when this CPU or build lacks it. */
static mm_cols_fn mm_variant(int isa, bool bf16) {
    if (isa < 0 || isa > mm_level())
        return NULL;
#if MM_HAVE_AVX2
    if (isa == 2)
        return bf16 ? mm_cols_avx512_bf : mm_cols_avx512;
    if (isa == 1)
        return bf16 ? mm_cols_avx2_bf : mm_cols_avx2;
#endif
    return bf16 ? mm_cols_generic_bf : mm_cols_generic;
}

void matmul_ref(const float *x, int ldx, const float *w, int ldw, float *y,
                int ldy, int M, int N, int K) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)x[(size_t)m * ldx + k] * w[(size_t)n * ldw + k];
            y[(size_t)m * ldy + n] = (float)s;
        }
}

void matmul_f32_cols(const float *x, int ldx, const float *w, int ldw,
                     float *y, int ldy, int M, int K, int n0, int n1) {
    if (M <= 0 || n1 <= n0)
        return;
    mm_variant(mm_level(), false)(x, ldx, w, ldw, y, ldy, M, K, n0, n1);
}

void matmul_bf16w_cols(const float *x, int ldx, const uint16_t *w, int ldw,
                       float *y, int ldy, int M, int K, int n0, int n1) {
    if (M <= 0 || n1 <= n0)
        return;
    mm_variant(mm_level(), true)(x, ldx, w, ldw, y, ldy, M, K, n0, n1);
}

asa_err matmul_bf16w_cols_isa(int isa, const float *x, int ldx, const uint16_t *w,
                              int ldw, float *y, int ldy, int M, int K, int n0,
                              int n1) {
    mm_cols_fn f = mm_variant(isa, true);
    if (!f)
        return ASA_EUNSUPPORTED;
    if (M > 0 && n1 > n0)
        f(x, ldx, w, ldw, y, ldy, M, K, n0, n1);
    return ASA_OK;
}

asa_err matmul_f32_cols_isa(int isa, const float *x, int ldx, const float *w,
                            int ldw, float *y, int ldy, int M, int K, int n0,
                            int n1) {
    mm_cols_fn f = mm_variant(isa, false);
    if (!f)
        return ASA_EUNSUPPORTED;
    if (M > 0 && n1 > n0)
        f(x, ldx, w, ldw, y, ldy, M, K, n0, n1);
    return ASA_OK;
}

float matmul_dot(const float *a, const float *b, int K) {
    float y;
    matmul_f32_cols(a, K, b, K, &y, 1, 1, K, 0, 1);
    return y;
}

typedef struct mm_job {
    const float *x;
    const void *w;
    float *y;
    int ldx, ldw, ldy, M, N, K, per;
    bool bf16;
} mm_job;

static void mm_job_run(void *ctx, int task, int tid) {
    const mm_job *j = ctx;
    int n0 = task * j->per, n1 = n0 + j->per;
    if (n1 > j->N)
        n1 = j->N;
    if (j->bf16)
        matmul_bf16w_cols(j->x, j->ldx, j->w, j->ldw, j->y, j->ldy, j->M, j->K, n0, n1);
    else
        matmul_f32_cols(j->x, j->ldx, j->w, j->ldw, j->y, j->ldy, j->M, j->K, n0, n1);
}

static void mm_run(tp_pool *pool, const float *x, int ldx, const void *w, bool bf16,
                   int ldw, float *y, int ldy, int M, int N, int K) {
    /* About 4 column ranges per thread, multiples of 8 wide: enough slack
     * for dynamic claiming to balance a busy machine.  A product of less
     * than ~256K multiply-adds per thread (tens of microseconds) runs on the
     * caller alone: on a loaded machine a preempted worker holding a task
     * costs a scheduler time slice, far more than such a product. */
    int nt = tp_size(pool);
    int per = ((N + 4 * nt - 1) / (4 * nt) + 7) & ~7;
    if (nt == 1 || (double)M * N * K < 262144.0 * nt || N < 16)
        per = N > 0 ? N : 1;
    mm_job j = {x, w, y, ldx, ldw, ldy, M, N, K, per, bf16};
    tp_run(per >= N ? NULL : pool, mm_job_run, &j, (N + per - 1) / per);
}

void matmul_f32(tp_pool *pool, const float *x, int ldx, const float *w,
                int ldw, float *y, int ldy, int M, int N, int K) {
    mm_run(pool, x, ldx, w, false, ldw, y, ldy, M, N, K);
}

void matmul_bf16w(tp_pool *pool, const float *x, int ldx, const uint16_t *w,
                  int ldw, float *y, int ldy, int M, int N, int K) {
    mm_run(pool, x, ldx, w, true, ldw, y, ldy, M, N, K);
}
