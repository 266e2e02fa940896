/* libwflo health: one JSON summary of everything libwflo guards (breakers,
 * locks, workflows) and of user health checks that probe dependencies on a
 * libuv loop, optionally feeding a circuit breaker so that a failing
 * dependency opens its circuit before users' calls hit it. Include
 * <wflo.h>, not this file. */
#ifndef WFLO_HEALTH_H
#define WFLO_HEALTH_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A running health check (wflo_health_check_start). */
typedef struct wflo_health_check_s wflo_health_check_t;
/* One run of a check's probe, reported with wflo_health_probe_done(). */
typedef struct wflo_health_probe_s wflo_health_probe_t;

/* Defaults set by wflo_health_check_config_init(). */
#define WFLO_HEALTH_DEFAULT_PERIOD 10.0
#define WFLO_HEALTH_DEFAULT_TIMEOUT 5.0
#define WFLO_HEALTH_DEFAULT_UNHEALTHY_THRESHOLD 1

/* Starts one probe of a dependency. Report its result, exactly once, with
 * wflo_health_probe_done(probe, result): 0 or positive for healthy, a
 * negative code for unhealthy. It may report inside this callback (a cheap
 * check) or later, from any thread (an asynchronous check, such as an HTTP
 * request on the loop). It must not block: it runs on the loop's thread. */
typedef void (*wflo_health_probe_fn)(wflo_health_probe_t *probe,
                                     void *user_data);

typedef struct wflo_health_check_config {
  /* Name shown in wflo_health_json(); required, copied. */
  const char *name;
  /* Seconds between the starts of two probes; > 0. */
  double period;
  /* Seconds a probe may take before it counts as failed with
   * WFLO_E_TIMEOUT; 0 means no limit. */
  double timeout;
  /* Consecutive failed probes that make the check unhealthy; >= 1. */
  uint32_t unhealthy_threshold;
  /* Required. */
  wflo_health_probe_fn probe;
  /* Optional: every probe is recorded in this breaker as one call (its
   * result and duration), so a failing dependency opens the circuit and a
   * recovered one closes it. The check holds a reference on the breaker
   * while it runs. Not loaded from JSON. */
  wflo_breaker_t *breaker;
  void *user_data;
  void *reserved[8];
} wflo_health_check_config_t;

/* Sets every field of c to its default: name NULL, period
 * WFLO_HEALTH_DEFAULT_PERIOD, timeout WFLO_HEALTH_DEFAULT_TIMEOUT,
 * unhealthy_threshold WFLO_HEALTH_DEFAULT_UNHEALTHY_THRESHOLD, probe,
 * breaker and user_data NULL. Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN void wflo_health_check_config_init(wflo_health_check_config_t *c);

/* Frees what wflo_health_check_config_from_json() loaded (the name) and
 * resets those fields; a name the caller set is left alone.
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN void wflo_health_check_config_clear(wflo_health_check_config_t *c);

/* Checks c as wflo_health_check_start() does; errbuf (may be NULL) receives
 * "health_check.FIELD: reason".
 * Returns: 0; WFLO_E_INVAL (also for c NULL) with a config_invalid event.
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN int
wflo_health_check_config_validate(const wflo_health_check_config_t *c,
                                  char *errbuf, size_t len);

/* Initialises c and loads name, period, timeout and unhealthy_threshold
 * from a JSON object (keys are the field names). probe, breaker and
 * user_data are set by the caller afterwards.
 * Returns: 0; WFLO_E_PARSE (unknown key, wrong type); WFLO_E_INVAL (bad
 * value, with a config_invalid event); WFLO_E_NOMEM. On failure c holds the
 * defaults. Ownership: the loaded name is library memory, freed by
 * wflo_health_check_config_clear(). Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN int wflo_health_check_config_from_json(
    const json_t *j, wflo_health_check_config_t *c, char *errbuf, size_t len);

/* Starts a periodic health check on loop: the first probe runs soon (from
 * the loop, never inside this call), then one every period. While a probe
 * is still outstanding, no new one starts: a tick that finds it past its
 * timeout records another WFLO_E_TIMEOUT failure. The check is listed in
 * wflo_health_json() and decides wflo_health_ok() until it is stopped. The
 * running check keeps the loop alive (a timer).
 * Returns: 0; WFLO_E_INVAL (loop, c or out NULL, invalid config, with a
 * config_invalid event); WFLO_E_NOMEM; a UV_E* code from the loop.
 * Ownership: c is copied (the name too); *out is the caller's until
 * wflo_health_check_stop(). Callback: probe runs on the loop's thread, once
 * per run. Thread-safety: the loop's thread only. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int
wflo_health_check_start(uv_loop_t *loop, const wflo_health_check_config_t *c,
                        wflo_health_check_t **out);

/* Stops a check: no probe starts after this, and it leaves the health
 * summary at once. Its memory is freed now, or, when a probe is
 * outstanding, once that probe is reported (the report is then ignored).
 * May be called from inside the probe callback.
 * Returns: 0; WFLO_E_INVAL (NULL); WFLO_E_STATE (already stopped; h must
 * not be used after a successful stop anyway). Thread-safety: the loop's
 * thread only. Since: 0.1. */
WFLO_EXTERN int wflo_health_check_stop(wflo_health_check_t *h);

/* Reports the result of a probe: 0 or positive means healthy, a negative
 * code unhealthy. A report after the probe's timeout is ignored (the probe
 * already counted as WFLO_E_TIMEOUT) but is still required: it frees the
 * probe. Call it exactly once per probe; probe is invalid afterwards.
 * NULL is a no-op. Thread-safety: any thread; the result is applied on the
 * loop's thread, later, never inside this call. Since: 0.1. */
WFLO_EXTERN void wflo_health_probe_done(wflo_health_probe_t *probe,
                                        int result);

/* Returns the health summary:
 *   {"healthy": bool, "status": "ok" | "unhealthy",
 *    "breakers": [...], "locks": [...], "workflows": [...],
 *    "checks": [{"name", "healthy", "state": "pending" | "passing" |
 *                "failing", "runs", "failures", "consecutive_failures",
 *                "last_error" (wflo_err_name of the last result),
 *                "last_duration_seconds", "seconds_since_last_result",
 *                "period", "timeout", "unhealthy_threshold"}, ...]}
 * Only named objects from the registries are listed (wflo_breaker_get,
 * wflo_lock_get, workflows); private ones from _new are not.
 * A check is unhealthy once unhealthy_threshold consecutive probes failed;
 * one that has not reported yet is "pending" and healthy. An open circuit
 * breaker is unhealthy; locks and workflows are informational (waiters,
 * contention, executions, spend, budget refusals). Non-finite numbers and
 * values not measured yet are null. Returns NULL when out of memory.
 * Ownership: new reference. Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN json_t *wflo_health_json(void);

/* Returns true when nothing in wflo_health_json() is unhealthy. Computed
 * without building JSON; if listing the registries runs out of memory it
 * judges only what it could list. Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN bool wflo_health_ok(void);

#ifdef __cplusplus
}
#endif

#endif /* WFLO_HEALTH_H */
