/* tests/engine/model_writer.c - see model_writer.h. */
#define _POSIX_C_SOURCE 200809L
#include "model_writer.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* xorshift32; never returns to 0 from a non-zero state. */
static uint32_t rnd(uint32_t *s) {
    uint32_t x = *s ? *s : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static json_t *default_config(bool tied) {
    json_t *c = json_pack(
        "{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:i, s:b, s:i, s:i, s:s,"
        " s:[s,s,s], s:{s:i, s:i, s:i}, s:{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s}}",
        "model_type", "asa", "vocab_size", 13, "hidden_size", 8, "intermediate_size", 12,
        "num_hidden_layers", 3, "num_heads", 4, "head_dim", 4, "v_head_dim", 3, "rope_dim", 2,
        "rope_theta", 500.0, "rms_norm_eps", 1e-5, "max_position_embeddings", 64,
        "tie_word_embeddings", tied, "bos_token_id", 1, "eos_token_id", 2, "torch_dtype",
        "float32", "layer_types", "local", "global", "local", "local", "latent_heads", 1,
        "latent_dim", 6, "window", 4, "global", "latent_heads", 2, "latent_dim", 5,
        "block_size", 4, "top_n", 4, "init_blocks", 1, "local_blocks", 2, "selection_share",
        2, "compression", "mean");
    return c;
}

static int cfg_int(const json_t *o, const char *k, int def) {
    const json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int)json_integer_value(v) : def;
}

int64_t mw_numel(const mw_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

static size_t dsize(const char *dtype) {
    if (!strcmp(dtype, "F32") || !strcmp(dtype, "I32"))
        return 4;
    if (!strcmp(dtype, "I64") || !strcmp(dtype, "F64"))
        return 8;
    if (!strcmp(dtype, "U8") || !strcmp(dtype, "I8") || !strcmp(dtype, "BOOL"))
        return 1;
    return 2; /* BF16, F16, I16 */
}

static uint32_t name_seed(const char *s, uint32_t seed) {
    uint32_t h = 2166136261u ^ seed;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h ? h : 1;
}

mw_tensor *mw_add(mw_model *m, const char *name, const char *dtype, int ndim,
                  const int64_t *shape) {
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 64;
        mw_tensor *t = realloc(m->t, (size_t)cap * sizeof *t);
        if (!t)
            return NULL;
        m->t = t;
        m->cap = cap;
    }
    mw_tensor *t = &m->t[m->n];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    size_t es = dsize(dtype);
    t->nbytes = (size_t)mw_numel(t) * es;
    t->data = malloc(t->nbytes ? t->nbytes : 1);
    if (!t->data)
        return NULL;
    uint32_t s = name_seed(name, m->seed);
    for (size_t i = 0; i < t->nbytes / es; i++) {
        uint32_t r = rnd(&s);
        if (es == 4) {
            /* uniform in (-2, 2), plus an exact power of two now and then */
            float f = ((float)(r >> 8) / 16777216.0f - 0.5f) * 4.0f;
            if (i % 7 == 3)
                f = 0.25f;
            memcpy(t->data + 4 * i, &f, 4);
        } else if (es == 2) {
            /* a finite bf16: random sign and mantissa, exponent 2^-20..2^11 */
            uint16_t h = (uint16_t)((r & 0x807f) | (((107 + (r >> 16) % 32) & 0xff) << 7));
            memcpy(t->data + 2 * i, &h, 2);
        } else {
            memset(t->data + es * i, (int)(r & 0xff), es);
        }
    }
    t->shard = m->n_shards ? m->n % m->n_shards : 0;
    m->n++;
    return t;
}

void mw_build_tensors(mw_model *m, mw_dtypes dtypes, uint32_t seed) {
    for (int i = 0; i < m->n; i++)
        free(m->t[i].data);
    m->n = 0;
    m->seed = seed;
    const json_t *c = m->config;
    const json_t *lo = json_object_get(c, "local"), *gl = json_object_get(c, "global");
    int64_t V = cfg_int(c, "vocab_size", 1), d = cfg_int(c, "hidden_size", 1);
    int64_t F = cfg_int(c, "intermediate_size", 1), L = cfg_int(c, "num_hidden_layers", 1);
    int64_t H = cfg_int(c, "num_heads", 1), dh = cfg_int(c, "head_dim", 1);
    int64_t dv = cfg_int(c, "v_head_dim", (int)dh), dR = cfg_int(c, "rope_dim", 2);
    bool tied = json_is_true(json_object_get(c, "tie_word_embeddings"));
    const json_t *lt = json_object_get(c, "layer_types");
    int k = 0;
#define ADD(nm, nd, ...)                                                                       \
    do {                                                                                       \
        int64_t sh_[] = {__VA_ARGS__};                                                         \
        const char *dt_ = dtypes == MW_F32    ? "F32"                                          \
                          : dtypes == MW_BF16 ? "BF16"                                         \
                                              : (k % 2 ? "BF16" : "F32");                      \
        mw_add(m, nm, dt_, nd, sh_);                                                           \
        k++;                                                                                   \
    } while (0)
    char nm[96];
    ADD("embed_tokens.weight", 2, V, d);
    for (int i = 0; i < L; i++) {
        bool global = lt ? !strcmp(json_string_value(json_array_get(lt, (size_t)i)), "global")
                         : i % 2 == 1;
        const json_t *a = global ? gl : lo;
        int64_t G = cfg_int(a, "latent_heads", 1), dg = cfg_int(a, "latent_dim", 1);
#define NM(s) (snprintf(nm, sizeof nm, "layers.%d." s, i), nm)
        ADD(NM("attn_norm.weight"), 1, d);
        ADD(NM("mlp_norm.weight"), 1, d);
        ADD(NM("attn.q_proj.weight"), 2, H * (dh + dR), d);
        ADD(NM("attn.kv_a_proj.weight"), 2, G * dg + dR, d);
        ADD(NM("attn.kv_a_norm.weight"), 1, G * dg);
        ADD(NM("attn.kv_b_proj.weight"), 2, H * (dh + dv), dg);
        ADD(NM("attn.o_proj.weight"), 2, d, H * dv);
        if (global)
            ADD(NM("attn.g_proj.weight"), 2, 2 * H, d);
        ADD(NM("mlp.gate_proj.weight"), 2, F, d);
        ADD(NM("mlp.up_proj.weight"), 2, F, d);
        ADD(NM("mlp.down_proj.weight"), 2, d, F);
#undef NM
    }
    ADD("norm.weight", 1, d);
    if (!tied)
        ADD("lm_head.weight", 2, V, d);
#undef ADD
}

mw_model *mw_create(const mw_opts *o) {
    mw_model *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->config = default_config(o->tied);
    m->n_shards = o->n_shards;
    mw_build_tensors(m, o->dtypes, o->seed);
    return m;
}

void mw_destroy(mw_model *m) {
    if (!m)
        return;
    for (int i = 0; i < m->n; i++)
        free(m->t[i].data);
    free(m->t);
    json_decref(m->config);
    free(m);
}

mw_tensor *mw_find(mw_model *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->t[i].name, name))
            return &m->t[i];
    return NULL;
}

void mw_remove(mw_model *m, const char *name) {
    mw_tensor *t = mw_find(m, name);
    if (!t)
        return;
    free(t->data);
    int i = (int)(t - m->t);
    memmove(&m->t[i], &m->t[i + 1], (size_t)(m->n - i - 1) * sizeof *t);
    m->n--;
}

float mw_value(const mw_tensor *t, int64_t i) {
    if (!strcmp(t->dtype, "F32")) {
        float f;
        memcpy(&f, t->data + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, t->data + 2 * i, 2);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void mw_shard_name(char *buf, size_t n, int s, int n_shards) {
    snprintf(buf, n, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
}

int mw_write_file(const char *dir, const char *name, const void *data, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = len ? fwrite(data, 1, len, f) : 0;
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

unsigned char *mw_read_file(const char *dir, const char *name, size_t *len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b)
        *len = (size_t)n;
    return b;
}

/* Writes one safetensors file holding the tensors of shard s (or all). */
static int write_st(mw_model *m, const char *dir, const char *fname, int s) {
    json_t *hdr = json_object();
    json_object_set_new(hdr, "__metadata__", json_pack("{s:s}", "format", "pt"));
    uint64_t off = 0;
    /* F32 (and other 4-byte) tensors first, then the rest: keeps alignment. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < m->n; i++) {
            mw_tensor *t = &m->t[i];
            if ((m->n_shards && t->shard != s) || ((dsize(t->dtype) >= 4) != (pass == 0)))
                continue;
            t->begin = off;
            t->end = off + t->nbytes;
            off = t->end;
            json_t *sh = json_array();
            for (int j = 0; j < t->ndim; j++)
                json_array_append_new(sh, json_integer(t->shape[j]));
            json_object_set_new(hdr, t->name,
                                json_pack("{s:s, s:o, s:[I,I]}", "dtype", t->dtype, "shape", sh,
                                          "data_offsets", (json_int_t)t->begin,
                                          (json_int_t)t->end));
        }
    }
    if (m->header_hook)
        m->header_hook(hdr, s, m->hook_arg);
    char *text = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    if (!text)
        return -1;
    size_t hl = strlen(text);
    size_t padded = (hl + 7) / 8 * 8 + (size_t)m->misalign;
    size_t total = 8 + padded + off;
    unsigned char *buf = malloc(total);
    if (!buf) {
        free(text);
        return -1;
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memset(buf + 8, ' ', padded);
    memcpy(buf + 8, text, hl);
    free(text);
    for (int i = 0; i < m->n; i++) {
        const mw_tensor *t = &m->t[i];
        if (m->n_shards && t->shard != s)
            continue;
        memcpy(buf + 8 + padded + t->begin, t->data, t->nbytes);
    }
    int rc = mw_write_file(dir, fname, buf, total);
    free(buf);
    return rc;
}

int mw_write(mw_model *m, const char *dir) {
    char *cfg = json_dumps(m->config, JSON_INDENT(2));
    if (!cfg)
        return -1;
    int rc = mw_write_file(dir, "config.json", cfg, strlen(cfg));
    free(cfg);
    if (rc)
        return rc;
    if (!m->n_shards)
        return write_st(m, dir, "model.safetensors", 0);

    json_t *wm = json_object();
    char fn[64];
    uint64_t total = 0;
    for (int s = 0; s < m->n_shards; s++) {
        mw_shard_name(fn, sizeof fn, s, m->n_shards);
        if ((rc = write_st(m, dir, fn, s)))
            break;
    }
    for (int i = 0; i < m->n; i++) {
        mw_shard_name(fn, sizeof fn, m->t[i].shard, m->n_shards);
        json_object_set_new(wm, m->t[i].name, json_string(fn));
        total += m->t[i].nbytes;
    }
    json_t *idx = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total,
                            "weight_map", wm);
    char *text = json_dumps(idx, JSON_INDENT(2));
    json_decref(idx);
    if (!rc)
        rc = text ? mw_write_file(dir, "model.safetensors.index.json", text, strlen(text)) : -1;
    free(text);
    return rc;
}

char *mw_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    size_t n = strlen(base) + 32;
    char *p = malloc(n);
    if (!p)
        return NULL;
    snprintf(p, n, "%s/asa-model-XXXXXX", base);
    if (!mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

void mw_rmtree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path))
            rmdir(path);
    }
    closedir(d);
    rmdir(dir);
}
