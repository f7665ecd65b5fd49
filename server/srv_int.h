/*
 * server/srv_int.h - the server's internal objects, shared by its files.
 *
 * Threads: libmicrohttpd's polling thread(s) run http.c and the HTTP half of
 * gen.c; the engine thread (engine/loop.h) runs the on_token/on_finish
 * callbacks of gen.c.  An srv_gen (one generation request) is the only object
 * both sides touch: its mutex guards the output buffer, the choices' results
 * and the suspension state; it is reference-counted (one reference for the
 * HTTP side, one per choice still inside the engine).
 */
#ifndef ASA_SRV_INT_H
#define ASA_SRV_INT_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "asa.h"
#include "chat.h"
#include "eng.h"
#include "loop.h"
#include "metrics.h"
#include "model.h"
#include "oai.h"
#include "srv_err.h"
#include "tok.h"

typedef enum srv_state { SRV_LOADING = 0, SRV_READY, SRV_DRAINING, SRV_DEAD } srv_state;

typedef struct srv_config {
    const char *model_dir;
    const char *host;
    int port;
    const char **api_keys;       /* [n_api_keys] */
    int n_api_keys;
    int max_num_seqs;
    int max_num_batched_tokens;
    size_t kv_cache_bytes;       /* 0 = use kv_cache_fraction */
    double kv_cache_fraction;    /* of physical memory (CPU) or free device memory */
    int max_queued_requests;
    int64_t max_queued_tokens;
    const char *served_model_name;
    const char *chat_template;   /* name or NULL (detect) */
    const char *backend;         /* "cpu" or "cuda" */
    int threads;                 /* CPU engine threads, 0 = all */
    int http_threads;
    size_t max_body_bytes;
    double drain_timeout;        /* seconds */
    int max_model_len;           /* 0 = model's max_position_embeddings */
} srv_config;

typedef struct srv {
    srv_config cfg;
    _Atomic int state;            /* srv_state */
    struct MHD_Daemon *httpd;
    srv_metrics *metrics;
    eng_model *model;
    eng *engine;
    eng_loop *loop;
    tok_tokenizer *tok;
    const char *model_name;       /* served name */
    srv_chat_template chat_tmpl;
    int max_model_len;
    int vocab_size;
    int eos_id;                   /* -1 if none */
    char *bos_text;               /* for templates; may be NULL */
    double created;               /* unix time at start */
    /* Live generation requests, for the disconnect poll. */
    pthread_mutex_t gens_mu;
    struct srv_gen *gens;         /* doubly linked */
    _Atomic uint64_t next_id;
} srv;

typedef enum srv_route {
    R_NONE = 0, R_COMPLETIONS, R_CHAT, R_MODELS, R_MODEL_ONE, R_TOKENIZE, R_DETOKENIZE,
    R_HEALTH, R_LIVE, R_METRICS, R_VERSION
} srv_route;

/* Per-connection request context (libmicrohttpd's con_cls). */
typedef struct srv_conn {
    srv_route route;
    bool method_ok;
    bool too_large;
    char *body;
    size_t body_len, body_cap;
    struct srv_gen *gen;          /* generation in flight, if any */
    double t_start;
} srv_conn;

/* http.c */
enum MHD_Result srv_send_json(struct MHD_Connection *c, int status, json_t *j /* stolen */);
enum MHD_Result srv_send_error(srv *s, struct MHD_Connection *c, const srv_error *e);
int srv_http_start(srv *s);
void srv_http_stop(srv *s);

/* gen.c: /v1/completions and /v1/chat/completions */
enum MHD_Result srv_gen_handle(srv *s, struct MHD_Connection *c, srv_conn *cx, json_t *body);
/* Called when a suspended non-streaming generation is resumed. */
enum MHD_Result srv_gen_resume(srv *s, struct MHD_Connection *c, srv_conn *cx);
/* The HTTP side is done with cx->gen (request completed or connection gone). */
void srv_gen_http_release(srv *s, srv_conn *cx, bool client_gone);
/* Engine-thread hook: cancel generations whose client went away. */
void srv_gen_poll_disconnects(void *srv_ptr);

/* tokenize.c: /tokenize and /detokenize */
enum MHD_Result srv_tokenize_handle(srv *s, struct MHD_Connection *c, json_t *body, bool detok);

#endif
