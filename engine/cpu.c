/*
 * engine/cpu.c - the CPU backend: the exact engine (ASA-SPEC 6).
 *
 * Numerics: f32 activations and an f32 KV cache; bf16 weights are widened
 * exactly to f32.  The projection matrices are copied once at create into
 * concatenated layouts (q|kv_a|g, gate|up): kept as bf16 bits when the
 * checkpoint is bf16 and widened inside the matmul as they are loaded (the
 * same f32 values, half the bytes to stream per decode step), otherwise
 * widened to f32 copies.  The small per-head W_UK^T / W_UV blocks and the
 * norms are f32 copies.  Every sum is f32 in a fixed order; softmax
 * subtracts the maximum; RoPE angles are computed from the integer position
 * in double and then rounded (ASA-SPEC 3).
 *
 * Batch invariance (bitwise): every value a token produces depends only on
 * its own sequence.  Projections use kernels/matmul.h, whose per-element
 * accumulation order does not depend on the number of rows or threads;
 * attention is computed per (token, latent group) with sequential loops; parallel work is divided among threads only by which items a thread
 * computes, never by splitting one item's sums.  Hence logits do not depend
 * on the batch, on chunking, or on the thread count.
 *
 * KV page layout (f32), for a page holding block b of one sequence:
 *   global page: for each global layer l (type index):
 *       [B][S_g] token entries, entry = [c^(0) .. c^(G-1) (d_g each), kR (d_R)]
 *       [S_g]    the compressed entry (mean of the B cached entries, i.e. of
 *                the normalised latents and of the rotated rope keys),
 *                written when the block's last token is written
 *     S_g = G*d_g + d_R, so a global page is L_g * (B+1) * S_g floats.
 *   local page: for each local layer: [B][S_l] token entries.
 *
 * Step schedule, per layer (all tokens of all sequences of the step at once):
 *   1. RMSNorm; one matmul for q_proj | kv_a_proj | g_proj (concatenated).
 *   2. per token: RoPE on q's rope parts; latent RMSNorm per group and RoPE
 *      on the rope key, written into the token's cache entry.
 *   3. q~_i = W_UK,i^T qC_i per head (absorbed form).
 *   4. global layers: compressed entries of blocks that completed.
 *   5. attention, producing u_i = sum_j p_j c_j per head (local: window;
 *      global: compression branch + block choice at anchors, then the
 *      stored/just-chosen sets, then the selection branch; the gates are
 *      applied to u before W_UV, which is linear).
 *   6. o_i = W_UV,i u_i; o_proj; residual; MLP.
 * Logits are computed only for rows somebody asked for, 64 rows at a time.
 */
#include "backend.h"
#include "matmul.h"
#include "sample.h"
#include "threadpool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CPU_LOGIT_ROWS 64

/* A projection matrix [rows, cols], row-major: bf16 bits when every source
 * tensor was bf16 (widened exactly inside the matmul, half the bytes to
 * stream), else f32 (exact widening of mixed inputs).  One of f/h is set. */
typedef struct cpu_mat {
    float *f;
    uint16_t *h;
} cpu_mat;

typedef struct cpu_layer {
    eng_layer_type type;
    int ti;          /* index among layers of its type */
    int G, dg, S;    /* latent groups, dim per group, cache entry floats */
    int n_in;        /* rows of w_in */
    float *attn_norm; /* [d] */
    float *mlp_norm;  /* [d] */
    float *kv_a_norm; /* [G*dg] */
    cpu_mat w_in;     /* [n_in, d]: q_proj rows, kv_a_proj rows, g_proj rows (global) */
    float *wuk_t;     /* [H][dg][dh]: W_UK,i transposed */
    float *wuv;       /* [H][dv][dg]: W_UV,i */
    cpu_mat o_proj;   /* [d, H*dv] */
    cpu_mat w_gu;     /* [2F, d]: gate_proj rows, up_proj rows */
    cpu_mat down;     /* [d, F] */
} cpu_layer;

typedef struct cpu_be {
    eng *e;
    const eng_model *m;
    union { /* model dimensions (backend.h) */
        struct {
            ENG_DIMS_FIELDS
        };
        eng_dims dims;
    };
    double *inv_freq;             /* [half] theta^(-2k/dR) */
    cpu_layer *layers;
    cpu_mat embed, lm_head; /* [V, d]; lm_head may alias embed (tied) */
    float *norm;
    float *gmem, *lmem;           /* page memory */
    size_t gpage, lpage;          /* floats per page */
    int max_seqs;
    /* selection-share state per slot */
    int32_t *sel;                 /* [max_seqs][Lg][Gg][top_n] ascending ids */
    int *sel_cnt;                 /* [max_seqs][Lg][Gg] */
    int *sel_anchor;              /* [max_seqs], -1 when none */
    tp_pool *pool;
    /* step scratch, sized at create from max_batch_tokens (T) */
    int T;
    float *x;        /* [T, d] residual stream */
    float *hn;       /* [T, max(d, F)] normed input / projection output */
    float *qa;       /* [T, n_in max] */
    float *qt;       /* [T, H*dg_max] absorbed queries */
    float *u;        /* [T, H*dg_max] attention latents */
    float *o;        /* [T, H*dv] */
    float *gu;       /* [T, 2F] */
    float *cosv, *sinv; /* [T, half] */
    float *logits;   /* [CPU_LOGIT_ROWS, V] */
    float *samp;     /* [2V] sampler scratch */
    int *tok_seq;    /* [T] batch index of the token's sequence */
    int *tok_pos;    /* [T] absolute position */
    int *seq_tok0;   /* [max_seqs] first token index of batch entry i */
    const int32_t **gtab, **ltab; /* [max_seqs] block tables of batch entry i */
    int32_t *tsel;   /* [T][Gg][top_n] block sets used by each token */
    int *tsel_cnt;   /* [T][Gg] */
    int *rows;       /* [T] token rows needing logits */
    float *thr;      /* per-thread attention scratch, thr_stride floats each: */
    size_t thr_stride;
    size_t thr_tmp, thr_S, thr_us; /* offsets: scores [hpg][sc_ld] at 0,
                                      rope scores [hpg][B], selection
                                      scores [nb_max], one latent [dg] */
    int sc_ld;       /* score row stride: max keys one head attends to */
    /* current step */
    const eng_batch *b;
    int ntok;
    const cpu_layer *cl; /* layer being run by a parallel phase */
    int nitems, per_task; /* items of the current phase, items per task */
    bool expand;         /* cpu__heads: W_UV (true) or W_UK^T (false) */
} cpu_be;

/* ---- small helpers ------------------------------------------------------ */

static asa_err cpu__widen(const eng_tensor *t, float *dst, size_t n) {
    if (!t->data)
        return ASA_EINVAL;
    size_t have = (size_t)t->shape[0] * (size_t)(t->ndim == 2 ? t->shape[1] : 1);
    if (have != n)
        return ASA_EINVAL;
    for (size_t i = 0; i < n; i++)
        dst[i] = eng_tensor_get(t, (int64_t)i);
    return ASA_OK;
}

static void cpu__rmsnorm(const float *x, const float *wt, float *y, int n, float eps) {
    float ss = matmul_dot(x, x, n);
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++)
        y[i] = (x[i] * r) * wt[i];
}

/* rotate-half RoPE in place on v[2*half] */
static void cpu__rope(float *v, const float *c, const float *s, int half) {
    for (int k = 0; k < half; k++) {
        float a = v[k], b = v[k + half];
        v[k] = a * c[k] - b * s[k];
        v[k + half] = a * s[k] + b * c[k];
    }
}

static float cpu__sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

/* softmax over sc[n] in place (max subtracted, sequential sums) */
static void cpu__softmax(float *sc, int n) {
    float mx = sc[0];
    for (int j = 1; j < n; j++)
        if (sc[j] > mx)
            mx = sc[j];
    float sum = 0;
    for (int j = 0; j < n; j++) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < n; j++)
        sc[j] *= inv;
}

static inline float *cpu__gentry(const cpu_be *c, int32_t page, int ti, int off) {
    return c->gmem + (size_t)page * c->gpage + (size_t)ti * (c->B + 1) * c->Sg +
           (size_t)off * c->Sg;
}
static inline float *cpu__lentry(const cpu_be *c, int32_t page, int ti, int off) {
    return c->lmem + (size_t)page * c->lpage + (size_t)ti * c->B * c->Sl +
           (size_t)off * c->Sl;
}

/* ---- create / destroy --------------------------------------------------- */

static void cpu_page_bytes(const eng_model *m, size_t out[KV_NCLASS]) {
    const eng_config *k = &m->cfg;
    size_t Sg = (size_t)k->global.attn.latent_heads * k->global.attn.latent_dim + k->rope_dim;
    size_t Sl = (size_t)k->local.attn.latent_heads * k->local.attn.latent_dim + k->rope_dim;
    size_t B = (size_t)k->global.block_size;
    out[KV_GLOBAL] = (size_t)k->n_global_layers * (B + 1) * Sg * sizeof(float);
    out[KV_LOCAL] = (size_t)k->n_local_layers * B * Sl * sizeof(float);
}

static void cpu__mat_free(cpu_mat *m) {
    free(m->f);
    free(m->h);
    m->f = NULL;
    m->h = NULL;
}

/* Concatenates the rows of parts[0..n) (each [rows_i, cols]) into one
 * matrix, bf16 if all parts are bf16.  ASA_EINVAL on a shape mismatch. */
static asa_err cpu__mat_init(cpu_mat *m, int cols, const eng_tensor *const *parts,
                             const int *rows, int n) {
    size_t total = 0;
    bool all_bf16 = true;
    for (int i = 0; i < n; i++) {
        const eng_tensor *t = parts[i];
        if (!t->data || t->ndim != 2 || t->shape[0] != rows[i] || t->shape[1] != cols)
            return ASA_EINVAL;
        total += (size_t)rows[i] * cols;
        all_bf16 = all_bf16 && t->dtype == ENG_BF16;
    }
    if (all_bf16) {
        m->h = malloc((total ? total : 1) * sizeof(uint16_t));
        if (!m->h)
            return ASA_ENOMEM;
    } else {
        m->f = malloc((total ? total : 1) * sizeof(float));
        if (!m->f)
            return ASA_ENOMEM;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t cnt = (size_t)rows[i] * cols;
        if (all_bf16)
            memcpy(m->h + off, parts[i]->data, cnt * sizeof(uint16_t));
        else
            for (size_t k = 0; k < cnt; k++)
                m->f[off + k] = eng_tensor_get(parts[i], (int64_t)k);
        off += cnt;
    }
    return ASA_OK;
}

/* y[M, N] = x[M, K] W^T for a cpu_mat W [N, K]. */
static void cpu__mm(tp_pool *pool, const float *x, int ldx, const cpu_mat *w, float *y,
                    int ldy, int M, int N, int K) {
    if (w->h)
        matmul_bf16w(pool, x, ldx, w->h, K, y, ldy, M, N, K);
    else
        matmul_f32(pool, x, ldx, w->f, K, y, ldy, M, N, K);
}

static void cpu_destroy(void *p) {
    cpu_be *c = p;
    if (!c)
        return;
    tp_destroy(c->pool);
    if (c->layers)
        for (int l = 0; l < c->L; l++) {
            cpu_layer *y = &c->layers[l];
            free(y->attn_norm);
            free(y->mlp_norm);
            free(y->kv_a_norm);
            cpu__mat_free(&y->w_in);
            free(y->wuk_t);
            free(y->wuv);
            cpu__mat_free(&y->o_proj);
            cpu__mat_free(&y->w_gu);
            cpu__mat_free(&y->down);
        }
    free(c->layers);
    if (c->lm_head.f != c->embed.f || c->lm_head.h != c->embed.h)
        cpu__mat_free(&c->lm_head);
    cpu__mat_free(&c->embed);
    free(c->norm);
    free(c->inv_freq);
    free(c->gmem);
    free(c->lmem);
    free(c->sel);
    free(c->sel_cnt);
    free(c->sel_anchor);
    free(c->x);
    free(c->hn);
    free(c->qa);
    free(c->qt);
    free(c->u);
    free(c->o);
    free(c->gu);
    free(c->cosv);
    free(c->sinv);
    free(c->logits);
    free(c->samp);
    free(c->tok_seq);
    free(c->tok_pos);
    free(c->seq_tok0);
    free(c->gtab);
    free(c->ltab);
    free(c->tsel);
    free(c->tsel_cnt);
    free(c->rows);
    free(c->thr);
    free(c);
}

static float *cpu__alloc(size_t n, bool *ok) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p)
        *ok = false;
    return p;
}

/* Widens one layer's weights into the concatenated f32 layout above. */
static asa_err cpu__load_layer(cpu_be *c, const eng_layer *ly, cpu_layer *y) {
    const int d = c->d, H = c->H, dh = c->dh, dv = c->dv, F = c->F;
    y->type = ly->type;
    y->ti = ly->type_index;
    y->G = ly->G;
    y->dg = ly->dg;
    y->S = y->G * y->dg + c->dR;
    int ng = ly->type == ENG_LAYER_GLOBAL ? 2 * H : 0;
    y->n_in = c->nq + y->S + ng;
    bool ok = true;
    y->attn_norm = cpu__alloc((size_t)d, &ok);
    y->mlp_norm = cpu__alloc((size_t)d, &ok);
    y->kv_a_norm = cpu__alloc((size_t)y->G * y->dg, &ok);
    y->wuk_t = cpu__alloc((size_t)H * y->dg * dh, &ok);
    y->wuv = cpu__alloc((size_t)H * dv * y->dg, &ok);
    float *kvb = cpu__alloc((size_t)H * (dh + dv) * y->dg, &ok);
    if (!ok) {
        free(kvb);
        return ASA_ENOMEM;
    }
    asa_err err = ASA_OK;
    const eng_tensor *in_parts[3] = {&ly->q_proj, &ly->kv_a_proj, &ly->g_proj};
    const int in_rows[3] = {c->nq, y->S, ng};
    const eng_tensor *gu_parts[2] = {&ly->gate_proj, &ly->up_proj};
    const int gu_rows[2] = {F, F};
    const eng_tensor *o_part = &ly->o_proj, *d_part = &ly->down_proj;
    const int o_rows = d, d_rows = d;
    if ((err = cpu__mat_init(&y->w_in, d, in_parts, in_rows, ng ? 3 : 2)) ||
        (err = cpu__mat_init(&y->o_proj, H * dv, &o_part, &o_rows, 1)) ||
        (err = cpu__mat_init(&y->w_gu, d, gu_parts, gu_rows, 2)) ||
        (err = cpu__mat_init(&y->down, F, &d_part, &d_rows, 1))) {
        free(kvb);
        return err;
    }
    if (cpu__widen(&ly->attn_norm, y->attn_norm, (size_t)d) ||
        cpu__widen(&ly->mlp_norm, y->mlp_norm, (size_t)d) ||
        cpu__widen(&ly->kv_a_norm, y->kv_a_norm, (size_t)y->G * y->dg) ||
        cpu__widen(&ly->kv_b_proj, kvb, (size_t)H * (dh + dv) * y->dg)) {
        err = ASA_EINVAL;
    } else {
        for (int i = 0; i < H; i++) {
            const float *uk = kvb + (size_t)i * (dh + dv) * y->dg; /* [dh][dg] */
            const float *uv = uk + (size_t)dh * y->dg;             /* [dv][dg] */
            float *t = y->wuk_t + (size_t)i * y->dg * dh;
            for (int r = 0; r < dh; r++)
                for (int q = 0; q < y->dg; q++)
                    t[(size_t)q * dh + r] = uk[(size_t)r * y->dg + q];
            memcpy(y->wuv + (size_t)i * dv * y->dg, uv, (size_t)dv * y->dg * sizeof(float));
        }
    }
    free(kvb);
    return err;
}

static asa_err cpu_create(eng *e, void **out, asa_errbuf *eb) {
    const eng_model *m = e->m;
    const eng_config *k = &m->cfg;
    cpu_be *c = calloc(1, sizeof *c);
    if (!c)
        return asa_errf(eb, ASA_ENOMEM, "cpu backend: out of memory");
    asa_err err = ASA_ENOMEM;
    c->e = e;
    c->m = m;
    eng_dims_init(k, e->opt.max_seq_len, &c->dims);
    c->max_seqs = e->opt.max_seqs;
    c->T = e->opt.max_batch_tokens;
    c->gpage = e->page_bytes[KV_GLOBAL] / sizeof(float);
    c->lpage = e->page_bytes[KV_LOCAL] / sizeof(float);

    bool ok = true;
    const int T = c->T, d = c->d, H = c->H, V = c->V, F = c->F;
    const int Lg = k->n_global_layers > 0 ? k->n_global_layers : 1;
    c->inv_freq = malloc((size_t)(c->half > 0 ? c->half : 1) * sizeof(double));
    if (!c->inv_freq)
        goto fail;
    for (int i = 0; i < c->half; i++)
        c->inv_freq[i] = pow(k->rope_theta, -2.0 * i / (double)c->dR);

    /* weights */
    c->layers = calloc((size_t)c->L, sizeof *c->layers);
    c->norm = cpu__alloc((size_t)d, &ok);
    if (!c->layers || !ok)
        goto fail;
    const eng_tensor *emb = &m->embed, *head = &m->lm_head;
    if ((err = cpu__mat_init(&c->embed, d, &emb, &V, 1)) ||
        cpu__widen(&m->norm, c->norm, (size_t)d)) {
        err = asa_errf(eb, err ? err : ASA_EINVAL, "cpu backend: embedding/norm: %s",
                       err == ASA_ENOMEM ? "out of memory" : "shape mismatch");
        goto fail;
    }
    if (k->tie_word_embeddings || m->lm_head.data == m->embed.data) {
        c->lm_head = c->embed;
    } else if ((err = cpu__mat_init(&c->lm_head, d, &head, &V, 1))) {
        asa_errf(eb, err, "cpu backend: lm_head: %s",
                 err == ASA_ENOMEM ? "out of memory" : "shape mismatch");
        goto fail;
    }
    for (int l = 0; l < c->L; l++) {
        err = cpu__load_layer(c, &m->layers[l], &c->layers[l]);
        if (err != ASA_OK) {
            asa_errf(eb, err, "cpu backend: layer %d: %s", l,
                     err == ASA_ENOMEM ? "out of memory" : "weight shape mismatch");
            goto fail;
        }
    }
    err = ASA_ENOMEM;

    /* page memory */
    c->gmem = cpu__alloc(c->gpage * (size_t)e->num_pages[KV_GLOBAL], &ok);
    c->lmem = cpu__alloc(c->lpage * (size_t)e->num_pages[KV_LOCAL], &ok);

    /* slots */
    size_t nsel = (size_t)c->max_seqs * Lg * c->Gg;
    c->sel = malloc(nsel * c->top_n * sizeof *c->sel);
    c->sel_cnt = calloc(nsel, sizeof *c->sel_cnt);
    c->sel_anchor = malloc((size_t)c->max_seqs * sizeof *c->sel_anchor);
    if (!c->sel || !c->sel_cnt || !c->sel_anchor || !ok)
        goto fail;
    for (int s = 0; s < c->max_seqs; s++)
        c->sel_anchor[s] = -1;

    /* scratch */
    int n_in_max = c->nq + (c->Sg > c->Sl ? c->Sg : c->Sl) + 2 * H;
    int dF = d > F ? d : F;
    c->x = cpu__alloc((size_t)T * d, &ok);
    c->hn = cpu__alloc((size_t)T * dF, &ok);
    c->qa = cpu__alloc((size_t)T * n_in_max, &ok);
    c->qt = cpu__alloc((size_t)T * H * c->dg_max, &ok);
    c->u = cpu__alloc((size_t)T * H * c->dg_max, &ok);
    c->o = cpu__alloc((size_t)T * H * c->dv, &ok);
    c->gu = cpu__alloc((size_t)T * 2 * F, &ok);
    c->cosv = cpu__alloc((size_t)T * (c->half + 1), &ok);
    c->sinv = cpu__alloc((size_t)T * (c->half + 1), &ok);
    int lr = T < CPU_LOGIT_ROWS ? T : CPU_LOGIT_ROWS;
    c->logits = cpu__alloc((size_t)lr * V, &ok);
    c->samp = cpu__alloc((size_t)2 * V, &ok);
    if (!ok)
        goto fail;
    c->tok_seq = malloc((size_t)T * sizeof(int));
    c->tok_pos = malloc((size_t)T * sizeof(int));
    c->rows = malloc((size_t)T * sizeof(int));
    c->seq_tok0 = malloc((size_t)c->max_seqs * sizeof(int));
    c->gtab = calloc((size_t)c->max_seqs, sizeof *c->gtab);
    c->ltab = calloc((size_t)c->max_seqs, sizeof *c->ltab);
    c->tsel = malloc((size_t)T * c->Gg * c->top_n * sizeof *c->tsel);
    c->tsel_cnt = malloc((size_t)T * c->Gg * sizeof *c->tsel_cnt);
    if (!c->tok_seq || !c->tok_pos || !c->rows || !c->seq_tok0 || !c->gtab ||
        !c->ltab || !c->tsel || !c->tsel_cnt)
        goto fail;
    if ((err = tp_create(e->opt.threads, &c->pool)) != ASA_OK) {
        asa_errf(eb, err, "cpu backend: cannot start worker threads");
        goto fail;
    }
    /* per thread: scores of a group's heads, selection scores, a latent */
    int sc = c->nb_max;
    if (c->w > sc)
        sc = c->w;
    if (c->top_n * c->B > sc)
        sc = c->top_n * c->B;
    int hpg = H / (c->Gg < c->Gl ? c->Gg : c->Gl);
    c->sc_ld = sc;
    c->thr_tmp = (size_t)hpg * sc;
    c->thr_S = c->thr_tmp + (size_t)hpg * c->B;
    c->thr_us = c->thr_S + (size_t)c->nb_max;
    c->thr_stride = c->thr_us + (size_t)c->dg_max + 16;
    c->thr = cpu__alloc(c->thr_stride * (size_t)tp_size(c->pool), &ok);
    if (!ok)
        goto fail;
    *out = c;
    return ASA_OK;
fail:
    if (err == ASA_ENOMEM)
        asa_errf(eb, err, "cpu backend: out of memory");
    cpu_destroy(c);
    return err;
}

/* ---- selection-share state ------------------------------------------------ */

static size_t cpu__sel_index(const cpu_be *c, int slot, int ti, int g) {
    int Lg = c->m->cfg.n_global_layers > 0 ? c->m->cfg.n_global_layers : 1;
    return ((size_t)slot * Lg + ti) * c->Gg + g;
}

static void cpu_seq_reset(void *p, int slot) {
    cpu_be *c = p;
    int Lg = c->m->cfg.n_global_layers > 0 ? c->m->cfg.n_global_layers : 1;
    memset(c->sel_cnt + cpu__sel_index(c, slot, 0, 0), 0,
           (size_t)Lg * c->Gg * sizeof *c->sel_cnt);
    c->sel_anchor[slot] = -1;
}

static void cpu_seq_copy(void *p, int src, int dst) {
    cpu_be *c = p;
    int Lg = c->m->cfg.n_global_layers > 0 ? c->m->cfg.n_global_layers : 1;
    size_t n = (size_t)Lg * c->Gg;
    memcpy(c->sel_cnt + cpu__sel_index(c, dst, 0, 0),
           c->sel_cnt + cpu__sel_index(c, src, 0, 0), n * sizeof *c->sel_cnt);
    memcpy(c->sel + cpu__sel_index(c, dst, 0, 0) * c->top_n,
           c->sel + cpu__sel_index(c, src, 0, 0) * c->top_n,
           n * c->top_n * sizeof *c->sel);
    c->sel_anchor[dst] = c->sel_anchor[src];
}

static int cpu_seq_anchor(void *p, int slot) { return ((cpu_be *)p)->sel_anchor[slot]; }

static int cpu_seq_sets(void *p, int slot, int ti, int g, int32_t *out) {
    cpu_be *c = p;
    size_t k = cpu__sel_index(c, slot, ti, g);
    memcpy(out, c->sel + k * c->top_n, (size_t)c->sel_cnt[k] * sizeof(int32_t));
    return c->sel_cnt[k];
}

/* ---- per-token preparation (RoPE, cache writes) --------------------------- */

/* The item range [*i0, *i1) of a task. */
static void cpu__range(const cpu_be *c, int task, int *i0, int *i1) {
    *i0 = task * c->per_task;
    *i1 = *i0 + c->per_task < c->nitems ? *i0 + c->per_task : c->nitems;
}

/* Runs fn over nitems items split into contiguous ranges (tasks); a task's
 * results never depend on the split, only the speed does. */
static void cpu__par(cpu_be *c, tp_fn fn, int nitems, bool parallel) {
    int nt = parallel ? tp_size(c->pool) : 1;
    int ntasks = nitems < 4 * nt ? nitems : 4 * nt;
    if (ntasks < 1)
        return;
    c->nitems = nitems;
    c->per_task = (nitems + ntasks - 1) / ntasks;
    ntasks = (nitems + c->per_task - 1) / c->per_task;
    tp_run(parallel ? c->pool : NULL, fn, c, ntasks);
}

static void cpu__prep_tokens(void *ctx, int task, int tid) {
    cpu_be *c = ctx;
    const cpu_layer *y = c->cl;
    const int G = y->G, dg = y->dg, half = c->half;
    int t0, t1;
    cpu__range(c, task, &t0, &t1);
    for (int t = t0; t < t1; t++) {
        float *q = c->qa + (size_t)t * y->n_in;
        const float *cs = c->cosv + (size_t)t * half, *sn = c->sinv + (size_t)t * half;
        for (int i = 0; i < c->H; i++)
            cpu__rope(q + (size_t)i * (c->dh + c->dR) + c->dh, cs, sn, half);
        const float *a = q + c->nq;
        int pos = c->tok_pos[t], si = c->tok_seq[t];
        float *ent;
        if (y->type == ENG_LAYER_GLOBAL)
            ent = cpu__gentry(c, c->gtab[si][pos / c->B], y->ti, pos % c->B);
        else
            ent = cpu__lentry(c, c->ltab[si][pos / c->B], y->ti, pos % c->B);
        for (int g = 0; g < G; g++)
            cpu__rmsnorm(a + (size_t)g * dg, y->kv_a_norm + (size_t)g * dg,
                         ent + (size_t)g * dg, dg, c->eps);
        memcpy(ent + (size_t)G * dg, a + (size_t)G * dg, (size_t)c->dR * sizeof(float));
        cpu__rope(ent + (size_t)G * dg, cs, sn, half);
    }
}

/* q~ = W_UK^T qC (absorb) or o = W_UV u (expand), per head */
static void cpu__heads(void *ctx, int task, int tid) {
    cpu_be *c = ctx;
    const cpu_layer *y = c->cl;
    const int H = c->H, dg = y->dg, dh = c->dh, dv = c->dv;
    int i0, i1;
    cpu__range(c, task, &i0, &i1);
    for (int i = i0; i < i1; i++) {
        if (!c->expand)
            matmul_f32_cols(c->qa + (size_t)i * (dh + c->dR), y->n_in,
                            y->wuk_t + (size_t)i * dg * dh, dh, c->qt + (size_t)i * dg,
                            H * dg, c->ntok, dh, 0, dg);
        else
            matmul_f32_cols(c->u + (size_t)i * dg, H * dg, y->wuv + (size_t)i * dv * dg,
                            dg, c->o + (size_t)i * dv, H * dv, c->ntok, dg, 0, dv);
    }
}

/* ---- attention ----------------------------------------------------------- */

/* u += p * v over n floats */
static inline void cpu__axpy(float *u, float p, const float *v, int n) {
    for (int k = 0; k < n; k++)
        u[k] += p * v[k];
}

/* Scores of the hpg heads of latent group g of token t against a run of n
 * consecutive cache entries (stride S) starting at ent:
 * sc[h * ld + off + jj] = (q~_h . c_jj + qR_h . kR_jj) * scale.  Two small
 * matmuls (latents, rope keys) amortise the call over the group's heads;
 * every element has the matmul's fixed order, so it does not matter how
 * runs are cut. */
static void cpu__scores(const cpu_be *c, const cpu_layer *y, int t, int g, const float *ent,
                        int n, float *sc, int ld, int off, float *tmp) {
    const int H = c->H, hpg = H / y->G, dg = y->dg, B = c->B;
    const float *qt = c->qt + ((size_t)t * H + (size_t)g * hpg) * dg;
    const float *qr =
        c->qa + (size_t)t * y->n_in + (size_t)g * hpg * (c->dh + c->dR) + c->dh;
    matmul_f32_cols(qt, dg, ent + (size_t)g * dg, y->S, sc + off, ld, hpg, dg, 0, n);
    matmul_f32_cols(qr, c->dh + c->dR, ent + (size_t)y->G * dg, y->S, tmp, B, hpg, c->dR, 0, n);
    for (int h = 0; h < hpg; h++)
        for (int j = 0; j < n; j++)
            sc[(size_t)h * ld + off + j] =
                (sc[(size_t)h * ld + off + j] + tmp[(size_t)h * B + j]) * c->scale;
}

/* Local layer: one (token, latent group) item; window [pos-w+1, pos]. */
static void cpu__attn_local(void *ctx, int task, int tid) {
    cpu_be *c = ctx;
    const cpu_layer *y = c->cl;
    const int H = c->H, G = y->G, dg = y->dg, hpg = H / G, B = c->B, ld = c->sc_ld;
    float *sc = c->thr + (size_t)tid * c->thr_stride, *tmp = sc + c->thr_tmp;
    int it0, it1;
    cpu__range(c, task, &it0, &it1);
    for (int it = it0; it < it1; it++) {
        int t = it / G, g = it % G;
        int pos = c->tok_pos[t], si = c->tok_seq[t];
        const int32_t *tab = c->ltab[si];
        int j0 = pos - c->w + 1 > 0 ? pos - c->w + 1 : 0;
        int n = pos - j0 + 1;
        for (int b = j0 / B; b <= pos / B; b++) {
            int a0 = b * B > j0 ? b * B : j0, a1 = b * B + B - 1 < pos ? b * B + B - 1 : pos;
            cpu__scores(c, y, t, g, cpu__lentry(c, tab[b], y->ti, a0 % B), a1 - a0 + 1, sc, ld,
                        a0 - j0, tmp);
        }
        for (int h = 0; h < hpg; h++) {
            float *p = sc + (size_t)h * ld;
            cpu__softmax(p, n);
            float *u = c->u + ((size_t)t * H + (size_t)g * hpg + h) * dg;
            memset(u, 0, (size_t)dg * sizeof(float));
            for (int j = j0; j <= pos; j++) {
                const float *ent = cpu__lentry(c, tab[j / B], y->ti, j % B);
                cpu__axpy(u, p[j - j0], ent + (size_t)g * dg, dg);
            }
        }
    }
}

/* Block choice at an anchor (ASA-SPEC 3.3): forced blocks first, then the
 * best complete candidates by score, ties to the lower index; the set is
 * returned in ascending order.  S[0..cur] is destroyed. */
static int cpu__choose(const cpu_be *c, float *S, int pos, int32_t *out) {
    const int cur = pos / c->B, ncomplete = (pos + 1) / c->B;
    int cnt = 0;
    for (int b = 0; b <= cur; b++) {
        bool forced = b < c->init_b || b > cur - c->local_b;
        if (forced) {
            out[cnt++] = b;
            S[b] = -INFINITY;
        } else if (b >= ncomplete) {
            S[b] = -INFINITY;
        }
    }
    while (cnt < c->top_n) {
        int best = -1;
        for (int b = 0; b <= cur; b++)
            if (S[b] != -INFINITY && (best < 0 || S[b] > S[best]))
                best = b;
        if (best < 0)
            break;
        out[cnt++] = best;
        S[best] = -INFINITY;
    }
    /* insertion sort, ascending */
    for (int a = 1; a < cnt; a++) {
        int32_t v = out[a];
        int q = a - 1;
        for (; q >= 0 && out[q] > v; q--)
            out[q + 1] = out[q];
        out[q + 1] = v;
    }
    return cnt;
}

/* Global layer, phase A: one (token, group) item: the compression branch of
 * the group's heads into u, and at anchors the group's block choice. */
static void cpu__attn_cmp(void *ctx, int task, int tid) {
    cpu_be *c = ctx;
    const cpu_layer *y = c->cl;
    const int H = c->H, G = y->G, dg = y->dg, hpg = H / G, B = c->B, ld = c->sc_ld;
    float *sc = c->thr + (size_t)tid * c->thr_stride, *tmp = sc + c->thr_tmp;
    float *S = sc + c->thr_S;
    int it0, it1;
    cpu__range(c, task, &it0, &it1);
    for (int it = it0; it < it1; it++) {
        int t = it / G, g = it % G;
        int pos = c->tok_pos[t], si = c->tok_seq[t];
        const int32_t *tab = c->gtab[si];
        int nvis = (pos + 1) / B;
        bool anchor = pos % c->share == 0;
        if (anchor)
            memset(S, 0, (size_t)(pos / B + 1) * sizeof(float));
        for (int b = 0; b < nvis; b++)
            cpu__scores(c, y, t, g, cpu__gentry(c, tab[b], y->ti, B), 1, sc, ld, b, tmp);
        for (int h = 0; h < hpg; h++) {
            float *u = c->u + ((size_t)t * H + (size_t)g * hpg + h) * dg;
            memset(u, 0, (size_t)dg * sizeof(float));
            if (nvis == 0)
                continue; /* no visible block: o_cmp = 0, p = 0 */
            float *p = sc + (size_t)h * ld;
            cpu__softmax(p, nvis);
            for (int b = 0; b < nvis; b++)
                cpu__axpy(u, p[b], cpu__gentry(c, tab[b], y->ti, B) + (size_t)g * dg, dg);
            if (anchor) /* S^(g)[b] = sum over the group's heads, in head order */
                for (int b = 0; b < nvis; b++)
                    S[b] += p[b];
        }
        if (anchor) {
            size_t k = (size_t)t * G + g;
            c->tsel_cnt[k] = cpu__choose(c, S, pos, c->tsel + k * c->top_n);
        }
    }
}

/* Global layer, phase C: one (token, group) item: the selection branch over
 * the token's block set (j <= t), then the gated combination into u. */
static void cpu__attn_slc(void *ctx, int task, int tid) {
    cpu_be *c = ctx;
    const cpu_layer *y = c->cl;
    const int H = c->H, G = y->G, dg = y->dg, hpg = H / G, B = c->B, ld = c->sc_ld;
    float *sc = c->thr + (size_t)tid * c->thr_stride, *tmp = sc + c->thr_tmp;
    float *us = sc + c->thr_us;
    int it0, it1;
    cpu__range(c, task, &it0, &it1);
    for (int it = it0; it < it1; it++) {
        int t = it / G, g = it % G;
        int pos = c->tok_pos[t], si = c->tok_seq[t];
        const int32_t *tab = c->gtab[si];
        size_t k = (size_t)t * G + g;
        const int32_t *set = c->tsel + k * c->top_n;
        int nset = c->tsel_cnt[k];
        const float *gate = c->qa + (size_t)t * y->n_in + c->nq + y->S;
        int n = 0;
        for (int q = 0; q < nset; q++) {
            int b = set[q], cnt = b * B + B - 1 < pos ? B : pos - b * B + 1;
            cpu__scores(c, y, t, g, cpu__gentry(c, tab[b], y->ti, 0), cnt, sc, ld, n, tmp);
            n += cnt;
        }
        for (int h = 0; h < hpg; h++) {
            int i = g * hpg + h;
            float *p = sc + (size_t)h * ld;
            cpu__softmax(p, n);
            memset(us, 0, (size_t)dg * sizeof(float));
            int jn = 0;
            for (int q = 0; q < nset; q++) {
                int b = set[q], cnt = b * B + B - 1 < pos ? B : pos - b * B + 1;
                for (int j = 0; j < cnt; j++)
                    cpu__axpy(us, p[jn++], cpu__gentry(c, tab[b], y->ti, j) + (size_t)g * dg, dg);
            }
            float gc = cpu__sigmoid(gate[i]), gs = cpu__sigmoid(gate[H + i]);
            float *u = c->u + ((size_t)t * H + i) * dg;
            for (int q = 0; q < dg; q++)
                u[q] = gc * u[q] + gs * us[q];
        }
    }
}

/* Global layer, phase B (sequential): every non-anchor token takes its
 * anchor's sets (from this step, or the slot's stored state), and each slot
 * stores the sets of the last anchor it processed. */
static void cpu__share_sets(cpu_be *c, const cpu_layer *y) {
    const eng_batch *b = c->b;
    const int G = y->G, n = c->top_n;
    for (int i = 0; i < b->n_seqs; i++) {
        const eng_seq_step *s = &b->seqs[i];
        int t0 = c->seq_tok0[i], last_anchor_t = -1;
        for (int k = 0; k < s->n_tokens; k++) {
            int t = t0 + k, pos = s->pos0 + k;
            if (pos % c->share == 0) {
                last_anchor_t = t;
                continue;
            }
            int a = pos - pos % c->share;
            for (int g = 0; g < G; g++) {
                size_t dst = (size_t)t * G + g;
                if (a >= s->pos0) {
                    size_t src = (size_t)(t - (pos - a)) * G + g;
                    c->tsel_cnt[dst] = c->tsel_cnt[src];
                    memcpy(c->tsel + dst * n, c->tsel + src * n, (size_t)n * sizeof(int32_t));
                } else {
                    size_t src = cpu__sel_index(c, s->slot, y->ti, g);
                    c->tsel_cnt[dst] = c->sel_cnt[src];
                    memcpy(c->tsel + dst * n, c->sel + src * n, (size_t)n * sizeof(int32_t));
                }
            }
        }
        if (last_anchor_t >= 0)
            for (int g = 0; g < G; g++) {
                size_t src = (size_t)last_anchor_t * G + g;
                size_t dst = cpu__sel_index(c, s->slot, y->ti, g);
                c->sel_cnt[dst] = c->tsel_cnt[src];
                memcpy(c->sel + dst * n, c->tsel + src * n, (size_t)n * sizeof(int32_t));
            }
    }
}

/* Compressed entries of global blocks that the step completed. */
static void cpu__compress(cpu_be *c, const cpu_layer *y) {
    const eng_batch *b = c->b;
    const int B = c->B, S = y->S;
    for (int i = 0; i < b->n_seqs; i++) {
        const eng_seq_step *s = &b->seqs[i];
        int first = s->pos0, last = s->pos0 + s->n_tokens - 1;
        for (int blk = first / B; blk <= last / B; blk++) {
            int end = blk * B + B - 1;
            if (end < first || end > last)
                continue;
            int32_t page = c->gtab[i][blk];
            float *ce = cpu__gentry(c, page, y->ti, B);
            memset(ce, 0, (size_t)S * sizeof(float));
            for (int j = 0; j < B; j++) {
                const float *ent = cpu__gentry(c, page, y->ti, j);
                for (int q = 0; q < S; q++)
                    ce[q] += ent[q];
            }
            for (int q = 0; q < S; q++)
                ce[q] /= (float)B;
        }
    }
}

/* ---- the step ------------------------------------------------------------ */

static void cpu__rmsnorm_rows(cpu_be *c, const float *x, const float *wt, float *y) {
    for (int t = 0; t < c->ntok; t++)
        cpu__rmsnorm(x + (size_t)t * c->d, wt, y + (size_t)t * c->d, c->d, c->eps);
}

static void cpu__layer(cpu_be *c, const cpu_layer *y) {
    const int T = c->ntok, d = c->d, H = c->H, F = c->F;
    c->cl = y;
    /* 1-2: projections, RoPE, cache writes */
    cpu__rmsnorm_rows(c, c->x, y->attn_norm, c->hn);
    cpu__mm(c->pool, c->hn, d, &y->w_in, c->qa, y->n_in, T, y->n_in, d);
    cpu__par(c, cpu__prep_tokens, T, T >= 8);
    /* 3: absorbed queries */
    c->expand = false;
    cpu__par(c, cpu__heads, H, T >= 4);
    /* 4-5: attention (one token's attention is too little work to share) */
    if (y->type == ENG_LAYER_GLOBAL) {
        cpu__compress(c, y);
        cpu__par(c, cpu__attn_cmp, T * y->G, T > 1);
        cpu__share_sets(c, y);
        cpu__par(c, cpu__attn_slc, T * y->G, T > 1);
    } else {
        cpu__par(c, cpu__attn_local, T * y->G, T > 1);
    }
    /* 6: W_UV, o_proj, residual */
    c->expand = true;
    cpu__par(c, cpu__heads, H, T >= 4);
    cpu__mm(c->pool, c->o, H * c->dv, &y->o_proj, c->hn, d, T, d, H * c->dv);
    for (size_t k = 0; k < (size_t)T * d; k++)
        c->x[k] += c->hn[k];
    /* MLP */
    cpu__rmsnorm_rows(c, c->x, y->mlp_norm, c->hn);
    cpu__mm(c->pool, c->hn, d, &y->w_gu, c->gu, 2 * F, T, 2 * F, d);
    for (int t = 0; t < T; t++) {
        float *g = c->gu + (size_t)t * 2 * F; /* silu(gate) * up, in place */
        for (int q = 0; q < F; q++)
            g[q] = g[q] / (1.0f + expf(-g[q])) * g[F + q];
    }
    cpu__mm(c->pool, c->gu, 2 * F, &y->down, c->hn, d, T, d, F);
    for (size_t k = 0; k < (size_t)T * d; k++)
        c->x[k] += c->hn[k];
}

static asa_err cpu_step(void *p, const eng_batch *b, eng_seq_result *res) {
    cpu_be *c = p;
    const int d = c->d, V = c->V;
    /* page copies (copy-on-write) */
    for (int i = 0; i < b->n_copies; i++) {
        const kv_copy *cp = &b->copies[i];
        if (cp->cls == KV_GLOBAL)
            memcpy(c->gmem + (size_t)cp->dst * c->gpage, c->gmem + (size_t)cp->src * c->gpage,
                   c->gpage * sizeof(float));
        else
            memcpy(c->lmem + (size_t)cp->dst * c->lpage, c->lmem + (size_t)cp->src * c->lpage,
                   c->lpage * sizeof(float));
    }
    if (b->n_seqs == 0)
        return ASA_OK;
    /* per-step metadata, shared by every layer */
    c->b = b;
    int T = 0;
    for (int i = 0; i < b->n_seqs; i++) {
        const eng_seq_step *s = &b->seqs[i];
        int nb;
        c->seq_tok0[i] = T;
        c->gtab[i] = kv_seq_table(s->kv, KV_GLOBAL, &nb);
        c->ltab[i] = kv_seq_table(s->kv, KV_LOCAL, &nb);
        for (int k = 0; k < s->n_tokens; k++, T++) {
            c->tok_seq[T] = i;
            c->tok_pos[T] = s->pos0 + k;
            float *xr = c->x + (size_t)T * d;
            size_t row = (size_t)s->tokens[k] * d;
            if (c->embed.h)
                for (int q = 0; q < d; q++)
                    xr[q] = asa_bf16_to_f32(c->embed.h[row + q]);
            else
                memcpy(xr, c->embed.f + row, (size_t)d * sizeof(float));
            for (int q = 0; q < c->half; q++) {
                double ang = (double)(s->pos0 + k) * c->inv_freq[q];
                c->cosv[(size_t)T * c->half + q] = (float)cos(ang);
                c->sinv[(size_t)T * c->half + q] = (float)sin(ang);
            }
        }
    }
    c->ntok = T;
    for (int l = 0; l < c->L; l++)
        cpu__layer(c, &c->layers[l]);
    for (int i = 0; i < b->n_seqs; i++) {
        const eng_seq_step *s = &b->seqs[i];
        int last = s->pos0 + s->n_tokens - 1;
        if (c->m->cfg.n_global_layers > 0 && last - last % c->share >= s->pos0)
            c->sel_anchor[s->slot] = last - last % c->share;
    }

    /* logits for the rows that need them, CPU_LOGIT_ROWS at a time */
    int nr = 0;
    for (int i = 0; i < b->n_seqs; i++) {
        const eng_seq_step *s = &b->seqs[i];
        int t0 = c->seq_tok0[i];
        if (s->all_logits && s->logits_out)
            for (int k = 0; k < s->n_tokens; k++)
                c->rows[nr++] = t0 + k;
        else if (s->sample || s->logits_out)
            c->rows[nr++] = t0 + s->n_tokens - 1;
    }
    int lr = c->T < CPU_LOGIT_ROWS ? c->T : CPU_LOGIT_ROWS;
    for (int r0 = 0; r0 < nr; r0 += lr) {
        int n = nr - r0 < lr ? nr - r0 : lr;
        for (int r = 0; r < n; r++)
            cpu__rmsnorm(c->x + (size_t)c->rows[r0 + r] * d, c->norm,
                         c->hn + (size_t)r * d, d, c->eps);
        cpu__mm(c->pool, c->hn, d, &c->lm_head, c->logits, V, n, V, d);
        for (int r = 0; r < n; r++) {
            int t = c->rows[r0 + r], i = c->tok_seq[t];
            const eng_seq_step *s = &b->seqs[i];
            const float *row = c->logits + (size_t)r * V;
            int k = t - c->seq_tok0[i];
            bool is_last = k == s->n_tokens - 1;
            if (s->logits_out) {
                if (s->all_logits)
                    memcpy(s->logits_out + (size_t)k * V, row, (size_t)V * sizeof(float));
                else if (is_last)
                    memcpy(s->logits_out, row, (size_t)V * sizeof(float));
            }
            if (s->sample && is_last) {
                asa_err err = eng_sample(row, V, s->sp, s->prompt, s->n_prompt, s->output,
                                         s->n_output, c->samp, &res[i]);
                if (err != ASA_OK)
                    return err;
            }
        }
    }
    return ASA_OK;
}

const eng_backend_ops eng_cpu_backend = {
    .name = "cpu",
    .page_bytes = cpu_page_bytes,
    .create = cpu_create,
    .destroy = cpu_destroy,
    .seq_reset = cpu_seq_reset,
    .seq_copy = cpu_seq_copy,
    .seq_anchor = cpu_seq_anchor,
    .seq_sets = cpu_seq_sets,
    .step = cpu_step,
};
