/* libwflo circuit breaker. Include <wflo.h>, not this file.
 *
 * A breaker guards calls to something that may fail. It has three states:
 * CLOSED (calls run; failures are counted), OPEN (calls are refused with
 * WFLO_E_BREAKER_OPEN without running) and HALF_OPEN (a few trial calls run
 * to probe recovery). The default mode opens after failure_threshold
 * consecutive failures; the window modes open on a failure rate or slow-call
 * rate over the last window_size calls (COUNT) or seconds (TIME), with
 * Resilience4j semantics.
 *
 * What counts as a failure: if the config has a predicate (is_failure), it
 * decides for every negative result; else if it has an expected_errors list,
 * exactly the listed codes are failures; else every negative result is a
 * failure except the neutral ones: WFLO_E_CANCELED, WFLO_E_LOCK_TIMEOUT,
 * WFLO_E_QUEUE_FULL, WFLO_E_BUDGET_EXCEEDED and WFLO_E_BREAKER_OPEN (an inner
 * breaker's refusal). A negative result that is not a failure is neutral:
 * neither success nor failure (a window does not record it), and in
 * HALF_OPEN it frees its trial slot. 0 and positive results are successes.
 * HALF_OPEN works alike in every mode: success_threshold successful trials
 * close the circuit, one failed trial reopens it.
 *
 * Guarding a call, three ways:
 *   rc = wflo_breaker_call(b, fn, arg);            (measures the duration)
 *   WFLO_WITH_BREAKER(b, rc) { rc = op(); }       (measures the duration)
 *   wflo_breaker_acquire(b, &permit) ... wflo_breaker_record(b, &permit,
 *       rc, seconds)                              (async and hand-written code)
 *
 * Thread-safety: a breaker may be shared by any number of threads and loops.
 * The CLOSED path of the consecutive mode takes no lock, reads no clock and,
 * while calls succeed, writes no shared memory. The COUNT and TIME windows
 * update their window under a small per-breaker mutex, held for a few
 * instructions. No breaker call blocks or sleeps. The user code a breaker
 * runs (is_failure, the event handler, wflo_breaker_call's fn) runs with no
 * libwflo lock held and may call into libwflo, this breaker included.
 */
#ifndef WFLO_BREAKER_H
#define WFLO_BREAKER_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- states and window modes ---------------------------------------------- */

/* Circuit state. Since: 0.1. */
typedef enum wflo_breaker_state {
  WFLO_BREAKER_CLOSED = 0,   /* calls run; failures are counted */
  WFLO_BREAKER_OPEN = 1,     /* calls are refused until recovery_timeout */
  WFLO_BREAKER_HALF_OPEN = 2 /* up to half_open_max_calls trial calls run */
} wflo_breaker_state_t;

/* How failures are counted in CLOSED. JSON names: "consecutive", "count",
 * "time". Since: 0.1. */
typedef enum wflo_window {
  /* failure_threshold consecutive failures open the circuit (the default). */
  WFLO_WINDOW_CONSECUTIVE = 0,
  /* The last window_size outcomes. */
  WFLO_WINDOW_COUNT = 1,
  /* The outcomes of the last window_size seconds, in 1 s buckets aligned to
   * whole seconds of the monotonic clock: the current, partial second plus
   * the window_size - 1 seconds before it. */
  WFLO_WINDOW_TIME = 2
} wflo_window_t;

/* --- configuration -------------------------------------------------------- */

/* Defaults set by wflo_breaker_config_init(). */
#define WFLO_BREAKER_DEFAULT_FAILURE_THRESHOLD 5
#define WFLO_BREAKER_DEFAULT_RECOVERY_TIMEOUT 60.0
#define WFLO_BREAKER_DEFAULT_SUCCESS_THRESHOLD 2
#define WFLO_BREAKER_DEFAULT_HALF_OPEN_MAX_CALLS 1
#define WFLO_BREAKER_DEFAULT_HALF_OPEN_MAX_WAIT 0.0 /* = recovery_timeout */
#define WFLO_BREAKER_DEFAULT_WINDOW WFLO_WINDOW_CONSECUTIVE
#define WFLO_BREAKER_DEFAULT_WINDOW_SIZE 100
#define WFLO_BREAKER_DEFAULT_MINIMUM_CALLS 100
#define WFLO_BREAKER_DEFAULT_FAILURE_RATE_THRESHOLD 0.5
#define WFLO_BREAKER_DEFAULT_SLOW_CALL_DURATION 60.0
#define WFLO_BREAKER_DEFAULT_SLOW_CALL_RATE_THRESHOLD 1.0

/* Limits checked by validation. Thresholds and minimum_calls: 1 to
 * WFLO_BREAKER_THRESHOLD_MAX. half_open_max_calls: 1 to
 * WFLO_BREAKER_HALF_OPEN_CALLS_MAX (one 8-byte slot each). window_size: 1 to
 * WFLO_BREAKER_COUNT_WINDOW_MAX outcomes for COUNT (2 bits each), 1 to
 * WFLO_BREAKER_TIME_WINDOW_MAX seconds for TIME (12 bytes each); the
 * consecutive mode ignores it but it must still be in the COUNT range. */
#define WFLO_BREAKER_THRESHOLD_MAX 1000000000
#define WFLO_BREAKER_HALF_OPEN_CALLS_MAX 65536
#define WFLO_BREAKER_COUNT_WINDOW_MAX 1000000
#define WFLO_BREAKER_TIME_WINDOW_MAX 3600

/* A breaker's configuration: a plain struct; set it up with
 * wflo_breaker_config_init() (or _from_json) and edit the fields. Durations
 * are seconds (finite, >= 0, <= WFLO_DURATION_MAX); rates are fractions in
 * (0, 1]. Since: 0.1. */
typedef struct wflo_breaker_config {
  /* Consecutive failures that open the circuit (consecutive mode). >= 1. */
  int failure_threshold;
  /* Time OPEN before the next call may move it to HALF_OPEN. 0 allowed. */
  double recovery_timeout;
  /* Successful trials in HALF_OPEN that close the circuit. >= 1. */
  int success_threshold;
  /* Concurrent trial calls admitted in HALF_OPEN. >= 1. */
  int half_open_max_calls;
  /* A trial slot whose call has not reported after this long is reclaimed
   * for a new trial (the late report then changes nothing). 0 means
   * recovery_timeout. A zero effective value reclaims at once: keep it
   * non-zero unless trial calls cannot be lost. */
  double half_open_max_wait;
  /* Codes that count as failures (negative; borrowed by the config, copied
   * by the breaker). Ignored when is_failure is set. */
  const int *expected_errors;
  size_t expected_errors_count;
  /* Decides for every negative result whether it is a failure (true) or
   * neutral (false). Called on the thread that records the result, with no
   * libwflo lock held; must be thread-safe. NULL: use the list/defaults. */
  bool (*is_failure)(int err, void *ud);
  /* WFLO_WINDOW_CONSECUTIVE, COUNT or TIME. */
  wflo_window_t window;
  /* COUNT: outcomes kept; TIME: seconds kept. See the limits above. */
  int window_size;
  /* Outcomes recorded in the window before a rate can open the circuit.
   * >= 1; for COUNT, values above window_size mean window_size. */
  int minimum_calls;
  /* Failure rate (failures / recorded outcomes in the window) that opens
   * the circuit, once minimum_calls outcomes are in the window. In (0, 1].
   * The window modes ignore failure_threshold. */
  double failure_rate_threshold;
  /* A call that took longer than this (strictly) is slow. Only the COUNT
   * and TIME windows look at durations, and only in CLOSED. */
  double slow_call_duration;
  /* Slow-call rate (slow / recorded outcomes in the window, failures
   * included) that opens the circuit. In (0, 1]. */
  double slow_call_rate_threshold;
  /* Passed to is_failure. Borrowed: must outlive every breaker using it. */
  void *user_data;
  void *reserved[8]; /* reserved[0]: the expected_errors loaded from JSON */
} wflo_breaker_config_t;

/* Sets every field of c to its default (WFLO_BREAKER_DEFAULT_*); pointers
 * NULL, counts 0. Does not free anything c held. NULL is a no-op.
 * Thread-safety: c is the caller's. Since: 0.1. */
WFLO_EXTERN void wflo_breaker_config_init(wflo_breaker_config_t *c);

/* Frees what wflo_breaker_config_from_json() loaded into c (the
 * expected_errors list; a list the caller put there instead is left alone)
 * and resets c to the defaults. NULL is a no-op. Since: 0.1. */
WFLO_EXTERN void wflo_breaker_config_clear(wflo_breaker_config_t *c);

/* Checks every field of c. Returns: 0; WFLO_E_INVAL (c NULL, or a bad field:
 * errbuf gets "breaker.FIELD: reason" and a config_invalid event is
 * emitted). Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN int wflo_breaker_config_validate(const wflo_breaker_config_t *c,
                                             char *errbuf, size_t len);

/* Loads a config from a JSON object whose keys are the C field names
 * (except is_failure and user_data), starting from the defaults: c is
 * initialised first, so it must not hold memory loaded earlier (clear it
 * first). "window" takes "consecutive", "count" or "time"; expected_errors
 * takes codes or names ("WFLO_E_TIMEOUT", "ETIMEDOUT", "UV_ETIMEDOUT"); a
 * JSON integer is accepted for a double. The result is validated.
 * Returns: 0; WFLO_E_PARSE (not an object, unknown key, wrong JSON type);
 * WFLO_E_INVAL (j or c NULL, a bad value, an unknown name); WFLO_E_NOMEM.
 * On failure c holds the defaults and nothing loaded. errbuf names the
 * field. Ownership: j is borrowed; free what was loaded with
 * wflo_breaker_config_clear(). Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int
wflo_breaker_config_from_json(const json_t *j, wflo_breaker_config_t *c,
                              char *errbuf, size_t len);

/* --- breakers ------------------------------------------------------------- */

/* Creates a private breaker (not in the registry). name: copied; NULL makes
 * an unnamed breaker (its events and JSON state carry "name": null). c: NULL
 * means the defaults; the config is validated first and copied (the
 * expected_errors list too). Returns: 0; WFLO_E_INVAL (out NULL, bad config;
 * nothing is created); WFLO_E_NOMEM. Ownership: *out is a new reference,
 * dropped with wflo_breaker_put(). Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int wflo_breaker_new(const char *name,
                                                const wflo_breaker_config_t *c,
                                                wflo_breaker_t **out);

/* Returns the breaker registered under name, creating it with c if there
 * is none. Every holder of the same name shares one breaker and its state.
 * When the name exists and c (validated first) differs from the config it
 * was created with, a config_conflict event {what: "breaker", name} is
 * emitted and the first config stays. c NULL means "no opinion": an
 * existing breaker is returned as it is (no conflict), a new one gets the
 * defaults. A name is registered while any reference to its breaker is
 * alive.
 * Returns: 0; WFLO_E_INVAL (name or out NULL, bad config); WFLO_E_NOMEM.
 * Ownership: *out is a new reference, dropped with wflo_breaker_put().
 * Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int wflo_breaker_get(const char *name,
                                                const wflo_breaker_config_t *c,
                                                wflo_breaker_t **out);

/* Drops one reference; the last one frees the breaker and removes its name
 * from the registry. NULL is a no-op. Permits still held on b become invalid
 * with it: keep a reference while any permit is outstanding.
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN void wflo_breaker_put(wflo_breaker_t *b);

/* --- guarding calls ------------------------------------------------------- */

/* One admission, declared by the caller (on its stack or in its own struct);
 * nothing is allocated per call. Filled by wflo_breaker_acquire(); consumed
 * by exactly one record (a second one returns WFLO_E_STATE). It carries
 * the breaker's generation: a result recorded after the circuit changed
 * state since the admission changes nothing. One thread at a time uses a
 * permit (it may be recorded on another thread than the one that acquired
 * it). Since: 0.1. */
typedef struct wflo_breaker_permit {
  /* public (read-only): the state that admitted the call, CLOSED or
   * HALF_OPEN (a trial call); after a refusal, the state that refused. */
  wflo_breaker_state_t state;
  /* private */
  uint32_t gen;
  uint32_t flags;
  uint32_t slot;
  uint64_t ticket;
  uint64_t start_ns;
  wflo_breaker_t *breaker;
  void *reserved[4];
} wflo_breaker_permit_t;

/* Asks b to admit one call. CLOSED admits; OPEN refuses until
 * recovery_timeout has passed since it opened, and then the first call moves
 * it to HALF_OPEN and is admitted as a trial; HALF_OPEN admits at most
 * half_open_max_calls concurrent trials (a trial slot stays taken until its
 * permit is recorded, even across state changes, or until half_open_max_wait
 * reclaims it). A call that arrives while another thread is in the middle of
 * opening the circuit (a few instructions) is refused. Reads no clock when
 * CLOSED.
 * Returns: 0 (admitted: run the call, then record the permit exactly once);
 * WFLO_E_BREAKER_OPEN (refused: do not run the call, do not record);
 * WFLO_E_INVAL (b or permit NULL). Ownership: permit is the caller's; b must
 * stay alive until the permit is recorded. Thread-safety: any thread.
 * Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int
wflo_breaker_acquire(wflo_breaker_t *b, wflo_breaker_permit_t *permit);

/* Records the outcome of an admitted call: result (0 or positive: success;
 * negative: failure or neutral, see the top of this file) and its duration
 * in seconds for slow-call detection (negative or NaN: not measured, never
 * slow; only the COUNT and TIME windows look at it). A permit whose
 * generation is stale (the circuit changed state since the admission), or
 * whose trial slot was reclaimed, changes no count and no state, but its
 * trial slot, if it still holds one, is freed.
 * Returns: 0 (recorded, or stale and ignored: the first record of a permit
 * always returns 0); WFLO_E_STATE (the permit was already recorded, or holds
 * no admission: its acquire failed or it never was acquired); WFLO_E_INVAL
 * (b or permit NULL, or the permit was acquired from another breaker).
 * Thread-safety: any thread, also another than the one that acquired.
 * Since: 0.1. */
WFLO_EXTERN int wflo_breaker_record(wflo_breaker_t *b,
                                    wflo_breaker_permit_t *permit, int result,
                                    double duration_s);

/* Like wflo_breaker_acquire(), and when b detects slow calls (COUNT or TIME
 * window) it also stamps the permit with the precise clock, for
 * wflo_breaker_record_timed(). Returns: as wflo_breaker_acquire(); the
 * permit is marked refused on every failure, so recording it returns
 * WFLO_E_STATE. Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int
wflo_breaker_acquire_timed(wflo_breaker_t *b, wflo_breaker_permit_t *permit);

/* Records result for a permit from wflo_breaker_acquire_timed() on the
 * breaker that admitted it, with the duration measured since the acquire
 * (not measured when the permit was not stamped). Returns: as
 * wflo_breaker_record() (WFLO_E_INVAL only for a NULL permit).
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN int wflo_breaker_record_timed(wflo_breaker_permit_t *permit,
                                          int result);

/* Records a still-unrecorded admitted permit as a neutral outcome (frees its
 * trial slot); does nothing for a recorded or refused permit, or NULL. This
 * is the cleanup WFLO_WITH_BREAKER runs when its block is left early; also
 * useful to give up a call that will never report. Thread-safety: any
 * thread. Since: 0.1. */
WFLO_EXTERN void wflo_breaker_abandon(wflo_breaker_permit_t *permit);

/* Runs fn(arg) if b admits it and records its result and duration (the
 * precise clock is read only when b detects slow calls).
 * Returns: fn's result, untouched (the call that trips the circuit returns
 * its own error); WFLO_E_BREAKER_OPEN (refused, fn not run); WFLO_E_INVAL
 * (b or fn NULL). Thread-safety: any thread; fn runs on the calling thread
 * with no libwflo lock held. Since: 0.1. */
WFLO_EXTERN int wflo_breaker_call(wflo_breaker_t *b, int (*fn)(void *arg),
                                  void *arg);

/* --- state ---------------------------------------------------------------- */

/* Returns b's state now (a snapshot). An OPEN breaker whose recovery_timeout
 * has passed still reads OPEN until a call arrives. NULL reads CLOSED.
 * Thread-safety: any thread; reads no clock and takes no lock. Since: 0.1. */
WFLO_EXTERN wflo_breaker_state_t wflo_breaker_state(wflo_breaker_t *b);

/* Returns "closed", "open" or "half_open" (static), or "unknown".
 * Since: 0.1. */
WFLO_EXTERN const char *wflo_breaker_state_name(wflo_breaker_state_t s);

/* Returns b's state as a JSON object: name (string, null when unnamed),
 * state ("closed" | "open" | "half_open"), failure_count (CLOSED: consecutive
 * failures, or failures in the window; OPEN: the count that opened it, 1 for
 * a failed trial; HALF_OPEN: 0), failure_threshold, success_count (successful
 * trials so far in HALF_OPEN, else 0), success_threshold (integers),
 * recovery_timeout, open_for_seconds (seconds since the circuit last opened,
 * while OPEN or HALF_OPEN; else 0) and time_until_half_open (seconds left
 * before a call may move it to HALF_OPEN while OPEN; else 0) (reals).
 * Returns: a new reference, or NULL (b NULL, out of memory). Thread-safety:
 * any thread. Since: 0.1. */
WFLO_EXTERN json_t *wflo_breaker_state_json(wflo_breaker_t *b);

/* Forces b CLOSED with zeroed counts and an empty window (a
 * circuit_breaker_closed event when it was not CLOSED). Results of calls
 * admitted before it are stale. NULL is a no-op. Thread-safety: any thread.
 * Since: 0.1. */
WFLO_EXTERN void wflo_breaker_reset(wflo_breaker_t *b);

/* Applies a state decided elsewhere (a peer's "opened until T", an
 * operator's switch). OPEN: open now, with until_s (a valid duration)
 * replacing recovery_timeout for this opening only; failure_count reads 0.
 * HALF_OPEN: start probing now. CLOSED: as wflo_breaker_reset(). until_s is
 * ignored except for OPEN. Emits the transition's event as any transition
 * does; forcing OPEN or HALF_OPEN on a breaker already in it starts that
 * state anew and emits too (CLOSED on a closed breaker emits nothing).
 * Returns: 0; WFLO_E_INVAL (b NULL, unknown state, bad until_s).
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN int wflo_breaker_force(wflo_breaker_t *b,
                                   wflo_breaker_state_t state, double until_s);

/* --- statement macro ------------------------------------------------------ */

/* WFLO_WITH_BREAKER(b, rc) { rc = op(); }
 *
 * rc: an int lvalue the caller declared. The block runs once if b admits the
 * call (rc is 0 when the block starts), and not at all otherwise (rc is then
 * WFLO_E_BREAKER_OPEN, or WFLO_E_INVAL for a NULL b). When the block ends
 * normally (or by `continue`), the value in rc is recorded with the block's
 * duration, as wflo_breaker_call() would record fn's result. `break` inside
 * the block leaves this macro, not an enclosing loop.
 *
 * Leaving the block early by `break`, `goto` or `return` records a neutral
 * outcome (the trial slot is freed, no count changes): with gcc and clang the
 * macro declares its permit with __attribute__((cleanup)), which runs
 * wflo_breaker_abandon(). Other compilers: only the normal end (and
 * `continue`) is supported; an early exit leaks the admission, and a
 * HALF_OPEN trial slot stays taken until half_open_max_wait reclaims it.
 * b is evaluated once. Nesting is fine (each use declares its own names). */
#define WFLO__BRK_CAT2(a, b) a##b
#define WFLO__BRK_CAT(a, b) WFLO__BRK_CAT2(a, b)
#if defined(__GNUC__) || defined(__clang__)
#define WFLO__BRK_CLEANUP __attribute__((cleanup(wflo_breaker_abandon)))
#else
#define WFLO__BRK_CLEANUP
#endif
#ifdef __COUNTER__
#define WFLO_WITH_BREAKER(b, rc) WFLO__WITH_BREAKER(b, rc, __COUNTER__)
#else
#define WFLO_WITH_BREAKER(b, rc) WFLO__WITH_BREAKER(b, rc, __LINE__)
#endif
/* clang-format off */
#define WFLO__BRK_P(n) WFLO__BRK_CAT(wflo__brk_permit_, n)
#define WFLO__BRK_GO(n) WFLO__BRK_CAT(wflo__brk_go_, n)
#define WFLO__WITH_BREAKER(b, rc, n)                                          \
  for (wflo_breaker_permit_t WFLO__BRK_P(n) WFLO__BRK_CLEANUP,                \
       *WFLO__BRK_GO(n) =                                                     \
           ((rc) = wflo_breaker_acquire_timed((b), &WFLO__BRK_P(n))) == 0     \
               ? &WFLO__BRK_P(n)                                              \
               : NULL;                                                        \
       WFLO__BRK_GO(n) != NULL;                                               \
       WFLO__BRK_GO(n) = NULL,                                                \
       (void)wflo_breaker_record_timed(&WFLO__BRK_P(n), (rc)))
/* clang-format on */

#ifdef __cplusplus
}
#endif

#endif /* WFLO_BREAKER_H */
