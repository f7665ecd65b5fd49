/*
 * Model loading (engine/model.c): valid directories load and map the exact
 * bytes written; config defaults apply; every kind of corrupt directory is
 * rejected with the right code and a message naming the file and the
 * tensor or field.  Each corrupt case is its own cmocka test (see CASES).
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/model_writer.h"
#include "model.h"
#include "safetensors.h"

/* ------------------------------------------------------------ helpers */

static const eng_tensor *model_tensor(const eng_model *m, const char *name) {
    if (!strcmp(name, "embed_tokens.weight"))
        return &m->embed;
    if (!strcmp(name, "norm.weight"))
        return &m->norm;
    if (!strcmp(name, "lm_head.weight"))
        return &m->lm_head;
    int i, n = -1;
    if (sscanf(name, "layers.%d.%n", &i, &n) != 1 || n < 0 || i < 0 ||
        i >= m->cfg.num_hidden_layers)
        return NULL;
    const eng_layer *l = &m->layers[i];
    const char *r = name + n;
    static const struct {
        const char *suffix;
        size_t off;
    } map[] = {
        {"attn_norm.weight", offsetof(eng_layer, attn_norm)},
        {"mlp_norm.weight", offsetof(eng_layer, mlp_norm)},
        {"attn.q_proj.weight", offsetof(eng_layer, q_proj)},
        {"attn.kv_a_proj.weight", offsetof(eng_layer, kv_a_proj)},
        {"attn.kv_a_norm.weight", offsetof(eng_layer, kv_a_norm)},
        {"attn.kv_b_proj.weight", offsetof(eng_layer, kv_b_proj)},
        {"attn.o_proj.weight", offsetof(eng_layer, o_proj)},
        {"attn.g_proj.weight", offsetof(eng_layer, g_proj)},
        {"mlp.gate_proj.weight", offsetof(eng_layer, gate_proj)},
        {"mlp.up_proj.weight", offsetof(eng_layer, up_proj)},
        {"mlp.down_proj.weight", offsetof(eng_layer, down_proj)},
    };
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
        if (!strcmp(r, map[k].suffix))
            return (const eng_tensor *)((const char *)l + map[k].off);
    return NULL;
}

/* Every tensor the writer wrote is mapped with its dtype, shape and bytes. */
static void check_all_tensors(mw_model *w, const eng_model *m) {
    for (int k = 0; k < w->n; k++) {
        const mw_tensor *t = &w->t[k];
        const eng_tensor *e = model_tensor(m, t->name);
        if (!e)
            fail_msg("tensor %s not bound", t->name);
        assert_non_null(e->data);
        assert_int_equal(e->dtype, strcmp(t->dtype, "F32") ? ENG_BF16 : ENG_F32);
        assert_int_equal(e->ndim, t->ndim);
        assert_int_equal(e->shape[0], t->shape[0]);
        assert_int_equal(e->shape[1], t->ndim == 2 ? t->shape[1] : 1);
        int64_t n = mw_numel(t);
        for (int64_t i = 0; i < n; i++) {
            float a = eng_tensor_get(e, i), b = mw_value(t, i);
            if (memcmp(&a, &b, sizeof a))
                fail_msg("%s[%lld]: loaded %g != written %g", t->name, (long long)i, a, b);
        }
    }
}

static char *write_model(mw_model *w) {
    char *dir = mw_tmpdir();
    assert_non_null(dir);
    assert_int_equal(mw_write(w, dir), 0);
    return dir;
}

static eng_model *load_ok(const char *dir) {
    char msg[512] = "";
    asa_errbuf eb = {msg, sizeof msg};
    eng_model *m = NULL;
    asa_err rc = eng_model_load(dir, &m, &eb);
    if (rc)
        fail_msg("load failed: %s: %s", asa_errname(rc), msg);
    assert_non_null(m);
    return m;
}

static void check_small_config(const eng_config *c, bool tied) {
    assert_int_equal(c->vocab_size, 13);
    assert_int_equal(c->hidden_size, 8);
    assert_int_equal(c->intermediate_size, 12);
    assert_int_equal(c->num_hidden_layers, 3);
    assert_int_equal(c->num_heads, 4);
    assert_int_equal(c->head_dim, 4);
    assert_int_equal(c->v_head_dim, 3);
    assert_int_equal(c->rope_dim, 2);
    assert_true(c->rope_theta == 500.0);
    assert_true(c->rms_norm_eps == 1e-5);
    assert_int_equal(c->max_position_embeddings, 64);
    assert_int_equal(c->tie_word_embeddings, tied);
    assert_int_equal(c->bos_token_id, 1);
    assert_int_equal(c->eos_token_id, 2);
    assert_int_equal(c->layer_types[0], ENG_LAYER_LOCAL);
    assert_int_equal(c->layer_types[1], ENG_LAYER_GLOBAL);
    assert_int_equal(c->layer_types[2], ENG_LAYER_LOCAL);
    assert_int_equal(c->n_local_layers, 2);
    assert_int_equal(c->n_global_layers, 1);
    assert_int_equal(c->local.attn.latent_heads, 1);
    assert_int_equal(c->local.attn.latent_dim, 6);
    assert_int_equal(c->local.window, 4);
    assert_int_equal(c->global.attn.latent_heads, 2);
    assert_int_equal(c->global.attn.latent_dim, 5);
    assert_int_equal(c->global.block_size, 4);
    assert_int_equal(c->global.top_n, 4);
    assert_int_equal(c->global.init_blocks, 1);
    assert_int_equal(c->global.local_blocks, 2);
    assert_int_equal(c->global.selection_share, 2);
}

static void load_and_check(const mw_opts *o) {
    mw_model *w = mw_create(o);
    assert_non_null(w);
    char *dir = write_model(w);
    eng_model *m = load_ok(dir);
    check_small_config(&m->cfg, o->tied);
    assert_string_equal(m->dir, dir);
    for (int i = 0; i < 3; i++) {
        const eng_layer *l = &m->layers[i];
        assert_int_equal(l->type, m->cfg.layer_types[i]);
        assert_int_equal(l->G, l->type == ENG_LAYER_GLOBAL ? 2 : 1);
        assert_int_equal(l->dg, l->type == ENG_LAYER_GLOBAL ? 5 : 6);
        assert_int_equal(l->type_index, i == 2 ? 1 : 0);
        if (l->type == ENG_LAYER_LOCAL)
            assert_null(l->g_proj.data);
        else
            assert_non_null(l->g_proj.data);
    }
    if (o->tied) {
        assert_ptr_equal(m->lm_head.data, m->embed.data);
        assert_int_equal(m->lm_head.shape[0], 13);
    } else {
        assert_ptr_not_equal(m->lm_head.data, m->embed.data);
    }
    check_all_tensors(w, m);
    eng_model_destroy(m);
    mw_rmtree(dir);
    free(dir);
    mw_destroy(w);
}

/* --------------------------------------------------------- valid loads */

static void test_load_f32_untied(void **s) {
    (void)s;
    load_and_check(&(mw_opts){.dtypes = MW_F32, .tied = false});
}
static void test_load_bf16_tied(void **s) {
    (void)s;
    load_and_check(&(mw_opts){.dtypes = MW_BF16, .tied = true});
}
static void test_load_mixed_sharded(void **s) {
    (void)s;
    load_and_check(&(mw_opts){.dtypes = MW_MIXED, .tied = false, .n_shards = 3});
}
static void test_load_one_shard_tied(void **s) {
    (void)s;
    load_and_check(&(mw_opts){.dtypes = MW_MIXED, .tied = true, .n_shards = 1});
}

static void test_destroy_null(void **s) {
    (void)s;
    eng_model_destroy(NULL);
    eng_config_deinit(NULL);
}

/* Optional fields left out take the defaults of ASA-SPEC section 1. */
static void test_defaults(void **s) {
    (void)s;
    mw_model *w = mw_create(&(mw_opts){.dtypes = MW_F32});
    static const char *const opt[] = {"v_head_dim", "rope_theta", "rms_norm_eps",
                                      "max_position_embeddings", "tie_word_embeddings",
                                      "bos_token_id", "eos_token_id", "torch_dtype",
                                      "layer_types"};
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++)
        json_object_del(w->config, opt[i]);
    json_t *g = json_object_get(w->config, "global");
    json_object_del(g, "selection_share");
    json_object_del(g, "compression");
    json_object_set_new(w->config, "num_hidden_layers", json_integer(4));
    json_object_set_new(w->config, "architectures", json_pack("[s]", "AsaForCausalLM"));
    mw_build_tensors(w, MW_F32, 1);

    char *text = json_dumps(w->config, 0);
    eng_config c;
    char msg[256] = "";
    asa_errbuf eb = {msg, sizeof msg};
    assert_int_equal(eng_config_parse(text, strlen(text), &c, &eb), ASA_OK);
    free(text);
    assert_int_equal(c.v_head_dim, c.head_dim);
    assert_true(c.rope_theta == 10000.0);
    assert_true(c.rms_norm_eps == 1e-6);
    assert_int_equal(c.max_position_embeddings, 8192);
    assert_false(c.tie_word_embeddings);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.eos_token_id, -1);
    assert_int_equal(c.global.selection_share, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(c.layer_types[i], i % 2 ? ENG_LAYER_GLOBAL : ENG_LAYER_LOCAL);
    assert_int_equal(c.n_local_layers, 2);
    assert_int_equal(c.n_global_layers, 2);
    eng_config_deinit(&c);
    assert_null(c.layer_types);

    char *dir = write_model(w);
    eng_model *m = load_ok(dir);
    assert_int_equal(m->cfg.v_head_dim, 4);
    assert_int_equal(m->layers[3].type, ENG_LAYER_GLOBAL);
    assert_int_equal(m->layers[3].type_index, 1);
    assert_int_equal(m->layers[1].kv_b_proj.shape[0], 4 * (4 + 4));
    check_all_tensors(w, m);
    eng_model_destroy(m);
    mw_rmtree(dir);
    free(dir);
    mw_destroy(w);
}

/* null token ids mean "none"; integers written as reals are fine for the
 * real-valued fields. */
static void test_config_nulls_and_reals(void **s) {
    (void)s;
    mw_model *w = mw_create(&(mw_opts){.dtypes = MW_F32});
    json_object_set_new(w->config, "bos_token_id", json_null());
    json_object_set_new(w->config, "rope_theta", json_integer(1000000));
    char *text = json_dumps(w->config, 0);
    eng_config c;
    assert_int_equal(eng_config_parse(text, strlen(text), &c, NULL), ASA_OK);
    assert_int_equal(c.bos_token_id, -1);
    assert_true(c.rope_theta == 1e6);
    eng_config_deinit(&c);
    /* The length is honoured: a prefix of valid JSON is not valid JSON. */
    assert_int_equal(eng_config_parse(text, strlen(text) - 1, &c, NULL), ASA_EFORMAT);
    free(text);
    mw_destroy(w);
}

/* Both layouts present: the single file is used and the index ignored. */
static void test_single_file_wins(void **s) {
    (void)s;
    mw_model *w = mw_create(&(mw_opts){.dtypes = MW_BF16});
    char *dir = write_model(w);
    assert_int_equal(mw_write_file(dir, "model.safetensors.index.json", "garbage", 7), 0);
    eng_model *m = load_ok(dir);
    check_all_tensors(w, m);
    eng_model_destroy(m);
    mw_rmtree(dir);
    free(dir);
    mw_destroy(w);
}

/* __metadata__ with several string values is accepted. */
static void hook_meta(json_t *hdr, int shard, void *arg) {
    (void)shard;
    (void)arg;
    json_object_set_new(json_object_get(hdr, "__metadata__"), "note", json_string("x"));
}
static void test_metadata_strings_ok(void **s) {
    (void)s;
    mw_model *w = mw_create(&(mw_opts){.dtypes = MW_MIXED});
    w->header_hook = hook_meta;
    char *dir = write_model(w);
    eng_model *m = load_ok(dir);
    check_all_tensors(w, m);
    eng_model_destroy(m);
    mw_rmtree(dir);
    free(dir);
    mw_destroy(w);
}

/* Every model directory under tests/fixtures (written by the Python
 * reference tools, not by model_writer) loads. */
static void test_fixtures_load(void **s) {
    (void)s;
    DIR *d = opendir(ASA_FIXTURES_DIR);
    if (!d)
        skip();
    struct dirent *e;
    int n = 0;
    char path[4096], cfg[4200];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", ASA_FIXTURES_DIR, e->d_name);
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
        if (access(cfg, R_OK))
            continue;
        eng_model *m = load_ok(path);
        assert_int_equal(m->cfg.n_local_layers + m->cfg.n_global_layers,
                         m->cfg.num_hidden_layers);
        eng_model_destroy(m);
        n++;
    }
    closedir(d);
    print_message("%d fixture models loaded\n", n);
}

/* ------------------------------------------------- parser on memory */

/* Parses a safetensors image made of `header` (padded to 8) and `data`
 * zero bytes, from an exactly-sized heap copy. */
static asa_err parse_mem(const char *header, size_t data, eng__st_file *f, char *msg,
                         size_t msgn) {
    size_t hl = strlen(header), padded = (hl + 7) / 8 * 8, n = 8 + padded + data;
    unsigned char *b = calloc(1, n);
    assert_non_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memset(b + 8, ' ', padded);
    memcpy(b + 8, header, hl);
    asa_errbuf eb = {msg, msgn};
    msg[0] = 0;
    asa_err rc = eng__st_parse("mem", b, n, f, &eb);
    if (rc == ASA_OK) {
        /* the data pointers borrow b: check them, then drop them */
        for (int i = 0; i < f->n; i++)
            assert_true((const unsigned char *)f->tensors[i].data >= b + 8 + padded &&
                        (const unsigned char *)f->tensors[i].data <= b + n);
    }
    free(b);
    return rc;
}

static void test_parser_edges(void **s) {
    (void)s;
    eng__st_file f;
    char msg[512];
    /* empty header object: no tensors */
    assert_int_equal(parse_mem("{}", 0, &f, msg, sizeof msg), ASA_OK);
    assert_int_equal(f.n, 0);
    eng__st_deinit(&f);
    /* zero-size tensors overlap nothing; holes between tensors are fine;
     * the table comes back sorted by name */
    assert_int_equal(parse_mem("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[4,4]},"
                               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                               "\"a\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[12,14]}}",
                               16, &f, msg, sizeof msg),
                     ASA_OK);
    assert_int_equal(f.n, 3);
    assert_string_equal(f.tensors[0].name, "a");
    assert_int_equal(f.tensors[0].ndim, 0);
    assert_string_equal(f.tensors[2].name, "z");
    assert_non_null(eng__st_find(&f, "b"));
    assert_null(eng__st_find(&f, "c"));
    eng__st_deinit(&f);
    /* element count overflowing 64 bits */
    assert_int_equal(parse_mem("{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],"
                               "\"data_offsets\":[0,0]}}",
                               0, &f, msg, sizeof msg),
                     ASA_EFORMAT);
    assert_non_null(strstr(msg, "too large"));
    /* ... unless another dimension is zero */
    assert_int_equal(parse_mem("{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4,0],"
                               "\"data_offsets\":[0,0]}}",
                               0, &f, msg, sizeof msg),
                     ASA_OK);
    eng__st_deinit(&f);
    /* too many dimensions */
    assert_int_equal(parse_mem("{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                               "\"data_offsets\":[0,4]}}",
                               4, &f, msg, sizeof msg),
                     ASA_EFORMAT);
    assert_non_null(strstr(msg, "'t'"));
    /* a tensor entry that is not an object; a non-object __metadata__ */
    assert_int_equal(parse_mem("{\"t\":[1]}", 0, &f, msg, sizeof msg), ASA_EFORMAT);
    assert_non_null(strstr(msg, "'t'"));
    assert_int_equal(parse_mem("{\"__metadata__\":[]}", 0, &f, msg, sizeof msg), ASA_EFORMAT);
    assert_non_null(strstr(msg, "__metadata__"));
    /* data_offsets of the wrong arity */
    assert_int_equal(parse_mem("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
                               4, &f, msg, sizeof msg),
                     ASA_EFORMAT);
    assert_non_null(strstr(msg, "data_offsets"));
    /* a NUL escaped into a name is refused by the JSON parser */
    assert_int_equal(parse_mem("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],"
                               "\"data_offsets\":[0,4]}}",
                               4, &f, msg, sizeof msg),
                     ASA_EFORMAT);
}

/* Every prefix of a valid file is rejected, from an exactly-sized copy (so
 * that the sanitizer build catches any read past the end). */
static void test_every_truncation(void **s) {
    (void)s;
    mw_model *w = mw_create(&(mw_opts){.dtypes = MW_MIXED});
    char *dir = write_model(w);
    size_t n;
    unsigned char *full = mw_read_file(dir, "model.safetensors", &n);
    assert_non_null(full);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++)
        hl |= (uint64_t)full[i] << (8 * i);
    char msg[512];
    asa_errbuf eb = {msg, sizeof msg};
    eng__st_file f;
    long tried = 0;
    for (size_t len = 0; len <= n; len++) {
        /* the header region and the last 64 bytes exhaustively, the rest
         * of the data section sampled */
        if (len > 8 + hl && len + 64 < n && len % 13)
            continue;
        unsigned char *b = malloc(len ? len : 1);
        assert_non_null(b);
        memcpy(b, full, len);
        asa_err rc = eng__st_parse("model.safetensors", b, len, &f, &eb);
        if (len == n) {
            assert_int_equal(rc, ASA_OK);
            eng__st_deinit(&f);
        } else if (rc != ASA_EFORMAT) {
            fail_msg("prefix of %zu / %zu bytes: got %s", len, n, asa_errname(rc));
        }
        free(b);
        tried++;
    }
    assert_true(tried > 100);
    free(full);
    mw_rmtree(dir);
    free(dir);
    mw_destroy(w);
}

/* ------------------------------------------------------- corrupt cases */

typedef struct corrupt_case {
    const char *label;
    mw_opts opts;
    void (*pre)(mw_model *w);                  /* before writing */
    void (*hook)(json_t *hdr, int shard, void *arg);
    void (*post)(mw_model *w, const char *dir); /* after writing */
    asa_err code;
    const char *needle[3];                     /* substrings of the message */
} corrupt_case;

static void run_case(void **state) {
    const corrupt_case *c = *state;
    mw_model *w = mw_create(&c->opts);
    assert_non_null(w);
    if (c->pre)
        c->pre(w);
    w->header_hook = c->hook;
    char *dir = write_model(w);
    if (c->post)
        c->post(w, dir);
    char msg[512] = "";
    asa_errbuf eb = {msg, sizeof msg};
    eng_model *sentinel = (eng_model *)(uintptr_t)0x1234;
    eng_model *m = sentinel;
    asa_err rc = eng_model_load(dir, &m, &eb);
    if (rc != c->code)
        fail_msg("%s: expected %s, got %s: %s", c->label, asa_errname(c->code), asa_errname(rc),
                 msg);
    assert_ptr_equal(m, sentinel);
    if (getenv("ASA_TEST_VERBOSE"))
        print_message("%-36s %s: %s\n", c->label, asa_errname(rc), msg);
    for (int i = 0; i < 3 && c->needle[i]; i++)
        if (!strstr(msg, c->needle[i]))
            fail_msg("%s: message lacks '%s': %s", c->label, c->needle[i], msg);
    mw_rmtree(dir);
    free(dir);
    mw_destroy(w);
}

/* ---- config.json */

static void rm_config(mw_model *w, const char *dir) {
    (void)w;
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir);
    assert_int_equal(unlink(p), 0);
}
static void config_is_dir(mw_model *w, const char *dir) {
    rm_config(w, dir);
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir);
    assert_int_equal(mkdir(p, 0700), 0);
}
static void weights_fifo(mw_model *w, const char *dir) {
    (void)w;
    char p[4096];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(mkfifo(p, 0600), 0); /* opening it must not block */
}
static void config_not_json(mw_model *w, const char *dir) {
    (void)w;
    assert_int_equal(mw_write_file(dir, "config.json", "{\"model_type\": \"asa\",", 21), 0);
}
static void config_array(mw_model *w, const char *dir) {
    (void)w;
    assert_int_equal(mw_write_file(dir, "config.json", "[1, 2]", 6), 0);
}
#define SET(fn, key, val)                                                                     \
    static void fn(mw_model *w) { json_object_set_new(w->config, key, val); }
#define SETG(fn, obj, key, val)                                                               \
    static void fn(mw_model *w) {                                                             \
        json_object_set_new(json_object_get(w->config, obj), key, val);                       \
    }
static void no_hidden(mw_model *w) { json_object_del(w->config, "hidden_size"); }
static void no_global(mw_model *w) { json_object_del(w->config, "global"); }
static void no_window(mw_model *w) {
    json_object_del(json_object_get(w->config, "local"), "window");
}
SET(heads_string, "num_heads", json_string("4"))
SET(heads_real, "num_heads", json_real(4.0))
SET(vocab_negative, "vocab_size", json_integer(-13))
SET(vocab_huge, "vocab_size", json_integer(1LL << 40))
SET(type_llama, "model_type", json_string("llama"))
SET(rope_odd, "rope_dim", json_integer(3))
SET(layers_short, "layer_types", json_pack("[s,s]", "local", "global"))
SET(layers_bad, "layer_types", json_pack("[s,s,s]", "local", "full", "local"))
SET(tie_string, "tie_word_embeddings", json_string("yes"))
SET(eps_negative, "rms_norm_eps", json_real(-1e-6))
SET(theta_string, "rope_theta", json_string("1e4"))
SET(eos_range, "eos_token_id", json_integer(13))
SET(local_not_object, "local", json_integer(1))
SETG(g_heads3, "global", "latent_heads", json_integer(3))
SETG(l_heads3, "local", "latent_heads", json_integer(3))
SETG(g_block5, "global", "block_size", json_integer(5))
SETG(g_topn2, "global", "top_n", json_integer(2))
SETG(g_local0, "global", "local_blocks", json_integer(0))
SETG(l_window0, "local", "window", json_integer(0))
SETG(g_typo, "global", "topn", json_integer(4))
SETG(g_compress, "global", "compression", json_string("max"))

/* ---- safetensors bytes */

static void st_short(mw_model *w, const char *dir) {
    (void)w;
    assert_int_equal(mw_write_file(dir, "model.safetensors", "\x10\0\0\0\0", 5), 0);
}
static void st_empty(mw_model *w, const char *dir) {
    (void)w;
    assert_int_equal(mw_write_file(dir, "model.safetensors", "", 0), 0);
}
static void st_patch(const char *dir, const char *name, size_t at, const void *bytes,
                     size_t n) {
    size_t len;
    unsigned char *b = mw_read_file(dir, name, &len);
    assert_non_null(b);
    assert_true(at + n <= len);
    memcpy(b + at, bytes, n);
    assert_int_equal(mw_write_file(dir, name, b, len), 0);
    free(b);
}
static void st_hlen_beyond(mw_model *w, const char *dir) {
    (void)w;
    st_patch(dir, "model.safetensors", 0, "\xff\xff\xff\xff\0\0\0\0", 8);
}
static void st_hlen_wraps(mw_model *w, const char *dir) {
    (void)w;
    st_patch(dir, "model.safetensors", 0, "\xf9\xff\xff\xff\xff\xff\xff\xff", 8);
}
static void st_not_json(mw_model *w, const char *dir) {
    (void)w;
    st_patch(dir, "model.safetensors", 8, "{x", 2);
}
static void st_not_object(mw_model *w, const char *dir) {
    (void)w;
    static const char f[] = "\x08\0\0\0\0\0\0\0[1, 2]  \0\0\0\0";
    assert_int_equal(mw_write_file(dir, "model.safetensors", f, sizeof f - 1), 0);
}
/* The tensor whose bytes end last (the one a truncation cuts). */
static const mw_tensor *last_tensor(mw_model *w) {
    const mw_tensor *l = &w->t[0];
    for (int i = 1; i < w->n; i++)
        if (w->t[i].end > l->end)
            l = &w->t[i];
    return l;
}
static char g_name[128]; /* a name computed by a post hook, for the needle */
static void st_truncate(mw_model *w, const char *dir) {
    size_t len;
    unsigned char *b = mw_read_file(dir, "model.safetensors", &len);
    assert_non_null(b);
    assert_int_equal(mw_write_file(dir, "model.safetensors", b, len - 3), 0);
    free(b);
    snprintf(g_name, sizeof g_name, "'%s'", last_tensor(w)->name);
}
static void st_dup_key(mw_model *w, const char *dir) {
    (void)w;
    size_t len;
    unsigned char *b = mw_read_file(dir, "model.safetensors", &len);
    assert_non_null(b);
    const char *from = "\"layers.0.attn_norm.weight\"";
    unsigned char *p = NULL;
    for (size_t i = 8; i + strlen(from) < len && !p; i++)
        if (!memcmp(b + i, from, strlen(from)))
            p = b + i;
    assert_non_null(p);
    p[8] = '1'; /* now a second "layers.1.attn_norm.weight" */
    assert_int_equal(mw_write_file(dir, "model.safetensors", b, len), 0);
    free(b);
}

static json_t *entry(json_t *hdr, const char *name) {
    json_t *e = json_object_get(hdr, name);
    assert_non_null(e);
    return e;
}
static json_int_t off(json_t *hdr, const char *name, int i) {
    return json_integer_value(json_array_get(json_object_get(entry(hdr, name), "data_offsets"),
                                             (size_t)i));
}
static void set_offs(json_t *hdr, const char *name, json_int_t b, json_int_t e) {
    json_object_set_new(entry(hdr, name), "data_offsets", json_pack("[I,I]", b, e));
}
static json_int_t data_size(json_t *hdr) {
    json_int_t m = 0;
    const char *k;
    json_t *v;
    json_object_foreach(hdr, k, v) {
        json_t *o = json_object_get(v, "data_offsets");
        if (o && json_integer_value(json_array_get(o, 1)) > m)
            m = json_integer_value(json_array_get(o, 1));
    }
    return m;
}
static void h_beyond(json_t *hdr, int s, void *a) {
    (void)s, (void)a;
    json_int_t n = data_size(hdr);
    json_int_t sz = off(hdr, "embed_tokens.weight", 1) - off(hdr, "embed_tokens.weight", 0);
    set_offs(hdr, "embed_tokens.weight", n, n + sz);
}
static void h_end_lt_begin(json_t *hdr, int s, void *a) {
    (void)s, (void)a;
    set_offs(hdr, "layers.1.attn.g_proj.weight", 64, 32);
}
static void h_size(json_t *hdr, int s, void *a) {
    (void)s, (void)a;
    const char *n = "layers.2.mlp.down_proj.weight";
    set_offs(hdr, n, off(hdr, n, 0), off(hdr, n, 1) - 4);
}
static void h_overlap(json_t *hdr, int s, void *a) {
    (void)s, (void)a;
    const char *x = "layers.0.attn_norm.weight", *y = "layers.0.mlp_norm.weight";
    set_offs(hdr, y, off(hdr, x, 0) + 4, off(hdr, x, 1) + 4);
}
static void h_neg_dim(json_t *hdr, int s, void *a) {
    (void)s, (void)a;
    json_object_set_new(entry(hdr, "norm.weight"), "shape", json_pack("[i]", -8));
}
static void h_real_offset(json_t *hdr, int s, void *a) {
    (void)s, (void)a;
    json_object_set_new(entry(hdr, "norm.weight"), "data_offsets", json_pack("[f,i]", 0.0, 32));
}
static void h_extra_field(json_t *hdr, int s, void *a) {
    (void)s, (void)a;
    json_object_set_new(entry(hdr, "norm.weight"), "stride", json_integer(1));
}
static void h_meta_int(json_t *hdr, int s, void *a) {
    (void)s, (void)a;
    json_object_set_new(json_object_get(hdr, "__metadata__"), "step", json_integer(5));
}
static void h_no_dtype(json_t *hdr, int s, void *a) {
    (void)s, (void)a;
    json_object_del(entry(hdr, "layers.1.mlp_norm.weight"), "dtype");
}

/* ---- tensors */

static void set_dtype(mw_model *w, const char *name, const char *dt) {
    mw_tensor *t = mw_find(w, name);
    assert_non_null(t);
    snprintf(t->dtype, sizeof t->dtype, "%s", dt);
}
static void dt_f16(mw_model *w) { set_dtype(w, "layers.1.attn.kv_b_proj.weight", "F16"); }
static void dt_i64(mw_model *w) { set_dtype(w, "layers.0.mlp.up_proj.weight", "I64"); }
static void bad_shape(mw_model *w) {
    mw_remove(w, "layers.1.attn.q_proj.weight");
    mw_add(w, "layers.1.attn.q_proj.weight", "F32", 2, (int64_t[]){4 * 6, 9});
}
static void bad_rank(mw_model *w) {
    mw_remove(w, "norm.weight");
    mw_add(w, "norm.weight", "F32", 2, (int64_t[]){1, 8});
}
static void kvb_wrong_dg(mw_model *w) {
    /* layer 1 is global (d_g 5); give it the local d_g (6). */
    mw_remove(w, "layers.1.attn.kv_b_proj.weight");
    mw_add(w, "layers.1.attn.kv_b_proj.weight", "F32", 2, (int64_t[]){4 * 7, 6});
}
static void missing(mw_model *w) { mw_remove(w, "layers.2.mlp.up_proj.weight"); }
static void missing_gproj(mw_model *w) { mw_remove(w, "layers.1.attn.g_proj.weight"); }
static void unknown(mw_model *w) { mw_add(w, "layers.0.attn.q_proj.bias", "F32", 1, (int64_t[]){24}); }
static void gproj_local(mw_model *w) {
    mw_add(w, "layers.0.attn.g_proj.weight", "F32", 2, (int64_t[]){8, 8});
}
static void add_lm_head(mw_model *w) {
    mw_add(w, "lm_head.weight", "F32", 2, (int64_t[]){13, 8});
}
static void rm_lm_head(mw_model *w) { mw_remove(w, "lm_head.weight"); }
static void misalign(mw_model *w) { w->misalign = 2; /* breaks F32 (4-byte) alignment */ }

/* ---- index */

static void rm_shard2(mw_model *w, const char *dir) {
    (void)w;
    char p[4096];
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    assert_int_equal(unlink(p), 0);
}
static void rm_single(mw_model *w, const char *dir) {
    (void)w;
    char p[4096];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    assert_int_equal(unlink(p), 0);
}
/* Rewrites the index after applying `set` to its weight_map. */
static void edit_index(const char *dir, const char *key, json_t *val) {
    size_t len;
    unsigned char *b = mw_read_file(dir, "model.safetensors.index.json", &len);
    assert_non_null(b);
    json_t *idx = json_loadb((const char *)b, len, 0, NULL);
    free(b);
    assert_non_null(idx);
    json_t *wm = json_object_get(idx, "weight_map");
    if (val)
        json_object_set_new(wm, key, val);
    else
        json_object_del(wm, key);
    char *t = json_dumps(idx, JSON_INDENT(1));
    json_decref(idx);
    assert_int_equal(mw_write_file(dir, "model.safetensors.index.json", t, strlen(t)), 0);
    free(t);
}
static void idx_escape(mw_model *w, const char *dir) {
    (void)w;
    edit_index(dir, "norm.weight", json_string("../model-00001-of-00002.safetensors"));
}
static void idx_subdir(mw_model *w, const char *dir) {
    (void)w;
    edit_index(dir, "norm.weight", json_string("sub/model.safetensors"));
}
static void idx_abs(mw_model *w, const char *dir) {
    (void)w;
    edit_index(dir, "norm.weight", json_string("/etc/passwd"));
}
static void idx_extra(mw_model *w, const char *dir) {
    (void)w;
    edit_index(dir, "extra.weight", json_string("model-00001-of-00002.safetensors"));
}
static void idx_unlisted(mw_model *w, const char *dir) {
    (void)w;
    edit_index(dir, "layers.2.mlp_norm.weight", NULL);
}
static void idx_not_json(mw_model *w, const char *dir) {
    (void)w;
    assert_int_equal(mw_write_file(dir, "model.safetensors.index.json", "{\"weight_map\": {", 16), 0);
}
static void idx_no_map(mw_model *w, const char *dir) {
    (void)w;
    assert_int_equal(mw_write_file(dir, "model.safetensors.index.json", "{\"metadata\": {}}", 16), 0);
}
static void two_shards(mw_model *w) {
    /* norm.weight written into both shards; the index keeps the last one. */
    mw_tensor *t = mw_find(w, "norm.weight");
    int other = 1 - t->shard;
    mw_tensor *c = mw_add(w, "norm.weight", "F32", 1, (int64_t[]){8});
    c->shard = other;
}

#define F32 {.dtypes = MW_F32}
#define BF16 {.dtypes = MW_BF16}
#define MIXED {.dtypes = MW_MIXED}
#define SHARDS {.dtypes = MW_MIXED, .n_shards = 2}
#define TIED {.dtypes = MW_F32, .tied = true}

static const corrupt_case CASES[] = {
    /* config.json */
    {"missing config.json", F32, NULL, NULL, rm_config, ASA_EIO, {"config.json", "No such file"}},
    {"config.json is a directory", F32, NULL, NULL, config_is_dir, ASA_EIO, {"config.json", "not a regular file"}},
    {"weights file is a FIFO", F32, NULL, NULL, weights_fifo, ASA_EIO, {"model.safetensors", "not a regular file"}},
    {"config.json not JSON", F32, NULL, NULL, config_not_json, ASA_EFORMAT, {"config.json", "not valid JSON"}},
    {"config.json not an object", F32, NULL, NULL, config_array, ASA_EFORMAT, {"config.json", "not a JSON object"}},
    {"missing required field", F32, no_hidden, NULL, NULL, ASA_EINVAL, {"config.json", "'hidden_size'", "missing"}},
    {"missing local.window", F32, no_window, NULL, NULL, ASA_EINVAL, {"'local.window'", "missing"}},
    {"missing global object", F32, no_global, NULL, NULL, ASA_EINVAL, {"'global'", "missing"}},
    {"local not an object", F32, local_not_object, NULL, NULL, ASA_EINVAL, {"'local'", "object"}},
    {"integer given as string", F32, heads_string, NULL, NULL, ASA_EINVAL, {"'num_heads'", "integer", "\"4\""}},
    {"integer given as real", F32, heads_real, NULL, NULL, ASA_EINVAL, {"'num_heads'", "integer"}},
    {"negative vocab_size", F32, vocab_negative, NULL, NULL, ASA_EINVAL, {"'vocab_size'", "-13"}},
    {"huge vocab_size", F32, vocab_huge, NULL, NULL, ASA_EINVAL, {"'vocab_size'"}},
    {"unknown model_type", F32, type_llama, NULL, NULL, ASA_EINVAL, {"'model_type'", "llama"}},
    {"odd rope_dim", F32, rope_odd, NULL, NULL, ASA_EINVAL, {"'rope_dim'", "even"}},
    {"H not divisible by global G", F32, g_heads3, NULL, NULL, ASA_EINVAL, {"'global.latent_heads'", "num_heads"}},
    {"H not divisible by local G", F32, l_heads3, NULL, NULL, ASA_EINVAL, {"'local.latent_heads'"}},
    {"B not multiple of s", F32, g_block5, NULL, NULL, ASA_EINVAL, {"'global.block_size'", "selection_share"}},
    {"init + local > top_n", F32, g_topn2, NULL, NULL, ASA_EINVAL,
     {"config.json: field 'global.top_n': must be >= init_blocks + local_blocks (3), got 2"}},
    {"local_blocks 0", F32, g_local0, NULL, NULL, ASA_EINVAL, {"'global.local_blocks'"}},
    {"window 0", F32, l_window0, NULL, NULL, ASA_EINVAL, {"'local.window'"}},
    {"layer_types wrong length", F32, layers_short, NULL, NULL, ASA_EINVAL, {"'layer_types'", "num_hidden_layers"}},
    {"layer_types bad value", F32, layers_bad, NULL, NULL, ASA_EINVAL, {"'layer_types[1]'", "full"}},
    {"tie not a boolean", F32, tie_string, NULL, NULL, ASA_EINVAL, {"'tie_word_embeddings'"}},
    {"negative rms_norm_eps", F32, eps_negative, NULL, NULL, ASA_EINVAL, {"'rms_norm_eps'"}},
    {"rope_theta a string", F32, theta_string, NULL, NULL, ASA_EINVAL, {"'rope_theta'"}},
    {"eos_token_id out of vocab", F32, eos_range, NULL, NULL, ASA_EINVAL, {"'eos_token_id'"}},
    {"unknown global field", F32, g_typo, NULL, NULL, ASA_EINVAL, {"'global.topn'", "unknown"}},
    {"unknown compression", F32, g_compress, NULL, NULL, ASA_EINVAL, {"'global.compression'"}},
    /* safetensors framing */
    {"file shorter than 8 bytes", F32, NULL, NULL, st_short, ASA_EFORMAT, {"model.safetensors", "5 bytes"}},
    {"empty file", F32, NULL, NULL, st_empty, ASA_EFORMAT, {"model.safetensors", "0 bytes"}},
    {"header length beyond file", F32, NULL, NULL, st_hlen_beyond, ASA_EFORMAT, {"model.safetensors", "header length"}},
    {"header length wraps", F32, NULL, NULL, st_hlen_wraps, ASA_EFORMAT, {"model.safetensors", "header length"}},
    {"header not JSON", F32, NULL, NULL, st_not_json, ASA_EFORMAT, {"model.safetensors", "not valid JSON"}},
    {"header not an object", F32, NULL, NULL, st_not_object, ASA_EFORMAT, {"model.safetensors", "not a JSON object"}},
    {"duplicate tensor in header", F32, NULL, NULL, st_dup_key, ASA_EFORMAT, {"model.safetensors", "'layers.1.attn_norm.weight' twice"}},
    {"truncated file", MIXED, NULL, NULL, st_truncate, ASA_EFORMAT, {"model.safetensors", g_name, "beyond"}},
    /* safetensors tensor entries */
    {"offsets beyond the data", F32, NULL, h_beyond, NULL, ASA_EFORMAT, {"model.safetensors", "'embed_tokens.weight'", "beyond"}},
    {"end < begin", F32, NULL, h_end_lt_begin, NULL, ASA_EFORMAT, {"'layers.1.attn.g_proj.weight'", "end < begin"}},
    {"size != shape * dtype", BF16, NULL, h_size, NULL, ASA_EFORMAT, {"'layers.2.mlp.down_proj.weight'", "BF16"}},
    {"overlapping tensors", F32, NULL, h_overlap, NULL, ASA_EFORMAT, {"'layers.0.attn_norm.weight'", "'layers.0.mlp_norm.weight'", "overlap"}},
    {"negative dimension", F32, NULL, h_neg_dim, NULL, ASA_EFORMAT, {"'norm.weight'", "shape"}},
    {"real-valued offset", F32, NULL, h_real_offset, NULL, ASA_EFORMAT, {"'norm.weight'", "data_offsets"}},
    {"unknown entry field", F32, NULL, h_extra_field, NULL, ASA_EFORMAT, {"'norm.weight'", "'stride'"}},
    {"missing dtype", F32, NULL, h_no_dtype, NULL, ASA_EFORMAT, {"'layers.1.mlp_norm.weight'", "'dtype'"}},
    {"non-string metadata", F32, NULL, h_meta_int, NULL, ASA_EFORMAT, {"__metadata__", "'step'"}},
    {"dtype F16", BF16, dt_f16, NULL, NULL, ASA_EFORMAT, {"'layers.1.attn.kv_b_proj.weight'", "'F16'"}},
    {"dtype I64", F32, dt_i64, NULL, NULL, ASA_EFORMAT, {"'layers.0.mlp.up_proj.weight'", "'I64'"}},
    {"misaligned data", F32, misalign, NULL, NULL, ASA_EFORMAT, {"model.safetensors", "aligned"}},
    /* model tensors */
    {"shape mismatch", F32, bad_shape, NULL, NULL, ASA_EFORMAT, {"'layers.1.attn.q_proj.weight'", "[24, 9] != expected [24, 8]"}},
    {"norm with rank 2", F32, bad_rank, NULL, NULL, ASA_EFORMAT, {"'norm.weight'", "[1, 8] != expected [8]"}},
    {"kv_b_proj with the other type's d_g", F32, kvb_wrong_dg, NULL, NULL, ASA_EFORMAT, {"'layers.1.attn.kv_b_proj.weight'", "[28, 5]"}},
    {"missing tensor", F32, missing, NULL, NULL, ASA_EFORMAT, {"model.safetensors", "'layers.2.mlp.up_proj.weight'", "missing"}},
    {"missing g_proj on global layer", F32, missing_gproj, NULL, NULL, ASA_EFORMAT, {"'layers.1.attn.g_proj.weight'", "missing"}},
    {"unknown tensor", F32, unknown, NULL, NULL, ASA_EFORMAT, {"model.safetensors", "'layers.0.attn.q_proj.bias'", "unknown"}},
    {"g_proj on a local layer", F32, gproj_local, NULL, NULL, ASA_EFORMAT, {"'layers.0.attn.g_proj.weight'", "local"}},
    {"tied but lm_head present", TIED, add_lm_head, NULL, NULL, ASA_EFORMAT, {"'lm_head.weight'", "tie_word_embeddings is true"}},
    {"untied but lm_head absent", F32, rm_lm_head, NULL, NULL, ASA_EFORMAT, {"'lm_head.weight'", "missing", "tie_word_embeddings is false"}},
    /* index */
    {"no weights at all", F32, NULL, NULL, rm_single, ASA_EIO, {"model.safetensors", "model.safetensors.index.json"}},
    {"index names a missing shard", SHARDS, NULL, NULL, rm_shard2, ASA_EIO, {"model-00002-of-00002.safetensors"}},
    {"index path escapes with ..", SHARDS, NULL, NULL, idx_escape, ASA_EFORMAT, {"model.safetensors.index.json", "'norm.weight'", "'../model-00001-of-00002.safetensors'"}},
    {"index path in a subfolder", SHARDS, NULL, NULL, idx_subdir, ASA_EFORMAT, {"'sub/model.safetensors'"}},
    {"index absolute path", SHARDS, NULL, NULL, idx_abs, ASA_EFORMAT, {"'/etc/passwd'"}},
    {"index lists absent tensor", SHARDS, NULL, NULL, idx_extra, ASA_EFORMAT, {"model.safetensors.index.json", "'extra.weight'"}},
    {"shard tensor not in index", SHARDS, NULL, NULL, idx_unlisted, ASA_EFORMAT, {"'layers.2.mlp_norm.weight'", "not listed"}},
    {"tensor in two shards", SHARDS, two_shards, NULL, NULL, ASA_EFORMAT, {"'norm.weight'", "two shards"}},
    {"index not JSON", SHARDS, NULL, NULL, idx_not_json, ASA_EFORMAT, {"model.safetensors.index.json", "not valid JSON"}},
    {"index without weight_map", SHARDS, NULL, NULL, idx_no_map, ASA_EFORMAT, {"model.safetensors.index.json", "'weight_map'"}},
};

int main(void) {
    enum { NCASES = sizeof CASES / sizeof CASES[0] };
    struct CMUnitTest tests[12 + NCASES] = {
        cmocka_unit_test(test_load_f32_untied),
        cmocka_unit_test(test_load_bf16_tied),
        cmocka_unit_test(test_load_mixed_sharded),
        cmocka_unit_test(test_load_one_shard_tied),
        cmocka_unit_test(test_destroy_null),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_config_nulls_and_reals),
        cmocka_unit_test(test_single_file_wins),
        cmocka_unit_test(test_metadata_strings_ok),
        cmocka_unit_test(test_parser_edges),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_fixtures_load),
    };
    int n = 12;
    for (int i = 0; i < NCASES; i++) {
        tests[n] = (struct CMUnitTest){CASES[i].label, run_case, NULL, NULL, (void *)&CASES[i]};
        n++;
    }
    return cmocka_run_group_tests_name("model_load", tests, NULL, NULL);
}
