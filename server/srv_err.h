/*
 * server/srv_err.h - the server's error vocabulary, and the single place
 * where an error becomes an HTTP status and an OpenAI error object.
 *
 * Every code path that rejects a request fills an srv_error (kind, param,
 * message); http.c turns it into a response with srv_error_status() and
 * srv_error_json().  Nothing else picks HTTP statuses for errors.
 */
#ifndef ASA_SRV_ERR_H
#define ASA_SRV_ERR_H

#include <jansson.h>
#include <stdarg.h>

/* X(KIND, http status, OpenAI "type", OpenAI "code" or NULL) */
#define SRV_ERR_MAP(X)                                                        \
    X(BAD_REQUEST, 400, "invalid_request_error", NULL)                        \
    X(BAD_JSON, 400, "invalid_request_error", "invalid_json")                 \
    X(BAD_PARAM, 400, "invalid_request_error", "invalid_parameter")           \
    X(UNSUPPORTED_PARAM, 400, "invalid_request_error", "unsupported_parameter") \
    X(CONTEXT_LENGTH, 400, "invalid_request_error", "context_length_exceeded") \
    X(UNAUTHORIZED, 401, "authentication_error", "invalid_api_key")           \
    X(NOT_FOUND, 404, "not_found_error", "not_found")                         \
    X(MODEL_NOT_FOUND, 404, "not_found_error", "model_not_found")             \
    X(METHOD, 405, "invalid_request_error", "method_not_allowed")             \
    X(TOO_LARGE, 413, "invalid_request_error", "request_too_large")           \
    X(UNSUPPORTED_MEDIA, 415, "invalid_request_error", "unsupported_media_type") \
    X(OVERLOADED, 429, "rate_limit_error", "server_overloaded")               \
    X(INTERNAL, 500, "server_error", "internal_error")                        \
    X(UNAVAILABLE, 503, "server_error", "service_unavailable")

typedef enum srv_err_kind {
    SRV_OK = 0,
#define SRV__ERR_ENUM(k, s, t, c) SRV_E_##k,
    SRV_ERR_MAP(SRV__ERR_ENUM)
#undef SRV__ERR_ENUM
} srv_err_kind;

typedef struct srv_error {
    srv_err_kind kind;    /* SRV_OK when no error */
    char param[64];       /* offending parameter ("" = none) */
    char message[512];
    int retry_after;      /* seconds, for OVERLOADED / UNAVAILABLE; 0 = none */
} srv_error;

/* Sets *e (if e is not NULL) and returns -1, for `return srv_fail(...)`. */
int srv_fail(srv_error *e, srv_err_kind kind, const char *param,
             const char *fmt, ...) __attribute__((format(printf, 4, 5)));

int srv_error_status(const srv_error *e);
/* {"error": {"message", "type", "param", "code"}}; new reference. */
json_t *srv_error_json(const srv_error *e);

#endif
