/* server/srv_err.c - errors to HTTP statuses and OpenAI error objects: the
 * one place where that mapping lives. */
#include "srv_err.h"

#include <stdio.h>
#include <string.h>

int srv_fail(srv_error *e, srv_err_kind kind, const char *param,
             const char *fmt, ...) {
    if (!e)
        return -1;
    e->kind = kind;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

int srv_error_status(const srv_error *e) {
    switch (e->kind) {
#define SRV__ERR_STATUS(k, s, t, c)                                           \
    case SRV_E_##k:                                                           \
        return s;
        SRV_ERR_MAP(SRV__ERR_STATUS)
#undef SRV__ERR_STATUS
    default:
        return 500;
    }
}

/* A JSON string that survives invalid UTF-8 in the text (bytes of a client's
 * input echoed into a message): such bytes become '?'. */
static json_t *safe_string(const char *s) {
    json_t *j = json_string(s);
    if (j)
        return j;
    char buf[sizeof ((srv_error *)0)->message];
    size_t n = 0;
    for (; s[n] && n + 1 < sizeof buf; n++)
        buf[n] = (unsigned char)s[n] < 0x80 ? s[n] : '?';
    buf[n] = 0;
    return json_string(buf);
}

json_t *srv_error_json(const srv_error *e) {
    const char *type = "server_error", *code = NULL;
    switch (e->kind) {
#define SRV__ERR_TYPE(k, s, t, c)                                             \
    case SRV_E_##k:                                                           \
        type = t;                                                             \
        code = c;                                                             \
        break;
        SRV_ERR_MAP(SRV__ERR_TYPE)
#undef SRV__ERR_TYPE
    default:
        break;
    }
    json_t *err = json_object();
    json_object_set_new(err, "message", safe_string(e->message[0] ? e->message : "error"));
    json_object_set_new(err, "type", json_string(type));
    json_object_set_new(err, "param", e->param[0] ? safe_string(e->param) : json_null());
    json_object_set_new(err, "code", code ? json_string(code) : json_null());
    json_t *root = json_object();
    json_object_set_new(root, "error", err);
    return root;
}
