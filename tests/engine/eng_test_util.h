/*
 * tests/engine/eng_test_util.h - helpers for the engine tests: small random
 * models with sensibly scaled weights, running a sequence through the step
 * API in chunks, and a plain double-precision reference forward pass written
 * straight from ASA-SPEC section 3 (expanded keys and values per head, no
 * cache, no absorption) to check the engine against.
 */
#ifndef ASA_ENG_TEST_UTIL_H
#define ASA_ENG_TEST_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "eng.h"
#include "model.h"

/* Shape of a generated test model. */
typedef struct etu_shape {
    int V, d, F, L, H, dh, dv, dR;
    int l_G, l_dg, window;
    int g_G, g_dg, B, top_n, init_b, local_b, share;
    int max_pos;
    bool tied;
    bool bf16;
    uint32_t seed;
} etu_shape;

/* A default small shape where selection really chooses (T >= 32). */
void etu_shape_small(etu_shape *s);
/* The asa-tiny shape of ASA-SPEC section 5 with vocab V. */
void etu_shape_tiny(etu_shape *s, int V);

/* Writes a model directory with random weights scaled like a trained
 * network (matrices ~ 1/sqrt(fan_in), norms ~ 1); returns a malloc'ed path
 * (remove with etu_rmdir) or NULL. */
char *etu_write_model(const etu_shape *s);
void etu_rmdir(char *dir);

/* Engine with explicit page counts for the tests. */
eng *etu_engine(const eng_model *m, int max_seqs, int max_batch_tokens,
                int max_seq_len, int threads);

/* A sequence in flight: slot + kv_seq. */
typedef struct etu_seq {
    int slot;
    kv_seq *kv;
    int pos;
} etu_seq;
void etu_seq_open(eng *e, etu_seq *s);
void etu_seq_close(eng *e, etu_seq *s);

/* Prefills tokens[0..n) of a fresh or partly filled sequence in chunks of
 * `chunk` tokens (the last one shorter), writing every position's logits to
 * logits[(pos) * V] (pos relative to tokens[0] = s->pos). */
void etu_prefill(eng *e, etu_seq *s, const int32_t *tokens, int n, int chunk,
                 float *logits);

/* Reference forward of the whole sequence: logits [n, V] in double. */
void etu_reference(const eng_model *m, const int32_t *tokens, int n, double *logits);

/* ||a - b|| / ||b|| over V values */
double etu_rel_l2(const float *a, const double *b, int V);

/* Deterministic token ids in [0, V). */
void etu_tokens(int32_t *t, int n, int V, uint32_t seed);

/* The fixture folders (those holding case.json) under $ASA_FIXTURES_OVERRIDE,
 * else under root, sorted by name: malloc'ed paths into out[max]; returns
 * how many.  The caller frees each path. */
int etu_list_fixtures(const char *root, char **out, int max);

#endif
