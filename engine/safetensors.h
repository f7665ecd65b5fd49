/*
 * engine/safetensors.h - engine-internal: parsing and validating one
 * safetensors file that is already in memory (normally a read-only mapping).
 *
 * Layout (https://huggingface.co/docs/safetensors): an 8-byte little-endian
 * header length N, N bytes of JSON header, then the data section.  The header
 * is an object mapping tensor names to {"dtype", "shape", "data_offsets":
 * [begin, end]} (offsets relative to the data section), plus an optional
 * "__metadata__" object of string values.
 *
 * eng__st_parse() trusts nothing in the buffer: every read is bounded by
 * `size`, the JSON is parsed with an explicit length, and every tensor is
 * checked (dtype BF16 or F32 only, shape of non-negative integers, offsets
 * inside the data section and matching shape * dtype size, alignment of the
 * absolute offset to the element size, no two tensors overlapping, no
 * duplicate names).  It does not know about models: which tensors must exist
 * and with which shapes is model.c's job.
 *
 * Not part of the public API; exposed in a header so that tests and the fuzz
 * target can drive the parser directly on memory buffers.
 */
#ifndef ASA_ENG_SAFETENSORS_H
#define ASA_ENG_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "asa.h"
#include "model.h"

#define ENG__ST_MAX_DIMS 8
/* Largest header accepted (the reference implementation's limit). */
#define ENG__ST_MAX_HEADER (100u << 20)

typedef struct eng__st_tensor {
    char *name;                       /* owned, NUL-terminated */
    eng_dtype dtype;
    int ndim;                         /* 0..ENG__ST_MAX_DIMS */
    int64_t shape[ENG__ST_MAX_DIMS];  /* each >= 0 */
    uint64_t begin, end;              /* byte offsets into the data section */
    const void *data;                 /* buf + data_start + begin (borrowed) */
} eng__st_tensor;

typedef struct eng__st_file {
    eng__st_tensor *tensors; /* [n], sorted by name (strcmp) */
    int n;
    uint64_t data_start;     /* 8 + header length */
} eng__st_file;

/* Parses and validates the safetensors bytes buf[0..size).  `fname` is used
 * only in messages ("<fname>: tensor 'x': ...").  On success fills *out
 * (tensor data pointers borrow from buf, which must outlive their use);
 * release with eng__st_deinit.  On failure returns ASA_EFORMAT (or
 * ASA_ENOMEM), writes the reason into eb and leaves *out zeroed. */
asa_err eng__st_parse(const char *fname, const void *buf, size_t size,
                      eng__st_file *out, asa_errbuf *eb);
/* Frees the tensor table.  A zeroed file is a no-op. */
void eng__st_deinit(eng__st_file *f);
/* Binary search by name; NULL when absent. */
const eng__st_tensor *eng__st_find(const eng__st_file *f, const char *name);

/* Writes "[a, b, ...]" into s (truncated to n bytes, always terminated). */
void eng__shape_str(char *s, size_t n, const int64_t *shape, int ndim);

/* Whether a failed json_loadb failed for lack of memory.  jansson sets the
 * out-of-memory code on most paths, but a failure to set up its lexer
 * returns with the error text still empty. */
static inline bool eng__json_oom(const json_error_t *e) {
    return json_error_code(e) == json_error_out_of_memory || e->text[0] == '\0';
}

/* Size in bytes of one element of dtype. */
static inline size_t eng__dtype_size(eng_dtype t) { return t == ENG_F32 ? 4 : 2; }
static inline const char *eng__dtype_name(eng_dtype t) {
    return t == ENG_F32 ? "F32" : "BF16";
}

#endif /* ASA_ENG_SAFETENSORS_H */
