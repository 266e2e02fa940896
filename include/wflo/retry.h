/* libwflo retry module: retry with backoff, sync and on a libuv loop.
 * Include <wflo.h>, not this file.
 *
 * A policy says how often and how long to wait; one policy serves any number
 * of concurrent calls (sync calls only read it). Three ways to retry:
 * - wflo_retry_execute(policy, fn, arg): calls fn until it succeeds (>= 0),
 *   sleeping through libwflo's clock between attempts (wflo_clock_set makes
 *   tests run on virtual time);
 * - WFLO_RETRY(policy, rc) { rc = op(); }: the same, as a statement;
 * - wflo_retry_start(loop, policy, start, arg, done, &handle): on a libuv
 *   loop, each attempt started by `start` and reported with wflo_call_done.
 *
 * Semantics (DESIGN.md "Retry"):
 * - Delay before retry n (n = 0 for the first retry): exponential
 *   base_delay * multiplier^n, linear base_delay * (n + 1) * multiplier,
 *   fixed base_delay, decorrelated U(base_delay, 3 * prev) where prev is the
 *   previous delay (base_delay for the first). That delay d is capped at
 *   max_delay; with jitter the delay is drawn uniformly from
 *   [d * (1 - jitter_factor), min(d * (1 + jitter_factor), max_delay)].
 *   Every n, even INT_MAX, gives a finite delay.
 * - max_retries = N makes at most N + 1 calls; 0 makes exactly one.
 * - What is retried: the is_retryable predicate if set; else, when an error
 *   list is set, exactly the listed codes; else every negative code except
 *   libwflo's own verdicts (WFLO_E_BREAKER_OPEN, WFLO_E_BUDGET_EXCEEDED,
 *   WFLO_E_CANCELED, WFLO_E_INVAL, WFLO_E_NOMEM, WFLO_E_STATE,
 *   WFLO_E_QUEUE_FULL). A non-retryable error returns at once, unchanged.
 *   Exhaustion returns the last error unchanged.
 * - A server's hint (Retry-After) replaces the computed delay (no jitter on
 *   a hint) when it is <= max_delay; a larger one ends the retry with the
 *   operation's error.
 * - Overall timeout (0 = none): a wait that would end past the deadline is
 *   not taken (one ending exactly at it is) and the retry returns
 *   WFLO_E_TIMEOUT; the last operation error stays in the report. A running
 *   attempt is never interrupted.
 * - A zero delay skips the sleep (or timer) entirely.
 *
 * Events (wflo_set_event_handler), `policy` is the policy's name (null when
 * unnamed) and `error` carries wflo_err_name():
 * - retry_scheduled (warn): policy, attempt, error, delay_seconds; before
 *   each wait, after on_retry.
 * - retry_succeeded (info): policy, attempts; only when a retry actually
 *   happened (attempts > 1): a first-try success emits nothing.
 * - retry_exhausted (error): policy, attempts, error; when the retries run
 *   out, a hint exceeds max_delay (error: the operation's error) or the
 *   overall timeout ends the retry (error: WFLO_E_TIMEOUT). A non-retryable
 *   error and a cancel emit nothing.
 */
#ifndef WFLO_RETRY_H
#define WFLO_RETRY_H

#include "breaker.h"
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Backoff strategies. JSON names: "exponential", "linear", "fixed",
 * "decorrelated". */
typedef enum wflo_backoff {
  WFLO_BACKOFF_EXPONENTIAL = 0,
  WFLO_BACKOFF_LINEAR = 1,
  WFLO_BACKOFF_FIXED = 2,
  WFLO_BACKOFF_DECORRELATED = 3
} wflo_backoff_t;

/* Defaults set by wflo_retry_policy_init(). */
#define WFLO_RETRY_DEFAULT_MAX_RETRIES 3
#define WFLO_RETRY_DEFAULT_BASE_DELAY 1.0
#define WFLO_RETRY_DEFAULT_MAX_DELAY 60.0
#define WFLO_RETRY_DEFAULT_MULTIPLIER 2.0
#define WFLO_RETRY_DEFAULT_STRATEGY WFLO_BACKOFF_EXPONENTIAL
#define WFLO_RETRY_DEFAULT_JITTER true
#define WFLO_RETRY_DEFAULT_JITTER_FACTOR 0.1
#define WFLO_RETRY_DEFAULT_TIMEOUT 0.0

/* A retry policy: a plain struct; run wflo_retry_policy_init() first, then
 * set fields. Sync calls borrow every pointer for the duration of the call;
 * wflo_retry_start() copies the policy (name and error list included). */
typedef struct wflo_retry_policy {
  /* Name carried by events as `policy`; may be NULL. Borrowed. */
  const char *name;
  /* Retries after the first call: >= 0. */
  int max_retries;
  /* Seconds; valid durations (finite, >= 0, <= WFLO_DURATION_MAX), with
   * max_delay >= base_delay. */
  double base_delay;
  double max_delay;
  /* Exponential: finite and >= 1; linear: finite and > 0; ignored (any
   * value) by fixed and decorrelated. */
  double multiplier;
  wflo_backoff_t strategy;
  bool jitter;
  /* In [0, 1], checked even when jitter is off. */
  double jitter_factor;
  /* Overall deadline in seconds from the start of the retry; 0 = none. */
  double timeout;
  /* Codes to retry (all negative); used when is_retryable is NULL and
   * retryable_errors_count > 0. Borrowed. */
  const int *retryable_errors;
  size_t retryable_errors_count;
  /* Decides what is retried when set; called with the failed attempt's
   * negative code, on the thread running the retry. */
  bool (*is_retryable)(int err, void *user_data);
  /* Called before each wait: attempt counts retries from 1, delay in
   * seconds. */
  void (*on_retry)(int attempt, int err, double delay, void *user_data);
  /* Optional circuit breaker every attempt goes through. Borrowed. */
  wflo_breaker_t *breaker;
  /* Passed to is_retryable and on_retry. */
  void *user_data;
  /* Private: owned copies of what wflo_retry_policy_from_json() loaded. */
  void *reserved[8];
} wflo_retry_policy_t;

/* What a finished sync retry did. */
typedef struct wflo_retry_report {
  int attempts;       /* calls made, the first included */
  double total_delay; /* seconds slept */
  int last_error;     /* the last call's result; 0 after a success */
  int reserved[4];
} wflo_retry_report_t;

/* Sets every field of *p to its default (WFLO_RETRY_DEFAULT_*): name NULL,
 * no error list, no predicate, no on_retry, breaker NULL, user_data NULL,
 * reserved space zeroed. NULL is a no-op. Thread-safety: any thread.
 * Since: 0.1. */
WFLO_EXTERN void wflo_retry_policy_init(wflo_retry_policy_t *p);

/* Frees the name and error list that wflo_retry_policy_from_json() loaded
 * into *p; a field still pointing at such a copy becomes NULL (count 0),
 * other fields are left as they are. NULL is a no-op; calling it twice is
 * harmless. Thread-safety: not while another thread uses *p. Since: 0.1. */
WFLO_EXTERN void wflo_retry_policy_clear(wflo_retry_policy_t *p);

/* Checks every field of *p. Returns: 0; WFLO_E_INVAL for NULL or a bad
 * field, with "retry_policy.FIELD: reason" in errbuf (may be NULL) and a
 * config_invalid event (what "retry_policy", field, reason); the first bad
 * field wins. Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN int wflo_retry_policy_validate(const wflo_retry_policy_t *p,
                                           char *errbuf, size_t len);

/* Loads a policy from a JSON object: *p is initialised to the defaults
 * first (it need not be initialised before), then every key is applied.
 * Keys are the C field names: name, max_retries, base_delay, max_delay,
 * multiplier, strategy ("exponential" | "linear" | "fixed" |
 * "decorrelated"), jitter, jitter_factor, timeout, retryable_errors (an
 * array of negative numbers or names: "WFLO_E_TIMEOUT", "ETIMEDOUT",
 * "UV_ETIMEDOUT"). Function pointers, user_data and breaker cannot be
 * loaded. Returns: 0; WFLO_E_PARSE for a non-object, an unknown key or a
 * wrong JSON type; WFLO_E_INVAL for a well-formed but invalid value (unknown
 * strategy or error name, a value the validation refuses) or NULL j or p;
 * WFLO_E_NOMEM. On failure *p holds the defaults and nothing is allocated.
 * Ownership: j is borrowed. On success the loaded name and list are library
 * memory inside *p: free them with wflo_retry_policy_clear() (memory a
 * previous call loaded into *p is not freed by this call).
 * Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int
wflo_retry_policy_from_json(const json_t *j, wflo_retry_policy_t *p,
                            char *errbuf, size_t len);

/* Returns the delay in seconds before retry n (n = 0: the first retry;
 * negative n counts as 0) under policy p, jitter included; prev is the
 * previous delay returned, used by the decorrelated strategy only (its first
 * retry uses base_delay whatever prev says; a prev below base_delay or NaN
 * counts as base_delay, one above max_delay as max_delay). The result is
 * finite and in [0, max_delay] for every n. Returns NAN when p is NULL or
 * invalid (no event, no message: use wflo_retry_policy_validate).
 * Thread-safety: any thread (jitter uses the calling thread's generator).
 * Since: 0.1. */
WFLO_EXTERN double wflo_backoff_delay(const wflo_retry_policy_t *p, int n,
                                      double prev);

/* Calls fn(arg) until it returns >= 0 or the policy says stop, sleeping
 * between attempts through libwflo's clock. Returns: fn's first result >= 0;
 * otherwise fn's last error unchanged (exhausted, not retryable, or a hint
 * above max_delay); WFLO_E_TIMEOUT when the overall timeout ended it;
 * WFLO_E_INVAL for a NULL or invalid policy or NULL fn (fn never called; a
 * config_invalid event); WFLO_E_STATE when a non-zero wait is due while the
 * caller is inside a libwflo loop callback, where blocking would stall the
 * loop (use wflo_retry_start there; zero waits are allowed, and the report
 * keeps the last operation error). A first-try success reads no clock
 * (unless timeout > 0), allocates nothing and emits nothing.
 * Ownership: p and its pointers are borrowed for the call.
 * Thread-safety: any thread; the same policy may be used by many threads at
 * once. Callbacks: fn, is_retryable and on_retry run on the calling thread,
 * inside this call. Since: 0.1. */
WFLO_EXTERN int wflo_retry_execute(const wflo_retry_policy_t *p,
                                   int (*fn)(void *arg), void *arg);

/* wflo_retry_execute() that also fills *report (may be NULL) on every
 * return: attempts made (0 when refused before any call), seconds slept, and
 * the last call's result (0 after a success or when no call was made).
 * Returns, ownership, thread-safety: as wflo_retry_execute(). Since: 0.1. */
WFLO_EXTERN int wflo_retry_execute_ex(const wflo_retry_policy_t *p,
                                      int (*fn)(void *arg), void *arg,
                                      wflo_retry_report_t *report);

/* Gives the innermost sync retry running on this thread a server's hint
 * (Retry-After, pushback) for the wait after the current attempt: call it
 * from the operation (fn or the WFLO_RETRY block), after any nested retry
 * it runs has returned. A hint <= max_delay replaces the computed delay
 * (no jitter); a larger one (INFINITY included) ends the retry with the
 * attempt's error. NaN and negative values are ignored; the last hint of an
 * attempt wins; a hint is forgotten when the next attempt starts and is
 * ignored when the attempt succeeds. Outside a retry it has no effect.
 * Thread-safety: affects the calling thread only. Since: 0.1. */
WFLO_EXTERN void wflo_retry_hint(double seconds);

/* Starts an async retry on loop: `start(call, arg)` starts each attempt (it
 * runs on the loop thread, from a loop callback, never inside this call) and
 * the attempt reports its result with wflo_call_done(call, err) exactly once,
 * from inside start or later, on the loop thread. Waits are libuv timers
 * (real time); the overall timeout is measured on libwflo's clock. When the
 * retry ends, done(err, arg) runs exactly once on the loop thread: err is the
 * successful attempt's result (>= 0), the last error, WFLO_E_TIMEOUT, or
 * WFLO_E_CANCELED. start, done, is_retryable and on_retry run inside the
 * context that was current when the retry started.
 * Returns: 0; WFLO_E_INVAL (NULL loop, start or done; NULL or invalid
 * policy: a config_invalid event); WFLO_E_NOMEM; a UV_E* code from creating
 * the loop's handles. On error nothing was started and done never runs.
 * Ownership: the policy is deep-copied (name, error list); its breaker and
 * user_data are borrowed and must outlive the retry. *handle (handle may be
 * NULL) is borrowed: it is valid until done runs. Inside done,
 * wflo_retry_cancel(handle) returns WFLO_E_STATE; after done returned the
 * handle must not be used (it is freed). Each retry holds a reference on the
 * loop's libwflo state until done has run, so uv_run keeps running.
 * Thread-safety: call it on the loop's thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int
wflo_retry_start(uv_loop_t *loop, const wflo_retry_policy_t *p,
                 void (*start)(wflo_call_t *call, void *arg), void *arg,
                 void (*done)(int err, void *arg), wflo_retry_t **handle);

/* Reports the result of the attempt `call` belongs to: >= 0 success, < 0
 * failure. Call it exactly once per attempt, on the loop thread, from inside
 * start or later; a report after a cancel is legal (it completes the
 * retry). The result is processed from the loop, never inside this call: no
 * user callback runs here. NULL, and a second report for the same attempt,
 * are ignored. Thread-safety: the loop's thread only. Since: 0.1. */
WFLO_EXTERN void wflo_call_done(wflo_call_t *call, int err);

/* wflo_call_done() with a server's hint for the next wait, in seconds: a
 * hint <= max_delay replaces the computed delay, a larger one ends the retry
 * with err; NaN or negative hints are ignored. Since: 0.1. */
WFLO_EXTERN void wflo_call_done_hint(wflo_call_t *call, int err,
                                     double retry_after_s);

/* Cancels an async retry. While a wait (or the first attempt) is pending,
 * the retry completes from the loop soon after this call, never inside it;
 * while an attempt is running, it completes when that attempt reports.
 * Either way, once this returned 0, done receives WFLO_E_CANCELED, whatever
 * the attempt's result. It may be called from start, on_retry,
 * is_retryable or an event handler too.
 * Returns: 0 (also when it was already canceled); WFLO_E_INVAL for NULL;
 * WFLO_E_STATE when done is running (cancel from inside done). Calling it
 * after done returned is undefined: the handle is gone.
 * Thread-safety: the loop's thread only. Since: 0.1. */
WFLO_EXTERN int wflo_retry_cancel(wflo_retry_t *handle);

/* --- WFLO_RETRY ------------------------------------------------------------
 * WFLO_RETRY(policy_ptr, rc) { rc = op(); }
 * Runs the block once per attempt with the semantics of wflo_retry_execute:
 * rc (an int the caller declared) is the attempt's result, which the block
 * must set. After the statement rc holds what wflo_retry_execute would have
 * returned: the success value, the last error, WFLO_E_TIMEOUT, or
 * WFLO_E_INVAL / WFLO_E_STATE (then the block never ran). Use
 * wflo_retry_hint() inside the block for a server's hint.
 * Leaving the block by break, goto or return stops retrying and keeps rc as
 * it is; with gcc and clang nothing leaks on such an exit (cleanup
 * attribute). With other compilers only the normal end is supported.
 * `break` inside the block leaves the WFLO_RETRY statement, not an
 * enclosing loop; `continue` ends the current attempt with rc as its
 * result. policy_ptr is evaluated once. */

/* Private state of one WFLO_RETRY statement; fields are not API. */
typedef struct wflo_retry_guard {
  const wflo_retry_policy_t *policy;
  int *rc;
  int state;
  int retries;
  double prev_delay;
  double total_delay;
  uint64_t deadline_ns;
  bool has_deadline;
  wflo_breaker_permit_t permit; /* the attempt's, when the policy names a
                                   breaker */
  void *reserved[4];
} wflo_retry_guard_t;

/* Helpers behind WFLO_RETRY; not for direct use. next() returns true when
 * the block must run (again); end() is the cleanup for early exits. */
WFLO_EXTERN bool wflo_retry_guard_next(wflo_retry_guard_t *g);
WFLO_EXTERN void wflo_retry_guard_end(wflo_retry_guard_t *g);

#if defined(__GNUC__) || defined(__clang__)
#define WFLO__RETRY_CLEANUP __attribute__((cleanup(wflo_retry_guard_end)))
#else
#define WFLO__RETRY_CLEANUP
#endif

#define WFLO__RETRY_CAT2(a, b) a##b
#define WFLO__RETRY_CAT(a, b) WFLO__RETRY_CAT2(a, b)
#define WFLO__RETRY_G WFLO__RETRY_CAT(wflo_retry_guard_, __LINE__)

/* clang-format off */
#define WFLO_RETRY(policy_ptr, rc)                                            \
  for (wflo_retry_guard_t WFLO__RETRY_CLEANUP WFLO__RETRY_G = {               \
           (policy_ptr), &(rc), 0, 0, 0.0, 0.0, 0, false,                     \
           {WFLO_BREAKER_CLOSED, 0, 0, 0, 0, 0, NULL,                         \
            {NULL, NULL, NULL, NULL}},                                        \
           {NULL, NULL, NULL, NULL}};                                         \
       wflo_retry_guard_next(&WFLO__RETRY_G);)
/* clang-format on */

#ifdef __cplusplus
}
#endif

#endif /* WFLO_RETRY_H */
