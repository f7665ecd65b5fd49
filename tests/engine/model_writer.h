/*
 * tests/engine/model_writer.h - writes small ASA model directories for tests.
 *
 * A mw_model is an editable in-memory model: a config (a jansson object the
 * test may change freely) and a list of tensors (name, dtype string, shape,
 * bytes).  mw_write() lays it out on disk as config.json plus either
 * model.safetensors or shards with model.safetensors.index.json, the way
 * the reference safetensors writer does (F32 tensors first, then BF16,
 * contiguous; header padded with spaces to a multiple of 8).  Tests corrupt
 * the result through the fields below, the header hook, or by rewriting
 * files afterwards.
 *
 * Weights are deterministic pseudo-random finite values; mw_value() gives
 * element i of a tensor as f32 (exact for BF16) to compare with what the
 * loader maps.
 */
#ifndef ASA_TEST_MODEL_WRITER_H
#define ASA_TEST_MODEL_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef enum mw_dtypes { MW_F32, MW_BF16, MW_MIXED } mw_dtypes;

typedef struct mw_opts {
    mw_dtypes dtypes; /* MIXED alternates F32 / BF16 tensor by tensor */
    bool tied;        /* tie_word_embeddings (no lm_head.weight) */
    int n_shards;     /* 0: model.safetensors; >= 1: shards + index */
    uint32_t seed;
} mw_opts;

typedef struct mw_tensor {
    char name[96];
    char dtype[16];       /* "F32", "BF16" or anything a test wants */
    int ndim;
    int64_t shape[4];
    size_t nbytes;
    unsigned char *data;  /* [nbytes], owned */
    int shard;            /* 0..n_shards-1 */
    uint64_t begin, end;  /* data_offsets, set by mw_write */
} mw_tensor;

typedef struct mw_model {
    json_t *config;       /* owned; edit before mw_write */
    mw_tensor *t;         /* [n] */
    int n, cap;
    int n_shards;         /* 0: single file */
    int misalign;         /* extra header bytes after the 8-byte padding */
    uint32_t seed;        /* mixed into every tensor's pseudo-random fill */
    /* Called on each file's header object just before it is written. */
    void (*header_hook)(json_t *hdr, int shard, void *arg);
    void *hook_arg;
} mw_model;

/* A model with the standard small test config and all its tensors. */
mw_model *mw_create(const mw_opts *o);
void mw_destroy(mw_model *m);
/* Rebuilds the tensor list from m->config (after the test edited it). */
void mw_build_tensors(mw_model *m, mw_dtypes dtypes, uint32_t seed);
mw_tensor *mw_find(mw_model *m, const char *name);
void mw_remove(mw_model *m, const char *name);
/* Appends a tensor filled with pseudo-random bytes valid for F32/BF16. */
mw_tensor *mw_add(mw_model *m, const char *name, const char *dtype, int ndim,
                  const int64_t *shape);
/* Writes config.json and the weights into dir; returns 0 or -1. */
int mw_write(mw_model *m, const char *dir);
/* Element i of t as f32 (t must be F32 or BF16). */
float mw_value(const mw_tensor *t, int64_t i);
int64_t mw_numel(const mw_tensor *t);

/* Shard file name for shard s of n ("model-00001-of-00002.safetensors"). */
void mw_shard_name(char *buf, size_t n, int s, int n_shards);
/* Writes bytes to dir/name; returns 0 or -1. */
int mw_write_file(const char *dir, const char *name, const void *data, size_t len);
/* Reads dir/name into a malloc'ed buffer; NULL on failure. */
unsigned char *mw_read_file(const char *dir, const char *name, size_t *len);
/* A fresh empty directory under $TMPDIR (or /tmp); free() the result. */
char *mw_tmpdir(void);
/* Removes the flat directory created by mw_tmpdir and everything in it. */
void mw_rmtree(const char *dir);

#endif /* ASA_TEST_MODEL_WRITER_H */
