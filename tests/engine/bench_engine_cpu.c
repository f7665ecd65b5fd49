/*
 * bench_engine_cpu - prefill and decode throughput of the CPU engine on a
 * random model of the asa-tiny shape (ASA-SPEC 5: d=256, 8 layers, F=704,
 * vocab 8192, bf16 weights).  Not a test; run by hand:
 *   bench_engine_cpu [prompt_tokens=512] [decode_tokens=128] [threads...]
 * ASA_BENCH_F32=1 writes f32 weights instead of bf16.  Prints wall-clock
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
    for (int ti = 0; ti < nt; ti++) {
        eng *e = etu_engine(m, 1, np, np + nd, nthr[ti]);
        etu_seq s;
        etu_seq_open(e, &s);
        double t0 = asa_now(), c0 = (double)clock() / CLOCKS_PER_SEC;
        kv_copy cp[4];
        int ncp = 0;
        eng_sampling sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
        eng_seq_result r;
        kv_seq_alloc(eng_kv_pool(e), s.kv, np, cp, 4, &ncp);
        eng_seq_step q = {.slot = s.slot, .tokens = tok, .n_tokens = np, .pos0 = 0,
                          .kv = s.kv, .sample = true, .sp = &sp};
        eng_batch b = {.n_seqs = 1, .seqs = &q};
        if (eng_step(e, &b, &r) != ASA_OK)
            return 1;
        kv_seq_commit(eng_kv_pool(e), s.kv, np);
        double t1 = asa_now(), c1 = (double)clock() / CLOCKS_PER_SEC;
        for (int k = 0; k < nd; k++) {
            ncp = 0;
            kv_seq_alloc(eng_kv_pool(e), s.kv, 1, cp, 4, &ncp);
            q = (eng_seq_step){.slot = s.slot, .tokens = &tok[np + k], .n_tokens = 1,
                               .pos0 = np + k, .kv = s.kv, .sample = true, .sp = &sp};
            if (eng_step(e, &b, &r) != ASA_OK)
                return 1;
            kv_seq_commit(eng_kv_pool(e), s.kv, 1);
        }
        double t2 = asa_now(), c2 = (double)clock() / CLOCKS_PER_SEC;
        printf("%s threads %d: prefill %d tokens %.1f tokens/s (cpu %.3f s); decode %d tokens "
               "%.1f tokens/s (cpu %.3f s) (context %d..%d)\n",
               sh.bf16 ? "bf16" : "f32", nthr[ti], np, np / (t1 - t0), c1 - c0, nd,
               nd / (t2 - t1), c2 - c1, np, np + nd);
        etu_seq_close(e, &s);
        eng_destroy(e);
    }
    eng_model_destroy(m);
    etu_rmdir(dir);
    free(tok);
    return 0;
}
