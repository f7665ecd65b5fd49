/* Unit tests of server/oai_parse.c, chat.c, srv_err.c and metrics.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "metrics.h"
#include "oai.h"
#include "srv_err.h"

static int parse(const char *json, srv_kind kind, srv_params *p, srv_error *e, asa_arena *a) {
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    assert_non_null(j);
    memset(e, 0, sizeof *e);
    int rc = kind == SRV_CHAT ? srv_parse_chat(j, a, p, e) : srv_parse_completion(j, a, p, e);
    json_decref(j);
    return rc;
}

static void test_defaults(void **st) {
    (void)st;
    asa_arena *a = asa_arena_create(0);
    srv_params p;
    srv_error e;
    assert_int_equal(parse("{\"prompt\":\"hi\"}", SRV_COMPLETION, &p, &e, a), 0);
    assert_int_equal(p.max_tokens, 16);
    assert_int_equal(p.n, 1);
    assert_true(p.temperature == 1.0f && p.top_p == 1.0f && p.repetition_penalty == 1.0f);
    assert_int_equal(p.logprobs, -1);
    assert_true(p.add_special_tokens);
    assert_int_equal(p.n_prompts, 1);
    assert_string_equal(p.prompts[0].text, "hi");
    asa_arena_destroy(a);
}

static void test_prompt_forms(void **st) {
    (void)st;
    asa_arena *a = asa_arena_create(0);
    srv_params p;
    srv_error e;
    assert_int_equal(parse("{\"prompt\":[1,2,3]}", SRV_COMPLETION, &p, &e, a), 0);
    assert_int_equal(p.n_prompts, 1);
    assert_int_equal(p.prompts[0].n_ids, 3);
    assert_int_equal(p.prompts[0].ids[2], 3);
    assert_int_equal(parse("{\"prompt\":[\"a\",\"b\"]}", SRV_COMPLETION, &p, &e, a), 0);
    assert_int_equal(p.n_prompts, 2);
    assert_int_equal(parse("{\"prompt\":[[1],[2,3]]}", SRV_COMPLETION, &p, &e, a), 0);
    assert_int_equal(p.prompts[1].n_ids, 2);
    assert_int_equal(parse("{\"prompt\":[\"a\",[1]]}", SRV_COMPLETION, &p, &e, a), -1);
    assert_string_equal(e.param, "prompt");
    assert_int_equal(parse("{\"prompt\":[-1]}", SRV_COMPLETION, &p, &e, a), -1);
    assert_int_equal(parse("{\"prompt\":{}}", SRV_COMPLETION, &p, &e, a), -1);
    assert_int_equal(parse("{}", SRV_COMPLETION, &p, &e, a), -1);
    assert_string_equal(e.param, "prompt");
    asa_arena_destroy(a);
}

static void test_ranges(void **st) {
    (void)st;
    static const struct {
        const char *json;
        const char *param;
        srv_err_kind kind;
    } bad[] = {
        {"{\"prompt\":\"x\",\"temperature\":-0.5}", "temperature", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"top_p\":0}", "top_p", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"top_p\":1.5}", "top_p", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"min_p\":2}", "min_p", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"n\":0}", "n", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"max_tokens\":1.5}", "max_tokens", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"presence_penalty\":3}", "presence_penalty", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"logprobs\":21}", "logprobs", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"logprobs\":true}", "logprobs", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"best_of\":3}", "best_of", SRV_E_UNSUPPORTED_PARAM},
        {"{\"prompt\":\"x\",\"suffix\":\"s\"}", "suffix", SRV_E_UNSUPPORTED_PARAM},
        {"{\"prompt\":\"x\",\"stop\":[1]}", "stop", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"stop\":\"\"}", "stop", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"logit_bias\":{\"7\":101}}", "logit_bias", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"logit_bias\":{\"x\":1}}", "logit_bias", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"seed\":\"s\"}", "seed", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"stream\":1}", "stream", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":true}}", "stream_options", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"min_tokens\":5,\"max_tokens\":4}", "min_tokens", SRV_E_BAD_PARAM},
        {"{\"prompt\":\"x\",\"echo\":true,\"logprobs\":1}", "echo", SRV_E_UNSUPPORTED_PARAM},
    };
    asa_arena *a = asa_arena_create(0);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        srv_params p;
        srv_error e;
        assert_int_equal(parse(bad[i].json, SRV_COMPLETION, &p, &e, a), -1);
        if (strcmp(e.param, bad[i].param) != 0 || e.kind != bad[i].kind)
            fail_msg("%s: param '%s' kind %d", bad[i].json, e.param, e.kind);
        assert_true(e.message[0] != 0);
    }
    srv_params p;
    srv_error e;
    assert_int_equal(parse("{\"prompt\":\"x\",\"stop\":[\"a\",\"bb\"],\"logit_bias\":{\"5\":-100},"
                           "\"seed\":-3,\"top_k\":-1,\"best_of\":1,\"whatever\":[1]}",
                           SRV_COMPLETION, &p, &e, a), 0);
    assert_int_equal(p.n_stop, 2);
    assert_string_equal(p.stop[1], "bb");
    assert_int_equal(p.n_bias, 1);
    assert_int_equal(p.bias_ids[0], 5);
    assert_true(p.bias_vals[0] == -100.0f);
    assert_true(p.has_seed);
    assert_int_equal(p.top_k, 0);
    asa_arena_destroy(a);
}

static void test_check_model(void **st) {
    (void)st;
    asa_arena *a = asa_arena_create(0);
    srv_params p;
    srv_error e;
    assert_int_equal(parse("{\"prompt\":[1,2,3],\"max_tokens\":20}", SRV_COMPLETION, &p, &e, a), 0);
    assert_int_equal(srv_params_check_model(&p, 10, 22, &e), -1);
    assert_int_equal(e.kind, SRV_E_CONTEXT_LENGTH);
    assert_non_null(strstr(e.message, "22"));
    assert_non_null(strstr(e.message, "20"));
    assert_int_equal(srv_params_check_model(&p, 10, 23, &e), 0);
    assert_int_equal(parse("{\"prompt\":[1,12]}", SRV_COMPLETION, &p, &e, a), 0);
    assert_int_equal(srv_params_check_model(&p, 10, 100, &e), -1);
    assert_string_equal(e.param, "prompt");
    assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", SRV_CHAT, &p, &e, a), 0);
    p.prompts[0].ids = (int32_t[]){1, 2};
    p.prompts[0].n_ids = 2;
    assert_int_equal(p.max_tokens, -1);
    assert_int_equal(srv_params_check_model(&p, 10, 100, &e), 0);
    assert_int_equal(p.max_tokens, 98);
    asa_arena_destroy(a);
}

/* Regression: prompt + max_tokens near INT32_MAX overflowed int while the
 * message was built (undefined behaviour; an abort under UBSan). */
static void test_check_model_huge_max_tokens(void **st) {
    (void)st;
    asa_arena *a = asa_arena_create(0);
    srv_params p;
    srv_error e;
    assert_int_equal(parse("{\"prompt\":[1,2,3,4,5,6],\"max_tokens\":2147483647}", SRV_COMPLETION,
                           &p, &e, a), 0);
    assert_int_equal(srv_params_check_model(&p, 10, 4096, &e), -1);
    assert_int_equal(e.kind, SRV_E_CONTEXT_LENGTH);
    assert_string_equal(e.param, "max_tokens");
    assert_non_null(strstr(e.message, "2147483653"));
    assert_non_null(strstr(e.message, "2147483647"));
    asa_arena_destroy(a);
}

static void test_chat(void **st) {
    (void)st;
    asa_arena *a = asa_arena_create(0);
    srv_params p;
    srv_error e;
    assert_int_equal(parse("{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},"
                           "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                           "{\"type\":\"text\",\"text\":\"b\"}]}],\"max_completion_tokens\":5,"
                           "\"logprobs\":true,\"top_logprobs\":3}",
                           SRV_CHAT, &p, &e, a), 0);
    assert_int_equal(p.max_tokens, 5);
    assert_int_equal(p.logprobs, 3);
    assert_false(p.add_special_tokens);
    size_t len;
    char *t = srv_chat_render(SRV_CHAT_CHATML, &p, NULL, a, &len);
    assert_string_equal(t, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nab<|im_end|>\n"
                           "<|im_start|>assistant\n");
    assert_int_equal(len, strlen(t));
    t = srv_chat_render(SRV_CHAT_LLAMA2, &p, "<s>", a, &len);
    assert_string_equal(t, "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nab [/INST]");
    t = srv_chat_render(SRV_CHAT_PLAIN, &p, NULL, a, &len);
    assert_string_equal(t, "System: S\nUser: ab\nAssistant:");
    assert_int_equal(parse("{\"messages\":[]}", SRV_CHAT, &p, &e, a), -1);
    assert_int_equal(parse("{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", SRV_CHAT, &p, &e, a), -1);
    assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
                           SRV_CHAT, &p, &e, a), -1);
    assert_int_equal(e.kind, SRV_E_UNSUPPORTED_PARAM);
    assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{}]}",
                           SRV_CHAT, &p, &e, a), -1);
    assert_string_equal(e.param, "tools");
    assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}",
                           SRV_CHAT, &p, &e, a), -1);
    assert_int_equal(srv_chat_template_detect("{% for m in messages %}[INST]"), SRV_CHAT_LLAMA2);
    asa_arena_destroy(a);
}

static void test_error_json(void **st) {
    (void)st;
    srv_error e = {0};
    srv_fail(&e, SRV_E_OVERLOADED, NULL, "busy \xff bytes");
    assert_int_equal(srv_error_status(&e), 429);
    json_t *j = srv_error_json(&e);
    json_t *err = json_object_get(j, "error");
    assert_non_null(err);
    assert_string_equal(json_string_value(json_object_get(err, "type")), "rate_limit_error");
    assert_true(json_is_null(json_object_get(err, "param")));
    assert_non_null(json_string_value(json_object_get(err, "message")));
    json_decref(j);
    srv_fail(&e, SRV_E_BAD_PARAM, "top_p", "x");
    assert_int_equal(srv_error_status(&e), 400);
    j = srv_error_json(&e);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "param")), "top_p");
    json_decref(j);
}

static void test_metrics(void **st) {
    (void)st;
    srv_metrics *m = srv_metrics_create("my\"model");
    srv_metrics_observe(m, SRV_H_TTFT, 0.003);
    srv_metrics_observe(m, SRV_H_TTFT, 100.0);
    srv_metrics_add_prompt_tokens(m, 12);
    srv_metrics_finish(m, SRV_FIN_LENGTH);
    srv_gauges g = {3, 4, 0.25, 1, 7};
    size_t len;
    char *t = srv_metrics_render(m, &g, &len);
    assert_non_null(t);
    assert_int_equal(strlen(t), len);
    assert_non_null(strstr(t, "asa:num_requests_running{model_name=\"my\\\"model\"} 3\n"));
    assert_non_null(strstr(t, "asa:prompt_tokens_total{model_name=\"my\\\"model\"} 12\n"));
    assert_non_null(strstr(t, "asa:num_preemptions_total{model_name=\"my\\\"model\"} 7\n"));
    assert_non_null(strstr(t, "asa:time_to_first_token_seconds_bucket{le=\"0.001\",model_name=\"my\\\"model\"} 0\n"));
    assert_non_null(strstr(t, "asa:time_to_first_token_seconds_bucket{le=\"0.005\",model_name=\"my\\\"model\"} 1\n"));
    assert_non_null(strstr(t, "asa:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"my\\\"model\"} 2\n"));
    assert_non_null(strstr(t, "asa:time_to_first_token_seconds_count{model_name=\"my\\\"model\"} 2\n"));
    assert_non_null(strstr(t, "asa:request_success_total{finished_reason=\"length\",model_name=\"my\\\"model\"} 1\n"));
    free(t);
    srv_metrics_destroy(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults), cmocka_unit_test(test_prompt_forms),
        cmocka_unit_test(test_ranges),   cmocka_unit_test(test_check_model),
        cmocka_unit_test(test_chat),     cmocka_unit_test(test_error_json),
        cmocka_unit_test(test_metrics),  cmocka_unit_test(test_check_model_huge_max_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
