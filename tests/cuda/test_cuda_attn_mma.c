/*
 * The tensor-core attention (kernels/cuda/attn_mma.cu) against the double
 * host reference attn_latent_ref: all three modes on random paged caches
 * with several sequences per launch (contiguous and interleaved tokens),
 * chunks that start mid-sequence, windows shorter and longer than the
 * sequences, heads per group 1, 3, 16 and 32, odd dg / dR (scalar key
 * loads) and the asa-1.3b shapes (16-byte loads, the exact kernels),
 * selection sets shared, differing within a share group and from slots.
 * Fresh random inputs every run (seed printed; ASA_TEST_SEED repeats one),
 * outputs NaN-poisoned before each launch.
 *
 * Every launch with bf16 queries is repeated with ATTN_MMA_NOFAST (no
 * per-tile fast paths), which must give the same bits; every case also
 * runs with ATTN_MMA_TOKEN_ROWS (the decode schedule: on the asa-1.3b
 * shapes the kernel of independent warps, else one token per thread
 * block), and in 3 splits also with ATTN_MMA_ROWS_BLOCK (the block form).
 *
 * Tolerance: queries and probabilities are rounded to bf16 for the MMAs
 * (keys are bf16 already), so u is compared as |got - want| <= 1.5e-2 *
 * max|want| (per launch, max over all finite elements) + 1e-6; the lse of
 * ATTN_CMP within 2e-2 (absolute, scores ~ 1) with bf16 queries and 2e-4
 * with ATTN_MMA_QSPLIT (hi + lo queries: scores almost f32).
 * Exits 77 without a CUDA device.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "attn_mma_cuda.h"
#include "cuda_test_util.h"

static int n_cases, n_sel; /* launches that wrote block scores */
static long n_checked;
static double worst_sel; /* block scores: largest error / |want| */
static double worst_u, worst_u_qs, worst_lse; /* largest error / max|want| seen (bf16
                                                  queries, hi + lo queries), lse error */



/* |a - b| <= rtol * max|b| + atol (equal infinities pass), NaN nowhere. */
static void cmp_scaled(const char *what, const float *a, const float *b, size_t n, double rtol,
                       double atol, double *worst) {
    double mx = 0.0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(b[i]) && fabs(b[i]) > mx)
            mx = fabs(b[i]);
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i]))
            fail_msg("%s: element %zu: got %.8g, want %.8g", what, i, a[i], b[i]);
        if (a[i] == b[i])
            continue;
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= rtol * mx + atol))
            fail_msg("%s: element %zu: got %.8g, want %.8g (max|want| %.4g)", what, i, a[i],
                     b[i], mx);
        if (mx > 0 && e / mx > *worst)
            *worst = e / mx;
    }
    n_checked += (long)n;
}

typedef struct mcase {
    const char *name;
    int G, dg, dR, hpg, B, window, top_n, share;
    int nseq, p0[3], nt[3]; /* per sequence: first position of the chunk, tokens */
    bool interleave;        /* tokens of the sequences alternate in the launch */
    int page_pad;           /* extra elements per page (odd: scalar key loads) */
} mcase;

/* xonly: only the expanded form (ATTN_MMA_VFIRST, dg 128 + dR 32) */
static void run_case_x(const mcase *m, bool xonly) {
    const int G = m->G, dg = m->dg, dR = m->dR, B = m->B, H = G * m->hpg;
    const int S = G * dg + dR, top_n = m->top_n, Lg = 2, ti = 1;
    /* pages: every block up to each sequence's last position, scrambled */
    int nb[3], T = 0, nbt = 0;
    for (int s = 0; s < m->nseq; s++) {
        nb[s] = (m->p0[s] + m->nt[s] - 1) / B + 1;
        nbt += nb[s];
        T += m->nt[s];
    }
    const int npages = nbt + 2;
    const int64_t pe = (int64_t)2 * (B + 1) * S + m->page_pad, lo = (int64_t)(B + 1) * S;
    int32_t *tab = malloc((size_t)nbt * 4), toff[3];
    for (int i = 0; i < nbt; i++)
        tab[i] = i;
    for (int i = nbt - 1; i > 0; i--) {
        int j = randint(i + 1), x = tab[i];
        tab[i] = tab[j];
        tab[j] = x;
    }
    for (int s = 0, o = 0; s < m->nseq; o += nb[s], s++)
        toff[s] = o;
    size_t nkv = (size_t)npages * pe;
    uint16_t *kv = malloc(nkv * 2);
    for (size_t i = 0; i < nkv; i++)
        kv[i] = asa_f32_to_bf16(unif());
    /* tokens */
    int32_t *pos = malloc((size_t)T * 4), *seq = malloc((size_t)T * 4);
    {
        int done[3] = {0, 0, 0}, t = 0;
        while (t < T)
            for (int s = 0; s < m->nseq && t < T; s++) {
                int n = m->interleave ? 1 : m->nt[s];
                for (int k = 0; k < n && done[s] < m->nt[s]; k++) {
                    pos[t] = m->p0[s] + done[s]++;
                    seq[t++] = s;
                }
            }
    }
    /* queries [T][H][dg], rope queries and gates in one strided array:
     * odd strides and offsets (scalar loads), except on the asa-1.3b shapes,
     * where 8-byte alignment lets the decode kernel (attn_dec_kernel) take
     * the token-rows launches */
    const bool al = (dg == 192 || dg == 96) && dR == 32;
    const int qs = dR + (al ? 6 : 5), ld = H * qs + 2 * H + (al ? 8 : 7), qo = al ? 4 : 3;
    size_t nu = (size_t)T * H * dg;
    float *qt = malloc(nu * 4), *qa = malloc((size_t)T * ld * 4);
    for (size_t i = 0; i < nu; i++)
        qt[i] = unif();
    for (size_t i = 0; i < (size_t)T * ld; i++)
        qa[i] = unif() * 1.5f;
    /* selection sets: a share group's tokens read the set of its anchor
     * (the group's first token in this launch, or a slot for a chunk that
     * starts inside the group); one token in four has its own set */
    int32_t *src = malloc((size_t)T * 4);
    int32_t *tsel = malloc((size_t)T * G * top_n * 4), *tcnt = calloc((size_t)T * G, 4);
    const int nslots = m->nseq;
    int32_t *ssel = malloc((size_t)nslots * Lg * G * top_n * 4);
    int32_t *scnt = calloc((size_t)nslots * Lg * G, 4);
    for (int i = 0; i < T * G * top_n; i++)
        tsel[i] = -7;
    for (int i = 0; i < nslots * Lg * G * top_n; i++)
        ssel[i] = -7;
    for (int t = 0; t < T; t++) {
        const int grp = pos[t] / m->share;
        int a = -1;
        for (int u = 0; u < t; u++)
            if (seq[u] == seq[t] && pos[u] / m->share == grp && src[u] == u) {
                a = u;
                break;
            }
        if (a >= 0 && randint(4) != 0)
            src[t] = a;
        else if (a < 0 && pos[t] % m->share != 0 && randint(2) == 0)
            src[t] = -(seq[t] + 1); /* slot of the sequence */
        else
            src[t] = t;
        int32_t *dst;
        int32_t *dc;
        int cur = pos[t] / B;
        if (src[t] == t) {
            dst = tsel + (size_t)t * G * top_n;
            dc = tcnt + (size_t)t * G;
        } else if (src[t] < 0) {
            size_t k = ((size_t)seq[t] * Lg + ti) * G;
            dst = ssel + k * top_n;
            dc = scnt + k;
            if (dc[0] > 0)
                continue; /* this slot is filled already */
            /* a slot's set was chosen at an earlier anchor: up to its block */
            cur = (pos[t] / m->share * m->share) / B;
        } else
            continue;
        for (int g = 0; g < G; g++) {
            int cnt = 1 + randint(top_n < cur + 1 ? top_n : cur + 1), n = 0;
            int32_t *d = dst + (size_t)g * top_n;
            for (int b = 0; b < cur && n < cnt - 1; b++)
                if (randint(cur) < cnt)
                    d[n++] = b;
            d[n++] = cur;
            dc[g] = n;
        }
    }
    const float scale = 1.0f / sqrtf((float)(dg + dR)) * 1.5f;
    attn_params p = {.T = T, .H = H, .scale = scale, .window = m->window, .n_split = 1,
                     .heads_per_block = 1,
                     .c = {.kv = kv, .page_elems = pe, .layer_off = lo, .B = B, .G = G,
                           .dg = dg, .dR = dR, .tab = tab, .seq_toff = toff},
                     .tok_pos = pos, .tok_seq = seq, .qt = qt, .qr = qa + qo, .ld_qr = ld,
                     .qr_stride = qs,
                     .s = {.sel_src = src, .tsel = tsel, .tsel_cnt = tcnt, .slot_sel = ssel,
                           .slot_cnt = scnt, .Lg = Lg, .ti = ti, .top_n = top_n},
                     .gate = qa + H * qs + qo};
    float *u_loc = malloc(nu * 4), *u_cmp = malloc(nu * 4), *u_slc = malloc(nu * 4);
    float *lse = malloc((size_t)T * H * 4);
    if (!xonly) {
        p.mode = ATTN_LOCAL;
        p.u = u_loc;
        attn_latent_ref(&p);
        p.mode = ATTN_CMP;
        p.u = u_cmp;
        p.lse = lse;
        attn_latent_ref(&p);
        p.mode = ATTN_SLC;
        p.u = u_slc;
        p.u_cmp = u_cmp;
        p.lse = NULL;
        attn_latent_ref(&p);
    }

    attn_params d = p;
    d.c.kv = dup_dev(kv, nkv * 2);
    d.c.tab = dup_dev(tab, (size_t)nbt * 4);
    d.c.seq_toff = dup_dev(toff, sizeof toff);
    d.tok_pos = dup_dev(pos, (size_t)T * 4);
    d.tok_seq = dup_dev(seq, (size_t)T * 4);
    d.qt = dup_dev(qt, nu * 4);
    float *qa_d = dup_dev(qa, (size_t)T * ld * 4);
    d.qr = qa_d + qo;
    d.gate = qa_d + H * qs + qo;
    d.u_cmp = dup_dev(u_cmp, nu * 4);
    d.s.sel_src = dup_dev(src, (size_t)T * 4);
    d.s.tsel = dup_dev(tsel, (size_t)T * G * top_n * 4);
    d.s.tsel_cnt = dup_dev(tcnt, (size_t)T * G * 4);
    d.s.slot_sel = dup_dev(ssel, (size_t)nslots * Lg * G * top_n * 4);
    d.s.slot_cnt = dup_dev(scnt, (size_t)nslots * Lg * G * 4);
    float *ug = malloc(nu * 4), *lg = malloc((size_t)T * H * 4);
    char what[160];
    /* token rows with splits: each token's keys (at most its position + B
     * in every mode's coordinate) in 3 ranges, not tile-aligned */
    int kmax = 0;
    for (int t = 0; t < T; t++)
        kmax = pos[t] + 1 + B > kmax ? pos[t] + 1 + B : kmax;
    const size_t part_n = (size_t)T * H * 32 * (dg + 2);
    float *part_d = poison_dev(part_n * 4);
    /* the decode kernel (asa-1.3b shapes) merges in its clusters where the
     * build can: then part stays untouched */
    const bool in_launch = attn_mma_dec_merge() && (dg == 192 || dg == 96) && dR == 32;
    /* the compressed branch's block scores (attn_params.sel_scores): every
     * other token an anchor; the reference from select_blocks_ref on the
     * reference lse (its sets into scratch copies); the compressed keys
     * per token (visible blocks) bound the splits of ATTN_CMP */
    const int na = (T + 1) / 2;
    int cmax = 0;
    for (int t = 0; t < T; t++)
        cmax = (pos[t] + 1) / B > cmax ? (pos[t] + 1) / B : cmax;
    const int nbm = cmax + 1;
    const size_t nsel = (size_t)na * G * nbm;
    int32_t *anc = malloc((size_t)na * 4), *anc_of = malloc((size_t)T * 4);
    float *sel_want = malloc(nsel * 4), *sel_got = malloc(nsel * 4);
    for (int t = 0; t < T; t++) {
        anc_of[t] = t % 2 == 0 ? t / 2 : -1;
        if (t % 2 == 0)
            anc[t / 2] = t;
    }
    for (size_t i = 0; i < nsel; i++)
        sel_want[i] = NAN;
    if (!xonly) {
        int32_t *ts = malloc((size_t)T * G * top_n * 4), *tc = malloc((size_t)T * G * 4);
        select_params ps = {.n_anchors = na, .H = H, .anchors = anc, .scale = scale,
                            .init_blocks = 1, .local_blocks = 2, .nb_max = nbm, .c = p.c,
                            .tok_pos = pos, .tok_seq = seq, .qt = qt, .qr = p.qr,
                            .ld_qr = ld, .qr_stride = qs, .lse = lse, .s = p.s,
                            .scores = sel_want};
        ps.s.tsel = ts;
        ps.s.tsel_cnt = tc;
        select_blocks_ref(&ps);
        free(ts);
        free(tc);
    }
    int32_t *anc_of_d = dup_dev(anc_of, (size_t)T * 4);
    for (int mode = 0; mode < (xonly ? 0 : 3); mode++)
        for (int fi = 0; fi < (in_launch ? 11 : 5); fi++) {
            /* bf16 queries; hi + lo queries (the compressed-branch flag for
             * ATTN_CMP, the all-modes flag for the others); the decode
             * schedule with the engine's flags, unsplit and in 3 splits
             * merged by attn_merge_cuda; those 3 splits in the block form;
             * where the decode kernel can (asa-1.3b shapes, a build with
             * clusters) 4 / 8 / 16 / 32 splits merged inside the launch
             * (dec_merge: one block of 4 warps, one of 8, clusters of 4
             * and 8 four-warp blocks; 16-key multiples, the last splits of
             * short tokens empty), then 8 splits in a cluster of two
             * four-warp blocks and 16 in one of two eight-warp blocks
             * (dec_bw) */
            const int fl = fi == 0   ? 0
                           : fi == 1 ? (mode == ATTN_CMP ? ATTN_MMA_QSPLIT : ATTN_MMA_QSPLIT_ALL)
                                     : (mode == ATTN_CMP ? ATTN_MMA_QSPLIT : 0) |
                                           ATTN_MMA_TOKEN_ROWS |
                                           (fi == 4 ? ATTN_MMA_ROWS_BLOCK : 0);
            const int nsp = fi >= 9 ? 8 << (fi - 9) : fi >= 5 ? 4 << (fi - 5) : fi >= 3 ? 3 : 1;
            /* the mode's keys: compressed entries for ATTN_CMP */
            const int km = mode == ATTN_CMP ? cmax + 1 : kmax;
            d.n_split = nsp;
            d.split_keys = fi >= 5   ? ((km + nsp - 1) / nsp + 15) / 16 * 16
                           : fi >= 3 ? (km + 2) / 3
                                     : 0;
            d.part = fi >= 3 ? part_d : NULL;
            d.dec_prefetch = fi == 3; /* the keys' L2 prefetch before the wait */
            d.dec_plain = fi == 2;
            d.dec_merge = fi >= 5;
            d.dec_bw = fi == 9 ? 4 : fi == 10 ? 8 : 0;
            if (fi >= 5)
                assert_int_equal(cudaMemset(part_d, 0xff, part_n * 4), cudaSuccess);
            const bool qs = (fl & (ATTN_MMA_QSPLIT | ATTN_MMA_QSPLIT_ALL)) != 0;
            d.mode = (attn_mode)mode;
            d.u = poison_dev(nu * 4);
            d.lse = mode == ATTN_CMP ? poison_dev((size_t)T * H * 4) : NULL;
            /* block scores asked of every token-rows launch of ATTN_CMP;
             * written where the decode kernel has one split or merges a
             * token's splits in the launch (a block or a cluster), H / G
             * <= 16, hi + lo queries and at most ATTN_SEL_KEYS keys a warp */
            const bool ask_sel = mode == ATTN_CMP && fi >= 2;
            int sel_done = 0;
            float *sel_d = NULL;
            if (ask_sel) {
                sel_d = poison_dev(nsel * 4);
                d.sel_scores = sel_d;
                d.sel_anchor = anc_of_d;
                d.sel_nb_max = nbm;
                d.sel_init = 1;
                d.sel_local = 2;
                d.sel_keys = nsp > 1 ? d.split_keys : (cmax + 15) / 16 * 16;
                d.sel_done = &sel_done;
            }
            const bool dec_kernel = al && fi >= 2 && fi != 4;
            const bool sel_want_done =
                ask_sel && dec_kernel && dg == 96 && m->hpg <= 16 && qs && d.sel_keys >= 16 &&
                d.sel_keys <= ATTN_SEL_KEYS &&
                (nsp == 1 || (in_launch && fi >= 5));
            asa_err rc = attn_mma_cuda(&d, fl, 0);
            if (rc != ASA_OK)
                fail_msg("%s: attn_mma_cuda mode %d: %s", m->name, mode, asa_strerror(rc));
            get_dev(ug, d.u, nu * 4);
            const float *want = mode == ATTN_LOCAL ? u_loc : mode == ATTN_CMP ? u_cmp : u_slc;
            static const char *const form[11] = {"",
                                                "",
                                                " token rows",
                                                " token rows, 3 splits",
                                                " token rows, 3 splits, block form",
                                                " token rows, 4 splits merged in the launch",
                                                " token rows, 8 splits merged in the launch",
                                                " token rows, 16 splits merged in the launch",
                                                " token rows, 32 splits merged in the launch",
                                                " token rows, 8 splits merged in 4-warp blocks",
                                                " token rows, 16 splits merged in 8-warp blocks"};
            snprintf(what, sizeof what, "%s: mode %d%s%s u", m->name, mode, qs ? " qsplit" : "",
                     form[fi]);
            if (ask_sel) {
                if (sel_done != (int)sel_want_done)
                    fail_msg("%s: block scores %s", what, sel_done ? "written" : "not written");
                get_dev(sel_got, sel_d, nsel * 4);
                for (int a = 0; a < na; a++)
                    for (int g = 0; g < G; g++) {
                        const int nvis = (pos[anc[a]] + 1) / B;
                        for (int b = 0; b < nbm; b++) {
                            const size_t i = ((size_t)a * G + g) * nbm + b;
                            const float x = sel_got[i], w = sel_want[i];
                            if (!sel_done || b >= nvis) { /* untouched */
                                if (!isnan(x))
                                    fail_msg("%s: block score %d/%d/%d written: %g", what, a,
                                             g, b, x);
                                continue;
                            }
                            const double e = fabs((double)x - w);
                            if (isnan(x) || (w < 0 && x != w) || !(e <= 1e-3 * fabs(w) + 1e-6))
                                fail_msg("%s: block score anchor %d group %d block %d: got "
                                         "%.8g, want %.8g", what, a, g, b, x, w);
                            if (w > 0 && e / w > worst_sel)
                                worst_sel = e / w;
                        }
                    }
                n_sel += sel_done;
                n_checked += (long)nsel;
                cudaFree(sel_d);
                d.sel_scores = NULL;
                d.sel_done = NULL;
            }
            if (fi >= 5) {
                uint32_t *ph = malloc(part_n * 4);
                get_dev(ph, part_d, part_n * 4);
                for (size_t i = 0; i < part_n; i++)
                    if (ph[i] != 0xffffffffu)
                        fail_msg("%s: part written (element %zu)", what, i);
                free(ph);
            }
            cmp_scaled(what, ug, want, nu, 1.5e-2, 1e-6, qs ? &worst_u_qs : &worst_u);
            if (fi == 0) { /* without the per-tile fast paths: the same bits */
                float *un = poison_dev(nu * 4), *hn = malloc(nu * 4);
                float *ud = d.u, *ld_ = d.lse;
                d.u = un;
                if (mode == ATTN_CMP)
                    d.lse = poison_dev((size_t)T * H * 4);
                assert_int_equal(attn_mma_cuda(&d, fl | ATTN_MMA_NOFAST, 0), ASA_OK);
                get_dev(hn, un, nu * 4);
                if (memcmp(hn, ug, nu * 4) != 0)
                    fail_msg("%s: mode %d: results differ with ATTN_MMA_NOFAST", m->name, mode);
                free(hn);
                cudaFree(un);
                if (mode == ATTN_CMP) { /* the first launch's lse is checked below */
                    float *l1 = malloc((size_t)T * H * 4), *l2 = malloc((size_t)T * H * 4);
                    get_dev(l1, ld_, (size_t)T * H * 4);
                    get_dev(l2, d.lse, (size_t)T * H * 4);
                    if (memcmp(l1, l2, (size_t)T * H * 4) != 0)
                        fail_msg("%s: lse differs with ATTN_MMA_NOFAST", m->name);
                    free(l1);
                    free(l2);
                    cudaFree(d.lse);
                }
                d.u = ud;
                d.lse = ld_;
            }
            if (mode == ATTN_CMP) {
                get_dev(lg, d.lse, (size_t)T * H * 4);
                snprintf(what, sizeof what, "%s: lse%s%s", m->name, qs ? " qsplit" : "",
                         form[fi]);
                double w = 0.0;
                for (int i = 0; i < T * H; i++) {
                    if (isnan(lg[i]) || (isinf(lse[i]) != isinf(lg[i])) ||
                        (isinf(lse[i]) && lse[i] != lg[i]))
                        fail_msg("%s: element %d: got %g, want %g", what, i, lg[i], lse[i]);
                    if (isinf(lse[i]))
                        continue;
                    double e = fabs((double)lg[i] - lse[i]);
                    if (e > (qs ? 2e-4 : 2e-2))
                        fail_msg("%s: element %d: got %.8g, want %.8g", what, i, lg[i], lse[i]);
                    if (e > w)
                        w = e;
                }
                if (qs && w > worst_lse)
                    worst_lse = w;
                n_checked += T * H;
                cudaFree(d.lse);
            }
            cudaFree(d.u);
        }
    d.n_split = 1;
    d.split_keys = 0;
    d.part = NULL;
    d.dec_merge = 0;
    d.dec_bw = 0;
    d.sel_anchor = NULL;
    cudaFree(part_d);
    cudaFree(anc_of_d);
    free(anc);
    free(anc_of);
    free(sel_want);
    free(sel_got);
    /* the expanded form (ATTN_MMA_VFIRST): entries [v | k] per head, the
     * queries as a projection row [q_nope | q_rope] (qt not read), u rows
     * of dg / 2; nothing written past them */
    if (dg == 128 && dR == 32) {
        const int xs = dg / 2 + dR, xld = H * xs + 4;
        const size_t nx = (size_t)T * xld, nh = (size_t)T * H * (dg / 2);
        float *qx = malloc(nx * 4), *u_vf = malloc(nh * 4);
        for (size_t i = 0; i < nx; i++)
            qx[i] = unif() * 1.5f;
        float *qx_d = dup_dev(qx, nx * 4);
        attn_params pv = p, dv = d;
        pv.mode = dv.mode = ATTN_LOCAL;
        pv.qt = dv.qt = NULL;
        pv.qr = qx + dg / 2;
        dv.qr = qx_d + dg / 2;
        pv.ld_qr = dv.ld_qr = xld;
        pv.qr_stride = dv.qr_stride = xs;
        pv.u = u_vf;
        pv.lse = dv.lse = NULL;
        attn_vfirst_ref(&pv);
        for (int qsf = 0; qsf < 2; qsf++) {
            dv.u = poison_dev(nu * 4);
            assert_int_equal(
                attn_mma_cuda(&dv, ATTN_MMA_VFIRST | (qsf ? ATTN_MMA_QSPLIT_ALL : 0), 0), ASA_OK);
            get_dev(ug, dv.u, nu * 4);
            for (size_t i = nh; i < nu; i++)
                if (!isnan(ug[i]))
                    fail_msg("%s: vfirst: element %zu past the rows written", m->name, i);
            snprintf(what, sizeof what, "%s: expanded local%s", m->name, qsf ? " qsplit" : "");
            cmp_scaled(what, ug, u_vf, nh, 1.5e-2, 1e-6, qsf ? &worst_u_qs : &worst_u);
            /* u as bf16 (o_proj's input): the same rows rounded to nearest
             * even, bit for bit, nothing past them and no f32 u written */
            attn_params db = dv;
            db.u = poison_dev(nu * 4);
            db.u_bf16 = poison_dev(nu * 2);
            assert_int_equal(
                attn_mma_cuda(&db, ATTN_MMA_VFIRST | (qsf ? ATTN_MMA_QSPLIT_ALL : 0), 0), ASA_OK);
            uint16_t *ub = malloc(nu * 2);
            float *uf = malloc(nu * 4);
            get_dev(ub, db.u_bf16, nu * 2);
            get_dev(uf, db.u, nu * 4);
            for (size_t i = 0; i < nu; i++) {
                if (i < nh && ub[i] != asa_f32_to_bf16(ug[i]))
                    fail_msg("%s: bf16 u element %zu: %04x, the f32 run rounds to %04x", what, i,
                             ub[i], asa_f32_to_bf16(ug[i]));
                if (i >= nh && !isnan(asa_bf16_to_f32(ub[i])))
                    fail_msg("%s: bf16 u element %zu past the rows written", what, i);
                if (!isnan(uf[i]))
                    fail_msg("%s: f32 u element %zu written with u_bf16 set", what, i);
            }
            n_checked += nh;
            free(ub);
            free(uf);
            cudaFree(db.u);
            cudaFree(db.u_bf16);
            cudaFree(dv.u);
        }
        cudaFree(qx_d);
        free(qx);
        free(u_vf);
    }
    /* a launch covering tokens t_off .. T-1 only (the engine's token
     * chunks): those rows as before, the others untouched */
    if (T > 3 && !xonly) {
        const int to = 3;
        attn_params dc = d;
        dc.mode = ATTN_LOCAL;
        dc.t_off = to;
        dc.T = T - to;
        dc.u = poison_dev(nu * 4);
        dc.lse = NULL;
        assert_int_equal(attn_mma_cuda(&dc, 0, 0), ASA_OK);
        get_dev(ug, dc.u, nu * 4);
        const size_t o = (size_t)to * H * dg;
        snprintf(what, sizeof what, "%s: local, t_off %d", m->name, to);
        cmp_scaled(what, ug + o, u_loc + o, nu - o, 1.5e-2, 1e-6, &worst_u);
        for (size_t i = 0; i < o; i++)
            if (!isnan(ug[i]))
                fail_msg("%s: element %zu before t_off written", what, i);
        cudaFree(dc.u);
    }
    n_cases++;
    free_attn_inputs(&d, qa_d);
    free(tab);
    free(kv);
    free(pos);
    free(seq);
    free(qt);
    free(qa);
    free(src);
    free(tsel);
    free(tcnt);
    free(ssel);
    free(scnt);
    free(u_loc);
    free(u_cmp);
    free(u_slc);
    free(lse);
    free(ug);
    free(lg);
}

static void run_case(const mcase *m) { run_case_x(m, false); }

/* odd shapes: scalar key loads, generic kernels */
static void test_mma_odd(void **st) {
    (void)st;
    const mcase cs[] = {
        /* 3 groups of 3 heads, dg 11 + dR 6 (one k-step pair padded), two
         * sequences, one chunk mid-sequence, window 7 < sequence */
        {"g3 h3 dg11 dR6", 3, 11, 6, 3, 8, 7, 6, 2, 2, {148, 0}, {9, 23}, false, 3},
        /* one head per group (64 tokens per block), window longer than
         * the sequences, interleaved sequences, three of them */
        {"g2 h1 dg20 dR8 interleaved", 2, 20, 8, 1, 4, 1000, 4, 3, 3, {0, 37, 5}, {30, 21, 17},
         true, 1},
        /* fixture-like: g3_share1_tied (latent 16, rope 8, 2 heads) */
        {"g3 h2 dg16 dR8", 3, 16, 8, 2, 8, 1000, 4, 1, 2, {75, 0}, {12, 40}, false, 0},
        /* 3 heads per group, window 24, 40 tokens of one sequence: the
         * warps' key ranges start 5 and 10 keys into the block's first
         * 16-key chunk (the per-warp chunk skipping must keep it) */
        {"g1 h3 dg16 dR16 w24", 1, 16, 16, 3, 8, 24, 4, 2, 1, {100}, {40}, false, 0},
        /* 16 heads per group with dg 40 + dR 24 (E 64, the small generic form) */
        {"g2 h16 dg40 dR24", 2, 40, 24, 16, 16, 50, 5, 4, 2, {90, 3}, {7, 6}, false, 0},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        run_case(&cs[i]);
}

/* the asa-1.3b shapes: local G 1 x 32 heads (192 + 32), global G 2 x 16
 * heads (96 + 32), 16-byte key loads; also a large generic shape */
static void test_mma_13b(void **st) {
    (void)st;
    const mcase cs[] = {
        {"1.3b local", 1, 192, 32, 32, 16, 64, 16, 4, 2, {70, 3}, {5, 3}, false, 0},
        {"1.3b global", 2, 96, 32, 16, 16, 512, 6, 4, 2, {61, 130}, {6, 5}, false, 0},
        {"generic dg 136 dR 40 h5", 2, 136, 40, 5, 8, 20, 3, 2, 2, {30, 0}, {4, 9}, true, 0},
        /* the exact forms' step counts (E 128, dg <= 96; E 224, dg <=
         * 192) with other splits of E: the generic form */
        {"near global dg 88 dR 40", 2, 88, 40, 16, 16, 64, 6, 4, 1, {61}, {7}, false, 0},
        {"near local dg 184 dR 40", 1, 184, 40, 32, 16, 40, 16, 4, 1, {70}, {3}, false, 0},
        /* long enough for interior tiles (every key visible to every row
         * of a warp: unmasked path, all chunks live) next to edge tiles,
         * a block with tokens of both sequences; compressed entries 0-63
         * all visible (1100 / 16 = 68 entries) */
        {"1.3b local w200", 1, 192, 32, 32, 16, 200, 16, 4, 2, {300, 0}, {4, 3}, false, 0},
        {"1.3b global long", 2, 96, 32, 16, 16, 300, 8, 4, 1, {1100}, {5}, false, 0},
        /* decode-like: one token of each of three sequences (a block of
         * 64 rows would mix them; the token-rows schedule does not) */
        {"1.3b local decode", 1, 192, 32, 32, 16, 512, 16, 4, 3, {700, 37, 515}, {1, 1, 1},
         true, 0},
        {"1.3b global decode", 2, 96, 32, 16, 16, 512, 16, 4, 3, {1030, 300, 64}, {1, 1, 1},
         true, 0},
        /* decode at long contexts (2,063 and 563 compressed entries: the
         * engine runs such ranges on the decode kernel too); on a GPU only
         * (the CPU emulation of the MMAs would take minutes) */
        {"1.3b global decode 33k", 2, 96, 32, 16, 16, 512, 16, 4, 2, {33010, 9013}, {1, 1},
         true, 0},
    };
    const size_t n = sizeof cs / sizeof cs[0] - (getenv("ASA_EMU") ? 1 : 0);
    for (size_t i = 0; i < n; i++)
        run_case(&cs[i]);
}

/* the expanded local form (ATTN_MMA_VFIRST): 32 heads of [v 64 | k 64] +
 * rope 32, one head a group; a chunk after earlier pages with a window
 * edge, and a short second sequence sharing the blocks */
static void test_mma_expanded(void **st) {
    (void)st;
    mcase c = {"1.3b expanded local", 32, 128, 32, 1, 16, 100, 4, 4, 2, {150, 0},
               {70, 9}, false, 0};
    if (getenv("ASA_EMU")) { /* the CPU emulation of the kernel: fewer tokens */
        c.nt[0] = 20;
        c.nt[1] = 5;
    }
    run_case_x(&c, true);
}

/* shapes it does not take: nothing launched, ASA_EUNSUPPORTED */
static void test_mma_unsupported(void **st) {
    (void)st;
    attn_params p = {.mode = ATTN_LOCAL, .T = 4, .H = 4, .window = 8, .scale = 0.125f,
                     .c = {.B = 16, .G = 1, .dg = 200, .dR = 32}};
    assert_int_equal(attn_mma_cuda(&p, 0, 0), ASA_EUNSUPPORTED); /* dg > 192 */
    p.c.dg = 192;
    p.c.dR = 72;
    assert_int_equal(attn_mma_cuda(&p, 0, 0), ASA_EUNSUPPORTED); /* dg + dR > 256 */
    p.c.dR = 32;
    p.mode = ATTN_SLC;
    p.s.top_n = 64;
    p.H = 1;
    assert_int_equal(attn_mma_cuda(&p, 0, 0), ASA_EUNSUPPORTED); /* 64 tokens x 64 blocks */
    p.mode = ATTN_LOCAL;
    p.n_split = 2;
    p.split_keys = 64;
    assert_int_equal(attn_mma_cuda(&p, 0, 0), ASA_EUNSUPPORTED); /* splits: token rows only */
    p.n_split = 1;
    p.scale = 0.0f;
    assert_int_equal(attn_mma_cuda(&p, 0, 0), ASA_EUNSUPPORTED); /* maxima of unscaled scores */
}

int main(void) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
        printf("test_cuda_attn_mma: no CUDA device: skipped\n");
        return 77;
    }
    const char *se = getenv("ASA_TEST_SEED");
    rs = se ? strtoull(se, NULL, 0) : (uint64_t)time(NULL) * 2654435761ull;
    if (!rs)
        rs = 1;
    uint64_t seed = rs;
    printf("test_cuda_attn_mma: seed %llu (ASA_TEST_SEED repeats it)\n",
           (unsigned long long)seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mma_unsupported),
        cmocka_unit_test(test_mma_odd),
        cmocka_unit_test(test_mma_13b),
        cmocka_unit_test(test_mma_expanded),
    };
    /* ASA_TEST_FILTER=name: only the matching tests (cmocka's pattern) */
    const char *flt = getenv("ASA_TEST_FILTER");
    if (flt)
        cmocka_set_test_filter(flt);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    printf("test_cuda_attn_mma: %s: %d cases, %ld elements compared, worst |err|/max|u| %.3g "
           "(hi + lo queries %.3g), worst lse err (hi + lo) %.3g, %d launches with block "
           "scores (worst |err|/|want| %.3g), seed %llu\n",
           rc ? "FAIL" : "PASS", n_cases, n_checked, worst_u, worst_u_qs, worst_lse, n_sel,
           worst_sel, (unsigned long long)seed);
    return rc;
}
