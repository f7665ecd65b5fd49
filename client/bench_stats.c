/* client/bench_stats.c - random numbers, send schedule, percentiles, the
 * summary of a run, goodput SLOs and /metrics parsing. */
#define _GNU_SOURCE
#include "bench.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- rng: xoshiro256** seeded through splitmix64 ------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void bench_rng_seed(bench_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t bench_rng_next(bench_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double bench_rng_uniform(bench_rng *r) {
    return (double)(bench_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

int64_t bench_rng_int(bench_rng *r, int64_t lo, int64_t hi) {
    if (hi <= lo)
        return lo;
    uint64_t span = (uint64_t)(hi - lo) + 1;
    return lo + (int64_t)(bench_rng_next(r) % span);
}

static double rng_normal(bench_rng *r) {
    /* Marsaglia polar method; the second value is thrown away for simplicity. */
    double u, v, s;
    do {
        u = 2.0 * bench_rng_uniform(r) - 1.0;
        v = 2.0 * bench_rng_uniform(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    return u * sqrt(-2.0 * log(s) / s);
}

double bench_rng_gamma(bench_rng *r, double k, double theta) {
    /* Marsaglia & Tsang (2000); shape < 1 through the boost
     * Gamma(k) = Gamma(k + 1) * U^(1/k). */
    if (k < 1.0) {
        double u = bench_rng_uniform(r);
        while (u == 0.0)
            u = bench_rng_uniform(r);
        return bench_rng_gamma(r, k + 1.0, theta) * pow(u, 1.0 / k);
    }
    double d = k - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = rng_normal(r), v = 1.0 + c * x;
        if (v <= 0.0)
            continue;
        v = v * v * v;
        double u = bench_rng_uniform(r);
        if (u < 1.0 - 0.0331 * x * x * x * x)
            return d * v * theta;
        if (u > 0.0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v)))
            return d * v * theta;
    }
}

/* ---- send schedule ------------------------------------------------------ */

double bench_schedule_gap(double rate, double burstiness, bench_rng *r) {
    if (!(rate > 0) || isinf(rate))
        return 0.0;
    if (isinf(burstiness))
        return 1.0 / rate;
    return bench_rng_gamma(r, burstiness, 1.0 / (rate * burstiness));
}

int bench_schedule(size_t n, double rate, double burstiness, bench_rng *r,
                   double *out) {
    if (!(burstiness > 0))
        return ASA_EINVAL;
    double t = 0.0;
    for (size_t i = 0; i < n; i++) {
        t += bench_schedule_gap(rate, burstiness, r);
        out[i] = t;
    }
    /* Rescale so the last request goes out at exactly n / rate: the sum of
     * n random gaps is off by a percent or two, which would otherwise move
     * the throughput from seed to seed. */
    if (n > 0 && t > 0 && rate > 0 && !isinf(rate)) {
        double f = ((double)n / rate) / t;
        for (size_t i = 0; i < n; i++)
            out[i] *= f;
    }
    return ASA_OK;
}

/* ---- results ------------------------------------------------------------ */

int bench_result_push_itl(bench_result *r, double gap) {
    if (r->n_itl == r->cap_itl) {
        size_t nc = r->cap_itl ? r->cap_itl * 2 : 64;
        double *nv = realloc(r->itl, nc * sizeof *nv);
        if (!nv)
            return ASA_ENOMEM;
        r->itl = nv;
        r->cap_itl = nc;
    }
    r->itl[r->n_itl++] = gap;
    return ASA_OK;
}

void bench_result_deinit(bench_result *r) {
    if (!r)
        return;
    free(r->itl);
    free(r->error);
    r->itl = NULL;
    r->error = NULL;
    r->n_itl = r->cap_itl = 0;
}

/* ---- distributions ------------------------------------------------------ */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_percentile_sorted(const double *v, size_t n, double p) {
    if (n == 0)
        return 0.0;
    if (p <= 0)
        return v[0];
    if (p >= 100)
        return v[n - 1];
    double rank = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(rank);
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    double frac = rank - (double)lo;
    return v[lo] + (v[hi] - v[lo]) * frac;
}

void bench_dist_compute(double *v, size_t n, const double *pcts, size_t n_pcts,
                        bench_dist *out) {
    memset(out, 0, sizeof *out);
    if (n == 0)
        return;
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    double mean = sum / (double)n, ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (v[i] - mean) * (v[i] - mean);
    out->mean_ms = mean * 1000.0;
    out->std_ms = sqrt(ss / (double)n) * 1000.0;
    out->median_ms = bench_percentile_sorted(v, n, 50.0) * 1000.0;
    for (size_t i = 0; i < n_pcts && i < BENCH_MAX_PCTS; i++)
        out->pct_ms[i] = bench_percentile_sorted(v, n, pcts[i]) * 1000.0;
}

/* ---- goodput ------------------------------------------------------------ */

int bench_goodput_parse(bench_goodput *g, const char *s, asa_errbuf *eb) {
    if (!g->enabled)
        g->ttft_ms = g->tpot_ms = g->e2el_ms = -1;
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ' ' && *e != ',')
            e++;
        char pair[64];
        size_t l = (size_t)(e - p);
        if (l >= sizeof pair)
            return asa_errf(eb, ASA_EINVAL, "--goodput: '%.*s' is too long", (int)l, p);
        memcpy(pair, p, l);
        pair[l] = '\0';
        char *colon = strchr(pair, ':');
        if (!colon)
            return asa_errf(eb, ASA_EINVAL,
                            "--goodput: '%s' is not KEY:MS (keys ttft, tpot, e2el)", pair);
        *colon = '\0';
        char *end;
        double v = strtod(colon + 1, &end);
        if (end == colon + 1 || *end || !(v >= 0))
            return asa_errf(eb, ASA_EINVAL, "--goodput: bad value for %s: '%s'", pair,
                            colon + 1);
        if (strcmp(pair, "ttft") == 0)
            g->ttft_ms = v;
        else if (strcmp(pair, "tpot") == 0)
            g->tpot_ms = v;
        else if (strcmp(pair, "e2el") == 0)
            g->e2el_ms = v;
        else
            return asa_errf(eb, ASA_EINVAL,
                            "--goodput: unknown metric '%s' (use ttft, tpot, e2el)", pair);
        g->enabled = 1;
        p = e;
    }
    return ASA_OK;
}

/* ---- summary ------------------------------------------------------------ */

typedef struct ev {
    double t;
    int d;
} ev;

static int cmp_ev(const void *a, const void *b) {
    const ev *x = a, *y = b;
    if (x->t != y->t)
        return (x->t > y->t) - (x->t < y->t);
    return x->d - y->d; /* departures (-1) before arrivals at the same time */
}

int bench_summarize(const bench_result *res, size_t n, double duration,
                    const double *pcts, size_t n_pcts, const bench_goodput *g,
                    bench_summary *out) {
    memset(out, 0, sizeof *out);
    if (n_pcts > BENCH_MAX_PCTS)
        n_pcts = BENCH_MAX_PCTS;
    out->n_pcts = n_pcts;
    memcpy(out->pcts, pcts, n_pcts * sizeof *pcts);
    out->duration = duration;

    size_t n_itl = 0;
    for (size_t i = 0; i < n; i++)
        if (res[i].success)
            n_itl += res[i].n_itl;
    int rc = ASA_ENOMEM;
    double *ttft = malloc((n + 1) * sizeof *ttft);
    double *tpot = malloc((n + 1) * sizeof *tpot);
    double *e2el = malloc((n + 1) * sizeof *e2el);
    double *itl = malloc((n_itl + 1) * sizeof *itl);
    ev *evs = malloc((2 * n + 1) * sizeof *evs);
    double *buckets = NULL;
    if (!ttft || !tpot || !e2el || !itl || !evs)
        goto fail;

    size_t nt = 0, np = 0, ni = 0, ne = 0;
    int64_t good = 0;
    double tmin = INFINITY, tmax = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        const bench_result *r = &res[i];
        if (!r->success) {
            out->failed++;
            continue;
        }
        out->completed++;
        int64_t olen = r->output_tokens;
        out->total_input += r->prompt_len;
        out->total_output += olen;
        double tp = 0.0;
        if (olen > 1) {
            tp = (r->latency - r->ttft) / (double)(olen - 1);
            tpot[np++] = tp;
        }
        ttft[nt++] = r->ttft;
        e2el[ne++] = r->latency;
        if (r->n_itl)
            memcpy(itl + ni, r->itl, r->n_itl * sizeof *itl);
        ni += r->n_itl;
        if (g && g->enabled) {
            int ok = 1;
            if (g->ttft_ms >= 0 && r->ttft * 1000.0 > g->ttft_ms)
                ok = 0;
            if (g->tpot_ms >= 0 && tp * 1000.0 > g->tpot_ms)
                ok = 0;
            if (g->e2el_ms >= 0 && r->latency * 1000.0 > g->e2el_ms)
                ok = 0;
            good += ok;
        }
        if (r->start < tmin)
            tmin = r->start;
        if (r->start + r->latency > tmax)
            tmax = r->start + r->latency;
    }

    /* Peak output tokens/s: token chunks counted in 1 s buckets from the
     * first successful send; peak concurrency: sweep over [start, end). */
    if (out->completed > 0) {
        size_t nb = (size_t)ceil(tmax - tmin) + 1;
        buckets = calloc(nb, sizeof *buckets);
        if (!buckets)
            goto fail;
        size_t nev = 0;
        for (size_t i = 0; i < n; i++) {
            const bench_result *r = &res[i];
            if (!r->success)
                continue;
            double t = r->start + r->ttft;
            for (size_t k = 0;; k++) {
                double b = floor(t - tmin);
                if (b >= 0 && b < (double)nb)
                    buckets[(size_t)b] += 1;
                if (k == r->n_itl)
                    break;
                t += r->itl[k];
            }
            evs[nev++] = (ev){r->start, +1};
            evs[nev++] = (ev){r->start + r->latency, -1};
        }
        for (size_t b = 0; b < nb; b++)
            if (buckets[b] > out->max_output_tokens_per_s)
                out->max_output_tokens_per_s = buckets[b];
        qsort(evs, nev, sizeof *evs, cmp_ev);
        int64_t cur = 0;
        for (size_t k = 0; k < nev; k++) {
            cur += evs[k].d;
            if (cur > out->max_concurrent_requests)
                out->max_concurrent_requests = cur;
        }
    }

    if (duration > 0) {
        out->request_throughput = (double)out->completed / duration;
        out->request_goodput = (double)good / duration;
        out->output_throughput = (double)out->total_output / duration;
        out->total_token_throughput =
            (double)(out->total_input + out->total_output) / duration;
    }
    bench_dist_compute(ttft, nt, pcts, n_pcts, &out->ttft);
    bench_dist_compute(tpot, np, pcts, n_pcts, &out->tpot);
    bench_dist_compute(itl, ni, pcts, n_pcts, &out->itl);
    bench_dist_compute(e2el, ne, pcts, n_pcts, &out->e2el);
    rc = ASA_OK;
fail:
    free(buckets);
    free(evs);
    free(itl);
    free(e2el);
    free(tpot);
    free(ttft);
    return rc;
}

/* ---- /metrics ----------------------------------------------------------- */

int bench_prom_sum(const char *text, const char *name, double *out) {
    static const char *prefixes[] = {"asa:", "vllm:"};
    size_t nl = strlen(name);
    double sum = 0;
    int found = 0;
    const char *l = text;
    while (l && *l) {
        const char *eol = strchr(l, '\n');
        const char *le = eol ? eol : l + strlen(l);
        while (l < le && (*l == ' ' || *l == '\t'))
            l++;
        if (l < le && *l != '#') {
            for (int k = 0; k < 2; k++) {
                size_t pl = strlen(prefixes[k]);
                if ((size_t)(le - l) > pl + nl && memcmp(l, prefixes[k], pl) == 0 &&
                    memcmp(l + pl, name, nl) == 0) {
                    const char *a = l + pl + nl;
                    if (*a == '{') { /* skip labels, honouring quoted values */
                        int inq = 0;
                        while (a < le && (inq || *a != '}')) {
                            if (*a == '\\' && inq && a + 1 < le)
                                a++;
                            else if (*a == '"')
                                inq = !inq;
                            a++;
                        }
                        if (a < le)
                            a++;
                    }
                    if (a < le && (*a == ' ' || *a == '\t')) {
                        char *end;
                        double v = strtod(a, &end);
                        if (end != a) {
                            sum += v;
                            found = 1;
                        }
                    }
                    break;
                }
            }
        }
        l = eol ? eol + 1 : NULL;
    }
    if (found)
        *out = sum;
    return found;
}

void bench_prom_parse(const char *text, bench_prom *p) {
    memset(p, 0, sizeof *p);
    p->ok = 1;
    p->have_preempt = bench_prom_sum(text, "num_preemptions_total", &p->preemptions);
    if (!p->have_preempt) /* older vLLM exposes it without _total */
        p->have_preempt = bench_prom_sum(text, "num_preemptions", &p->preemptions);
    int s = bench_prom_sum(text, "request_queue_time_seconds_sum", &p->queue_sum);
    int c = bench_prom_sum(text, "request_queue_time_seconds_count", &p->queue_count);
    p->have_queue = s && c;
}
