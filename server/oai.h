/*
 * server/oai.h - OpenAI request bodies parsed into plain, validated data.
 *
 * srv_parse_completion / srv_parse_chat read a jansson object and fill an
 * srv_params whose strings and arrays live in the caller's arena (freed once
 * with the request).  They check every field they know: types, ranges and
 * combinations, and reject meaningful unsupported parameters (best_of > 1,
 * suffix, tools, ...) naming them.  Unknown fields are ignored.  Checks that
 * need the model (vocabulary size, context length) happen later, after
 * tokenization (srv_params_check_model).
 *
 * Called on HTTP threads; no shared state.
 */
#ifndef ASA_SRV_OAI_H
#define ASA_SRV_OAI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "asa.h"
#include "srv_err.h"

#define SRV_MAX_STOP 16
#define SRV_MAX_STOP_LEN 256
#define SRV_MAX_N 64
#define SRV_MAX_PROMPTS 256
#define SRV_MAX_LOGIT_BIAS 1024

typedef enum srv_kind { SRV_COMPLETION = 0, SRV_CHAT = 1 } srv_kind;

typedef struct srv_prompt {
    const char *text;   /* UTF-8 text to tokenize, or NULL when ids given */
    size_t text_len;
    int32_t *ids;       /* token ids (given, or filled by tokenization) */
    int n_ids;
} srv_prompt;

typedef struct srv_chat_msg {
    const char *role;    /* "system", "user", "assistant", "developer" */
    const char *content; /* concatenated text parts */
} srv_chat_msg;

typedef struct srv_params {
    srv_kind kind;
    const char *model;        /* NULL when absent */
    srv_prompt *prompts;      /* [n_prompts]; chat: one, filled from messages */
    int n_prompts;
    srv_chat_msg *messages;   /* chat only */
    int n_messages;
    bool add_generation_prompt; /* chat, default true */
    bool continue_final_message;/* chat, default false */
    bool add_special_tokens;  /* default: true for completions, false for chat */

    int max_tokens;           /* -1 = up to the context length */
    int min_tokens;           /* default 0 */
    int n;                    /* choices per prompt, default 1 */
    float temperature;        /* default 1 */
    float top_p;              /* default 1 */
    int top_k;                /* 0 = off (-1 accepted as off) */
    float min_p;              /* default 0 */
    float presence_penalty, frequency_penalty; /* default 0 */
    float repetition_penalty; /* default 1 */
    int32_t *bias_ids;        /* logit_bias keys */
    float *bias_vals;
    int n_bias;
    bool has_seed;
    uint64_t seed;
    const char **stop;        /* [n_stop] stop strings */
    int n_stop;
    int32_t *stop_ids;        /* stop_token_ids */
    int n_stop_ids;
    bool stream, include_usage, echo, ignore_eos, skip_special_tokens;
    int logprobs;             /* -1 = none; else 0..20 top entries */
    int priority;             /* lower runs first; default 0 */
    const char *user;
} srv_params;

/* Fill p from a /v1/completions body.  Returns 0, or -1 with e set. */
int srv_parse_completion(json_t *body, asa_arena *a, srv_params *p, srv_error *e);
/* Fill p from a /v1/chat/completions body (messages kept; the prompt text is
 * produced by the chat template later).  Returns 0, or -1 with e set. */
int srv_parse_chat(json_t *body, asa_arena *a, srv_params *p, srv_error *e);

/* Checks that need the model: logit_bias and stop_token_ids ids < vocab,
 * prompt ids in range and non-empty, prompt + max_tokens <= max_model_len
 * (when max_tokens is -1 it becomes the room left), min_tokens <= max_tokens.
 * Returns 0, or -1 with e set. */
int srv_params_check_model(srv_params *p, int vocab_size, int max_model_len,
                           srv_error *e);

#endif
