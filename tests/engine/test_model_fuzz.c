/*
 * Mutation fuzzing of the safetensors parser and the config parser (slow).
 *
 * Starts from a valid file written by model_writer, applies 1-4 random
 * mutations (bit flips, syntax characters, interesting numbers spliced over
 * number tokens, dtype swaps, header-length rewrites, truncation, range
 * deletion/duplication) and parses the result from an exactly-sized heap
 * copy, so that a sanitizer build catches any read past the buffer.  Every
 * accepted file must satisfy the parser's promises (checked below); every
 * rejected one must come with a message.  Every 64th mutant also goes
 * through eng_model_load from disk (mmap path and tensor binding).
 *
 * ASA_FUZZ_SECONDS (default 60) bounds the run; ASA_FUZZ_SEED fixes the seed
 * (printed at start, so a failure can be replayed).
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/model_writer.h"
#include "model.h"
#include "safetensors.h"

static uint64_t g_rng;
volatile float g_sink; /* keeps reads of mapped tensors from being optimised out */

static uint64_t rnd(void) {
    /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static size_t rndn(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static void buf_reserve(buf *b, size_t n) {
    if (n <= b->cap)
        return;
    b->cap = n * 2;
    b->p = realloc(b->p, b->cap);
    assert_non_null(b->p);
}

static uint64_t hlen_of(const buf *b) {
    uint64_t h = 0;
    if (b->n < 8)
        return 0;
    for (int i = 0; i < 8; i++)
        h |= (uint64_t)b->p[i] << (8 * i);
    return h;
}
static void set_hlen(buf *b, uint64_t h) {
    if (b->n < 8)
        return;
    for (int i = 0; i < 8; i++)
        b->p[i] = (unsigned char)(h >> (8 * i));
}
/* The header region [8, 8+hlen) clipped to the buffer. */
static void header_span(const buf *b, size_t *lo, size_t *hi) {
    uint64_t h = hlen_of(b);
    *lo = b->n < 8 ? b->n : 8;
    *hi = h > b->n - *lo ? b->n : *lo + (size_t)h;
}

/* Replaces [at, at+del) with ins[0..nins). */
static void splice(buf *b, size_t at, size_t del, const void *ins, size_t nins) {
    buf_reserve(b, b->n - del + nins + 1);
    memmove(b->p + at + nins, b->p + at + del, b->n - at - del);
    memcpy(b->p + at, ins, nins);
    b->n = b->n - del + nins;
}

static const char *const NUMBERS[] = {
    "0", "1", "-1", "2", "3", "7", "8", "-0", "4.0", "1e400", "1e-400", "0.5",
    "4294967295", "4294967296", "2147483647", "2147483648", "9223372036854775807",
    "9223372036854775808", "-9223372036854775808", "18446744073709551615",
    "18446744073709551616", "99999999999999999999999999", "null", "true", "\"3\"", "[]", "{}"};
static const char *const DTYPES[] = {"F32", "BF16", "F16", "F64", "I64", "I32", "U8", "BOOL",
                                     "F8_E4M3", "", "bf16", "F32\\u0000"};
static const char SYNTAX[] = "{}[]\":,0123456789-+eE. \\\t\n";

static void mutate(buf *b) {
    size_t lo, hi;
    header_span(b, &lo, &hi);
    switch (rndn(9)) {
    case 0: /* bit flips anywhere in the header (or the length) */
        for (int k = 1 + (int)rndn(4); k > 0 && b->n; k--) {
            size_t at = rndn(hi > lo ? hi : b->n);
            b->p[at] ^= (unsigned char)(1u << rndn(8));
        }
        break;
    case 1: /* a syntax character over a header byte */
        if (hi > lo)
            b->p[lo + rndn(hi - lo)] = (unsigned char)SYNTAX[rndn(sizeof SYNTAX - 1)];
        break;
    case 2:
    case 3: { /* an interesting number over a number token */
        if (hi <= lo)
            break;
        size_t at = lo + rndn(hi - lo), e = at;
        while (at < hi && !(b->p[at] >= '0' && b->p[at] <= '9'))
            at++;
        if (at >= hi)
            break;
        e = at;
        while (e < hi && b->p[e] >= '0' && b->p[e] <= '9')
            e++;
        const char *s = NUMBERS[rndn(sizeof NUMBERS / sizeof NUMBERS[0])];
        char tmp[32];
        if (rndn(4) == 0) {
            snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)(rnd() >> rndn(64)));
            s = tmp;
        }
        splice(b, at, e - at, s, strlen(s));
        if (rndn(2))
            set_hlen(b, hlen_of(b) + strlen(s) - (e - at)); /* keep the framing right */
        break;
    }
    case 4: { /* dtype swap */
        if (hi <= lo)
            break;
        static const char key[] = "\"dtype\":\"";
        size_t at = lo + rndn(hi - lo);
        unsigned char *p = NULL;
        for (size_t i = at; i + sizeof key - 1 < hi && !p; i++)
            if (!memcmp(b->p + i, key, sizeof key - 1))
                p = b->p + i;
        if (!p)
            break;
        size_t s0 = (size_t)(p - b->p) + sizeof key - 1, s1 = s0;
        while (s1 < hi && b->p[s1] != '"')
            s1++;
        const char *d = DTYPES[rndn(sizeof DTYPES / sizeof DTYPES[0])];
        splice(b, s0, s1 - s0, d, strlen(d));
        set_hlen(b, hlen_of(b) + strlen(d) - (s1 - s0));
        break;
    }
    case 5: { /* header length */
        static const uint64_t v[] = {0, 1, 2, 7, 8, UINT64_MAX, UINT64_MAX - 7, 1ull << 63,
                                     ENG__ST_MAX_HEADER, ENG__ST_MAX_HEADER + 1ull};
        uint64_t h = hlen_of(b);
        switch (rndn(4)) {
        case 0: h = v[rndn(sizeof v / sizeof v[0])]; break;
        case 1: h = b->n >= 8 ? b->n - 8 - rndn(3) : 0; break;
        case 2: h += rndn(17) - 8; break;
        default: h = rnd(); break;
        }
        set_hlen(b, h);
        break;
    }
    case 6: /* truncation */
        b->n = rndn(4) ? b->n - rndn(b->n > 64 ? 64 : b->n) : rndn(b->n + 1);
        break;
    case 7: { /* delete a range of the header */
        if (hi <= lo)
            break;
        size_t at = lo + rndn(hi - lo), n = rndn(hi - at < 32 ? hi - at : 32) + 1;
        if (at + n > b->n)
            n = b->n - at;
        splice(b, at, n, "", 0);
        if (rndn(2))
            set_hlen(b, hlen_of(b) - n);
        break;
    }
    default: { /* duplicate a range of the header */
        if (hi <= lo)
            break;
        size_t at = lo + rndn(hi - lo), n = rndn(hi - at < 64 ? hi - at : 64) + 1;
        if (at + n > b->n)
            n = b->n - at;
        unsigned char tmp[64];
        memcpy(tmp, b->p + at, n);
        splice(b, at + n, 0, tmp, n);
        if (rndn(2))
            set_hlen(b, hlen_of(b) + n);
        break;
    }
    }
}

/* What eng__st_parse promises about a file it accepts. */
static void check_parsed(const eng__st_file *f, const unsigned char *p, size_t n) {
    assert_true(f->data_start >= 8 && f->data_start <= n);
    for (int i = 0; i < f->n; i++) {
        const eng__st_tensor *t = &f->tensors[i];
        assert_non_null(t->name);
        assert_true(t->begin <= t->end && t->end <= n - f->data_start);
        assert_ptr_equal(t->data, p + f->data_start + t->begin);
        assert_int_equal((f->data_start + t->begin) % eng__dtype_size(t->dtype), 0);
        uint64_t ne = 1;
        for (int k = 0; k < t->ndim; k++) {
            assert_true(t->shape[k] >= 0);
            ne *= (uint64_t)t->shape[k];
        }
        assert_true(t->end - t->begin == ne * eng__dtype_size(t->dtype));
        if (i)
            assert_true(strcmp(f->tensors[i - 1].name, t->name) < 0);
        assert_ptr_equal(eng__st_find(f, t->name), t);
    }
}

static double env_num(const char *k, double def) {
    const char *v = getenv(k);
    return v && *v ? strtod(v, NULL) : def;
}

static void test_fuzz(void **state) {
    (void)state;
    double seconds = env_num("ASA_FUZZ_SECONDS", 60);
    g_rng = (uint64_t)env_num("ASA_FUZZ_SEED", (double)(uint64_t)time(NULL));
    print_message("seed %llu, %.0f s\n", (unsigned long long)g_rng, seconds);

    mw_model *w = mw_create(&(mw_opts){.dtypes = MW_MIXED});
    char *dir = mw_tmpdir();
    assert_non_null(dir);
    assert_int_equal(mw_write(w, dir), 0);
    buf orig = {0};
    orig.p = mw_read_file(dir, "model.safetensors", &orig.n);
    assert_non_null(orig.p);
    size_t cfg_n;
    unsigned char *cfg = mw_read_file(dir, "config.json", &cfg_n);
    assert_non_null(cfg);

    buf b = {0};
    long iters = 0, accepted = 0, loads = 0, cfg_ok = 0;
    char msg[512];
    asa_errbuf eb = {msg, sizeof msg};
    double t0 = asa_now();
    while (asa_now() - t0 < seconds) {
        /* safetensors bytes */
        b.n = 0;
        buf_reserve(&b, orig.n + 1);
        memcpy(b.p, orig.p, orig.n);
        b.n = orig.n;
        for (int k = 1 + (int)rndn(4); k > 0; k--)
            mutate(&b);
        unsigned char *exact = malloc(b.n ? b.n : 1);
        assert_non_null(exact);
        memcpy(exact, b.p, b.n);
        eng__st_file f;
        msg[0] = 0;
        asa_err rc = eng__st_parse("fuzz.safetensors", exact, b.n, &f, &eb);
        if (rc == ASA_OK) {
            check_parsed(&f, exact, b.n);
            eng__st_deinit(&f);
            accepted++;
        } else {
            assert_int_equal(rc, ASA_EFORMAT);
            assert_true(strncmp(msg, "fuzz.safetensors: ", 18) == 0);
        }
        free(exact);

        /* now and then, the whole loader from disk */
        if (iters % 64 == 0) {
            assert_int_equal(mw_write_file(dir, "model.safetensors", b.p, b.n), 0);
            eng_model *m = NULL;
            rc = eng_model_load(dir, &m, &eb);
            if (rc == ASA_OK) {
                /* read every element of one bound tensor */
                for (int64_t i = 0; i < m->embed.shape[0] * m->embed.shape[1]; i++)
                    g_sink += eng_tensor_get(&m->embed, i);
                eng_model_destroy(m);
            } else {
                assert_true(msg[0] != 0);
            }
            loads++;
        }

        /* config.json text: a few byte-level mutations */
        b.n = 0;
        buf_reserve(&b, cfg_n + 1);
        memcpy(b.p, cfg, cfg_n);
        b.n = cfg_n;
        for (int k = 1 + (int)rndn(3); k > 0 && b.n; k--) {
            size_t at = rndn(b.n);
            if (rndn(3) == 0) {
                const char *s = NUMBERS[rndn(sizeof NUMBERS / sizeof NUMBERS[0])];
                size_t del = rndn(3);
                splice(&b, at, at + del > b.n ? b.n - at : del, s, strlen(s));
            } else {
                b.p[at] = (unsigned char)SYNTAX[rndn(sizeof SYNTAX - 1)];
            }
        }
        exact = malloc(b.n ? b.n : 1);
        assert_non_null(exact);
        memcpy(exact, b.p, b.n);
        eng_config c;
        msg[0] = 0;
        rc = eng_config_parse((const char *)exact, b.n, &c, &eb);
        if (rc == ASA_OK) {
            assert_non_null(c.layer_types);
            assert_int_equal(c.n_local_layers + c.n_global_layers, c.num_hidden_layers);
            eng_config_deinit(&c);
            cfg_ok++;
        } else {
            assert_true(rc == ASA_EINVAL || rc == ASA_EFORMAT);
            assert_true(strncmp(msg, "config.json: ", 13) == 0);
        }
        free(exact);
        iters++;
    }
    print_message("%ld mutants (%ld accepted by the parser), %ld full loads, %ld configs "
                  "accepted, in %.1f s\n",
                  iters, accepted, loads, cfg_ok, asa_now() - t0);
    free(b.p);
    free(orig.p);
    free(cfg);
    mw_rmtree(dir);
    free(dir);
    mw_destroy(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_fuzz)};
    return cmocka_run_group_tests_name("model_fuzz", tests, NULL, NULL);
}
