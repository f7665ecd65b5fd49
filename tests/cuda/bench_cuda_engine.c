/*
 * bench_cuda_engine - timing of the CUDA engine on the asa-1.3b shape
 * (ASA-SPEC 5) with seeded random bf16 weights built in memory (every
 * matrix views one shared random buffer, so nothing is written to disk).
 *
 *   bench_cuda_engine [context=1024] [steps=20] [tiny|full] [batches=1,8]
 *
 * Prints, one line each: prefill of a `context`-token prompt (median of 3
 * one-step prefills; contexts up to 32768 only), how the decode caches were
 * filled ("cache: ..."), and the decode step time (the mean over `steps`
 * timed steps after WARM = 8 warm-up steps, anchor steps included (two
 * selection-share cycles: the engine runs a graph key eagerly the first
 * time, captures it the second, and small batches have two keys, with and
 * without the anchor steps' launches); median, min and
 * max beside it) at each batch of the comma-separated
 * list with every sequence at `context` tokens, plus the weight bytes a
 * decode step reads and the bandwidth that implies.  Step times include the
 * host work of a step (metadata, logits copy, sampling).
 *
 * Caches: one source sequence is prefilled for real with P = context
 * tokens (P = 8192 above 32768: a prefill step is limited to 32768 tokens
 * here, and the engine's SiLU kernel takes at most 65535 rows per step),
 * and every decode sequence gets its own pages holding copies of the
 * source's pages (page copies of an eng_step without sequences) plus the
 * source's selection state (eng_seq_fork).  With P = context each decode
 * sequence holds exactly the real prefill's cache; above 32768 the pages
 * repeat the P-token prefill's pages cyclically (values of a real prefill,
 * at the wrong positions: a cache of plausible random values, which is
 * what the timing needs).  Above 32768 the context must be a multiple of
 * the selection share (the first decode step is then an anchor).
 * "tiny" shrinks the model (4 layers, d 256) to check the program itself.
 * BENCH_PROFILE=prefill or =decode limits a profiler started with
 * profiling off (`ncu --profile-from-start off`) to the last prefill or to
 * the timed steps of the last batch.
 *
 *   bench_cuda_engine sample [iters=50]
 *
 * times the sampler alone at V = 32000 for batches 1 and 64 and four
 * parameter sets (median of iters): "host" = the engine's host path (copy
 * of the logits rows to pinned memory, eng_sample per row on one thread),
 * "device" = its device path (upload of the packed rows and penalty lists,
 * sample_cuda, copy of tokens and logprobs back; eager launch), "kernel" =
 * sample_cuda alone (CUDA events), and topn_cuda for the greedy set.
 * Exits 77 without a CUDA device, 3 when the caches do not fit.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>

#include "eng.h"
#include "model.h"
#include "sample.h"
#include "sample_cuda.h"
#include "topn_cuda.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next_u32(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33);
}

static eng_tensor mat(const void *data, int64_t r, int64_t c) {
    return (eng_tensor){.data = data, .dtype = ENG_BF16, .ndim = 2, .shape = {r, c}};
}
static eng_tensor vec(const void *data, int64_t n) {
    return (eng_tensor){.data = data, .dtype = ENG_BF16, .ndim = 1, .shape = {n, 1}};
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One decode step for n sequences; returns seconds. */
static double decode_step(eng *e, int n, int *slot, kv_seq **kv, int *pos, int32_t *last) {
    static eng_seq_step *q;
    static eng_seq_result *r;
    static kv_copy *cp;
    static int cap;
    int ncp = 0;
    if (n > cap) {
        free(q);
        free(r);
        free(cp);
        q = malloc((size_t)n * sizeof *q);
        r = malloc((size_t)n * sizeof *r);
        cp = malloc((size_t)4 * n * sizeof *cp);
        if (!q || !r || !cp)
            return -1;
        cap = n;
    }
    static const eng_sampling sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    double t0 = asa_now();
    for (int i = 0; i < n; i++) {
        if (kv_seq_alloc(eng_kv_pool(e), kv[i], 1, cp, 4 * n, &ncp))
            return -1;
        q[i] = (eng_seq_step){.slot = slot[i], .tokens = &last[i], .n_tokens = 1,
                              .pos0 = pos[i], .kv = kv[i], .sample = true, .sp = &sp};
    }
    eng_batch b = {.n_seqs = n, .seqs = q, .copies = cp, .n_copies = ncp};
    if (eng_step(e, &b, r))
        return -1;
    double dt = asa_now() - t0;
    for (int i = 0; i < n; i++) {
        kv_seq_commit(eng_kv_pool(e), kv[i], 1);
        pos[i]++;
        last[i] = r[i].token;
    }
    return dt;
}

/* warm-up decode steps of each batch (see the top comment) */
#define WARM 8

#define BS_TRY(call)                                                                  \
    do {                                                                              \
        if ((call) != 0) {                                                            \
            printf("bench_cuda_engine: %s failed (line %d)\n", #call, __LINE__);       \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

/* bench_cuda_engine sample: see the top comment. */
static int bench_sample(int iters) {
    enum { V = 32000, BMAX = 64, NL = 256 };
    float *h_log = NULL, *d_log = NULL, *h_res = NULL, *d_res = NULL, *d_tlp = NULL;
    unsigned char *h_up = NULL, *d_up = NULL;
    uint32_t *d_cnt = NULL;
    void *d_ws = NULL;
    cudaStream_t st;
    cudaEvent_t e0, e1;
    BS_TRY(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    BS_TRY(cudaEventCreate(&e0));
    BS_TRY(cudaEventCreate(&e1));
    const size_t up_rows = BMAX * sizeof(sample_row), up_bytes = up_rows + BMAX * 2 * NL * 4;
    BS_TRY(cudaMallocHost((void **)&h_log, (size_t)BMAX * V * 4));
    BS_TRY(cudaMallocHost((void **)&h_up, up_bytes));
    BS_TRY(cudaMallocHost((void **)&h_res, (size_t)BMAX * (2 + 2 * SAMPLE_MAX_N) * 4));
    BS_TRY(cudaMalloc((void **)&d_log, (size_t)BMAX * V * 4));
    BS_TRY(cudaMalloc((void **)&d_up, up_bytes));
    BS_TRY(cudaMalloc((void **)&d_res, (size_t)BMAX * (2 + 2 * SAMPLE_MAX_N) * 4));
    BS_TRY(cudaMalloc((void **)&d_tlp, (size_t)BMAX * SAMPLE_MAX_N * 4));
    BS_TRY(cudaMalloc((void **)&d_cnt, (size_t)BMAX * V * 4));
    BS_TRY(cudaMalloc(&d_ws, topn_workspace_size(BMAX, V)));
    BS_TRY(cudaMemset(d_cnt, 0, (size_t)BMAX * V * 4));
    /* logits: a sum of three uniforms (about normal), spread 3, a few
     * peaks, as language-model rows look */
    for (size_t i = 0; i < (size_t)BMAX * V; i++) {
        float u = 0;
        for (int k = 0; k < 3; k++)
            u += (float)(next_u32() & 0xffffff) / 16777216.0f - 0.5f;
        h_log[i] = 6.0f * u + (next_u32() % 4000 == 0 ? 12.0f : 0.0f);
    }
    BS_TRY(cudaMemcpy(d_log, h_log, (size_t)BMAX * V * 4, cudaMemcpyHostToDevice));
    int32_t *lists = (int32_t *)(h_up + up_rows);
    for (int i = 0; i < BMAX * 2 * NL; i++)
        lists[i] = (int32_t)(next_u32() % V);
    static const struct {
        const char *name;
        eng_sampling sp;
        bool pen;
    } sets[4] = {
        {"greedy, 5 logprobs", {.temperature = 0, .top_p = 1, .repetition_penalty = 1,
                                .n_logprobs = 5}, false},
        {"T 0.8 top-p 0.95", {.temperature = 0.8f, .top_p = 0.95f, .repetition_penalty = 1},
         false},
        {"T 0.8 k 50 p 0.9 min-p 0.05", {.temperature = 0.8f, .top_k = 50, .top_p = 0.9f,
                                          .min_p = 0.05f, .repetition_penalty = 1}, false},
        {"T 1 p 0.95 penalties 2x256 ids, 5 lp",
         {.temperature = 1.0f, .top_p = 0.95f, .repetition_penalty = 1.1f,
          .frequency_penalty = 0.2f, .presence_penalty = 0.1f, .n_logprobs = 5}, true},
    };
    float *scratch = malloc((size_t)2 * V * 4);
    double *th = malloc((size_t)iters * sizeof(double)), *td = malloc((size_t)iters * sizeof(double));
    double *tk = malloc((size_t)iters * sizeof(double)), *tt = malloc((size_t)iters * sizeof(double));
    if (!scratch || !th || !td || !tk || !tt)
        return 1;
    printf("bench_cuda_engine: sampler alone, V %d, median of %d (host: logits copy + "
           "eng_sample per row; device: upload + sample_cuda + results copy)\n", V, iters);
    const int bs[2] = {1, BMAX};
    for (int si = 0; si < 4; si++)
        for (int bi = 0; bi < 2; bi++) {
            const int B = bs[bi];
            const eng_sampling *sp = &sets[si].sp;
            sample_row *rows = (sample_row *)h_up;
            for (int b = 0; b < B; b++)
                rows[b] = (sample_row){.temperature = sp->temperature, .top_p = sp->top_p,
                                       .min_p = sp->min_p, .presence = sp->presence_penalty,
                                       .frequency = sp->frequency_penalty,
                                       .repetition = sp->repetition_penalty,
                                       .top_k = sp->top_k, .n_logprobs = sp->n_logprobs,
                                       .n_prompt = sets[si].pen ? NL : 0, .n_output = NL,
                                       .tok_off = b * 2 * NL, .seed = 1000 + (uint64_t)b};
            const int ntop = sp->n_logprobs;
            sample_params p = {.B = B, .V = V, .n_top = ntop, .logits = d_log, .ld = V,
                               .rows = (const sample_row *)d_up,
                               .toks = (const int32_t *)(d_up + up_rows), .counts = d_cnt,
                               .token = (int32_t *)d_res, .token_lp = d_res + B,
                               .top_ids = ntop ? (int32_t *)(d_res + 2 * B) : NULL,
                               .top_lp = ntop ? d_tlp : NULL};
            const size_t up = sets[si].pen ? up_rows + (size_t)B * 2 * NL * 4 : (size_t)B * sizeof(sample_row);
            for (int it = -2; it < iters; it++) {
                double t0 = asa_now();
                BS_TRY(cudaMemcpyAsync(h_log, d_log, (size_t)B * V * 4, cudaMemcpyDeviceToHost, st));
                BS_TRY(cudaStreamSynchronize(st));
                for (int b = 0; b < B; b++) {
                    eng_seq_result r;
                    BS_TRY(eng_sample(h_log + (size_t)b * V, V, sp, sets[si].pen ? lists + b * 2 * NL : NULL,
                                      sets[si].pen ? NL : 0, lists + b * 2 * NL + NL, NL,
                                      scratch, &r));
                }
                double t1 = asa_now();
                BS_TRY(cudaMemcpyAsync(d_up, h_up, up, cudaMemcpyHostToDevice, st));
                BS_TRY(cudaEventRecord(e0, st));
                BS_TRY(sample_cuda(&p, st));
                BS_TRY(cudaEventRecord(e1, st));
                BS_TRY(cudaMemcpyAsync(h_res, d_res, (size_t)B * (2 + 2 * ntop) * 4,
                                       cudaMemcpyDeviceToHost, st));
                BS_TRY(cudaStreamSynchronize(st));
                double t2 = asa_now();
                float ms = 0;
                BS_TRY(cudaEventElapsedTime(&ms, e0, e1));
                double t3 = t2, t4 = t2;
                if (si == 0) { /* the greedy path before sample_cuda */
                    topn_params tp = {.B = B, .V = V, .n = ntop, .logits = d_log, .ld = V,
                                      .token = (int32_t *)d_res, .token_lp = d_res + B,
                                      .top_ids = (int32_t *)(d_res + 2 * B), .top_lp = d_tlp,
                                      .workspace = d_ws};
                    t3 = asa_now();
                    BS_TRY(topn_cuda(&tp, st));
                    BS_TRY(cudaMemcpyAsync(h_res, d_res, (size_t)B * (2 + 2 * ntop) * 4,
                                           cudaMemcpyDeviceToHost, st));
                    BS_TRY(cudaStreamSynchronize(st));
                    t4 = asa_now();
                }
                if (it >= 0) {
                    th[it] = t1 - t0;
                    td[it] = t2 - t1;
                    tk[it] = ms * 1e-3;
                    tt[it] = t4 - t3;
                }
            }
            qsort(th, (size_t)iters, sizeof(double), cmp_d);
            qsort(td, (size_t)iters, sizeof(double), cmp_d);
            qsort(tk, (size_t)iters, sizeof(double), cmp_d);
            qsort(tt, (size_t)iters, sizeof(double), cmp_d);
            printf("sample %-36s batch %2d: host %8.1f us, device %7.1f us (kernel %6.1f us)",
                   sets[si].name, B, th[iters / 2] * 1e6, td[iters / 2] * 1e6,
                   tk[iters / 2] * 1e6);
            if (si == 0)
                printf(", topn path %6.1f us", tt[iters / 2] * 1e6);
            printf("\n");
            fflush(stdout);
        }
    free(scratch);
    free(th);
    free(td);
    free(tk);
    free(tt);
    cudaFreeHost(h_log);
    cudaFreeHost(h_up);
    cudaFreeHost(h_res);
    cudaFree(d_log);
    cudaFree(d_up);
    cudaFree(d_res);
    cudaFree(d_tlp);
    cudaFree(d_cnt);
    cudaFree(d_ws);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaStreamDestroy(st);
    return 0;
}

int main(int argc, char **argv) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
        printf("bench_cuda_engine: no CUDA device: skipped\n");
        return 77;
    }
    if (argc > 1 && strcmp(argv[1], "sample") == 0) {
        const int it = argc > 2 ? atoi(argv[2]) : 50;
        return bench_sample(it > 0 ? it : 1);
    }
    const int ctx = argc > 1 ? atoi(argv[1]) : 1024;
    const int steps = argc > 2 ? atoi(argv[2]) : 20;
    const bool tiny = argc > 3 && strcmp(argv[3], "tiny") == 0;
    int batches[16], nbat = 0, maxb = 1;
    {
        const char *bl = argc > 4 ? argv[4] : "1,8";
        while (*bl && nbat < 16) {
            char *end;
            long v = strtol(bl, &end, 10);
            if (end == bl || v < 1 || v > 4096) {
                printf("bench_cuda_engine: bad batch list '%s'\n", argv[4]);
                return 2;
            }
            batches[nbat++] = (int)v;
            maxb = v > maxb ? (int)v : maxb;
            bl = *end == ',' ? end + 1 : end;
        }
    }
    if (ctx < 16 || steps < 1) {
        printf("bench_cuda_engine: context >= 16 and steps >= 1\n");
        return 2;
    }
    const int L = tiny ? 4 : 24, d = tiny ? 256 : 2048, F = tiny ? 704 : 5632;
    const int V = tiny ? 512 : 32000, H = tiny ? 4 : 32, dh = 64, dv = 64, dR = 32;
    const int lG = 1, ldg = tiny ? 96 : 192, gG = 2, gdg = tiny ? 48 : 96;

    eng_model m;
    memset(&m, 0, sizeof m);
    eng_config *k = &m.cfg;
    k->vocab_size = V;
    k->hidden_size = d;
    k->intermediate_size = F;
    k->num_hidden_layers = L;
    k->num_heads = H;
    k->head_dim = dh;
    k->v_head_dim = dv;
    k->rope_dim = dR;
    k->rope_theta = 10000.0;
    k->rms_norm_eps = 1e-6;
    k->max_position_embeddings = 131072;
    k->bos_token_id = k->eos_token_id = -1;
    k->local.attn.latent_heads = lG;
    k->local.attn.latent_dim = ldg;
    k->local.window = 512;
    k->global.attn.latent_heads = gG;
    k->global.attn.latent_dim = gdg;
    k->global.block_size = 16;
    k->global.top_n = 16;
    k->global.init_blocks = 1;
    k->global.local_blocks = 2;
    k->global.selection_share = 4;
    k->layer_types = malloc(L * sizeof *k->layer_types);
    m.layers = calloc(L, sizeof *m.layers);
    /* the shared buffer covers the largest matrix */
    size_t big = (size_t)(V > F ? V : F) * d;
    if ((size_t)H * (dh + dR) * d > big)
        big = (size_t)H * (dh + dR) * d;
    uint16_t *w = malloc(big * sizeof(uint16_t)), *ones = malloc((size_t)d * sizeof(uint16_t));
    if (!k->layer_types || !m.layers || !w || !ones)
        return 1;
    for (size_t i = 0; i < big; i++) /* ~ uniform, std 1/sqrt(d)-ish */
        w[i] = asa_f32_to_bf16(((float)(next_u32() >> 8) / 16777216.0f - 0.5f) * 0.06f);
    for (int i = 0; i < d; i++)
        ones[i] = asa_f32_to_bf16(1.0f);
    for (int l = 0; l < L; l++) {
        bool g = l % 2 == 1;
        eng_layer *y = &m.layers[l];
        k->layer_types[l] = g ? ENG_LAYER_GLOBAL : ENG_LAYER_LOCAL;
        y->type = k->layer_types[l];
        y->G = g ? gG : lG;
        y->dg = g ? gdg : ldg;
        y->type_index = l / 2;
        y->attn_norm = vec(ones, d);
        y->mlp_norm = vec(ones, d);
        y->q_proj = mat(w, (int64_t)H * (dh + dR), d);
        y->kv_a_proj = mat(w, (int64_t)y->G * y->dg + dR, d);
        y->kv_a_norm = vec(ones, (int64_t)y->G * y->dg);
        y->kv_b_proj = mat(w, (int64_t)H * (dh + dv), y->dg);
        y->o_proj = mat(w, d, (int64_t)H * dv);
        if (g)
            y->g_proj = mat(w, 2 * H, d);
        y->gate_proj = mat(w, F, d);
        y->up_proj = mat(w, F, d);
        y->down_proj = mat(w, d, F);
    }
    k->n_local_layers = L / 2;
    k->n_global_layers = L / 2;
    m.embed = mat(w, V, d);
    m.lm_head = mat(w, V, d); /* the same bytes as embed: the engine shares one copy */
    m.norm = vec(ones, d);
    k->tie_word_embeddings = false;

    /* the source sequence's real prefill (see the top comment) */
    const int P = ctx <= 32768 ? ctx : 8192;
    const int Bk = 16, sh = 4;
    if (P < ctx && ctx % sh) {
        printf("bench_cuda_engine: contexts above 32768 must be multiples of %d\n", sh);
        return 2;
    }
    /* every decode sequence runs (warm-up + timed) steps per batch it is in */
    const int grow = nbat * (steps + WARM) + 2 * Bk;
    const int max_seqs = maxb + 1, src_slot_i = maxb;
    eng_options o;
    eng_options_default(&o);
    o.backend = ENG_BACKEND_CUDA;
    o.max_seqs = max_seqs;
    o.max_batch_tokens = P > maxb ? P : maxb;
    o.max_seq_len = ctx + grow;
    o.num_pages[KV_GLOBAL] = maxb * ((ctx + grow) / Bk + 2) + P / Bk + 2 + 16;
    /* a fresh sequence's allocation takes local pages for every position
     * until its commit returns those behind the window */
    o.num_pages[KV_LOCAL] = max_seqs * (512 / Bk + 3) + ctx / Bk + 8;
    eng *e = NULL;
    char msg[256] = "";
    asa_errbuf eb = {msg, sizeof msg};
    double tl = asa_now();
    asa_err err = eng_create(&m, &o, &e, &eb);
    if (err) {
        printf("bench_cuda_engine: eng_create: %s (%s)\n", msg, asa_strerror(err));
        return 1;
    }
    tl = asa_now() - tl;
    /* weights read by a decode step: every matrix but the embedding */
    double wbytes = 0;
    for (int l = 0; l < L; l++) {
        const eng_layer *y = &m.layers[l];
        double n = (double)H * (dh + dR) * d + ((double)y->G * y->dg + dR) * d +
                   (double)H * (dh + dv) * y->dg + (double)d * H * dv + 3.0 * F * d +
                   (y->type == ENG_LAYER_GLOBAL ? 2.0 * H * d : 0);
        wbytes += 2 * n;
    }
    wbytes += 2.0 * V * d;

    int32_t *prompt = malloc((size_t)P * sizeof(int32_t));
    int *slot = malloc((size_t)max_seqs * sizeof(int)), *pos = malloc((size_t)max_seqs * sizeof(int));
    kv_seq **kv = calloc((size_t)max_seqs, sizeof *kv);
    int32_t *last = malloc((size_t)max_seqs * sizeof(int32_t));
    const int max_fill = 8192;
    kv_copy *fill = malloc((size_t)max_fill * sizeof *fill);
    if (!prompt || !slot || !pos || !kv || !last || !fill)
        return 1;
    for (int i = 0; i < P; i++)
        prompt[i] = (int32_t)(next_u32() % (uint32_t)V);
    static const eng_sampling sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1};
    /* the source: prefilled 3 times (timing; the last one is kept) when it
     * is the whole context, once otherwise */
    const int n_pre = P == ctx ? 3 : 1;
    /* BENCH_PROFILE=prefill|decode: the profiler range (ncu/nsys with
     * profiling from start off) covers the last prefill or the timed
     * steps of the last batch */
    const char *prof_env = getenv("BENCH_PROFILE");
    double t_prefill[3] = {0, 0, 0};
    const int src = src_slot_i;
    int32_t src_last = 0;
    for (int r = 0; r < n_pre; r++) {
        if (r > 0) {
            kv_seq_destroy(eng_kv_pool(e), kv[src]);
            eng_seq_close(e, slot[src]);
        }
        if (eng_seq_open(e, &slot[src]) || kv_seq_create(eng_kv_pool(e), &kv[src]))
            return 1;
        kv_copy cp[8];
        int ncp = 0;
        if (kv_seq_alloc(eng_kv_pool(e), kv[src], P, cp, 8, &ncp)) {
            printf("bench_cuda_engine: kv_seq_alloc of the %d-token source failed\n", P);
            return 3;
        }
        eng_seq_step q = {.slot = slot[src], .tokens = prompt, .n_tokens = P, .pos0 = 0,
                          .kv = kv[src], .sample = true, .sp = &sp};
        eng_batch b = {.n_seqs = 1, .seqs = &q, .copies = cp, .n_copies = ncp};
        eng_seq_result res;
        const bool prof = r == n_pre - 1 && prof_env && strcmp(prof_env, "prefill") == 0;
        if (prof)
            cudaProfilerStart();
        double t0 = asa_now();
        if ((err = eng_step(e, &b, &res))) {
            printf("bench_cuda_engine: prefill of %d tokens: %s\n", P, asa_strerror(err));
            return 1;
        }
        t_prefill[r] = asa_now() - t0;
        if (prof)
            cudaProfilerStop();
        kv_seq_commit(eng_kv_pool(e), kv[src], P);
        src_last = res.token;
    }
    /* the decode sequences: own pages, copies of the source's */
    int sg_n = 0, sl_n = 0;
    const int32_t *sg = kv_seq_table(kv[src], KV_GLOBAL, &sg_n);
    const int32_t *sl = kv_seq_table(kv[src], KV_LOCAL, &sl_n);
    int sl_any = -1;
    for (int j = 0; j < sl_n; j++)
        if (sl[j] >= 0)
            sl_any = sl[j];
    const double tf = asa_now();
    for (int i = 0; i < maxb; i++) {
        if (eng_seq_open(e, &slot[i]) || eng_seq_fork(e, slot[src], slot[i]) ||
            kv_seq_create(eng_kv_pool(e), &kv[i]))
            return 1;
        kv_copy cp[8];
        int ncp = 0;
        if (kv_seq_alloc(eng_kv_pool(e), kv[i], ctx, cp, 8, &ncp)) {
            printf("bench_cuda_engine: no pages for %d sequences of %d tokens\n", maxb, ctx);
            return 3;
        }
        int ng = 0, nl = 0, nf = 0;
        for (int j = 0; j < ncp; j++) /* none for a fresh sequence; kept for the contract */
            fill[nf++] = cp[j];
        const int32_t *gt = kv_seq_table(kv[i], KV_GLOBAL, &ng);
        const int32_t *lt = kv_seq_table(kv[i], KV_LOCAL, &nl);
        for (int c = 0; c < 2; c++) {
            const int32_t *t = c == 0 ? gt : lt;
            const int n = c == 0 ? ng : nl;
            for (int j = 0; j < n; j++) {
                if (t[j] < 0 || (c == 1 && j < (ctx - k->local.window) / Bk - 1))
                    continue; /* local pages behind the window: returned at the commit */
                int s_ = -1;
                if (c == 0 && sg_n > 0)
                    s_ = sg[j % sg_n];
                else if (c == 1) {
                    s_ = j < sl_n && sl[j] >= 0 ? sl[j] : sl_any;
                    if (P < ctx && sl_n > 0 && sl[j % sl_n] >= 0)
                        s_ = sl[j % sl_n];
                }
                if (s_ < 0 || s_ == t[j])
                    continue;
                fill[nf++] = (kv_copy){.cls = c == 0 ? KV_GLOBAL : KV_LOCAL, .src = s_, .dst = t[j]};
                if (nf == max_fill) {
                    eng_batch fb = {.n_seqs = 0, .copies = fill, .n_copies = nf};
                    if ((err = eng_step(e, &fb, NULL))) {
                        printf("bench_cuda_engine: page copies: %s\n", asa_strerror(err));
                        return 1;
                    }
                    nf = 0;
                }
            }
        }
        if (nf > 0) {
            eng_batch fb = {.n_seqs = 0, .copies = fill, .n_copies = nf};
            if ((err = eng_step(e, &fb, NULL))) {
                printf("bench_cuda_engine: page copies: %s\n", asa_strerror(err));
                return 1;
            }
        }
        kv_seq_commit(eng_kv_pool(e), kv[i], ctx);
        pos[i] = ctx;
        last[i] = P == ctx ? src_last : (int32_t)(next_u32() % (uint32_t)V);
    }
    cudaDeviceSynchronize();
    const double t_fill = asa_now() - tf;
    qsort(t_prefill, (size_t)n_pre, sizeof(double), cmp_d);
    printf("bench_cuda_engine: %s shape, random bf16 weights, load %.2f s, weights read "
           "per decode step %.1f MB\n", tiny ? "tiny" : "asa-1.3b", tl, wbytes / 1e6);
    if (P == ctx)
        printf("%-28s %10.3f ms  (%.0f tokens/s)\n", "prefill (one step)",
               t_prefill[n_pre / 2] * 1e3, ctx / t_prefill[n_pre / 2]);
    if (P == ctx)
        printf("cache: prefill (a real %d-token prefill, its pages copied to each of %d "
               "sequences in %.2f s)\n", ctx, maxb, t_fill);
    else
        printf("cache: random (pages of a real %d-token prefill (%.0f ms) repeated up to %d "
               "tokens in each of %d sequences, %.2f s)\n", P, t_prefill[0] * 1e3, ctx, maxb,
               t_fill);
    {
        /* KV bytes per token from the pool's page sizes: global pages hold
         * every token (plus the compressed entry); local pages only the
         * window, so they are a fixed amount per sequence */
        const kv_pool_config *pc = kv_pool_get_config(eng_kv_pool(e));
        const int B = pc->block_size;
        printf("kv bytes: %.0f per token at long context (global pages), local windows %.2f MB "
               "per sequence\n", (double)pc->page_bytes[KV_GLOBAL] / B,
               (double)pc->page_bytes[KV_LOCAL] * ((pc->window + B - 1) / B + 1) / 1e6);
    }
    double *ts = malloc((size_t)steps * sizeof(double));
    for (int bi = 0; bi < nbat; bi++) {
        int n = batches[bi];
        for (int s = 0; s < WARM; s++)
            if (decode_step(e, n, slot, kv, pos, last) < 0) {
                printf("bench_cuda_engine: decode batch %d failed\n", n);
                return 1;
            }
        const bool prof = bi == nbat - 1 && prof_env && strcmp(prof_env, "decode") == 0;
        if (prof)
            cudaProfilerStart();
        for (int s = 0; s < steps; s++)
            if ((ts[s] = decode_step(e, n, slot, kv, pos, last)) < 0) {
                printf("bench_cuda_engine: decode batch %d failed\n", n);
                return 1;
            }
        if (prof)
            cudaProfilerStop();
        /* the mean leads: one step in selection_share (4) is an anchor
         * step that also scores and chooses blocks, so the median (printed
         * too) hides that cost; steps a multiple of 4 weigh it fairly */
        double mean = 0;
        for (int s = 0; s < steps; s++)
            mean += ts[s] / steps;
        qsort(ts, (size_t)steps, sizeof(double), cmp_d);
        const double med = ts[steps / 2];
        char name[64];
        snprintf(name, sizeof name, "decode batch %d ctx %d", n, ctx);
        printf("%-28s %10.3f ms  (mean; median %.3f, min %.3f, max %.3f; %.0f tokens/s; "
               "weights at %.0f GB/s)\n", name, mean * 1e3, med * 1e3, ts[0] * 1e3,
               ts[steps - 1] * 1e3, n / mean, wbytes / mean / 1e9);
        fflush(stdout);
    }
    for (int i = 0; i < max_seqs; i++) {
        kv_seq_destroy(eng_kv_pool(e), kv[i]);
        eng_seq_close(e, slot[i]);
    }
    free(fill);
    free(last);
    free(kv);
    free(pos);
    free(slot);
    eng_destroy(e);
    free(ts);
    free(prompt);
    free(w);
    free(ones);
    free(m.layers);
    free(k->layer_types);
    return 0;
}
