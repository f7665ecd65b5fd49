/*
 * engine/model.c - loading an ASA model directory (contract in model.h).
 *
 * Sections: config.json (parse, defaults, load-time checks), small-file and
 * mapping helpers, the sharded index, binding tensors to the eng_model, and
 * load/destroy.
 *
 * Choices the spec leaves open, fixed here:
 * - `local` and `global` objects are required even when no layer uses that
 *   type (ASA-SPEC 1 lists local.* and global.* as required fields).
 * - Unknown keys inside `local` / `global` are errors (a typo there would
 *   otherwise silently select a default); unknown top-level keys are ignored
 *   because Hugging Face configs carry many (architectures, auto_map, ...).
 * - Integer fields must be JSON integers (64.0 is rejected); sizes are capped
 *   at ENG_DIM_MAX so that every derived dimension fits comfortably in int.
 * - rope_dim must be a positive even integer.
 * - bos/eos_token_id: an integer in [0, vocab_size), or null/absent (-1).
 * - When both model.safetensors and model.safetensors.index.json exist, the
 *   single file wins (as in Hugging Face transformers); the index is ignored.
 * - Holes between tensors in the data section are allowed; overlaps are not.
 * - Shard names in the index must be plain file names: no '/', no '\\',
 *   not "." or ".." (shards may still be symlinks, as in the HF hub cache).
 * - Files are opened with O_NONBLOCK so that a FIFO planted under a model
 *   file name cannot hang the loader; anything but a regular file is refused.
 * - The mapping assumes the files do not shrink while the model is loaded:
 *   truncating a mapped file under a running server raises SIGBUS on the
 *   next read, as with any mmap-based loader.
 */
#define _POSIX_C_SOURCE 200809L
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "safetensors.h"

#define ENG_DIM_MAX (1 << 24)
#define CONFIG_NAME "config.json"
#define SINGLE_NAME "model.safetensors"
#define INDEX_NAME "model.safetensors.index.json"
#define CONFIG_MAX_BYTES (16u << 20)
#define INDEX_MAX_BYTES (256u << 20)
#define NAMEW 200 /* bounded width for names read from files */

typedef struct eng__map {
    void *base;
    size_t len;
} eng__map;

struct eng__model_priv {
    eng__map *maps; /* [n_maps], each munmap'ed on destroy */
    int n_maps;
};

/* ================================================================ config */

/* Short JSON rendering of a value for messages ("\"4\"", "4.5", "null"). */
static void describe(const json_t *v, char *s, size_t n) {
    char *d = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(9));
    if (!d) {
        snprintf(s, n, "?");
        return;
    }
    if (strlen(d) > 40)
        snprintf(s, n, "%.37s...", d);
    else
        snprintf(s, n, "%s", d);
    free(d);
}

/* Every config value error goes through here: "config.json: field 'F': ...".
 * `v`, when non-NULL, is appended as ", got <json>". */
static asa_err bad_field(asa_errbuf *eb, const char *field, const json_t *v, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));
static asa_err bad_field(asa_errbuf *eb, const char *field, const json_t *v, const char *fmt,
                         ...) {
    char what[160], got[48] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (v)
        describe(v, got, sizeof got);
    return asa_errf(eb, ASA_EINVAL, CONFIG_NAME ": field '%.*s': %s%s%s", NAMEW, field, what,
                    v ? ", got " : "", got);
}

/* Reads integer field `key` of obj (named prefix+key in messages).  Absent:
 * an error if required, else *out = def. */
static asa_err get_int(const json_t *obj, const char *prefix, const char *key, bool required,
                       int def, int64_t lo, int64_t hi, int *out, asa_errbuf *eb) {
    char field[64];
    snprintf(field, sizeof field, "%s%s", prefix, key);
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return bad_field(eb, field, NULL, "required field is missing");
        *out = def;
        return ASA_OK;
    }
    if (!json_is_integer(v))
        return bad_field(eb, field, v, "must be an integer");
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return bad_field(eb, field, v, "must be an integer in [%" PRId64 ", %" PRId64 "]", lo,
                         hi);
    *out = (int)x;
    return ASA_OK;
}

/* A positive finite number (integer or real); absent gives def. */
static asa_err get_pos_real(const json_t *obj, const char *key, double def, double *out,
                            asa_errbuf *eb) {
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return ASA_OK;
    }
    double x = json_number_value(v);
    if (!json_is_number(v) || !isfinite(x) || !(x > 0))
        return bad_field(eb, key, v, "must be a positive number");
    *out = x;
    return ASA_OK;
}

/* Token id: integer in [0, vocab) or null/absent (-1). */
static asa_err get_token_id(const json_t *obj, const char *key, int vocab, int *out,
                            asa_errbuf *eb) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = -1;
        return ASA_OK;
    }
    return get_int(obj, "", key, true, -1, 0, (int64_t)vocab - 1, out, eb);
}

/* Fails if `obj` (named `prefix` without the dot) has a key not in `known`. */
static asa_err check_keys(const json_t *obj, const char *prefix, const char *const *known,
                          asa_errbuf *eb) {
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        bool ok = false;
        for (int i = 0; known[i]; i++)
            ok = ok || !strcmp(key, known[i]);
        if (!ok) {
            char field[NAMEW + 16];
            snprintf(field, sizeof field, "%s.%.*s", prefix, NAMEW, key);
            return bad_field(eb, field, NULL, "unknown field");
        }
    }
    return ASA_OK;
}

static asa_err get_object(const json_t *root, const char *key, const json_t **out,
                          asa_errbuf *eb) {
    const json_t *v = json_object_get(root, key);
    if (!v)
        return bad_field(eb, key, NULL, "required field is missing");
    if (!json_is_object(v))
        return bad_field(eb, key, v, "must be an object");
    *out = v;
    return ASA_OK;
}

/* The whole config from a parsed root object; c->layer_types allocated. */
static asa_err config_from_json(const json_t *root, eng_config *c, asa_errbuf *eb) {
    asa_err rc;
#define TRY(x)                                                                                \
    do {                                                                                      \
        if ((rc = (x)))                                                                       \
            return rc;                                                                        \
    } while (0)
#define DIM ENG_DIM_MAX
#define SMALL 65536

    /* model_type first: a config for another architecture should say so,
     * not complain about a missing ASA field. */
    const json_t *mt = json_object_get(root, "model_type");
    if (!mt)
        return bad_field(eb, "model_type", NULL, "required field is missing");
    if (!json_is_string(mt))
        return bad_field(eb, "model_type", mt, "must be a string");
    if (strcmp(json_string_value(mt), "asa"))
        return bad_field(eb, "model_type", mt, "unknown model_type (expected \"asa\")");

    TRY(get_int(root, "", "vocab_size", true, 0, 1, DIM, &c->vocab_size, eb));
    TRY(get_int(root, "", "hidden_size", true, 0, 1, DIM, &c->hidden_size, eb));
    TRY(get_int(root, "", "intermediate_size", true, 0, 1, DIM, &c->intermediate_size, eb));
    TRY(get_int(root, "", "num_hidden_layers", true, 0, 1, SMALL, &c->num_hidden_layers, eb));
    TRY(get_int(root, "", "num_heads", true, 0, 1, SMALL, &c->num_heads, eb));
    TRY(get_int(root, "", "head_dim", true, 0, 1, SMALL, &c->head_dim, eb));
    TRY(get_int(root, "", "v_head_dim", false, c->head_dim, 1, SMALL, &c->v_head_dim, eb));
    TRY(get_int(root, "", "rope_dim", true, 0, 1, SMALL, &c->rope_dim, eb));
    TRY(get_pos_real(root, "rope_theta", 10000.0, &c->rope_theta, eb));
    TRY(get_pos_real(root, "rms_norm_eps", 1e-6, &c->rms_norm_eps, eb));
    TRY(get_int(root, "", "max_position_embeddings", false, 8192, 1, INT_MAX,
                &c->max_position_embeddings, eb));

    const json_t *tie = json_object_get(root, "tie_word_embeddings");
    if (tie && !json_is_boolean(tie))
        return bad_field(eb, "tie_word_embeddings", tie, "must be true or false");
    c->tie_word_embeddings = tie && json_is_true(tie);
    TRY(get_token_id(root, "bos_token_id", c->vocab_size, &c->bos_token_id, eb));
    TRY(get_token_id(root, "eos_token_id", c->vocab_size, &c->eos_token_id, eb));
    const json_t *td = json_object_get(root, "torch_dtype");
    if (td && !json_is_string(td) && !json_is_null(td))
        return bad_field(eb, "torch_dtype", td, "must be a string");

    /* local.* */
    static const char *const local_keys[] = {"latent_heads", "latent_dim", "window", NULL};
    const json_t *lo;
    eng_attn_cfg *la = &c->local.attn;
    TRY(get_object(root, "local", &lo, eb));
    TRY(check_keys(lo, "local", local_keys, eb));
    TRY(get_int(lo, "local.", "latent_heads", true, 0, 1, SMALL, &la->latent_heads, eb));
    TRY(get_int(lo, "local.", "latent_dim", true, 0, 1, SMALL, &la->latent_dim, eb));
    TRY(get_int(lo, "local.", "window", true, 0, 1, INT_MAX, &c->local.window, eb));

    /* global.* */
    static const char *const global_keys[] = {
        "latent_heads", "latent_dim",      "block_size",  "top_n", "init_blocks",
        "local_blocks", "selection_share", "compression", NULL};
    const json_t *gl;
    eng_attn_cfg *ga = &c->global.attn;
    TRY(get_object(root, "global", &gl, eb));
    TRY(check_keys(gl, "global", global_keys, eb));
    TRY(get_int(gl, "global.", "latent_heads", true, 0, 1, SMALL, &ga->latent_heads, eb));
    TRY(get_int(gl, "global.", "latent_dim", true, 0, 1, SMALL, &ga->latent_dim, eb));
    TRY(get_int(gl, "global.", "block_size", true, 0, 1, SMALL, &c->global.block_size, eb));
    TRY(get_int(gl, "global.", "top_n", true, 0, 1, SMALL, &c->global.top_n, eb));
    TRY(get_int(gl, "global.", "init_blocks", true, 0, 0, SMALL, &c->global.init_blocks, eb));
    TRY(get_int(gl, "global.", "local_blocks", true, 0, 1, SMALL, &c->global.local_blocks, eb));
    TRY(get_int(gl, "global.", "selection_share", false, 4, 1, SMALL,
                &c->global.selection_share, eb));
    const json_t *comp = json_object_get(gl, "compression");
    if (comp && !(json_is_string(comp) && !strcmp(json_string_value(comp), "mean")))
        return bad_field(eb, "global.compression", comp,
                         "must be \"mean\" (the only value defined)");

    /* Load-time checks (ASA-SPEC 1). */
#define VAL(obj, key) json_object_get((obj), (key))
    if (c->rope_dim % 2)
        return bad_field(eb, "rope_dim", VAL(root, "rope_dim"), "must be even");
    if (c->num_heads % la->latent_heads)
        return bad_field(eb, "local.latent_heads", VAL(lo, "latent_heads"),
                         "must divide num_heads (%d)", c->num_heads);
    if (c->num_heads % ga->latent_heads)
        return bad_field(eb, "global.latent_heads", VAL(gl, "latent_heads"),
                         "must divide num_heads (%d)", c->num_heads);
    if (c->global.block_size % c->global.selection_share)
        return bad_field(eb, "global.block_size", VAL(gl, "block_size"),
                         "must be a multiple of global.selection_share (%d)",
                         c->global.selection_share);
    if ((int64_t)c->global.init_blocks + c->global.local_blocks > c->global.top_n)
        return bad_field(eb, "global.top_n", VAL(gl, "top_n"),
                         "must be >= init_blocks + local_blocks (%d)",
                         c->global.init_blocks + c->global.local_blocks);
#undef VAL
    /* Every derived row count must fit in int (the caps above make this
     * hold for sane configs; checked anyway). */
    int64_t H = c->num_heads, dmax = c->rope_dim > c->v_head_dim ? c->rope_dim : c->v_head_dim;
    int64_t lat_l = (int64_t)la->latent_heads * la->latent_dim + c->rope_dim;
    int64_t lat_g = (int64_t)ga->latent_heads * ga->latent_dim + c->rope_dim;
    if (H * (c->head_dim + dmax) > INT_MAX || lat_l > INT_MAX || lat_g > INT_MAX)
        return bad_field(eb, "num_heads", NULL, "derived projection sizes exceed %d", INT_MAX);

    /* layer_types */
    int L = c->num_hidden_layers;
    const json_t *lt = json_object_get(root, "layer_types");
    if (lt) {
        if (!json_is_array(lt))
            return bad_field(eb, "layer_types", lt, "must be an array");
        if (json_array_size(lt) != (size_t)L)
            return bad_field(eb, "layer_types", NULL,
                             "has %zu entries but num_hidden_layers is %d",
                             json_array_size(lt), L);
        for (int i = 0; i < L; i++) {
            const json_t *e = json_array_get(lt, (size_t)i);
            const char *s = json_is_string(e) ? json_string_value(e) : NULL;
            if (!s || (strcmp(s, "local") && strcmp(s, "global"))) {
                char field[32];
                snprintf(field, sizeof field, "layer_types[%d]", i);
                return bad_field(eb, field, e, "must be \"local\" or \"global\"");
            }
        }
    }
    c->layer_types = malloc((size_t)L * sizeof *c->layer_types);
    if (!c->layer_types)
        return asa_errf(eb, ASA_ENOMEM, CONFIG_NAME ": out of memory");
    c->n_local_layers = c->n_global_layers = 0;
    for (int i = 0; i < L; i++) {
        bool global = lt ? !strcmp(json_string_value(json_array_get(lt, (size_t)i)), "global")
                         : i % 2 == 1;
        c->layer_types[i] = global ? ENG_LAYER_GLOBAL : ENG_LAYER_LOCAL;
        if (global)
            c->n_global_layers++;
        else
            c->n_local_layers++;
    }
    return ASA_OK;
#undef SMALL
#undef DIM
#undef TRY
}

asa_err eng_config_parse(const char *json_text, size_t len, eng_config *cfg, asa_errbuf *eb) {
    if (!json_text || !cfg)
        return asa_errf(eb, ASA_EINVAL, CONFIG_NAME ": no text to parse");
    json_error_t je;
    json_t *root = json_loadb(json_text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root && eng__json_oom(&je))
        return asa_errf(eb, ASA_ENOMEM, CONFIG_NAME ": out of memory");
    if (!root)
        return asa_errf(eb, ASA_EFORMAT, CONFIG_NAME ": not valid JSON: %s (line %d, column %d)",
                        je.text, je.line, je.column);
    asa_err rc;
    eng_config c;
    memset(&c, 0, sizeof c);
    if (!json_is_object(root))
        rc = asa_errf(eb, ASA_EFORMAT, CONFIG_NAME ": top level is not a JSON object");
    else
        rc = config_from_json(root, &c, eb);
    json_decref(root);
    if (rc) {
        free(c.layer_types);
        return rc;
    }
    *cfg = c;
    return ASA_OK;
}

void eng_config_deinit(eng_config *cfg) {
    if (!cfg)
        return;
    free(cfg->layer_types);
    cfg->layer_types = NULL;
}

/* ========================================================= file helpers */

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static const char *errstr(int e, char *buf, size_t n) {
    if (strerror_r(e, buf, n))
        snprintf(buf, n, "error %d", e);
    return buf;
}

/* Reads a whole small file (at most max bytes).  `name` is used in messages.
 * Returns ASA_EIO if it cannot be opened or read; *missing is set when it
 * does not exist. */
static asa_err read_small(const char *dir, const char *name, size_t max, char **out,
                          size_t *len, bool *missing, asa_errbuf *eb) {
    char eb2[128];
    asa_err rc = ASA_OK;
    char *buf = NULL;
    int fd = -1;
    char *path = path_join(dir, name);
    if (missing)
        *missing = false;
    if (!path)
        return asa_errf(eb, ASA_ENOMEM, "%s: out of memory", name);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (missing)
            *missing = errno == ENOENT;
        rc = asa_errf(eb, ASA_EIO, "%s: cannot open '%s': %s", name, path,
                      errstr(errno, eb2, sizeof eb2));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        rc = asa_errf(eb, ASA_EIO, "%s: '%s' is not a regular file", name, path);
        goto fail;
    }
    if ((uint64_t)st.st_size > max) {
        rc = asa_errf(eb, ASA_EFORMAT, "%s: file is %lld bytes (max %zu)", name,
                      (long long)st.st_size, max);
        goto fail;
    }
    size_t n = (size_t)st.st_size, got = 0;
    buf = malloc(n ? n : 1);
    if (!buf) {
        rc = asa_errf(eb, ASA_ENOMEM, "%s: out of memory", name);
        goto fail;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = asa_errf(eb, ASA_EIO, "%s: cannot read '%s': %s", name, path,
                          r < 0 ? errstr(errno, eb2, sizeof eb2) : "file shrank");
            goto fail;
        }
        got += (size_t)r;
    }
    close(fd);
    free(path);
    *out = buf;
    *len = n;
    return ASA_OK;

fail:
    free(buf);
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

/* Maps dir/name read-only.  Files shorter than 8 bytes are rejected here
 * (an empty file cannot be mapped).  *missing as for read_small. */
static asa_err map_file(const char *dir, const char *name, eng__map *mp, bool *missing,
                        asa_errbuf *eb) {
    char eb2[128];
    asa_err rc = ASA_OK;
    char *path = path_join(dir, name);
    if (missing)
        *missing = false;
    if (!path)
        return asa_errf(eb, ASA_ENOMEM, "%s: out of memory", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (missing)
            *missing = errno == ENOENT;
        rc = asa_errf(eb, ASA_EIO, "%s: cannot open '%s': %s", name, path,
                      errstr(errno, eb2, sizeof eb2));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        rc = asa_errf(eb, ASA_EIO, "%s: '%s' is not a regular file", name, path);
        goto out;
    }
    if (st.st_size < 8) {
        rc = asa_errf(eb, ASA_EFORMAT,
                      "%s: file is %lld bytes, too short for the 8-byte header length", name,
                      (long long)st.st_size);
        goto out;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        rc = asa_errf(eb, ASA_EIO, "%s: file too large to map", name);
        goto out;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        rc = asa_errf(eb, ASA_EIO, "%s: cannot map '%s': %s", name, path,
                      errstr(errno, eb2, sizeof eb2));
        goto out;
    }
    mp->base = p;
    mp->len = (size_t)st.st_size;
out:
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

/* ========================================================= weight files */

/* One parsed weight file (model.safetensors or a shard). */
typedef struct wfile {
    const char *name; /* file name inside the directory (borrowed) */
    eng__st_file st;
} wfile;

/* A tensor of the whole model with the file it lives in. */
typedef struct wentry {
    const eng__st_tensor *t;
    const wfile *f;
    bool used;
} wentry;

/* Everything the loader holds while binding; freed by wset_deinit. */
typedef struct wset {
    wfile *files;
    int n_files;
    json_t *index;        /* the parsed index (owns shard names), or NULL */
    const char *src;      /* where tensors are listed, for "missing" messages */
    wentry *all;          /* [n_all] sorted by name */
    int n_all;
} wset;

static void wset_deinit(wset *w) {
    for (int i = 0; i < w->n_files; i++)
        eng__st_deinit(&w->files[i].st);
    free(w->files);
    free(w->all);
    json_decref(w->index);
    memset(w, 0, sizeof *w);
}

static asa_err add_map(eng_model *m, const eng__map *mp) {
    struct eng__model_priv *pv = m->priv;
    eng__map *nm = realloc(pv->maps, (size_t)(pv->n_maps + 1) * sizeof *nm);
    if (!nm)
        return ASA_ENOMEM;
    pv->maps = nm;
    pv->maps[pv->n_maps++] = *mp;
    return ASA_OK;
}

/* Maps and parses file `name`; on success it is recorded in m (for unmap)
 * and in f. */
static asa_err load_wfile(eng_model *m, const char *name, wfile *f, bool *missing,
                          asa_errbuf *eb) {
    eng__map mp = {0};
    asa_err rc = map_file(m->dir, name, &mp, missing, eb);
    if (rc)
        return rc;
    if (add_map(m, &mp)) {
        munmap(mp.base, mp.len);
        return asa_errf(eb, ASA_ENOMEM, "%s: out of memory", name);
    }
    f->name = name;
    return eng__st_parse(name, mp.base, mp.len, &f->st, eb);
}

static bool safe_shard_name(const char *s) {
    return s[0] && strcmp(s, ".") && strcmp(s, "..") && !strchr(s, '/') && !strchr(s, '\\');
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Reads the index, maps every shard it names, and checks that the index
 * and the shards agree tensor by tensor. */
static asa_err load_index(eng_model *m, wset *w, bool *missing, asa_errbuf *eb) {
    char *text = NULL;
    size_t len = 0;
    const char **names = NULL;
    asa_err rc = read_small(m->dir, INDEX_NAME, INDEX_MAX_BYTES, &text, &len, missing, eb);
    if (rc)
        return rc;
    json_error_t je;
    w->index = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!w->index && eng__json_oom(&je))
        return asa_errf(eb, ASA_ENOMEM, INDEX_NAME ": out of memory");
    if (!w->index)
        return asa_errf(eb, ASA_EFORMAT, INDEX_NAME ": not valid JSON: %s (line %d, column %d)",
                        je.text, je.line, je.column);
    json_t *wm = json_is_object(w->index) ? json_object_get(w->index, "weight_map") : NULL;
    if (!json_is_object(wm))
        return asa_errf(eb, ASA_EFORMAT, INDEX_NAME ": field 'weight_map' is %s",
                        wm ? "not an object" : "missing");

    /* Distinct shard names, each a plain file name inside the directory. */
    size_t n = json_object_size(wm), k = 0;
    names = malloc((n ? n : 1) * sizeof *names);
    if (!names)
        return asa_errf(eb, ASA_ENOMEM, INDEX_NAME ": out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v)) {
            rc = asa_errf(eb, ASA_EFORMAT, INDEX_NAME ": tensor '%.*s': shard is not a string",
                          NAMEW, key);
            goto out;
        }
        if (!safe_shard_name(json_string_value(v))) {
            rc = asa_errf(eb, ASA_EFORMAT,
                          INDEX_NAME ": tensor '%.*s': shard file name '%.*s' is not a plain "
                                     "file name inside the model directory",
                          NAMEW, key, NAMEW, json_string_value(v));
            goto out;
        }
        names[k++] = json_string_value(v);
    }
    qsort(names, k, sizeof *names, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (!u || strcmp(names[u - 1], names[i]))
            names[u++] = names[i];

    w->files = calloc(u ? u : 1, sizeof *w->files);
    if (!w->files) {
        rc = asa_errf(eb, ASA_ENOMEM, INDEX_NAME ": out of memory");
        goto out;
    }
    for (size_t i = 0; i < u; i++) {
        w->n_files++;
        rc = load_wfile(m, names[i], &w->files[i], NULL, eb);
        if (rc)
            goto out;
    }

    /* Index -> shard: each listed tensor is in its shard. */
    json_object_foreach(wm, key, v) {
        const char *sn = json_string_value(v);
        const char **hit = bsearch(&sn, names, u, sizeof *names, cmp_str);
        const wfile *f = &w->files[hit - names];
        if (!eng__st_find(&f->st, key)) {
            rc = asa_errf(eb, ASA_EFORMAT,
                          INDEX_NAME ": tensor '%.*s' is mapped to '%s', which has no such tensor",
                          NAMEW, key, sn);
            goto out;
        }
    }
    /* Shard -> index: each tensor of a shard is listed, for that shard. */
    for (int i = 0; i < w->n_files; i++) {
        const wfile *f = &w->files[i];
        for (int j = 0; j < f->st.n; j++) {
            const char *tn = f->st.tensors[j].name;
            json_t *sv = json_object_get(wm, tn);
            if (!sv) {
                rc = asa_errf(eb, ASA_EFORMAT,
                              "%s: tensor '%.*s' is not listed in " INDEX_NAME, f->name, NAMEW, tn);
                goto out;
            }
            if (strcmp(json_string_value(sv), f->name)) {
                rc = asa_errf(eb, ASA_EFORMAT,
                              "%s: tensor '%.*s' is in two shards: '%s' and '%s'", INDEX_NAME,
                              NAMEW, tn, json_string_value(sv), f->name);
                goto out;
            }
        }
    }
    w->src = INDEX_NAME;
    rc = ASA_OK;
out:
    free(names);
    return rc;
}

static int cmp_wentry(const void *a, const void *b) {
    return strcmp(((const wentry *)a)->t->name, ((const wentry *)b)->t->name);
}

/* Loads the weight files of m->dir into w and builds w->all. */
static asa_err load_weights(eng_model *m, wset *w, asa_errbuf *eb) {
    bool missing = false;
    asa_err rc;
    w->files = calloc(1, sizeof *w->files);
    if (!w->files)
        return asa_errf(eb, ASA_ENOMEM, SINGLE_NAME ": out of memory");
    w->n_files = 1;
    rc = load_wfile(m, SINGLE_NAME, &w->files[0], &missing, eb);
    if (rc && !missing)
        return rc;
    if (rc) {
        wset_deinit(w);
        rc = load_index(m, w, &missing, eb);
        if (rc && missing)
            return asa_errf(eb, ASA_EIO, "no " SINGLE_NAME " or " INDEX_NAME " in '%s'",
                            m->dir);
        if (rc)
            return rc;
    } else {
        w->src = SINGLE_NAME;
    }

    int total = 0;
    for (int i = 0; i < w->n_files; i++)
        total += w->files[i].st.n;
    w->all = calloc(total ? (size_t)total : 1, sizeof *w->all);
    if (!w->all)
        return asa_errf(eb, ASA_ENOMEM, "%s: out of memory", w->src);
    for (int i = 0; i < w->n_files; i++)
        for (int j = 0; j < w->files[i].st.n; j++)
            w->all[w->n_all++] = (wentry){&w->files[i].st.tensors[j], &w->files[i], false};
    qsort(w->all, (size_t)w->n_all, sizeof *w->all, cmp_wentry);
    for (int i = 1; i < w->n_all; i++)
        if (!strcmp(w->all[i - 1].t->name, w->all[i].t->name))
            return asa_errf(eb, ASA_EFORMAT, "tensor '%.*s' is in two files: '%s' and '%s'",
                            NAMEW, w->all[i].t->name, w->all[i - 1].f->name, w->all[i].f->name);
    return ASA_OK;
}

/* ============================================================== binding */

static wentry *wfind(wset *w, const char *name) {
    int lo = 0, hi = w->n_all - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(w->all[mid].t->name, name);
        if (!c)
            return &w->all[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

/* Binds tensor `name` of expected shape [rows] (cols == 0) or [rows, cols]. */
static asa_err bind(wset *w, const char *name, int64_t rows, int64_t cols, const char *why,
                    eng_tensor *dst, asa_errbuf *eb) {
    wentry *e = wfind(w, name);
    if (!e)
        return asa_errf(eb, ASA_EFORMAT, "%s: tensor '%s' is missing%s", w->src, name, why);
    const eng__st_tensor *t = e->t;
    int ndim = cols ? 2 : 1;
    int64_t want[2] = {rows, cols};
    if (t->ndim != ndim || t->shape[0] != rows || (ndim == 2 && t->shape[1] != cols)) {
        char got[128], exp[64];
        eng__shape_str(got, sizeof got, t->shape, t->ndim);
        eng__shape_str(exp, sizeof exp, want, ndim);
        return asa_errf(eb, ASA_EFORMAT, "%s: tensor '%s': shape %s != expected %s",
                        e->f->name, name, got, exp);
    }
    e->used = true;
    dst->data = t->data;
    dst->dtype = t->dtype;
    dst->ndim = ndim;
    dst->shape[0] = rows;
    dst->shape[1] = ndim == 2 ? cols : 1;
    return ASA_OK;
}

/* Layer index of "layers.<i>.attn.g_proj.weight", or -1. */
static long gproj_layer(const char *name) {
    static const char pre[] = "layers.", suf[] = ".attn.g_proj.weight";
    if (strncmp(name, pre, sizeof pre - 1))
        return -1;
    const char *p = name + sizeof pre - 1;
    if (*p < '0' || *p > '9')
        return -1;
    char *end;
    errno = 0;
    long i = strtol(p, &end, 10);
    if (errno || strcmp(end, suf))
        return -1;
    return i;
}

static asa_err bind_all(eng_model *m, wset *w, asa_errbuf *eb) {
    const eng_config *c = &m->cfg;
    const int64_t V = c->vocab_size, d = c->hidden_size, F = c->intermediate_size;
    const int64_t H = c->num_heads, dh = c->head_dim, dv = c->v_head_dim, dR = c->rope_dim;
    asa_err rc;
    char nm[96];
#define BIND(rows, cols, why, dst)                                                            \
    do {                                                                                      \
        if ((rc = bind(w, nm, (rows), (cols), (why), (dst), eb)))                             \
            return rc;                                                                        \
    } while (0)

    snprintf(nm, sizeof nm, "embed_tokens.weight");
    BIND(V, d, "", &m->embed);
    int n_type[2] = {0, 0};
    for (int i = 0; i < c->num_hidden_layers; i++) {
        eng_layer *l = &m->layers[i];
        l->type = c->layer_types[i];
        const eng_attn_cfg *a = l->type == ENG_LAYER_LOCAL ? &c->local.attn : &c->global.attn;
        l->G = a->latent_heads;
        l->dg = a->latent_dim;
        l->type_index = n_type[l->type]++;
        const int64_t G = l->G, dg = l->dg;
#define NAME(s) snprintf(nm, sizeof nm, "layers.%d." s, i)
        NAME("attn_norm.weight");
        BIND(d, 0, "", &l->attn_norm);
        NAME("mlp_norm.weight");
        BIND(d, 0, "", &l->mlp_norm);
        NAME("attn.q_proj.weight");
        BIND(H * (dh + dR), d, "", &l->q_proj);
        NAME("attn.kv_a_proj.weight");
        BIND(G * dg + dR, d, "", &l->kv_a_proj);
        NAME("attn.kv_a_norm.weight");
        BIND(G * dg, 0, "", &l->kv_a_norm);
        NAME("attn.kv_b_proj.weight");
        BIND(H * (dh + dv), dg, "", &l->kv_b_proj);
        NAME("attn.o_proj.weight");
        BIND(d, H * dv, "", &l->o_proj);
        if (l->type == ENG_LAYER_GLOBAL) {
            NAME("attn.g_proj.weight");
            BIND(2 * H, d, " (global layers need it)", &l->g_proj);
        }
        NAME("mlp.gate_proj.weight");
        BIND(F, d, "", &l->gate_proj);
        NAME("mlp.up_proj.weight");
        BIND(F, d, "", &l->up_proj);
        NAME("mlp.down_proj.weight");
        BIND(d, F, "", &l->down_proj);
#undef NAME
    }
    snprintf(nm, sizeof nm, "norm.weight");
    BIND(d, 0, "", &m->norm);
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
    } else {
        snprintf(nm, sizeof nm, "lm_head.weight");
        BIND(V, d, " (tie_word_embeddings is false)", &m->lm_head);
    }
#undef BIND

    /* Anything left over is an error; say why where we can. */
    for (int i = 0; i < w->n_all; i++) {
        const wentry *e = &w->all[i];
        if (e->used)
            continue;
        const char *tn = e->t->name;
        long li = gproj_layer(tn);
        if (!strcmp(tn, "lm_head.weight"))
            return asa_errf(eb, ASA_EFORMAT,
                            "%s: tensor 'lm_head.weight' is present but "
                            "tie_word_embeddings is true",
                            e->f->name);
        if (li >= 0 && li < c->num_hidden_layers)
            return asa_errf(eb, ASA_EFORMAT,
                            "%s: tensor '%s': g_proj is only allowed on global layers "
                            "(layer %ld is local)",
                            e->f->name, tn, li);
        return asa_errf(eb, ASA_EFORMAT, "%s: unknown tensor '%.*s'", e->f->name, NAMEW, tn);
    }
    return ASA_OK;
}

/* ======================================================== load/destroy */

asa_err eng_model_load(const char *dir, eng_model **out, asa_errbuf *eb) {
    if (!dir || !out)
        return asa_errf(eb, ASA_EINVAL, "eng_model_load: NULL argument");
    char *text = NULL;
    size_t len = 0;
    eng_model *m = NULL;
    wset w = {0};
    asa_err rc = read_small(dir, CONFIG_NAME, CONFIG_MAX_BYTES, &text, &len, NULL, eb);
    if (rc)
        return rc;
    m = calloc(1, sizeof *m);
    if (!m) {
        rc = asa_errf(eb, ASA_ENOMEM, "out of memory");
        goto fail;
    }
    rc = eng_config_parse(text, len, &m->cfg, eb);
    free(text);
    text = NULL;
    if (rc)
        goto fail;
    m->dir = strdup(dir);
    m->priv = calloc(1, sizeof *m->priv);
    m->layers = calloc((size_t)m->cfg.num_hidden_layers, sizeof *m->layers);
    if (!m->dir || !m->priv || !m->layers) {
        rc = asa_errf(eb, ASA_ENOMEM, "out of memory");
        goto fail;
    }
    rc = load_weights(m, &w, eb);
    if (rc)
        goto fail;
    rc = bind_all(m, &w, eb);
    if (rc)
        goto fail;
    wset_deinit(&w);
    *out = m;
    return ASA_OK;

fail:
    wset_deinit(&w);
    eng_model_destroy(m);
    free(text);
    return rc;
}

void eng_model_destroy(eng_model *m) {
    if (!m)
        return;
    if (m->priv) {
        for (int i = 0; i < m->priv->n_maps; i++)
            munmap(m->priv->maps[i].base, m->priv->maps[i].len);
        free(m->priv->maps);
        free(m->priv);
    }
    eng_config_deinit(&m->cfg);
    free(m->layers);
    free(m->dir);
    free(m);
}
