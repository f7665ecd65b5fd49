/*
 * The bundled trained model (models/asa-tiny, bf16) on the CUDA engine and
 * on the CPU engine: a few fixed English prompts (encoded with the model's
 * tokenizer.json), 64 greedy steps each.  Both engines are fed the CPU
 * engine's greedy token at every step (teacher forcing: after a
 * disagreement both go on from the CPU's token).  Wherever the CPU
 * engine's top1-top2 margin exceeds 1e-3 of the row's max |logit|
 * (ASA-SPEC 6), the CUDA engine's argmax must equal the CPU engine's.
 * Prints, per prompt and in total, how many steps were checked, the
 * disagreements (none allowed), the worst relative L2 distance between the
 * two engines' rows (for information) and the CPU continuation's text.
 *
 *   test_cuda_model [MODEL_DIR]
 * MODEL_DIR defaults to $ASA_MODEL_DIR, else ASA_SOURCE_DIR/models/asa-tiny.
 * Exits 77 (skipped) without a CUDA device or without the model.
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cuda_runtime_api.h>

#include "eng.h"
#include "eng_test_util.h"
#include "model.h"
#include "tok.h"

#define N_GEN 64
#define MARGIN 1e-3

static const char *const prompts[] = {
    "Once upon a time, there was a little girl named Lily. She",
    "The sun was shining and the birds were singing. Tom went to the park with his dog, and",
    "One day, a big bear found a red ball in the forest.",
    "Mom said, \"Please clean your room before dinner.\" Ben",
};
#define N_PROMPTS (int)(sizeof prompts / sizeof prompts[0])

static char model_dir[4096];

static eng *mk_engine(const eng_model *m, eng_backend_kind be, int T, int max_len) {
    eng_options o;
    eng_options_default(&o);
    o.backend = be;
    o.max_seqs = 2;
    o.max_batch_tokens = T;
    o.max_seq_len = max_len;
    o.threads = 2;
    const int B = m->cfg.global.block_size;
    o.num_pages[KV_GLOBAL] = 2 * (max_len / B + 2) + 8;
    o.num_pages[KV_LOCAL] = 2 * (m->cfg.local.window / B + 3) + T / B + 2 + 16;
    eng *e = NULL;
    char msg[256] = "";
    asa_errbuf eb = {msg, sizeof msg};
    asa_err err = eng_create(m, &o, &e, &eb);
    if (err)
        fail_msg("eng_create(%s): %s (%s)", be == ENG_BACKEND_CUDA ? "cuda" : "cpu", msg,
                 asa_strerror(err));
    return e;
}

/* argmax, top1 - top2 and max |logit| of row[V] */
static int top2(const float *row, int V, double *margin, double *maxabs) {
    int i1 = 0;
    double t1 = -INFINITY, t2 = -INFINITY, ma = 0;
    for (int i = 0; i < V; i++) {
        double v = row[i];
        if (fabs(v) > ma)
            ma = fabs(v);
        if (v > t1) {
            t2 = t1;
            t1 = v;
            i1 = i;
        } else if (v > t2) {
            t2 = v;
        }
    }
    *margin = t1 - t2;
    *maxabs = ma;
    return i1;
}

static double rel_l2(const float *a, const float *ref, int V) {
    double num = 0, den = 0;
    for (int i = 0; i < V; i++) {
        num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static void test_model(void **st) {
    (void)st;
    char msg[512] = "", path[4200];
    asa_errbuf eb = {msg, sizeof msg};
    eng_model *m = NULL;
    if (eng_model_load(model_dir, &m, &eb))
        fail_msg("%s: %s", model_dir, msg);
    tok_tokenizer *tk = NULL;
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    if (tok_load(path, &tk, &eb))
        fail_msg("%s: %s", path, msg);
    const int V = m->cfg.vocab_size;
    int maxp = 0;
    tok_ids ids[N_PROMPTS];
    memset(ids, 0, sizeof ids);
    for (int p = 0; p < N_PROMPTS; p++) {
        if (tok_encode(tk, prompts[p], strlen(prompts[p]), true, &ids[p], &eb))
            fail_msg("tok_encode: %s", msg);
        assert_true(ids[p].len >= 1);
        if ((int)ids[p].len > maxp)
            maxp = (int)ids[p].len;
    }
    const int max_len = maxp + N_GEN + 1;
    eng *ec = mk_engine(m, ENG_BACKEND_CPU, maxp, max_len);
    eng *eg = mk_engine(m, ENG_BACKEND_CUDA, maxp, max_len);
    float *lc = malloc((size_t)maxp * V * sizeof(float));
    float *lg = malloc((size_t)maxp * V * sizeof(float));
    int32_t *gen = malloc((size_t)N_GEN * sizeof(int32_t));
    assert_non_null(lc);
    assert_non_null(lg);
    assert_non_null(gen);
    int checked = 0, steps = 0, disagree = 0;
    double worst = 0;
    for (int p = 0; p < N_PROMPTS; p++) {
        const int n = (int)ids[p].len;
        etu_seq sc, sg;
        etu_seq_open(ec, &sc);
        etu_seq_open(eg, &sg);
        etu_prefill(ec, &sc, ids[p].ids, n, n, lc);
        etu_prefill(eg, &sg, ids[p].ids, n, n, lg);
        const float *rc = lc + (size_t)(n - 1) * V, *rg = lg + (size_t)(n - 1) * V;
        int pc = 0, pd = 0;
        double pw = 0;
        for (int k = 0; k < N_GEN; k++) {
            double mc, ac, mg, ag;
            const int tc = top2(rc, V, &mc, &ac), tg = top2(rg, V, &mg, &ag);
            const double d = rel_l2(rg, rc, V);
            if (d > pw)
                pw = d;
            steps++;
            if (mc > MARGIN * ac) {
                pc++;
                if (tg != tc) {
                    pd++;
                    printf("test_cuda_model: prompt %d step %d: cuda %d, cpu %d (cpu margin "
                           "%.3g of max |logit| %.3g; rel L2 %.3g)\n", p, k, tg, tc, mc, ac, d);
                }
            }
            gen[k] = tc; /* the CPU token feeds both engines */
            if (k == N_GEN - 1)
                break;
            etu_prefill(ec, &sc, &gen[k], 1, 1, lc);
            etu_prefill(eg, &sg, &gen[k], 1, 1, lg);
            rc = lc;
            rg = lg;
        }
        tok_str txt = {0};
        if (tok_decode(tk, gen, N_GEN, true, &txt) == ASA_OK) {
            for (size_t i = 0; i < txt.len; i++)
                if (txt.data[i] == '\n')
                    txt.data[i] = ' ';
            printf("test_cuda_model: prompt %d (%d tokens): %d of %d steps checked, %d "
                   "disagreements, worst rel L2 %.3g; cpu continues: \"%.200s\"\n", p, n, pc,
                   N_GEN, pd, pw, txt.data ? txt.data : "");
        }
        tok_str_free(&txt);
        checked += pc;
        disagree += pd;
        if (pw > worst)
            worst = pw;
        etu_seq_close(ec, &sc);
        etu_seq_close(eg, &sg);
    }
    printf("test_cuda_model: %s: %d prompts, greedy identity checked at %d of %d steps, %d "
           "disagreements; worst relative L2 of a row %.3g (information)\n",
           disagree ? "FAIL" : "PASS", N_PROMPTS, checked, steps, disagree, worst);
    assert_true(checked > 0);
    assert_int_equal(disagree, 0);
    for (int p = 0; p < N_PROMPTS; p++)
        tok_ids_free(&ids[p]);
    free(gen);
    free(lg);
    free(lc);
    eng_destroy(eg);
    eng_destroy(ec);
    tok_destroy(tk);
    eng_model_destroy(m);
}

int main(int argc, char **argv) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
        printf("test_cuda_model: no CUDA device: skipped\n");
        return 77;
    }
    const char *env = getenv("ASA_MODEL_DIR");
    if (argc > 1)
        snprintf(model_dir, sizeof model_dir, "%s", argv[1]);
    else if (env && env[0])
        snprintf(model_dir, sizeof model_dir, "%s", env);
    else
        snprintf(model_dir, sizeof model_dir, "%s/models/asa-tiny", ASA_SOURCE_DIR);
    char cfg[4200];
    struct stat sb;
    snprintf(cfg, sizeof cfg, "%s/config.json", model_dir);
    if (stat(cfg, &sb) != 0) {
        printf("test_cuda_model: no model at %s: skipped\n", model_dir);
        return 77;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_model)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
