/*
 * rng.c: a counter-based generator. Each 64-bit value is a keyed hash of
 * (seed, stream, index) (two rounds of the SplitMix64 finaliser over a mixed key), so
 * fills split over threads give the same numbers as a serial fill.
 */
#include <math.h>

#include "core.h"

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t dap_rng_bits(uint64_t seed, uint64_t stream, uint64_t i) {
    uint64_t key = mix64(seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL);
    key = mix64(key ^ (stream * 0xd1b54a32d192ed03ULL + 0x8cb92ba72f3d8dd7ULL));
    return mix64(mix64(key + i * 0x9e3779b97f4a7c15ULL) ^ key);
}

void dap_rng_init(dap_rng *r, uint64_t seed, uint64_t stream) {
    r->seed = seed;
    r->stream = stream;
    r->counter = 0;
}

/* 24 random bits -> [0, 1). */
static inline float u01(uint64_t b) { return (float)(b >> 40) * (1.0f / 16777216.0f); }

void dap_rng_uniform(dap_rng *r, float *out, size_t n, float lo, float hi) {
    uint64_t base = r->counter, seed = r->seed, stream = r->stream;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = lo + (hi - lo) * u01(dap_rng_bits(seed, stream, base + i));
    r->counter += n;
}

void dap_rng_normal(dap_rng *r, float *out, size_t n, float mean, float std) {
    /* Box-Muller: one 64-bit draw per output value, using both 32-bit halves. */
    uint64_t base = r->counter, seed = r->seed, stream = r->stream;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        uint64_t b = dap_rng_bits(seed, stream, base + i);
        float u1 = ((float)(b >> 40) + 1.0f) * (1.0f / 16777216.0f);
        float u2 = (float)((b >> 8) & 0xffffff) * (1.0f / 16777216.0f);
        float rad = sqrtf(-2.0f * logf(u1));
        out[i] = mean + std * rad * cosf(6.283185307179586f * u2);
    }
    r->counter += n;
}

uint64_t dap_rng_next_u64(dap_rng *r) { return dap_rng_bits(r->seed, r->stream, r->counter++); }

uint64_t dap_rng_below(dap_rng *r, uint64_t n) {
    DAP_ASSERT(n > 0);
    /* Rejection sampling removes modulo bias. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = dap_rng_next_u64(r);
    while (x >= limit);
    return x % n;
}

double dap_rng_next_double(dap_rng *r) { return (double)(dap_rng_next_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

void dap_rng_shuffle(dap_rng *r, int *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)dap_rng_below(r, i);
        int t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

