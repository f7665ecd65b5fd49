/*
 * tests/kernels/test_topn_cuda.c - topn_cuda against topn_ref: greedy token
 * and top-n ids exactly equal (ties to the lower id, planted ties at the
 * top), logprobs within tolerance, NaN/+inf/-inf rows, every n from 0 to 20,
 * vocabularies from 1 to 152064, poisoned outputs, and the checks.
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kt.h"
#include "topn_cuda.h"

static void run_case(int B, int V, int n, int64_t pad, bool specials) {
    const int64_t ld = V + pad;
    const size_t nl = (size_t)B * ld;
    float *l = malloc(nl * sizeof *l);
    assert_non_null(l);
    kt_fill_f32(l, nl, 3.0f);
    for (int b = 0; b < B; b++) { /* ties at the top */
        float *row = l + (size_t)b * ld;
        int best = 0;
        for (int i = 1; i < V; i++)
            if (row[i] > row[best])
                best = i;
        for (int t = 0; t < 3 && V > 1; t++)
            row[kt_randint(V)] = row[best];
        if (V > 4) /* and a tie in the middle */
            row[kt_randint(V)] = row[kt_randint(V)];
    }
    if (specials && B >= 4) {
        float *r0 = l, *r1 = l + ld, *r2 = l + 2 * ld, *r3 = l + 3 * ld;
        for (int i = 0; i < V; i++) {
            r0[i] = NAN;              /* all NaN: token 0, logprobs -inf */
            r2[i] = -INFINITY;
            if (i % 7 == 3)
                r3[i] = NAN;
        }
        r1[V / 2] = INFINITY;          /* +inf ranks first, like FLT_MAX */
        r1[V - 1] = INFINITY;
        r2[V - 1] = 1.0f;             /* one finite value */
    }
    size_t wss = topn_workspace_size(B, V);
    assert_true(wss > 0);
    topn_params p = {.B = B, .V = V, .n = n, .logits = l, .ld = ld};
    int32_t *tok = malloc((size_t)B * 4), *ids = malloc((size_t)B * (n + 1) * 4);
    float *tlp = malloc((size_t)B * 4), *lps = malloc((size_t)B * (n + 1) * 4);
    assert_non_null(tok);
    assert_non_null(ids);
    assert_non_null(tlp);
    assert_non_null(lps);
    p.token = tok;
    p.token_lp = tlp;
    p.top_ids = n ? ids : NULL;
    p.top_lp = n ? lps : NULL;
    topn_ref(&p);

    topn_params d = p;
    d.logits = kt_dev_upload(l, nl * 4);
    d.token = kt_dev_poison((size_t)B * 4);
    d.token_lp = kt_dev_poison((size_t)B * 4);
    d.top_ids = n ? kt_dev_poison((size_t)B * n * 4) : NULL;
    d.top_lp = n ? kt_dev_poison((size_t)B * n * 4) : NULL;
    d.workspace = kt_dev_poison(wss);
    assert_int_equal(topn_cuda(&d, 0), ASA_OK);
    kt_sync();
    int32_t *gtok = malloc((size_t)B * 4), *gids = malloc((size_t)B * (n + 1) * 4);
    float *gtlp = malloc((size_t)B * 4), *glps = malloc((size_t)B * (n + 1) * 4);
    assert_non_null(gtok);
    assert_non_null(gids);
    assert_non_null(gtlp);
    assert_non_null(glps);
    kt_dev_download(gtok, d.token, (size_t)B * 4);
    kt_dev_download(gtlp, d.token_lp, (size_t)B * 4);
    for (int b = 0; b < B; b++)
        if (gtok[b] != tok[b])
            fail_msg("B %d V %d n %d row %d: token %d, reference %d", B, V, n, b, gtok[b],
                     tok[b]);
    kt_check_close("token_lp", gtlp, tlp, NULL, (size_t)B, 1e-4, 1e-5);
    if (n) {
        kt_dev_download(gids, d.top_ids, (size_t)B * n * 4);
        kt_dev_download(glps, d.top_lp, (size_t)B * n * 4);
        for (int i = 0; i < B * n; i++)
            if (gids[i] != ids[i])
                fail_msg("B %d V %d n %d row %d rank %d: id %d, reference %d", B, V, n, i / n,
                         i % n, gids[i], ids[i]);
        kt_check_close("top_lp", glps, lps, NULL, (size_t)B * n, 1e-4, 1e-5);
    }
    kt_dev_free((void *)d.logits);
    kt_dev_free(d.token);
    kt_dev_free(d.token_lp);
    kt_dev_free(d.top_ids);
    kt_dev_free(d.top_lp);
    kt_dev_free(d.workspace);
    free(l);
    free(tok);
    free(ids);
    free(tlp);
    free(lps);
    free(gtok);
    free(gids);
    free(gtlp);
    free(glps);
}

static void test_shapes(void **state) {
    (void)state;
    run_case(1, 1, 0, 0, false);
    run_case(1, 1, 1, 3, false);
    run_case(3, 20, 20, 0, false);
    run_case(4, 2049, 5, 1, true);
    run_case(5, 4096, 0, 0, true);
    if (kt_quick())
        return;
    for (int n = 0; n <= TOPN_MAX_N; n++)
        run_case(2, 1000 + 37 * n, n, n % 3, false);
    run_case(5, 32000, 20, 0, true);
    run_case(64, 32000, 8, 0, false);
    run_case(1, 32003, 1, 0, false);
    run_case(2, 152064, 13, 0, true);
}

static void test_checks(void **state) {
    (void)state;
    void *buf = kt_dev_alloc(1 << 20);
    topn_params ok = {.B = 1, .V = 100, .n = 20, .logits = buf, .ld = 100,
                      .token = (int32_t *)((char *)buf + 4096),
                      .top_ids = (int32_t *)((char *)buf + 8192),
                      .top_lp = (float *)((char *)buf + 12288),
                      .workspace = (char *)buf + 16384};
    assert_int_equal(topn_params_check(&ok), ASA_OK);
    topn_params b = ok;
    b.n = TOPN_MAX_N + 1;
    assert_int_equal(topn_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.V = 19;
    b.ld = 19;
    assert_int_equal(topn_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.V = 300000;
    b.ld = 300000;
    assert_int_equal(topn_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.top_lp = NULL;
    assert_int_equal(topn_cuda(&b, 0), ASA_EINVAL);
    b = ok;
    b.workspace = (char *)buf + 16388;
    assert_int_equal(topn_cuda(&b, 0), ASA_EINVAL);
    kt_sync();
    kt_dev_free(buf);
}

int main(void) {
    int rc = kt_init("test_topn_cuda");
    if (rc)
        return rc;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
