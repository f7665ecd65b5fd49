/*
 * common/asa.h - the shared vocabulary of every asa-serve module.
 *
 * Error codes: every fallible function in the project returns asa_err, 0 for
 * success and a negative code from the single X-macro table below.  Results
 * travel through out-parameters.  asa_strerror() never returns NULL.
 *
 * Logging: one logger for the whole process, thread-safe, writing to stderr.
 * ASA_LOG checks the level before evaluating its arguments.  Library modules
 * (engine, kernels, kvcache, tokenizer, scheduler) log only through it and
 * never printf.
 *
 * Arena: a bump allocator for per-request scratch, freed once.  Not
 * thread-safe; one owner at a time.
 */
#ifndef ASA_COMMON_H
#define ASA_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* X(NAME, value, message) */
#define ASA_ERR_MAP(X)                                                        \
    X(NOMEM, -1, "out of memory")                                             \
    X(INVAL, -2, "invalid argument")                                          \
    X(IO, -3, "input/output error")                                           \
    X(FORMAT, -4, "malformed file or data")                                   \
    X(NOSPACE, -5, "no space left in the pool")                               \
    X(AGAIN, -6, "resource temporarily unavailable, try again")               \
    X(NOTFOUND, -7, "not found")                                              \
    X(UNSUPPORTED, -8, "unsupported feature")                                 \
    X(RANGE, -9, "value out of range")                                        \
    X(CUDA, -10, "CUDA error")                                                \
    X(DEAD, -11, "engine is dead")                                            \
    X(CANCELLED, -12, "cancelled")                                            \
    X(TOOBIG, -13, "too large")                                               \
    X(BUSY, -14, "busy")                                                      \
    X(INTERNAL, -15, "internal error")                                        \
    X(UTF8, -16, "invalid UTF-8")                                             \
    X(EOF, -17, "end of stream")

typedef enum asa_err {
    ASA_OK = 0,
#define ASA__ERR_ENUM(name, val, msg) ASA_E##name = (val),
    ASA_ERR_MAP(ASA__ERR_ENUM)
#undef ASA__ERR_ENUM
} asa_err;

/* Human-readable text for an error code; unknown codes give "unknown error". */
const char *asa_strerror(int err);
/* Symbolic name ("ASA_ENOMEM"); unknown codes give "ASA_E?". */
const char *asa_errname(int err);

/* ---- logging ---------------------------------------------------------- */

typedef enum asa_log_level {
    ASA_LOG_ERROR = 0,
    ASA_LOG_WARN = 1,
    ASA_LOG_INFO = 2,
    ASA_LOG_DEBUG = 3,
} asa_log_level;

/* Current threshold; messages above it are dropped before formatting.
 * Initialised from $ASA_LOG_LEVEL (error|warn|info|debug), default info. */
extern int asa_log_threshold;

void asa_log_set_level(int level);
/* Parses "error", "warn", "info", "debug"; returns -1 if unknown. */
int asa_log_parse_level(const char *s);

/* Writes "time LEVEL [module] [req id] message\n" atomically to stderr.
 * reqid < 0 omits the request id. */
void asa__log(int level, const char *module, int64_t reqid, const char *fmt,
              ...) __attribute__((format(printf, 4, 5)));

#define ASA_LOG(level, module, reqid, ...)                                    \
    do {                                                                      \
        if ((level) <= asa_log_threshold)                                     \
            asa__log((level), (module), (reqid), __VA_ARGS__);                \
    } while (0)
#define ASA_LOGE(module, ...) ASA_LOG(ASA_LOG_ERROR, module, -1, __VA_ARGS__)
#define ASA_LOGW(module, ...) ASA_LOG(ASA_LOG_WARN, module, -1, __VA_ARGS__)
#define ASA_LOGI(module, ...) ASA_LOG(ASA_LOG_INFO, module, -1, __VA_ARGS__)
#define ASA_LOGD(module, ...) ASA_LOG(ASA_LOG_DEBUG, module, -1, __VA_ARGS__)

/* ---- error messages with context -------------------------------------- */

/* A caller-provided buffer for a human-readable reason that goes with an
 * asa_err (e.g. "model.safetensors: tensor 'layers.3.attn.q_proj.weight':
 * shape [10, 256] != expected [384, 256]").  buf may be NULL (no message). */
typedef struct asa_errbuf {
    char *buf;
    size_t len;
} asa_errbuf;

/* Formats into eb (if non-NULL and buf non-NULL) and returns err unchanged,
 * so that `return asa_errf(eb, ASA_EFORMAT, "...")` reads naturally. */
int asa_errf(asa_errbuf *eb, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- arena ------------------------------------------------------------ */

typedef struct asa_arena asa_arena;

/* Creates an arena whose first chunk holds chunk_bytes (0 = 16 KiB).
 * Returns NULL when out of memory. */
asa_arena *asa_arena_create(size_t chunk_bytes);
/* Frees every allocation at once.  NULL is a no-op. */
void asa_arena_destroy(asa_arena *a);
/* 16-byte aligned allocation; NULL when out of memory (arena unchanged). */
void *asa_arena_alloc(asa_arena *a, size_t bytes);
/* Copies a NUL-terminated string (or n bytes plus a NUL); NULL on OOM. */
char *asa_arena_strdup(asa_arena *a, const char *s);
char *asa_arena_strndup(asa_arena *a, const char *s, size_t n);
/* Bytes handed out so far (for tests and limits). */
size_t asa_arena_used(const asa_arena *a);

/* ---- small helpers ---------------------------------------------------- */

/* Monotonic clock in seconds. */
double asa_now(void);

/* bf16 <-> f32.  Widening is exact; narrowing rounds to nearest even
 * (NaN stays NaN). */
static inline float asa_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}
static inline uint16_t asa_f32_to_bf16(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    if ((v.u & 0x7f800000u) == 0x7f800000u && (v.u & 0x007fffffu))
        return (uint16_t)((v.u >> 16) | 0x40); /* quiet NaN */
    uint32_t rounding = 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)((v.u + rounding) >> 16);
}

#ifdef __cplusplus
}
#endif
#endif /* ASA_COMMON_H */
