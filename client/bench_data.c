/* client/bench_data.c - prompts (random token ids, random text, or a JSONL
 * dataset) and the HTTP request bytes built from them before the run. */
#define _GNU_SOURCE
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Plain English words; random text prompts are drawn from these.  Their
 * token counts come from the server's /tokenize. */
static const char *const words[] = {
    "time", "year", "people", "way", "day", "man", "thing", "woman", "life", "child",
    "world", "school", "state", "family", "student", "group", "country", "problem",
    "hand", "part", "place", "case", "week", "company", "system", "program", "question",
    "work", "government", "number", "night", "point", "home", "water", "room", "mother",
    "area", "money", "story", "fact", "month", "lot", "right", "study", "book", "eye",
    "job", "word", "business", "issue", "side", "kind", "head", "house", "service",
    "friend", "father", "power", "hour", "game", "line", "end", "member", "law", "car",
    "city", "community", "name", "president", "team", "minute", "idea", "kid", "body",
    "information", "back", "parent", "face", "others", "level", "office", "door",
    "health", "person", "art", "war", "history", "party", "result", "change", "morning",
    "reason", "research", "girl", "guy", "moment", "air", "teacher", "force", "education",
    "good", "new", "first", "last", "long", "great", "little", "own", "other", "old",
    "big", "high", "different", "small", "large", "next", "early", "young", "important",
    "few", "public", "bad", "same", "able", "say", "make", "go", "know", "take", "see",
    "come", "think", "look", "want", "give", "use", "find", "tell", "ask", "seem",
    "feel", "try", "leave", "call", "keep", "let", "begin", "help", "talk", "turn",
    "start", "show", "hear", "play", "run", "move", "like", "live", "believe", "hold",
    "bring", "happen", "write", "provide", "sit", "stand", "lose", "pay", "meet",
    "include", "continue", "set", "learn", "lead", "understand", "watch", "follow",
    "stop", "create", "speak", "read", "allow", "add", "spend", "grow", "open", "walk",
    "win", "offer", "remember", "love", "consider", "appear", "buy", "wait", "serve",
    "die", "send", "expect", "build", "stay", "fall", "cut", "reach", "kill", "remain",
    "river", "mountain", "garden", "window", "summer", "winter", "music", "paper",
    "a", "I", "an", "to", "of", "in", "it", "is", "on", "at", "by", "we",
};
#define N_WORDS (sizeof words / sizeof *words)

void bench_prompts_free(bench_prompts *ps) {
    if (!ps)
        return;
    for (size_t i = 0; i < ps->n; i++)
        free(ps->v[i].req);
    free(ps->v);
    ps->v = NULL;
    ps->n = 0;
}

int bench_request_build(const bench_config *c, json_t *prompt, int64_t max_tokens,
                        char **out, size_t *out_len, asa_errbuf *eb) {
    *out = NULL;
    int rc = ASA_ENOMEM;
    char *body = NULL;
    json_t *o = json_object();
    if (!o)
        return ASA_ENOMEM;
    json_object_set_new(o, "model", json_string(c->model ? c->model : ""));
    if (c->endpoint == BENCH_EP_CHAT) {
        if (!json_is_string(prompt)) {
            rc = asa_errf(eb, ASA_EINVAL, "the chat endpoint needs text prompts");
            goto fail;
        }
        json_t *msg = json_pack("{s:s,s:O}", "role", "user", "content", prompt);
        json_object_set_new(o, "messages", json_pack("[o]", msg));
        json_object_set_new(o, "max_completion_tokens", json_integer(max_tokens));
        json_object_set_new(o, "max_tokens", json_integer(max_tokens));
    } else {
        json_object_set(o, "prompt", prompt);
        json_object_set_new(o, "max_tokens", json_integer(max_tokens));
    }
    json_object_set_new(o, "stream", json_true());
    json_object_set_new(o, "stream_options", json_pack("{s:b}", "include_usage", 1));
    if (c->ignore_eos)
        json_object_set_new(o, "ignore_eos", json_true());
    if (c->extra_body) {
        json_error_t je;
        json_t *x = json_loads(c->extra_body, 0, &je);
        if (!json_is_object(x)) {
            rc = asa_errf(eb, ASA_EINVAL, "--extra-body must be a JSON object%s%s",
                          x ? "" : ": ", x ? "" : je.text);
            json_decref(x);
            goto fail;
        }
        json_object_update(o, x);
        json_decref(x);
    }
    body = json_dumps(o, JSON_COMPACT);
    if (!body)
        goto fail;
    size_t blen = strlen(body);
    char auth[600] = "";
    if (c->api_key)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", c->api_key);
    size_t cap = 512 + strlen(c->url.path) + strlen(c->endpoint_path) + strlen(auth) +
                 strlen(c->url.host) + blen;
    char *req = malloc(cap);
    if (!req)
        goto fail;
    int hl = snprintf(req, cap,
                      "POST %s%s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: asa-bench\r\n"
                      "Accept: text/event-stream\r\nContent-Type: application/json\r\n"
                      "%sContent-Length: %zu\r\n\r\n",
                      c->url.path, c->endpoint_path, c->url.host, c->url.port, auth, blen);
    memcpy(req + hl, body, blen);
    req[(size_t)hl + blen] = '\0'; /* not sent; makes the bytes a C string */
    *out = req;
    *out_len = (size_t)hl + blen;
    rc = ASA_OK;
fail:
    free(body);
    json_decref(o);
    return rc;
}

/* ---- vocabulary through /tokenize --------------------------------------- */

/* POST /tokenize {"prompt": text}; returns the ids (new reference) or NULL. */
static json_t *tokenize(const bench_config *c, const char *text, char *why, size_t whylen) {
    json_t *req = json_pack("{s:s,s:s,s:b}", "model", c->model ? c->model : "", "prompt",
                            text, "add_special_tokens", 0);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    bench_sync_resp r;
    asa_errbuf eb = {why, whylen};
    int rc = bench_sync_request(c, "POST", "/tokenize", body, 30.0, &r, &eb);
    free(body);
    if (rc != ASA_OK)
        return NULL;
    json_t *ids = NULL;
    if (r.status != 200) {
        snprintf(why, whylen, "POST /tokenize answered HTTP %d", r.status);
    } else {
        json_t *doc = json_loads(r.body, 0, NULL);
        json_t *t = json_object_get(doc, "tokens");
        if (json_is_array(t))
            ids = json_incref(t);
        else
            snprintf(why, whylen, "POST /tokenize: no \"tokens\" array in the answer");
        json_decref(doc);
    }
    bench_sync_resp_free(&r);
    return ids;
}

typedef struct vocab {
    int64_t *ids; /* distinct token ids seen in the word list */
    size_t n_ids;
    int word_tokens[N_WORDS]; /* tokens per " word"; 1 when unknown */
    int have_counts;
    int special; /* tokens the server adds to every prompt (BOS) */
} vocab;

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* ids: tokenize the whole word list once; text: tokenize each word. */
static int vocab_load(const bench_config *c, int want_text, vocab *v, FILE *log) {
    char why[512] = "";
    memset(v, 0, sizeof *v);
    for (size_t i = 0; i < N_WORDS; i++)
        v->word_tokens[i] = 1;
    if (!want_text) {
        size_t cap = 0;
        for (size_t i = 0; i < N_WORDS; i++)
            cap += strlen(words[i]) + 1;
        char *all = malloc(cap + 1);
        if (!all)
            return ASA_ENOMEM;
        all[0] = '\0';
        for (size_t i = 0; i < N_WORDS; i++) {
            if (i)
                strcat(all, " ");
            strcat(all, words[i]);
        }
        json_t *ids = tokenize(c, all, why, sizeof why);
        free(all);
        if (!ids)
            goto none;
        size_t n = json_array_size(ids);
        v->ids = malloc((n + 1) * sizeof *v->ids);
        if (!v->ids) {
            json_decref(ids);
            return ASA_ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(ids, i);
            if (json_is_integer(e) && json_integer_value(e) >= 0)
                v->ids[v->n_ids++] = json_integer_value(e);
        }
        json_decref(ids);
        qsort(v->ids, v->n_ids, sizeof *v->ids, cmp_i64);
        size_t u = 0;
        for (size_t i = 0; i < v->n_ids; i++)
            if (u == 0 || v->ids[u - 1] != v->ids[i])
                v->ids[u++] = v->ids[i];
        v->n_ids = u;
        if (u == 0) {
            snprintf(why, sizeof why, "POST /tokenize returned no token ids");
            goto none;
        }
        return ASA_OK;
    }
    /* Servers that add special tokens (BOS) whatever add_special_tokens says
     * show them on every call: count them once on an empty prompt, take them
     * off each word, and leave room for them in each prompt. */
    json_t *empty = tokenize(c, "", why, sizeof why);
    v->special = empty ? (int)json_array_size(empty) : 0;
    json_decref(empty);
    for (size_t i = 0; i < N_WORDS; i++) {
        char w[64];
        snprintf(w, sizeof w, " %s", words[i]);
        json_t *ids = tokenize(c, w, why, sizeof why);
        if (!ids)
            goto none;
        int n = (int)json_array_size(ids) - v->special;
        v->word_tokens[i] = n > 0 ? n : 1;
        json_decref(ids);
    }
    v->have_counts = 1;
    return ASA_OK;
none:
    free(v->ids);
    v->ids = NULL;
    v->n_ids = 0;
    if (log)
        fprintf(log, "asa-bench: %s; the server's vocabulary is unknown.\n", why);
    return ASA_ENOTFOUND;
}

/* Random text of about `target` tokens. */
static char *random_text(const vocab *v, bench_rng *r, int64_t target, int64_t *got) {
    size_t cap = 64, len = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    s[0] = '\0';
    int64_t have = 0;
    while (have < target) {
        size_t w = (size_t)bench_rng_int(r, 0, (int64_t)N_WORDS - 1);
        for (int tries = 0; tries < 32 && v->word_tokens[w] > target - have; tries++)
            w = (size_t)bench_rng_int(r, 0, (int64_t)N_WORDS - 1);
        if (v->word_tokens[w] > target - have)
            break;
        size_t wl = strlen(words[w]);
        if (len + wl + 2 > cap) {
            while (len + wl + 2 > cap)
                cap *= 2;
            char *ns = realloc(s, cap);
            if (!ns) {
                free(s);
                return NULL;
            }
            s = ns;
        }
        if (len)
            s[len++] = ' ';
        memcpy(s + len, words[w], wl);
        len += wl;
        s[len] = '\0';
        have += v->word_tokens[w];
    }
    *got = have;
    return s;
}

/* ---- dataset ------------------------------------------------------------ */

static int dataset_load(const bench_config *c, json_t **out, asa_errbuf *eb) {
    FILE *f = fopen(c->dataset, "r");
    if (!f)
        return asa_errf(eb, ASA_EIO, "%s: cannot open", c->dataset);
    json_t *arr = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0, rc = ASA_OK;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        if (n == 0)
            continue;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)n, 0, &je);
        json_t *p = json_object_get(o, "prompt");
        if (!json_is_object(o) || !(json_is_string(p) || json_is_array(p))) {
            json_decref(o);
            rc = asa_errf(eb, ASA_EFORMAT,
                          "%s:%d: each line must be a JSON object with a \"prompt\" "
                          "(string or array of token ids)",
                          c->dataset, lineno);
            break;
        }
        json_array_append_new(arr, o);
    }
    free(line);
    fclose(f);
    if (rc == ASA_OK && json_array_size(arr) == 0)
        rc = asa_errf(eb, ASA_EFORMAT, "%s: no prompts", c->dataset);
    if (rc != ASA_OK) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return ASA_OK;
}

static int64_t dataset_output_len(json_t *o, int64_t dflt) {
    static const char *keys[] = {"output_len", "output_tokens", "max_tokens"};
    for (int i = 0; i < 3; i++) {
        json_t *v = json_object_get(o, keys[i]);
        if (json_is_integer(v) && json_integer_value(v) > 0)
            return json_integer_value(v);
    }
    return dflt;
}

/* ---- prompts ------------------------------------------------------------ */

int bench_prompts_make(const bench_config *c, FILE *log, bench_prompts *out,
                       asa_errbuf *eb) {
    memset(out, 0, sizeof *out);
    size_t n = (size_t)c->num_prompts;
    int rc;
    json_t *ds = NULL;
    vocab v;
    memset(&v, 0, sizeof v);
    bench_rng rng;
    bench_rng_seed(&rng, c->seed ^ 0x5eedf00dull);

    out->v = calloc(n ? n : 1, sizeof *out->v);
    if (!out->v)
        return ASA_ENOMEM;

    if (c->dataset) {
        if ((rc = dataset_load(c, &ds, eb)) != ASA_OK)
            goto fail;
        size_t nd = json_array_size(ds);
        for (size_t i = 0; i < n; i++) {
            json_t *o = json_array_get(ds, i % nd);
            json_t *p = json_object_get(o, "prompt");
            bench_prompt *bp = &out->v[i];
            bp->output_len = dataset_output_len(o, c->output_len);
            bp->input_len = json_is_array(p) ? (int64_t)json_array_size(p) : 0;
            if ((rc = bench_request_build(c, p, bp->output_len, &bp->req, &bp->req_len,
                                          eb)) != ASA_OK)
                goto fail;
            out->n++;
        }
        json_decref(ds);
        return ASA_OK;
    }

    int want_text = c->prompt_kind == BENCH_PROMPT_TEXT ||
                    (c->prompt_kind == BENCH_PROMPT_AUTO && c->endpoint == BENCH_EP_CHAT);
    if (!want_text && c->endpoint == BENCH_EP_CHAT) {
        rc = asa_errf(eb, ASA_EINVAL, "token-id prompts need --endpoint completions");
        goto fail;
    }
    if (want_text || c->vocab_size <= 0) {
        rc = vocab_load(c, want_text, &v, log);
        if (rc == ASA_ENOMEM)
            goto fail;
        if (rc == ASA_ENOTFOUND) {
            if (!want_text && log)
                fprintf(log, "asa-bench: falling back to text prompts of random words; "
                             "pass --vocab-size N for token-id prompts.\n");
            if (log)
                fprintf(log, "asa-bench: counting one token per word; the input lengths "
                             "reported come from the server's usage when it sends one.\n");
            want_text = 1;
        }
    }

    double rr = c->range_ratio;
    int64_t in_lo = (int64_t)floor((double)c->input_len * (1 - rr));
    int64_t in_hi = (int64_t)ceil((double)c->input_len * (1 + rr));
    int64_t out_lo = (int64_t)floor((double)c->output_len * (1 - rr));
    int64_t out_hi = (int64_t)ceil((double)c->output_len * (1 + rr));
    if (in_lo < 1)
        in_lo = 1;
    if (in_hi < in_lo)
        in_hi = in_lo;
    if (out_lo < 1)
        out_lo = 1;
    if (out_hi < out_lo)
        out_hi = out_lo;

    for (size_t i = 0; i < n; i++) {
        bench_prompt *bp = &out->v[i];
        int64_t il = bench_rng_int(&rng, in_lo, in_hi);
        bp->output_len = bench_rng_int(&rng, out_lo, out_hi);
        json_t *p;
        if (want_text) {
            int64_t got = 0;
            int64_t words_target = il - v.special > 0 ? il - v.special : 1;
            char *s = random_text(&v, &rng, words_target, &got);
            got += v.special;
            if (!s) {
                rc = ASA_ENOMEM;
                goto fail;
            }
            p = json_string(s);
            free(s);
            bp->input_len = got;
        } else {
            p = json_array();
            for (int64_t k = 0; p && k < il; k++) {
                int64_t id = c->vocab_size > 0
                                 ? bench_rng_int(&rng, 0, c->vocab_size - 1)
                                 : v.ids[bench_rng_int(&rng, 0, (int64_t)v.n_ids - 1)];
                json_array_append_new(p, json_integer(id));
            }
            bp->input_len = il;
        }
        if (!p) {
            rc = ASA_ENOMEM;
            goto fail;
        }
        rc = bench_request_build(c, p, bp->output_len, &bp->req, &bp->req_len, eb);
        json_decref(p);
        if (rc != ASA_OK)
            goto fail;
        out->n++;
    }
    free(v.ids);
    return ASA_OK;
fail:
    free(v.ids);
    json_decref(ds);
    bench_prompts_free(out);
    return rc;
}
