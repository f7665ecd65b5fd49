/* server/tokenize.c - POST /tokenize and POST /detokenize (vLLM's shapes). */
#include <stdlib.h>
#include <string.h>

#include "srv_int.h"

static enum MHD_Result tokenize(srv *s, struct MHD_Connection *c, json_t *body) {
    srv_error e = {0};
    asa_arena *a = asa_arena_create(0);
    if (!a) {
        srv_fail(&e, SRV_E_INTERNAL, NULL, "out of memory");
        return srv_send_error(s, c, &e);
    }
    enum MHD_Result ret;
    const char *text = NULL;
    size_t len = 0;
    bool add_special = true;
    json_t *model = json_object_get(body, "model");
    if (model && !json_is_null(model) &&
        (!json_is_string(model) || strcmp(json_string_value(model), s->model_name) != 0)) {
        srv_fail(&e, SRV_E_MODEL_NOT_FOUND, "model", "The model '%.200s' does not exist.",
                 json_is_string(model) ? json_string_value(model) : "?");
        goto err;
    }
    json_t *prompt = json_object_get(body, "prompt");
    json_t *messages = json_object_get(body, "messages");
    if (prompt && json_is_string(prompt)) {
        text = json_string_value(prompt);
        len = json_string_length(prompt);
    } else if (messages) {
        srv_params p;
        if (srv_parse_chat(body, a, &p, &e))
            goto err;
        add_special = false;
        text = srv_chat_render(s->chat_tmpl, &p, s->bos_text, a, &len);
        if (!text) {
            srv_fail(&e, SRV_E_INTERNAL, NULL, "out of memory");
            goto err;
        }
    } else {
        srv_fail(&e, SRV_E_BAD_PARAM, "prompt", "'prompt' (a string) or 'messages' is required");
        goto err;
    }
    json_t *as = json_object_get(body, "add_special_tokens");
    if (as && !json_is_null(as)) {
        if (!json_is_boolean(as)) {
            srv_fail(&e, SRV_E_BAD_PARAM, "add_special_tokens", "'add_special_tokens' must be a boolean");
            goto err;
        }
        add_special = json_is_true(as);
    }
    tok_ids ids = {0};
    char msg[256] = "";
    asa_errbuf eb = {msg, sizeof msg};
    asa_err err = tok_encode(s->tok, text, len, add_special, &ids, &eb);
    if (err) {
        tok_ids_free(&ids);
        srv_fail(&e, err == ASA_ENOMEM ? SRV_E_INTERNAL : SRV_E_BAD_PARAM, "prompt",
                 "cannot tokenize: %s", msg[0] ? msg : asa_strerror(err));
        goto err;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < ids.len; i++)
        json_array_append_new(arr, json_integer(ids.ids[i]));
    json_t *out = json_pack("{s:o, s:i, s:i}", "tokens", arr, "count", (int)ids.len, "max_model_len",
                            s->max_model_len);
    tok_ids_free(&ids);
    asa_arena_destroy(a);
    srv_metrics_http(s->metrics, 200);
    return srv_send_json(c, 200, out);
err:
    ret = srv_send_error(s, c, &e);
    asa_arena_destroy(a);
    return ret;
}

static enum MHD_Result detokenize(srv *s, struct MHD_Connection *c, json_t *body) {
    srv_error e = {0};
    json_t *toks = json_object_get(body, "tokens");
    if (!json_is_array(toks)) {
        srv_fail(&e, SRV_E_BAD_PARAM, "tokens", "'tokens' must be an array of token ids");
        return srv_send_error(s, c, &e);
    }
    size_t n = json_array_size(toks);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        srv_fail(&e, SRV_E_INTERNAL, NULL, "out of memory");
        return srv_send_error(s, c, &e);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(toks, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= s->vocab_size) {
            free(ids);
            srv_fail(&e, SRV_E_BAD_PARAM, "tokens", "'tokens' must hold token ids in [0, %d)", s->vocab_size);
            return srv_send_error(s, c, &e);
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    tok_str out = {0};
    asa_err err = tok_decode(s->tok, ids, n, false, &out);
    free(ids);
    if (err) {
        tok_str_free(&out);
        srv_fail(&e, SRV_E_INTERNAL, NULL, "cannot decode: %s", asa_strerror(err));
        return srv_send_error(s, c, &e);
    }
    json_t *j = json_pack("{s:s%}", "prompt", out.data ? out.data : "", out.len);
    tok_str_free(&out);
    srv_metrics_http(s->metrics, 200);
    return srv_send_json(c, 200, j);
}

enum MHD_Result srv_tokenize_handle(srv *s, struct MHD_Connection *c, json_t *body, bool detok) {
    return detok ? detokenize(s, c, body) : tokenize(s, c, body);
}
