/*
 * Allocation fault injection for the loader: every allocation that
 * engine/model.c and engine/safetensors.c make (malloc, calloc, realloc and
 * strdup, wrapped by the linker's --wrap) is made to fail in turn, once
 * ("transient") and from then on ("persistent").  Each load must return
 * ASA_OK with the full config, or ASA_ENOMEM with a message and *out
 * untouched, and leak nothing (the sanitizer build checks).
 *
 * jansson's own allocations are not failed: jansson 2.14's lexer drops
 * allocation failures while saving token text (akheron/jansson#362), after
 * which it may report a bogus syntax error, return an object missing a key,
 * or crash.  Out of memory inside json_loadb is jansson's problem to fix.
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model_writer.h"
#include "model.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t k);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t k);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

static long g_fail_at = -1; /* allocation number to fail; -1: none */
static bool g_persistent;   /* keep failing after the first failure */
static long g_count;        /* allocations seen since arming */
static bool g_failed;       /* an injected failure happened */

static bool fail_now(void) {
    if (g_fail_at < 0)
        return false;
    long k = g_count++;
    if (k == g_fail_at || (g_persistent && k > g_fail_at)) {
        g_failed = true;
        return true;
    }
    return false;
}

void *__wrap_malloc(size_t n) { return fail_now() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t k) { return fail_now() ? NULL : __real_calloc(n, k); }
void *__wrap_realloc(void *p, size_t n) { return fail_now() ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return fail_now() ? NULL : __real_strdup(s); }

static void arm(long at, bool persistent) {
    g_fail_at = at;
    g_persistent = persistent;
    g_count = 0;
    g_failed = false;
}

static void run(const mw_opts *o, bool persistent) {
    mw_model *w = mw_create(o);
    assert_non_null(w);
    char *dir = mw_tmpdir();
    assert_non_null(dir);
    assert_int_equal(mw_write(w, dir), 0);
    char msg[512];
    asa_errbuf eb = {msg, sizeof msg};
    long k;
    for (k = 0; k < 100000; k++) {
        eng_model *sentinel = (eng_model *)(uintptr_t)0x5678, *m = sentinel;
        msg[0] = 0;
        arm(k, persistent);
        asa_err rc = eng_model_load(dir, &m, &eb);
        bool injected = g_failed;
        arm(-1, false);
        if (rc == ASA_OK) {
            const eng_config *c = &m->cfg;
            assert_non_null(m->embed.data);
            assert_int_equal(c->num_hidden_layers, 3);
            assert_true(c->rope_theta == 500.0 && c->rms_norm_eps == 1e-5);
            assert_int_equal(c->max_position_embeddings, 64);
            assert_int_equal(c->v_head_dim, 3);
            assert_int_equal(c->bos_token_id, 1);
            assert_int_equal(c->eos_token_id, 2);
            assert_int_equal(c->global.selection_share, 2);
            assert_int_equal(c->layer_types[1], ENG_LAYER_GLOBAL);
            eng_model_destroy(m);
            if (!injected)
                break; /* every allocation has had its turn */
            continue;  /* a failure that the loader did not need to report */
        }
        if (rc != ASA_ENOMEM)
            fail_msg("allocation %ld: expected ASA_ENOMEM, got %s: %s", k, asa_errname(rc), msg);
        assert_true(injected);
        assert_ptr_equal(m, sentinel);
        assert_true(msg[0] != 0);
    }
    print_message("%s%s: %ld allocation points\n", o->n_shards ? "sharded" : "single",
                  persistent ? ", persistent" : "", k);
    assert_true(k > 10 && k < 100000);
    mw_rmtree(dir);
    free(dir);
    mw_destroy(w);
}

static void test_single(void **s) {
    (void)s;
    run(&(mw_opts){.dtypes = MW_MIXED}, false);
}
static void test_single_persistent(void **s) {
    (void)s;
    run(&(mw_opts){.dtypes = MW_MIXED, .tied = true}, true);
}
static void test_sharded(void **s) {
    (void)s;
    run(&(mw_opts){.dtypes = MW_MIXED, .n_shards = 3}, false);
}
static void test_sharded_persistent(void **s) {
    (void)s;
    run(&(mw_opts){.dtypes = MW_BF16, .n_shards = 2}, true);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single),
        cmocka_unit_test(test_single_persistent),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_sharded_persistent),
    };
    return cmocka_run_group_tests_name("model_oom", tests, NULL, NULL);
}
