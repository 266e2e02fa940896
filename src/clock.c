/* The monotonic clock, overridable for tests (wflo_clock_set). Hot paths
 * read it only when a decision needs time; the override check is one relaxed
 * atomic load. */
#include "internal/common.h"

#include <errno.h>
#include <time.h>

typedef uint64_t (*now_fn)(void *ud);
typedef void (*sleep_fn)(uint64_t ns, void *ud);

static _Atomic(now_fn) ovr_now;
static _Atomic(sleep_fn) ovr_sleep;
static _Atomic(void *) ovr_ud;

int wflo_clock_set(uint64_t (*now_ns)(void *ud),
                   void (*sleep_ns)(uint64_t ns, void *ud), void *ud) {
  if ((now_ns == NULL) != (sleep_ns == NULL))
    return WFLO_E_INVAL;
  /* ud first, now last: a reader that sees the new now sees its ud. */
  atomic_store(&ovr_ud, ud);
  atomic_store(&ovr_sleep, sleep_ns);
  atomic_store(&ovr_now, now_ns);
  return 0;
}

bool wflo__clock_overridden(void) {
  return atomic_load_explicit(&ovr_now, memory_order_relaxed) != NULL;
}

static uint64_t read_clock(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * WFLO__NS_PER_S + (uint64_t)ts.tv_nsec;
}

uint64_t wflo__now_ns(void) {
  now_fn f = atomic_load_explicit(&ovr_now, memory_order_acquire);
  if (wflo__unlikely(f != NULL))
    return f(atomic_load_explicit(&ovr_ud, memory_order_relaxed));
  /* uv_hrtime() is CLOCK_MONOTONIC too; calling clock_gettime directly
   * saves a call on the hot path. */
  return read_clock(CLOCK_MONOTONIC);
}

uint64_t wflo__now_coarse_ns(void) {
  now_fn f = atomic_load_explicit(&ovr_now, memory_order_acquire);
  if (wflo__unlikely(f != NULL))
    return f(atomic_load_explicit(&ovr_ud, memory_order_relaxed));
#ifdef CLOCK_MONOTONIC_COARSE
  return read_clock(CLOCK_MONOTONIC_COARSE);
#else
  return read_clock(CLOCK_MONOTONIC);
#endif
}

uint64_t wflo_now_ns(void) { return wflo__now_ns(); }

void wflo__sleep_ns(uint64_t ns) {
  struct timespec req, rem;
  sleep_fn f;
  if (ns == 0)
    return; /* a zero sleep still costs a syscall: skip it */
  f = atomic_load_explicit(&ovr_sleep, memory_order_acquire);
  if (f != NULL) {
    f(ns, atomic_load_explicit(&ovr_ud, memory_order_relaxed));
    return;
  }
  req.tv_sec = (time_t)(ns / WFLO__NS_PER_S);
  req.tv_nsec = (long)(ns % WFLO__NS_PER_S);
  while (nanosleep(&req, &rem) != 0 && errno == EINTR)
    req = rem;
}
