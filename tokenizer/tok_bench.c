/* asa-tokenize-bench: encode throughput of a tokenizer.json on a text file.
 *
 *   asa-tokenize-bench --tokenizer FILE --text FILE [--mode whole|lines]
 *                      [--repeat N] [--no-special]
 *
 * whole: the file is one encode call; lines: every line (with its newline)
 * is its own call.  The first pass runs on a fresh tokenizer (empty word
 * cache: "cold"), then N passes with the cache warm; prints one JSON object
 * with MB/s (1 MB = 1e6 bytes of input). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok.h"

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 20, n = 0, r;
    char *p = malloc(cap);
    while (p && (r = fread(p + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *q = realloc(p, cap *= 2);
            if (!q) {
                free(p);
                p = NULL;
            } else
                p = q;
        }
    }
    fclose(f);
    *len = n;
    return p;
}

static int pass(const tok_tokenizer *t, const char *s, size_t n, bool lines, bool special,
                tok_ids *ids, size_t *ntok) {
    *ntok = 0;
    if (!lines) {
        if (tok_encode(t, s, n, special, ids, NULL))
            return -1;
        *ntok = ids->len;
        return 0;
    }
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - s) + 1 : n;
        if (tok_encode(t, s + i, end - i, special, ids, NULL))
            return -1;
        *ntok += ids->len;
        i = end;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *tpath = NULL, *xpath = NULL, *mode = "whole";
    int repeat = 5;
    bool special = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc)
            tpath = argv[++i];
        else if (!strcmp(argv[i], "--text") && i + 1 < argc)
            xpath = argv[++i];
        else if (!strcmp(argv[i], "--mode") && i + 1 < argc)
            mode = argv[++i];
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-special"))
            special = false;
        else {
            fprintf(stderr, "usage: asa-tokenize-bench --tokenizer FILE --text FILE "
                            "[--mode whole|lines] [--repeat N] [--no-special]\n");
            return 2;
        }
    }
    bool lines = !strcmp(mode, "lines");
    if (!tpath || !xpath || repeat < 1 || (!lines && strcmp(mode, "whole"))) {
        fprintf(stderr, "asa-tokenize-bench: bad arguments\n");
        return 2;
    }
    char msg[512] = "";
    asa_errbuf eb = {msg, sizeof msg};
    tok_tokenizer *t = NULL;
    double t0 = asa_now();
    if (tok_load(tpath, &t, &eb)) {
        fprintf(stderr, "asa-tokenize-bench: %s\n", msg);
        return 1;
    }
    double load_s = asa_now() - t0;
    size_t n;
    char *s = slurp(xpath, &n);
    if (!s) {
        fprintf(stderr, "asa-tokenize-bench: cannot read %s\n", xpath);
        tok_destroy(t);
        return 1;
    }
    tok_ids ids = {0};
    size_t ntok = 0;
    double c0 = asa_now();
    int rc = pass(t, s, n, lines, special, &ids, &ntok); /* cold, fills the cache */
    double cold = asa_now() - c0;
    double best = 1e30, total = 0;
    for (int r = 0; r < repeat && !rc; r++) {
        double a = asa_now();
        rc = pass(t, s, n, lines, special, &ids, &ntok);
        double d = asa_now() - a;
        total += d;
        if (d < best)
            best = d;
    }
    if (rc)
        fprintf(stderr, "asa-tokenize-bench: encode failed\n");
    else
        printf("{\"impl\": \"asa-tokenize\", \"tokenizer\": \"%s\", \"mode\": \"%s\", "
               "\"bytes\": %zu, \"tokens\": %zu, \"repeat\": %d, \"load_s\": %.3f, "
               "\"cold_mb_per_s\": %.2f, \"mean_s\": %.4f, \"mb_per_s\": %.2f, "
               "\"best_mb_per_s\": %.2f}\n",
               tpath, mode, n, ntok, repeat, load_s, n / 1e6 / cold, total / repeat,
               n / 1e6 / (total / repeat), n / 1e6 / best);
    tok_ids_free(&ids);
    free(s);
    tok_destroy(t);
    return rc ? 1 : 0;
}
