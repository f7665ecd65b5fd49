/* asa-tokenize: text <-> token ids with a Hugging Face tokenizer.json.
 *
 *   asa-tokenize --tokenizer FILE [--no-special]            text on stdin -> JSON ids
 *   asa-tokenize --tokenizer FILE --decode [--no-special]   JSON ids on stdin -> text
 *
 * --no-special: encode without the post-processor (no <s> etc.); decode
 * skipping special tokens.  Exit status 0 on success, 1 on a bad input or a
 * tokenizer that cannot be loaded, 2 on bad usage. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok.h"

static void usage(FILE *f) {
    fputs("usage: asa-tokenize --tokenizer FILE [--decode] [--no-special]\n"
          "  encode (default): reads UTF-8 text on stdin, prints the ids as a JSON array\n"
          "  --decode:         reads a JSON array of ids on stdin, prints the text\n"
          "  --no-special:     no special tokens added on encode (post-processor off);\n"
          "                    special tokens skipped on decode\n",
          f);
}

static int read_all(FILE *f, tok_str *s) {
    char buf[65536];
    size_t n;
    s->len = 0;
    if (!(s->data = malloc(1)))
        return -1;
    s->cap = 1;
    s->data[0] = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (s->len + n + 1 > s->cap) {
            size_t cap = s->cap * 2;
            while (cap < s->len + n + 1)
                cap *= 2;
            char *p = realloc(s->data, cap);
            if (!p)
                return -1;
            s->data = p;
            s->cap = cap;
        }
        memcpy(s->data + s->len, buf, n);
        s->len += n;
        s->data[s->len] = 0;
    }
    return ferror(f) ? -1 : 0;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    bool decode = false, special = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc)
            path = argv[++i];
        else if (!strcmp(argv[i], "--decode"))
            decode = true;
        else if (!strcmp(argv[i], "--no-special"))
            special = false;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "asa-tokenize: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    char msg[512] = "";
    asa_errbuf eb = {msg, sizeof msg};
    tok_tokenizer *t = NULL;
    int rc = 1;
    tok_str in = {0}, text = {0};
    tok_ids ids = {0};
    json_t *arr = NULL;
    asa_err e = tok_load(path, &t, &eb);
    if (e) {
        fprintf(stderr, "asa-tokenize: %s: %s\n", path, msg[0] ? msg : asa_strerror(e));
        goto done;
    }
    if (read_all(stdin, &in)) {
        fprintf(stderr, "asa-tokenize: cannot read stdin\n");
        goto done;
    }
    if (!decode) {
        if ((e = tok_encode(t, in.data, in.len, special, &ids, &eb))) {
            fprintf(stderr, "asa-tokenize: %s\n", msg[0] ? msg : asa_strerror(e));
            goto done;
        }
        putchar('[');
        for (size_t i = 0; i < ids.len; i++)
            printf(i ? ",%d" : "%d", (int)ids.ids[i]);
        fputs("]\n", stdout);
    } else {
        json_error_t jerr;
        arr = json_loadb(in.data, in.len, 0, &jerr);
        if (!json_is_array(arr)) {
            fprintf(stderr, "asa-tokenize: --decode expects a JSON array of ids on stdin\n");
            goto done;
        }
        for (size_t i = 0; i < json_array_size(arr); i++) {
            json_t *v = json_array_get(arr, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > INT32_MAX) {
                fprintf(stderr, "asa-tokenize: element %zu is not a token id\n", i);
                goto done;
            }
            int32_t id = (int32_t)json_integer_value(v);
            if (ids.len == ids.cap) {
                size_t cap = ids.cap ? ids.cap * 2 : 64;
                int32_t *p = realloc(ids.ids, cap * sizeof *p);
                if (!p)
                    goto done;
                ids.ids = p;
                ids.cap = cap;
            }
            ids.ids[ids.len++] = id;
        }
        if ((e = tok_decode(t, ids.ids, ids.len, !special, &text))) {
            fprintf(stderr, "asa-tokenize: %s\n", asa_strerror(e));
            goto done;
        }
        fwrite(text.data, 1, text.len, stdout);
    }
    rc = fflush(stdout) ? 1 : 0;
done:
    json_decref(arr);
    tok_str_free(&in);
    tok_str_free(&text);
    tok_ids_free(&ids);
    tok_destroy(t);
    return rc;
}
