/*
 * asa-generate - runs one prompt (token ids) through the engine and prints
 * the generated ids.
 *
 *   asa-generate --model DIR --prompt-ids 1,2,3 --max-tokens N
 *                [--greedy | --temperature T --seed S] [--ignore-eos]
 *                [--backend cpu|cuda] [--threads N] [--logits-out FILE]
 *
 * stdout: the generated ids, comma-separated, on one line (an EOS token that
 * stops generation is included).  stderr: prefill and decode tokens/s.
 * --logits-out writes [steps, V] little-endian f32: row k is the logit row
 * token k was drawn from.  Exit status: 0 ok, 1 runtime error, 2 bad
 * arguments.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "asa.h"
#include "eng.h"
#include "kv.h"
#include "model.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: asa-generate --model DIR --prompt-ids 1,2,3 --max-tokens N\n"
            "                    [--greedy | --temperature T --seed S] [--ignore-eos]\n"
            "                    [--backend cpu|cuda] [--threads N] [--logits-out FILE]\n");
}

static int bad(const char *msg, const char *arg) {
    fprintf(stderr, "asa-generate: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    usage(stderr);
    return 2;
}

static bool parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* "1,2,3" -> ids; returns count or -1. */
static int parse_ids(const char *s, int32_t **out) {
    int cap = 16, n = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids)
        return -1;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            free(ids);
            return -1;
        }
        if (n == cap) {
            cap *= 2;
            int32_t *t = realloc(ids, (size_t)cap * sizeof *ids);
            if (!t) {
                free(ids);
                return -1;
            }
            ids = t;
        }
        ids[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p) {
            free(ids);
            return -1;
        }
    }
    *out = ids;
    return n;
}

int main(int argc, char **argv) {
    const char *model_dir = NULL, *ids_arg = NULL, *logits_path = NULL;
    long max_tokens = -1, threads = 0, seed = 0;
    double temperature = -1;
    bool greedy = false, ignore_eos = false, have_seed = false;
    eng_backend_kind backend = ENG_BACKEND_CPU;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--greedy")) {
            greedy = true;
        } else if (!strcmp(a, "--ignore-eos")) {
            ignore_eos = true;
        } else if (!strcmp(a, "--model") || !strcmp(a, "--prompt-ids") ||
                   !strcmp(a, "--max-tokens") || !strcmp(a, "--temperature") ||
                   !strcmp(a, "--seed") || !strcmp(a, "--backend") ||
                   !strcmp(a, "--threads") || !strcmp(a, "--logits-out")) {
            if (!has_val)
                return bad("missing value for", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--model")) {
                model_dir = v;
            } else if (!strcmp(a, "--prompt-ids")) {
                ids_arg = v;
            } else if (!strcmp(a, "--max-tokens")) {
                if (!parse_long(v, 0, 1 << 24, &max_tokens))
                    return bad("--max-tokens needs an integer >= 0", v);
            } else if (!strcmp(a, "--temperature")) {
                char *end;
                errno = 0;
                temperature = strtod(v, &end);
                if (errno || end == v || *end || !(temperature >= 0) || temperature > 1e6)
                    return bad("--temperature needs a number >= 0", v);
            } else if (!strcmp(a, "--seed")) {
                if (!parse_long(v, 0, 0x7fffffffffffffffL, &seed))
                    return bad("--seed needs an integer >= 0", v);
                have_seed = true;
            } else if (!strcmp(a, "--backend")) {
                if (!strcmp(v, "cpu"))
                    backend = ENG_BACKEND_CPU;
                else if (!strcmp(v, "cuda"))
                    backend = ENG_BACKEND_CUDA;
                else
                    return bad("--backend must be cpu or cuda", v);
            } else if (!strcmp(a, "--threads")) {
                if (!parse_long(v, 0, 1024, &threads))
                    return bad("--threads needs an integer in [0, 1024]", v);
            } else {
                logits_path = v;
            }
        } else {
            return bad("unknown argument", a);
        }
    }
    if (!model_dir)
        return bad("--model is required", NULL);
    if (!ids_arg)
        return bad("--prompt-ids is required", NULL);
    if (max_tokens < 0)
        return bad("--max-tokens is required", NULL);
    if (greedy && (temperature >= 0 || have_seed))
        return bad("--greedy excludes --temperature and --seed", NULL);
    if (!greedy && temperature < 0)
        return bad("give --greedy or --temperature T", NULL);
    int32_t *prompt = NULL;
    int n_prompt = parse_ids(ids_arg, &prompt);
    if (n_prompt <= 0)
        return bad("--prompt-ids needs a non-empty comma-separated list of ids", ids_arg);

    int rc = 1;
    char msg[512] = "";
    asa_errbuf eb = {msg, sizeof msg};
    eng_model *m = NULL;
    eng *e = NULL;
    kv_seq *kvs = NULL;
    int32_t *out_ids = NULL;
    float *logits = NULL;
    FILE *lf = NULL;
    asa_err err = eng_model_load(model_dir, &m, &eb);
    if (err) {
        fprintf(stderr, "asa-generate: cannot load model: %s (%s)\n", msg, asa_strerror(err));
        goto done;
    }
    const int V = m->cfg.vocab_size, B = m->cfg.global.block_size;
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] >= V) {
            fprintf(stderr, "asa-generate: prompt id %d >= vocab_size %d\n", prompt[i], V);
            rc = 2;
            goto done;
        }

    eng_options o;
    eng_options_default(&o);
    o.backend = backend;
    o.max_seqs = 1;
    /* Prompts longer than this are prefilled in several steps (the CUDA
     * backend's kernels take at most 65,535 rows a step). */
    o.max_batch_tokens = n_prompt < 8192 ? n_prompt : 8192;
    o.max_seq_len = n_prompt + (int)max_tokens;
    o.threads = (int)threads;
    o.num_pages[KV_GLOBAL] = o.max_seq_len / B + 2;
    o.num_pages[KV_LOCAL] =
        m->cfg.n_local_layers > 0 ? m->cfg.local.window / B + o.max_batch_tokens / B + 4 : 0;
    err = eng_create(m, &o, &e, &eb);
    if (err) {
        fprintf(stderr, "asa-generate: cannot create the engine: %s (%s)\n", msg,
                asa_strerror(err));
        goto done;
    }
    kv_pool *pool = eng_kv_pool(e);
    int slot;
    if ((err = eng_seq_open(e, &slot)) || (err = kv_seq_create(pool, &kvs))) {
        fprintf(stderr, "asa-generate: %s\n", asa_strerror(err));
        goto done;
    }
    out_ids = malloc((size_t)(max_tokens > 0 ? max_tokens : 1) * sizeof *out_ids);
    logits = malloc((size_t)V * sizeof *logits);
    if (!out_ids || !logits) {
        fprintf(stderr, "asa-generate: out of memory\n");
        goto done;
    }
    if (logits_path && !(lf = fopen(logits_path, "wb"))) {
        fprintf(stderr, "asa-generate: cannot write %s\n", logits_path);
        goto done;
    }
    eng_sampling sp = {.temperature = greedy ? 0.0f : (float)temperature,
                       .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                       .repetition_penalty = 1.0f, .seed = (uint64_t)seed};

    int n_out = 0, pos = 0;
    double t_prefill = 0, t_decode = 0;
    while (n_out < max_tokens) {
        /* The prompt goes in chunks of at most max_batch_tokens (chunked
         * prefill gives the same logits: the engine is chunk-invariant);
         * then one token per step. */
        const int32_t *toks = n_out == 0 ? prompt + pos : &out_ids[n_out - 1];
        int n = n_out == 0 ? n_prompt - pos : 1;
        if (n > o.max_batch_tokens)
            n = o.max_batch_tokens;
        bool last = n_out > 0 || pos + n == n_prompt;
        kv_copy copies[4];
        int n_copies = 0;
        if ((err = kv_seq_alloc(pool, kvs, n, copies, 4, &n_copies))) {
            fprintf(stderr, "asa-generate: kv_seq_alloc: %s\n", asa_strerror(err));
            goto done;
        }
        eng_seq_step st = {.slot = slot, .tokens = toks, .n_tokens = n, .pos0 = pos,
                           .kv = kvs, .sample = last, .sp = &sp, .prompt = prompt,
                           .n_prompt = n_prompt, .output = out_ids, .n_output = n_out,
                           .logits_out = last ? logits : NULL};
        eng_batch b = {.n_seqs = 1, .seqs = &st, .copies = copies, .n_copies = n_copies};
        eng_seq_result res;
        double t0 = asa_now();
        err = eng_step(e, &b, &res);
        double dt = asa_now() - t0;
        if (err) {
            fprintf(stderr, "asa-generate: eng_step: %s\n", asa_strerror(err));
            goto done;
        }
        if (!last) {
            t_prefill += dt;
            kv_seq_commit(pool, kvs, n);
            pos += n;
            continue;
        }
        if (n_out == 0)
            t_prefill += dt;
        else
            t_decode += dt;
        kv_seq_commit(pool, kvs, n);
        pos += n;
        if (lf && fwrite(logits, sizeof(float), (size_t)V, lf) != (size_t)V) {
            fprintf(stderr, "asa-generate: write error on %s\n", logits_path);
            goto done;
        }
        out_ids[n_out++] = res.token;
        if (!ignore_eos && res.token == m->cfg.eos_token_id)
            break;
    }
    for (int i = 0; i < n_out; i++)
        printf(i ? ",%d" : "%d", out_ids[i]);
    printf("\n");
    fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tokens/s)\n", n_prompt, t_prefill,
            t_prefill > 0 ? n_prompt / t_prefill : 0.0);
    if (n_out > 1)
        fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tokens/s)\n", n_out - 1, t_decode,
                t_decode > 0 ? (n_out - 1) / t_decode : 0.0);
    rc = 0;
    if (lf && fclose(lf) != 0) {
        fprintf(stderr, "asa-generate: write error on %s\n", logits_path);
        rc = 1;
    }
    lf = NULL;
done:
    if (lf)
        fclose(lf);
    free(logits);
    free(out_ids);
    if (e)
        kv_seq_destroy(eng_kv_pool(e), kvs);
    eng_destroy(e);
    eng_model_destroy(m);
    free(prompt);
    return rc;
}
