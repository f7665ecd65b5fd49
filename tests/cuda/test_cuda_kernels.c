/*
 * The CUDA engine's own kernels (kernels/cuda/attn_latent.cu, rope_cache.cu,
 * cb_ops.cu) against their host references: odd shapes, fresh random
 * inputs every run (seed printed; ASA_TEST_SEED repeats one), outputs
 * poisoned with NaN before each launch so that an unwritten element fails,
 * and an abs+rel tolerance (exact where the kernel's arithmetic is the
 * reference's: compressed entries, gathers, selection sets).  The sampler
 * (sample.cu) is compared with the CPU sampler eng_sample itself: tokens
 * and top-n ids exact, logprobs to a float ulp, top-p knife edges skipped
 * (see smp_knife_edge); and a chi-square test of its draws.
 * Prints one summary line.  Exits 77 without a CUDA device.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "attn_latent_cuda.h"
#include "cb_ops_cuda.h"
#include "gemv_cuda.h"
#include "rope_cache_cuda.h"
#include "silu_mul_cuda.h"
#include "sample.h"
#include "sample_cuda.h"
#include "cuda_test_util.h"

static int n_checked, n_kernels;


static void fill_f32(float *p, size_t n, float s) {
    for (size_t i = 0; i < n; i++)
        p[i] = unif() * s;
}
static void fill_bf16(uint16_t *p, size_t n, float s) {
    for (size_t i = 0; i < n; i++)
        p[i] = asa_f32_to_bf16(unif() * s);
}


/* |a - b| <= atol + rtol |b|, NaN where and only where b is NaN. */
static void cmp_f32(const char *what, const float *a, const float *b, size_t n, double atol,
                    double rtol) {
    for (size_t i = 0; i < n; i++) {
        bool an = isnan(a[i]), bn = isnan(b[i]);
        if (an != bn ||
            (!bn && a[i] != b[i] && !(fabs((double)a[i] - b[i]) <= atol + rtol * fabs(b[i]))))
            fail_msg("%s: element %zu: got %.8g, want %.8g", what, i, a[i], b[i]);
    }
    n_checked += (int)n;
}
static void cmp_bf16(const char *what, const uint16_t *a, const uint16_t *b, size_t n,
                     double atol, double rtol) {
    for (size_t i = 0; i < n; i++) {
        float x = asa_bf16_to_f32(a[i]), y = asa_bf16_to_f32(b[i]);
        bool an = isnan(x), bn = isnan(y);
        if (an != bn || (!bn && x != y && !(fabs((double)x - y) <= atol + rtol * fabs(y))))
            fail_msg("%s: element %zu: got %.8g, want %.8g", what, i, x, y);
    }
    n_checked += (int)n;
}
static void cmp_i32(const char *what, const int32_t *a, const int32_t *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            fail_msg("%s: element %zu: got %d, want %d", what, i, a[i], b[i]);
    n_checked += (int)n;
}

/* ---- a random paged cache with two sequences --------------------------------- */

typedef struct pcache {
    int G, dg, dR, S, B, nlayer, ti, npages;
    int64_t page_elems, layer_off;
    uint16_t *kv;          /* host */
    int T;
    int32_t pos[48], seq[48], tab[256], toff[2];
} pcache;

/* Two sequences, tokens at the given positions; tables map every block up
 * to the last position to distinct random pages. */
static void pcache_make(pcache *c, int G, int dg, int dR, int B, const int *pos0, int ntok0,
                        const int *pos1, int ntok1) {
    c->G = G;
    c->dg = dg;
    c->dR = dR;
    c->S = G * dg + dR;
    c->B = B;
    c->nlayer = 2;
    c->ti = 1;
    c->page_elems = (int64_t)c->nlayer * (B + 1) * c->S;
    c->layer_off = (int64_t)c->ti * (B + 1) * c->S;
    int nb0 = pos0[ntok0 - 1] / B + 1, nb1 = pos1[ntok1 - 1] / B + 1;
    c->npages = nb0 + nb1 + 3;
    int32_t *perm = malloc((size_t)c->npages * sizeof(int32_t));
    for (int i = 0; i < c->npages; i++)
        perm[i] = i;
    for (int i = c->npages - 1; i > 0; i--) {
        int j = randint(i + 1);
        int32_t x = perm[i];
        perm[i] = perm[j];
        perm[j] = x;
    }
    for (int i = 0; i < nb0 + nb1; i++)
        c->tab[i] = perm[i];
    free(perm);
    c->toff[0] = 0;
    c->toff[1] = nb0;
    c->T = ntok0 + ntok1;
    for (int i = 0; i < ntok0; i++) {
        c->pos[i] = pos0[i];
        c->seq[i] = 0;
    }
    for (int i = 0; i < ntok1; i++) {
        c->pos[ntok0 + i] = pos1[i];
        c->seq[ntok0 + i] = 1;
    }
    size_t n = (size_t)c->npages * c->page_elems;
    c->kv = malloc(n * sizeof(uint16_t));
    fill_bf16(c->kv, n, 1.0f);
}

/* ---- rope_cache inputs --------------------------------------------------------- */

/* The host inputs of a rope_cache launch besides qa and the cache: the
 * cos / sin tables of positions 0 .. np - 1 for rope dimension dR and nw_n
 * latent norm weights (random). */
typedef struct rope_in {
    int np, half, nw_n;
    float *cs, *sn, *nw;
} rope_in;

static rope_in rope_in_make(int np, int dR, int nw_n) {
    rope_in r = {.np = np, .half = dR / 2, .nw_n = nw_n};
    r.cs = malloc((size_t)np * r.half * 4);
    r.sn = malloc((size_t)np * r.half * 4);
    r.nw = malloc((size_t)nw_n * 4);
    fill_f32(r.nw, (size_t)nw_n, 1.5f);
    for (int q = 0; q < np; q++)
        for (int k = 0; k < r.half; k++) {
            const double a = q * pow(10000.0, -2.0 * k / dR);
            r.cs[q * r.half + k] = (float)cos(a);
            r.sn[q * r.half + k] = (float)sin(a);
        }
    return r;
}

static void rope_in_free(rope_in *r) {
    free(r->cs);
    free(r->sn);
    free(r->nw);
}

/* p's read-only inputs: r's tables and weights and c's positions,
 * sequences and block tables, on the device (dev) or as the host arrays */
static void rope_inputs(rope_cache_params *p, const rope_in *r, const pcache *c, bool dev) {
    const size_t nt = (size_t)r->np * r->half * 4;
    p->cosv = dev ? dup_dev(r->cs, nt) : r->cs;
    p->sinv = dev ? dup_dev(r->sn, nt) : r->sn;
    p->norm_w = dev ? dup_dev(r->nw, (size_t)r->nw_n * 4) : r->nw;
    p->tok_pos = dev ? dup_dev(c->pos, (size_t)c->T * 4) : c->pos;
    p->tok_seq = dev ? dup_dev(c->seq, (size_t)c->T * 4) : c->seq;
    p->tab = dev ? dup_dev(c->tab, sizeof c->tab) : c->tab;
    p->seq_toff = dev ? dup_dev(c->toff, sizeof c->toff) : c->toff;
}

static void rope_inputs_free_dev(const rope_cache_params *d) {
    cudaFree((void *)d->cosv);
    cudaFree((void *)d->sinv);
    cudaFree((void *)d->norm_w);
    cudaFree((void *)d->tok_pos);
    cudaFree((void *)d->tok_seq);
    cudaFree((void *)d->tab);
    cudaFree((void *)d->seq_toff);
}

/* ---- tests ----------------------------------------------------------------- */

/* two: the row as the two halves of a stacked product (qa2); pad: row
 * elements past the parts (6: rows of a multiple of 4, the kernel's float4
 * path for qa2) */
static void rope_cache_case(int two, int pad) {
    const int H = 3, dh = 5, dR = 6, G = 3, dg = 13, B = 5;
    const int p0[] = {3, 4, 5, 6}, p1[] = {10, 11, 12};
    pcache c;
    pcache_make(&c, G, dg, dR, B, p0, 4, p1, 3);
    const int T = c.T, ld = H * (dh + dR) + c.S + pad;
    rope_in ri = rope_in_make(13, dR, G * dg);
    float *qa = malloc((size_t)T * ld * 4);
    float *qa2 = two ? malloc((size_t)T * ld * 4) : NULL;
    fill_f32(qa, (size_t)T * ld, 2.0f);
    if (two)
        fill_f32(qa2, (size_t)T * ld, 1.0f);
    size_t nkv = (size_t)c.npages * c.page_elems;
    for (size_t i = 0; i < nkv; i++)
        c.kv[i] = 0xffff; /* poison: untouched entries stay NaN on both sides */
    rope_cache_params p = {.T = T, .H = H, .dh = dh, .dR = dR, .G = G, .dg = dg, .eps = 1e-5f,
                           .ld_qa = ld, .page_elems = c.page_elems, .layer_off = c.layer_off,
                           .B = B};
    rope_cache_params d = p;
    d.qa = dup_dev(qa, (size_t)T * ld * 4);
    rope_inputs(&d, &ri, &c, true);
    d.kv = dup_dev(c.kv, nkv * 2);
    if (two)
        d.qa2 = dup_dev(qa2, (size_t)T * ld * 4);
    assert_int_equal(rope_cache_cuda(&d, 0), ASA_OK);
    if (two) /* the reference on the sum, computed here */
        for (size_t i = 0; i < (size_t)T * ld; i++)
            qa[i] += qa2[i];
    p.qa = qa;
    rope_inputs(&p, &ri, &c, false);
    p.kv = c.kv;
    rope_cache_ref(&p);
    float *qg = malloc((size_t)T * ld * 4);
    uint16_t *kg = malloc(nkv * 2);
    get_dev(qg, d.qa, (size_t)T * ld * 4);
    get_dev(kg, d.kv, nkv * 2);
    cmp_f32("rope_cache qa", qg, qa, (size_t)T * ld, 1e-5, 1e-5);
    cmp_bf16("rope_cache entries", kg, c.kv, nkv, 1e-6, 1.6e-2);
    n_kernels++;
    cudaFree(d.qa);
    rope_inputs_free_dev(&d);
    cudaFree(d.kv);
    cudaFree((void *)d.qa2);
    free(qa);
    free(qa2);
    rope_in_free(&ri);
    free(qg);
    free(kg);
    free(c.kv);
}

static void test_rope_cache(void **st) {
    (void)st;
    rope_cache_case(0, 3);
    rope_cache_case(1, 3);
    rope_cache_case(1, 6);
}

/* Attention in one mode at two head chunkings, and (CMP) the block choice. */
static void run_attn(attn_mode mode) {
    const int G = 3, dg = 11, dR = 6, B = 8, H = 6, top_n = 6, Lg = 2, ti = 1;
    const int p0[] = {148, 149, 150, 151, 152}, p1[] = {0, 22, 23};
    pcache c;
    pcache_make(&c, G, dg, dR, B, p0, 5, p1, 3);
    const int T = c.T, ld = H * 20 + 2 * H + 5, qs = 20; /* qr at h*qs; gates after */
    float *qt = malloc((size_t)T * H * dg * 4), *qa = malloc((size_t)T * ld * 4);
    fill_f32(qt, (size_t)T * H * dg, 1.0f);
    fill_f32(qa, (size_t)T * ld, 1.0f);
    float *ucmp = malloc((size_t)T * H * dg * 4);
    fill_f32(ucmp, (size_t)T * H * dg, 1.0f);
    /* selection sets: tokens 0, 2, 5 use their own sets, 1 and 3 another
     * token's, 4 and 6 and 7 a slot's */
    const int nslots = 3;
    int32_t src[16] = {0, 0, 2, 2, -2, 5, -3, -3};
    int32_t *tsel = malloc((size_t)T * G * top_n * 4), *tcnt = malloc((size_t)T * G * 4);
    int32_t *ssel = malloc((size_t)nslots * Lg * G * top_n * 4),
            *scnt = malloc((size_t)nslots * Lg * G * 4);
    for (int i = 0; i < T * G * top_n; i++)
        tsel[i] = -7;
    for (int i = 0; i < nslots * Lg * G * top_n; i++)
        ssel[i] = -7;
    memset(tcnt, 0, (size_t)T * G * 4);
    memset(scnt, 0, (size_t)nslots * Lg * G * 4);
    for (int t = 0; t < T; t++)
        for (int g = 0; g < G; g++) {
            int cur = c.pos[t] / B, cnt = 1 + randint(top_n < cur + 1 ? top_n : cur + 1);
            int32_t *dst;
            int32_t *dc;
            if (src[t] >= 0) {
                if (src[t] != t)
                    continue;
                dst = tsel + ((size_t)t * G + g) * top_n;
                dc = tcnt + (size_t)t * G + g;
            } else {
                size_t k = ((size_t)(-src[t] - 1) * Lg + ti) * G + g;
                dst = ssel + k * top_n;
                dc = scnt + k;
            }
            /* cnt distinct ascending blocks <= cur, always including cur */
            int n = 0;
            for (int b = 0; b < cur && n < cnt - 1; b++)
                if (randint(cur) < cnt)
                    dst[n++] = b;
            dst[n++] = cur;
            *dc = n;
        }
    attn_params p = {.mode = mode, .T = T, .H = H, .scale = 0.3f, .window = 70, .n_split = 1,
                     .c = {.page_elems = c.page_elems, .layer_off = c.layer_off, .B = B, .G = G,
                           .dg = dg, .dR = dR},
                     .ld_qr = ld, .qr_stride = qs,
                     .s = {.Lg = Lg, .ti = ti, .top_n = top_n}};
    size_t nkv = (size_t)c.npages * c.page_elems, nu = (size_t)T * H * dg;
    float *u_ref = malloc(nu * 4), *lse_ref = malloc((size_t)T * H * 4);
    p.c.kv = c.kv;
    p.c.tab = c.tab;
    p.c.seq_toff = c.toff;
    p.tok_pos = c.pos;
    p.tok_seq = c.seq;
    p.qt = qt;
    p.qr = qa + 3;
    p.s.sel_src = src;
    p.s.tsel = tsel;
    p.s.tsel_cnt = tcnt;
    p.s.slot_sel = ssel;
    p.s.slot_cnt = scnt;
    p.gate = qa + H * qs;
    p.u_cmp = ucmp;
    p.u = u_ref;
    p.lse = lse_ref;
    attn_latent_ref(&p);

    attn_params d = p;
    d.c.kv = dup_dev(c.kv, nkv * 2);
    d.c.tab = dup_dev(c.tab, sizeof c.tab);
    d.c.seq_toff = dup_dev(c.toff, sizeof c.toff);
    d.tok_pos = dup_dev(c.pos, sizeof c.pos);
    d.tok_seq = dup_dev(c.seq, sizeof c.seq);
    d.qt = dup_dev(qt, nu * 4);
    float *qa_d = dup_dev(qa, (size_t)T * ld * 4);
    d.qr = qa_d + 3;
    d.gate = qa_d + H * qs;
    d.u_cmp = dup_dev(ucmp, nu * 4);
    d.s.sel_src = dup_dev(src, sizeof src);
    d.s.tsel = dup_dev(tsel, (size_t)T * G * top_n * 4);
    d.s.tsel_cnt = dup_dev(tcnt, (size_t)T * G * 4);
    d.s.slot_sel = dup_dev(ssel, (size_t)nslots * Lg * G * top_n * 4);
    d.s.slot_cnt = dup_dev(scnt, (size_t)nslots * Lg * G * 4);
    float *ug = malloc(nu * 4), *lg = malloc((size_t)T * H * 4);
    const char *names[] = {"attn local", "attn cmp", "attn slc"};
    /* head chunks of 1 and 2; unsplit, 3 splits of 32 keys (up to 70 keys)
     * merged by a second launch, and merged in the last split block
     * (merge_cnt: bitwise the merge launch's on the device; the counters
     * back at zero); the same with 10 splits (the later ones hold no key;
     * the merge launch takes its warp form up to 32 splits, the staged
     * block form is checked in test_attn_merge) */
    d.part = poison_dev((size_t)T * H * 10 * (dg + 2) * 4);
    int32_t *zc = calloc((size_t)T * H, 4), *cg = malloc((size_t)T * H * 4);
    int *cnt_d = dup_dev(zc, (size_t)T * H * 4);
    float *us[2] = {malloc(nu * 4), malloc(nu * 4)}, *ls2[2] = {malloc((size_t)T * H * 4),
                                                              malloc((size_t)T * H * 4)};
    for (int cfg = 0; cfg < 10; cfg++) {
        const int fused = cfg == 4 || cfg == 5 || cfg >= 8;
        d.heads_per_block = 1 + cfg % 2;
        d.n_split = cfg < 2 ? 1 : cfg < 6 ? 3 : 10;
        d.split_keys = 32;
        d.merge_cnt = fused ? cnt_d : NULL;
        d.u = poison_dev(nu * 4);
        d.lse = poison_dev((size_t)T * H * 4);
        assert_int_equal(attn_latent_cuda(&d, 0), ASA_OK);
        get_dev(ug, d.u, nu * 4);
        cmp_f32(names[mode], ug, u_ref, nu, 1e-5, 1e-4);
        if (mode == ATTN_CMP) {
            get_dev(lg, d.lse, (size_t)T * H * 4);
            cmp_f32("attn cmp lse", lg, lse_ref, (size_t)T * H, 1e-5, 1e-5);
        }
        if (cfg >= 2 && !fused) {
            memcpy(us[cfg % 2], ug, nu * 4);
            memcpy(ls2[cfg % 2], lg, (size_t)T * H * 4);
        }
        if (fused) {
            const bool exact = !getenv("ASA_CUDA_FAKE");
            cmp_f32("attn merge in the last block", ug, us[cfg % 2], nu, exact ? 0 : 1e-5,
                    exact ? 0 : 1e-4);
            if (mode == ATTN_CMP)
                cmp_f32("attn merge in the last block, lse", lg, ls2[cfg % 2],
                        (size_t)T * H, exact ? 0 : 1e-5, exact ? 0 : 1e-5);
            get_dev(cg, cnt_d, (size_t)T * H * 4);
            cmp_i32("attn merge counters reset", cg, zc, (size_t)T * H);
        }
        cudaFree(d.u);
        cudaFree(d.lse);
    }
    d.merge_cnt = NULL;
    cudaFree(d.part);
    cudaFree(cnt_d);
    free(zc);
    free(cg);
    for (int i = 0; i < 2; i++) {
        free(us[i]);
        free(ls2[i]);
    }
    n_kernels++;

    if (mode == ATTN_CMP) {
        /* block choice at every anchor (positions divisible by 2 here) from
         * the reference lse; then the store into slots */
        int32_t anchors[16], na = 0;
        for (int t = 0; t < T; t++)
            if (c.pos[t] % 2 == 0)
                anchors[na++] = t;
        anchors[na++] = -1; /* padding: skipped */
        select_params sp = {.n_anchors = na, .H = H, .anchors = anchors, .scale = p.scale,
                            .init_blocks = 1, .local_blocks = 2, .nb_max = 32, .c = p.c,
                            .tok_pos = c.pos, .tok_seq = c.seq, .qt = qt, .qr = qa + 3,
                            .ld_qr = ld, .qr_stride = qs, .lse = lse_ref, .s = p.s};
        int32_t *tsel_ref = malloc((size_t)T * G * top_n * 4);
        int32_t *tcnt_ref = malloc((size_t)T * G * 4);
        memcpy(tsel_ref, tsel, (size_t)T * G * top_n * 4);
        memcpy(tcnt_ref, tcnt, (size_t)T * G * 4);
        sp.s.tsel = tsel_ref;
        sp.s.tsel_cnt = tcnt_ref;
        select_blocks_ref(&sp);
        select_params sd = sp;
        sd.anchors = dup_dev(anchors, sizeof anchors);
        sd.c = d.c;
        sd.tok_pos = d.tok_pos;
        sd.tok_seq = d.tok_seq;
        sd.qt = d.qt;
        sd.qr = d.qr;
        sd.lse = dup_dev(lse_ref, (size_t)T * H * 4);
        sd.s = d.s;
        sd.scores = poison_dev((size_t)na * G * 32 * 4);
        int32_t *tg = malloc((size_t)T * G * top_n * 4), *cg = malloc((size_t)T * G * 4);
        /* two launches; the choice in the last scoring block (done_cnt:
         * counters back at zero) */
        int32_t zc[64] = {0}, cz[64];
        int *cnt_d = dup_dev(zc, sizeof zc);
        for (int fused = 0; fused < 2; fused++) {
            sd.done_cnt = fused ? cnt_d : NULL;
            assert_int_equal(cudaMemset(d.s.tsel, 0xff, (size_t)T * G * top_n * 4), cudaSuccess);
            assert_int_equal(cudaMemset(d.s.tsel_cnt, 0xff, (size_t)T * G * 4), cudaSuccess);
            assert_int_equal(select_blocks_cuda(&sd, 0), ASA_OK);
            get_dev(tg, d.s.tsel, (size_t)T * G * top_n * 4);
            get_dev(cg, d.s.tsel_cnt, (size_t)T * G * 4);
            /* the padding anchor's rows stay as they were: compare the anchors' */
            for (int i = 0; i < na; i++) {
                if (anchors[i] < 0)
                    continue;
                const size_t k = (size_t)anchors[i] * G;
                cmp_i32(fused ? "select sets, one launch" : "select sets", tg + k * top_n,
                        tsel_ref + k * top_n, (size_t)G * top_n);
                cmp_i32(fused ? "select counts, one launch" : "select counts", cg + k,
                        tcnt_ref + k, (size_t)G);
            }
        }
        get_dev(cz, cnt_d, sizeof cz);
        cmp_i32("select counters reset", cz, zc, 64);
        cudaFree(cnt_d);
        sd.done_cnt = NULL;
        n_kernels++;
        /* selstore: slots 2 and 0 take anchors[0] and anchors[na-1] */
        int32_t sl[3] = {2, -1, 0}, tk[3] = {anchors[0], 0, anchors[na - 2]};
        const size_t nss = (size_t)nslots * Lg * G;
        int32_t *ssel0 = malloc(nss * top_n * 4), *scnt0 = malloc(nss * 4);
        memcpy(ssel0, ssel, nss * top_n * 4); /* the device's slot state so far */
        memcpy(scnt0, scnt, nss * 4);
        selstore_params ss = {.n = 3, .G = G, .slot = dup_dev(sl, 12), .tok = dup_dev(tk, 12),
                              .s = d.s};
        assert_int_equal(selstore_cuda(&ss, 0), ASA_OK);
        for (int i = 0; i < 3; i += 2)
            for (int g = 0; g < G; g++) {
                size_t dst = ((size_t)sl[i] * Lg + ti) * G + g, s2 = (size_t)tk[i] * G + g;
                memcpy(ssel + dst * top_n, tsel_ref + s2 * top_n, (size_t)top_n * 4);
                scnt[dst] = tcnt_ref[s2];
            }
        int32_t *sg = malloc((size_t)nslots * Lg * G * top_n * 4),
                *scg = malloc((size_t)nslots * Lg * G * 4);
        get_dev(sg, d.s.slot_sel, (size_t)nslots * Lg * G * top_n * 4);
        get_dev(scg, d.s.slot_cnt, (size_t)nslots * Lg * G * 4);
        cmp_i32("selstore sets", sg, ssel, (size_t)nslots * Lg * G * top_n);
        cmp_i32("selstore counts", scg, scnt, (size_t)nslots * Lg * G);
        n_kernels++;
        /* the same stores done by the block choice (n_store, in the last
         * scoring block) from the slot state before them */
        assert_int_equal(cudaMemcpy(d.s.slot_sel, ssel0, nss * top_n * 4, cudaMemcpyHostToDevice),
                         cudaSuccess);
        assert_int_equal(cudaMemcpy(d.s.slot_cnt, scnt0, nss * 4, cudaMemcpyHostToDevice),
                         cudaSuccess);
        int32_t zc2[64] = {0};
        int *cnt2 = dup_dev(zc2, sizeof zc2);
        sd.done_cnt = cnt2;
        sd.n_store = 3;
        sd.st_slot = ss.slot;
        sd.st_tok = ss.tok;
        assert_int_equal(select_blocks_cuda(&sd, 0), ASA_OK);
        get_dev(sg, d.s.slot_sel, nss * top_n * 4);
        get_dev(scg, d.s.slot_cnt, nss * 4);
        cmp_i32("select with the stores, sets", sg, ssel, nss * top_n);
        cmp_i32("select with the stores, counts", scg, scnt, nss);
        sd.done_cnt = NULL;
        sd.n_store = 0;
        cudaFree(cnt2);
        free(ssel0);
        free(scnt0);
        n_kernels++;
        cudaFree((void *)ss.slot);
        cudaFree((void *)ss.tok);
        cudaFree((void *)sd.anchors);
        cudaFree((void *)sd.lse);
        cudaFree(sd.scores);
        free(tsel_ref);
        free(tcnt_ref);
        free(tg);
        free(cg);
        free(sg);
        free(scg);
    }
    free_attn_inputs(&d, qa_d);
    free(qt);
    free(qa);
    free(ucmp);
    free(tsel);
    free(tcnt);
    free(ssel);
    free(scnt);
    free(u_ref);
    free(lse_ref);
    free(ug);
    free(lg);
    free(c.kv);
}

static void test_attn_local(void **st) { run_attn(ATTN_LOCAL); }

/* The asa-1.3b local shape (H 32, one latent group of 192, rope 32): all 32
 * heads in one block needs ~87 KB of shared memory (the raised limit), and
 * 4-head blocks with 2 splits. */
static void test_attn_big(void **st) {
    const int G = 1, dg = 192, dR = 32, B = 16, H = 32;
    const int p0[] = {40, 41}, p1[] = {5};
    pcache c;
    pcache_make(&c, G, dg, dR, B, p0, 2, p1, 1);
    const int T = c.T, qs = 96, ld = H * qs;
    size_t nu = (size_t)T * H * dg, nkv = (size_t)c.npages * c.page_elems;
    float *qt = malloc(nu * 4), *qa = malloc((size_t)T * ld * 4), *u_ref = malloc(nu * 4);
    float *ug = malloc(nu * 4);
    fill_f32(qt, nu, 0.2f);
    fill_f32(qa, (size_t)T * ld, 0.2f);
    attn_params p = {.mode = ATTN_LOCAL, .T = T, .H = H, .scale = 0.1f, .window = 512,
                     .n_split = 1,
                     .c = {.kv = c.kv, .page_elems = c.page_elems, .layer_off = c.layer_off,
                           .B = B, .G = G, .dg = dg, .dR = dR, .tab = c.tab,
                           .seq_toff = c.toff},
                     .tok_pos = c.pos, .tok_seq = c.seq, .qt = qt, .qr = qa + 64, .ld_qr = ld,
                     .qr_stride = qs, .u = u_ref};
    attn_latent_ref(&p);
    attn_params d = p;
    d.c.kv = dup_dev(c.kv, nkv * 2);
    d.c.tab = dup_dev(c.tab, sizeof c.tab);
    d.c.seq_toff = dup_dev(c.toff, sizeof c.toff);
    d.tok_pos = dup_dev(c.pos, sizeof c.pos);
    d.tok_seq = dup_dev(c.seq, sizeof c.seq);
    d.qt = dup_dev(qt, nu * 4);
    float *qa_d = dup_dev(qa, (size_t)T * ld * 4);
    d.qr = qa_d + 64;
    d.part = poison_dev((size_t)T * H * 2 * (dg + 2) * 4);
    const int nh[2] = {32, 4}, ns[2] = {1, 2};
    for (int i = 0; i < 2; i++) {
        d.heads_per_block = nh[i];
        d.n_split = ns[i];
        d.split_keys = 32;
        d.u = poison_dev(nu * 4);
        assert_int_equal(attn_latent_cuda(&d, 0), ASA_OK);
        get_dev(ug, d.u, nu * 4);
        cmp_f32("attn big", ug, u_ref, nu, 1e-5, 1e-4);
        cudaFree(d.u);
    }
    /* split launches over token chunks (t_off): the partials workspace is
     * indexed from the chunk's first token */
    d.heads_per_block = 16;
    d.n_split = 2;
    int32_t zc[64] = {0};
    int *cnt_d = dup_dev(zc, sizeof zc);
    for (int mc = 0; mc < 2; mc++) { /* merge launch; merge in the last split block */
        d.u = poison_dev(nu * 4);
        d.merge_cnt = mc ? cnt_d : NULL;
        for (int t0 = 0; t0 < T; t0 += 1) {
            attn_params dc = d;
            dc.t_off = t0;
            dc.T = 1;
            assert_int_equal(attn_latent_cuda(&dc, 0), ASA_OK);
        }
        get_dev(ug, d.u, nu * 4);
        cmp_f32(mc ? "attn big, token chunks, merge in the last block" : "attn big, token chunks",
                ug, u_ref, nu, 1e-5, 1e-4);
        cudaFree(d.u);
    }
    cudaFree(cnt_d);
    d.merge_cnt = NULL;
    n_kernels++;
    cudaFree((void *)d.c.kv);
    cudaFree((void *)d.c.tab);
    cudaFree((void *)d.c.seq_toff);
    cudaFree((void *)d.tok_pos);
    cudaFree((void *)d.tok_seq);
    cudaFree((void *)d.qt);
    cudaFree(qa_d);
    cudaFree(d.part);
    free(qt);
    free(qa);
    free(u_ref);
    free(ug);
    free(c.kv);
}
static void test_attn_cmp_select(void **st) { run_attn(ATTN_CMP); }
static void test_attn_slc(void **st) { run_attn(ATTN_SLC); }

/* The choice rule on given scores (ASA-SPEC: forced blocks, then the best
 * top_n of the complete blocks by score, ties to the lower block), sorted
 * ascending; an independent host version to check the device's choice on
 * the device's own scores.  Returns the count; sel[cnt..n) = -1. */
static int choose_host(const float *sc, int pos, int B, int init, int local, int n,
                       int32_t *sel) {
    const int nvis = (pos + 1) / B, cur = pos / B;
    int cnt = 0;
    for (int b = 0; b <= cur && cnt < n; b++)
        if (b < init || b > cur - local)
            sel[cnt++] = b;
    while (cnt < n) {
        int best = -1;
        for (int b = 0; b < nvis; b++) {
            if (b < init || b > cur - local || !(sc[b] >= 0.0f))
                continue;
            bool used = false;
            for (int k = 0; k < cnt && !used; k++)
                used = sel[k] == b;
            if (!used && (best < 0 || sc[b] > sc[best]))
                best = b; /* strict: a tie keeps the lower b */
        }
        if (best < 0)
            break;
        sel[cnt++] = best;
    }
    for (int i = 1; i < cnt; i++) /* ascending */
        for (int k = i; k > 0 && sel[k - 1] > sel[k]; k--) {
            const int32_t x = sel[k];
            sel[k] = sel[k - 1];
            sel[k - 1] = x;
        }
    for (int k = cnt; k < n; k++)
        sel[k] = -1;
    return cnt;
}

/* block choice over more candidate blocks than one scoring chunk, pages in
 * a scrambled order.  pos 701 (351 visible blocks): the chosen sets equal
 * the reference's (scores far apart); longer positions (thousands of
 * blocks: several warps of candidates) also against choose_host on the
 * device's own scores, exactly. */
static void run_select_long(int nb_max, int pos, int top_n) {
    const int G = 2, dg = 4, dR = 2, H = 4, B = 2, np = pos / B + 1;
    const int S = G * dg + dR;
    const int64_t pe = (int64_t)(B + 1) * S;
    uint16_t *kv = malloc((size_t)np * pe * 2);
    int32_t *tab = malloc((size_t)np * 4);
    for (int k = 0; k < np; k++)
        tab[k] = (int32_t)(((int64_t)k * 7) % np);
    fill_bf16(kv, (size_t)np * pe, 1.0f);
    float qt[4 * 4], qr[8], lse[4];
    fill_f32(qt, 16, 1.0f);
    fill_f32(qr, 8, 1.0f);
    fill_f32(lse, 4, 1.0f);
    int32_t tp = pos, ts = 0, toff = 0, anc = 0;
    const size_t nsel = (size_t)G * top_n;
    int32_t *tsel = malloc(nsel * 4), *tsel_g = malloc(nsel * 4), *hsel = malloc(nsel * 4);
    int32_t tcnt[2], tcnt_g[2], hcnt[2];
    select_params sp = {.n_anchors = 1, .H = H, .anchors = &anc, .scale = 0.3f,
                        .init_blocks = 1, .local_blocks = 2, .nb_max = nb_max,
                        .c = {.kv = kv, .page_elems = pe, .layer_off = 0, .B = B, .G = G,
                              .dg = dg, .dR = dR, .tab = tab, .seq_toff = &toff},
                        .tok_pos = &tp, .tok_seq = &ts, .qt = qt, .qr = qr, .ld_qr = 8,
                        .qr_stride = 2, .lse = lse,
                        .s = {.tsel = tsel, .tsel_cnt = tcnt, .Lg = 1, .ti = 0, .top_n = top_n}};
    float *rsc = malloc((size_t)G * nb_max * 4); /* the reference's scores */
    for (size_t i = 0; i < (size_t)G * nb_max; i++)
        rsc[i] = -1.0f;
    sp.scores = rsc;
    select_blocks_ref(&sp);
    select_params sd = sp;
    sd.anchors = dup_dev(&anc, 4);
    sd.c.kv = dup_dev(kv, (size_t)np * pe * 2);
    sd.c.tab = dup_dev(tab, (size_t)np * 4);
    sd.c.seq_toff = dup_dev(&toff, 4);
    sd.tok_pos = dup_dev(&tp, 4);
    sd.tok_seq = dup_dev(&ts, 4);
    sd.qt = dup_dev(qt, sizeof qt);
    sd.qr = dup_dev(qr, sizeof qr);
    sd.lse = dup_dev(lse, sizeof lse);
    sd.s.tsel = poison_dev(nsel * 4);
    sd.s.tsel_cnt = poison_dev(sizeof tcnt);
    sd.scores = poison_dev((size_t)G * nb_max * 4);
    int32_t zc[2] = {0, 0}, cz[2];
    int *cnt_d = dup_dev(zc, sizeof zc);
    float *scg = malloc((size_t)G * nb_max * 4);
    char what[96];
    /* two launches; the choice in the last block; the grids sized by the
     * step's candidates (nb_step, decode) with 16 tiles a warp */
    for (int fused = 0; fused < 3; fused++) {
        sd.done_cnt = fused == 1 ? cnt_d : NULL;
        sd.nb_step = fused == 2 ? (pos + 1) / B + 1 : 0;
        sd.tiles = fused == 2 ? 16 : 0;
        assert_int_equal(cudaMemset(sd.s.tsel, 0xff, nsel * 4), cudaSuccess);
        assert_int_equal(select_blocks_cuda(&sd, 0), ASA_OK);
        get_dev(tsel_g, sd.s.tsel, nsel * 4);
        get_dev(tcnt_g, sd.s.tsel_cnt, sizeof tcnt);
        if (pos <= 701) {
            snprintf(what, sizeof what, "select sets, nb_max %d%s", nb_max,
                     fused == 1 ? ", one launch" : fused == 2 ? ", nb_step, 16 tiles" : "");
            cmp_i32(what, tsel_g, tsel, nsel);
            cmp_i32("select counts, 351 blocks", tcnt_g, tcnt, 2);
        }
        if (nb_max > 32 * 1024 && fused < 2) {
            /* select_kernel (beyond select_multi_kernel's 32 warps) marks
             * its picks in the score rows: against the reference, a swap
             * allowed only between blocks whose scores tie within 1e-4 */
            cmp_i32("select counts, select_kernel", tcnt_g, tcnt, 2);
            for (int g = 0; g < G; g++) {
                const float *ref = rsc + (size_t)g * nb_max;
                const int32_t *gs = tsel_g + (size_t)g * top_n, *ws = tsel + (size_t)g * top_n;
                float weakest = INFINITY;
                for (int k = 0; k < tcnt[g]; k++)
                    if (ws[k] >= 0 && ws[k] < (pos + 1) / B && ref[ws[k]] >= 0.0f &&
                        ref[ws[k]] < weakest)
                        weakest = ref[ws[k]];
                for (int k = 0; k < tcnt[g]; k++) {
                    bool in = false;
                    for (int j = 0; j < tcnt[g] && !in; j++)
                        in = gs[k] == ws[j];
                    if (!in && !(gs[k] >= 0 && gs[k] < (pos + 1) / B &&
                                 ref[gs[k]] >= weakest * (1.0f - 1e-4f)))
                        fail_msg("select_kernel, pos %d group %d: block %d chosen, not the "
                                 "reference's and not tied with its weakest pick", pos, g, gs[k]);
                }
            }
            continue;
        }
        get_dev(scg, sd.scores, (size_t)G * nb_max * 4);
        for (int g = 0; g < G; g++)
            hcnt[g] = choose_host(scg + (size_t)g * nb_max, pos, B, 1, 2, top_n,
                                  hsel + (size_t)g * top_n);
        snprintf(what, sizeof what, "select sets on the device's scores, pos %d nb_max %d n %d",
                 pos, nb_max, top_n);
        cmp_i32(what, tsel_g, hsel, nsel);
        cmp_i32("select counts on the device's scores", tcnt_g, hcnt, 2);
    }
    get_dev(cz, cnt_d, sizeof cz);
    cmp_i32("select counters reset", cz, zc, 2);
    cudaFree(cnt_d);
    n_kernels++;
    cudaFree((void *)sd.anchors);
    cudaFree((void *)sd.c.kv);
    cudaFree((void *)sd.c.tab);
    cudaFree((void *)sd.c.seq_toff);
    cudaFree((void *)sd.tok_pos);
    cudaFree((void *)sd.tok_seq);
    cudaFree((void *)sd.qt);
    cudaFree((void *)sd.qr);
    cudaFree((void *)sd.lse);
    cudaFree(sd.s.tsel);
    cudaFree(sd.s.tsel_cnt);
    cudaFree(sd.scores);
    free(scg);
    free(rsc);
    free(tsel);
    free(tsel_g);
    free(hsel);
    free(tab);
    free(kv);
}
/* nb_max 400: the one-warp choice; 1100 and the long positions: one warp
 * per 1024 candidates (select_multi_kernel: 2, 4, 6 and 9 warps; top_n 40
 * holds picks past 32 per lane); 33000: the thread-block choice
 * (select_kernel, beyond 32 warps) */
static void test_select_long(void **st) {
    (void)st;
    run_select_long(400, 701, 6);
    run_select_long(1100, 701, 6);
    run_select_long(3100, 6001, 40);
    run_select_long(33000, 701, 6);
    if (getenv("ASA_EMU"))
        return; /* the emulated scoring of thousands of blocks takes minutes */
    run_select_long(5200, 10301, 16);
    run_select_long(9000, 17999, 16);
    run_select_long(33000, 20001, 16);
}

/* Block scoring on tensor cores (the default) and with f32 FMAs (exact = 1)
 * against a double reference: the asa-1.3b global shape (16 heads per
 * group, dg 96, dR 32, more candidates than one scoring chunk) and odd ones
 * (parts padded to 16, 3 heads per group); two sequences, anchors at
 * several positions.  Scores within 2e-5 relative; chosen sets equal to the
 * reference's except for swaps between blocks whose scores tie within 1e-4.
 * The tensor-core scoring also with anchor_runs (the prefill kernel that
 * shares staged candidates among anchors): with the anchors alternating
 * between the sequences (a pass per sequence in each thread block) and
 * grouped by sequence (its common case), which must give the same scores
 * bit for bit as the per-anchor kernel. */
static void test_select_shapes(void **st) {
    (void)st;
    static const struct { int G, dg, dR, H, B; } shp[] = {
        {2, 96, 32, 32, 16}, {3, 10, 6, 9, 4}, {1, 24, 8, 16, 8}};
    for (size_t si = 0; si < sizeof shp / sizeof shp[0]; si++) {
        const int G = shp[si].G, dg = shp[si].dg, dR = shp[si].dR, H = shp[si].H,
                  B = shp[si].B, hpg = H / G, top_n = 16, E = dg + dR;
        const int S = G * dg + dR, Lg = 2, ti = 1;
        /* 35 anchors (70 pairs for the first shape: the prefill launch
         * shape of the per-anchor tensor-core scoring) */
        const int pos5[5] = {5 * B - 1, 17 * B + 3, 40 * B + 1, 300 * B + 7, 150 * B};
        const int seq5[5] = {0, 1, 0, 1, 0}, NA = 35;
        int pos[35], seq[35];
        for (int a = 0; a < NA; a++) {
            pos[a] = pos5[a % 5] - a / 5;
            seq[a] = seq5[a % 5];
        }
        const int nb_max = 310, np = 2 * 302;
        const int64_t pe = (int64_t)Lg * (B + 1) * S, lo = (int64_t)ti * (B + 1) * S;
        uint16_t *kv = malloc((size_t)np * pe * 2);
        fill_bf16(kv, (size_t)np * pe, 1.0f);
        int32_t *tab = malloc((size_t)np * 4), toff[2] = {0, np / 2};
        for (int k = 0; k < np; k++)
            tab[k] = (k * 37 + 11) % np; /* scrambled pages */
        /* query rows 16-byte aligned where dR % 4 == 0 (the tiled kernel's
         * vector staging), odd strides otherwise (its scalar one) */
        const int qs = dR % 4 == 0 ? dR + 4 : dR + 3, ldq = H * qs + (dR % 4 == 0 ? 4 : 5);
        float *qt = malloc((size_t)NA * H * dg * 4), *qr = malloc((size_t)NA * ldq * 4);
        float *lse = malloc((size_t)NA * H * 4);
        fill_f32(qt, (size_t)NA * H * dg, 0.3f);
        fill_f32(qr, (size_t)NA * ldq, 0.3f);
        fill_f32(lse, (size_t)NA * H, 1.0f);
        int32_t anc[36], tp[35], ts[35];
        for (int a = 0; a < NA; a++) {
            anc[a] = a;
            tp[a] = pos[a];
            ts[a] = seq[a];
        }
        anc[NA] = -1; /* padding: skipped */
        const float scale = 0.125f;
        /* double scores of every visible candidate */
        double *ref = malloc((size_t)NA * G * nb_max * sizeof(double));
        for (int a = 0; a < NA; a++)
            for (int g = 0; g < G; g++)
                for (int b = 0; b < (pos[a] + 1) / B; b++) {
                    const uint16_t *ent =
                        kv + (int64_t)tab[toff[seq[a]] + b] * pe + lo + (int64_t)B * S;
                    double sum = 0;
                    for (int h = 0; h < hpg; h++) {
                        const int hh = g * hpg + h;
                        double d = 0;
                        for (int e = 0; e < E; e++)
                            d += (double)(e < dg ? qt[((size_t)a * H + hh) * dg + e]
                                                 : qr[(size_t)a * ldq + hh * qs + e - dg]) *
                                 asa_bf16_to_f32(ent[e < dg ? g * dg + e : G * dg + e - dg]);
                        sum += exp(d * scale - lse[a * H + hh]);
                    }
                    ref[((size_t)a * G + g) * nb_max + b] = sum;
                }
        int32_t *tsel = malloc((size_t)NA * G * top_n * 4), *tcnt = malloc((size_t)NA * G * 4);
        select_params sp = {.n_anchors = NA + 1, .H = H, .anchors = anc, .scale = scale,
                            .init_blocks = 1, .local_blocks = 2, .nb_max = nb_max,
                            .c = {.kv = kv, .page_elems = pe, .layer_off = lo, .B = B, .G = G,
                                  .dg = dg, .dR = dR, .tab = tab, .seq_toff = toff},
                            .tok_pos = tp, .tok_seq = ts, .qt = qt, .qr = qr, .ld_qr = ldq,
                            .qr_stride = qs, .lse = lse,
                            .s = {.tsel = tsel, .tsel_cnt = tcnt, .Lg = 1, .ti = 0,
                                  .top_n = top_n}};
        select_blocks_ref(&sp);
        /* the anchors grouped by sequence (slot -> token) */
        int32_t ancg[36];
        {
            int k = 0;
            for (int sq = 0; sq < 2; sq++)
                for (int a = 0; a < NA; a++)
                    if (seq[a] == sq)
                        ancg[k++] = a;
            ancg[NA] = -1;
        }
        float *sc_plain = malloc((size_t)(NA + 1) * G * nb_max * 4);
        /* variants: 0 tensor cores, 1 exact, 2 anchor_runs, 3 anchor_runs
         * with the anchors grouped */
        for (int var = 0; var < 4; var++) {
            const int exact = var == 1;
            const int32_t *slot_tok = var == 3 ? ancg : anc;
            select_params sd = sp;
            sd.exact = exact;
            sd.anchor_runs = var >= 2;
            sd.anchors = dup_dev(slot_tok, (size_t)(NA + 1) * 4);
            sd.c.kv = dup_dev(kv, (size_t)np * pe * 2);
            sd.c.tab = dup_dev(tab, (size_t)np * 4);
            sd.c.seq_toff = dup_dev(toff, sizeof toff);
            sd.tok_pos = dup_dev(tp, (size_t)NA * 4);
            sd.tok_seq = dup_dev(ts, (size_t)NA * 4);
            sd.qt = dup_dev(qt, (size_t)NA * H * dg * 4);
            sd.qr = dup_dev(qr, (size_t)NA * ldq * 4);
            sd.lse = dup_dev(lse, (size_t)NA * H * 4);
            sd.s.tsel = poison_dev((size_t)NA * G * top_n * 4);
            sd.s.tsel_cnt = poison_dev((size_t)NA * G * 4);
            sd.scores = poison_dev((size_t)(NA + 1) * G * nb_max * 4);
            assert_int_equal(select_blocks_cuda(&sd, 0), ASA_OK);
            float *sc = malloc((size_t)(NA + 1) * G * nb_max * 4);
            int32_t *tg = malloc((size_t)NA * G * top_n * 4), *cg = malloc((size_t)NA * G * 4);
            get_dev(sc, sd.scores, (size_t)(NA + 1) * G * nb_max * 4);
            get_dev(tg, sd.s.tsel, (size_t)NA * G * top_n * 4);
            get_dev(cg, sd.s.tsel_cnt, (size_t)NA * G * 4);
            for (int sl = 0; sl < NA; sl++)
                for (int g = 0; g < G; g++) {
                    const int a = slot_tok[sl], cur = pos[a] / B;
                    for (int b = 0; b < (pos[a] + 1) / B; b++) {
                        const size_t i = ((size_t)sl * G + g) * nb_max + b;
                        const size_t ia = ((size_t)a * G + g) * nb_max + b;
                        const bool forced = b < 1 || b > cur - 2;
                        const double want = forced ? -1.0 : ref[ia];
                        if (!(fabs(sc[i] - want) <= 2e-5 * fabs(want) + 1e-30))
                            fail_msg("select scores (shape %zu, variant %d): anchor %d group %d "
                                     "block %d: got %.9g, want %.9g", si, var, a, g, b,
                                     sc[i], want);
                        /* anchor_runs: the per-anchor kernel's bits */
                        if (var >= 2 && memcmp(&sc[i], &sc_plain[ia], 4) != 0)
                            fail_msg("select scores (shape %zu, variant %d): anchor %d group "
                                     "%d block %d: %.9g, the per-anchor kernel %.9g", si, var,
                                     a, g, b, sc[i], sc_plain[ia]);
                        n_checked++;
                    }
                    /* sets: equal, or swaps between near-tied blocks */
                    const int32_t *kg = tg + ((size_t)a * G + g) * top_n,
                                  *rg = tsel + ((size_t)a * G + g) * top_n;
                    const int n = tcnt[a * G + g];
                    assert_int_equal(cg[a * G + g], n);
                    for (int x = 0; x < n; x++) {
                        bool in = false;
                        for (int y = 0; y < n; y++)
                            in |= kg[x] == rg[y];
                        if (in)
                            continue;
                        for (int y = 0; y < n; y++) {
                            bool in2 = false;
                            for (int z = 0; z < n; z++)
                                in2 |= rg[y] == kg[z];
                            if (in2)
                                continue;
                            const double s1 = ref[((size_t)a * G + g) * nb_max + kg[x]],
                                         s2 = ref[((size_t)a * G + g) * nb_max + rg[y]];
                            if (!(fabs(s1 - s2) <= 1e-4 * fmax(s1, s2)))
                                fail_msg("select sets (shape %zu, variant %d): anchor %d group "
                                         "%d: block %d chosen instead of %d (scores %.9g, "
                                         "%.9g)", si, var, a, g, kg[x], rg[y], s1, s2);
                        }
                    }
                    n_checked += n;
                }
            n_kernels++;
            if (var == 0)
                memcpy(sc_plain, sc, (size_t)(NA + 1) * G * nb_max * 4);
            free(sc);
            free(tg);
            free(cg);
            cudaFree((void *)sd.anchors);
            cudaFree((void *)sd.c.kv);
            cudaFree((void *)sd.c.tab);
            cudaFree((void *)sd.c.seq_toff);
            cudaFree((void *)sd.tok_pos);
            cudaFree((void *)sd.tok_seq);
            cudaFree((void *)sd.qt);
            cudaFree((void *)sd.qr);
            cudaFree((void *)sd.lse);
            cudaFree(sd.s.tsel);
            cudaFree(sd.s.tsel_cnt);
            cudaFree(sd.scores);
        }
        free(sc_plain);
        free(ref);
        free(tsel);
        free(tcnt);
        free(qt);
        free(qr);
        free(lse);
        free(tab);
        free(kv);
    }
}

static void test_compress(void **st) {
    const int B = 7, S = 37, npages = 9, nl = 3;
    const int64_t pe = (int64_t)nl * (B + 1) * S, lo = (int64_t)2 * (B + 1) * S;
    size_t n = (size_t)npages * pe;
    uint16_t *kv = malloc(n * 2), *kg = malloc(n * 2);
    fill_bf16(kv, n, 3.0f);
    int32_t pages[4] = {4, -1, 0, 7}; /* -1: padding, skipped */
    compress_params p = {.n = 4, .pages = pages, .kv = kv, .page_elems = pe, .layer_off = lo,
                         .B = B, .S = S};
    compress_params d = p;
    d.pages = dup_dev(pages, sizeof pages);
    d.kv = dup_dev(kv, n * 2);
    for (int i = 0; i < 4; i++) /* poison the destinations on the device */
        if (pages[i] >= 0)
            assert_int_equal(cudaMemset(d.kv + pages[i] * pe + lo + (int64_t)B * S, 0xff, S * 2),
                             cudaSuccess);
    assert_int_equal(compress_cuda(&d, 0), ASA_OK);
    compress_ref(&p);
    get_dev(kg, d.kv, n * 2);
    cmp_bf16("compress", kg, kv, n, 0, 0);
    n_kernels++;
    cudaFree((void *)d.pages);
    cudaFree(d.kv);
    free(kv);
    free(kg);
}

/* One absorb + expand case of H heads and T tokens against the host
 * references, padded strides, poisoned outputs: the vector kernels
 * (cb_absorb_cuda / cb_expand_cuda, tolerance 1e-5) or, mma, the
 * tensor-core ones (x through a bf16 hi + lo pair: ~16 bits, tolerance
 * 1e-4), whose expand is then also run for its bf16 parts (the split of
 * the f32 results just read back, bit for bit; without o_lo only hi, o
 * itself untouched) and whose absorb of the first T - 7 tokens alone must
 * give the same bits (row independence). */
static void absorb_expand_case(int H, int dh, int dv, int dg, int dR, int T, bool mma) {
    const int qs = dh + dR, ld = H * qs + 8, ldo = H * dv + 6;
    const size_t nq = (size_t)T * H * dg, no = (size_t)T * ldo;
    const double tol = mma ? 1e-4 : 1e-5;
    float *qa = malloc((size_t)T * ld * 4), *qt = malloc(nq * 4), *g = malloc(nq * 4);
    float *o = malloc(no * 4), *og = malloc(no * 4);
    uint16_t *kvb = malloc((size_t)H * (dh + dv) * dg * 2);
    uint16_t *wt = malloc((size_t)H * dg * dv * 2);
    fill_f32(qa, (size_t)T * ld, 1.0f);
    fill_bf16(kvb, (size_t)H * (dh + dv) * dg, 0.5f);
    fill_bf16(wt, (size_t)H * dg * dv, 0.5f);
    absorb_params p = {.T = T, .H = H, .dh = dh, .dv = dv, .dg = dg, .qa = qa, .ld_qa = ld,
                       .q_stride = qs, .kvb = kvb, .qt = qt};
    absorb_params d = p;
    d.qa = dup_dev(qa, (size_t)T * ld * 4);
    d.kvb = dup_dev(kvb, (size_t)H * (dh + dv) * dg * 2);
    d.qt = poison_dev(nq * 4);
    assert_int_equal(mma ? cb_absorb_mma_cuda(&d, 0) : cb_absorb_cuda(&d, 0), ASA_OK);
    cb_absorb_ref(&p);
    get_dev(g, d.qt, nq * 4);
    cmp_f32(mma ? "absorb (tensor cores)" : "absorb (vector path)", g, qt, nq, tol, tol);
    n_kernels++;
    for (size_t i = 0; i < no; i++)
        o[i] = NAN;
    expand_params e = {.T = T, .H = H, .dg = dg, .dv = dv, .u = qt, .wuvT = wt, .o = o,
                       .ld_o = ldo};
    expand_params ed = e;
    ed.u = d.qt;
    ed.wuvT = dup_dev(wt, (size_t)H * dg * dv * 2);
    ed.o = poison_dev(no * 4);
    assert_int_equal(mma ? cb_expand_mma_cuda(&ed, 0) : cb_expand_cuda(&ed, 0), ASA_OK);
    cb_expand_ref(&e);
    get_dev(og, ed.o, no * 4);
    cmp_f32(mma ? "expand (tensor cores)" : "expand (vector path)", og, o, no, tol, tol);
    n_kernels++;
    for (int wl = 0; mma && wl < 2; wl++) {
        expand_params ep = ed;
        ep.o = poison_dev(no * 4);
        ep.o_hi = poison_dev(no * 2);
        ep.o_lo = poison_dev(no * 2);
        uint16_t *lo_d = ep.o_lo;
        if (!wl)
            ep.o_lo = NULL;
        assert_int_equal(cb_expand_cuda(&ep, 0), ASA_EUNSUPPORTED);
        assert_int_equal(cb_expand_mma_cuda(&ep, 0), ASA_OK);
        uint16_t *ph = malloc(no * 2), *pl = malloc(no * 2);
        uint16_t *wh = malloc(no * 2), *wlo = malloc(no * 2);
        float *po = malloc(no * 4);
        get_dev(ph, ep.o_hi, no * 2);
        get_dev(pl, lo_d, no * 2);
        get_dev(po, ep.o, no * 4);
        for (size_t i = 0; i < no; i++) {
            const bool pad = i % (size_t)ldo >= (size_t)H * dv;
            wh[i] = pad ? 0xffff : asa_f32_to_bf16(og[i]);
            wlo[i] = pad || !wl ? 0xffff : asa_f32_to_bf16(og[i] - asa_bf16_to_f32(wh[i]));
            assert_true(isnan(po[i]));
        }
        assert_memory_equal(ph, wh, no * 2);
        assert_memory_equal(pl, wlo, no * 2);
        n_checked += (int)no;
        free(ph);
        free(pl);
        free(wh);
        free(wlo);
        free(po);
        cudaFree(ep.o);
        cudaFree(ep.o_hi);
        cudaFree(lo_d);
    }
    if (mma && T > 7) { /* the first T - 7 tokens alone: the same bits */
        absorb_params d2 = d;
        d2.T = T - 7;
        d2.qt = poison_dev(nq * 4);
        float *g2 = malloc(nq * 4);
        assert_int_equal(cb_absorb_mma_cuda(&d2, 0), ASA_OK);
        get_dev(g2, d2.qt, (size_t)d2.T * H * dg * 4);
        assert_memory_equal(g2, g, (size_t)d2.T * H * dg * 4);
        cudaFree(d2.qt);
        free(g2);
    }
    cudaFree((void *)d.qa);
    cudaFree((void *)d.kvb);
    cudaFree(d.qt);
    cudaFree((void *)ed.wuvT);
    cudaFree(ed.o);
    free(qa);
    free(qt);
    free(g);
    free(o);
    free(og);
    free(kvb);
    free(wt);
}

/* absorb and expand on tensor cores (cb_absorb_mma_cuda / cb_expand_mma_cuda)
 * on the asa-1.3b head shapes (dh = dv = 64, dg = 192 and 96) and a small
 * one (dh = dg = 16: one k-step, one column pair), T with partial 16-token
 * tiles (and, on a GPU, enough tiles for runs of several per block); then
 * shapes they do not take are refused without a launch. */
static void test_absorb_expand_mma(void **st) {
    (void)st;
    /* (dh, dv, dg, dR) */
    const int shapes[][4] = {{64, 64, 96, 32}, {64, 64, 192, 32}, {16, 32, 16, 8}};
    const int Ts[] = {1, 17, 40, 1500};
    const int nT = getenv("ASA_EMU") ? 3 : 4;
    for (int si = 0; si < 3; si++)
        for (int ti = 0; ti < nT; ti++)
            absorb_expand_case(3, shapes[si][0], shapes[si][1], shapes[si][2], shapes[si][3],
                               Ts[ti], true);
    /* refused: K not a multiple of 16 (dh = 7), N > 256, N = 8 (dv) */
    absorb_params bad = {.T = 4, .H = 2, .dh = 7, .dv = 9, .dg = 16, .qa = (const float *)16,
                         .ld_qa = 64, .q_stride = 16, .kvb = (const uint16_t *)16,
                         .qt = (float *)16};
    assert_int_equal(cb_absorb_mma_cuda(&bad, 0), ASA_EUNSUPPORTED);
    bad.dh = 16;
    bad.dg = 272;
    assert_int_equal(cb_absorb_mma_cuda(&bad, 0), ASA_EUNSUPPORTED);
    expand_params bade = {.T = 4, .H = 2, .dg = 16, .dv = 8, .u = (const float *)16,
                          .wuvT = (const uint16_t *)16, .o = (float *)16, .ld_o = 16};
    assert_int_equal(cb_expand_mma_cuda(&bade, 0), ASA_EUNSUPPORTED);
}

/* absorb and expand on the asa-1.3b head shapes (dh = dv = 64, dg = 192 and
 * 96: the 16-byte vector path), T not a multiple of the token tile; then
 * rmsnorm and the bf16 split */
static void test_absorb_expand_vec(void **st) {
    (void)st;
    for (int dg = 96; dg <= 192; dg += 96)
        absorb_expand_case(3, 64, 64, dg, 32, 6, false);
    /* rmsnorm of f32 rows (engine shape D = 2048, a short one and one past
     * 2048, the launchers' other kernel width), with and without the
     * residual add */
    for (int cs = 0; cs < 6; cs++) {
        const int nr = 3, D = cs < 2 ? 2048 : cs < 4 ? 36 : 3076;
        const bool wr = cs % 2 == 1;
        const size_t n = (size_t)nr * D;
        float *x = malloc(n * 4), *r = malloc(n * 4), *w = malloc((size_t)D * 4);
        float *yr = malloc(n * 4), *rr = malloc(n * 4), *yg = malloc(n * 4), *rg = malloc(n * 4);
        fill_f32(x, n, 1.0f);
        fill_f32(r, n, 2.0f);
        fill_f32(w, (size_t)D, 1.5f);
        for (int i = 0; i < nr; i++) {
            double ss = 0;
            for (int e = 0; e < D; e++) {
                const float v = x[(size_t)i * D + e] + (wr ? r[(size_t)i * D + e] : 0.0f);
                rr[(size_t)i * D + e] = wr ? v : r[(size_t)i * D + e];
                ss += (double)v * v;
            }
            const double inv = 1.0 / sqrt(ss / D + 1e-6);
            for (int e = 0; e < D; e++) {
                const float v = x[(size_t)i * D + e] + (wr ? r[(size_t)i * D + e] : 0.0f);
                yr[(size_t)i * D + e] = (float)(v * inv * w[e]);
            }
        }
        float *xd = dup_dev(x, n * 4), *rd = dup_dev(r, n * 4), *wd = dup_dev(w, (size_t)D * 4);
        float *yd = poison_dev(n * 4);
        assert_int_equal(cb_rmsnorm_cuda(nr, D, 1e-6f, xd, NULL, 0, wr ? rd : NULL, wd, yd, 0),
                         ASA_OK);
        get_dev(yg, yd, n * 4);
        get_dev(rg, rd, n * 4);
        cmp_f32("rmsnorm rows", yg, yr, n, 1e-5, 1e-5);
        cmp_f32("rmsnorm residual", rg, rr, n, 0, 0);
        n_kernels++;
        /* x + x2 (n2 = 1: a stacked product's two halves or two K-halves;
         * 3: x2 and the two blocks after it, a stacked product's K-halves;
         * 2 for the kernel's sake): bitwise
         * cb_add2_cuda launches in order and then the norm of the sum,
         * rows, parts and residual */
        for (int n2 = 1; n2 <= 3; n2++) {
            float *x2 = malloc(3 * n * 4), *ya = malloc(n * 4), *yb = malloc(n * 4),
                  *ra = malloc(n * 4), *rb = malloc(n * 4);
            fill_f32(x2, 3 * n, 0.01f);
            float *x2d = dup_dev(x2, 3 * n * 4), *sd = poison_dev(n * 4);
            float *rda = dup_dev(r, n * 4), *rdb = dup_dev(r, n * 4);
            float *yda = poison_dev(n * 4), *ydb = poison_dev(n * 4);
            assert_int_equal(cb_add2_cuda(nr, D, xd, x2d, sd, 0), ASA_OK);
            for (int q = 1; q < n2; q++)
                assert_int_equal(cb_add2_cuda(nr, D, sd, x2d + q * n, sd, 0), ASA_OK);
            assert_int_equal(
                cb_rmsnorm_cuda(nr, D, 1e-6f, sd, NULL, 0, wr ? rda : NULL, wd, yda, 0), ASA_OK);
            assert_int_equal(
                cb_rmsnorm_cuda(nr, D, 1e-6f, xd, x2d, n2, wr ? rdb : NULL, wd, ydb, 0), ASA_OK);
            get_dev(ya, yda, n * 4);
            get_dev(yb, ydb, n * 4);
            get_dev(ra, rda, n * 4);
            get_dev(rb, rdb, n * 4);
            if (memcmp(ya, yb, n * 4) || memcmp(ra, rb, n * 4))
                fail_msg("rmsnorm x + x2: not bitwise add2 + rmsnorm (D %d, residual %d, %d "
                         "parts)",
                         D, wr, n2);
            uint16_t *hda = poison_dev(n * 2), *lda = poison_dev(n * 2);
            uint16_t *hdb = poison_dev(n * 2), *ldb = poison_dev(n * 2);
            uint16_t *pa = malloc(n * 4), *pb = malloc(n * 4);
            cudaFree(rda);
            cudaFree(rdb);
            rda = dup_dev(r, n * 4);
            rdb = dup_dev(r, n * 4);
            assert_int_equal(cb_rmsnorm_split_cuda(nr, D, 1e-6f, sd, NULL, 0, wr ? rda : NULL,
                                                   wd, hda, lda, D, 0),
                             ASA_OK);
            assert_int_equal(cb_rmsnorm_split_cuda(nr, D, 1e-6f, xd, x2d, n2, wr ? rdb : NULL,
                                                   wd, hdb, ldb, D, 0),
                             ASA_OK);
            get_dev(pa, hda, n * 2);
            get_dev(pa + n, lda, n * 2);
            get_dev(pb, hdb, n * 2);
            get_dev(pb + n, ldb, n * 2);
            if (memcmp(pa, pb, n * 4))
                fail_msg("rmsnorm split x + x2: not bitwise add2 + rmsnorm (D %d, %d parts)", D,
                         n2);
            n_checked += 4 * (int)n;
            n_kernels++;
            cudaFree(x2d);
            cudaFree(sd);
            cudaFree(rda);
            cudaFree(rdb);
            cudaFree(yda);
            cudaFree(ydb);
            cudaFree(hda);
            cudaFree(lda);
            cudaFree(hdb);
            cudaFree(ldb);
            free(x2);
            free(ya);
            free(yb);
            free(ra);
            free(rb);
            free(pa);
            free(pb);
        }
        /* the same rows as bf16 parts: bitwise the split of the f32 rows
         * (and the same residual update) */
        {
            float *rd2 = dup_dev(r, n * 4);
            uint16_t *hd = poison_dev(n * 2), *ld = poison_dev(n * 2);
            uint16_t *hg = malloc(n * 2), *lg = malloc(n * 2), *hw = malloc(n * 2),
                     *lw = malloc(n * 2);
            for (int lo = 0; lo < 2; lo++) {
                assert_int_equal(cb_rmsnorm_split_cuda(nr, D, 1e-6f, xd, NULL, 0, wr ? rd2 : NULL,
                                                       wd, hd, lo ? ld : NULL, D, 0),
                                 ASA_OK);
                get_dev(hg, hd, n * 2);
                get_dev(lg, ld, n * 2);
                for (size_t i = 0; i < n; i++) {
                    hw[i] = asa_f32_to_bf16(yg[i]);
                    lw[i] = asa_f32_to_bf16(yg[i] - asa_bf16_to_f32(hw[i]));
                }
                for (size_t i = 0; i < n; i++)
                    if (hg[i] != hw[i] || (lo && lg[i] != lw[i]))
                        fail_msg("rmsnorm split (lo %d): element %zu: hi %04x lo %04x, want %04x "
                                 "%04x", lo, i, hg[i], lg[i], hw[i], lw[i]);
                n_checked += (int)n;
                if (!lo) {
                    float *r2 = malloc(n * 4);
                    get_dev(r2, rd2, n * 4);
                    cmp_f32("rmsnorm split residual", r2, rr, n, 0, 0);
                    free(r2);
                    /* the second call adds the residual again: start over */
                    cudaFree(rd2);
                    rd2 = dup_dev(r, n * 4);
                }
            }
            n_kernels++;
            /* the parts interleaved as the input of one product with K = 2D
             * (hi = buf, lo = buf + D, ldo = 2D; and ldo = 2D + 4, a gap
             * after each row): the same bits, nothing else written (the
             * gaps, the lo halves without lo and a row past the end stay
             * poisoned) */
            for (int ic = 0; ic < 4; ic++) {
                const int lo = ic % 2;
                const int64_t ldo = 2 * (int64_t)D + 4 * (ic / 2);
                const size_t nb = (size_t)(nr + 1) * (size_t)ldo;
                float *rd3 = dup_dev(r, n * 4);
                uint16_t *bd = poison_dev(nb * 2), *bg = malloc(nb * 2);
                assert_int_equal(cb_rmsnorm_split_cuda(nr, D, 1e-6f, xd, NULL, 0, wr ? rd3 : NULL,
                                                       wd, bd, lo ? bd + D : NULL, ldo, 0),
                                 ASA_OK);
                get_dev(bg, bd, nb * 2);
                for (size_t i = 0; i < nb; i++) {
                    const size_t row = i / (size_t)ldo, e = i % (size_t)ldo;
                    uint16_t want = 0xffff;
                    if (row < (size_t)nr && e < (size_t)D)
                        want = hw[row * D + e];
                    else if (row < (size_t)nr && e < 2 * (size_t)D && lo)
                        want = lw[row * D + e - D];
                    if (bg[i] != want)
                        fail_msg("rmsnorm split (ldo %lld, lo %d): element %zu (row %zu, col "
                                 "%zu): %04x, want %04x",
                                 (long long)ldo, lo, i, row, e, bg[i], want);
                }
                n_checked += (int)nb;
                cudaFree(rd3);
                cudaFree(bd);
                free(bg);
            }
            n_kernels++;
            cudaFree(rd2);
            cudaFree(hd);
            cudaFree(ld);
            free(hg);
            free(lg);
            free(hw);
            free(lw);
        }
        cudaFree(xd);
        cudaFree(rd);
        cudaFree(wd);
        cudaFree(yd);
        free(x);
        free(r);
        free(w);
        free(yr);
        free(rr);
        free(yg);
        free(rg);
    }
    /* add2: exact */
    const int ar = 3, ac = 301;
    float *a = malloc((size_t)ar * ac * 4), *b = malloc((size_t)ar * ac * 4);
    float *y = malloc((size_t)ar * ac * 4), *yg = malloc((size_t)ar * ac * 4);
    fill_f32(a, (size_t)ar * ac, 1.0f);
    fill_f32(b, (size_t)ar * ac, 1e-3f);
    for (int i = 0; i < ar * ac; i++)
        y[i] = a[i] + b[i];
    float *ad = dup_dev(a, (size_t)ar * ac * 4), *bd = dup_dev(b, (size_t)ar * ac * 4);
    float *yd = poison_dev((size_t)ar * ac * 4);
    assert_int_equal(cb_add2_cuda(ar, ac, ad, bd, yd, 0), ASA_OK);
    get_dev(yg, yd, (size_t)ar * ac * 4);
    cmp_f32("add2", yg, y, (size_t)ar * ac, 0, 0);
    n_kernels++;
    cudaFree(ad);
    cudaFree(bd);
    cudaFree(yd);
    free(a);
    free(b);
    free(y);
    free(yg);
}

/* attn_merge_cuda on random partials against its host reference: empty
 * splits (maximum -inf) and a row whose splits are all empty; the local,
 * compressed (lse) and selected (gates, u_cmp) modes; 3 and 9 splits (the
 * warp form, its first loads and the rest) and 40 (the staged block form);
 * poisoned outputs.  The warp form against the last-block merge of
 * attn_latent, bit for bit: run_attn. */
static void test_attn_merge(void **st) {
    (void)st;
    const int T = 5, H = 3, ldg = 2 * H + 5;
    for (int dg = 96; dg <= 192; dg += 96)
        for (int ns = 3; ns <= 40; ns += ns < 9 ? 6 : 31)
            for (int mode = ATTN_LOCAL; mode <= ATTN_SLC; mode++) {
                const size_t np = (size_t)T * H * ns * (dg + 2), nu = (size_t)T * H * dg;
                float *part = malloc(np * 4), *gate = malloc((size_t)T * ldg * 4);
                float *ucmp = malloc(nu * 4), *u_ref = malloc(nu * 4), *ug = malloc(nu * 4);
                float lse_ref[T * H], lg[T * H];
                fill_f32(part, np, 1.0f);
                fill_f32(gate, (size_t)T * ldg, 2.0f);
                fill_f32(ucmp, nu, 1.0f);
                for (int t = 0; t < T; t++)
                    for (int h = 0; h < H; h++)
                        for (int s = 0; s < ns; s++) {
                            float *pt = part + (((size_t)t * H + h) * ns + s) * (dg + 2);
                            const bool empty = (t == 3 && h == 1) || (s + t + h) % 4 == 1;
                            pt[dg] = empty ? -INFINITY : 3.0f * pt[dg];
                            pt[dg + 1] = empty ? 0.0f : 1.5f + pt[dg + 1];
                        }
                attn_params r = {.T = T, .H = H, .c = {.dg = dg}, .mode = mode, .gate = gate,
                                 .ld_qr = ldg, .u_cmp = ucmp, .u = u_ref, .lse = lse_ref,
                                 .n_split = ns, .part = part};
                attn_merge_ref(&r);
                attn_params d = r;
                d.part = dup_dev(part, np * 4);
                d.gate = dup_dev(gate, (size_t)T * ldg * 4);
                d.u_cmp = dup_dev(ucmp, nu * 4);
                d.u = poison_dev(nu * 4);
                d.lse = poison_dev(sizeof lg);
                assert_int_equal(attn_merge_cuda(&d, 0), ASA_OK);
                get_dev(ug, d.u, nu * 4);
                char what[96];
                snprintf(what, sizeof what, "attn merge dg %d ns %d mode %d", dg, ns, mode);
                cmp_f32(what, ug, u_ref, nu, 1e-5, 1e-5);
                if (mode == ATTN_CMP) {
                    get_dev(lg, d.lse, sizeof lg);
                    snprintf(what, sizeof what, "attn merge lse dg %d ns %d", dg, ns);
                    cmp_f32(what, lg, lse_ref, (size_t)T * H, 1e-5, 1e-5);
                }
                n_kernels++;
                cudaFree(d.part);
                cudaFree((void *)d.gate);
                cudaFree((void *)d.u_cmp);
                cudaFree(d.u);
                cudaFree(d.lse);
                free(part);
                free(gate);
                free(ucmp);
                free(u_ref);
                free(ug);
            }
}

/* rope_cache + absorb in one launch (cb_rope_absorb_cuda) against both
 * references, on the engine's qa row layout ([q heads | kv_a | gates]) at
 * the vector-path shapes (dh 64, dg 96 and 192), two sequences. */
static void test_rope_absorb(void **st) {
    (void)st;
    const int H = 3, dh = 64, dv = 64, dR = 32, B = 5, NP = 40;
    /* cases: G = 1 and 2 with several tokens of a sequence in one block;
     * G = 2 with one token per sequence, both completing their block, and
     * the compressed entries written by the rope blocks (compress) */
    for (int cs = 0; cs < 3; cs++) {
        const int G = cs == 0 ? 1 : 2, dg = G == 1 ? 192 : 96, cmp = cs == 2;
        const int p0[] = {7, 8, 9}, p1[] = {31}, q0[] = {9}, q1[] = {34};
        pcache c;
        if (cmp)
            pcache_make(&c, G, dg, dR, B, q0, 1, q1, 1);
        else
            pcache_make(&c, G, dg, dR, B, p0, 3, p1, 1);
        const int T = c.T, ld = H * (dh + dR) + c.S + 2 * H + 4;
        const size_t nkv = (size_t)c.npages * c.page_elems;
        rope_in ri = rope_in_make(NP, dR, G * dg);
        float *qa = malloc((size_t)T * ld * 4), *qt = malloc((size_t)T * H * dg * 4);
        uint16_t *kvb = malloc((size_t)H * (dh + dv) * dg * 2);
        fill_f32(qa, (size_t)T * ld, 2.0f);
        fill_bf16(kvb, (size_t)H * (dh + dv) * dg, 0.5f);
        if (!cmp) /* poison: untouched entries stay NaN on both sides */
            for (size_t i = 0; i < nkv; i++)
                c.kv[i] = 0xffff;
        /* (compress: the random cache is the block's earlier entries) */
        uint16_t *kv0 = malloc(nkv * 2);
        memcpy(kv0, c.kv, nkv * 2);
        rope_cache_params rp = {.T = T, .H = H, .dh = dh, .dR = dR, .G = G, .dg = dg,
                                .eps = 1e-5f, .ld_qa = ld, .page_elems = c.page_elems,
                                .layer_off = c.layer_off, .B = B, .compress = cmp};
        absorb_params ap = {.T = T, .H = H, .dh = dh, .dv = dv, .dg = dg, .ld_qa = ld,
                            .q_stride = dh + dR};
        rope_cache_params rd = rp;
        absorb_params ad = ap;
        rd.qa = dup_dev(qa, (size_t)T * ld * 4);
        rope_inputs(&rd, &ri, &c, true);
        rd.kv = dup_dev(c.kv, nkv * 2);
        ad.qa = rd.qa;
        ad.kvb = dup_dev(kvb, (size_t)H * (dh + dv) * dg * 2);
        ad.qt = poison_dev((size_t)T * H * dg * 4);
        { /* a stacked product's halves: not taken (rope_cache_cuda sums
           * them; nothing launched) */
            rope_cache_params two = rd;
            two.qa2 = rd.qa;
            assert_int_equal(cb_rope_absorb_cuda(&two, &ad, 0), ASA_EUNSUPPORTED);
        }
        assert_int_equal(cb_rope_absorb_cuda(&rd, &ad, 0), ASA_OK);
        rp.qa = qa;
        rope_inputs(&rp, &ri, &c, false);
        rp.kv = c.kv;
        ap.qa = qa;
        ap.kvb = kvb;
        ap.qt = qt;
        cb_absorb_ref(&ap); /* reads the non-rope parts: before or after the rotation */
        rope_cache_ref(&rp);
        float *qg = malloc((size_t)T * ld * 4), *tg = malloc((size_t)T * H * dg * 4);
        uint16_t *kg = malloc(nkv * 2);
        get_dev(qg, rd.qa, (size_t)T * ld * 4);
        get_dev(kg, rd.kv, nkv * 2);
        get_dev(tg, ad.qt, (size_t)T * H * dg * 4);
        cmp_f32("rope_absorb qa", qg, qa, (size_t)T * ld, 1e-5, 1e-5);
        cmp_bf16("rope_absorb entries", kg, c.kv, nkv, 1e-6, 1.6e-2);
        if (cmp) { /* both blocks completed: their compressed entries were rewritten
                    * (so the comparison above covers them) */
            for (int i = 0; i < 2; i++) {
                const int pos = i ? q1[0] : q0[0];
                const int64_t off = (int64_t)c.tab[c.toff[i] + pos / B] * c.page_elems +
                                    c.layer_off + (int64_t)B * c.S;
                int changed = 0;
                for (int e = 0; e < c.S; e++)
                    changed += c.kv[off + e] != kv0[off + e];
                assert_true(changed > c.S / 2);
            }
        }
        free(kv0);
        cmp_f32("rope_absorb qt", tg, qt, (size_t)T * H * dg, 1e-4, 1e-5);
        n_kernels++;
        cudaFree(rd.qa);
        rope_inputs_free_dev(&rd);
        cudaFree(rd.kv);
        cudaFree((void *)ad.kvb);
        cudaFree(ad.qt);
        free(qa);
        rope_in_free(&ri);
        free(qt);
        free(kvb);
        free(qg);
        free(tg);
        free(kg);
        free(c.kv);
    }
}

/* rope_cache + the tensor-core absorb in one launch
 * (cb_rope_absorb_mma_cuda) against the two launches it replaces
 * (rope_cache_cuda, then cb_absorb_mma_cuda): bitwise, the cache entries,
 * qt and qa, whose q nope columns the one launch leaves unsummed where qa2
 * is given.  asa-1.3b's head shapes (dh 64, dR 32; G 1 dg 192, G 2 dg
 * 96), 40 tokens of two sequences (three 16-token tiles), with and
 * without a stacked product's second half, and one token a sequence with
 * the compressed entries. */
static void test_rope_absorb_mma(void **st) {
    (void)st;
    const int H = 3, dh = 64, dv = 64, dR = 32, B = 5, NP = 48;
    for (int cs = 0; cs < 5; cs++) {
        const int G = cs % 2 ? 2 : 1, dg = G == 1 ? 192 : 96, two = cs >= 2, cmp = cs == 4;
        int p0[24], p1[16];
        for (int i = 0; i < 24; i++)
            p0[i] = i;
        for (int i = 0; i < 16; i++)
            p1[i] = 7 + i;
        const int q0[] = {9}, q1[] = {34};
        pcache c;
        if (cmp)
            pcache_make(&c, G, dg, dR, B, q0, 1, q1, 1);
        else
            pcache_make(&c, G, dg, dR, B, p0, 24, p1, 16);
        const int T = c.T, ld = (H * (dh + dR) + c.S + 2 * H + 3) / 4 * 4 + 4;
        const size_t nkv = (size_t)c.npages * c.page_elems, nq = (size_t)T * ld;
        const size_t nt = (size_t)T * H * dg;
        rope_in ri = rope_in_make(NP, dR, G * dg);
        float *qa = malloc(nq * 4), *qa2 = malloc(nq * 4);
        uint16_t *kvb = malloc((size_t)H * (dh + dv) * dg * 2);
        fill_f32(qa, nq, 2.0f);
        fill_f32(qa2, nq, 1.0f);
        fill_bf16(kvb, (size_t)H * (dh + dv) * dg, 0.5f);
        rope_cache_params ra = {.T = T, .H = H, .dh = dh, .dR = dR, .G = G, .dg = dg,
                                .eps = 1e-5f, .ld_qa = ld, .page_elems = c.page_elems,
                                .layer_off = c.layer_off, .B = B, .compress = cmp};
        rope_inputs(&ra, &ri, &c, true);
        ra.qa2 = two ? dup_dev(qa2, nq * 4) : NULL;
        rope_cache_params rb = ra;
        ra.qa = dup_dev(qa, nq * 4);
        rb.qa = dup_dev(qa, nq * 4);
        ra.kv = dup_dev(c.kv, nkv * 2);
        rb.kv = dup_dev(c.kv, nkv * 2);
        absorb_params aa = {.T = T, .H = H, .dh = dh, .dv = dv, .dg = dg, .ld_qa = ld,
                            .q_stride = dh + dR};
        aa.kvb = dup_dev(kvb, (size_t)H * (dh + dv) * dg * 2);
        absorb_params ab = aa;
        aa.qa = ra.qa;
        ab.qa = rb.qa;
        aa.qt = poison_dev(nt * 4);
        ab.qt = poison_dev(nt * 4);
        assert_int_equal(rope_cache_cuda(&ra, 0), ASA_OK);
        assert_int_equal(cb_absorb_mma_cuda(&aa, 0), ASA_OK);
        assert_int_equal(cb_rope_absorb_mma_cuda(&rb, &ab, 0), ASA_OK);
        float *qga = malloc(nq * 4), *qgb = malloc(nq * 4), *tga = malloc(nt * 4),
              *tgb = malloc(nt * 4);
        uint16_t *kga = malloc(nkv * 2), *kgb = malloc(nkv * 2);
        get_dev(qga, ra.qa, nq * 4);
        get_dev(qgb, rb.qa, nq * 4);
        get_dev(tga, aa.qt, nt * 4);
        get_dev(tgb, ab.qt, nt * 4);
        get_dev(kga, ra.kv, nkv * 2);
        get_dev(kgb, rb.kv, nkv * 2);
        if (memcmp(kga, kgb, nkv * 2) || memcmp(tga, tgb, nt * 4))
            fail_msg("rope_absorb_mma (case %d): entries or qt not bitwise the two launches'",
                     cs);
        for (int t = 0; t < T; t++)
            for (int i = 0; i < ld; i++) {
                const size_t at = (size_t)t * ld + i;
                const bool nope = two && i < H * (dh + dR) && i % (dh + dR) < dh;
                const float want = nope ? qa[at] : qga[at];
                if (memcmp(&qgb[at], &want, 4))
                    fail_msg("rope_absorb_mma (case %d): qa token %d column %d: got %.8g, "
                             "want %.8g",
                             cs, t, i, qgb[at], want);
            }
        n_checked += (int)(2 * nq + nt + nkv);
        n_kernels++;
        rope_inputs_free_dev(&ra);
        cudaFree((void *)ra.qa2);
        cudaFree(ra.qa);
        cudaFree(rb.qa);
        cudaFree(ra.kv);
        cudaFree(rb.kv);
        cudaFree((void *)aa.kvb);
        cudaFree(aa.qt);
        cudaFree(ab.qt);
        free(qa);
        free(qa2);
        rope_in_free(&ri);
        free(kvb);
        free(qga);
        free(qgb);
        free(tga);
        free(tgb);
        free(kga);
        free(kgb);
        free(c.kv);
    }
}

/* The fused GEMV x modes of the decode step against the two-kernel path
 * they replace (cb_rmsnorm_cuda or silu_mul_cuda, then the plain GEMV), at
 * the engine's shapes (d 2048; F a multiple of 8) and M = 1, 2: bitwise on
 * the device (the same f32 arithmetic in the same order); within f32
 * rounding under the host emulation (ASA_CUDA_FAKE: the launchers are the
 * references there). */
static void test_gemv_fused(void **st) {
    (void)st;
    const bool exact = !getenv("ASA_CUDA_FAKE");
    for (int cs = 0; cs < 4; cs++) {
        const int M = 1 + cs % 2, D = 512, F = 264, N = 37;
        const bool silu = cs >= 2;
        const int K = silu ? F : D;
        const size_t nx = (size_t)M * (silu ? 2 * F : D);
        float *x = malloc(nx * 4), *r = malloc((size_t)M * D * 4), *w = malloc((size_t)D * 4);
        uint16_t *W = malloc((size_t)N * K * 2);
        float *y1 = malloc((size_t)M * N * 4), *y2 = malloc((size_t)M * N * 4);
        float *r1 = malloc((size_t)M * D * 4), *r2 = malloc((size_t)M * D * 4);
        fill_f32(x, nx, silu ? 3.0f : 1.0f);
        fill_f32(r, (size_t)M * D, 2.0f);
        fill_f32(w, (size_t)D, 1.5f);
        fill_bf16(W, (size_t)N * K, 0.05f);
        float *xd = dup_dev(x, nx * 4), *rd = dup_dev(r, (size_t)M * D * 4);
        float *wd = dup_dev(w, (size_t)D * 4), *ro = poison_dev((size_t)M * D * 4);
        uint16_t *Wd = dup_dev(W, (size_t)N * K * 2);
        float *hd = poison_dev(nx * 4), *yd1 = poison_dev((size_t)M * N * 4),
              *yd2 = poison_dev((size_t)M * N * 4);
        /* unfused: norm in place on a copy of the residual, or silu_mul */
        float *rcopy = dup_dev(r, (size_t)M * D * 4);
        if (silu) {
            silu_mul_params sm = {.rows = M, .F = F, .gu = xd, .gu_type = KC_F32,
                                  .ld_gu = 2 * F, .out = hd, .out_type = KC_F32, .ld_out = F};
            assert_int_equal(silu_mul_cuda(&sm, 0), ASA_OK);
        } else {
            assert_int_equal(cb_rmsnorm_cuda(M, D, 1e-6f, xd, NULL, 0, rcopy, wd, hd, 0), ASA_OK);
        }
        gemv_params g1 = {.M = M, .N = N, .K = K, .x = hd, .x_type = KC_F32, .ldx = K, .w = Wd,
                          .ldw = K, .y_f32 = yd1, .ldy = N};
        assert_int_equal(gemv_bf16_cuda(&g1, 0), ASA_OK);
        gemv_params g2 = {.M = M, .N = N, .K = K, .x = xd, .x_type = KC_F32,
                          .ldx = silu ? 2 * F : D, .w = Wd, .ldw = K, .y_f32 = yd2, .ldy = N,
                          .x_mode = silu ? GEMV_X_SILU : GEMV_X_NORM};
        if (!silu) {
            g2.res = rd;
            g2.res_out = ro;
            g2.norm_w = wd;
            g2.eps = 1e-6f;
        }
        assert_int_equal(gemv_bf16_cuda(&g2, 0), ASA_OK);
        get_dev(y1, yd1, (size_t)M * N * 4);
        get_dev(y2, yd2, (size_t)M * N * 4);
        if (exact)
            cmp_f32(silu ? "gemv silu fused" : "gemv norm fused", y2, y1, (size_t)M * N, 0, 0);
        else
            cmp_f32(silu ? "gemv silu fused" : "gemv norm fused", y2, y1, (size_t)M * N, 1e-4,
                    1e-4);
        if (!silu) {
            get_dev(r1, rcopy, (size_t)M * D * 4);
            get_dev(r2, ro, (size_t)M * D * 4);
            cmp_f32("gemv norm fused residual", r2, r1, (size_t)M * D, 0, 0);
            get_dev(r1, rd, (size_t)M * D * 4);
            cmp_f32("gemv norm fused residual input kept", r1, r, (size_t)M * D, 0, 0);
        }
        n_kernels++;
        cudaFree(xd);
        cudaFree(rd);
        cudaFree(wd);
        cudaFree(ro);
        cudaFree(Wd);
        cudaFree(hd);
        cudaFree(yd1);
        cudaFree(yd2);
        cudaFree(rcopy);
        free(x);
        free(r);
        free(w);
        free(W);
        free(y1);
        free(y2);
        free(r1);
        free(r2);
    }
}

static void test_absorb_expand(void **st) {
    (void)st;
    /* odd shapes: the scalar kernels */
    absorb_expand_case(5, 7, 9, 13, 4, 11, false);

    /* split into bf16 hi + lo: odd columns (scalar path), then columns and
     * stride multiples of 4 (vector path) */
    for (int sv = 0; sv < 2; sv++) {
        const int sr = 5, sc = sv ? 1000 : 19, sld = sv ? 1004 : 23;
        float *sx = malloc((size_t)sr * sld * 4);
        fill_f32(sx, (size_t)sr * sld, 3.0f);
        uint16_t *hi_r = malloc((size_t)sr * sc * 2), *lo_r = malloc((size_t)sr * sc * 2);
        uint16_t *hi_g = malloc((size_t)sr * sc * 2), *lo_g = malloc((size_t)sr * sc * 2);
        for (int r = 0; r < sr; r++)
            for (int i = 0; i < sc; i++) {
                float v = sx[r * sld + i];
                hi_r[r * sc + i] = asa_f32_to_bf16(v);
                lo_r[r * sc + i] = asa_f32_to_bf16(v - asa_bf16_to_f32(hi_r[r * sc + i]));
            }
        float *sx_d = dup_dev(sx, (size_t)sr * sld * 4);
        uint16_t *hi_d = poison_dev((size_t)sr * sc * 2), *lo_d = poison_dev((size_t)sr * sc * 2);
        assert_int_equal(cb_split_bf16_cuda(sr, sc, sx_d, sld, hi_d, lo_d, 0), ASA_OK);
        get_dev(hi_g, hi_d, (size_t)sr * sc * 2);
        get_dev(lo_g, lo_d, (size_t)sr * sc * 2);
        cmp_bf16("split hi", hi_g, hi_r, (size_t)sr * sc, 0, 0);
        cmp_bf16("split lo", lo_g, lo_r, (size_t)sr * sc, 0, 0);
        n_kernels++;
        cudaFree(sx_d);
        cudaFree(hi_d);
        cudaFree(lo_d);
        free(sx);
        free(hi_r);
        free(lo_r);
        free(hi_g);
        free(lo_g);
    }

    /* embed and gather: exact copies */
    const int V = 17, dd = 45;
    uint16_t *emb = malloc((size_t)V * dd * 2);
    fill_bf16(emb, (size_t)V * dd, 1.0f);
    int32_t tok[6] = {3, 16, 0, 3, 9, 1};
    float *x = malloc(6 * dd * 4), *xr = malloc(6 * dd * 4);
    for (int t = 0; t < 6; t++)
        for (int i = 0; i < dd; i++)
            xr[t * dd + i] = asa_bf16_to_f32(emb[tok[t] * dd + i]);
    int32_t *tok_d = dup_dev(tok, sizeof tok);
    uint16_t *emb_d = dup_dev(emb, (size_t)V * dd * 2);
    float *x_d = poison_dev(6 * dd * 4);
    assert_int_equal(cb_embed_cuda(6, dd, tok_d, emb_d, x_d, 0), ASA_OK);
    get_dev(x, x_d, 6 * dd * 4);
    cmp_f32("embed", x, xr, 6 * dd, 0, 0);
    float *gr = malloc(6 * 40 * 4), *gg = malloc(6 * 40 * 4), *g_d = poison_dev(6 * 40 * 4);
    int32_t rows[6] = {5, 0, 3, 3, 1, 2};
    for (int r = 0; r < 6; r++)
        memcpy(gr + r * 40, xr + rows[r] * dd, 40 * 4);
    int32_t *rows_d = dup_dev(rows, sizeof rows);
    assert_int_equal(cb_gather_rows_cuda(6, 40, rows_d, x_d, dd, g_d, 0), ASA_OK);
    get_dev(gg, g_d, 6 * 40 * 4);
    cmp_f32("gather", gg, gr, 6 * 40, 0, 0);
    n_kernels += 2;
    cudaFree(tok_d);
    cudaFree(rows_d);
    cudaFree(emb_d);
    cudaFree(x_d);
    cudaFree(g_d);
    free(emb);
    free(x);
    free(xr);
    free(gr);
    free(gg);
}

/* ---- sampling (sample.cu) against eng_sample (engine/sample.c) ----------- */

/* One random row of logits: plain, coarse (many ties), with non-finite
 * values, all non-finite, or huge. */
static void smp_logits(float *x, int V, int kind) {
    const float sc = 0.5f + 8.0f * (float)randint(1000) / 1000.0f;
    for (int i = 0; i < V; i++) {
        float v = unif() * sc;
        if (kind == 1)
            v = roundf(v * 2.0f) / 2.0f;
        x[i] = v;
    }
    if (kind == 2)
        for (int j = 0; j < 1 + V / 50; j++) {
            const float s[4] = {NAN, INFINITY, -INFINITY, -INFINITY};
            x[randint(V)] = s[randint(4)];
        }
    if (kind == 3)
        for (int i = 0; i < V; i++)
            x[i] = randint(2) ? NAN : -INFINITY;
    if (kind == 4)
        for (int j = 0; j < 3; j++)
            x[randint(V)] = FLT_MAX * (randint(2) ? 1.0f : 0.5f);
}

static float pick_f(const float *v, int n) { return v[randint(n)]; }

/* Random parameters for a row; lists into ids (prompt then output). */
static void smp_params(eng_sampling *sp, int V, int32_t *bias_ids, float *bias_vals,
                       int32_t *ids, int *np, int *no) {
    static const float temps[] = {0.0f, 1e-6f, 0.3f, 0.7f, 1.0f, 1.0f, 1.5f};
    static const float tps[] = {1.0f, 1.0f, 0.95f, 0.9f, 0.5f, 0.1f, 1e-3f};
    static const float mps[] = {0.0f, 0.0f, 0.02f, 0.3f, 1.0f};
    static const float rps[] = {1.0f, 1.0f, 1.3f, 0.8f};
    static const float fps[] = {0.0f, 0.0f, 0.5f, -0.3f};
    static const float pps[] = {0.0f, 0.0f, 1.0f, -0.5f};
    const int tks[] = {0, 0, 1, 5, 40, V - 1, V};
    memset(sp, 0, sizeof *sp);
    sp->temperature = pick_f(temps, 7);
    sp->top_k = tks[randint(7)];
    sp->top_p = pick_f(tps, 7);
    sp->min_p = pick_f(mps, 5);
    sp->repetition_penalty = pick_f(rps, 4);
    sp->frequency_penalty = pick_f(fps, 4);
    sp->presence_penalty = pick_f(pps, 4);
    sp->seed = ((uint64_t)rnd() << 32) ^ rnd();
    static const int nls[] = {0, 0, 1, 5, 20};
    sp->n_logprobs = nls[randint(5)];
    sp->n_bias = randint(3) ? 0 : 1 + randint(12);
    for (int j = 0; j < sp->n_bias; j++) {
        bias_ids[j] = j > 0 && randint(3) == 0 ? bias_ids[randint(j)] : randint(V);
        const int r = randint(8);
        bias_vals[j] = r == 0 ? -INFINITY : r == 1 ? INFINITY : unif() * 20.0f;
    }
    sp->bias_ids = bias_ids;
    sp->bias_vals = bias_vals;
    *np = randint(4) ? randint(300) : 0;
    *no = randint(4) ? randint(300) : 0;
    const int pool = 1 + randint(V);
    for (int j = 0; j < *np + *no; j++)
        ids[j] = randint(pool); /* repeats */
}

typedef struct smp_batch {
    int B, V, n_top;
    float *logits;            /* [B][ld] host */
    int64_t ld;
    eng_sampling *sp;         /* [B] */
    sample_row *rows;         /* [B] */
    int32_t *bias_ids, *toks; /* packed */
    float *bias_vals;
    int n_bias, n_toks;
} smp_batch;

/* Runs the kernel on the batch and returns its outputs (host). */
static uint64_t *smp_dbg; /* [B][SAMPLE_DBG] of the last smp_run (sample_cuda.h) */
static void smp_run(const smp_batch *sb, int32_t *tok, float *lp, int32_t *tids, float *tlp,
                    uint32_t **counts_keep) {
    const int B = sb->B, V = sb->V;
    float *d_log = dup_dev(sb->logits, (size_t)B * sb->ld * 4);
    sample_row *d_rows = dup_dev(sb->rows, (size_t)B * sizeof(sample_row));
    int32_t *d_bid = dup_dev(sb->bias_ids, (size_t)sb->n_bias * 4);
    float *d_bv = dup_dev(sb->bias_vals, (size_t)sb->n_bias * 4);
    int32_t *d_toks = dup_dev(sb->toks, (size_t)sb->n_toks * 4);
    uint32_t *d_cnt = NULL;
    assert_int_equal(cudaMalloc((void **)&d_cnt, (size_t)B * V * 4), cudaSuccess);
    assert_int_equal(cudaMemset(d_cnt, 0, (size_t)B * V * 4), cudaSuccess);
    int32_t *d_tok = poison_dev((size_t)B * 4);
    float *d_lp = poison_dev((size_t)B * 4);
    int32_t *d_tids = poison_dev((size_t)B * (sb->n_top ? sb->n_top : 1) * 4);
    float *d_tlp = poison_dev((size_t)B * (sb->n_top ? sb->n_top : 1) * 4);
    sample_params p = {.B = B, .V = V, .n_top = sb->n_top, .logits = d_log, .ld = sb->ld,
                       .rows = d_rows, .bias_ids = d_bid, .bias_vals = d_bv, .toks = d_toks,
                       .counts = d_cnt, .token = d_tok, .token_lp = d_lp,
                       .top_ids = sb->n_top ? d_tids : NULL, .top_lp = sb->n_top ? d_tlp : NULL};
    uint64_t *d_dbg = poison_dev((size_t)B * SAMPLE_DBG * 8);
    p.dbg = d_dbg;
    assert_int_equal(sample_cuda(&p, NULL), ASA_OK);
    free(smp_dbg);
    smp_dbg = malloc((size_t)B * SAMPLE_DBG * 8);
    get_dev(smp_dbg, d_dbg, (size_t)B * SAMPLE_DBG * 8);
    cudaFree(d_dbg);
    get_dev(tok, d_tok, (size_t)B * 4);
    get_dev(lp, d_lp, (size_t)B * 4);
    if (sb->n_top) {
        get_dev(tids, d_tids, (size_t)B * sb->n_top * 4);
        get_dev(tlp, d_tlp, (size_t)B * sb->n_top * 4);
    }
    uint32_t *cnt = malloc((size_t)B * V * 4);
    get_dev(cnt, d_cnt, (size_t)B * V * 4);
    if (counts_keep)
        *counts_keep = cnt;
    else
        free(cnt);
    cudaFree(d_log);
    cudaFree(d_rows);
    cudaFree(d_bid);
    cudaFree(d_bv);
    cudaFree(d_toks);
    cudaFree(d_cnt);
    cudaFree(d_tok);
    cudaFree(d_lp);
    cudaFree(d_tids);
    cudaFree(d_tlp);
    n_kernels++;
}

static void smp_row_of(const eng_sampling *sp, int n_prompt, int n_output, int bias_off,
                       int tok_off, sample_row *r) {
    *r = (sample_row){.temperature = sp->temperature, .top_p = sp->top_p, .min_p = sp->min_p,
                      .presence = sp->presence_penalty, .frequency = sp->frequency_penalty,
                      .repetition = sp->repetition_penalty, .top_k = sp->top_k,
                      .n_logprobs = sp->n_logprobs, .skip = 0, .n_bias = sp->n_bias,
                      .bias_off = bias_off, .n_prompt = n_prompt, .n_output = n_output,
                      .tok_off = tok_off, .seed = sp->seed};
}

/* a == b, or both -inf, or one float ulp apart, or 1e-15 apart near 0 (the
 * normaliser log S: S is summed exactly on the device, in double in id
 * order on the host: sample_cuda.h) */
static bool smp_lp_eq(float a, float b) {
    if (a == b)
        return true;
    if (!isfinite(a) || !isfinite(b))
        return false;
    return fabsf(a - b) <= fmaxf(1.5f * fabsf(b) * FLT_EPSILON, 1e-15f);
}

/* Knife edges (sample_cuda.h): the host's top-p cut compares double sums
 * taken in id order, the kernel's exact ones.  A row is on a knife edge
 * when, in the host's descending order after top-k, some cumulative mass
 * lies within 1e-9 of top_p * total (relative): there the two may keep
 * different sets, so such rows are counted and not compared.  The stages
 * before are eng_sample's (sample.h), repeated here. */
static const float *smp_sort_vals;
static int smp_cmp_desc1(const void *a, const void *b) {
    const float *v = smp_sort_vals;
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return v[x] > v[y] ? -1 : v[x] < v[y] ? 1 : (x > y) - (x < y);
}
static float smp_clean_h(float x) { return isnan(x) ? -INFINITY : x > FLT_MAX ? FLT_MAX : x; }
/* w = the adjusted logits of eng_sample (stages 1-3); returns their
 * argmax (ties: lower id), *wmax the maximum. */
static int smp_adjust(const float *logits, int V, const eng_sampling *sp, const int32_t *prompt,
                      int np, const int32_t *output, int no, float *w, float *wmax) {
    int *cnt = calloc((size_t)V, sizeof(int));
    for (int i = 0; i < V; i++)
        w[i] = smp_clean_h(logits[i]);
    for (int i = 0; i < sp->n_bias; i++)
        w[sp->bias_ids[i]] = smp_clean_h(w[sp->bias_ids[i]] + sp->bias_vals[i]);
    const float rp = sp->repetition_penalty;
    if (rp != 1.0f)
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < (s ? no : np); i++) {
                const int32_t t = s ? output[i] : prompt[i];
                if (cnt[t])
                    continue;
                cnt[t] = 1;
                w[t] = smp_clean_h(w[t] > 0 ? w[t] / rp : w[t] * rp);
            }
    if (sp->frequency_penalty != 0 || sp->presence_penalty != 0) {
        memset(cnt, 0, (size_t)V * sizeof(int));
        for (int i = 0; i < no; i++)
            cnt[output[i]]++;
        for (int i = 0; i < no; i++) {
            const int32_t t = output[i];
            if (cnt[t])
                w[t] = smp_clean_h(w[t] - (sp->frequency_penalty * (float)cnt[t] +
                                           sp->presence_penalty));
            cnt[t] = 0;
        }
    }
    int best = 0;
    *wmax = -INFINITY;
    for (int i = 0; i < V; i++)
        if (w[i] > *wmax) {
            *wmax = w[i];
            best = i;
        }
    free(cnt);
    return best;
}

static bool smp_knife_edge(const float *logits, int V, const eng_sampling *sp,
                           const int32_t *prompt, int np, const int32_t *output, int no) {
    if (sp->temperature < ENG_SAMPLE_GREEDY_EPS || !(sp->top_p < 1.0f))
        return false;
    float *w = malloc((size_t)V * 4);
    int32_t *idx = malloc((size_t)V * 4);
    float m;
    smp_adjust(logits, V, sp, prompt, np, output, no, w, &m);
    bool edge = false;
    if (m > -INFINITY) {
        eng_sample_exp_array(w, w, V, m, 1.0f / sp->temperature);
        int n = 0;
        for (int i = 0; i < V; i++)
            if (w[i] > 0)
                idx[n++] = i;
        smp_sort_vals = w;
        qsort(idx, (size_t)n, sizeof *idx, smp_cmp_desc1);
        if (sp->top_k > 0 && sp->top_k < n)
            n = sp->top_k;
        long double tot = 0, cum = 0;
        for (int r = 0; r < n; r++)
            tot += w[idx[r]];
        const long double goal = (long double)sp->top_p * tot;
        for (int r = 0; r <= n && !edge; r++) {
            edge = fabsl(cum - goal) <= 1e-9L * tot;
            if (r < n)
                cum += w[idx[r]];
        }
    }
    free(w);
    free(idx);
    return edge;
}

/* On a token mismatch: the kernel's stage values (sample_cuda.h, dbg)
 * beside the host's, to show where the row departs. */
static void smp_explain(const float *logits, int V, const eng_sampling *sp, const int32_t *prompt,
                        int np, const int32_t *output, int no, int host_tok, const uint64_t *d) {
    float *w = malloc((size_t)V * 4), wmax;
    const int best = smp_adjust(logits, V, sp, prompt, np, output, no, w, &wmax);
    float e_host = 0;
    if (sp->temperature >= ENG_SAMPLE_GREEDY_EPS && wmax > -INFINITY)
        e_host = eng_sample_exp((w[host_tok] - wmax) * (1.0f / sp->temperature));
    union { uint64_t u; double d; } tg = {.u = d[5]};
    union { uint32_t u; float f; } wm = {.u = (uint32_t)d[2]}, et = {.u = (uint32_t)d[6]};
    printf("sample mismatch: device: raw best %lld best %lld max %.9g first hit %lld "
           "total %.17g target %.17g e(token) %.9g token %lld\n"
           "                 host: best %d max %.9g e(host token %d) %.9g (before filters)\n",
           (long long)d[0], (long long)d[1], wm.f, (long long)d[3], (double)d[4] * 0x1.0p-32,
           tg.d * 0x1.0p64, et.f, (long long)d[7], best, wmax, host_tok, e_host);
    free(w);
}

static void test_sample(void **st) {
    (void)st;
    /* ASA_SAMPLE_ONLY=V:row repeats one row of a GPU run in the emulator:
     * the full (non-ASA_EMU) rows are generated, but only that row of that
     * shape runs on the device and is compared (row -1: all of its rows).  The generator's state at
     * this point is printed; ASA_SAMPLE_RS=<state> starts from it (with
     * ASA_TEST_FILTER=test_sample the tests before need not run again). */
    int only_v = 0, only_row = -1;
    const char *only = getenv("ASA_SAMPLE_ONLY");
    if (only && sscanf(only, "%d:%d", &only_v, &only_row) != 2)
        fail_msg("ASA_SAMPLE_ONLY=%s: expected V:row", only);
    const char *srs = getenv("ASA_SAMPLE_RS");
    if (srs)
        rs = strtoull(srs, NULL, 0);
    printf("test_sample: generator state %llu (ASA_SAMPLE_RS)\n", (unsigned long long)rs);
    const bool emu = getenv("ASA_EMU") != NULL && !only;
    const int shapes[][2] = {{20, 9}, {37, 12}, {1000, 12}, {5003, 8}, {32000, 8}, {32000, 8},
                             {SAMPLE_MAX_V, 3}};
    int mism_tok = 0, rows_checked = 0, sampled = 0, knife = 0;
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        const int V = shapes[sh][0], B = emu ? (shapes[sh][1] + 1) / 2 : shapes[sh][1] * 8;
        const int64_t ld = V + (sh % 2 ? 3 : 0);
        smp_batch sb = {.B = B, .V = V, .ld = ld, .n_top = 0};
        sb.logits = malloc((size_t)B * ld * 4);
        sb.sp = calloc((size_t)B, sizeof *sb.sp);
        sb.rows = calloc((size_t)B, sizeof *sb.rows);
        sb.bias_ids = malloc((size_t)B * 16 * 4);
        sb.bias_vals = malloc((size_t)B * 16 * 4);
        sb.toks = malloc((size_t)B * 600 * 4);
        int *np = calloc((size_t)B, sizeof(int)), *no = calloc((size_t)B, sizeof(int));
        for (int b = 0; b < B; b++) {
            const int kind = randint(10) < 5 ? 0 : randint(5);
            smp_logits(sb.logits + (size_t)b * ld, V, kind == 3 && randint(3) ? 0 : kind);
            for (int64_t i = V; i < ld; i++)
                sb.logits[(size_t)b * ld + i] = NAN; /* past V: never read */
            smp_params(&sb.sp[b], V, sb.bias_ids + sb.n_bias, sb.bias_vals + sb.n_bias,
                       sb.toks + sb.n_toks, &np[b], &no[b]);
            smp_row_of(&sb.sp[b], np[b], no[b], sb.n_bias, sb.n_toks, &sb.rows[b]);
            sb.rows[b].skip = randint(16) == 0;
            sb.sp[b].bias_ids = sb.bias_ids + sb.n_bias;
            sb.sp[b].bias_vals = sb.bias_vals + sb.n_bias;
            sb.n_bias += sb.sp[b].n_bias;
            sb.n_toks += np[b] + no[b];
            if (sb.sp[b].n_logprobs > sb.n_top)
                sb.n_top = sb.sp[b].n_logprobs;
        }
        if (only) {
            /* the generator has advanced as in a full run; other shapes and
             * rows are not launched */
            for (int b = 0; b < B; b++)
                if (V != only_v || (only_row >= 0 && b != only_row))
                    sb.rows[b].skip = 1;
            if (V == only_v && only_row >= 0 && only_row < B) {
                const eng_sampling *sp = &sb.sp[only_row];
                printf("test_sample: V=%d row %d: T %g k %d p %g minp %g rp %g fp %g pp %g "
                       "bias %d lists %d+%d seed %llu skip %d\n",
                       V, only_row, sp->temperature, sp->top_k, sp->top_p, sp->min_p,
                       sp->repetition_penalty, sp->frequency_penalty, sp->presence_penalty,
                       sp->n_bias, np[only_row], no[only_row], (unsigned long long)sp->seed,
                       sb.rows[only_row].skip);
                /* ASA_SAMPLE_DUMP=file: the row (V, the parameters, np, no,
                 * the logits, the lists) for offline study */
                const char *dump = getenv("ASA_SAMPLE_DUMP");
                FILE *f = dump ? fopen(dump, "wb") : NULL;
                if (f) {
                    const int hdr[3] = {V, np[only_row], no[only_row]};
                    fwrite(hdr, sizeof hdr, 1, f);
                    fwrite(sp, sizeof *sp, 1, f);
                    fwrite(sb.logits + (size_t)only_row * ld, 4, (size_t)V, f);
                    fwrite(sb.toks + sb.rows[only_row].tok_off, 4,
                           (size_t)(np[only_row] + no[only_row]), f);
                    fwrite(sb.bias_ids + sb.rows[only_row].bias_off, 4, (size_t)sp->n_bias, f);
                    fwrite(sb.bias_vals + sb.rows[only_row].bias_off, 4, (size_t)sp->n_bias, f);
                    fclose(f);
                }
            }
        }
        const int nt = sb.n_top ? sb.n_top : 1;
        int32_t *tok = malloc((size_t)B * 4), *tids = malloc((size_t)B * nt * 4);
        float *lp = malloc((size_t)B * 4), *tlp = malloc((size_t)B * nt * 4);
        uint32_t *cnt = NULL;
        smp_run(&sb, tok, lp, tids, tlp, &cnt);
        for (size_t i = 0; i < (size_t)B * V; i++)
            if (cnt[i])
                fail_msg("sample V=%d: counts scratch not zero after the launch (%zu)", V, i);
        float *scratch = malloc((size_t)2 * V * 4);
        if (only && V == only_v) {
            /* every row's host token (a device token that belongs to a
             * neighbour would show up here) */
            printf("test_sample: V=%d host tokens:", V);
            for (int b = 0; b < B; b++) {
                eng_seq_result r;
                const int32_t *ids = sb.toks + sb.rows[b].tok_off;
                eng_sample(sb.logits + (size_t)b * ld, V, &sb.sp[b], np[b] ? ids : NULL, np[b],
                           no[b] ? ids + np[b] : NULL, no[b], scratch, &r);
                printf(" %d", r.token);
            }
            printf("\n");
        }
        for (int b = 0; b < B; b++) {
            if (only && (V != only_v || (only_row >= 0 && b != only_row)))
                continue;
            if (sb.rows[b].skip) {
                if (tok[b] != -1)
                    fail_msg("sample V=%d row %d: skipped row written", V, b);
                continue;
            }
            eng_seq_result r;
            const int32_t *ids = sb.toks + sb.rows[b].tok_off;
            if (smp_knife_edge(sb.logits + (size_t)b * ld, V, &sb.sp[b], ids, np[b],
                               ids + np[b], no[b])) {
                knife++;
                continue;
            }
            assert_int_equal(eng_sample(sb.logits + (size_t)b * ld, V, &sb.sp[b], np[b] ? ids : NULL,
                                        np[b], no[b] ? ids + np[b] : NULL, no[b], scratch, &r),
                             ASA_OK);
            const eng_sampling *sp = &sb.sp[b];
            if (tok[b] != r.token) {
                mism_tok++;
                smp_explain(sb.logits + (size_t)b * ld, V, sp, ids, np[b], ids + np[b], no[b],
                            r.token, smp_dbg + (size_t)b * SAMPLE_DBG);
                fail_msg("sample V=%d row %d: token %d, host %d (T %g k %d p %g minp %g rp %g "
                         "fp %g pp %g bias %d lists %d+%d)",
                         V, b, tok[b], r.token, sp->temperature, sp->top_k, sp->top_p,
                         sp->min_p, sp->repetition_penalty, sp->frequency_penalty,
                         sp->presence_penalty, sp->n_bias, np[b], no[b]);
            }
            if (!smp_lp_eq(lp[b], r.logprob))
                fail_msg("sample V=%d row %d: logprob %.9g, host %.9g", V, b, lp[b], r.logprob);
            for (int j = 0; j < sp->n_logprobs; j++) {
                if (tids[(size_t)b * sb.n_top + j] != r.top_ids[j] ||
                    !smp_lp_eq(tlp[(size_t)b * sb.n_top + j], r.top_logprobs[j]))
                    fail_msg("sample V=%d row %d: top %d: id %d lp %.9g, host %d %.9g", V, b, j,
                             tids[(size_t)b * sb.n_top + j], tlp[(size_t)b * sb.n_top + j],
                             r.top_ids[j], r.top_logprobs[j]);
            }
            rows_checked++;
            sampled += sp->temperature >= 1e-5f;
            n_checked += 2 + 2 * sp->n_logprobs;
        }
        free(scratch);
        free(cnt);
        free(tok);
        free(tids);
        free(lp);
        free(tlp);
        free(np);
        free(no);
        free(sb.logits);
        free(sb.sp);
        free(sb.rows);
        free(sb.bias_ids);
        free(sb.bias_vals);
        free(sb.toks);
    }
    printf("test_sample: %d rows (%d drawn) identical to eng_sample; %d top-p knife edges "
           "not compared\n", rows_checked, sampled, knife);
    assert_int_equal(mism_tok, 0);
}

/* Rows like the one that failed on an H200 (seed 4766983538586972480, V =
 * 1000 row 24: FLT_MAX at 836 and 872, FLT_MAX / 2 at 699, T 1, top-p
 * 0.9, frequency/presence -0.3/-0.5; the kernel drew 699, whose e is 0):
 * huge logits in different warps, sampled with top-p and penalties, so
 * that every row exercises the reductions with far-apart maxima. */
static void test_sample_huge(void **st) {
    (void)st;
    const int B = getenv("ASA_EMU") ? 4 : 256;
    const int Vs[2] = {1000, 5003};
    for (int vi = 0; vi < 2; vi++) {
        const int V = Vs[vi];
        smp_batch sb = {.B = B, .V = V, .ld = V, .n_top = 0};
        sb.logits = malloc((size_t)B * V * 4);
        sb.sp = calloc((size_t)B, sizeof *sb.sp);
        sb.rows = calloc((size_t)B, sizeof *sb.rows);
        sb.toks = malloc((size_t)B * 64 * 4);
        for (int b = 0; b < B; b++) {
            float *x = sb.logits + (size_t)b * V;
            for (int i = 0; i < V; i++)
                x[i] = unif() * 8.0f;
            const int nbig = 1 + randint(3), nhalf = 1 + randint(3);
            for (int j = 0; j < nbig + nhalf; j++)
                x[randint(V)] = j < nbig ? FLT_MAX : FLT_MAX * (randint(2) ? 0.5f : 0.25f);
            eng_sampling *sp = &sb.sp[b];
            static const float tps[] = {1.0f, 0.9f, 0.5f};
            sp->temperature = b % 2 ? 1.0f : 0.7f;
            sp->top_p = tps[randint(3)];
            sp->frequency_penalty = randint(2) ? -0.3f : 0.0f;
            sp->presence_penalty = randint(2) ? -0.5f : 0.0f;
            sp->repetition_penalty = 1.0f;
            sp->seed = ((uint64_t)rnd() << 32) ^ rnd();
            const int no = randint(2) ? 32 : 0;
            for (int j = 0; j < no; j++)
                sb.toks[sb.n_toks + j] = randint(V);
            smp_row_of(sp, 0, no, 0, sb.n_toks, &sb.rows[b]);
            sb.n_toks += no;
        }
        int32_t tok[256], tids[1];
        float lp[256], tlp[1];
        smp_run(&sb, tok, lp, tids, tlp, NULL);
        float *scratch = malloc((size_t)2 * V * 4);
        int mism = 0, knife = 0;
        for (int b = 0; b < B; b++) {
            const float *x = sb.logits + (size_t)b * V;
            const int32_t *out = sb.toks + sb.rows[b].tok_off;
            const int no = sb.rows[b].n_output;
            if (smp_knife_edge(x, V, &sb.sp[b], NULL, 0, out, no)) {
                knife++;
                continue;
            }
            eng_seq_result r;
            assert_int_equal(eng_sample(x, V, &sb.sp[b], NULL, 0, no ? out : NULL, no, scratch, &r),
                             ASA_OK);
            n_checked++;
            if (tok[b] != r.token) {
                mism++;
                smp_explain(x, V, &sb.sp[b], NULL, 0, out, no, r.token,
                            smp_dbg + (size_t)b * SAMPLE_DBG);
                printf("sample huge V=%d row %d: token %d, host %d (T %g p %g fp %g pp %g "
                       "output %d)\n", V, b, tok[b], r.token, sb.sp[b].temperature,
                       sb.sp[b].top_p, sb.sp[b].frequency_penalty, sb.sp[b].presence_penalty,
                       no);
            }
        }
        printf("test_sample_huge: V=%d: %d rows, %d mismatches, %d knife edges\n", V, B, mism,
               knife);
        free(scratch);
        free(sb.logits);
        free(sb.sp);
        free(sb.rows);
        free(sb.toks);
        assert_int_equal(mism, 0);
    }
}

/* The distribution: one row of V = 24 logits drawn with many seeds, under
 * temperature, top-k and top-p; chi-square of the counts against the
 * probabilities that the kept set implies (computed here in double). */
static void test_sample_chi2(void **st) {
    (void)st;
    const int V = 24, B = getenv("ASA_EMU") ? 48 : 4096;
    float x[24];
    for (int i = 0; i < V; i++)
        x[i] = unif() * 2.0f;
    x[3] = x[7]; /* a tie */
    eng_sampling sp = {.temperature = 0.8f, .top_k = 12, .top_p = 0.9f, .min_p = 0.0f,
                       .repetition_penalty = 1.0f};
    /* expected: e_i, the top 12, then the shortest prefix of descending mass
     * >= 0.9 of it */
    double e[24], pr[24] = {0};
    int ord[24];
    double mx = -INFINITY;
    for (int i = 0; i < V; i++)
        mx = fmax(mx, x[i]);
    for (int i = 0; i < V; i++) {
        e[i] = exp((x[i] - mx) / 0.8);
        ord[i] = i;
    }
    for (int i = 0; i < V; i++) /* descending e, ties lower id first */
        for (int j = i + 1; j < V; j++)
            if (e[ord[j]] > e[ord[i]] || (e[ord[j]] == e[ord[i]] && ord[j] < ord[i])) {
                int t = ord[i];
                ord[i] = ord[j];
                ord[j] = t;
            }
    double tot = 0, cum = 0;
    for (int r = 0; r < 12; r++)
        tot += e[ord[r]];
    int kept = 0;
    for (int r = 0; r < 12 && (r == 0 || cum < 0.9 * tot); r++, kept++)
        cum += e[ord[r]];
    for (int r = 0; r < kept; r++)
        pr[ord[r]] = e[ord[r]] / cum;
    smp_batch sb = {.B = B, .V = V, .ld = V, .n_top = 0};
    sb.logits = malloc((size_t)B * V * 4);
    sb.rows = calloc((size_t)B, sizeof *sb.rows);
    sb.bias_ids = NULL;
    sb.bias_vals = NULL;
    sb.toks = NULL;
    for (int b = 0; b < B; b++) {
        memcpy(sb.logits + (size_t)b * V, x, sizeof x);
        sp.seed = 12345 + (uint64_t)b * 7919;
        smp_row_of(&sp, 0, b % 5, 0, 0, &sb.rows[b]);
    }
    int32_t *tok = malloc((size_t)B * 4), tid;
    float *lp = malloc((size_t)B * 4), tlp;
    smp_run(&sb, tok, lp, &tid, &tlp, NULL);
    long cnt[24] = {0};
    for (int b = 0; b < B; b++) {
        assert_true(tok[b] >= 0 && tok[b] < V);
        cnt[tok[b]]++;
    }
    double chi2 = 0;
    int dof = -1;
    for (int i = 0; i < V; i++) {
        if (pr[i] == 0) {
            if (cnt[i])
                fail_msg("chi2: token %d drawn %ld times outside the kept set", i, cnt[i]);
            continue;
        }
        const double ex = pr[i] * B;
        chi2 += (cnt[i] - ex) * (cnt[i] - ex) / ex;
        dof++;
    }
    /* 99.9 % quantile of chi-square(dof) for dof <= 11: below 32 */
    printf("test_sample_chi2: %d draws, %d kept tokens, chi2 %.2f (dof %d)\n", B, kept, chi2,
           dof);
    if (!(chi2 < 32.0))
        fail_msg("chi2 %.2f too large", chi2);
    free(sb.logits);
    free(sb.rows);
    free(tok);
    free(lp);
}

int main(void) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
        printf("test_cuda_kernels: no CUDA device: skipped\n");
        return 77;
    }
    const char *se = getenv("ASA_TEST_SEED");
    rs = se ? strtoull(se, NULL, 0) : (uint64_t)time(NULL) * 2654435761ull;
    if (!rs)
        rs = 1;
    uint64_t seed = rs;
    printf("test_cuda_kernels: seed %llu (ASA_TEST_SEED repeats it)\n", (unsigned long long)seed);
    /* launches with programmatic dependent launch as in the engine (kcuda.h;
     * ASA_CUDA_PDL=0: plain): back-to-back launches such as the unfused
     * norm -> GEMV of test_gemv_fused then check the kernels' waits */
    const char *pd = getenv("ASA_CUDA_PDL");
    kc_set_pdl(!(pd && strcmp(pd, "0") == 0));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rope_cache),   cmocka_unit_test(test_attn_local),
        cmocka_unit_test(test_attn_big),
        cmocka_unit_test(test_attn_cmp_select), cmocka_unit_test(test_attn_slc),
        cmocka_unit_test(test_compress),
        cmocka_unit_test(test_select_long),     cmocka_unit_test(test_select_shapes),     cmocka_unit_test(test_absorb_expand),
        cmocka_unit_test(test_absorb_expand_vec), cmocka_unit_test(test_absorb_expand_mma),
        cmocka_unit_test(test_attn_merge),
        cmocka_unit_test(test_rope_absorb),     cmocka_unit_test(test_rope_absorb_mma),
        cmocka_unit_test(test_gemv_fused),
        cmocka_unit_test(test_sample),          cmocka_unit_test(test_sample_chi2),
        cmocka_unit_test(test_sample_huge),
    };
    /* ASA_TEST_FILTER=name: only the matching tests (cmocka's pattern) */
    const char *flt = getenv("ASA_TEST_FILTER");
    if (flt)
        cmocka_set_test_filter(flt);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    printf("test_cuda_kernels: %s: %d kernel checks, %d elements compared, seed %llu\n",
           rc ? "FAIL" : "PASS", n_kernels, n_checked, (unsigned long long)seed);
    return rc;
}
