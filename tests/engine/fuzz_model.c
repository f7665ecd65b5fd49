/*
 * libFuzzer target for the loader's parsers (built only with clang and
 * -DASA_FUZZERS=ON; see tests/engine/CMakeLists.txt).
 *
 * The first input byte picks the parser: even -> safetensors bytes (the
 * rest of the input is the whole file), odd -> config.json text.  Accepted
 * safetensors files are checked against the parser's promises, so a bug
 * that lets a bad offset through fails here rather than later in a kernel.
 *
 *   build-fuzz/tests/engine/fuzz_model -max_total_time=60 CORPUS_DIR
 *
 * A useful seed corpus is any model.safetensors / config.json with a 0x00
 * or 0x01 byte prepended.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(int ok) {
    if (!ok)
        abort(); /* a fuzz target reports a finding by crashing */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char msg[256];
    asa_errbuf eb = {msg, sizeof msg};
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    if (data[0] & 1) {
        eng_config c;
        if (eng_config_parse((const char *)p, n, &c, &eb) == ASA_OK) {
            fuzz_check(c.n_local_layers + c.n_global_layers == c.num_hidden_layers);
            eng_config_deinit(&c);
        }
        return 0;
    }
    eng__st_file f;
    if (eng__st_parse("fuzz", p, n, &f, &eb) != ASA_OK)
        return 0;
    fuzz_check(f.data_start >= 8 && f.data_start <= n);
    for (int i = 0; i < f.n; i++) {
        const eng__st_tensor *t = &f.tensors[i];
        fuzz_check(t->begin <= t->end && t->end <= n - f.data_start);
        fuzz_check((f.data_start + t->begin) % eng__dtype_size(t->dtype) == 0);
        uint64_t ne = 1;
        for (int k = 0; k < t->ndim; k++)
            ne *= (uint64_t)t->shape[k];
        fuzz_check(t->end - t->begin == ne * eng__dtype_size(t->dtype));
        if (t->end > t->begin) {
            /* the first and last byte are inside the input */
            volatile uint8_t a = ((const uint8_t *)t->data)[0];
            volatile uint8_t z = ((const uint8_t *)t->data)[t->end - t->begin - 1];
            (void)a;
            (void)z;
        }
    }
    eng__st_deinit(&f);
    return 0;
}
