/*
 * engine/backend.h - the boundary between the generic engine (eng.c: options,
 * the kv_pool, sequence slots, batch validation) and a compute backend (the
 * CPU backend in cpu.c; the CUDA backend later).  Internal to the engine.
 *
 * A backend owns the memory behind the KV pages (its own layout; it reports
 * the bytes of one page of each class before the pool is created), its
 * scratch buffers and the per-slot selection-share state.  eng.c validates a
 * batch completely before calling step, so a backend trusts its inputs.
 */
#ifndef ASA_ENG_BACKEND_H
#define ASA_ENG_BACKEND_H

#include "eng.h"

/* The model dimensions every backend works with, derived from the config in
 * one place (eng_dims_init) so that backends cannot disagree.  A backend
 * embeds them as
 *     union { struct { ENG_DIMS_FIELDS }; eng_dims dims; };
 * and reads c->d, c->H, ... directly.  Notation of ASA-SPEC: d hidden, H
 * heads, dh/dv head dims, dR rope dim (half = dR/2), F intermediate, V
 * vocabulary, L layers, nq = H*(dh+dR) query rows; B block size, w window,
 * selection top_n, share, init_b, local_b; Gg/dgg and Gl/dgl latent heads
 * and dims of global and local layers, Sg/Sl cached values per token
 * (G*dg + dR), Lg global layers (at least 1), dg_max = max(dgg, dgl),
 * nb_max blocks per sequence at max_seq_len; scale = 1/sqrt(dh+dR). */
#define ENG_DIMS_FIELDS                                                       \
    int d, H, dh, dv, dR, half, F, V, L, nq;                                  \
    int B, w, top_n, share, init_b, local_b;                                  \
    int Gg, dgg, Sg, Gl, dgl, Sl, Lg;                                         \
    int dg_max, nb_max;                                                       \
    float scale, eps;

typedef struct eng_dims {
    ENG_DIMS_FIELDS
} eng_dims;

/* Fills *out from the config and the engine's max_seq_len. */
void eng_dims_init(const eng_config *k, int max_seq_len, eng_dims *out);

typedef struct eng_backend_ops {
    const char *name;
    /* Bytes behind one page of each class for this model (0 for a class the
     * model does not use). */
    void (*page_bytes)(const eng_model *m, size_t out[KV_NCLASS]);
    /* Creates the backend state for e (e->m, e->opt, e->num_pages filled).
     * Returns ASA_EUNSUPPORTED, ASA_ENOMEM, ASA_EINVAL with a reason in eb. */
    asa_err (*create)(eng *e, void **be, asa_errbuf *eb);
    void (*destroy)(void *be);
    /* Selection-share state of a slot: reset to empty, or copy. */
    void (*seq_reset)(void *be, int slot);
    void (*seq_copy)(void *be, int src_slot, int dst_slot);
    /* Anchor position of the slot's stored selection sets, -1 when none. */
    int (*seq_anchor)(void *be, int slot);
    /* The stored block set of global layer ti (index among global layers),
     * latent group g: ascending block ids into out[top_n]; returns the
     * count.  For tests; may be NULL. */
    int (*seq_sets)(void *be, int slot, int ti, int g, int32_t *out);
    /* Runs a validated batch. */
    asa_err (*step)(void *be, const eng_batch *b, eng_seq_result *res);
} eng_backend_ops;

struct eng {
    const eng_model *m;
    eng_options opt;               /* max_seq_len resolved */
    int32_t num_pages[KV_NCLASS];  /* resolved page counts */
    size_t page_bytes[KV_NCLASS];
    kv_pool *pool;
    const eng_backend_ops *ops;
    void *be;
    unsigned char *slot_open;      /* [max_seqs] */
    int *slot_mark;                /* [max_seqs] batch validation scratch */
    bool dead;
};

extern const eng_backend_ops eng_cpu_backend;

/* Tests: the selection-share state of an open slot (see seq_sets / seq_anchor
 * above).  Return -1 for a bad slot, layer or group. */
int eng__seq_sets(eng *e, int slot, int ti, int g, int32_t *out);
int eng__seq_anchor(eng *e, int slot);

#endif /* ASA_ENG_BACKEND_H */
