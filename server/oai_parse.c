/* server/oai_parse.c - OpenAI completion and chat request bodies to
 * srv_params, with every check that does not need the model. */
#include "oai.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- typed getters: absent or null leaves *out untouched ---------------- */

static int get_number(json_t *o, const char *key, double lo, double hi,
                      double *out, srv_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return srv_fail(e, SRV_E_BAD_PARAM, key, "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi)
        return srv_fail(e, SRV_E_BAD_PARAM, key,
                        "'%s' must be between %g and %g, got %g", key, lo, hi, d);
    *out = d;
    return 0;
}

static int get_float(json_t *o, const char *key, double lo, double hi,
                     float *out, srv_error *e) {
    double d = *out;
    if (get_number(o, key, lo, hi, &d, e))
        return -1;
    *out = (float)d;
    return 0;
}

/* Integers: a JSON integer, or a real with an integral value. */
static int as_int64(json_t *v, long long *out) {
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (isfinite(d) && d == floor(d) && fabs(d) < 9e15) {
            *out = (long long)d;
            return 0;
        }
    }
    return -1;
}

static int get_int(json_t *o, const char *key, long long lo, long long hi,
                   int *out, srv_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    long long x;
    if (as_int64(v, &x))
        return srv_fail(e, SRV_E_BAD_PARAM, key, "'%s' must be an integer", key);
    if (x < lo || x > hi)
        return srv_fail(e, SRV_E_BAD_PARAM, key,
                        "'%s' must be between %lld and %lld, got %lld", key, lo, hi, x);
    *out = (int)x;
    return 0;
}

static int get_bool(json_t *o, const char *key, bool *out, srv_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return srv_fail(e, SRV_E_BAD_PARAM, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

static int get_string(json_t *o, const char *key, asa_arena *a,
                      const char **out, srv_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return srv_fail(e, SRV_E_BAD_PARAM, key, "'%s' must be a string", key);
    *out = asa_arena_strndup(a, json_string_value(v), json_string_length(v));
    if (!*out)
        return srv_fail(e, SRV_E_INTERNAL, NULL, "out of memory");
    return 0;
}

static int oom(srv_error *e) {
    return srv_fail(e, SRV_E_INTERNAL, NULL, "out of memory");
}

/* ---- shared fields ----------------------------------------------------- */

static void defaults(srv_params *p, srv_kind kind) {
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->max_tokens = kind == SRV_COMPLETION ? 16 : -1;
    p->n = 1;
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
    p->logprobs = -1;
    p->add_generation_prompt = true;
    p->add_special_tokens = kind == SRV_COMPLETION;
    p->skip_special_tokens = true;
}

static int parse_stop(json_t *body, asa_arena *a, srv_params *p, srv_error *e) {
    json_t *v = json_object_get(body, "stop");
    if (!v || json_is_null(v))
        return 0;
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > SRV_MAX_STOP)
            return srv_fail(e, SRV_E_BAD_PARAM, "stop",
                            "'stop' may hold at most %d strings, got %zu", SRV_MAX_STOP, n);
        items = NULL;
    } else if (!json_is_string(v)) {
        return srv_fail(e, SRV_E_BAD_PARAM, "stop", "'stop' must be a string or an array of strings");
    }
    p->stop = asa_arena_alloc(a, (n ? n : 1) * sizeof *p->stop);
    if (!p->stop)
        return oom(e);
    for (size_t i = 0; i < n; i++) {
        json_t *s = items ? items[i] : json_array_get(v, i);
        if (!json_is_string(s))
            return srv_fail(e, SRV_E_BAD_PARAM, "stop", "'stop' must be a string or an array of strings");
        size_t len = json_string_length(s);
        if (len == 0)
            return srv_fail(e, SRV_E_BAD_PARAM, "stop", "stop strings must not be empty");
        if (len > SRV_MAX_STOP_LEN)
            return srv_fail(e, SRV_E_BAD_PARAM, "stop",
                            "stop strings may be at most %d bytes, got %zu", SRV_MAX_STOP_LEN, len);
        if (memchr(json_string_value(s), 0, len))
            return srv_fail(e, SRV_E_BAD_PARAM, "stop", "stop strings must not contain NUL");
        p->stop[p->n_stop] = asa_arena_strndup(a, json_string_value(s), len);
        if (!p->stop[p->n_stop])
            return oom(e);
        p->n_stop++;
    }
    return 0;
}

static int parse_id_array(json_t *v, const char *key, asa_arena *a,
                          int32_t **ids, int *n_ids, size_t max_n, srv_error *e) {
    size_t n = json_array_size(v);
    if (n > max_n)
        return srv_fail(e, SRV_E_BAD_PARAM, key, "'%s' is too long (%zu ids, at most %zu)", key, n, max_n);
    *ids = asa_arena_alloc(a, (n ? n : 1) * sizeof **ids);
    if (!*ids)
        return oom(e);
    for (size_t i = 0; i < n; i++) {
        long long x;
        if (as_int64(json_array_get(v, i), &x) || x < 0 || x > INT32_MAX)
            return srv_fail(e, SRV_E_BAD_PARAM, key, "'%s' must hold non-negative integer token ids", key);
        (*ids)[i] = (int32_t)x;
    }
    *n_ids = (int)n;
    return 0;
}

static int parse_logit_bias(json_t *body, asa_arena *a, srv_params *p, srv_error *e) {
    json_t *v = json_object_get(body, "logit_bias");
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return srv_fail(e, SRV_E_BAD_PARAM, "logit_bias", "'logit_bias' must be an object mapping token ids to numbers");
    size_t n = json_object_size(v);
    if (n > SRV_MAX_LOGIT_BIAS)
        return srv_fail(e, SRV_E_BAD_PARAM, "logit_bias", "'logit_bias' may hold at most %d entries", SRV_MAX_LOGIT_BIAS);
    p->bias_ids = asa_arena_alloc(a, (n ? n : 1) * sizeof *p->bias_ids);
    p->bias_vals = asa_arena_alloc(a, (n ? n : 1) * sizeof *p->bias_vals);
    if (!p->bias_ids || !p->bias_vals)
        return oom(e);
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
        char *end;
        long long id = strtoll(key, &end, 10);
        if (!*key || *end || id < 0 || id > INT32_MAX)
            return srv_fail(e, SRV_E_BAD_PARAM, "logit_bias", "'logit_bias' keys must be token ids, got \"%.40s\"", key);
        if (!json_is_number(val) || !isfinite(json_number_value(val)) ||
            json_number_value(val) < -100 || json_number_value(val) > 100)
            return srv_fail(e, SRV_E_BAD_PARAM, "logit_bias", "'logit_bias' values must be numbers between -100 and 100");
        p->bias_ids[p->n_bias] = (int32_t)id;
        p->bias_vals[p->n_bias] = (float)json_number_value(val);
        p->n_bias++;
    }
    return 0;
}

/* Fields shared by both endpoints. */
static int parse_common(json_t *body, asa_arena *a, srv_params *p, srv_error *e) {
    if (get_string(body, "model", a, &p->model, e) ||
        get_int(body, "max_tokens", 1, INT32_MAX, &p->max_tokens, e) ||
        get_int(body, "min_tokens", 0, INT32_MAX, &p->min_tokens, e) ||
        get_int(body, "n", 1, SRV_MAX_N, &p->n, e) ||
        get_float(body, "temperature", 0, 1e4, &p->temperature, e) ||
        get_float(body, "top_p", 0, 1, &p->top_p, e) ||
        get_int(body, "top_k", -1, INT32_MAX, &p->top_k, e) ||
        get_float(body, "min_p", 0, 1, &p->min_p, e) ||
        get_float(body, "presence_penalty", -2, 2, &p->presence_penalty, e) ||
        get_float(body, "frequency_penalty", -2, 2, &p->frequency_penalty, e) ||
        get_float(body, "repetition_penalty", 1e-6, 1e4, &p->repetition_penalty, e) ||
        get_bool(body, "stream", &p->stream, e) ||
        get_bool(body, "echo", &p->echo, e) ||
        get_bool(body, "ignore_eos", &p->ignore_eos, e) ||
        get_bool(body, "skip_special_tokens", &p->skip_special_tokens, e) ||
        get_bool(body, "add_special_tokens", &p->add_special_tokens, e) ||
        get_int(body, "priority", -1000000, 1000000, &p->priority, e) ||
        get_string(body, "user", a, &p->user, e))
        return -1;
    if (p->top_k < 0)
        p->top_k = 0;
    if (p->top_p <= 0)
        return srv_fail(e, SRV_E_BAD_PARAM, "top_p", "'top_p' must be in (0, 1], got 0");

    json_t *seed = json_object_get(body, "seed");
    if (seed && !json_is_null(seed)) {
        long long s;
        if (as_int64(seed, &s))
            return srv_fail(e, SRV_E_BAD_PARAM, "seed", "'seed' must be an integer");
        p->has_seed = true;
        p->seed = (uint64_t)s;
    }

    json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return srv_fail(e, SRV_E_BAD_PARAM, "stream_options", "'stream_options' must be an object");
        if (!p->stream)
            return srv_fail(e, SRV_E_BAD_PARAM, "stream_options",
                            "'stream_options' is only allowed when 'stream' is true");
        json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_null(iu)) {
            if (!json_is_boolean(iu))
                return srv_fail(e, SRV_E_BAD_PARAM, "stream_options.include_usage",
                                "'stream_options.include_usage' must be a boolean");
            p->include_usage = json_is_true(iu);
        }
    }

    json_t *sti = json_object_get(body, "stop_token_ids");
    if (sti && !json_is_null(sti)) {
        if (!json_is_array(sti))
            return srv_fail(e, SRV_E_BAD_PARAM, "stop_token_ids", "'stop_token_ids' must be an array of token ids");
        if (parse_id_array(sti, "stop_token_ids", a, &p->stop_ids, &p->n_stop_ids, 1024, e))
            return -1;
    }

    /* Meaningful parameters we do not support: refuse rather than ignore. */
    json_t *bo = json_object_get(body, "best_of");
    if (bo && !json_is_null(bo)) {
        long long x;
        if (as_int64(bo, &x) || x < 1)
            return srv_fail(e, SRV_E_BAD_PARAM, "best_of", "'best_of' must be a positive integer");
        if (x > 1)
            return srv_fail(e, SRV_E_UNSUPPORTED_PARAM, "best_of", "'best_of' > 1 is not supported");
    }
    if (parse_stop(body, a, p, e) || parse_logit_bias(body, a, p, e))
        return -1;
    if (p->max_tokens >= 0 && p->min_tokens > p->max_tokens)
        return srv_fail(e, SRV_E_BAD_PARAM, "min_tokens",
                        "'min_tokens' (%d) must not exceed 'max_tokens' (%d)", p->min_tokens, p->max_tokens);
    return 0;
}

/* ---- /v1/completions --------------------------------------------------- */

static int parse_prompt(json_t *body, asa_arena *a, srv_params *p, srv_error *e) {
    json_t *v = json_object_get(body, "prompt");
    if (!v || json_is_null(v))
        return srv_fail(e, SRV_E_BAD_PARAM, "prompt", "'prompt' is required");
    if (json_is_string(v)) {
        p->prompts = asa_arena_alloc(a, sizeof *p->prompts);
        if (!p->prompts)
            return oom(e);
        memset(p->prompts, 0, sizeof *p->prompts);
        p->prompts[0].text = asa_arena_strndup(a, json_string_value(v), json_string_length(v));
        p->prompts[0].text_len = json_string_length(v);
        p->n_prompts = 1;
        return p->prompts[0].text ? 0 : oom(e);
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return srv_fail(e, SRV_E_BAD_PARAM, "prompt",
                        "'prompt' must be a string, an array of strings, an array of token ids "
                        "or an array of token id arrays, and not empty");
    json_t *first = json_array_get(v, 0);
    size_t n = json_array_size(v);
    if (json_is_number(first)) { /* one prompt of ids */
        p->prompts = asa_arena_alloc(a, sizeof *p->prompts);
        if (!p->prompts)
            return oom(e);
        memset(p->prompts, 0, sizeof *p->prompts);
        p->n_prompts = 1;
        return parse_id_array(v, "prompt", a, &p->prompts[0].ids, &p->prompts[0].n_ids, 1u << 24, e);
    }
    if (n > SRV_MAX_PROMPTS)
        return srv_fail(e, SRV_E_BAD_PARAM, "prompt", "at most %d prompts per request, got %zu", SRV_MAX_PROMPTS, n);
    p->prompts = asa_arena_alloc(a, n * sizeof *p->prompts);
    if (!p->prompts)
        return oom(e);
    memset(p->prompts, 0, n * sizeof *p->prompts);
    p->n_prompts = (int)n;
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(v, i);
        if (json_is_string(it) && json_is_string(first)) {
            p->prompts[i].text = asa_arena_strndup(a, json_string_value(it), json_string_length(it));
            p->prompts[i].text_len = json_string_length(it);
            if (!p->prompts[i].text)
                return oom(e);
        } else if (json_is_array(it) && json_is_array(first)) {
            if (json_array_size(it) == 0)
                return srv_fail(e, SRV_E_BAD_PARAM, "prompt", "token id arrays in 'prompt' must not be empty");
            if (parse_id_array(it, "prompt", a, &p->prompts[i].ids, &p->prompts[i].n_ids, 1u << 24, e))
                return -1;
        } else {
            return srv_fail(e, SRV_E_BAD_PARAM, "prompt",
                            "'prompt' arrays must hold only strings or only token id arrays");
        }
    }
    return 0;
}

int srv_parse_completion(json_t *body, asa_arena *a, srv_params *p, srv_error *e) {
    defaults(p, SRV_COMPLETION);
    if (!json_is_object(body))
        return srv_fail(e, SRV_E_BAD_JSON, NULL, "the request body must be a JSON object");
    if (parse_common(body, a, p, e) || parse_prompt(body, a, p, e))
        return -1;
    json_t *lp = json_object_get(body, "logprobs");
    if (lp && !json_is_null(lp)) {
        long long x;
        if (json_is_boolean(lp) || as_int64(lp, &x) || x < 0 || x > 20)
            return srv_fail(e, SRV_E_BAD_PARAM, "logprobs", "'logprobs' must be an integer between 0 and 20");
        p->logprobs = (int)x;
    }
    json_t *suffix = json_object_get(body, "suffix");
    if (suffix && !json_is_null(suffix))
        return srv_fail(e, SRV_E_UNSUPPORTED_PARAM, "suffix", "'suffix' is not supported");
    if (p->echo && p->logprobs >= 0)
        return srv_fail(e, SRV_E_UNSUPPORTED_PARAM, "echo",
                        "'echo' together with 'logprobs' (prompt logprobs) is not supported");
    return 0;
}

/* ---- /v1/chat/completions ---------------------------------------------- */

static int parse_content(json_t *c, asa_arena *a, const char **out, size_t i, srv_error *e) {
    if (!c || json_is_null(c)) {
        *out = "";
        return 0;
    }
    if (json_is_string(c)) {
        *out = asa_arena_strndup(a, json_string_value(c), json_string_length(c));
        return *out ? 0 : oom(e);
    }
    if (!json_is_array(c))
        return srv_fail(e, SRV_E_BAD_PARAM, "messages",
                        "messages[%zu].content must be a string or an array of text parts", i);
    size_t total = 0, k;
    json_t *part;
    json_array_foreach(c, k, part) {
        json_t *type = json_object_get(part, "type");
        json_t *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0)
            return srv_fail(e, SRV_E_UNSUPPORTED_PARAM, "messages",
                            "messages[%zu].content[%zu]: only parts of type 'text' are supported", i, k);
        if (!json_is_string(text))
            return srv_fail(e, SRV_E_BAD_PARAM, "messages",
                            "messages[%zu].content[%zu].text must be a string", i, k);
        total += json_string_length(text);
    }
    char *buf = asa_arena_alloc(a, total + 1);
    if (!buf)
        return oom(e);
    size_t off = 0;
    json_array_foreach(c, k, part) {
        json_t *text = json_object_get(part, "text");
        memcpy(buf + off, json_string_value(text), json_string_length(text));
        off += json_string_length(text);
    }
    buf[off] = 0;
    *out = buf;
    return 0;
}

int srv_parse_chat(json_t *body, asa_arena *a, srv_params *p, srv_error *e) {
    defaults(p, SRV_CHAT);
    if (!json_is_object(body))
        return srv_fail(e, SRV_E_BAD_JSON, NULL, "the request body must be a JSON object");
    if (parse_common(body, a, p, e))
        return -1;
    int mct = -2;
    if (get_int(body, "max_completion_tokens", 1, INT32_MAX, &mct, e))
        return -1;
    if (mct != -2)
        p->max_tokens = mct;
    if (p->max_tokens >= 0 && p->min_tokens > p->max_tokens)
        return srv_fail(e, SRV_E_BAD_PARAM, "min_tokens",
                        "'min_tokens' (%d) must not exceed the maximum of new tokens (%d)",
                        p->min_tokens, p->max_tokens);

    bool lp = false;
    int top = 0;
    if (get_bool(body, "logprobs", &lp, e) || get_int(body, "top_logprobs", 0, 20, &top, e))
        return -1;
    if (json_object_get(body, "top_logprobs") && !json_is_null(json_object_get(body, "top_logprobs")) && !lp)
        return srv_fail(e, SRV_E_BAD_PARAM, "top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
    p->logprobs = lp ? top : -1;
    if (get_bool(body, "add_generation_prompt", &p->add_generation_prompt, e) ||
        get_bool(body, "continue_final_message", &p->continue_final_message, e))
        return -1;

    static const char *unsupported[] = {"tools", "functions", "tool_choice", "function_call", "audio", NULL};
    for (int i = 0; unsupported[i]; i++) {
        json_t *v = json_object_get(body, unsupported[i]);
        if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0) &&
            !(json_is_string(v) && strcmp(json_string_value(v), "none") == 0))
            return srv_fail(e, SRV_E_UNSUPPORTED_PARAM, unsupported[i], "'%s' is not supported", unsupported[i]);
    }
    json_t *rf = json_object_get(body, "response_format");
    if (rf && !json_is_null(rf)) {
        json_t *t = json_object_get(rf, "type");
        if (!json_is_string(t) || strcmp(json_string_value(t), "text") != 0)
            return srv_fail(e, SRV_E_UNSUPPORTED_PARAM, "response_format",
                            "only 'response_format' {\"type\": \"text\"} is supported");
    }

    json_t *msgs = json_object_get(body, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return srv_fail(e, SRV_E_BAD_PARAM, "messages", "'messages' must be a non-empty array");
    size_t n = json_array_size(msgs);
    if (n > 4096)
        return srv_fail(e, SRV_E_BAD_PARAM, "messages", "at most 4096 messages");
    p->messages = asa_arena_alloc(a, n * sizeof *p->messages);
    if (!p->messages)
        return oom(e);
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m))
            return srv_fail(e, SRV_E_BAD_PARAM, "messages", "messages[%zu] must be an object", i);
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role))
            return srv_fail(e, SRV_E_BAD_PARAM, "messages", "messages[%zu].role must be a string", i);
        const char *r = json_string_value(role);
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "developer"))
            return srv_fail(e, SRV_E_BAD_PARAM, "messages",
                            "messages[%zu].role must be system, developer, user or assistant", i);
        p->messages[i].role = asa_arena_strdup(a, r);
        if (!p->messages[i].role)
            return oom(e);
        if (parse_content(json_object_get(m, "content"), a, &p->messages[i].content, i, e))
            return -1;
    }
    p->n_messages = (int)n;
    if (p->continue_final_message && strcmp(p->messages[n - 1].role, "assistant") != 0)
        return srv_fail(e, SRV_E_BAD_PARAM, "continue_final_message",
                        "'continue_final_message' needs the last message to be from the assistant");
    if (p->continue_final_message)
        p->add_generation_prompt = false;
    p->prompts = asa_arena_alloc(a, sizeof *p->prompts);
    if (!p->prompts)
        return oom(e);
    memset(p->prompts, 0, sizeof *p->prompts);
    p->n_prompts = 1;
    return 0;
}

/* ---- checks against the model ----------------------------------------- */

int srv_params_check_model(srv_params *p, int vocab_size, int max_model_len, srv_error *e) {
    for (int i = 0; i < p->n_bias; i++)
        if (p->bias_ids[i] >= vocab_size)
            return srv_fail(e, SRV_E_BAD_PARAM, "logit_bias",
                            "'logit_bias' token id %d is outside the vocabulary (size %d)",
                            p->bias_ids[i], vocab_size);
    for (int i = 0; i < p->n_stop_ids; i++)
        if (p->stop_ids[i] >= vocab_size)
            return srv_fail(e, SRV_E_BAD_PARAM, "stop_token_ids",
                            "'stop_token_ids' id %d is outside the vocabulary (size %d)",
                            p->stop_ids[i], vocab_size);
    int longest = 0;
    for (int i = 0; i < p->n_prompts; i++) {
        srv_prompt *pr = &p->prompts[i];
        if (pr->n_ids == 0)
            return srv_fail(e, SRV_E_BAD_PARAM, "prompt", "the prompt is empty after tokenization");
        for (int j = 0; j < pr->n_ids; j++)
            if (pr->ids[j] < 0 || pr->ids[j] >= vocab_size)
                return srv_fail(e, SRV_E_BAD_PARAM, "prompt",
                                "prompt token id %d is outside the vocabulary (size %d)",
                                pr->ids[j], vocab_size);
        if (pr->n_ids > longest)
            longest = pr->n_ids;
    }
    if (longest >= max_model_len)
        return srv_fail(e, SRV_E_CONTEXT_LENGTH, "prompt",
                        "this model's maximum context length is %d tokens, but the prompt has %d "
                        "tokens, leaving no room for new tokens", max_model_len, longest);
    if (p->max_tokens < 0) {
        p->max_tokens = max_model_len - longest;
    } else if ((long long)longest + p->max_tokens > max_model_len) {
        /* The sum in long long: max_tokens may be up to INT32_MAX. */
        return srv_fail(e, SRV_E_CONTEXT_LENGTH, "max_tokens",
                        "this model's maximum context length is %d tokens, but %lld tokens were "
                        "requested (%d in the prompt + %d in max_tokens); reduce the prompt or max_tokens",
                        max_model_len, (long long)longest + p->max_tokens, longest, p->max_tokens);
    }
    if (p->min_tokens > p->max_tokens)
        return srv_fail(e, SRV_E_BAD_PARAM, "min_tokens",
                        "'min_tokens' (%d) must not exceed 'max_tokens' (%d)", p->min_tokens, p->max_tokens);
    return 0;
}
