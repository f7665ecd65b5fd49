/*
 * bench_attn_mma - the prefill attention kernels at the asa-1.3b shape:
 * one sequence of T tokens (default 8192) prefilled at once, H = 32 heads;
 * local layers G = 1, dg = 192, dR = 32, window 512; global layers G = 2,
 * dg = 96, block 16, top_n 16, selection_share 4 (random sets, forced
 * first/current blocks).  Times attn_mma_cuda (tensor cores) and
 * attn_latent_cuda (FFMA, the engine's plan of 16 heads per block) per
 * mode, prints ms and TFLOP/s (2 * visible keys * (dg + dR + dg) per
 * (token, head): the absorbed form) and the largest difference between the
 * two relative to max|u| (default flags), and attn_mma with hi + lo queries
 * in every mode (ASA_CUDA_MMA_QSPLIT=2), and the default without the
 * per-tile fast paths (ATTN_MMA_NOFAST, ASA_CUDA_MMA_FAST=0: the kernel as
 * first measured; its results must be bit-identical).  Last, the local
 * layer's expanded form (ATTN_MMA_VFIRST) on the same positions.
 *
 * Usage: bench_attn_mma [T] [reps]     (needs a CUDA device; exits 77 without)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "attn_mma_cuda.h"
#include "cuda_test_util.h"

#define CK(x)                                                                       \
    do {                                                                            \
        cudaError_t e_ = (x);                                                       \
        if (e_ != cudaSuccess) {                                                    \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x,              \
                    cudaGetErrorString(e_));                                        \
            exit(1);                                                                \
        }                                                                           \
    } while (0)


static void *up(const void *h, size_t n) {
    void *d;
    CK(cudaMalloc(&d, n));
    CK(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
    return d;
}

/* uniform [-1, 1) keys, rounded to bf16 bits */
static void fill_keys(uint16_t *kv, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float f = unif();
        uint32_t u;
        memcpy(&u, &f, 4);
        kv[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
}

/* 0: attn_latent, 1: attn_mma as the engine's default (hi + lo queries in
 * the compressed branch), 2: attn_mma with hi + lo queries everywhere,
 * 3: the default without the per-tile fast paths (ATTN_MMA_NOFAST),
 * 4: the expanded local form (ATTN_MMA_VFIRST) */
static asa_err run_one(const attn_params *p, int which) {
    return which == 0   ? attn_latent_cuda(p, 0)
           : which == 1 ? attn_mma_cuda(p, ATTN_MMA_QSPLIT, 0)
           : which == 2 ? attn_mma_cuda(p, ATTN_MMA_QSPLIT | ATTN_MMA_QSPLIT_ALL, 0)
           : which == 3 ? attn_mma_cuda(p, ATTN_MMA_QSPLIT | ATTN_MMA_NOFAST, 0)
                        : attn_mma_cuda(p, ATTN_MMA_VFIRST, 0);
}

static double time_ms(const attn_params *p, int which, int reps) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    if (run_one(p, which) != ASA_OK) {
        fprintf(stderr, "launch failed (kernel %d)\n", which);
        exit(1);
    }
    CK(cudaDeviceSynchronize());
    CK(cudaEventRecord(a, 0));
    for (int i = 0; i < reps; i++)
        run_one(p, which);
    CK(cudaEventRecord(b, 0));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return ms / reps;
}

int main(int argc, char **argv) {
    rs = 88172645463325252ull; /* a fixed seed: the same inputs every run */
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
        printf("bench_attn_mma: no CUDA device: skipped\n");
        return 77;
    }
    const int T = argc > 1 ? atoi(argv[1]) : 8192, reps = argc > 2 ? atoi(argv[2]) : 10;
    const int H = 32, dR = 32, B = 16, W = 512, top_n = 16, share = 4;
    const int nb = (T - 1) / B + 1;
    int32_t *pos = malloc((size_t)T * 4), *seq = calloc((size_t)T, 4), *tab = malloc((size_t)nb * 4);
    for (int t = 0; t < T; t++)
        pos[t] = t;
    for (int i = 0; i < nb; i++)
        tab[i] = (int32_t)((i * 7919L) % nb); /* scrambled pages (nb not a multiple of 7919) */
    int32_t toff = 0;
    int32_t *d_pos = up(pos, (size_t)T * 4), *d_seq = up(seq, (size_t)T * 4);
    int32_t *d_tab = up(tab, (size_t)nb * 4), *d_toff = up(&toff, 4);
    printf("bench_attn_mma: T %d, H %d, reps %d\n", T, H, reps);
    for (int layer = 0; layer < 2; layer++) {
        const int G = layer == 0 ? 1 : 2, dg = layer == 0 ? 192 : 96, S = G * dg + dR;
        const int64_t pe = (int64_t)(B + 1) * S; /* one layer per page here */
        size_t nkv = (size_t)nb * pe;
        uint16_t *kv = malloc(nkv * 2);
        fill_keys(kv, nkv);
        const int qs = 64 + dR, ld = H * qs + 2 * H + S;
        size_t nu = (size_t)T * H * dg;
        float *qt = malloc(nu * 4), *qa = malloc((size_t)T * ld * 4);
        for (size_t i = 0; i < nu; i++)
            qt[i] = unif() * 0.5f;
        for (size_t i = 0; i < (size_t)T * ld; i++)
            qa[i] = unif() * 0.5f;
        /* selection: anchors every `share` tokens choose top_n blocks
         * (block 0, the current and previous one, random others) */
        int32_t *src = malloc((size_t)T * 4), *tsel = malloc((size_t)T * G * top_n * 4);
        int32_t *tcnt = calloc((size_t)T * G, 4);
        double slc_keys = 0;
        for (int t = 0; t < T; t++) {
            src[t] = t - t % share;
            if (t % share)
                continue;
            const int cur = pos[t] / B;
            for (int g = 0; g < G; g++) {
                int32_t *d = tsel + ((size_t)t * G + g) * top_n;
                int n = 0;
                if (cur + 1 <= top_n) {
                    for (int b = 0; b <= cur; b++)
                        d[n++] = b;
                } else {
                    char *on = calloc((size_t)cur + 1, 1);
                    on[0] = on[cur] = on[cur - 1] = 1;
                    n = 3;
                    while (n < top_n) {
                        int b = (int)(rnd() % (uint32_t)cur);
                        if (!on[b]) {
                            on[b] = 1;
                            n++;
                        }
                    }
                    n = 0;
                    for (int b = 0; b <= cur; b++)
                        if (on[b])
                            d[n++] = b;
                    free(on);
                }
                tcnt[(size_t)t * G + g] = n;
            }
        }
        for (int t = 0; t < T; t++) {
            const int a = src[t];
            for (int g = 0; g < G; g++) {
                const int32_t *d = tsel + ((size_t)a * G + g) * top_n;
                for (int k = 0; k < tcnt[(size_t)a * G + g]; k++) {
                    int v = pos[t] - d[k] * B + 1;
                    slc_keys += (double)(H / G) * (v < 0 ? 0 : v > B ? B : v);
                }
            }
        }
        attn_params p = {.T = T, .H = H, .scale = 0.125f, .window = W, .n_split = 1,
                         .heads_per_block = 16,
                         .c = {.kv = up(kv, nkv * 2), .page_elems = pe, .layer_off = 0, .B = B,
                               .G = G, .dg = dg, .dR = dR, .tab = d_tab, .seq_toff = d_toff},
                         .tok_pos = d_pos, .tok_seq = d_seq, .qt = up(qt, nu * 4), .ld_qr = ld,
                         .qr_stride = qs,
                         .s = {.sel_src = up(src, (size_t)T * 4),
                               .tsel = up(tsel, (size_t)T * G * top_n * 4),
                               .tsel_cnt = up(tcnt, (size_t)T * G * 4), .Lg = 1, .ti = 0,
                               .top_n = top_n}};
        float *qa_d = up(qa, (size_t)T * ld * 4);
        p.qr = qa_d + 64;
        p.gate = qa_d + H * qs;
        float *u0, *u1, *lse, *ucmp;
        CK(cudaMalloc((void **)&u0, nu * 4));
        CK(cudaMalloc((void **)&u1, nu * 4));
        CK(cudaMalloc((void **)&ucmp, nu * 4));
        CK(cudaMalloc((void **)&lse, (size_t)T * H * 4));
        CK(cudaMemset(ucmp, 0, nu * 4));
        float *h0 = malloc(nu * 4), *h1 = malloc(nu * 4), *h2 = malloc(nu * 4);
        const int modes[2][2] = {{ATTN_LOCAL, -1}, {ATTN_CMP, ATTN_SLC}};
        for (int mi = 0; mi < 2 && modes[layer][mi] >= 0; mi++) {
            const attn_mode mode = (attn_mode)modes[layer][mi];
            p.mode = mode;
            p.u_cmp = ucmp;
            p.lse = lse;
            double keys = 0; /* visible (token, head, key) triples */
            if (mode == ATTN_LOCAL)
                for (int t = 0; t < T; t++)
                    keys += (double)H * (pos[t] + 1 < W ? pos[t] + 1 : W);
            else if (mode == ATTN_CMP)
                for (int t = 0; t < T; t++)
                    keys += (double)H * ((pos[t] + 1) / B);
            else
                keys = slc_keys;
            const double flop = 2.0 * keys * (dg + dR + dg);
            double ms[4];
            for (int w = 3; w >= 0; w--) { /* u1 ends with the default mma result */
                p.u = w && w < 3 ? u1 : u0;
                ms[w] = time_ms(&p, w, reps);
                if (w == 3)
                    CK(cudaMemcpy(h2, u0, nu * 4, cudaMemcpyDeviceToHost));
            }
            CK(cudaMemcpy(h0, u0, nu * 4, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(h1, u1, nu * 4, cudaMemcpyDeviceToHost));
            double mx = 0, err = 0;
            for (size_t i = 0; i < nu; i++) {
                if (fabs(h0[i]) > mx)
                    mx = fabs(h0[i]);
                double e = fabs((double)h1[i] - h0[i]);
                if (!(e <= err))
                    err = e; /* NaN sticks */
            }
            size_t nfd = 0; /* the fast paths change no result */
            for (size_t i = 0; i < nu; i++)
                nfd += memcmp(&h1[i], &h2[i], 4) != 0;
            const char *nm = mode == ATTN_LOCAL ? "local" : mode == ATTN_CMP ? "cmp  " : "slc  ";
            printf("%s G %d dg %3d: %.3f GFLOP  ffma %8.3f ms (%6.1f TFLOP/s)  mma %8.3f ms "
                   "(%6.1f TFLOP/s)  x%.1f  max|diff|/max|u| %.2e  mma hi+lo q %8.3f ms "
                   "(%6.1f TFLOP/s)  mma without fast paths %8.3f ms (%zu results differ)\n",
                   nm, G, dg, flop * 1e-9, ms[0], flop / ms[0] * 1e-9, ms[1],
                   flop / ms[1] * 1e-9, ms[0] / ms[1], mx > 0 ? err / mx : err, ms[2],
                   flop / ms[2] * 1e-9, ms[3], nfd);
            if (mode == ATTN_CMP) /* the selection branch mixes a real u_cmp */
                CK(cudaMemcpy(ucmp, u0, nu * 4, cudaMemcpyDeviceToDevice));
        }
        cudaFree((void *)p.c.kv);
        cudaFree((void *)p.qt);
        cudaFree(qa_d);
        cudaFree((void *)p.s.sel_src);
        cudaFree(p.s.tsel);
        cudaFree(p.s.tsel_cnt);
        cudaFree(u0);
        cudaFree(u1);
        cudaFree(ucmp);
        cudaFree(lse);
        free(kv);
        free(qt);
        free(qa);
        free(src);
        free(tsel);
        free(tcnt);
        free(h0);
        free(h1);
        free(h2);
    }
    {
        /* the expanded local form (ATTN_MMA_VFIRST, the engine's prefill
         * path for local layers): 32 heads of [v 64 | k 64] + rope 32, one
         * head a group; FLOPs 2 * keys * (64 + 32 + 64) */
        const int G = H, dg = 128, S = G * dg + dR;
        const int64_t pe = (int64_t)B * S;
        size_t nkv = (size_t)nb * pe, nu = (size_t)T * H * dg;
        uint16_t *kv = malloc(nkv * 2);
        fill_keys(kv, nkv);
        const int qs = 64 + dR, ld = H * qs;
        float *qa = malloc((size_t)T * ld * 4); /* per head [q_nope 64 | q_rope 32] */
        for (size_t i = 0; i < (size_t)T * ld; i++)
            qa[i] = unif() * 0.5f;
        float *qa_d = up(qa, (size_t)T * ld * 4), *u0;
        CK(cudaMalloc((void **)&u0, nu * 4));
        attn_params p = {.mode = ATTN_LOCAL, .T = T, .H = H, .scale = 0.125f, .window = W,
                         .n_split = 1,
                         .c = {.kv = up(kv, nkv * 2), .page_elems = pe, .layer_off = 0, .B = B,
                               .G = G, .dg = dg, .dR = dR, .tab = d_tab, .seq_toff = d_toff},
                         .tok_pos = d_pos, .tok_seq = d_seq, .qr = qa_d + 64, .ld_qr = ld,
                         .qr_stride = qs, .u = u0};
        double keys = 0;
        for (int t = 0; t < T; t++)
            keys += (double)H * (pos[t] + 1 < W ? pos[t] + 1 : W);
        const double flop = 2.0 * keys * (64 + 32 + 64), flop_abs = 2.0 * keys * (192 + 32 + 192);
        const double ms = time_ms(&p, 4, reps);
        printf("local expanded (32 heads of 64 + 64, rope 32): %.3f GFLOP  mma %8.3f ms (%6.1f "
               "TFLOP/s; the absorbed form's %.3f GFLOP at %6.1f TFLOP/s)\n",
               flop * 1e-9, ms, flop / ms * 1e-9, flop_abs * 1e-9, flop_abs / ms * 1e-9);
        cudaFree((void *)p.c.kv);
        cudaFree(qa_d);
        cudaFree(u0);
        free(kv);
        free(qa);
    }
    printf("per 24-layer prefill (12 local + 12 global): see the sum of the mma column x 12\n");
    return 0;
}
