/* Functions shared by the tokenizer tests: the decompressed vocabularies in the
 * build tree (TOK_DATA_DIR), the committed test texts and expected ids. */
#ifndef TOK_TEST_UTIL_H
#define TOK_TEST_UTIL_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok.h"

static inline tok_tokenizer *tt_load(const char *vocab) {
    char path[1024], msg[512] = "";
    asa_errbuf eb = {msg, sizeof msg};
    snprintf(path, sizeof path, "%s/%s/tokenizer.json", TOK_DATA_DIR, vocab);
    tok_tokenizer *t = NULL;
    int e = tok_load(path, &t, &eb);
    if (e)
        fprintf(stderr, "tok_load(%s): %s: %s\n", path, asa_errname(e), msg);
    return t;
}

/* texts.json (an array of {name, text}) or expected_ids.json, from the source
 * tree; $TOK_PARITY_TEXTS / $TOK_PARITY_EXPECTED name other files (used by
 * tools/tokenizer/fuzz_parity.sh). */
static inline json_t *tt_json(const char *name) {
    char path[1024];
    json_error_t err;
    const char *env = !strcmp(name, "texts.json")          ? getenv("TOK_PARITY_TEXTS")
                      : !strcmp(name, "expected_ids.json") ? getenv("TOK_PARITY_EXPECTED")
                                                           : NULL;
    if (env && *env)
        snprintf(path, sizeof path, "%s", env);
    else
        snprintf(path, sizeof path, "%s/tests/tokenizer/%s", ASA_SOURCE_DIR, name);
    json_t *j = json_load_file(path, 0, &err);
    if (!j)
        fprintf(stderr, "%s: line %d: %s\n", path, err.line, err.text);
    return j;
}

/* A vocabulary ("gpt2", "mistral") or a variant of variants.json: the base
 * file with whole components replaced.  NULL (and a message) on failure. */
static inline tok_tokenizer *tt_load_any(const char *v) {
    json_t *variants = tt_json("variants.json");
    json_t *spec = json_object_get(variants, v);
    tok_tokenizer *t = NULL;
    if (!spec) {
        t = tt_load(v);
    } else {
        char path[1024], msg[512] = "";
        asa_errbuf eb = {msg, sizeof msg};
        json_error_t err;
        snprintf(path, sizeof path, "%s/%s/tokenizer.json", TOK_DATA_DIR,
                 json_string_value(json_object_get(spec, "base")));
        json_t *base = json_load_file(path, 0, &err);
        char *s = NULL;
        if (base && json_object_update(base, json_object_get(spec, "set")) == 0)
            s = json_dumps(base, JSON_COMPACT);
        int e = s ? tok_load_json(s, strlen(s), NULL, &t, &eb) : ASA_EFORMAT;
        if (e)
            fprintf(stderr, "variant %s: %s %s\n", v, asa_errname(e), msg);
        free(s);
        json_decref(base);
    }
    json_decref(variants);
    return t;
}

/* true when ids[n] equals the JSON array a */
static inline int tt_ids_equal(const int32_t *ids, size_t n, json_t *a) {
    if (json_array_size(a) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(a, i)) != ids[i])
            return 0;
    return 1;
}

static inline void tt_print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "%s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", (int)ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

static inline void tt_print_json_ids(const char *what, json_t *a) {
    fprintf(stderr, "%s (%zu):", what, json_array_size(a));
    for (size_t i = 0; i < json_array_size(a) && i < 40; i++)
        fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(a, i)));
    fprintf(stderr, json_array_size(a) > 40 ? " ...\n" : "\n");
}

#endif
