/*
 * kvcache/kv.h - paged latent KV cache: block pool and per-sequence block
 * tables.  Host bookkeeping only.
 *
 * A page holds the cache entries of `block_size` consecutive tokens (one
 * selection block, ASA-SPEC section 4).  There are two page classes:
 *
 *   KV_GLOBAL  one page = block b of a sequence for *every* global layer:
 *              per token and layer the G*d_g latents and the d_R rope key,
 *              plus the block's compressed entry once the block completes.
 *              A sequence keeps a global page for every block it has
 *              touched (selection may pick any block).
 *   KV_LOCAL   one page = block b for every local layer.  A sequence keeps
 *              only the pages that intersect its sliding window; pages that
 *              leave the window go back to the pool (kv_seq_commit).
 *
 * Page ids are int32 in [0, num_pages[class]).  The memory behind a page
 * belongs to the engine backend (f32 on the CPU engine, bf16 on the CUDA
 * engine), which tells the pool how many bytes a page has so that the pool
 * can report byte counts.  Pages are reference-counted so that sequences can
 * share them (kv_seq_fork now, prefix caching later); a shared page that is
 * about to be written is copied first (copy-on-write, reported to the caller
 * as a list of page copies the backend must perform before the step).
 *
 * Threading: a pool and its sequences belong to one thread (the engine
 * thread).  No function here blocks or logs on the hot path.
 *
 * Return codes: 0 on success; ASA_ENOSPACE when the pool lacks free pages
 * (state unchanged); ASA_EINVAL for bad arguments (state unchanged);
 * ASA_ENOMEM when host memory runs out (state unchanged).
 */
#ifndef ASA_KV_H
#define ASA_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "asa.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kv_class { KV_GLOBAL = 0, KV_LOCAL = 1, KV_NCLASS = 2 } kv_class;

typedef struct kv_pool_config {
    int block_size;          /* tokens per page, >= 1 (= global.block_size) */
    int window;              /* local window in tokens (local.window); 0 when
                                the model has no local layers */
    int32_t num_pages[KV_NCLASS]; /* capacity of each class, >= 0 */
    size_t page_bytes[KV_NCLASS]; /* bytes behind one page (backend layout),
                                     used only for accounting */
} kv_pool_config;

typedef struct kv_pool kv_pool;
typedef struct kv_seq kv_seq;

/* A page copy the backend must perform before running the step that follows
 * the kv_seq_alloc that produced it (copy-on-write of a shared page). */
typedef struct kv_copy {
    kv_class cls;
    int32_t src; /* page id to read */
    int32_t dst; /* freshly allocated page id to write */
} kv_copy;

typedef struct kv_stats {
    int32_t total_pages[KV_NCLASS];
    int32_t used_pages[KV_NCLASS]; /* pages with refcount > 0 */
    size_t used_bytes[KV_NCLASS];  /* used_pages * page_bytes */
    size_t total_bytes[KV_NCLASS];
    int num_seqs;                  /* live kv_seq objects */
} kv_stats;

/* Creates a pool.  *out is set only on success.  Caller frees with
 * kv_pool_destroy, after destroying every sequence of the pool. */
asa_err kv_pool_create(const kv_pool_config *cfg, kv_pool **out);
/* Frees the pool (and any sequences still alive).  NULL is a no-op. */
void kv_pool_destroy(kv_pool *p);
void kv_pool_stats(const kv_pool *p, kv_stats *st);
/* The configuration the pool was created with (borrowed, lives as long as
 * the pool).  Added for admission control (block_size, window). */
const kv_pool_config *kv_pool_get_config(const kv_pool *p);
/* Fraction of pages in use over both classes weighted by bytes, in [0, 1]. */
double kv_pool_usage(const kv_pool *p);
/* Invariant walker: every page's refcount equals the number of table entries
 * that reference it, free lists hold exactly the pages with refcount 0, no
 * duplicates, local tables hold no page outside the window, table lengths
 * match token counts.  Returns 0 or ASA_EINTERNAL (and logs what broke). */
asa_err kv_pool_check(const kv_pool *p);

/* An empty sequence (no tokens, no pages).  Owned by the caller; destroy it
 * with kv_seq_destroy. */
asa_err kv_seq_create(kv_pool *p, kv_seq **out);
/* Releases the sequence's references to its pages and frees it.  NULL is a
 * no-op. */
void kv_seq_destroy(kv_pool *p, kv_seq *s);

/* Makes room for the next n_new tokens, i.e. positions
 * [num_tokens, num_tokens + n_new): global pages for every block up to the
 * last new token; local pages for every block that intersects
 * [max(0, num_tokens - window + 1), num_tokens + n_new - 1].  A block that
 * will be written and whose page is shared is replaced by a fresh page and
 * the copy is appended to copies[] (capacity max_copies; *n_copies is
 * incremented).  All-or-nothing: ASA_ENOSPACE (or ASA_ENOMEM, or ASA_EINVAL
 * when max_copies is too small) leaves pool and sequence unchanged.
 * Calling it again before kv_seq_commit with a larger n_new extends the
 * reservation (a smaller one keeps it).  n_new == 0 is a no-op; n_new < 0
 * is ASA_EINVAL.  *n_copies is only incremented, never reset.  With
 * window == 0 no local pages are ever taken (the local table stays empty). */
asa_err kv_seq_alloc(kv_pool *p, kv_seq *s, int n_new, kv_copy *copies,
                     int max_copies, int *n_copies);
/* Pages kv_seq_alloc would need for n_new more tokens (per class), without
 * allocating.  For admission control. */
void kv_seq_pages_needed(const kv_pool *p, const kv_seq *s, int n_new,
                         int32_t needed[KV_NCLASS]);
/* Records that n tokens (<= the reservation) were written by the step:
 * num_tokens += n.  Then frees local pages that no future token can read
 * (blocks entirely before num_tokens - window + 1).  n beyond the
 * reservation is clamped to it; n <= 0 is a no-op.  Pages reserved but not
 * committed stay reserved for the next step. */
void kv_seq_commit(kv_pool *p, kv_seq *s, int n);

/* A new sequence sharing all of src's pages (refcounts incremented) and its
 * token count.  Later writes into shared pages copy first (see alloc).
 * src must have no uncommitted reservation (alloc without the matching
 * commit): that would let src write a now-shared page without a copy, so
 * it is ASA_EINVAL.  ASA_ENOMEM on host memory; *out set only on success. */
asa_err kv_seq_fork(kv_pool *p, const kv_seq *src, kv_seq **out);

/* Tokens written so far. */
int kv_seq_num_tokens(const kv_seq *s);
/* Block table of a class, indexed by logical block b = position / block_size;
 * entries hold page ids, or -1 for local blocks that left the window.
 * *n_blocks receives the table length (blocks reserved so far).  Borrowed:
 * valid until the next alloc/commit/destroy of this sequence. */
const int32_t *kv_seq_table(const kv_seq *s, kv_class cls, int *n_blocks);

#ifdef __cplusplus
}
#endif
#endif /* ASA_KV_H */
