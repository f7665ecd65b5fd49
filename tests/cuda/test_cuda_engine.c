/*
 * The CUDA engine against the CPU engine on every fixture under
 * tests/fixtures/ (ASA-SPEC 6: relative L2 error of each logit row < 2e-2;
 * greedy identity where the CPU engine's top1-top2 margin exceeds 1e-3 of
 * the row's max |logit|).
 *
 * Top-n block choice is discontinuous (ASA-SPEC 6): where an anchor's
 * n-th and (n+1)-th selection scores are within bf16 rounding, the CUDA
 * engine may choose another block and the rows of that anchor's share group
 * legitimately differ.  The fixture's selection.json gives the reference's
 * relative top-n gap per global layer, anchor and latent group; positions
 * of an anchor whose smallest gap is below AMB_GAP are "ambiguous": their
 * errors are printed but not held to the tolerance, and greedy identity is
 * not required there.  A different choice also changes those positions'
 * entries in the cache of every later local layer; with a short window
 * (<= SHORT_WINDOW) that moves the next window positions visibly, so they
 * count as ambiguous too.
 *
 * The CUDA engine keeps matrices in bf16 (f32 checkpoints are rounded at
 * load), so its reference here is the CPU engine on the same bf16-rounded
 * matrices (norm weights stay f32 on both); the distance to the CPU engine
 * on the original weights is printed too.  The CUDA engine's default mode
 * has cuBLAS products read f32 activations as a bf16 pair (GEMV products
 * read them as f32), so the cache is its only bf16 rounding; checks 1-4 set
 * ASA_CUDA_PRECISE=1 explicitly (the same numerics), check 5 runs an
 * engine created with the environment untouched, held to the same 2e-2.
 *
 * For every fixture (prompt + greedy continuation of case.json, P =
 * positions with a reference row):
 *   1. one-shot prefill of all P positions on both engines: every
 *      unambiguous row within 2e-2 (the worst row is printed);
 *   2. decode of up to 64 steps after the prompt, both engines fed the
 *      fixture's tokens: the CUDA engine's greedy token equals the CPU
 *      engine's argmax wherever the CPU margin rule applies (unambiguous
 *      positions), and every step's logits within 2e-2 of the CPU engine's;
 *   3. chunked prefill (chunks of 16 and 37) on the CUDA engine: every row
 *      within 2e-2 of the CPU engine's (the distance to the CUDA one-shot
 *      rows is printed);
 *   4. the sequence in a batch with three others (different chunk sizes):
 *      its rows within 2e-2 of the CPU engine's;
 *   5. default mode: one-shot and chunk-16 prefill within DEF_TOL;
 *   6. block choice: prefilled in chunks of selection_share (each starts at
 *      an anchor), the slot's stored sets of every global layer and latent
 *      group equal the CPU engine's wherever the reference's relative top-n
 *      gap is at least AMB_GAP in the first global layer (LATER_GAP in later
 *      ones, whose inputs carry the earlier layers' near-tie choices), or
 *      nothing could be swapped.  Only for checkpoints with bf16 matrices:
 *      rounding f32 matrices moves the scores by more than the reference's
 *      gaps tell.
 *   7. batch-invariant mode (opt.batch_invariant): rows within DEF_TOL of
 *      the CPU engine's, and bitwise equal one-shot / chunks of 16 and 37
 *      (and 1 for short fixtures) / in a batch of four / decode steps, and
 *      greedy tokens sampled on the device (with 5 logprobs) equal to
 *      eng_sample's on the same row.
 *   8. decode of three sequences at once with ASA_CUDA_GRAPHS=1 (padded
 *      to 4, CUDA graphs) and =eager (padded, not captured): logits within
 *      DEF_TOL of the CPU rows, device greedy equal to eng_sample's;
 *   9. seeded sampling: two sequences decoded together, each fed its own
 *      sampled tokens (temperature, top-k, top-p, min-p, penalties, logit
 *      bias, logprobs), in batch-invariant mode (bitwise logits) with
 *      ASA_CUDA_GPU_SAMPLE=0 (eng_sample on the host) and =1 (sample_cuda):
 *      the same tokens and logprobs (within one float ulp);
 *  10. quiet decode steps: batches of 1 and 2 sequences decoded as CUDA
 *      graphs and as padded eager steps (ASA_CUDA_GRAPHS=eager) with the
 *      default ASA_CUDA_QUIET_PAD (steps without an anchor, a completed
 *      block or a set to store leave the block scoring / choice /
 *      compression / store launches out, in graphs of their own) and with
 *      ASA_CUDA_QUIET_PAD=0: bitwise equal logits at every step, within
 *      DEF_TOL of the CPU rows, and exactly the steps at positions that are
 *      neither anchors nor block ends counted quiet (the counts the engine
 *      logs at destroy; graph runs where the graphs went off, as in the CPU
 *      emulation, are only compared);
 * Prints one summary line.  Exits 77 without a CUDA device or fixtures.
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "backend.h" /* eng__seq_sets / eng__seq_anchor (for tests) */
#include "eng.h"
#include "eng_test_util.h"
#include "model.h"
#include "sample.h"

#define MAX_FIX 64
#define TOL 2e-2
#define AMB_GAP 3e-2
#define DEF_TOL TOL /* default mode: ASA-SPEC 6 too */
#define SHORT_WINDOW 64
#define LATER_GAP 1e-1
static char *fix_dirs[MAX_FIX];
static int n_fix;

/* summary over all fixtures */
static double w_prefill, w_decode, w_chunk, w_chunk_self, w_batch, w_default, w_f32;
static int n_checked, n_steps, n_disagree, n_sets, n_sets_skipped, n_inv, n_devgreedy;
static int n_sampled;

static double rel_l2(const float *a, const float *b, int V) {
    double num = 0, den = 0;
    for (int i = 0; i < V; i++) {
        double x = (double)a[i] - b[i];
        num += x * x;
        den += (double)b[i] * b[i];
    }
    double r = sqrt(num / (den > 0 ? den : 1));
    return isnan(r) ? INFINITY : r;
}

/* ambiguous positions of the current fixture (see above) */
static unsigned char *amb;
static double w_amb;
static int n_amb;

/* Marks the share groups of anchors with a small top-n gap; returns the
 * number of ambiguous positions below P. */
static int load_ambiguous(const char *dir, const eng_config *cfg, int P) {
    const int share = cfg->global.selection_share;
    char path[4096];
    snprintf(path, sizeof path, "%s/selection.json", dir);
    amb = calloc((size_t)P + 1, 1);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        return 0;
    json_t *layers = json_object_get(j, "layers");
    for (size_t l = 0; l < json_array_size(layers); l++) {
        json_t *ly = json_array_get(layers, l);
        int li = (int)json_integer_value(json_object_get(ly, "layer")), ext = 0;
        for (int q = li + 1; q < cfg->num_hidden_layers; q++)
            if (cfg->layer_types[q] == ENG_LAYER_LOCAL && cfg->local.window <= SHORT_WINDOW)
                ext = cfg->local.window;
        json_t *anc = json_object_get(ly, "anchors"), *gaps = json_object_get(ly, "rel_gaps");
        for (size_t a = 0; a < json_array_size(anc); a++) {
            int t0 = (int)json_integer_value(json_array_get(anc, a));
            json_t *g = json_array_get(gaps, a);
            bool small = false;
            for (size_t q = 0; q < json_array_size(g); q++) {
                json_t *v = json_array_get(g, q);
                if (json_is_number(v) && json_number_value(v) < AMB_GAP)
                    small = true;
            }
            for (int t = t0; small && t < t0 + share + ext && t < P; t++)
                amb[t] = 1;
        }
    }
    json_decref(j);
    int n = 0;
    for (int t = 0; t < P; t++)
        n += amb[t];
    return n;
}

/* worst error over the unambiguous rows of a [P, V] block against ref
 * (ambiguous rows go into w_amb) */
static double worst_rows(const float *a, const float *ref, int P, int V, int *at) {
    double w = 0;
    *at = 0;
    for (int t = 0; t < P; t++) {
        double r = rel_l2(a + (size_t)t * V, ref + (size_t)t * V, V);
        if (amb[t]) {
            w_amb = fmax(w_amb, r);
            continue;
        }
        if (r > w) {
            w = r;
            *at = t;
        }
    }
    return w;
}

/* A shallow copy of src whose F32 matrices (2-D tensors) are rounded to
 * bf16 into buffers owned by the copy (free with free_copy). */
#define MAX_BUFS 512
typedef struct mcopy {
    eng_model m;
    void *bufs[MAX_BUFS];
    int nbufs;
} mcopy;

static void round_tensor(mcopy *c, eng_tensor *t) {
    if (!t->data || t->dtype != ENG_F32 || t->ndim != 2)
        return;
    size_t n = (size_t)t->shape[0] * (size_t)t->shape[1];
    uint16_t *b = malloc(n * sizeof(uint16_t));
    assert_non_null(b);
    assert_true(c->nbufs < MAX_BUFS);
    for (size_t i = 0; i < n; i++)
        b[i] = asa_f32_to_bf16(eng_tensor_get(t, (int64_t)i));
    c->bufs[c->nbufs++] = b;
    t->data = b;
    t->dtype = ENG_BF16;
}

static mcopy *bf16_copy(const eng_model *src) {
    mcopy *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->m = *src;
    c->m.layers = malloc((size_t)src->cfg.num_hidden_layers * sizeof(eng_layer));
    assert_non_null(c->m.layers);
    memcpy(c->m.layers, src->layers, (size_t)src->cfg.num_hidden_layers * sizeof(eng_layer));
    bool tied = src->lm_head.data == src->embed.data;
    round_tensor(c, &c->m.embed);
    if (tied)
        c->m.lm_head = c->m.embed;
    else
        round_tensor(c, &c->m.lm_head);
    for (int l = 0; l < src->cfg.num_hidden_layers; l++) {
        eng_layer *y = &c->m.layers[l];
        eng_tensor *ts[] = {&y->q_proj, &y->kv_a_proj, &y->kv_b_proj, &y->o_proj, &y->g_proj,
                            &y->gate_proj, &y->up_proj, &y->down_proj};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            round_tensor(c, ts[i]);
    }
    return c;
}

static void free_copy(mcopy *c) {
    for (int i = 0; i < c->nbufs; i++)
        free(c->bufs[i]);
    free(c->m.layers);
    free(c);
}

/* Check 6 (see above): e (CUDA) against ec (CPU, same bf16 matrices), both
 * prefilled in chunks of selection_share. */
static void check_selection(eng *e, eng *ec, const char *dir, const eng_model *m,
                            const int32_t *seq, int P) {
    char path[4096];
    snprintf(path, sizeof path, "%s/selection.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        return;
    const eng_config *cfg = &m->cfg;
    const int sh = cfg->global.selection_share;
    json_t *layers = json_object_get(j, "layers");
    int32_t got[256], want[256];
    assert_true(cfg->global.top_n <= 256);
    etu_seq q, qc;
    etu_seq_open(e, &q);
    etu_seq_open(ec, &qc);
    int checked = 0, skipped = 0;
    for (int a = 0; a < P; a += sh) {
        int len = a + sh <= P ? sh : P - a;
        etu_prefill(e, &q, seq + a, len, len, NULL);
        etu_prefill(ec, &qc, seq + a, len, len, NULL);
        assert_int_equal(eng__seq_anchor(e, q.slot), a);
        size_t li;
        json_t *L;
        json_array_foreach(layers, li, L) {
            int layer = (int)json_integer_value(json_object_get(L, "layer"));
            assert_true(layer >= 0 && layer < cfg->num_hidden_layers);
            int ti = m->layers[layer].type_index;
            double min_gap = ti == 0 ? AMB_GAP : LATER_GAP;
            size_t ai = (size_t)(a / sh);
            if (json_integer_value(json_array_get(json_object_get(L, "anchors"), ai)) != a)
                continue;
            json_t *gaps = json_array_get(json_object_get(L, "rel_gaps"), ai);
            for (int g = 0; g < cfg->global.attn.latent_heads; g++) {
                json_t *gap = json_array_get(gaps, (size_t)g);
                if (json_is_number(gap) && !(json_number_value(gap) >= min_gap)) {
                    skipped++;
                    continue;
                }
                int cnt = eng__seq_sets(e, q.slot, ti, g, got);
                bool same = cnt >= 0 && cnt == eng__seq_sets(ec, qc.slot, ti, g, want);
                for (int k = 0; same && k < cnt; k++)
                    same = got[k] == want[k];
                if (!same)
                    fail_msg("%s: layer %d group %d anchor %d: block set differs from the CPU "
                             "engine's", dir, layer, g, a);
                checked++;
            }
        }
    }
    etu_seq_close(e, &q);
    etu_seq_close(ec, &qc);
    json_decref(j);
    print_message("%s: %d block sets equal to the CPU engine's, %d near-ties skipped\n", dir,
                  checked, skipped);
    n_sets += checked;
    n_sets_skipped += skipped;
}

/* The sequence (P tokens, chunks of 16) in a batch with three others of
 * other lengths and chunk sizes; its logits rows go to out0 [P, V]. */
static void batch4(eng *e, const int32_t *seq, int P, int V, float *out0) {
    int lens[4] = {P, P / 3 + 1, P / 2 + 5 < P ? P / 2 + 5 : P, P - 7 > 0 ? P - 7 : 1};
    int ch[4] = {16, 5, 37, 11};
    int32_t *tok[4];
    float *out[4];
    etu_seq q4[4];
    for (int i = 0; i < 4; i++) {
        tok[i] = malloc((size_t)lens[i] * sizeof(int32_t));
        if (i == 0)
            memcpy(tok[i], seq, (size_t)P * sizeof(int32_t));
        else
            etu_tokens(tok[i], lens[i], V, 31u * (uint32_t)i);
        out[i] = malloc((size_t)lens[i] * V * sizeof(float));
        etu_seq_open(e, &q4[i]);
    }
    for (;;) {
        eng_seq_step q[4];
        eng_seq_result r[4];
        kv_copy cp[16];
        int ncp = 0, nq = 0, cnt[4] = {0}, budget = P;
        for (int i = 0; i < 4; i++) {
            int left = lens[i] - q4[i].pos, cc = left < ch[i] ? left : ch[i];
            if (cc > budget)
                cc = budget;
            if (cc <= 0)
                continue;
            budget -= cc;
            cnt[i] = cc;
            assert_int_equal(kv_seq_alloc(eng_kv_pool(e), q4[i].kv, cc, cp, 16, &ncp), ASA_OK);
            q[nq++] = (eng_seq_step){.slot = q4[i].slot, .tokens = tok[i] + q4[i].pos,
                                     .n_tokens = cc, .pos0 = q4[i].pos, .kv = q4[i].kv,
                                     .logits_out = out[i] + (size_t)q4[i].pos * V,
                                     .all_logits = true};
        }
        if (nq == 0)
            break;
        eng_batch b = {.n_seqs = nq, .seqs = q, .copies = cp, .n_copies = ncp};
        assert_int_equal(eng_step(e, &b, r), ASA_OK);
        for (int i = 0; i < 4; i++)
            if (cnt[i]) {
                kv_seq_commit(eng_kv_pool(e), q4[i].kv, cnt[i]);
                q4[i].pos += cnt[i];
            }
    }
    memcpy(out0, out[0], (size_t)P * V * sizeof(float));
    for (int i = 0; i < 4; i++) {
        etu_seq_close(e, &q4[i]);
        free(tok[i]);
        free(out[i]);
    }
}

static bool invariant_engines;
static double w_graph, w_quiet;
static long n_quiet, n_quiet_graph;

/* nb (at most 4) copies of the prompt seq[0 .. np) opened and prefilled in
 * one step each. */
static void open_copies(eng *e, etu_seq *q, int nb, const int32_t *seq, int np) {
    for (int i = 0; i < nb; i++) {
        etu_seq_open(e, &q[i]);
        etu_prefill(e, &q[i], seq, np, np, NULL);
    }
}

/* One decode step of the nb (at most 4) sequences q, each fed *tok:
 * sequence i < nrows returns its logits at rows + i * V, sequence sample_i
 * (-1: none) samples with sp; results into r; the sequences' positions
 * advance. */
static void decode_copies(eng *e, etu_seq *q, int nb, const int32_t *tok,
                          const eng_sampling *sp, float *rows, int nrows, int V, int sample_i,
                          eng_seq_result *r) {
    kv_copy cp[8];
    int ncp = 0;
    eng_seq_step st[4];
    assert_true(nb <= 4);
    for (int i = 0; i < nb; i++) {
        assert_int_equal(kv_seq_alloc(eng_kv_pool(e), q[i].kv, 1, cp, 8, &ncp), ASA_OK);
        st[i] = (eng_seq_step){.slot = q[i].slot, .tokens = tok, .n_tokens = 1,
                               .pos0 = q[i].pos, .kv = q[i].kv, .sample = i == sample_i,
                               .sp = sp, .logits_out = i < nrows ? rows + (size_t)i * V : NULL};
    }
    eng_batch b = {.n_seqs = nb, .seqs = st, .copies = cp, .n_copies = ncp};
    assert_int_equal(eng_step(e, &b, r), ASA_OK);
    for (int i = 0; i < nb; i++) {
        kv_seq_commit(eng_kv_pool(e), q[i].kv, 1);
        q[i].pos++;
    }
}

/* Check 8: three copies of the sequence prefilled, then decoded together
 * (fed the fixture's tokens): copies 0 and 1 return logits (within DEF_TOL
 * of the CPU rows at unambiguous positions: default numerics), copy 2 only a device greedy token
 * equal to eng_sample on copy 0's row (the rows are computed alike). */
static double graph_decode(eng *e, const char *dir, const int32_t *seq, int np, int n_gen,
                           int V, const float *cpu) {
    etu_seq q[3];
    float *row = malloc((size_t)2 * V * sizeof(float)), *samp = malloc((size_t)2 * V * 4);
    const eng_sampling sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1,
                             .n_logprobs = 3};
    double w = 0;
    open_copies(e, q, 3, seq, np);
    for (int k = 0; k + 1 < n_gen; k++) {
        eng_seq_result r[3], rw;
        decode_copies(e, q, 3, &seq[np + k], &sp, row, 2, V, 2, r);
        const int t = np + k;
        for (int i = 0; i < 2 && !amb[t]; i++) {
            double x = rel_l2(row + (size_t)i * V, cpu + (size_t)t * V, V);
            w = fmax(w, x);
            if (!(x < DEF_TOL)) /* default numerics, as check 5 */
                fail_msg("%s: graph decode step %d copy %d: error %g", dir, k, i, x);
        }
        assert_int_equal(eng_sample(row, V, &sp, NULL, 0, NULL, 0, samp, &rw), ASA_OK);
        if (r[2].token != rw.token)
            fail_msg("%s: graph decode step %d: device greedy %d, host %d", dir, k, r[2].token,
                     rw.token);
    }
    for (int i = 0; i < 3; i++)
        etu_seq_close(e, &q[i]);
    free(row);
    free(samp);
    return w;
}

static eng *mk_engine(const eng_model *m, eng_backend_kind be, int max_seqs, int T,
                      int max_len);

/* Destroys e with stderr in a temporary file; the counts of the CUDA
 * engine's "padded decode steps: N, quiet: Q" line into n and q, and of
 * its "K-split products: K, stacked: S" line into ks[0], ks[1] and of
 * its "rope + absorb (tensor cores) launches: R" line into ks[2] when
 * given (-1: none). */
static void destroy_counts(eng *e, long *n, long *q, long *ks) {
    fflush(stderr);
    FILE *tf = tmpfile();
    const int fd = dup(2);
    assert_non_null(tf);
    assert_true(fd >= 0);
    dup2(fileno(tf), 2);
    eng_destroy(e);
    fflush(stderr);
    dup2(fd, 2);
    close(fd);
    rewind(tf);
    char line[512];
    *n = *q = -1;
    if (ks)
        ks[0] = ks[1] = ks[2] = -1;
    while (fgets(line, sizeof line, tf)) {
        const char *at = strstr(line, "padded decode steps: ");
        if (at && sscanf(at, "padded decode steps: %ld, quiet: %ld", n, q) != 2)
            *n = *q = -1;
        at = strstr(line, "K-split products: ");
        if (at && ks && sscanf(at, "K-split products: %ld, stacked: %ld", ks, ks + 1) != 2)
            ks[0] = ks[1] = -1;
        at = strstr(line, "rope + absorb (tensor cores) launches: ");
        if (at && ks && sscanf(at, "rope + absorb (tensor cores) launches: %ld", ks + 2) != 1)
            ks[2] = -1;
    }
    fclose(tf);
}

/* Check 10: nb sequences (1 or 2) decoded n_gen - 1 steps with
 * ASA_CUDA_QUIET_PAD=quiet and ASA_CUDA_GRAPHS=graphs; logits of every
 * step and sequence into out ([step][nb][V]); the padded steps and the
 * quiet ones the engine counted into n, q. */
static void quiet_decode(const eng_model *m, const char *quiet, const char *graphs,
                         const int32_t *seq, int np, int n_gen, int V, int nb, int P, int max_len,
                         float *out, long *n, long *q) {
    setenv("ASA_CUDA_QUIET_PAD", quiet, 1);
    setenv("ASA_CUDA_GRAPHS", graphs, 1);
    eng *e = mk_engine(m, ENG_BACKEND_CUDA, 4, P, max_len);
    unsetenv("ASA_CUDA_QUIET_PAD");
    unsetenv("ASA_CUDA_GRAPHS");
    etu_seq qs[2];
    const eng_sampling sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    open_copies(e, qs, nb, seq, np);
    for (int k = 0; k + 1 < n_gen; k++) {
        eng_seq_result r[2];
        decode_copies(e, qs, nb, &seq[np + k], &sp, out + (size_t)k * nb * V, nb, V, -1, r);
    }
    for (int i = 0; i < nb; i++)
        etu_seq_close(e, &qs[i]);
    destroy_counts(e, n, q, NULL);
}

static eng *mk_engine(const eng_model *m, eng_backend_kind be, int max_seqs, int T,
                      int max_len) {
    eng_options o;
    eng_options_default(&o);
    o.batch_invariant = invariant_engines;
    o.backend = be;
    o.max_seqs = max_seqs;
    o.max_batch_tokens = T;
    o.max_seq_len = max_len;
    o.threads = 2;
    int B = m->cfg.global.block_size;
    o.num_pages[KV_GLOBAL] = max_seqs * (max_len / B + 2) * 2;
    o.num_pages[KV_LOCAL] = max_seqs * (m->cfg.local.window / B + 3) + T / B + 2 + 64;
    eng *e = NULL;
    char msg[256] = "";
    asa_errbuf eb = {msg, sizeof msg};
    asa_err err = eng_create(m, &o, &e, &eb);
    if (err)
        fail_msg("eng_create(%s): %s (%s)", be == ENG_BACKEND_CUDA ? "cuda" : "cpu", msg,
                 asa_strerror(err));
    return e;
}

/* Check 9: n_gen sampled steps of two sequences after np - 1 prompt
 * tokens, with ASA_CUDA_GPU_SAMPLE=gpu; tokens [2][n_gen], logprobs
 * [2][n_gen][4] (the token's, then the top 3). */
static void sampled_run(const eng_model *m, const char *gpu, const int32_t *seq, int np,
                        int n_gen, int max_len, int32_t *toks, float *lps) {
    setenv("ASA_CUDA_GPU_SAMPLE", gpu, 1);
    invariant_engines = true;
    eng *e = mk_engine(m, ENG_BACKEND_CUDA, 4, max_len, max_len);
    invariant_engines = false;
    unsetenv("ASA_CUDA_GPU_SAMPLE");
    const int32_t bias_ids[3] = {1, 2, 1};
    const float bias_vals[3] = {2.5f, -INFINITY, 0.5f};
    const eng_sampling sp[2] = {
        {.temperature = 0.9f, .top_k = 40, .top_p = 0.92f, .min_p = 0.01f,
         .presence_penalty = 0.3f, .frequency_penalty = 0.2f, .repetition_penalty = 1.15f,
         .bias_ids = bias_ids, .bias_vals = bias_vals, .n_bias = 3, .seed = 42,
         .n_logprobs = 3},
        {.temperature = 1.3f, .top_p = 1.0f, .min_p = 0.0f, .repetition_penalty = 1.0f,
         .frequency_penalty = 0.5f, .seed = 7, .n_logprobs = 3},
    };
    etu_seq q[2];
    int32_t *out = malloc((size_t)2 * n_gen * sizeof(int32_t));
    for (int i = 0; i < 2; i++) {
        etu_seq_open(e, &q[i]);
        if (np > 1)
            etu_prefill(e, &q[i], seq, np - 1, np - 1, NULL);
    }
    for (int k = 0; k < n_gen; k++) {
        kv_copy cp[8];
        int ncp = 0;
        eng_seq_step st[2];
        eng_seq_result r[2];
        for (int i = 0; i < 2; i++) {
            int32_t *o = out + (size_t)i * n_gen;
            assert_int_equal(kv_seq_alloc(eng_kv_pool(e), q[i].kv, 1, cp, 8, &ncp), ASA_OK);
            st[i] = (eng_seq_step){.slot = q[i].slot, .tokens = k ? &o[k - 1] : &seq[np - 1],
                                   .n_tokens = 1, .pos0 = q[i].pos, .kv = q[i].kv,
                                   .sample = true, .sp = &sp[i], .prompt = seq,
                                   .n_prompt = np, .output = k ? o : NULL, .n_output = k};
        }
        eng_batch b = {.n_seqs = 2, .seqs = st, .copies = cp, .n_copies = ncp};
        assert_int_equal(eng_step(e, &b, r), ASA_OK);
        for (int i = 0; i < 2; i++) {
            kv_seq_commit(eng_kv_pool(e), q[i].kv, 1);
            q[i].pos++;
            out[(size_t)i * n_gen + k] = r[i].token;
            toks[(size_t)i * n_gen + k] = r[i].token;
            float *l = lps + ((size_t)i * n_gen + k) * 4;
            l[0] = r[i].logprob;
            for (int j = 0; j < 3; j++)
                l[1 + j] = r[i].top_logprobs[j];
        }
    }
    for (int i = 0; i < 2; i++)
        etu_seq_close(e, &q[i]);
    free(out);
    eng_destroy(e);
}

/* One step of one sequence: n tokens, logits of the last position into lg,
 * greedy token returned when sample. */
static int32_t step1(eng *e, etu_seq *s, const int32_t *tok, int n, bool sample, float *lg) {
    static const eng_sampling sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    kv_copy cp[8];
    int ncp = 0;
    assert_int_equal(kv_seq_alloc(eng_kv_pool(e), s->kv, n, cp, 8, &ncp), ASA_OK);
    eng_seq_step q = {.slot = s->slot, .tokens = tok, .n_tokens = n, .pos0 = s->pos,
                      .kv = s->kv, .sample = sample, .sp = &sp, .logits_out = lg};
    eng_batch b = {.n_seqs = 1, .seqs = &q, .copies = cp, .n_copies = ncp};
    eng_seq_result r;
    assert_int_equal(eng_step(e, &b, &r), ASA_OK);
    kv_seq_commit(eng_kv_pool(e), s->kv, n);
    s->pos += n;
    return r.token;
}

static void test_fixture(void **st) {
    const char *dir = *st;
    char msg[512] = "", path[4096];
    asa_errbuf eb = {msg, sizeof msg};
    eng_model *m = NULL;
    if (eng_model_load(dir, &m, &eb))
        fail_msg("%s: %s", dir, msg);
    const int V = m->cfg.vocab_size;
    snprintf(path, sizeof path, "%s/case.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        fail_msg("%s: %s", path, je.text);
    json_t *pr = json_object_get(j, "prompt"), *gr = json_object_get(j, "greedy");
    int np = (int)json_array_size(pr), ng = (int)json_array_size(gr);
    assert_true(np >= 1 && ng >= 1);
    int32_t *seq = malloc((size_t)(np + ng) * sizeof(int32_t));
    for (int i = 0; i < np; i++)
        seq[i] = (int32_t)json_integer_value(json_array_get(pr, (size_t)i));
    for (int i = 0; i < ng; i++)
        seq[np + i] = (int32_t)json_integer_value(json_array_get(gr, (size_t)i));
    json_decref(j);
    const int P = np + ng - 1;
    const int n_gen = ng < 64 ? ng : 64;
    const int max_len = P + 1;
    int na = load_ambiguous(dir, &m->cfg, P);
    n_amb += na;
    size_t bytes = (size_t)P * V * sizeof(float);
    float *cpu = malloc(bytes), *gpu = malloc(bytes), *lg = malloc(bytes);
    mcopy *mr = bf16_copy(m);
    eng *ec = mk_engine(&mr->m, ENG_BACKEND_CPU, 4, P, max_len);
    setenv("ASA_CUDA_PRECISE", "1", 1);
    eng *eg = mk_engine(m, ENG_BACKEND_CUDA, 4, P, max_len);
    unsetenv("ASA_CUDA_PRECISE");
    int at;

    /* 1. one-shot prefill */
    etu_seq s, sc;
    etu_seq_open(ec, &sc);
    etu_prefill(ec, &sc, seq, P, P, cpu);
    etu_seq_close(ec, &sc);
    etu_seq_open(eg, &s);
    etu_prefill(eg, &s, seq, P, P, gpu);
    etu_seq_close(eg, &s);
    {
        /* informative: against the CPU engine on the original weights */
        eng *e0 = mk_engine(m, ENG_BACKEND_CPU, 1, P, max_len);
        etu_seq_open(e0, &sc);
        etu_prefill(e0, &sc, seq, P, P, lg);
        etu_seq_close(e0, &sc);
        eng_destroy(e0);
        double w0 = worst_rows(gpu, lg, P, V, &at);
        print_message("%s: vs the CPU engine on the checkpoint's own weights: worst %.3g "
                      "(position %d)\n", dir, w0, at);
        w_f32 = fmax(w_f32, w0);
    }
    double w1 = worst_rows(gpu, cpu, P, V, &at);
    print_message("%s: one-shot prefill of %d positions (%d ambiguous): worst relative L2 %.3g "
                  "(position %d)\n", dir, P, na, w1, at);
    if (!(w1 < TOL))
        fail_msg("%s: prefill error %g at position %d", dir, w1, at);
    w_prefill = fmax(w_prefill, w1);

    /* 2. decode steps fed the fixture's tokens */
    float *rowc = malloc((size_t)V * sizeof(float)), *rowg = malloc((size_t)V * sizeof(float));
    etu_seq_open(ec, &sc);
    etu_seq_open(eg, &s);
    int checked = 0, dis = 0, first_dis = -1;
    double wd = 0;
    for (int k = 0; k < n_gen; k++) {
        int n = k == 0 ? np : 1, t = np - 1 + k;
        const int32_t *in = k == 0 ? seq : &seq[np + k - 1];
        int32_t tg = step1(eg, &s, in, n, true, rowg);
        step1(ec, &sc, in, n, false, rowc);
        float t1 = -INFINITY, t2 = -INFINITY, mx = 0;
        int a1 = 0;
        for (int v = 0; v < V; v++) {
            if (rowc[v] > t1) {
                t2 = t1;
                t1 = rowc[v];
                a1 = v;
            } else if (rowc[v] > t2) {
                t2 = rowc[v];
            }
            mx = fabsf(rowc[v]) > mx ? fabsf(rowc[v]) : mx;
        }
        double r = rel_l2(rowg, rowc, V);
        if (amb[t]) {
            w_amb = fmax(w_amb, r);
            continue;
        }
        if (t1 - t2 > 1e-3f * mx) {
            checked++;
            if (tg != a1 && dis++ == 0)
                first_dis = k;
        }
        if (r > wd)
            wd = r;
    }
    etu_seq_close(ec, &sc);
    etu_seq_close(eg, &s);
    print_message("%s: %d decode steps: greedy identity checked at %d, %d disagreements, worst "
                  "step error %.3g\n", dir, n_gen, checked, dis, wd);
    if (dis)
        fail_msg("%s: greedy token differs at step %d (margin above threshold)", dir, first_dis);
    if (!(wd < TOL))
        fail_msg("%s: decode logits error %g", dir, wd);
    w_decode = fmax(w_decode, wd);
    n_checked += checked;
    n_steps += n_gen;
    n_disagree += dis;

    /* 3. chunked prefill */
    const int chunks[] = {16, 37};
    for (int i = 0; i < 2; i++) {
        etu_seq_open(eg, &s);
        etu_prefill(eg, &s, seq, P, chunks[i], lg);
        etu_seq_close(eg, &s);
        int at2;
        double w = worst_rows(lg, cpu, P, V, &at), ws = worst_rows(lg, gpu, P, V, &at2);
        print_message("%s: chunks of %d: worst vs CPU %.3g (position %d), vs CUDA one-shot "
                      "%.3g\n", dir, chunks[i], w, at, ws);
        if (!(w < TOL))
            fail_msg("%s: chunk %d error %g at position %d", dir, chunks[i], w, at);
        w_chunk = fmax(w_chunk, w);
        w_chunk_self = fmax(w_chunk_self, ws);
    }

    /* 4. batch of four */
    float *out0 = malloc(bytes);
    batch4(eg, seq, P, V, out0);
    double wb = worst_rows(out0, cpu, P, V, &at);
    print_message("%s: in a batch of four: worst vs CPU %.3g (position %d)\n", dir, wb, at);
    if (!(wb < TOL))
        fail_msg("%s: batched error %g at position %d", dir, wb, at);
    w_batch = fmax(w_batch, wb);
    assert_int_equal(kv_pool_check(eng_kv_pool(eg)), ASA_OK);
    if (m->cfg.n_global_layers > 0 && mr->nbufs == 0)
        check_selection(eg, ec, dir, m, seq, P);
    else if (m->cfg.n_global_layers > 0)
        print_message("%s: block sets not compared (f32 matrices: the reference's gaps are "
                      "not the bf16 model's)\n", dir);
    eng_destroy(eg);

    /* 5. default mode */
    eng *ed = mk_engine(m, ENG_BACKEND_CUDA, 1, P, max_len);
    const int dch[2] = {P, 16};
    for (int i = 0; i < 2; i++) {
        etu_seq_open(ed, &s);
        etu_prefill(ed, &s, seq, P, dch[i], lg);
        etu_seq_close(ed, &s);
        double w = worst_rows(lg, cpu, P, V, &at);
        print_message("%s: default mode, chunks of %d: worst vs CPU %.3g (position %d)\n", dir,
                      dch[i], w, at);
        if (!(w < DEF_TOL))
            fail_msg("%s: default mode chunk %d error %g at position %d", dir, dch[i], w, at);
        w_default = fmax(w_default, w);
    }
    eng_destroy(ed);

    /* 7. batch-invariant mode: bitwise equal rows one-shot / chunked /
     * batched / decode */
    invariant_engines = true;
    eng *ei = mk_engine(m, ENG_BACKEND_CUDA, 4, P, max_len);
    invariant_engines = false;
    etu_seq_open(ei, &s);
    etu_prefill(ei, &s, seq, P, P, gpu);
    etu_seq_close(ei, &s);
    double wi = worst_rows(gpu, cpu, P, V, &at);
    print_message("%s: batch-invariant mode: worst vs CPU %.3g (position %d)\n", dir, wi, at);
    if (!(wi < DEF_TOL))
        fail_msg("%s: batch-invariant mode error %g at position %d", dir, wi, at);
    const int ich[3] = {1, 16, 37};
    for (int i = 0; i < 3; i++) {
        if (ich[i] == 1 && P > 128)
            continue; /* one token per step: slow, and decode is covered below */
        etu_seq_open(ei, &s);
        etu_prefill(ei, &s, seq, P, ich[i], lg);
        etu_seq_close(ei, &s);
        if (memcmp(lg, gpu, bytes))
            fail_msg("%s: batch-invariant mode: chunks of %d differ from one-shot", dir, ich[i]);
    }
    batch4(ei, seq, P, V, lg);
    if (memcmp(lg, gpu, bytes))
        fail_msg("%s: batch-invariant mode: batch of four differs from alone", dir);
    /* decode: even steps return logits (bitwise = prefill rows), odd steps
     * only a greedy token with 5 logprobs (sampled on the device): equal to
     * eng_sample on the prefill row */
    etu_seq_open(ei, &s);
    etu_prefill(ei, &s, seq, np, np, NULL);
    float *samp = malloc((size_t)2 * V * sizeof(float));
    const eng_sampling sp5 = {.temperature = 0, .top_p = 1, .repetition_penalty = 1,
                              .n_logprobs = 5};
    for (int k = 0; k + 1 < n_gen; k++) {
        const float *want = gpu + (size_t)(np + k) * V;
        if (k % 2 == 0) {
            step1(ei, &s, &seq[np + k], 1, false, rowg);
            if (memcmp(rowg, want, (size_t)V * 4))
                fail_msg("%s: batch-invariant mode: decode step %d differs from prefill", dir, k);
            continue;
        }
        kv_copy cp[8];
        int ncp = 0;
        assert_int_equal(kv_seq_alloc(eng_kv_pool(ei), s.kv, 1, cp, 8, &ncp), ASA_OK);
        eng_seq_step q = {.slot = s.slot, .tokens = &seq[np + k], .n_tokens = 1, .pos0 = s.pos,
                          .kv = s.kv, .sample = true, .sp = &sp5};
        eng_batch b = {.n_seqs = 1, .seqs = &q, .copies = cp, .n_copies = ncp};
        eng_seq_result r, rw;
        assert_int_equal(eng_step(ei, &b, &r), ASA_OK);
        kv_seq_commit(eng_kv_pool(ei), s.kv, 1);
        s.pos++;
        assert_int_equal(eng_sample(want, V, &sp5, NULL, 0, NULL, 0, samp, &rw), ASA_OK);
        bool same = r.token == rw.token && r.n_top == rw.n_top &&
                    fabsf(r.logprob - rw.logprob) <= 1e-4f;
        for (int j = 0; same && j < r.n_top; j++)
            same = r.top_ids[j] == rw.top_ids[j] &&
                   fabsf(r.top_logprobs[j] - rw.top_logprobs[j]) <= 1e-4f;
        if (!same)
            fail_msg("%s: device greedy at step %d: token %d (%g) vs %d (%g) on the host", dir,
                     k, r.token, r.logprob, rw.token, rw.logprob);
        n_devgreedy++;
    }
    free(samp);
    etu_seq_close(ei, &s);
    eng_destroy(ei);
    n_inv++;

    /* 9. seeded sampling on the device and on the host: the same tokens */
    {
        const int ns = n_gen < 32 ? n_gen : 32;
        int32_t *th = malloc((size_t)4 * ns * sizeof(int32_t)), *td = th + 2 * ns;
        float *lh = malloc((size_t)16 * ns * sizeof(float)), *ld = lh + 8 * ns;
        sampled_run(m, "0", seq, np, ns, max_len, th, lh);
        sampled_run(m, "1", seq, np, ns, max_len, td, ld);
        for (int i = 0; i < 2 * ns; i++) {
            if (th[i] != td[i])
                fail_msg("%s: sampled sequence %d step %d: device %d, host %d", dir, i / ns,
                         i % ns, td[i], th[i]);
            for (int j = 0; j < 4; j++) {
                const float a = ld[i * 4 + j], h = lh[i * 4 + j];
                if (a != h && !(fabsf(a - h) <= fmaxf(1.5f * fabsf(h) * FLT_EPSILON, 1e-15f)))
                    fail_msg("%s: sampled step %d: logprob %d: device %.9g, host %.9g", dir, i,
                             j, a, h);
            }
        }
        n_sampled += 2 * ns;
        free(th);
        free(lh);
    }

    /* 8. decode batches as CUDA graphs (ASA_CUDA_GRAPHS: padded batches),
     * then the same padded steps without capture */
    for (int gm = 0; gm < 2; gm++) {
        setenv("ASA_CUDA_GRAPHS", gm == 0 ? "1" : "eager", 1);
        eng *eh = mk_engine(m, ENG_BACKEND_CUDA, 4, P, max_len);
        unsetenv("ASA_CUDA_GRAPHS");
        double wg = graph_decode(eh, dir, seq, np, n_gen, V, cpu);
        print_message("%s: %s decode, 3 sequences: worst vs CPU %.3g\n", dir,
                      gm == 0 ? "graph" : "padded eager", wg);
        w_graph = fmax(w_graph, wg);
        eng_destroy(eh);
    }

    /* 10. quiet decode graphs against graphs with every launch; padded
     * eager steps too (the CPU emulation has no graphs: the engine
     * switches them off at the first capture) */
    for (int run = 0; run < 4 && n_gen > 1; run++) {
        const int nb = 1 + run % 2;
        const char *gm = run < 2 ? "1" : "eager";
        const size_t nv = (size_t)(n_gen - 1) * nb * V;
        float *lq = malloc(nv * sizeof(float)), *lf = malloc(nv * sizeof(float));
        assert_non_null(lq);
        assert_non_null(lf);
        for (size_t i = 0; i < nv; i++) /* poison: every row must be written */
            lq[i] = lf[i] = NAN;
        long nq, nqp, nf, nfp;
        quiet_decode(m, "4", gm, seq, np, n_gen, V, nb, P, max_len, lq, &nqp, &nq);
        quiet_decode(m, "0", gm, seq, np, n_gen, V, nb, P, max_len, lf, &nfp, &nf);
        if (nf != 0)
            fail_msg("%s: ASA_CUDA_QUIET_PAD=0: %ld quiet steps counted", dir, nf);
        /* quiet: the steps at positions that are not anchors and do not
         * complete a global block */
        const int share = m->cfg.global.selection_share, B = m->cfg.global.block_size;
        long want = 0;
        for (int k = 0; k + 1 < n_gen; k++) {
            const int p = np + k;
            want += p % share != 0 && !(m->cfg.n_global_layers > 0 && (p + 1) % B == 0);
        }
        if (nqp == n_gen - 1 && nq != want) /* else graphs went off (CPU emulation) */
            fail_msg("%s: batch %d, ASA_CUDA_GRAPHS=%s: %ld quiet steps counted, %ld expected",
                     dir, nb, gm, nq, want);
        if ((nqp != n_gen - 1 || nfp != n_gen - 1) && !strcmp(gm, "eager"))
            fail_msg("%s: batch %d, padded eager: %ld / %ld padded steps of %d", dir, nb, nqp,
                     nfp, n_gen - 1);
        if (nqp != n_gen - 1)
            print_message("%s: batch %d: graphs went off after %ld steps\n", dir, nb, nqp);
        else if (!strcmp(gm, "1"))
            n_quiet_graph += nq;
        for (size_t i = 0; i < nv; i++)
            if (memcmp(&lq[i], &lf[i], sizeof(float)) != 0 || isnan(lq[i])) {
                fail_msg("%s: batch %d, ASA_CUDA_GRAPHS=%s: quiet steps: step %zu row %zu logit "
                         "%zu: %.9g vs %.9g", dir, nb, gm, i / V / nb, i / V % nb, i % V, lq[i],
                         lf[i]);
            }
        for (int k = 0; k + 1 < n_gen; k++) {
            const int t = np + k;
            for (int i = 0; i < nb && !amb[t]; i++) {
                const double x = rel_l2(lq + ((size_t)k * nb + i) * V, cpu + (size_t)t * V, V);
                if (!(x < DEF_TOL))
                    fail_msg("%s: quiet graph decode, batch %d step %d: error %g", dir, nb, k, x);
                w_quiet = fmax(w_quiet, x);
            }
        }
        n_quiet += nq;
        free(lq);
        free(lf);
    }
    eng_destroy(ec);
    free_copy(mr);
    eng_model_destroy(m);
    free(rowc);
    free(rowg);
    free(out0);
    free(amb);
    amb = NULL;
    free(seq);
    free(cpu);
    free(gpu);
    free(lg);
}

/* A wide random model with the asa-1.3b attention shapes (one local latent
 * group of 32 heads, dg 192; two global groups of 16 heads, dg 96; rope
 * 32; small d, F, V, two layers), so that decode runs the kernel of
 * independent warps (attn_dec_kernel, from one token a step on such
 * groups) inside the engine, with its key splits and merges: eight
 * sequences of 40..299 prompt tokens (windows full, compressed blocks and
 * selection active), then batches of 1, 3 and 8 decoding 4 steps each,
 * every step's logits against the CPU engine's (relative L2), both fed
 * the CPU engine's greedy tokens.  Once with the default decode, once
 * with ASA_CUDA_MMA_DEC=0 (the FFMA attention) for comparison, and once
 * with absorb / expand on tensor cores at every step (prefills and
 * decode; GEMV rows 0, so decode's o_proj reads the parts that expand
 * writes).  The second sequence's prefill runs in chunks of 24 tokens on
 * the CUDA engine; the default run's prefills must run products as two
 * K-halves, among them stacked hi + lo ones (the counts the engine logs at
 * destroy). */
static double w_wide, w_wide_ffma, w_wide_heads;
static int n_wide;
static long n_wide_ksplit, n_wide_ksplit4; /* products run as two K-halves, stacked ones */

/* env: NULL or name, value, name, value, ..., NULL: the settings while the
 * CUDA engine is created; what: how a failure names the run */
static double wide_run(const eng_model *m, const char *const *env, const char *what) {
    for (int i = 0; env && env[i]; i += 2)
        setenv(env[i], env[i + 1], 1);
    eng *eg = mk_engine(m, ENG_BACKEND_CUDA, 8, 512, 1024);
    for (int i = 0; env && env[i]; i += 2)
        unsetenv(env[i]);
    eng *ec = mk_engine(m, ENG_BACKEND_CPU, 8, 512, 1024);
    const int V = m->cfg.vocab_size, NS = 8;
    etu_seq qg[8], qc[8];
    int32_t prompt[300], tok[8];
    for (int i = 0; i < NS; i++) {
        const int np = 40 + 37 * i;
        etu_tokens(prompt, np, V, 100 + (uint32_t)i);
        etu_seq_open(eg, &qg[i]);
        etu_seq_open(ec, &qc[i]);
        /* sequence 1 (77 tokens) in chunks of 24 on the CUDA engine: steps
         * of 24 rows, whose products stack hi + lo */
        etu_prefill(eg, &qg[i], prompt, np, i == 1 ? 24 : np, NULL);
        etu_prefill(ec, &qc[i], prompt, np, np, NULL);
        tok[i] = prompt[np - 1] ^ 1;
    }
    float *lg = malloc((size_t)NS * V * sizeof(float)), *lc = malloc((size_t)NS * V * sizeof(float));
    double *ref = malloc((size_t)V * sizeof(double));
    assert_non_null(lg);
    assert_non_null(lc);
    assert_non_null(ref);
    static const eng_sampling sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    double worst = 0.0;
    const int batches[3] = {1, 3, 8};
    for (int bi = 0; bi < 3; bi++)
        for (int k = 0; k < 4; k++) {
            const int nb = batches[bi];
            for (int side = 0; side < 2; side++) {
                eng *e = side ? ec : eg;
                etu_seq *q = side ? qc : qg;
                kv_copy cp[64];
                int ncp = 0;
                eng_seq_step st[8];
                eng_seq_result r[8];
                for (int i = 0; i < nb; i++) {
                    int nc = 0;
                    assert_int_equal(kv_seq_alloc(eng_kv_pool(e), q[i].kv, 1, cp + ncp, 8, &nc),
                                     ASA_OK);
                    ncp += nc;
                    st[i] = (eng_seq_step){.slot = q[i].slot, .tokens = &tok[i], .n_tokens = 1,
                                           .pos0 = q[i].pos, .kv = q[i].kv, .sp = &sp,
                                           .logits_out = (side ? lc : lg) + (size_t)i * V};
                }
                eng_batch b = {.n_seqs = nb, .seqs = st, .copies = cp, .n_copies = ncp};
                assert_int_equal(eng_step(e, &b, r), ASA_OK);
                for (int i = 0; i < nb; i++) {
                    kv_seq_commit(eng_kv_pool(e), q[i].kv, 1);
                    q[i].pos++;
                }
            }
            for (int i = 0; i < nb; i++) {
                int best = 0;
                for (int v = 0; v < V; v++) {
                    ref[v] = lc[(size_t)i * V + v];
                    if (ref[v] > ref[best])
                        best = v;
                }
                const double w = etu_rel_l2(lg + (size_t)i * V, ref, V);
                if (w > 2e-2)
                    fail_msg("wide model (%s): batch %d step %d sequence %d: relative L2 %.4g "
                             "vs the CPU engine", what, nb, k, i, w);
                if (w > worst)
                    worst = w;
                tok[i] = best;
                n_wide++;
            }
        }
    for (int i = 0; i < NS; i++) {
        etu_seq_close(eg, &qg[i]);
        etu_seq_close(ec, &qc[i]);
    }
    free(lg);
    free(lc);
    free(ref);
    long ng, nq, ks[3];
    destroy_counts(eg, &ng, &nq, ks);
    /* the prefills of 40 and 114 tokens run o_proj and down as two
     * K-halves (cu__ksplit; by default up to 128 rows), and the 24-token
     * chunks of the 77-token one as stacked hi + lo products in two
     * K-halves, unless the environment turns that off */
    const bool ks_on = !getenv("ASA_CUDA_KSPLIT_MAX") && !getenv("ASA_CUDA_PAIR") &&
                       !getenv("ASA_CUDA_PRECISE") && !getenv("ASA_CUDA_SMALL_ROWS") &&
                       !getenv("ASA_CUDA_RING_ROWS") && !getenv("ASA_CUDA_WG_ROWS");
    if (!env && ks_on && (ks[0] <= 0 || ks[1] <= 0))
        fail_msg("wide model (%s): products as two K-halves %ld, of them stacked %ld", what,
                 ks[0], ks[1]);
    /* the 24- and 40-token steps: rope + absorb on tensor cores in one
     * launch (cb_rope_absorb_mma_cuda; q|kv_a|g's product comes in two
     * halves there, which the launch adds) */
    const bool rm_on = !getenv("ASA_CUDA_ROPE_MMA") && !getenv("ASA_CUDA_FUSE") &&
                       !getenv("ASA_CUDA_HEADS_MMA_T") && !getenv("ASA_CUDA_HEADS_MMA_MAX") &&
                       !getenv("ASA_CUDA_PRECISE") && !getenv("ASA_CUDA_XATTN_MIN_T");
    if (!env && rm_on && ks[2] <= 0)
        fail_msg("wide model (%s): rope + absorb (tensor cores) launches %ld", what, ks[2]);
    n_wide_ksplit += ks[0] > 0 ? ks[0] : 0;
    n_wide_ksplit4 += ks[1] > 0 ? ks[1] : 0;
    eng_destroy(ec);
    return worst;
}

static void test_wide_decode(void **st) {
    (void)st;
    etu_shape s = {.V = 512, .d = 256, .F = 512, .L = 2, .H = 32, .dh = 64, .dv = 64,
                   .dR = 32, .l_G = 1, .l_dg = 192, .window = 128, .g_G = 2, .g_dg = 96,
                   .B = 16, .top_n = 4, .init_b = 1, .local_b = 2, .share = 4,
                   .max_pos = 2048, .tied = false, .bf16 = true, .seed = 13};
    char *dir = etu_write_model(&s);
    assert_non_null(dir);
    char msg[256] = "";
    asa_errbuf eb = {msg, sizeof msg};
    eng_model *m = NULL;
    if (eng_model_load(dir, &m, &eb))
        fail_msg("wide model: %s", msg);
    static const char *const ffma[] = {"ASA_CUDA_MMA_DEC", "0", NULL};
    static const char *const heads[] = {"ASA_CUDA_HEADS_MMA_T", "1", "ASA_CUDA_HEADS_MMA_MAX",
                                        "4096", "ASA_CUDA_GEMV_ROWS", "0", NULL};
    w_wide = wide_run(m, NULL, "default");
    w_wide_ffma = wide_run(m, ffma, "ASA_CUDA_MMA_DEC=0");
    w_wide_heads = wide_run(m, heads, "absorb / expand on tensor cores");
    eng_model_destroy(m);
    etu_rmdir(dir);
}

int main(void) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
        printf("test_cuda_engine: no CUDA device: skipped\n");
        return 77;
    }
    const char *root = ASA_FIXTURES_DIR;
    n_fix = etu_list_fixtures(root, fix_dirs, MAX_FIX);
    if (n_fix == 0) {
        printf("test_cuda_engine: no fixtures under %s: skipped\n", root);
        return 77;
    }
    struct CMUnitTest tests[MAX_FIX + 1];
    for (int i = 0; i < n_fix; i++) {
        const char *base = strrchr(fix_dirs[i], '/');
        tests[i] = (struct CMUnitTest){base ? base + 1 : fix_dirs[i], test_fixture, NULL, NULL,
                                       fix_dirs[i]};
    }
    tests[n_fix] = (struct CMUnitTest){"wide_decode", test_wide_decode, NULL, NULL, NULL};
    int rc = _cmocka_run_group_tests("cuda_engine", tests, (size_t)n_fix + 1, NULL, NULL);
    printf("test_cuda_engine: %s: %d fixtures; worst relative L2 vs CPU (precise mode): "
           "prefill %.3g, decode %.3g, chunked %.3g (vs one-shot %.3g), batched %.3g; default "
           "mode %.3g; vs f32 checkpoint weights %.3g; greedy identity checked at %d of %d "
           "steps, %d disagreements; %d ambiguous positions (worst %.3g); %d block sets equal "
           "to the CPU engine's (%d near-ties skipped); batch-invariant mode bitwise on %d; "
           "%d device greedy samples equal to eng_sample's; %d seeded samples equal with "
           "ASA_CUDA_GPU_SAMPLE=0 and 1; graph decode %.3g; quiet steps %ld, %ld of them in "
           "graphs (bitwise equal, %.3g); wide model decode %.3g (FFMA attention %.3g, "
           "absorb / expand on tensor cores %.3g) over %d rows, %ld products as two K-halves "
           "(%ld stacked)\n",
           rc ? "FAIL" : "PASS", n_fix, w_prefill, w_decode, w_chunk, w_chunk_self, w_batch,
           w_default, w_f32, n_checked, n_steps, n_disagree, n_amb, w_amb, n_sets,
           n_sets_skipped, n_inv, n_devgreedy, n_sampled, w_graph, n_quiet, n_quiet_graph,
           w_quiet, w_wide, w_wide_ffma, w_wide_heads, n_wide, n_wide_ksplit, n_wide_ksplit4);
    for (int i = 0; i < n_fix; i++)
        free(fix_dirs[i]);
    return rc;
}
