/* Private side of the retry module, shared by the sync path (retry.c) and
 * the async path (retry_async.c): the cheap validity check, the backoff
 * computation on a policy already known to be valid, the retry decision and
 * the three events. */
#ifndef WFLO_INTERNAL_RETRY_H
#define WFLO_INTERNAL_RETRY_H

#include "common.h"

#include <float.h>

/* A policy's `what` in config_invalid events and errbuf messages. */
#define WFLO__RETRY_WHAT "retry_policy"

bool wflo__retry_errlist_ok(const int *list, size_t n);

/* true when wflo_retry_policy_validate(p) would return 0. Kept to a handful
 * of comparisons because it runs on every wflo_retry_execute and
 * wflo_backoff_delay. Short-circuit branches measured ~1 ns faster than one
 * branch over a chain of setcc/and (a serial dependency): each branch is
 * predicted. NaN fails every comparison, so no isnan() is needed;
 * base_delay <= WFLO_DURATION_MAX and max_delay >= 0 follow from
 * 0 <= base_delay <= max_delay <= MAX. */
static inline bool wflo__retry_policy_ok(const wflo_retry_policy_t *p) {
  unsigned s = (unsigned)p->strategy;
  double m = p->multiplier;
  bool ok = p->max_retries >= 0 && s <= (unsigned)WFLO_BACKOFF_DECORRELATED &&
            p->base_delay >= 0.0 && p->max_delay >= p->base_delay &&
            p->max_delay <= WFLO_DURATION_MAX && p->jitter_factor >= 0.0 &&
            p->jitter_factor <= 1.0 && p->timeout >= 0.0 &&
            p->timeout <= WFLO_DURATION_MAX &&
            (s != WFLO_BACKOFF_EXPONENTIAL || (m >= 1.0 && m <= DBL_MAX)) &&
            (s != WFLO_BACKOFF_LINEAR || (m > 0.0 && m <= DBL_MAX));
  if (wflo__unlikely(p->retryable_errors_count != 0))
    ok = ok && wflo__retry_errlist_ok(p->retryable_errors,
                                      p->retryable_errors_count);
  return ok;
}

/* The delay before retry n for a VALID policy (see wflo_backoff_delay). */
double wflo__retry_backoff(const wflo_retry_policy_t *p, int n, double prev);

/* DESIGN's retry decision for a failed attempt's code. */
bool wflo__retry_is_retryable(const wflo_retry_policy_t *p, int err);

/* Events; each checks its level before building any JSON. */
void wflo__retry_emit_scheduled(const wflo_retry_policy_t *p, int attempt,
                                int err, double delay);
void wflo__retry_emit_succeeded(const wflo_retry_policy_t *p, int attempts);
void wflo__retry_emit_exhausted(const wflo_retry_policy_t *p, int attempts,
                                int err);

/* now + ns, saturating (a virtual clock may start anywhere). */
static inline uint64_t wflo__retry_add_sat(uint64_t a, uint64_t b) {
  return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

/* Calls made so far from retries done, saturating at INT_MAX. */
static inline int wflo__retry_attempts(int retries) {
  return retries == INT_MAX ? INT_MAX : retries + 1;
}

#endif /* WFLO_INTERNAL_RETRY_H */
