/* Private helpers shared by every module: memory, clock, randomness, events.
 * Never installed. Internal non-static names use the wflo__ prefix. */
#ifndef WFLO_INTERNAL_COMMON_H
#define WFLO_INTERNAL_COMMON_H

#include "wflo.h"

#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>

#define WFLO_THREAD_LOCAL _Thread_local

#define WFLO_UNUSED(x) ((void)(x))
#define WFLO_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define wflo__container_of(ptr, type, member)                                 \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#if defined(__GNUC__) || defined(__clang__)
#define wflo__likely(x) __builtin_expect(!!(x), 1)
#define wflo__unlikely(x) __builtin_expect(!!(x), 0)
#define WFLO__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define wflo__likely(x) (x)
#define wflo__unlikely(x) (x)
#define WFLO__PRINTF(f, a)
#endif

#define WFLO__NS_PER_S 1000000000ull

/* --- memory (alloc.c) -------------------------------------------------------
 * Every allocation libwflo makes goes through these. A NULL return means
 * WFLO_E_NOMEM; no path aborts. Sized free: pass the size that was requested.
 * wflo__mem_outstanding() counts live allocations, which is how
 * wflo_set_allocator() knows that nothing of libwflo is alive. */
void *wflo__malloc(size_t size);
void *wflo__calloc(size_t n, size_t size); /* checks n*size overflow */
void *wflo__realloc(void *p, size_t old_size, size_t new_size);
void wflo__free(void *p, size_t size);
char *wflo__strdup(const char *s); /* NULL in, NULL out */
void wflo__strfree(char *s);       /* frees a wflo__strdup result */
size_t wflo__mem_outstanding(void);

/* --- clock (clock.c) --------------------------------------------------------
 * Precise and coarse monotonic time in ns; both honour wflo_clock_set().
 * The coarse clock (CLOCK_MONOTONIC_COARSE, ~4 ms resolution) is for decisions
 * whose granularity is seconds. wflo__sleep_ns(0) returns at once. */
uint64_t wflo__now_ns(void);
uint64_t wflo__now_coarse_ns(void);
void wflo__sleep_ns(uint64_t ns);
bool wflo__clock_overridden(void);

/* Seconds <-> ns. The double must already be validated (finite, >= 0,
 * <= WFLO_DURATION_MAX); 1e9 s fits uint64_t ns with room to spare. */
static inline uint64_t wflo__s_to_ns(double s) {
  return s <= 0.0 ? 0 : (uint64_t)(s * 1e9 + 0.5);
}
static inline double wflo__ns_to_s(uint64_t ns) { return (double)ns / 1e9; }

/* true when d is a valid duration: finite, >= 0, <= WFLO_DURATION_MAX. */
static inline bool wflo__duration_ok(double d) {
  return d >= 0.0 && d <= WFLO_DURATION_MAX; /* false for NaN too */
}

/* --- randomness (rng.c) -----------------------------------------------------
 * Per-thread xoshiro256**, seeded from the OS on first use per thread. */
uint64_t wflo__rng_u64(void);
double wflo__rng_unit(void); /* uniform in [0, 1), 53 bits */
/* Uniform in [lo, hi]; returns lo when hi <= lo. */
double wflo__rng_uniform(double lo, double hi);

/* --- events (event.c) -------------------------------------------------------
 * Check wflo__event_on() before building any JSON: below the level nothing
 * is built. wflo__emit() steals `fields` (may be NULL after an OOM, then the
 * event is dropped) and calls the handler with no libwflo lock held: callers
 * must not hold their own locks either. */
extern atomic_int wflo__log_level; /* -1 until WFLO_LOG was read */
int wflo__log_level_init(void);
static inline bool wflo__event_on(wflo_log_level_t level) {
  int cur = atomic_load_explicit(&wflo__log_level, memory_order_relaxed);
  if (wflo__unlikely(cur < 0))
    cur = wflo__log_level_init();
  return (int)level >= cur && level < WFLO_LOG_OFF;
}
void wflo__emit(const char *name, wflo_log_level_t level, json_t *fields);

/* --- errors (error.c) -------------------------------------------------------
 * Parses an error name ("WFLO_E_TIMEOUT", "UV_ETIMEDOUT", "ETIMEDOUT") into
 * its code. Returns 0 or WFLO_E_NOT_FOUND. */
int wflo__err_from_name(const char *name, int *code);
/* true for libwflo's own verdicts that retry and breaker never count as an
 * operation's failure by default (see DESIGN's retry section). */
bool wflo__err_is_verdict(int err);

/* Writes a message into a caller's errbuf (NULL allowed). */
void wflo__errbuf(char *errbuf, size_t len, const char *fmt, ...)
    WFLO__PRINTF(3, 4);

#endif /* WFLO_INTERNAL_COMMON_H */
