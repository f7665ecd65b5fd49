/*
 * kvcache/kv.c - paged latent KV cache bookkeeping (see kv.h for the
 * contract).
 *
 * Layout of the state:
 *   pool   per class: refcount[num_pages] and a LIFO free stack holding
 *          exactly the pages whose refcount is 0 (page 0 is handed out
 *          first, so tests are deterministic).  The pool also keeps its
 *          live sequences in a doubly linked list so that kv_pool_check can
 *          recount every reference and kv_pool_destroy can free leftovers.
 *   seq    num_tokens (written), resv_end (one past the last reserved
 *          position, >= num_tokens) and one block table per class.  Both
 *          tables have ceil(resv_end / B) entries (the local table has 0
 *          when the model has no local layers, window == 0).  Local entries
 *          of blocks that left the window hold -1; local_lo is the first
 *          local block still held, so that freeing is incremental.
 *
 * Tables grow geometrically (doubling), so kv_seq_alloc touches the host
 * allocator O(log n) times over a sequence's life, never per token.
 *
 * kv_seq_alloc is two-phase: plan (count fresh pages per class and copies,
 * grow table capacity) then apply.  Everything that can fail happens in the
 * plan phase, so a failure leaves the observable state unchanged (a grown
 * table capacity is not observable).
 */
#include "kv.h"

#include <stdlib.h>
#include <string.h>

#define KV_MIN_TABLE_CAP 16

typedef struct kv_class_state {
    int32_t num_pages;
    size_t page_bytes;
    int32_t *refcount; /* [num_pages] */
    int32_t *free_stack; /* [num_pages]; free_stack[0..n_free) are free */
    int32_t n_free;
} kv_class_state;

struct kv_seq {
    kv_seq *prev, *next;   /* the pool's list of live sequences */
    int num_tokens;        /* tokens written (committed) */
    int resv_end;          /* positions [0, resv_end) have pages reserved */
    int local_lo;          /* local blocks < local_lo were released */
    int32_t *table[KV_NCLASS]; /* [cap[c]] page ids; len[c] entries valid */
    int len[KV_NCLASS];
    int cap[KV_NCLASS];
};

struct kv_pool {
    kv_pool_config cfg;
    kv_class_state cls[KV_NCLASS];
    kv_seq *seqs;          /* head of the live list */
    int num_seqs;
};

/* ---- small utilities ---------------------------------------------------- */

static int div_up(int a, int b) { return (a + b - 1) / b; }

/* First local block that position range [lo_pos, ...) can still read when
 * the next token to be written is at position t: the window of token t is
 * [t - w + 1, t]. */
static int local_first_block(const kv_pool *p, int t) {
    int lo = t - p->cfg.window + 1;
    if (lo < 0)
        lo = 0;
    return lo / p->cfg.block_size;
}

static bool has_local(const kv_pool *p) { return p->cfg.window > 0; }

static int32_t page_take(kv_class_state *c) {
    int32_t id = c->free_stack[--c->n_free];
    c->refcount[id] = 1;
    return id;
}

static void page_unref(kv_class_state *c, int32_t id) {
    if (--c->refcount[id] == 0)
        c->free_stack[c->n_free++] = id;
}

static asa_err table_reserve(kv_seq *s, kv_class cls, int need) {
    if (need <= s->cap[cls])
        return ASA_OK;
    int cap = s->cap[cls] ? s->cap[cls] : KV_MIN_TABLE_CAP;
    while (cap < need)
        cap *= 2;
    int32_t *t = realloc(s->table[cls], (size_t)cap * sizeof *t);
    if (!t)
        return ASA_ENOMEM;
    s->table[cls] = t;
    s->cap[cls] = cap;
    return ASA_OK;
}

/* ---- pool --------------------------------------------------------------- */

asa_err kv_pool_create(const kv_pool_config *cfg, kv_pool **out) {
    if (!cfg || !out || cfg->block_size < 1 || cfg->window < 0)
        return ASA_EINVAL;
    for (int c = 0; c < KV_NCLASS; c++)
        if (cfg->num_pages[c] < 0)
            return ASA_EINVAL;

    kv_pool *p = calloc(1, sizeof *p);
    if (!p)
        return ASA_ENOMEM;
    p->cfg = *cfg;
    for (int c = 0; c < KV_NCLASS; c++) {
        kv_class_state *k = &p->cls[c];
        k->num_pages = cfg->num_pages[c];
        k->page_bytes = cfg->page_bytes[c];
        size_t n = k->num_pages > 0 ? (size_t)k->num_pages : 1;
        k->refcount = calloc(n, sizeof *k->refcount);
        k->free_stack = malloc(n * sizeof *k->free_stack);
        if (!k->refcount || !k->free_stack)
            goto fail;
        /* Top of the stack is page 0. */
        for (int32_t i = 0; i < k->num_pages; i++)
            k->free_stack[i] = k->num_pages - 1 - i;
        k->n_free = k->num_pages;
    }
    *out = p;
    return ASA_OK;

fail:
    for (int c = 0; c < KV_NCLASS; c++) {
        free(p->cls[c].refcount);
        free(p->cls[c].free_stack);
    }
    free(p);
    return ASA_ENOMEM;
}

static void seq_free(kv_seq *s) {
    for (int c = 0; c < KV_NCLASS; c++)
        free(s->table[c]);
    free(s);
}

void kv_pool_destroy(kv_pool *p) {
    if (!p)
        return;
    kv_seq *s = p->seqs;
    while (s) {
        kv_seq *next = s->next;
        seq_free(s);
        s = next;
    }
    for (int c = 0; c < KV_NCLASS; c++) {
        free(p->cls[c].refcount);
        free(p->cls[c].free_stack);
    }
    free(p);
}

void kv_pool_stats(const kv_pool *p, kv_stats *st) {
    memset(st, 0, sizeof *st);
    for (int c = 0; c < KV_NCLASS; c++) {
        const kv_class_state *k = &p->cls[c];
        st->total_pages[c] = k->num_pages;
        st->used_pages[c] = k->num_pages - k->n_free;
        st->used_bytes[c] = (size_t)st->used_pages[c] * k->page_bytes;
        st->total_bytes[c] = (size_t)k->num_pages * k->page_bytes;
    }
    st->num_seqs = p->num_seqs;
}

const kv_pool_config *kv_pool_get_config(const kv_pool *p) { return &p->cfg; }

double kv_pool_usage(const kv_pool *p) {
    kv_stats st;
    kv_pool_stats(p, &st);
    double used = 0, total = 0;
    for (int c = 0; c < KV_NCLASS; c++) {
        used += (double)st.used_bytes[c];
        total += (double)st.total_bytes[c];
    }
    if (total > 0)
        return used / total;
    /* No byte sizes given: fall back to the page fraction. */
    for (int c = 0; c < KV_NCLASS; c++) {
        used += st.used_pages[c];
        total += st.total_pages[c];
    }
    return total > 0 ? used / total : 0.0;
}

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            ASA_LOGE("kv", "kv_pool_check: " __VA_ARGS__);                    \
            rc = ASA_EINTERNAL;                                               \
            goto out;                                                         \
        }                                                                     \
    } while (0)

asa_err kv_pool_check(const kv_pool *p) {
    static const char *const cname[KV_NCLASS] = {"global", "local"};
    asa_err rc = ASA_OK;
    int32_t *count[KV_NCLASS] = {NULL, NULL};
    if (!p)
        return ASA_EINVAL;
    for (int c = 0; c < KV_NCLASS; c++) {
        size_t n = p->cls[c].num_pages > 0 ? (size_t)p->cls[c].num_pages : 1;
        count[c] = calloc(n, sizeof(int32_t));
        if (!count[c]) {
            rc = ASA_ENOMEM;
            goto out;
        }
    }
    const int B = p->cfg.block_size;

    /* Walk every live sequence: table shapes, window, reference counts. */
    int nseq = 0;
    const kv_seq *prev = NULL;
    for (const kv_seq *s = p->seqs; s; prev = s, s = s->next) {
        nseq++;
        CHECK(nseq <= p->num_seqs, "sequence list longer than num_seqs %d", p->num_seqs);
        CHECK(s->prev == prev, "sequence list links broken");
        CHECK(s->num_tokens >= 0 && s->resv_end >= s->num_tokens,
              "seq %d: num_tokens %d, reserved up to %d", nseq, s->num_tokens, s->resv_end);
        int want_len = div_up(s->resv_end, B);
        CHECK(s->len[KV_GLOBAL] == want_len, "seq %d: global table has %d blocks, want %d",
              nseq, s->len[KV_GLOBAL], want_len);
        int want_local = has_local(p) ? want_len : 0;
        CHECK(s->len[KV_LOCAL] == want_local, "seq %d: local table has %d blocks, want %d",
              nseq, s->len[KV_LOCAL], want_local);
        int lo = has_local(p) ? local_first_block(p, s->num_tokens) : 0;
        CHECK(s->local_lo == lo, "seq %d: local_lo %d, window starts at block %d", nseq,
              s->local_lo, lo);
        for (int c = 0; c < KV_NCLASS; c++) {
            for (int b = 0; b < s->len[c]; b++) {
                int32_t id = s->table[c][b];
                bool want_page = c == KV_GLOBAL || b >= lo;
                if (!want_page) {
                    CHECK(id == -1, "seq %d: local block %d (window starts at block %d) "
                          "still holds page %d", nseq, b, lo, id);
                    continue;
                }
                CHECK(id >= 0 && id < p->cls[c].num_pages,
                      "seq %d: %s block %d holds bad page id %d", nseq, cname[c], b, id);
                count[c][id]++;
            }
        }
    }
    CHECK(nseq == p->num_seqs, "%d sequences listed, num_seqs %d", nseq, p->num_seqs);

    /* Reference counts and free stacks. */
    for (int c = 0; c < KV_NCLASS; c++) {
        const kv_class_state *k = &p->cls[c];
        CHECK(k->n_free >= 0 && k->n_free <= k->num_pages, "%s: n_free %d of %d", cname[c],
              k->n_free, k->num_pages);
        for (int32_t i = 0; i < k->num_pages; i++)
            CHECK(k->refcount[i] == count[c][i], "%s page %d: refcount %d, referenced %d times",
                  cname[c], i, k->refcount[i], count[c][i]);
        int32_t nzero = 0;
        for (int32_t i = 0; i < k->num_pages; i++)
            nzero += k->refcount[i] == 0;
        CHECK(nzero == k->n_free, "%s: %d pages with refcount 0, %d on the free list",
              cname[c], nzero, k->n_free);
        /* Reuse count[] to detect duplicates on the free list. */
        memset(count[c], 0, (size_t)k->num_pages * sizeof(int32_t));
        for (int32_t i = 0; i < k->n_free; i++) {
            int32_t id = k->free_stack[i];
            CHECK(id >= 0 && id < k->num_pages, "%s: free list holds bad id %d", cname[c], id);
            CHECK(k->refcount[id] == 0, "%s: free page %d has refcount %d", cname[c], id,
                  k->refcount[id]);
            CHECK(count[c][id]++ == 0, "%s: page %d twice on the free list", cname[c], id);
        }
    }

out:
    for (int c = 0; c < KV_NCLASS; c++)
        free(count[c]);
    return rc;
}
#undef CHECK

/* ---- sequences ---------------------------------------------------------- */

static void seq_link(kv_pool *p, kv_seq *s) {
    s->prev = NULL;
    s->next = p->seqs;
    if (p->seqs)
        p->seqs->prev = s;
    p->seqs = s;
    p->num_seqs++;
}

asa_err kv_seq_create(kv_pool *p, kv_seq **out) {
    if (!p || !out)
        return ASA_EINVAL;
    kv_seq *s = calloc(1, sizeof *s);
    if (!s)
        return ASA_ENOMEM;
    seq_link(p, s);
    *out = s;
    return ASA_OK;
}

void kv_seq_destroy(kv_pool *p, kv_seq *s) {
    if (!s)
        return;
    for (int c = 0; c < KV_NCLASS; c++)
        for (int b = 0; b < s->len[c]; b++)
            if (s->table[c][b] >= 0)
                page_unref(&p->cls[c], s->table[c][b]);
    if (s->prev)
        s->prev->next = s->next;
    else
        p->seqs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    p->num_seqs--;
    seq_free(s);
}

/* The plan of an allocation: which blocks of each class need a fresh page
 * ([lo, hi] with the rule in the loop) and how many pages/copies in all. */
typedef struct alloc_plan {
    int lo[KV_NCLASS], hi[KV_NCLASS]; /* block range to visit, hi < lo: none */
    int wlo, whi;                     /* blocks written by the new tokens */
    int32_t fresh[KV_NCLASS];         /* pages to take */
    int copies;                       /* of which copy-on-write */
} alloc_plan;

/* A block b in [lo, hi] needs a page when it has none yet, and a copy when it
 * has a shared one and is written. */
static void plan_alloc(const kv_pool *p, const kv_seq *s, int n_new, alloc_plan *pl) {
    const int B = p->cfg.block_size;
    const int t = s->num_tokens;
    memset(pl, 0, sizeof *pl);
    pl->wlo = t / B;
    pl->whi = (t + n_new - 1) / B;
    pl->lo[KV_GLOBAL] = pl->wlo; /* blocks before the write are all present */
    pl->hi[KV_GLOBAL] = pl->whi;
    if (has_local(p)) {
        pl->lo[KV_LOCAL] = local_first_block(p, t);
        pl->hi[KV_LOCAL] = pl->whi;
    } else {
        pl->lo[KV_LOCAL] = 0;
        pl->hi[KV_LOCAL] = -1;
    }
    for (int c = 0; c < KV_NCLASS; c++) {
        for (int b = pl->lo[c]; b <= pl->hi[c]; b++) {
            int32_t id = b < s->len[c] ? s->table[c][b] : -1;
            if (id < 0) {
                pl->fresh[c]++;
            } else if (b >= pl->wlo && p->cls[c].refcount[id] > 1) {
                pl->fresh[c]++;
                pl->copies++;
            }
        }
    }
}

void kv_seq_pages_needed(const kv_pool *p, const kv_seq *s, int n_new,
                         int32_t needed[KV_NCLASS]) {
    needed[KV_GLOBAL] = needed[KV_LOCAL] = 0;
    if (!p || !s || n_new <= 0)
        return;
    alloc_plan pl;
    plan_alloc(p, s, n_new, &pl);
    for (int c = 0; c < KV_NCLASS; c++)
        needed[c] = pl.fresh[c];
}

asa_err kv_seq_alloc(kv_pool *p, kv_seq *s, int n_new, kv_copy *copies,
                     int max_copies, int *n_copies) {
    if (!p || !s || n_new < 0 || (max_copies > 0 && !copies) || !n_copies)
        return ASA_EINVAL;
    if (n_new == 0)
        return ASA_OK;
    if (n_new > INT32_MAX - s->num_tokens)
        return ASA_EINVAL;

    /* Plan: everything that can fail happens here. */
    alloc_plan pl;
    plan_alloc(p, s, n_new, &pl);
    if (pl.copies > max_copies - *n_copies)
        return ASA_EINVAL;
    for (int c = 0; c < KV_NCLASS; c++)
        if (pl.fresh[c] > p->cls[c].n_free)
            return ASA_ENOSPACE;
    const int new_end = s->num_tokens + n_new;
    const int new_len = div_up(new_end > s->resv_end ? new_end : s->resv_end,
                               p->cfg.block_size);
    asa_err rc = table_reserve(s, KV_GLOBAL, new_len);
    if (rc == ASA_OK && has_local(p))
        rc = table_reserve(s, KV_LOCAL, new_len);
    if (rc != ASA_OK)
        return rc;

    /* Apply. */
    for (int c = 0; c < KV_NCLASS; c++) {
        if (c == KV_LOCAL && !has_local(p))
            continue;
        kv_class_state *k = &p->cls[c];
        for (int b = s->len[c]; b < new_len; b++)
            s->table[c][b] = -1;
        s->len[c] = new_len;
        for (int b = pl.lo[c]; b <= pl.hi[c]; b++) {
            int32_t id = s->table[c][b];
            if (id < 0) {
                s->table[c][b] = page_take(k);
            } else if (b >= pl.wlo && k->refcount[id] > 1) {
                int32_t dst = page_take(k);
                page_unref(k, id);
                copies[(*n_copies)++] = (kv_copy){(kv_class)c, id, dst};
                s->table[c][b] = dst;
            }
        }
    }
    if (new_end > s->resv_end)
        s->resv_end = new_end;
    return ASA_OK;
}

/* Releases local pages of blocks that end before the window of the next
 * token (position num_tokens). */
static void release_local(kv_pool *p, kv_seq *s) {
    if (!has_local(p))
        return;
    int lo = local_first_block(p, s->num_tokens);
    if (lo > s->len[KV_LOCAL])
        lo = s->len[KV_LOCAL];
    for (int b = s->local_lo; b < lo; b++) {
        if (s->table[KV_LOCAL][b] >= 0) {
            page_unref(&p->cls[KV_LOCAL], s->table[KV_LOCAL][b]);
            s->table[KV_LOCAL][b] = -1;
        }
    }
    if (lo > s->local_lo)
        s->local_lo = lo;
}

void kv_seq_commit(kv_pool *p, kv_seq *s, int n) {
    if (!p || !s || n <= 0)
        return;
    if (n > s->resv_end - s->num_tokens)
        n = s->resv_end - s->num_tokens; /* never past the reservation */
    s->num_tokens += n;
    release_local(p, s);
}

asa_err kv_seq_fork(kv_pool *p, const kv_seq *src, kv_seq **out) {
    if (!p || !src || !out)
        return ASA_EINVAL;
    /* A pending reservation would let src write into a page that the fork
     * now shares, bypassing copy-on-write. */
    if (src->resv_end != src->num_tokens)
        return ASA_EINVAL;
    kv_seq *s = calloc(1, sizeof *s);
    if (!s)
        return ASA_ENOMEM;
    for (int c = 0; c < KV_NCLASS; c++) {
        if (src->len[c] == 0)
            continue;
        if (table_reserve(s, (kv_class)c, src->len[c]) != ASA_OK) {
            seq_free(s);
            return ASA_ENOMEM;
        }
        memcpy(s->table[c], src->table[c], (size_t)src->len[c] * sizeof(int32_t));
        s->len[c] = src->len[c];
    }
    s->num_tokens = src->num_tokens;
    s->resv_end = src->resv_end;
    s->local_lo = src->local_lo;
    for (int c = 0; c < KV_NCLASS; c++)
        for (int b = 0; b < s->len[c]; b++)
            if (s->table[c][b] >= 0)
                p->cls[c].refcount[s->table[c][b]]++;
    seq_link(p, s);
    *out = s;
    return ASA_OK;
}

int kv_seq_num_tokens(const kv_seq *s) { return s ? s->num_tokens : 0; }

const int32_t *kv_seq_table(const kv_seq *s, kv_class cls, int *n_blocks) {
    if (!s || cls < 0 || cls >= KV_NCLASS) {
        if (n_blocks)
            *n_blocks = 0;
        return NULL;
    }
    if (n_blocks)
        *n_blocks = s->len[cls];
    return s->table[cls];
}
