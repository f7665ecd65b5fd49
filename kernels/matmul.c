/*
 * kernels/matmul.c - register-blocked f32 matmul with a fixed per-element
 * accumulation order (see matmul.h for the contract).
 *
 * Schedule: the caller's column range is cut into panels of MM_NB rows of W
 * (MM_NB * K floats, a few tens of KiB, stays in L2 while every row of x
 * streams past it).  Inside a panel an MR x NR tile of outputs keeps MR*NR
 * accumulators of 8 lanes in registers; each step over k loads 8 floats of
 * NR rows of W and of MR rows of x.  Tile shapes differ per instruction set
 * (more registers, bigger tiles), which does not change any element's
 * arithmetic.  K tails (K % 8) are added lane by lane in scalar code with
 * the same lane assignment, so every variant and every tile shape computes
 * bit-identical results.
 */
#include "matmul.h"

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

/* One MR x NR tile; MR, NR and WIDE are constants after inlining.  WIDE
 * selects the load idiom each target compiles best (a direct unaligned
 * vector load for AVX2, memcpy for SSE2); the arithmetic is identical. */
static inline __attribute__((always_inline)) void
mm_tile(const int MR, const int NR, const int WIDE, const float *x, int ldx, const float *w,
        int ldw, float *y, int ldy, int K) {
    mm_v8 acc[6][4];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++)
            acc[i][j] = (mm_v8){0, 0, 0, 0, 0, 0, 0, 0};
    const int K8 = K & ~7;
    for (int k = 0; k < K8; k += 8) {
        mm_v8 wv[4];
        for (int j = 0; j < NR; j++)
            MM_LOAD(wv[j], w + (size_t)j * ldw + k);
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
                float p = x[(size_t)i * ldx + k] * w[(size_t)j * ldw + k];
                l[k - K8] += p;
            }
            y[(size_t)i * ldy + j] = mm_reduce(l);
        }
}

#define MM_CASE(mr, nr)                                                       \
    case (mr) * 8 + (nr):                                                     \
        mm_tile(mr, nr, WIDE_, xr, ldx, wr, ldw, yr, ldy, K);                 \
        break;

/* A driver per variant: panels, then MRMAX x NRMAX tiles (smaller at the
 * edges). */
#define MM_DRIVER(NAME, ATTR, WIDE, MRMAX, NRMAX, CASES)                      \
    ATTR static void NAME(const float *x, int ldx, const float *w, int ldw,   \
                          float *y, int ldy, int M, int K, int n0, int n1) {  \
        const int WIDE_ = WIDE;                                               \
        for (int nb = n0; nb < n1; nb += MM_NB) {                             \
            int nbe = nb + MM_NB < n1 ? nb + MM_NB : n1;                      \
            for (int m = 0; m < M; m += MRMAX) {                              \
                int mr = M - m < MRMAX ? M - m : MRMAX;                       \
                for (int n = nb; n < nbe; n += NRMAX) {                       \
                    int nr = nbe - n < NRMAX ? nbe - n : NRMAX;               \
                    const float *xr = x + (size_t)m * ldx;                    \
                    const float *wr = w + (size_t)n * ldw;                    \
                    float *yr = y + (size_t)m * ldy + n;                      \
                    switch (mr * 8 + nr) { CASES }                            \
                }                                                             \
            }                                                                 \
        }                                                                     \
    }

#define MM_CASES_2x2 MM_CASE(1, 1) MM_CASE(1, 2) MM_CASE(2, 1) MM_CASE(2, 2)
#define MM_CASES_4x3                                                          \
    MM_CASE(1, 1) MM_CASE(1, 2) MM_CASE(1, 3) MM_CASE(2, 1) MM_CASE(2, 2)     \
    MM_CASE(2, 3) MM_CASE(3, 1) MM_CASE(3, 2) MM_CASE(3, 3) MM_CASE(4, 1)     \
    MM_CASE(4, 2) MM_CASE(4, 3)

MM_DRIVER(mm_cols_generic, , 0, 2, 2, MM_CASES_2x2)

#if defined(__x86_64__) && defined(__GNUC__)
#define MM_HAVE_AVX2 1
MM_DRIVER(mm_cols_avx2, __attribute__((target("avx2"))), 1, 4, 3, MM_CASES_4x3)
#else
#define MM_HAVE_AVX2 0
#endif

static int mm_have_avx2(void) {
#if MM_HAVE_AVX2
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return cached;
#else
    return 0;
#endif
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
#if MM_HAVE_AVX2
    if (mm_have_avx2()) {
        mm_cols_avx2(x, ldx, w, ldw, y, ldy, M, K, n0, n1);
        return;
    }
#endif
    mm_cols_generic(x, ldx, w, ldw, y, ldy, M, K, n0, n1);
}

asa_err matmul_f32_cols_isa(int isa, const float *x, int ldx, const float *w,
                            int ldw, float *y, int ldy, int M, int K, int n0,
                            int n1) {
    if (isa == 0) {
        mm_cols_generic(x, ldx, w, ldw, y, ldy, M, K, n0, n1);
        return ASA_OK;
    }
#if MM_HAVE_AVX2
    if (isa == 1 && mm_have_avx2()) {
        mm_cols_avx2(x, ldx, w, ldw, y, ldy, M, K, n0, n1);
        return ASA_OK;
    }
#endif
    return ASA_EUNSUPPORTED;
}

float matmul_dot(const float *a, const float *b, int K) {
    float y;
    matmul_f32_cols(a, K, b, K, &y, 1, 1, K, 0, 1);
    return y;
}

typedef struct mm_job {
    const float *x, *w;
    float *y;
    int ldx, ldw, ldy, M, N, K, per;
} mm_job;

static void mm_job_run(void *ctx, int task, int tid) {
    const mm_job *j = ctx;
    int n0 = task * j->per, n1 = n0 + j->per;
    if (n1 > j->N)
        n1 = j->N;
    matmul_f32_cols(j->x, j->ldx, j->w, j->ldw, j->y, j->ldy, j->M, j->K, n0, n1);
}

void matmul_f32(tp_pool *pool, const float *x, int ldx, const float *w,
                int ldw, float *y, int ldy, int M, int N, int K) {
    /* Small products are not worth a wakeup of the workers. */
    int nt = tp_size(pool);
    if (nt == 1 || (long)M * N * K < 65536 || N < 16) {
        matmul_f32_cols(x, ldx, w, ldw, y, ldy, M, K, 0, N);
        return;
    }
    /* About 4 column ranges per thread, multiples of 8 wide: enough slack
     * for dynamic claiming to balance a busy machine. */
    int per = ((N + 4 * nt - 1) / (4 * nt) + 7) & ~7;
    mm_job j = {x, w, y, ldx, ldw, ldy, M, N, K, per};
    tp_run(pool, mm_job_run, &j, (N + per - 1) / per);
}
