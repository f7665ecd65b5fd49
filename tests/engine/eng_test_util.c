/* Helpers for the engine tests; see eng_test_util.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eng_test_util.h"
#include "model_writer.h"

void etu_shape_small(etu_shape *s) {
    *s = (etu_shape){.V = 61, .d = 32, .F = 48, .L = 4, .H = 4, .dh = 8, .dv = 6, .dR = 4,
                     .l_G = 1, .l_dg = 12, .window = 7,
                     .g_G = 2, .g_dg = 6, .B = 4, .top_n = 4, .init_b = 1, .local_b = 2,
                     .share = 2, .max_pos = 512, .tied = false, .bf16 = false, .seed = 7};
}

void etu_shape_tiny(etu_shape *s, int V) {
    *s = (etu_shape){.V = V, .d = 256, .F = 704, .L = 8, .H = 4, .dh = 64, .dv = 64, .dR = 32,
                     .l_G = 1, .l_dg = 96, .window = 128,
                     .g_G = 2, .g_dg = 48, .B = 16, .top_n = 8, .init_b = 1, .local_b = 2,
                     .share = 4, .max_pos = 8192, .tied = false, .bf16 = true, .seed = 11};
}

static uint32_t xs(uint32_t *s) {
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}
static float unif(uint32_t *s) { return (float)((xs(s) >> 8) / 16777216.0) * 2.0f - 1.0f; }

void etu_tokens(int32_t *t, int n, int V, uint32_t seed) {
    uint32_t s = seed * 2654435761u + 1;
    for (int i = 0; i < n; i++)
        t[i] = (int32_t)(xs(&s) % (uint32_t)V);
}

char *etu_write_model(const etu_shape *s) {
    mw_opts o = {.dtypes = s->bf16 ? MW_BF16 : MW_F32, .tied = s->tied, .seed = s->seed};
    mw_model *m = mw_create(&o);
    if (!m)
        return NULL;
    json_t *c = m->config;
    json_object_set_new(c, "vocab_size", json_integer(s->V));
    json_object_set_new(c, "hidden_size", json_integer(s->d));
    json_object_set_new(c, "intermediate_size", json_integer(s->F));
    json_object_set_new(c, "num_hidden_layers", json_integer(s->L));
    json_object_set_new(c, "num_heads", json_integer(s->H));
    json_object_set_new(c, "head_dim", json_integer(s->dh));
    json_object_set_new(c, "v_head_dim", json_integer(s->dv));
    json_object_set_new(c, "rope_dim", json_integer(s->dR));
    json_object_set_new(c, "rope_theta", json_real(10000.0));
    json_object_set_new(c, "rms_norm_eps", json_real(1e-6));
    json_object_set_new(c, "max_position_embeddings", json_integer(s->max_pos));
    json_object_set_new(c, "eos_token_id", json_integer(s->V - 1));
    json_t *lt = json_array();
    for (int i = 0; i < s->L; i++)
        json_array_append_new(lt, json_string(i % 2 ? "global" : "local"));
    json_object_set_new(c, "layer_types", lt);
    json_object_set_new(c, "local", json_pack("{s:i, s:i, s:i}", "latent_heads", s->l_G,
                                              "latent_dim", s->l_dg, "window", s->window));
    json_object_set_new(c, "global",
                        json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s}", "latent_heads",
                                  s->g_G, "latent_dim", s->g_dg, "block_size", s->B, "top_n",
                                  s->top_n, "init_blocks", s->init_b, "local_blocks",
                                  s->local_b, "selection_share", s->share, "compression",
                                  "mean"));
    mw_build_tensors(m, o.dtypes, s->seed);
    /* scaled values: norms 1 +- 0.2, matrices U(-1,1)/sqrt(fan_in) * gain,
     * embeddings U(-1,1) */
    for (int i = 0; i < m->n; i++) {
        mw_tensor *t = &m->t[i];
        uint32_t st = s->seed * 977u + (uint32_t)i * 7919u + 1u;
        int64_t n = mw_numel(t);
        bool vec = t->ndim == 1;
        bool emb = !strcmp(t->name, "embed_tokens.weight");
        double fan = vec ? 1 : (double)t->shape[1];
        float gain = strstr(t->name, "kv_b_proj") ? 2.0f : 1.0f;
        if (strstr(t->name, "q_proj") || strstr(t->name, "g_proj"))
            gain = 2.0f;
        for (int64_t k = 0; k < n; k++) {
            float v;
            if (vec)
                v = 1.0f + 0.2f * unif(&st);
            else if (emb)
                v = unif(&st);
            else
                v = unif(&st) * gain * (float)(1.7 / sqrt(fan));
            if (!strcmp(t->dtype, "BF16")) {
                uint16_t h = asa_f32_to_bf16(v);
                memcpy(t->data + 2 * k, &h, 2);
            } else {
                memcpy(t->data + 4 * k, &v, 4);
            }
        }
    }
    char *dir = mw_tmpdir();
    if (dir && mw_write(m, dir) != 0) {
        mw_rmtree(dir);
        free(dir);
        dir = NULL;
    }
    mw_destroy(m);
    return dir;
}

void etu_rmdir(char *dir) {
    if (dir)
        mw_rmtree(dir);
    free(dir);
}

eng *etu_engine(const eng_model *m, int max_seqs, int max_batch_tokens, int max_seq_len,
                int threads) {
    eng_options o;
    eng_options_default(&o);
    o.max_seqs = max_seqs;
    o.max_batch_tokens = max_batch_tokens;
    o.max_seq_len = max_seq_len;
    o.threads = threads;
    int B = m->cfg.global.block_size;
    o.num_pages[KV_GLOBAL] = max_seqs * (max_seq_len / B + 2) * 2;
    o.num_pages[KV_LOCAL] =
        max_seqs * (m->cfg.local.window / B + 3) + max_batch_tokens / B + 2 + 64;
    eng *e = NULL;
    char msg[256] = "";
    asa_errbuf eb = {msg, sizeof msg};
    asa_err err = eng_create(m, &o, &e, &eb);
    if (err)
        fail_msg("eng_create: %s (%s)", msg, asa_strerror(err));
    return e;
}

void etu_seq_open(eng *e, etu_seq *s) {
    assert_int_equal(eng_seq_open(e, &s->slot), ASA_OK);
    assert_int_equal(kv_seq_create(eng_kv_pool(e), &s->kv), ASA_OK);
    s->pos = 0;
}

void etu_seq_close(eng *e, etu_seq *s) {
    kv_seq_destroy(eng_kv_pool(e), s->kv);
    eng_seq_close(e, s->slot);
    s->kv = NULL;
}

void etu_prefill(eng *e, etu_seq *s, const int32_t *tokens, int n, int chunk, float *logits) {
    const int V = eng_get_model(e)->cfg.vocab_size;
    for (int k = 0; k < n; k += chunk) {
        int c = n - k < chunk ? n - k : chunk;
        kv_copy cp[8];
        int ncp = 0;
        assert_int_equal(kv_seq_alloc(eng_kv_pool(e), s->kv, c, cp, 8, &ncp), ASA_OK);
        eng_seq_step st = {.slot = s->slot, .tokens = tokens + k, .n_tokens = c,
                           .pos0 = s->pos, .kv = s->kv, .logits_out = logits ? logits + (size_t)k * V : NULL,
                           .all_logits = true};
        eng_batch b = {.n_seqs = 1, .seqs = &st, .copies = cp, .n_copies = ncp};
        eng_seq_result r;
        assert_int_equal(eng_step(e, &b, &r), ASA_OK);
        kv_seq_commit(eng_kv_pool(e), s->kv, c);
        s->pos += c;
    }
}

double etu_rel_l2(const float *a, const double *b, int V) {
    double num = 0, den = 0;
    for (int i = 0; i < V; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* ---- reference forward (double) ------------------------------------------- */

static double tget(const eng_tensor *t, int64_t r, int64_t c) {
    return eng_tensor_get(t, r * (t->ndim == 2 ? t->shape[1] : 1) + c);
}

static void rmsnorm_d(const double *x, const eng_tensor *w, int64_t off, double *y, int n,
                      double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * r * eng_tensor_get(w, off + i);
}

static void rope_d(double *v, int dR, long pos, double theta) {
    int half = dR / 2;
    for (int k = 0; k < half; k++) {
        double ang = (double)pos * pow(theta, -2.0 * k / dR);
        double a = v[k], b = v[k + half];
        v[k] = a * cos(ang) - b * sin(ang);
        v[k + half] = a * sin(ang) + b * cos(ang);
    }
}

static void matvec_d(const eng_tensor *w, int64_t row0, int rows, const double *x, int n,
                     double *y) {
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int k = 0; k < n; k++)
            s += tget(w, row0 + r, k) * x[k];
        y[r] = s;
    }
}

static void softmax_d(double *s, int n) {
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < n; i++)
        mx = s[i] > mx ? s[i] : mx;
    for (int i = 0; i < n; i++)
        sum += (s[i] = exp(s[i] - mx));
    for (int i = 0; i < n; i++)
        s[i] /= sum;
}

typedef struct cand {
    double score;
    int b;
} cand;
static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->b - y->b;
}

void etu_reference(const eng_model *m, const int32_t *tok, int n, double *logits) {
    const eng_config *c = &m->cfg;
    const int d = c->hidden_size, H = c->num_heads, dh = c->head_dim, dv = c->v_head_dim,
              dR = c->rope_dim, F = c->intermediate_size, V = c->vocab_size;
    const double scale = 1.0 / sqrt((double)(dh + dR)), eps = c->rms_norm_eps;
    double *x = calloc((size_t)n * d, sizeof(double));
    double *h = calloc((size_t)n * d, sizeof(double));
    double *q = calloc((size_t)n * H * (dh + dR), sizeof(double));
    int Smax = 1024;
    double *cache = calloc((size_t)n * Smax, sizeof(double)); /* per token: latents + kR */
    double *o = calloc((size_t)n * H * dv, sizeof(double));
    double *a = calloc((size_t)Smax, sizeof(double));
    double *K = calloc((size_t)n * (dh + dR), sizeof(double)); /* per head keys */
    double *Vv = calloc((size_t)n * dv, sizeof(double));
    double *sc = calloc((size_t)n + 1, sizeof(double));
    double *gt = calloc((size_t)2 * H, sizeof(double));
    double *tmp = calloc((size_t)(d > F ? d : F) * 2 + 16, sizeof(double));
    int nbmax = n / c->global.block_size + 2;
    double *cmpK = calloc((size_t)nbmax * (dh + dR), sizeof(double));
    double *cmpV = calloc((size_t)nbmax * dv, sizeof(double));
    double *S = calloc((size_t)nbmax, sizeof(double));
    cand *cd = calloc((size_t)nbmax, sizeof(cand));
    int *sets = calloc((size_t)n * 8 * (c->global.top_n + 1), sizeof(int));
    int *nsets = calloc((size_t)n * 8, sizeof(int));
    for (int t = 0; t < n; t++)
        for (int k = 0; k < d; k++)
            x[(size_t)t * d + k] = tget(&m->embed, tok[t], k);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const eng_layer *ly = &m->layers[l];
        const int G = ly->G, dg = ly->dg, S_ = G * dg + dR, hpg = H / G;
        assert_true(S_ <= Smax && G <= 8);
        for (int t = 0; t < n; t++) {
            rmsnorm_d(x + (size_t)t * d, &ly->attn_norm, 0, h + (size_t)t * d, d, eps);
            matvec_d(&ly->q_proj, 0, H * (dh + dR), h + (size_t)t * d, d,
                     q + (size_t)t * H * (dh + dR));
            for (int i = 0; i < H; i++)
                rope_d(q + (size_t)t * H * (dh + dR) + (size_t)i * (dh + dR) + dh, dR, t,
                       c->rope_theta);
            matvec_d(&ly->kv_a_proj, 0, S_, h + (size_t)t * d, d, a);
            double *ce = cache + (size_t)t * Smax;
            for (int g = 0; g < G; g++)
                rmsnorm_d(a + g * dg, &ly->kv_a_norm, g * dg, ce + g * dg, dg, eps);
            memcpy(ce + G * dg, a + G * dg, (size_t)dR * sizeof(double));
            rope_d(ce + G * dg, dR, t, c->rope_theta);
        }
        const int B = c->global.block_size;
        for (int i = 0; i < H; i++) {
            int g = i / hpg;
            /* expanded keys/values of head i for every token */
            for (int j = 0; j < n; j++) {
                const double *ce = cache + (size_t)j * Smax;
                matvec_d(&ly->kv_b_proj, (int64_t)i * (dh + dv), dh, ce + g * dg, dg,
                         K + (size_t)j * (dh + dR));
                memcpy(K + (size_t)j * (dh + dR) + dh, ce + G * dg, (size_t)dR * sizeof(double));
                matvec_d(&ly->kv_b_proj, (int64_t)i * (dh + dv) + dh, dv, ce + g * dg, dg,
                         Vv + (size_t)j * dv);
            }
            if (ly->type == ENG_LAYER_LOCAL) {
                for (int t = 0; t < n; t++) {
                    const double *qi = q + (size_t)t * H * (dh + dR) + (size_t)i * (dh + dR);
                    int j0 = t - c->local.window + 1 > 0 ? t - c->local.window + 1 : 0;
                    for (int j = j0; j <= t; j++) {
                        double s = 0;
                        for (int k = 0; k < dh + dR; k++)
                            s += qi[k] * K[(size_t)j * (dh + dR) + k];
                        sc[j - j0] = s * scale;
                    }
                    softmax_d(sc, t - j0 + 1);
                    double *oi = o + (size_t)t * H * dv + (size_t)i * dv;
                    for (int k = 0; k < dv; k++) {
                        double s = 0;
                        for (int j = j0; j <= t; j++)
                            s += sc[j - j0] * Vv[(size_t)j * dv + k];
                        oi[k] = s;
                    }
                }
                continue;
            }
            /* compressed keys/values of head i: W_UK mean(c), mean(kR) */
            int nb = n / B;
            for (int b = 0; b < nb; b++) {
                double mc[256], mk[256];
                assert_true(dg <= 256 && dR <= 256);
                for (int k = 0; k < dg; k++) {
                    double s = 0;
                    for (int j = b * B; j < b * B + B; j++)
                        s += cache[(size_t)j * Smax + g * dg + k];
                    mc[k] = s / B;
                }
                for (int k = 0; k < dR; k++) {
                    double s = 0;
                    for (int j = b * B; j < b * B + B; j++)
                        s += cache[(size_t)j * Smax + G * dg + k];
                    mk[k] = s / B;
                }
                matvec_d(&ly->kv_b_proj, (int64_t)i * (dh + dv), dh, mc, dg,
                         cmpK + (size_t)b * (dh + dR));
                memcpy(cmpK + (size_t)b * (dh + dR) + dh, mk, (size_t)dR * sizeof(double));
                matvec_d(&ly->kv_b_proj, (int64_t)i * (dh + dv) + dh, dv, mc, dg,
                         cmpV + (size_t)b * dv);
            }
            for (int t = 0; t < n; t++) {
                const double *qi = q + (size_t)t * H * (dh + dR) + (size_t)i * (dh + dR);
                double *oi = o + (size_t)t * H * dv + (size_t)i * dv;
                int nvis = (t + 1) / B;
                double ocmp[256] = {0}, oslc[256] = {0};
                for (int b = 0; b < nvis; b++) {
                    double s = 0;
                    for (int k = 0; k < dh + dR; k++)
                        s += qi[k] * cmpK[(size_t)b * (dh + dR) + k];
                    sc[b] = s * scale;
                }
                if (nvis > 0)
                    softmax_d(sc, nvis);
                for (int k = 0; k < dv; k++)
                    for (int b = 0; b < nvis; b++)
                        ocmp[k] += sc[b] * cmpV[(size_t)b * dv + k];
                /* selection scores: accumulated per (t, g) across the group's heads */
                int *set = sets + ((size_t)t * 8 + g) * (c->global.top_n + 1);
                if (t % c->global.selection_share == 0) {
                    double *Sg = S; /* per (t,g): recompute from all heads of the group */
                    for (int b = 0; b < nbmax; b++)
                        Sg[b] = 0;
                    if (i % hpg == 0) {
                        for (int i2 = g * hpg; i2 < (g + 1) * hpg; i2++) {
                            /* p of head i2 at t needs head i2's compressed keys: recompute */
                            const double *q2 = q + (size_t)t * H * (dh + dR) + (size_t)i2 * (dh + dR);
                            double sc2[4096];
                            assert_true(nvis <= 4096);
                            for (int b = 0; b < nvis; b++) {
                                double mc[256], kk[256], s = 0;
                                for (int k = 0; k < dg; k++) {
                                    double z = 0;
                                    for (int j = b * B; j < b * B + B; j++)
                                        z += cache[(size_t)j * Smax + g * dg + k];
                                    mc[k] = z / B;
                                }
                                matvec_d(&ly->kv_b_proj, (int64_t)i2 * (dh + dv), dh, mc, dg, kk);
                                for (int k = 0; k < dR; k++) {
                                    double z = 0;
                                    for (int j = b * B; j < b * B + B; j++)
                                        z += cache[(size_t)j * Smax + G * dg + k];
                                    kk[dh + k] = z / B;
                                }
                                for (int k = 0; k < dh + dR; k++)
                                    s += q2[k] * kk[k];
                                sc2[b] = s * scale;
                            }
                            if (nvis > 0)
                                softmax_d(sc2, nvis);
                            for (int b = 0; b < nvis; b++)
                                Sg[b] += sc2[b];
                        }
                        int cur = t / B, ns = 0, nforced = 0;
                        for (int b = 0; b <= cur; b++) {
                            bool forced = b < c->global.init_blocks ||
                                          b > cur - c->global.local_blocks;
                            if (forced)
                                set[nforced++] = b;
                            else if (b < nvis)
                                cd[ns++] = (cand){Sg[b], b};
                        }
                        qsort(cd, (size_t)ns, sizeof *cd, cand_cmp);
                        int tot = nforced;
                        for (int k = 0; k < ns && tot < c->global.top_n; k++)
                            set[tot++] = cd[k].b;
                        nsets[(size_t)t * 8 + g] = tot;
                    }
                } else if (i % hpg == 0) {
                    int an = t - t % c->global.selection_share;
                    memcpy(set, sets + ((size_t)an * 8 + g) * (c->global.top_n + 1),
                           (size_t)c->global.top_n * sizeof(int));
                    nsets[(size_t)t * 8 + g] = nsets[(size_t)an * 8 + g];
                }
                /* selection branch */
                int ns = 0;
                int ntot = nsets[(size_t)t * 8 + g];
                static int js[1 << 16];
                for (int q2 = 0; q2 < ntot; q2++)
                    for (int j = set[q2] * B; j < set[q2] * B + B && j <= t; j++)
                        js[ns++] = j;
                for (int k2 = 0; k2 < ns; k2++) {
                    double s = 0;
                    for (int k = 0; k < dh + dR; k++)
                        s += qi[k] * K[(size_t)js[k2] * (dh + dR) + k];
                    sc[k2] = s * scale;
                }
                softmax_d(sc, ns);
                for (int k = 0; k < dv; k++)
                    for (int k2 = 0; k2 < ns; k2++)
                        oslc[k] += sc[k2] * Vv[(size_t)js[k2] * dv + k];
                matvec_d(&ly->g_proj, 0, 2 * H, h + (size_t)t * d, d, gt);
                double gc = 1 / (1 + exp(-gt[i])), gs = 1 / (1 + exp(-gt[H + i]));
                for (int k = 0; k < dv; k++)
                    oi[k] = gc * ocmp[k] + gs * oslc[k];
            }
        }
        for (int t = 0; t < n; t++) {
            matvec_d(&ly->o_proj, 0, d, o + (size_t)t * H * dv, H * dv, tmp);
            for (int k = 0; k < d; k++)
                x[(size_t)t * d + k] += tmp[k];
            rmsnorm_d(x + (size_t)t * d, &ly->mlp_norm, 0, h + (size_t)t * d, d, eps);
            double *gg = tmp, *uu = tmp + F;
            matvec_d(&ly->gate_proj, 0, F, h + (size_t)t * d, d, gg);
            matvec_d(&ly->up_proj, 0, F, h + (size_t)t * d, d, uu);
            for (int k = 0; k < F; k++)
                gg[k] = gg[k] / (1 + exp(-gg[k])) * uu[k];
            double y[4096];
            assert_true(d <= 4096);
            matvec_d(&ly->down_proj, 0, d, gg, F, y);
            for (int k = 0; k < d; k++)
                x[(size_t)t * d + k] += y[k];
        }
    }
    for (int t = 0; t < n; t++) {
        rmsnorm_d(x + (size_t)t * d, &m->norm, 0, h + (size_t)t * d, d, eps);
        matvec_d(&m->lm_head, 0, V, h + (size_t)t * d, d, logits + (size_t)t * V);
    }
    free(x);
    free(h);
    free(q);
    free(cache);
    free(o);
    free(a);
    free(K);
    free(Vv);
    free(sc);
    free(gt);
    free(tmp);
    free(cmpK);
    free(cmpV);
    free(S);
    free(cd);
    free(sets);
    free(nsets);
}

static int etu__cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int etu_list_fixtures(const char *root, char **out, int max) {
    const char *over = getenv("ASA_FIXTURES_OVERRIDE");
    if (over)
        root = over;
    int n_fix = 0;
    DIR *d = opendir(root);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) && n_fix < max) {
            if (de->d_name[0] == '.')
                continue;
            size_t n = strlen(root) + strlen(de->d_name) + 32;
            char *p = malloc(n);
            struct stat sb;
            if (!p)
                break;
            snprintf(p, n, "%s/%s/case.json", root, de->d_name);
            if (stat(p, &sb) == 0) {
                snprintf(p, n, "%s/%s", root, de->d_name);
                out[n_fix++] = p;
            } else {
                free(p);
            }
        }
        closedir(d);
    }
    qsort(out, (size_t)n_fix, sizeof out[0], etu__cmp_str);
    return n_fix;
}
