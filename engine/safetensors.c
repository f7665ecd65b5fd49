/*
 * engine/safetensors.c - the safetensors header parser (see safetensors.h).
 *
 * Hostile input is the normal case here: the buffer may be truncated, the
 * header length may point anywhere, the JSON may be anything.  All reads are
 * bounded by `size`; jansson gets the header with an explicit length; all
 * offset arithmetic is done in uint64_t after range checks so that nothing
 * can wrap.
 */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Names and strings from the file are printed with a bounded width so that
 * a hostile 1 MB tensor name cannot push the useful part out of the message. */
#define NAMEW 200

void eng__shape_str(char *s, size_t n, const int64_t *shape, int ndim) {
    size_t k = 0;
    int w = snprintf(s, n, "[");
    k = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < ndim && k < n; i++) {
        w = snprintf(s + k, n - k, "%s%" PRId64, i ? ", " : "", shape[i]);
        if (w < 0)
            return;
        k += (size_t)w;
    }
    if (k < n)
        snprintf(s + k, n - k, "]");
}

/* The last complete "string" token ending before byte `pos` of the header
 * (for naming the key of a duplicate-key error).  Escapes are kept as
 * written; returns false if there is none. */
static bool last_string(const unsigned char *h, uint64_t n, int pos, char *out, size_t cap) {
    if (pos < 0)
        return false;
    uint64_t e = (uint64_t)pos < n ? (uint64_t)pos : n;
    while (e > 0 && h[e - 1] != '"')
        e--;
    if (e < 2)
        return false;
    uint64_t b = e - 1; /* closing quote at b */
    uint64_t a = b;
    while (a > 0 && !(h[a - 1] == '"' && (a < 2 || h[a - 2] != '\\')))
        a--;
    if (a == 0)
        return false;
    size_t len = (size_t)(b - a) < cap - 1 ? (size_t)(b - a) : cap - 1;
    memcpy(out, h + a, len);
    out[len] = 0;
    return true;
}

static bool json_uint(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* Checks one tensor entry `val` named `name` and fills *t (name not set). */
static asa_err parse_tensor(const char *fname, const char *name, json_t *val,
                            uint64_t data_start, uint64_t data_size,
                            eng__st_tensor *t, asa_errbuf *eb) {
    if (!json_is_object(val))
        return asa_errf(eb, ASA_EFORMAT, "%s: tensor '%.*s': entry is not a JSON object",
                        fname, NAMEW, name);
    const char *key;
    json_t *v;
    json_object_foreach(val, key, v) {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return asa_errf(eb, ASA_EFORMAT, "%s: tensor '%.*s': unknown field '%.*s'",
                            fname, NAMEW, name, NAMEW, key);
    }

    /* dtype */
    json_t *jd = json_object_get(val, "dtype");
    if (!json_is_string(jd))
        return asa_errf(eb, ASA_EFORMAT, "%s: tensor '%.*s': field 'dtype' %s", fname,
                        NAMEW, name, jd ? "is not a string" : "is missing");
    const char *ds = json_string_value(jd);
    if (!strcmp(ds, "F32"))
        t->dtype = ENG_F32;
    else if (!strcmp(ds, "BF16"))
        t->dtype = ENG_BF16;
    else
        return asa_errf(eb, ASA_EFORMAT,
                        "%s: tensor '%.*s': unsupported dtype '%.32s' (only BF16 and F32)",
                        fname, NAMEW, name, ds);
    uint64_t esize = eng__dtype_size(t->dtype);

    /* shape */
    json_t *js = json_object_get(val, "shape");
    if (!json_is_array(js))
        return asa_errf(eb, ASA_EFORMAT, "%s: tensor '%.*s': field 'shape' %s", fname,
                        NAMEW, name, js ? "is not an array" : "is missing");
    size_t nd = json_array_size(js);
    if (nd > ENG__ST_MAX_DIMS)
        return asa_errf(eb, ASA_EFORMAT, "%s: tensor '%.*s': shape has %zu dimensions (max %d)",
                        fname, NAMEW, name, nd, ENG__ST_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t nelem = 1;
    bool overflow = false;
    for (size_t i = 0; i < nd; i++) {
        uint64_t dim;
        if (!json_uint(json_array_get(js, i), &dim))
            return asa_errf(eb, ASA_EFORMAT,
                            "%s: tensor '%.*s': shape[%zu] is not a non-negative integer",
                            fname, NAMEW, name, i);
        t->shape[i] = (int64_t)dim;
        if (dim != 0 && nelem > UINT64_MAX / esize / dim)
            overflow = true;
        else
            nelem *= dim;
    }
    /* A zero dimension makes the tensor empty whatever the others say. */
    for (size_t i = 0; i < nd; i++)
        if (t->shape[i] == 0)
            overflow = false, nelem = 0;
    char sh[128];
    eng__shape_str(sh, sizeof sh, t->shape, t->ndim);
    if (overflow)
        return asa_errf(eb, ASA_EFORMAT, "%s: tensor '%.*s': shape %s is too large", fname,
                        NAMEW, name, sh);
    uint64_t nbytes = nelem * esize;

    /* data_offsets */
    json_t *jo = json_object_get(val, "data_offsets");
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return asa_errf(eb, ASA_EFORMAT,
                        "%s: tensor '%.*s': field 'data_offsets' %s", fname, NAMEW, name,
                        jo ? "is not an array [begin, end]" : "is missing");
    uint64_t b, e;
    if (!json_uint(json_array_get(jo, 0), &b) || !json_uint(json_array_get(jo, 1), &e))
        return asa_errf(eb, ASA_EFORMAT,
                        "%s: tensor '%.*s': data_offsets are not non-negative integers",
                        fname, NAMEW, name);
    if (e < b)
        return asa_errf(eb, ASA_EFORMAT,
                        "%s: tensor '%.*s': data_offsets [%" PRIu64 ", %" PRIu64
                        "]: end < begin",
                        fname, NAMEW, name, b, e);
    if (e > data_size)
        return asa_errf(eb, ASA_EFORMAT,
                        "%s: tensor '%.*s': data_offsets [%" PRIu64 ", %" PRIu64
                        "] extend beyond the data section (%" PRIu64
                        " bytes; file truncated?)",
                        fname, NAMEW, name, b, e, data_size);
    if (e - b != nbytes)
        return asa_errf(eb, ASA_EFORMAT,
                        "%s: tensor '%.*s': data_offsets [%" PRIu64 ", %" PRIu64
                        "] hold %" PRIu64 " bytes but shape %s of %s needs %" PRIu64,
                        fname, NAMEW, name, b, e, e - b, sh, ds, nbytes);
    /* data_start + b <= size, no wrap. */
    if ((data_start + b) % esize)
        return asa_errf(eb, ASA_EFORMAT,
                        "%s: tensor '%.*s': data at file offset %" PRIu64
                        " is not aligned to its %" PRIu64 "-byte %s elements",
                        fname, NAMEW, name, data_start + b, esize, ds);
    t->begin = b;
    t->end = e;
    return ASA_OK;
}

static int cmp_offset(const void *a, const void *b) {
    const eng__st_tensor *x = *(eng__st_tensor *const *)a, *y = *(eng__st_tensor *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const eng__st_tensor *)a)->name, ((const eng__st_tensor *)b)->name);
}

/* Rejects any two non-empty tensors whose byte ranges intersect. */
static asa_err check_overlap(const char *fname, eng__st_tensor *t, int n, asa_errbuf *eb) {
    if (n < 2)
        return ASA_OK;
    eng__st_tensor **ord = malloc((size_t)n * sizeof *ord);
    if (!ord)
        return asa_errf(eb, ASA_ENOMEM, "%s: out of memory", fname);
    for (int i = 0; i < n; i++)
        ord[i] = &t[i];
    qsort(ord, (size_t)n, sizeof *ord, cmp_offset);
    asa_err rc = ASA_OK;
    const eng__st_tensor *far = NULL; /* the non-empty tensor reaching furthest so far */
    for (int i = 0; i < n; i++) {
        const eng__st_tensor *c = ord[i];
        if (c->begin == c->end)
            continue;
        if (far && c->begin < far->end) {
            rc = asa_errf(eb, ASA_EFORMAT,
                          "%s: tensors '%.*s' [%" PRIu64 ", %" PRIu64 ") and '%.*s' [%" PRIu64
                          ", %" PRIu64 ") overlap",
                          fname, NAMEW, far->name, far->begin, far->end, NAMEW, c->name,
                          c->begin, c->end);
            break;
        }
        if (!far || c->end > far->end)
            far = c;
    }
    free(ord);
    return rc;
}

asa_err eng__st_parse(const char *fname, const void *buf, size_t size, eng__st_file *out,
                      asa_errbuf *eb) {
    const unsigned char *p = buf;
    json_t *root = NULL;
    eng__st_file f = {0};
    asa_err rc;

    memset(out, 0, sizeof *out);
    if (size < 8)
        return asa_errf(eb, ASA_EFORMAT,
                        "%s: file is %zu bytes, too short for the 8-byte header length",
                        fname, size);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)p[i] << (8 * i);
    if (hlen > (uint64_t)size - 8)
        return asa_errf(eb, ASA_EFORMAT,
                        "%s: header length %" PRIu64 " exceeds the file (%zu bytes)", fname,
                        hlen, size);
    if (hlen > ENG__ST_MAX_HEADER)
        return asa_errf(eb, ASA_EFORMAT, "%s: header length %" PRIu64 " is too large (max %u)",
                        fname, hlen, ENG__ST_MAX_HEADER);
    f.data_start = 8 + hlen;
    uint64_t data_size = (uint64_t)size - f.data_start;

    json_error_t je;
    root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root && eng__json_oom(&je))
        return asa_errf(eb, ASA_ENOMEM, "%s: out of memory", fname);
    if (!root) {
        char key[NAMEW + 1];
        if (strstr(je.text, "duplicate") && last_string(p + 8, hlen, je.position, key, sizeof key))
            return asa_errf(eb, ASA_EFORMAT, "%s: header lists '%s' twice", fname, key);
        return asa_errf(eb, ASA_EFORMAT,
                        "%s: header is not valid JSON: %s (line %d, column %d)", fname,
                        je.text, je.line, je.column);
    }
    if (!json_is_object(root)) {
        rc = asa_errf(eb, ASA_EFORMAT, "%s: header is not a JSON object", fname);
        goto fail;
    }

    size_t cap = json_object_size(root);
    f.tensors = calloc(cap ? cap : 1, sizeof *f.tensors);
    if (!f.tensors) {
        rc = asa_errf(eb, ASA_ENOMEM, "%s: out of memory", fname);
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(val)) {
                rc = asa_errf(eb, ASA_EFORMAT, "%s: '__metadata__' is not a JSON object",
                              fname);
                goto fail;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    rc = asa_errf(eb, ASA_EFORMAT,
                                  "%s: '__metadata__' value '%.*s' is not a string", fname,
                                  NAMEW, mk);
                    goto fail;
                }
            }
            continue;
        }
        eng__st_tensor *t = &f.tensors[f.n];
        rc = parse_tensor(fname, key, val, f.data_start, data_size, t, eb);
        if (rc)
            goto fail;
        t->name = strdup(key);
        if (!t->name) {
            rc = asa_errf(eb, ASA_ENOMEM, "%s: out of memory", fname);
            goto fail;
        }
        t->data = p + f.data_start + t->begin;
        f.n++;
    }
    json_decref(root);
    root = NULL;

    rc = check_overlap(fname, f.tensors, f.n, eb);
    if (rc)
        goto fail;
    qsort(f.tensors, (size_t)f.n, sizeof *f.tensors, cmp_name);
    for (int i = 1; i < f.n; i++) {
        /* jansson rejects duplicate keys already; kept as a guard. */
        if (!strcmp(f.tensors[i - 1].name, f.tensors[i].name)) {
            rc = asa_errf(eb, ASA_EFORMAT, "%s: tensor '%.*s' is listed twice", fname, NAMEW,
                          f.tensors[i].name);
            goto fail;
        }
    }
    *out = f;
    return ASA_OK;

fail:
    json_decref(root);
    eng__st_deinit(&f);
    return rc;
}

void eng__st_deinit(eng__st_file *f) {
    if (!f)
        return;
    for (int i = 0; i < f->n; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    memset(f, 0, sizeof *f);
}

const eng__st_tensor *eng__st_find(const eng__st_file *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (!c)
            return &f->tensors[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}
