/*
 * engine/model.h - an ASA model directory, checked and memory-mapped.
 *
 * eng_model_load() reads `config.json` (checked against ASA-SPEC section 1:
 * required fields, defaults, load-time checks) and the weights
 * (`model.safetensors`, or shards listed in `model.safetensors.index.json`),
 * validating every field of every safetensors header: dtype (BF16 or F32),
 * shape against the config, data offsets inside the file, no overlaps, every
 * required tensor present, no unknown tensor, the tie rule.  Weights stay
 * memory-mapped read-only; eng_tensor.data points into the mapping.
 *
 * Any defect returns an error code and writes a message into the caller's
 * asa_errbuf naming the file, the tensor or the field.  Never a crash, never
 * a silent default.
 *
 * An eng_model is immutable after load and may be read from any thread.
 */
#ifndef ASA_ENG_MODEL_H
#define ASA_ENG_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "asa.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum eng_dtype { ENG_F32 = 0, ENG_BF16 = 1 } eng_dtype;
typedef enum eng_layer_type { ENG_LAYER_LOCAL = 0, ENG_LAYER_GLOBAL = 1 } eng_layer_type;

/* A read-only view of one weight tensor inside a mapped file.  Row-major,
 * shape [rows, cols] for matrices ([n] vectors have ndim 1, shape[1] = 1). */
typedef struct eng_tensor {
    const void *data; /* mapped bytes; NULL for an absent optional tensor */
    eng_dtype dtype;
    int ndim;         /* 1 or 2 */
    int64_t shape[2];
} eng_tensor;

typedef struct eng_attn_cfg {
    int latent_heads; /* G */
    int latent_dim;   /* d_g, per latent head */
} eng_attn_cfg;

typedef struct eng_config {
    int vocab_size, hidden_size, intermediate_size, num_hidden_layers;
    int num_heads, head_dim, v_head_dim, rope_dim;
    double rope_theta, rms_norm_eps;
    int max_position_embeddings;
    bool tie_word_embeddings;
    int bos_token_id, eos_token_id; /* -1 when absent */
    eng_layer_type *layer_types;    /* [num_hidden_layers] */
    struct {
        eng_attn_cfg attn;
        int window;
    } local;
    struct {
        eng_attn_cfg attn;
        int block_size, top_n, init_blocks, local_blocks, selection_share;
    } global;
    int n_local_layers, n_global_layers; /* counts of each type */
} eng_config;

/* Weights of one layer.  d = hidden_size, H = num_heads, dh = head_dim,
 * dv = v_head_dim, dR = rope_dim, G/dg = this layer type's latent heads/dim,
 * F = intermediate_size. */
typedef struct eng_layer {
    eng_layer_type type;
    int G, dg;             /* copied from the config for this layer's type */
    int type_index;        /* index among layers of the same type */
    eng_tensor attn_norm;  /* [d] */
    eng_tensor mlp_norm;   /* [d] */
    eng_tensor q_proj;     /* [H*(dh+dR), d]: per head dh nope rows, dR rope rows */
    eng_tensor kv_a_proj;  /* [G*dg + dR, d]: latent groups, then the rope key */
    eng_tensor kv_a_norm;  /* [G*dg] */
    eng_tensor kv_b_proj;  /* [H*(dh+dv), dg]: per head W_UK (dh rows), W_UV (dv rows) */
    eng_tensor o_proj;     /* [d, H*dv] */
    eng_tensor g_proj;     /* [2H, d], global layers only (data NULL on local) */
    eng_tensor gate_proj;  /* [F, d] */
    eng_tensor up_proj;    /* [F, d] */
    eng_tensor down_proj;  /* [d, F] */
} eng_layer;

typedef struct eng_model {
    eng_config cfg;
    char *dir;             /* the model directory as given */
    eng_tensor embed;      /* [V, d] embed_tokens.weight */
    eng_tensor norm;       /* [d] */
    eng_tensor lm_head;    /* [V, d]; the same view as embed when tied */
    eng_layer *layers;     /* [num_hidden_layers] */
    struct eng__model_priv *priv; /* mappings; private to model.c */
} eng_model;

/* Loads and validates the model directory `dir`.  On success *out owns the
 * mappings; free with eng_model_destroy.  On failure returns ASA_EIO (cannot
 * open/read/map), ASA_EFORMAT (malformed JSON or safetensors, bad shape,
 * dtype, offsets, missing/unknown tensor, tie rule), ASA_EINVAL (bad config
 * value or failed load-time check) or ASA_ENOMEM, writes the reason into eb
 * and leaves *out untouched. */
asa_err eng_model_load(const char *dir, eng_model **out, asa_errbuf *eb);
/* Unmaps and frees.  NULL is a no-op. */
void eng_model_destroy(eng_model *m);

/* Parses and checks only config.json text (for tests and tools). cfg's
 * layer_types is malloc'ed: free with eng_config_deinit. */
asa_err eng_config_parse(const char *json_text, size_t len, eng_config *cfg,
                         asa_errbuf *eb);
void eng_config_deinit(eng_config *cfg);

/* Reads element i of a tensor as f32 (exact widening for bf16). */
static inline float eng_tensor_get(const eng_tensor *t, int64_t i) {
    if (t->dtype == ENG_F32)
        return ((const float *)t->data)[i];
    return asa_bf16_to_f32(((const uint16_t *)t->data)[i]);
}

#ifdef __cplusplus
}
#endif
#endif /* ASA_ENG_MODEL_H */
