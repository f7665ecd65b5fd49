/*
 * server/gen.c - /v1/completions and /v1/chat/completions.
 *
 * HTTP side (libmicrohttpd threads): parse and validate, apply the chat
 * template, tokenize, submit one engine request per choice (prompts x n),
 * then either stream (a callback response that suspends while it has
 * nothing to send) or suspend until every choice has finished and answer
 * with one JSON body.
 *
 * Engine side (the engine thread, through loop.h callbacks): each generated
 * token goes through the incremental detokenizer and the stop-string
 * matcher; released text is formatted as an SSE chunk (streaming) or kept
 * (non-streaming); a matched stop string ends the request.  The gen object's
 * mutex guards everything both sides touch; output is appended under it and
 * the connection resumed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "srv_int.h"

#define MOD "gen"

typedef struct srv_choice {
    struct srv_gen *g;
    int index;            /* output index: prompt_idx * n + k */
    int prompt_idx;
    uint64_t eng_id;
    bool submitted;
    bool finished;        /* on_finish ran */
    eng_finish_reason why;
    char error[256];
    /* engine-thread state */
    tok_stream *dec;
    tok_stop *stop;
    bool stop_matched;
    tok_str piece, rel;
    int n_generated;
    double t_last;        /* last token time, for inter-token latency */
    /* output: the whole text (non-streaming) or text not yet sent (stream) */
    tok_str text;
    size_t text_offset;   /* bytes of this choice's text so far (logprobs) */
    json_t *lp;           /* pending logprobs (completions: object of arrays;
                             chat: array of content entries) or NULL */
} srv_choice;

typedef struct srv_gen {
    srv *s;
    _Atomic int refs;
    pthread_mutex_t mu;
    struct MHD_Connection *conn; /* NULL once the HTTP side let go */
    int fd;                      /* conn's socket, for the disconnect poll */
    bool suspended;
    bool http_gone;
    bool cancel_sent;
    bool stream;
    srv_params p;
    asa_arena *arena;
    srv_choice *ch;
    int n_ch, n_done;            /* choices, finished choices */
    int n_init;                  /* choices whose decoder and matcher exist */
    char *out;                   /* SSE bytes not yet sent */
    size_t out_len, out_cap, out_off;
    bool final_written;          /* [DONE] is in out */
    char id[48];
    long long created;
    int64_t usage_prompt, usage_completion; /* up to 16384 choices' worth */
    struct srv_gen *prev, *next; /* s->gens list */
} srv_gen;

/* ---- small helpers ------------------------------------------------------ */

static uint64_t random_u64(void) {
    uint64_t x = 0;
    if (getrandom(&x, sizeof x, GRND_NONBLOCK) != sizeof x) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        x = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
    }
    return x;
}

static uint64_t mix64(uint64_t z) {
    z ^= z >> 30;
    z *= 0xbf58476d1ce4e5b9ull;
    z ^= z >> 27;
    z *= 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A JSON string from bytes that may not be valid UTF-8: invalid sequences
 * become U+FFFD. */
static json_t *json_bytes_string(const char *s, size_t len) {
    size_t ok = tok_utf8_valid_prefix(s, len);
    if (ok == len)
        return json_stringn(s, len);
    tok_str t = {0};
    size_t i = 0;
    json_t *j = NULL;
    char *buf = malloc(len * 3 + 1);
    if (!buf)
        return json_string("");
    size_t o = 0;
    while (i < len) {
        size_t v = tok_utf8_valid_prefix(s + i, len - i);
        memcpy(buf + o, s + i, v);
        o += v;
        i += v;
        if (i < len) {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(buf, o);
    free(buf);
    tok_str_free(&t);
    return j ? j : json_string("");
}

/* Appends bytes to a tok_str (same growth rules as the tokenizer's). */
static int str_append(tok_str *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *d = realloc(t->data, cap);
        if (!d)
            return -1;
        t->data = d;
        t->cap = cap;
    }
    if (n)
        memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = 0;
    return 0;
}


static void gen_unref(srv_gen *g) {
    if (atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    srv *s = g->s;
    pthread_mutex_lock(&s->gens_mu);
    if (g->prev)
        g->prev->next = g->next;
    else if (s->gens == g)
        s->gens = g->next;
    if (g->next)
        g->next->prev = g->prev;
    pthread_mutex_unlock(&s->gens_mu);
    /* n_init, not n_ch: set-up may have failed part way. */
    for (int i = 0; i < g->n_init; i++) {
        srv_choice *c = &g->ch[i];
        tok_stream_destroy(c->dec);
        tok_stop_destroy(c->stop);
        tok_str_free(&c->piece);
        tok_str_free(&c->rel);
        tok_str_free(&c->text);
        json_decref(c->lp);
    }
    free(g->out);
    pthread_mutex_destroy(&g->mu);
    asa_arena_destroy(g->arena);
    free(g);
}

/* Appends an SSE event (caller holds g->mu). Returns -1 on OOM. */
static int out_append(srv_gen *g, const char *data, size_t len) {
    if (g->out_len + len > g->out_cap) {
        size_t cap = g->out_cap ? g->out_cap * 2 : 4096;
        while (cap < g->out_len + len)
            cap *= 2;
        char *n = realloc(g->out, cap);
        if (!n)
            return -1;
        g->out = n;
        g->out_cap = cap;
    }
    memcpy(g->out + g->out_len, data, len);
    g->out_len += len;
    return 0;
}

static void out_event(srv_gen *g, json_t *j /* stolen */) {
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return;
    out_append(g, "data: ", 6);
    out_append(g, text, strlen(text));
    out_append(g, "\n\n", 2);
    free(text);
}

/* Caller holds g->mu. */
static void wake_http(srv_gen *g) {
    if (g->suspended && g->conn) {
        g->suspended = false;
        MHD_resume_connection(g->conn);
    }
}

static const char *finish_name(eng_finish_reason why) {
    switch (why) {
    case ENG_FINISH_STOP:
        return "stop";
    case ENG_FINISH_LENGTH:
        return "length";
    case ENG_FINISH_ABORT:
        return "abort";
    default:
        return "error";
    }
}

static json_t *usage_json(const srv_gen *g) {
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)g->usage_prompt, "completion_tokens",
                     (json_int_t)g->usage_completion,
                     "total_tokens", (json_int_t)(g->usage_prompt + g->usage_completion));
}

static json_t *chunk_base(const srv_gen *g) {
    json_t *j = json_pack("{s:s, s:s, s:I, s:s}", "id", g->id, "object",
                          g->p.kind == SRV_CHAT ? "chat.completion.chunk" : "text_completion",
                          "created", (json_int_t)g->created, "model", g->s->model_name);
    if (g->p.include_usage)
        json_object_set_new(j, "usage", json_null());
    return j;
}

/* ---- logprobs ----------------------------------------------------------- */

static json_t *token_text(srv *s, int32_t id) {
    tok_str t = {0};
    json_t *j;
    if (tok_token_to_piece(s->tok, id, &t, NULL) == 0)
        j = json_bytes_string(t.data ? t.data : "", t.len);
    else
        j = json_string("");
    tok_str_free(&t);
    return j;
}

static json_t *token_bytes(srv *s, int32_t id) {
    tok_str t = {0};
    json_t *a = json_array();
    if (tok_token_to_piece(s->tok, id, &t, NULL) == 0)
        for (size_t i = 0; i < t.len; i++)
            json_array_append_new(a, json_integer((unsigned char)t.data[i]));
    tok_str_free(&t);
    return a;
}

/* Adds one token's logprobs to c->lp (engine thread, under g->mu). */
static void lp_add(srv_choice *c, int32_t token, const eng_seq_result *r) {
    srv_gen *g = c->g;
    srv *s = g->s;
    if (g->p.kind == SRV_COMPLETION) {
        if (!c->lp)
            c->lp = json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs",
                              "top_logprobs", "text_offset");
        json_t *tj = token_text(s, token);
        json_t *top = json_object();
        for (int i = 0; i < r->n_top; i++) {
            json_t *k = token_text(s, r->top_ids[i]);
            json_object_set_new(top, json_string_value(k), json_real(r->top_logprobs[i]));
            json_decref(k);
        }
        json_object_set_new(top, json_string_value(tj), json_real(r->logprob));
        json_array_append_new(json_object_get(c->lp, "tokens"), tj);
        json_array_append_new(json_object_get(c->lp, "token_logprobs"), json_real(r->logprob));
        json_array_append_new(json_object_get(c->lp, "top_logprobs"), top);
        json_array_append_new(json_object_get(c->lp, "text_offset"), json_integer((json_int_t)c->text_offset));
    } else {
        if (!c->lp)
            c->lp = json_array();
        json_t *tops = json_array();
        for (int i = 0; i < r->n_top; i++)
            json_array_append_new(tops, json_pack("{s:o, s:f, s:o}", "token", token_text(s, r->top_ids[i]),
                                                  "logprob", (double)r->top_logprobs[i], "bytes",
                                                  token_bytes(s, r->top_ids[i])));
        json_array_append_new(c->lp, json_pack("{s:o, s:f, s:o, s:o}", "token", token_text(s, token),
                                               "logprob", (double)r->logprob, "bytes",
                                               token_bytes(s, token), "top_logprobs", tops));
    }
}

static json_t *lp_take(srv_choice *c) {
    json_t *lp = c->lp;
    c->lp = NULL;
    if (!lp)
        return json_null();
    if (c->g->p.kind == SRV_CHAT)
        return json_pack("{s:o}", "content", lp);
    return lp;
}

/* One streaming chunk for choice c with text[len] (may be empty) and an
 * optional finish reason.  Caller holds g->mu. */
static void emit_chunk(srv_choice *c, const char *text, size_t len, const char *finish) {
    srv_gen *g = c->g;
    json_t *j = chunk_base(g);
    json_t *choice = json_object();
    json_object_set_new(choice, "index", json_integer(c->index));
    if (g->p.kind == SRV_CHAT) {
        json_t *delta = json_object();
        if (len || !finish)
            json_object_set_new(delta, "content", json_bytes_string(text, len));
        json_object_set_new(choice, "delta", delta);
    } else {
        json_object_set_new(choice, "text", json_bytes_string(text, len));
    }
    json_object_set_new(choice, "logprobs", g->p.logprobs >= 0 ? lp_take(c) : json_null());
    json_object_set_new(choice, "finish_reason", finish ? json_string(finish) : json_null());
    json_object_set_new(j, "choices", json_pack("[o]", choice));
    out_event(g, j);
}

/* ---- engine-thread callbacks --------------------------------------------- */

/* Whether token, the n_out-th generated token, finishes the request in the
 * scheduler: EOS unless ignore_eos, or a stop token id, once n_out >=
 * min_tokens (the rule of sched_update). */
static bool is_stop_token(const srv_gen *g, int32_t token, int n_out) {
    if (n_out < g->p.min_tokens)
        return false;
    if (token == g->s->eos_id && !g->p.ignore_eos)
        return true;
    for (int i = 0; i < g->p.n_stop_ids; i++)
        if (g->p.stop_ids[i] == token)
            return true;
    return false;
}

/* Passes c->piece to the stop-string matcher, which appends what it
 * releases to c->rel.  As in vLLM, stop strings count only once more than
 * min_tokens tokens were generated; text before that is released as is
 * (a stop string that begins before that point and ends after it is not
 * seen, where vLLM would see it). */
static void feed_stop(srv_choice *c, int *matched) {
    if (c->n_generated > c->g->p.min_tokens)
        tok_stop_feed(c->stop, c->piece.data ? c->piece.data : "", c->piece.len, &c->rel, matched, NULL);
    else
        str_append(&c->rel, c->piece.data ? c->piece.data : "", c->piece.len);
}

static int on_token(void *ud, int32_t token, const eng_seq_result *r) {
    srv_choice *c = ud;
    srv_gen *g = c->g;
    srv *s = g->s;
    double now = asa_now();
    if (c->n_generated > 0)
        srv_metrics_observe(s->metrics, SRV_H_ITL, now - c->t_last);
    c->t_last = now;
    c->n_generated++;
    /* Counted as vLLM counts them: the prompt once its prefill is done (at
     * the first token), each generated token as it comes, so that rates
     * over a long request are smooth. */
    if (c->n_generated == 1)
        srv_metrics_add_prompt_tokens(s->metrics, (uint64_t)g->p.prompts[c->prompt_idx].n_ids);
    srv_metrics_add_generation_tokens(s->metrics, 1);
    if (c->stop_matched)
        return 1;

    c->piece.len = 0;
    c->rel.len = 0;
    int matched = -1;
    /* The token that ends the request (EOS, a stop_token_ids entry) is
     * counted and gets logprobs, but its text is not part of the output
     * (as in vLLM), even with skip_special_tokens false. */
    if (!is_stop_token(g, token, c->n_generated)) {
        tok_stream_push(c->dec, token, &c->piece);
        feed_stop(c, &matched);
    }

    pthread_mutex_lock(&g->mu);
    if (g->p.logprobs >= 0)
        lp_add(c, token, r);
    if (c->rel.len) {
        c->text_offset += c->rel.len;
        if (g->stream)
            emit_chunk(c, c->rel.data, c->rel.len, NULL);
        else
            str_append(&c->text, c->rel.data, c->rel.len);
    }
    /* Only a stream with bytes to send needs its connection: a waiting
     * non-streaming request is resumed once, by the last on_finish (each
     * resume costs a wakeup of the HTTP thread and a new suspension). */
    if (g->stream && g->out_len > g->out_off)
        wake_http(g);
    pthread_mutex_unlock(&g->mu);
    if (matched >= 0) {
        c->stop_matched = true;
        return 1;
    }
    return 0;
}

static void on_finish(void *ud, eng_finish_reason why, const eng_request_stats *st,
                      const char *error) {
    srv_choice *c = ud;
    srv_gen *g = c->g;
    srv *s = g->s;

    /* A stop string matched in the same step that hit max_tokens: the
     * stop string decides the reason. */
    if (c->stop_matched && why == ENG_FINISH_LENGTH)
        why = ENG_FINISH_STOP;
    /* Release what the detokenizer and the stop matcher still hold. */
    c->rel.len = 0;
    if (!c->stop_matched && why != ENG_FINISH_ABORT && why != ENG_FINISH_ERROR) {
        c->piece.len = 0;
        tok_stream_flush(c->dec, &c->piece);
        int matched = -1;
        if (c->piece.len)
            feed_stop(c, &matched);
        if (matched < 0)
            tok_stop_finish(c->stop, &c->rel);
        else
            why = ENG_FINISH_STOP;
    }

    /* Metrics. */
    if (st->t_first_token > 0)
        srv_metrics_observe(s->metrics, SRV_H_TTFT, st->t_first_token - st->t_arrival);
    if (st->t_scheduled > 0) {
        srv_metrics_observe(s->metrics, SRV_H_QUEUE, st->t_scheduled - st->t_arrival);
        if (st->t_first_token > 0) {
            srv_metrics_observe(s->metrics, SRV_H_PREFILL, st->t_first_token - st->t_scheduled);
            srv_metrics_observe(s->metrics, SRV_H_DECODE, st->t_finish - st->t_first_token);
        }
    }
    srv_metrics_observe(s->metrics, SRV_H_E2E, st->t_finish - st->t_arrival);
    srv_metrics_finish(s->metrics, why == ENG_FINISH_STOP     ? SRV_FIN_STOP
                                   : why == ENG_FINISH_LENGTH ? SRV_FIN_LENGTH
                                   : why == ENG_FINISH_ABORT  ? SRV_FIN_ABORT
                                                              : SRV_FIN_ERROR);

    pthread_mutex_lock(&g->mu);
    c->finished = true;
    c->why = why;
    if (error)
        snprintf(c->error, sizeof c->error, "%s", error);
    g->usage_completion += st->n_generated;
    g->n_done++;
    if (c->rel.len) {
        c->text_offset += c->rel.len;
        if (!g->stream)
            str_append(&c->text, c->rel.data, c->rel.len);
    }
    if (g->stream && !g->final_written) {
        if (why == ENG_FINISH_ERROR) {
            srv_error e = {0};
            srv_fail(&e, SRV_E_INTERNAL, NULL, "generation failed: %s", c->error[0] ? c->error : "engine error");
            out_event(g, srv_error_json(&e));
        } else {
            emit_chunk(c, c->rel.data ? c->rel.data : "", c->rel.len, finish_name(why));
        }
        if (g->n_done == g->n_ch) {
            if (g->p.include_usage) {
                json_t *j = chunk_base(g);
                json_object_set_new(j, "choices", json_array());
                json_object_set_new(j, "usage", usage_json(g));
                out_event(g, j);
            }
            out_append(g, "data: [DONE]\n\n", 14);
            g->final_written = true;
        }
    }
    if (g->stream || g->n_done == g->n_ch)
        wake_http(g);
    pthread_mutex_unlock(&g->mu);
    gen_unref(g);
}

/* ---- HTTP side ----------------------------------------------------------- */

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    srv_gen *g = cls;
    pthread_mutex_lock(&g->mu);
    if (g->out_off < g->out_len) {
        size_t n = g->out_len - g->out_off;
        if (n > max)
            n = max;
        memcpy(buf, g->out + g->out_off, n);
        g->out_off += n;
        if (g->out_off == g->out_len)
            g->out_off = g->out_len = 0;
        pthread_mutex_unlock(&g->mu);
        return (ssize_t)n;
    }
    if (g->final_written) {
        pthread_mutex_unlock(&g->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    /* Nothing to send yet: sleep until the engine thread resumes us. */
    if (g->conn && !g->suspended) {
        g->suspended = true;
        MHD_suspend_connection(g->conn);
    }
    pthread_mutex_unlock(&g->mu);
    return 0;
}

static void cancel_unfinished(srv_gen *g) {
    /* Caller holds g->mu. */
    if (g->cancel_sent)
        return;
    g->cancel_sent = true;
    for (int i = 0; i < g->n_ch; i++)
        if (g->ch[i].submitted && !g->ch[i].finished)
            eng_loop_cancel(g->s->loop, g->ch[i].eng_id);
}

void srv_gen_http_release(srv *s, srv_conn *cx, bool client_gone) {
    (void)s;
    srv_gen *g = cx->gen;
    cx->gen = NULL;
    pthread_mutex_lock(&g->mu);
    g->http_gone = true;
    g->conn = NULL;
    g->suspended = false;
    if (client_gone || g->n_done < g->n_ch)
        cancel_unfinished(g);
    pthread_mutex_unlock(&g->mu);
    gen_unref(g);
}

/* The engine thread asks, once per step: has any waiting client gone away?
 * Only suspended connections are checked: libmicrohttpd neither reads nor
 * closes their sockets while they sleep, so a zero-byte peek means the peer
 * closed.  The descriptor was taken on the HTTP thread when the request
 * arrived (MHD_get_connection_info writes into the connection, which only
 * its own thread may do); under g->mu, conn != NULL means the socket is
 * still open: libmicrohttpd calls on_completed (which clears conn) before it
 * closes it. */
void srv_gen_poll_disconnects(void *srv_ptr) {
    srv *s = srv_ptr;
    pthread_mutex_lock(&s->gens_mu);
    for (srv_gen *g = s->gens; g; g = g->next) {
        pthread_mutex_lock(&g->mu);
        if (g->suspended && g->conn && g->fd >= 0 && !g->cancel_sent && g->n_done < g->n_ch) {
            char b;
            ssize_t r = recv(g->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                cancel_unfinished(g);
                wake_http(g); /* let libmicrohttpd notice and clean up */
            }
        }
        pthread_mutex_unlock(&g->mu);
    }
    pthread_mutex_unlock(&s->gens_mu);
}

static json_t *final_json(srv_gen *g) {
    json_t *choices = json_array();
    for (int i = 0; i < g->n_ch; i++) {
        srv_choice *c = &g->ch[i];
        json_t *cj = json_object();
        json_object_set_new(cj, "index", json_integer(c->index));
        json_t *text = json_bytes_string(c->text.data ? c->text.data : "", c->text.len);
        if (g->p.kind == SRV_CHAT)
            json_object_set_new(cj, "message", json_pack("{s:s, s:o}", "role", "assistant", "content", text));
        else
            json_object_set_new(cj, "text", text);
        json_object_set_new(cj, "logprobs", g->p.logprobs >= 0 ? lp_take(c) : json_null());
        json_object_set_new(cj, "finish_reason", json_string(finish_name(c->why)));
        json_array_append_new(choices, cj);
    }
    return json_pack("{s:s, s:s, s:I, s:s, s:o, s:o}", "id", g->id, "object",
                     g->p.kind == SRV_CHAT ? "chat.completion" : "text_completion", "created",
                     (json_int_t)g->created, "model", g->s->model_name, "choices", choices, "usage",
                     usage_json(g));
}

enum MHD_Result srv_gen_resume(srv *s, struct MHD_Connection *c, srv_conn *cx) {
    srv_gen *g = cx->gen;
    pthread_mutex_lock(&g->mu);
    if (g->n_done < g->n_ch) {
        g->suspended = true;
        MHD_suspend_connection(c);
        pthread_mutex_unlock(&g->mu);
        return MHD_YES;
    }
    for (int i = 0; i < g->n_ch; i++) {
        if (g->ch[i].why == ENG_FINISH_ERROR) {
            srv_error e = {0};
            srv_fail(&e, SRV_E_UNAVAILABLE, NULL, "generation failed: %s",
                     g->ch[i].error[0] ? g->ch[i].error : "engine error");
            pthread_mutex_unlock(&g->mu);
            return srv_send_error(s, c, &e);
        }
    }
    json_t *j = final_json(g);
    pthread_mutex_unlock(&g->mu);
    srv_metrics_http(s->metrics, 200);
    return srv_send_json(c, 200, j);
}

/* Tokenizes every text prompt of p (HTTP thread). */
static int tokenize_prompts(srv *s, srv_params *p, asa_arena *a, srv_error *e) {
    for (int i = 0; i < p->n_prompts; i++) {
        srv_prompt *pr = &p->prompts[i];
        if (!pr->text)
            continue;
        tok_ids ids = {0};
        char msg[256] = "";
        asa_errbuf eb = {msg, sizeof msg};
        asa_err err = tok_encode(s->tok, pr->text, pr->text_len, p->add_special_tokens, &ids, &eb);
        if (err) {
            tok_ids_free(&ids);
            return srv_fail(e, err == ASA_ENOMEM ? SRV_E_INTERNAL : SRV_E_BAD_PARAM, "prompt",
                            "cannot tokenize the prompt: %s", msg[0] ? msg : asa_strerror(err));
        }
        pr->ids = asa_arena_alloc(a, (ids.len ? ids.len : 1) * sizeof *pr->ids);
        if (!pr->ids) {
            tok_ids_free(&ids);
            return srv_fail(e, SRV_E_INTERNAL, NULL, "out of memory");
        }
        if (ids.len)
            memcpy(pr->ids, ids.ids, ids.len * sizeof *pr->ids);
        pr->n_ids = (int)ids.len;
        tok_ids_free(&ids);
    }
    return 0;
}

static int prepare(srv *s, json_t *body, srv_kind kind, srv_gen *g, srv_error *e) {
    srv_params *p = &g->p;
    int rc = kind == SRV_CHAT ? srv_parse_chat(body, g->arena, p, e)
                              : srv_parse_completion(body, g->arena, p, e);
    if (rc)
        return -1;
    if (p->model && strcmp(p->model, s->model_name) != 0)
        return srv_fail(e, SRV_E_MODEL_NOT_FOUND, "model", "The model '%.200s' does not exist.", p->model);
    if (kind == SRV_CHAT) {
        size_t len = 0;
        char *text = srv_chat_render(s->chat_tmpl, p, s->bos_text, g->arena, &len);
        if (!text)
            return srv_fail(e, SRV_E_INTERNAL, NULL, "out of memory");
        p->prompts[0].text = text;
        p->prompts[0].text_len = len;
    }
    if (tokenize_prompts(s, p, g->arena, e))
        return -1;
    return srv_params_check_model(p, s->vocab_size, s->max_model_len, e);
}

/* The choice's decoder is primed with the prompt so that the first
 * generated token decodes as a continuation (a SentencePiece "▁Paris" after
 * a prompt streams as " Paris", as Hugging Face and vLLM give it). */
static int init_choice(srv *s, srv_gen *g, srv_choice *c, const srv_prompt *pr, srv_error *e) {
    if (tok_stream_create(s->tok, g->p.skip_special_tokens, &c->dec) ||
        tok_stream_prime(c->dec, pr->ids, (size_t)pr->n_ids) ||
        tok_stop_create(g->p.stop, (size_t)g->p.n_stop, &c->stop))
        return srv_fail(e, SRV_E_INTERNAL, NULL, "out of memory");
    return 0;
}

/* Echo: completions put the prompt text first in the output; chat (as
 * vLLM) repeats the last message when it is the assistant's own. */
static int echo_text(srv *s, srv_gen *g, srv_choice *c, tok_str *out) {
    if (g->p.kind == SRV_CHAT) {
        const srv_chat_msg *m = &g->p.messages[g->p.n_messages - 1];
        if (strcmp(m->role, "assistant") == 0)
            return str_append(out, m->content, strlen(m->content));
        return 0;
    }
    srv_prompt *pr = &g->p.prompts[c->prompt_idx];
    if (pr->text)
        return str_append(out, pr->text, pr->text_len);
    return tok_decode(s->tok, pr->ids, (size_t)pr->n_ids, g->p.skip_special_tokens, out);
}

enum MHD_Result srv_gen_handle(srv *s, struct MHD_Connection *conn, srv_conn *cx, json_t *body) {
    srv_error e = {0};
    srv_gen *g = calloc(1, sizeof *g);
    asa_arena *a = asa_arena_create(0);
    if (!g || !a) {
        free(g);
        asa_arena_destroy(a);
        srv_fail(&e, SRV_E_INTERNAL, NULL, "out of memory");
        return srv_send_error(s, conn, &e);
    }
    g->s = s;
    g->arena = a;
    atomic_init(&g->refs, 1);
    pthread_mutex_init(&g->mu, NULL);
    srv_kind kind = cx->route == R_CHAT ? SRV_CHAT : SRV_COMPLETION;
    g->p.kind = kind;
    if (prepare(s, body, kind, g, &e))
        goto fail;

    srv_params *p = &g->p;
    g->stream = p->stream;
    g->created = (long long)time(NULL);
    snprintf(g->id, sizeof g->id, "%s-%016" PRIx64 "%016" PRIx64, kind == SRV_CHAT ? "chatcmpl" : "cmpl",
             random_u64(), random_u64());
    g->n_ch = p->n_prompts * p->n;
    g->ch = asa_arena_alloc(a, (size_t)g->n_ch * sizeof *g->ch);
    if (!g->ch) {
        srv_fail(&e, SRV_E_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    memset(g->ch, 0, (size_t)g->n_ch * sizeof *g->ch);
    for (int i = 0; i < p->n_prompts; i++)
        g->usage_prompt += p->prompts[i].n_ids;
    for (int i = 0; i < g->n_ch; i++) {
        srv_choice *c = &g->ch[i];
        c->g = g;
        c->index = i;
        c->prompt_idx = i / p->n;
        g->n_init = i + 1;
        if (init_choice(s, g, c, &p->prompts[c->prompt_idx], &e))
            goto fail;
    }

    /* The head of the output: chat role chunks, echoed prompts. */
    g->conn = conn;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    g->fd = ci ? ci->connect_fd : -1;
    cx->gen = g;
    for (int i = 0; i < g->n_ch; i++) {
        srv_choice *c = &g->ch[i];
        if (g->stream && kind == SRV_CHAT) {
            json_t *j = chunk_base(g);
            json_t *ch = json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", c->index, "delta", "role",
                                   "assistant", "content", "", "logprobs", "finish_reason");
            json_object_set_new(j, "choices", json_pack("[o]", ch));
            out_event(g, j);
        }
        if (p->echo) {
            tok_str t = {0};
            echo_text(s, g, c, &t);
            c->text_offset = t.len;
            if (g->stream && t.len)
                emit_chunk(c, t.data, t.len, NULL);
            else if (!g->stream)
                str_append(&c->text, t.data ? t.data : "", t.len);
            tok_str_free(&t);
        }
    }

    pthread_mutex_lock(&s->gens_mu);
    g->next = s->gens;
    if (s->gens)
        s->gens->prev = g;
    s->gens = g;
    pthread_mutex_unlock(&s->gens_mu);

    /* Submit one engine request per choice, all or nothing. */
    eng_request *rs = asa_arena_alloc(a, (size_t)g->n_ch * sizeof *rs);
    uint64_t *ids = asa_arena_alloc(a, (size_t)g->n_ch * sizeof *ids);
    if (!rs || !ids) {
        srv_fail(&e, SRV_E_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    uint64_t seed_base = p->has_seed ? p->seed : random_u64();
    for (int i = 0; i < g->n_ch; i++) {
        srv_choice *c = &g->ch[i];
        srv_prompt *pr = &p->prompts[c->prompt_idx];
        int k = i % p->n;
        eng_request *r = &rs[i];
        memset(r, 0, sizeof *r);
        r->prompt = pr->ids;
        r->n_prompt = pr->n_ids;
        r->sp.temperature = p->temperature;
        r->sp.top_k = p->top_k;
        r->sp.top_p = p->top_p;
        r->sp.min_p = p->min_p;
        r->sp.presence_penalty = p->presence_penalty;
        r->sp.frequency_penalty = p->frequency_penalty;
        r->sp.repetition_penalty = p->repetition_penalty;
        r->sp.bias_ids = p->bias_ids;
        r->sp.bias_vals = p->bias_vals;
        r->sp.n_bias = p->n_bias;
        /* Choice k of a seeded request uses its own stream derived from
         * (seed, k), so n > 1 gives different samples, reproducibly. */
        r->sp.seed = k == 0 ? seed_base : mix64(seed_base ^ mix64((uint64_t)k));
        r->sp.n_logprobs = p->logprobs > 0 ? p->logprobs : 0;
        r->max_tokens = p->max_tokens;
        r->min_tokens = p->min_tokens;
        r->ignore_eos = p->ignore_eos;
        r->stop_ids = p->stop_ids;
        r->n_stop_ids = p->n_stop_ids;
        r->priority = p->priority;
        r->on_token = on_token;
        r->on_finish = on_finish;
        r->ud = c;
    }
    /* One reference per choice, taken before the engine can finish any. */
    atomic_fetch_add(&g->refs, g->n_ch);
    asa_err err = eng_loop_submit_group(s->loop, rs, g->n_ch, ids);
    if (err) {
        atomic_fetch_sub(&g->refs, g->n_ch); /* the HTTP reference remains */
        if (err == ASA_EAGAIN) {
            srv_fail(&e, SRV_E_OVERLOADED, NULL,
                     "The server is at capacity (queue limits reached); retry later");
            e.retry_after = 1;
        } else if (err == ASA_ECANCELLED) {
            srv_fail(&e, SRV_E_UNAVAILABLE, NULL, "The server is shutting down");
            e.retry_after = 1;
        } else if (err == ASA_EDEAD) {
            srv_fail(&e, SRV_E_UNAVAILABLE, NULL, "The engine is not healthy");
        } else {
            srv_fail(&e, SRV_E_INTERNAL, NULL, "cannot submit the request: %s", asa_strerror(err));
        }
        goto fail;
    }
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < g->n_ch; i++) {
        g->ch[i].eng_id = ids[i];
        g->ch[i].submitted = true;
    }
    pthread_mutex_unlock(&g->mu);

    if (g->stream) {
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, g, NULL);
        if (!resp)
            return MHD_NO;
        MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        srv_metrics_http(s->metrics, 200);
        enum MHD_Result ret = MHD_queue_response(conn, 200, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    pthread_mutex_lock(&g->mu);
    if (g->n_done < g->n_ch) {
        g->suspended = true;
        MHD_suspend_connection(conn);
        pthread_mutex_unlock(&g->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&g->mu);
    return srv_gen_resume(s, conn, cx);

fail:
    cx->gen = NULL;
    gen_unref(g);
    return srv_send_error(s, conn, &e);
}
