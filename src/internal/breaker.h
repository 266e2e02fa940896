/* Private side of the circuit breaker: the object, its state word and the
 * window helpers (breaker_window.c). Never installed.
 *
 * The state word (64 bits, one atomic) holds everything a call decides on:
 *   bits 0-1   state: CLOSED, OPEN, HALF_OPEN, or BUSY while one thread
 *              publishes an opening (its deadline, below)
 *   bits 2-31  count: consecutive failures (CLOSED, consecutive mode), the
 *              failure count that opened it (OPEN), successful trials
 *              (HALF_OPEN), the target state (BUSY)
 *   bits 32-63 generation: +1 on every transition; a permit carries it so a
 *              late result can tell it is stale
 * Only the thread that moved the word to BUSY writes the side data
 * (opened_at, open_until); it publishes OPEN with a release store, so a
 * reader that sees OPEN also sees its deadline. A call that meets BUSY is
 * refused, as OPEN would refuse it: the opening is a few stores long. The
 * other transitions (to HALF_OPEN, to CLOSED) have no side data and are a
 * single CAS of the word. */
#ifndef WFLO_INTERNAL_BREAKER_H
#define WFLO_INTERNAL_BREAKER_H

#include "common.h"
#include "registry.h"

enum {
  WFLO__BRK_CLOSED = WFLO_BREAKER_CLOSED,
  WFLO__BRK_OPEN = WFLO_BREAKER_OPEN,
  WFLO__BRK_HALF = WFLO_BREAKER_HALF_OPEN,
  WFLO__BRK_BUSY = 3
};

#define WFLO__BRK_COUNT_MASK 0x3fffffffu

static inline uint64_t wflo__brk_word(unsigned st, uint32_t gen,
                                      uint32_t count) {
  return (uint64_t)gen << 32 | (uint64_t)(count & WFLO__BRK_COUNT_MASK) << 2 |
         st;
}
static inline unsigned wflo__brk_st(uint64_t w) { return (unsigned)(w & 3); }
static inline uint32_t wflo__brk_count(uint64_t w) {
  return (uint32_t)(w >> 2) & WFLO__BRK_COUNT_MASK;
}
static inline uint32_t wflo__brk_gen(uint64_t w) {
  return (uint32_t)(w >> 32);
}

/* The effective configuration, read-only after creation: durations in ns,
 * half_open_max_wait resolved, minimum_calls capped for COUNT, the error
 * list a sorted, owned copy. Two breakers "have the same config" when these
 * compare equal (the list as a set). */
typedef struct wflo__bcfg {
  uint32_t failure_threshold;
  uint32_t success_threshold;
  uint32_t half_open_max_calls;
  uint32_t window_size;
  uint32_t minimum_calls;
  uint32_t window; /* wflo_window_t */
  uint64_t recovery_ns;
  uint64_t max_wait_ns;
  uint64_t slow_ns;
  double failure_rate;
  double slow_rate;
  bool (*is_failure)(int err, void *ud);
  void *user_data;
  const int *errors; /* NULL when nerrors == 0 */
  size_t nerrors;
} wflo__bcfg_t;

/* A COUNT or TIME window; NULL in the consecutive mode. Every call below
 * except _new/_free needs the caller to hold the window's mutex (_lock). */
typedef struct wflo__bwindow wflo__bwindow_t;

#define WFLO__BRK_NAME_INLINE 24

/* A breaker's metric series, created on its first use while metrics are
 * enabled (a million idle registered breakers cost no series) and released
 * when the breaker is destroyed. calls[] is indexed by outcome: success,
 * failure, ignored (neutral), rejected. */
typedef struct wflo__brk_metrics {
  struct wflo__metric_series *calls[4];
  struct wflo__metric_series *state;
} wflo__brk_metrics_t;

struct wflo_breaker_s {
  /* Registry lookups touch only this first part: the chain node and the
   * name it compares, kept together so a lookup among a million breakers
   * costs one cache miss past the bucket. Written only by _get/_put. */
  wflo__ref_t ref;
  char name_buf[WFLO__BRK_NAME_INLINE]; /* names up to 23 bytes */

  /* Hot: read by every acquire, written only on failures and transitions.
   * The config behind it is read-only, so healthy traffic keeps this cache
   * line shared between cores. */
  _Atomic uint64_t word;
  wflo__bwindow_t *win; /* read by every record: next to the word */
  /* NULL until the first use with metrics on; published once (CAS). One
   * pointer, so the consecutive-mode breaker keeps its size class. */
  _Atomic(wflo__brk_metrics_t *) met;
  wflo__bcfg_t cfg;
  const char *name; /* name_buf, or a separate copy; NULL when unnamed */

  /* Side data of the last opening, written only while the word is BUSY. */
  _Atomic uint64_t opened_at; /* coarse clock, ns */
  _Atomic uint64_t open_until;

  /* HALF_OPEN trial slots. in_use counts taken slots (plus claims being
   * placed), so a full breaker refuses without scanning; each slot holds
   * (ticket << 40 | admission time in ms), 0 when free. Slots outlive state
   * changes: a trial from an earlier HALF_OPEN still counts until it
   * reports or is reclaimed. */
  _Atomic uint32_t in_use;
  _Atomic uint32_t tickets;
  _Atomic uint64_t reclaim_hint; /* ms before which no slot can expire */
  _Atomic uint64_t slots[];      /* half_open_max_calls of them */
};

/* Takes one more reference on b (the caller already holds one), e.g. for an
 * async retry that keeps its policy's breaker. Drop it with
 * wflo_breaker_put(). */
void wflo__breaker_ref(wflo_breaker_t *b);

/* b's name, or NULL when unnamed. Borrowed: valid while b lives. */
const char *wflo__breaker_name(const wflo_breaker_t *b);

/* --- configuration (breaker_config.c) ------------------------------------- */

/* The effective config of a validated c; e->errors borrows c's list. */
void wflo__bcfg_effective(const wflo_breaker_config_t *c, wflo__bcfg_t *e);
/* Same effective config (the error lists compared as sets; a's sorted). */
bool wflo__bcfg_equal(const wflo__bcfg_t *a, const wflo__bcfg_t *b);
void wflo__bcfg_sort_errors(int *list, size_t n);
/* true when err is in the sorted list. */
bool wflo__bcfg_has_error(const int *list, size_t n, int err);

/* --- windows (breaker_window.c) ------------------------------------------- */

int wflo__bwindow_new(const wflo__bcfg_t *cfg, wflo__bwindow_t **out);
void wflo__bwindow_free(wflo__bwindow_t *w);
void wflo__bwindow_lock(wflo__bwindow_t *w);
void wflo__bwindow_unlock(wflo__bwindow_t *w);
/* Empties the window (every state change does). */
void wflo__bwindow_clear(wflo__bwindow_t *w);
/* Adds one outcome at now_ns (TIME only reads it) and returns true when the
 * window's rates now say the circuit must open. */
bool wflo__bwindow_add(wflo__bwindow_t *w, bool failure, bool slow,
                       uint64_t now_ns);
/* Failures in the window at now_ns (TIME drops expired buckets first). */
uint32_t wflo__bwindow_failures(wflo__bwindow_t *w, uint64_t now_ns);
/* Outcomes in the window at now_ns. */
uint32_t wflo__bwindow_total(wflo__bwindow_t *w, uint64_t now_ns);

#endif /* WFLO_INTERNAL_BREAKER_H */
