/* Private side of the health module: how modules contribute a section to
 * wflo_health_json() / wflo_health_ok(). Never installed.
 *
 * A module that keeps a registry of objects (breaker, lock, workflow)
 * implements one section function and adds a row {"key", fn} to the
 * `sections` table in src/health.c. The expected sections:
 *   "breakers"  one wflo_breaker_state_json() object per registered breaker
 *               plus "healthy": false when its state is open; an open one
 *               clears *healthy.
 *   "locks"     one object per registered lock: resource_name,
 *               current_waiters, current_holders (count), contention_rate,
 *               timeout_count (informational: never clears *healthy).
 *   "workflows" one object per registered workflow: name, executions,
 *               succeeded, failed, refused, spent_usd (informational). */
#ifndef WFLO_INTERNAL_HEALTH_H
#define WFLO_INTERNAL_HEALTH_H

#include "common.h"

/* Appends one JSON object per object to arr, or only computes health when
 * arr is NULL; sets *healthy = false if any object is unhealthy (never sets
 * it to true). Returns 0 or WFLO_E_NOMEM. Runs on any thread with no
 * libwflo lock held; take a registry snapshot rather than holding the
 * registry mutex while building JSON. */
typedef int (*wflo__health_section_fn)(json_t *arr, bool *healthy);

/* The sections, each in its module (breaker.c, lock.c, workflow.c). */
int wflo__breaker_health(json_t *arr, bool *healthy);
int wflo__lock_health(json_t *arr, bool *healthy);
int wflo__workflow_health(json_t *arr, bool *healthy);

#endif /* WFLO_INTERNAL_HEALTH_H */
