/* Per-thread PRNG for jitter: xoshiro256** (fast, 256-bit state, passes
 * BigCrush), seeded through splitmix64 from the OS on first use per thread,
 * or from wflo_rng_seed() for reproducible tests. */
#include "internal/common.h"

#include <sys/random.h>

typedef struct rng_state {
  uint64_t s[4];
  bool seeded;
} rng_state_t;

static WFLO_THREAD_LOCAL rng_state_t tl_rng;

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void seed_state(rng_state_t *r, uint64_t seed) {
  int i;
  for (i = 0; i < 4; i++)
    r->s[i] = splitmix64(&seed);
  r->seeded = true;
}

void wflo_rng_seed(uint64_t seed) { seed_state(&tl_rng, seed); }

static void seed_from_os(rng_state_t *r) {
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
    /* No entropy yet (early boot): time and a stack address still give
     * distinct seeds per thread, which is all jitter needs. */
    seed = wflo__now_ns() ^ (uint64_t)(uintptr_t)&seed;
  }
  seed_state(r, seed);
}

static inline uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

uint64_t wflo__rng_u64(void) {
  rng_state_t *r = &tl_rng;
  uint64_t *s, result, t;
  if (wflo__unlikely(!r->seeded))
    seed_from_os(r);
  s = r->s;
  result = rotl(s[1] * 5, 7) * 9;
  t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double wflo__rng_unit(void) {
  return (double)(wflo__rng_u64() >> 11) * 0x1.0p-53;
}

double wflo__rng_uniform(double lo, double hi) {
  double v;
  if (!(hi > lo))
    return lo;
  v = lo + (hi - lo) * wflo__rng_unit();
  return v > hi ? hi : v; /* rounding can land one ulp above hi */
}
