/*
 * bench_engine_cpu - prefill and decode throughput of the CPU engine on a
 * random model of the asa-tiny shape (ASA-SPEC 5: d=256, 8 layers, F=704,
 * vocab 8192, bf16 weights).  Not a test; run by hand:
 *   bench_engine_cpu [prompt_tokens=512] [decode_tokens=128] [threads...]
 * ASA_BENCH_F32=1 writes f32 weights instead of bf16; ASA_BENCH_SEQS=n
 * decodes n sequences per step (each prefilled in its own step).  Prints wall-clock
 * rates and, for comparison on a busy machine, the process CPU seconds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "eng.h"
#include "eng_test_util.h"

int main(int argc, char **argv) {
    int np = argc > 1 ? atoi(argv[1]) : 512, nd = argc > 2 ? atoi(argv[2]) : 128;
    etu_shape sh;
    etu_shape_tiny(&sh, 8192);
    if (getenv("ASA_BENCH_F32"))
        sh.bf16 = false;
    char *dir = etu_write_model(&sh);
    eng_model *m = NULL;
    if (!dir || eng_model_load(dir, &m, NULL) != ASA_OK) {
        fprintf(stderr, "cannot write/load the model\n");
        return 1;
    }
    int32_t *tok = malloc((size_t)(np + nd) * sizeof *tok);
    etu_tokens(tok, np + nd, sh.V, 1);
    int nthr[8] = {1, 2}, nt = 2;
    if (argc > 3) {
        nt = 0;
        for (int i = 3; i < argc && nt < 8; i++)
            nthr[nt++] = atoi(argv[i]);
    }
    int ns = getenv("ASA_BENCH_SEQS") ? atoi(getenv("ASA_BENCH_SEQS")) : 1;
    if (ns < 1 || ns > 64)
        ns = 1;
    for (int ti = 0; ti < nt; ti++) {
        eng *e = etu_engine(m, ns, np, np + nd, nthr[ti]);
        etu_seq s[64];
        eng_seq_step q[64];
        eng_seq_result r[64];
        kv_copy cp[4];
        int ncp;
        eng_sampling sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
        for (int i = 0; i < ns; i++)
            etu_seq_open(e, &s[i]);
        /* prefill: one sequence per step */
        double t0 = asa_now(), c0 = (double)clock() / CLOCKS_PER_SEC;
        for (int i = 0; i < ns; i++) {
            ncp = 0;
            kv_seq_alloc(eng_kv_pool(e), s[i].kv, np, cp, 4, &ncp);
            q[0] = (eng_seq_step){.slot = s[i].slot, .tokens = tok, .n_tokens = np, .pos0 = 0,
                                  .kv = s[i].kv, .sample = true, .sp = &sp};
            eng_batch b = {.n_seqs = 1, .seqs = q};
            if (eng_step(e, &b, r) != ASA_OK)
                return 1;
            kv_seq_commit(eng_kv_pool(e), s[i].kv, np);
        }
        double t1 = asa_now(), c1 = (double)clock() / CLOCKS_PER_SEC;
        /* decode: every sequence in every step */
        for (int k = 0; k < nd; k++) {
            for (int i = 0; i < ns; i++) {
                ncp = 0;
                kv_seq_alloc(eng_kv_pool(e), s[i].kv, 1, cp, 4, &ncp);
                q[i] = (eng_seq_step){.slot = s[i].slot, .tokens = &tok[np + k], .n_tokens = 1,
                                      .pos0 = np + k, .kv = s[i].kv, .sample = true, .sp = &sp};
            }
            eng_batch b = {.n_seqs = ns, .seqs = q};
            if (eng_step(e, &b, r) != ASA_OK)
                return 1;
            for (int i = 0; i < ns; i++)
                kv_seq_commit(eng_kv_pool(e), s[i].kv, 1);
        }
        double t2 = asa_now(), c2 = (double)clock() / CLOCKS_PER_SEC;
        printf("%s threads %d, %d seq: prefill %d tokens %.1f tokens/s (cpu %.3f s); decode %d "
               "steps %.1f tokens/s (cpu %.3f s) (context %d..%d)\n",
               sh.bf16 ? "bf16" : "f32", nthr[ti], ns, np * ns, np * ns / (t1 - t0), c1 - c0,
               nd, (double)nd * ns / (t2 - t1), c2 - c1, np, np + nd);
        for (int i = 0; i < ns; i++)
            etu_seq_close(e, &s[i]);
        eng_destroy(e);
    }
    eng_model_destroy(m);
    etu_rmdir(dir);
    free(tok);
    return 0;
}
