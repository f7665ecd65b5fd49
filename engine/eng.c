/*
 * engine/eng.c - the backend-independent part of the engine: options, the
 * kv_pool, sequence slots and complete validation of a step's batch.  The
 * compute lives behind the backend vtable (backend.h).
 */
#include "backend.h"

#ifdef ASA_HAVE_CUDA
extern const eng_backend_ops eng_cuda_backend;
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

void eng_options_default(eng_options *o) {
    memset(o, 0, sizeof *o);
    o->backend = ENG_BACKEND_CPU;
    o->max_seqs = 8;
    o->max_batch_tokens = 2048;
    o->max_seq_len = 0;
    o->kv_bytes = (size_t)256 << 20;
    o->threads = 0;
}

static int eng__cdiv(int a, int b) { return (a + b - 1) / b; }

void eng_dims_init(const eng_config *k, int max_seq_len, eng_dims *o) {
    memset(o, 0, sizeof *o);
    o->d = k->hidden_size;
    o->H = k->num_heads;
    o->dh = k->head_dim;
    o->dv = k->v_head_dim;
    o->dR = k->rope_dim;
    o->half = k->rope_dim / 2;
    o->F = k->intermediate_size;
    o->V = k->vocab_size;
    o->L = k->num_hidden_layers;
    o->nq = o->H * (o->dh + o->dR);
    o->B = k->global.block_size;
    o->w = k->local.window;
    o->top_n = k->global.top_n;
    o->share = k->global.selection_share;
    o->init_b = k->global.init_blocks;
    o->local_b = k->global.local_blocks;
    o->Gg = k->global.attn.latent_heads;
    o->dgg = k->global.attn.latent_dim;
    o->Sg = o->Gg * o->dgg + o->dR;
    o->Gl = k->local.attn.latent_heads;
    o->dgl = k->local.attn.latent_dim;
    o->Sl = o->Gl * o->dgl + o->dR;
    o->Lg = k->n_global_layers > 0 ? k->n_global_layers : 1;
    o->dg_max = o->dgg > o->dgl ? o->dgg : o->dgl;
    o->nb_max = eng__cdiv(max_seq_len, o->B);
    o->scale = (float)(1.0 / sqrt((double)(o->dh + o->dR)));
    o->eps = (float)k->rms_norm_eps;
}

/* Page counts from kv_bytes: local pages get what the windows can ever hold
 * at once (every slot's window plus the largest step's new tokens), global
 * pages get the rest. */
static asa_err eng__derive_pages(eng *e, asa_errbuf *eb) {
    const eng_config *c = &e->m->cfg;
    int B = c->global.block_size;
    int32_t nl = 0, ng;
    if (c->n_local_layers > 0)
        nl = e->opt.max_seqs * (eng__cdiv(c->local.window, B) + 2) +
             eng__cdiv(e->opt.max_batch_tokens, B);
    size_t lbytes = (size_t)nl * e->page_bytes[KV_LOCAL];
    if (e->page_bytes[KV_GLOBAL] == 0) {
        ng = e->opt.max_seqs * (eng__cdiv(e->opt.max_seq_len, B) + 1);
    } else {
        if (lbytes >= e->opt.kv_bytes)
            return asa_errf(eb, ASA_EINVAL,
                            "kv_bytes %zu too small: local windows alone need %zu",
                            e->opt.kv_bytes, lbytes);
        size_t g = (e->opt.kv_bytes - lbytes) / e->page_bytes[KV_GLOBAL];
        if (g > INT32_MAX / 2)
            g = INT32_MAX / 2;
        ng = (int32_t)g;
    }
    if (ng < 1)
        return asa_errf(eb, ASA_EINVAL, "kv_bytes %zu holds no global page (%zu bytes)",
                        e->opt.kv_bytes, e->page_bytes[KV_GLOBAL]);
    e->num_pages[KV_GLOBAL] = ng;
    e->num_pages[KV_LOCAL] = nl;
    return ASA_OK;
}

asa_err eng_create(const eng_model *m, const eng_options *opt, eng **out,
                   asa_errbuf *eb) {
    if (!m || !out)
        return asa_errf(eb, ASA_EINVAL, "eng_create: NULL model or out");
    eng_options def;
    if (!opt) {
        eng_options_default(&def);
        opt = &def;
    }
    if (opt->max_seqs < 1 || opt->max_batch_tokens < 1 || opt->max_seq_len < 0 ||
        opt->num_pages[KV_GLOBAL] < 0 || opt->num_pages[KV_LOCAL] < 0)
        return asa_errf(eb, ASA_EINVAL,
                        "eng_create: max_seqs and max_batch_tokens must be >= 1, "
                        "max_seq_len and num_pages >= 0");
    const eng_backend_ops *ops = NULL;
    switch (opt->backend) {
    case ENG_BACKEND_CPU:
        ops = &eng_cpu_backend;
        break;
    case ENG_BACKEND_CUDA:
#ifdef ASA_HAVE_CUDA
        ops = &eng_cuda_backend; /* engine/cuda.c */
        break;
#else
        return asa_errf(eb, ASA_EUNSUPPORTED, "the CUDA backend is not built");
#endif
    default:
        return asa_errf(eb, ASA_EINVAL, "unknown backend %d", (int)opt->backend);
    }

    asa_err err = ASA_ENOMEM;
    eng *e = calloc(1, sizeof *e);
    if (!e)
        return asa_errf(eb, ASA_ENOMEM, "eng_create: out of memory");
    e->m = m;
    e->opt = *opt;
    e->ops = ops;
    if (e->opt.max_seq_len == 0)
        e->opt.max_seq_len = m->cfg.max_position_embeddings;
    ops->page_bytes(m, e->page_bytes);
    if (opt->num_pages[KV_GLOBAL] == 0 && opt->num_pages[KV_LOCAL] == 0) {
        if ((err = eng__derive_pages(e, eb)) != ASA_OK)
            goto fail;
    } else {
        e->num_pages[KV_GLOBAL] = opt->num_pages[KV_GLOBAL];
        e->num_pages[KV_LOCAL] = opt->num_pages[KV_LOCAL];
    }
    e->slot_open = calloc((size_t)opt->max_seqs, 1);
    e->slot_mark = calloc((size_t)opt->max_seqs, sizeof *e->slot_mark);
    if (!e->slot_open || !e->slot_mark) {
        err = asa_errf(eb, ASA_ENOMEM, "eng_create: out of memory");
        goto fail;
    }
    kv_pool_config pc = {
        .block_size = m->cfg.global.block_size,
        .window = m->cfg.n_local_layers > 0 ? m->cfg.local.window : 0,
        .num_pages = {e->num_pages[KV_GLOBAL], e->num_pages[KV_LOCAL]},
        .page_bytes = {e->page_bytes[KV_GLOBAL], e->page_bytes[KV_LOCAL]},
    };
    if ((err = kv_pool_create(&pc, &e->pool)) != ASA_OK) {
        asa_errf(eb, err, "kv_pool_create failed: %s", asa_strerror(err));
        goto fail;
    }
    if ((err = ops->create(e, &e->be, eb)) != ASA_OK)
        goto fail;
    *out = e;
    return ASA_OK;
fail:
    kv_pool_destroy(e->pool);
    free(e->slot_mark);
    free(e->slot_open);
    free(e);
    return err;
}

void eng_destroy(eng *e) {
    if (!e)
        return;
    if (e->be)
        e->ops->destroy(e->be);
    kv_pool_destroy(e->pool);
    free(e->slot_mark);
    free(e->slot_open);
    free(e);
}

kv_pool *eng_kv_pool(eng *e) { return e->pool; }
const eng_model *eng_get_model(const eng *e) { return e->m; }

asa_err eng_seq_open(eng *e, int *slot) {
    if (!e || !slot)
        return ASA_EINVAL;
    for (int i = 0; i < e->opt.max_seqs; i++)
        if (!e->slot_open[i]) {
            e->slot_open[i] = 1;
            e->ops->seq_reset(e->be, i);
            *slot = i;
            return ASA_OK;
        }
    return ASA_ENOSPACE;
}

static bool eng__slot_ok(const eng *e, int s) {
    return s >= 0 && s < e->opt.max_seqs && e->slot_open[s];
}

asa_err eng_seq_fork(eng *e, int src_slot, int dst_slot) {
    if (!e || !eng__slot_ok(e, src_slot) || !eng__slot_ok(e, dst_slot))
        return ASA_EINVAL;
    if (src_slot != dst_slot)
        e->ops->seq_copy(e->be, src_slot, dst_slot);
    return ASA_OK;
}

void eng_seq_close(eng *e, int slot) {
    if (!e || slot < 0 || slot >= e->opt.max_seqs)
        return;
    e->slot_open[slot] = 0;
    e->ops->seq_reset(e->be, slot);
}

int eng__seq_sets(eng *e, int slot, int ti, int g, int32_t *out) {
    const eng_config *c = &e->m->cfg;
    if (!eng__slot_ok(e, slot) || ti < 0 || ti >= c->n_global_layers || g < 0 ||
        g >= c->global.attn.latent_heads || !e->ops->seq_sets)
        return -1;
    return e->ops->seq_sets(e->be, slot, ti, g, out);
}

int eng__seq_anchor(eng *e, int slot) {
    return eng__slot_ok(e, slot) ? e->ops->seq_anchor(e->be, slot) : -1;
}

/* The sampler's documented ranges (sample.h), checked before anything is
 * computed so that a bad request cannot fail a step half-way. */
static bool eng__sampling_ok(const eng_seq_step *s, int V) {
    const eng_sampling *sp = s->sp;
    if (!(sp->temperature >= 0) || !(sp->top_p > 0 && sp->top_p <= 1) ||
        !(sp->min_p >= 0 && sp->min_p <= 1) || !(sp->repetition_penalty > 0) ||
        !isfinite(sp->presence_penalty) || !isfinite(sp->frequency_penalty) ||
        sp->n_logprobs < 0 || sp->n_logprobs > ENG_MAX_LOGPROBS || sp->n_bias < 0 ||
        (sp->n_bias > 0 && (!sp->bias_ids || !sp->bias_vals)))
        return false;
    for (int i = 0; i < sp->n_bias; i++)
        if (sp->bias_ids[i] < 0 || sp->bias_ids[i] >= V || isnan(sp->bias_vals[i]))
            return false;
    for (int i = 0; i < s->n_prompt; i++)
        if (s->prompt[i] < 0 || s->prompt[i] >= V)
            return false;
    for (int i = 0; i < s->n_output; i++)
        if (s->output[i] < 0 || s->output[i] >= V)
            return false;
    return true;
}

/* Every check a backend relies on; nothing is computed when one fails. */
static asa_err eng__validate(eng *e, const eng_batch *b) {
    const eng_config *c = &e->m->cfg;
    const int B = c->global.block_size;
    if (b->n_seqs < 0 || (b->n_seqs > 0 && !b->seqs) || b->n_copies < 0 ||
        (b->n_copies > 0 && !b->copies))
        return ASA_EINVAL;
    for (int i = 0; i < b->n_copies; i++) {
        const kv_copy *cp = &b->copies[i];
        if ((cp->cls != KV_GLOBAL && cp->cls != KV_LOCAL) || cp->src < 0 ||
            cp->dst < 0 || cp->src >= e->num_pages[cp->cls] ||
            cp->dst >= e->num_pages[cp->cls])
            return ASA_EINVAL;
    }
    memset(e->slot_mark, 0, (size_t)e->opt.max_seqs * sizeof *e->slot_mark);
    long total = 0;
    for (int i = 0; i < b->n_seqs; i++) {
        const eng_seq_step *s = &b->seqs[i];
        if (!eng__slot_ok(e, s->slot) || e->slot_mark[s->slot])
            return ASA_EINVAL;
        e->slot_mark[s->slot] = 1;
        if (!s->tokens || s->n_tokens < 1 || s->pos0 < 0 || !s->kv ||
            (s->sample && !s->sp) || (s->n_prompt > 0 && !s->prompt) ||
            (s->n_output > 0 && !s->output) || s->n_prompt < 0 || s->n_output < 0)
            return ASA_EINVAL;
        if (s->sample && !eng__sampling_ok(s, c->vocab_size))
            return ASA_EINVAL;
        if ((long)s->pos0 + s->n_tokens > e->opt.max_seq_len)
            return ASA_EINVAL;
        total += s->n_tokens;
        if (total > e->opt.max_batch_tokens)
            return ASA_EINVAL;
        for (int k = 0; k < s->n_tokens; k++)
            if (s->tokens[k] < 0 || s->tokens[k] >= c->vocab_size)
                return ASA_EINVAL;
        if (kv_seq_num_tokens(s->kv) != s->pos0)
            return ASA_EINVAL;
        int last = s->pos0 + s->n_tokens - 1;
        int nb = 0;
        const int32_t *gt = kv_seq_table(s->kv, KV_GLOBAL, &nb);
        if (c->n_global_layers > 0) {
            /* selection may read any block up to the last */
            if (!gt || nb <= last / B)
                return ASA_EINVAL;
            for (int j = 0; j <= last / B; j++)
                if (gt[j] < 0 || gt[j] >= e->num_pages[KV_GLOBAL])
                    return ASA_EINVAL;
            int sh = c->global.selection_share;
            if (s->pos0 % sh != 0 &&
                e->ops->seq_anchor(e->be, s->slot) != sh * (s->pos0 / sh))
                return ASA_EINVAL; /* the stored sets are not this anchor's */
        }
        if (c->n_local_layers > 0) {
            const int32_t *lt = kv_seq_table(s->kv, KV_LOCAL, &nb);
            int first = s->pos0 - c->local.window + 1;
            if (first < 0)
                first = 0;
            if (!lt || nb <= last / B)
                return ASA_EINVAL;
            for (int j = first / B; j <= last / B; j++)
                if (lt[j] < 0 || lt[j] >= e->num_pages[KV_LOCAL])
                    return ASA_EINVAL;
        }
    }
    return ASA_OK;
}

asa_err eng_step(eng *e, const eng_batch *b, eng_seq_result *results) {
    if (!e || !b || (b->n_seqs > 0 && !results))
        return ASA_EINVAL;
    if (e->dead)
        return ASA_EDEAD;
    asa_err err = eng__validate(e, b);
    if (err != ASA_OK)
        return err;
    for (int i = 0; i < b->n_seqs; i++) {
        eng_seq_result *r = &results[i];
        memset(r, 0, sizeof *r);
        r->token = -1;
    }
    return e->ops->step(e->be, b, results);
}
