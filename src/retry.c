/* Retry: policy (defaults, validation, JSON), backoff, the retry decision,
 * events, and the sync path (wflo_retry_execute and WFLO_RETRY).
 *
 * The sync success path is meant to cost about a direct call: one cheap
 * validity check, one thread-local store, the call. No clock read (unless an
 * overall timeout is set), no allocation, no event. Everything else lives in
 * the out-of-line failure path. */
#include "internal/retry.h"

#include "internal/config.h"
#include "internal/loop.h"
#include "internal/metrics.h"

#if defined(__GNUC__) || defined(__clang__)
#define WFLO__NOINLINE __attribute__((noinline))
#else
#define WFLO__NOINLINE
#endif

/* The JSON loader writes enums as int. */
_Static_assert(sizeof(wflo_backoff_t) == sizeof(int),
               "enum must be int-sized");

/* --- policy -------------------------------------------------------------- */

static const char *const strategy_names[] = {"exponential", "linear", "fixed",
                                             "decorrelated", NULL};

/* Owned slots in reserved[]: 0 = name, 1 = error list (config.c layout). */
static const wflo__field_t policy_fields[] = {
    {"name", WFLO__F_STRING, offsetof(wflo_retry_policy_t, name), 0,
     offsetof(wflo_retry_policy_t, reserved[0]), NULL},
    {"max_retries", WFLO__F_INT, offsetof(wflo_retry_policy_t, max_retries), 0,
     0, NULL},
    {"base_delay", WFLO__F_DURATION, offsetof(wflo_retry_policy_t, base_delay),
     0, 0, NULL},
    {"max_delay", WFLO__F_DURATION, offsetof(wflo_retry_policy_t, max_delay),
     0, 0, NULL},
    {"multiplier", WFLO__F_DOUBLE, offsetof(wflo_retry_policy_t, multiplier),
     0, 0, NULL},
    {"strategy", WFLO__F_ENUM, offsetof(wflo_retry_policy_t, strategy), 0, 0,
     strategy_names},
    {"jitter", WFLO__F_BOOL, offsetof(wflo_retry_policy_t, jitter), 0, 0,
     NULL},
    {"jitter_factor", WFLO__F_DOUBLE,
     offsetof(wflo_retry_policy_t, jitter_factor), 0, 0, NULL},
    {"timeout", WFLO__F_DURATION, offsetof(wflo_retry_policy_t, timeout), 0, 0,
     NULL},
    {"retryable_errors", WFLO__F_ERRLIST,
     offsetof(wflo_retry_policy_t, retryable_errors),
     offsetof(wflo_retry_policy_t, retryable_errors_count),
     offsetof(wflo_retry_policy_t, reserved[1]), NULL},
};

void wflo_retry_policy_init(wflo_retry_policy_t *p) {
  if (p == NULL)
    return;
  memset(p, 0, sizeof(*p));
  p->name = NULL;
  p->max_retries = WFLO_RETRY_DEFAULT_MAX_RETRIES;
  p->base_delay = WFLO_RETRY_DEFAULT_BASE_DELAY;
  p->max_delay = WFLO_RETRY_DEFAULT_MAX_DELAY;
  p->multiplier = WFLO_RETRY_DEFAULT_MULTIPLIER;
  p->strategy = WFLO_RETRY_DEFAULT_STRATEGY;
  p->jitter = WFLO_RETRY_DEFAULT_JITTER;
  p->jitter_factor = WFLO_RETRY_DEFAULT_JITTER_FACTOR;
  p->timeout = WFLO_RETRY_DEFAULT_TIMEOUT;
  p->retryable_errors = NULL;
  p->retryable_errors_count = 0;
  p->is_retryable = NULL;
  p->on_retry = NULL;
  p->breaker = NULL;
  p->user_data = NULL;
}

void wflo_retry_policy_clear(wflo_retry_policy_t *p) {
  if (p != NULL)
    wflo__config_free_owned(policy_fields, WFLO_ARRAY_SIZE(policy_fields), p);
}

bool wflo__retry_errlist_ok(const int *list, size_t n) {
  size_t i;
  if (list == NULL)
    return n == 0;
  for (i = 0; i < n; i++)
    if (list[i] >= 0)
      return false;
  return true;
}

static int invalid(const char *field, const char *reason, char *errbuf,
                   size_t len) {
  return wflo__config_invalid(WFLO__RETRY_WHAT, field, reason, errbuf, len);
}

static int check_multiplier(const wflo_retry_policy_t *p, char *errbuf,
                            size_t len) {
  double m = p->multiplier;
  if (p->strategy == WFLO_BACKOFF_EXPONENTIAL && !(m >= 1.0 && m <= DBL_MAX))
    return invalid("multiplier",
                   "must be finite and >= 1 for exponential backoff", errbuf,
                   len);
  if (p->strategy == WFLO_BACKOFF_LINEAR && !(m > 0.0 && m <= DBL_MAX))
    return invalid("multiplier", "must be finite and > 0 for linear backoff",
                   errbuf, len);
  return 0;
}

/* Field order follows the struct; the first bad field wins. */
int wflo_retry_policy_validate(const wflo_retry_policy_t *p, char *errbuf,
                               size_t len) {
  int rc;
  if (p == NULL) {
    wflo__errbuf(errbuf, len, "%s: NULL policy", WFLO__RETRY_WHAT);
    return WFLO_E_INVAL;
  }
  if (p->max_retries < 0)
    return invalid("max_retries", "must not be negative", errbuf, len);
  if ((rc = wflo__check_duration(WFLO__RETRY_WHAT, "base_delay", p->base_delay,
                                 errbuf, len)) != 0 ||
      (rc = wflo__check_duration(WFLO__RETRY_WHAT, "max_delay", p->max_delay,
                                 errbuf, len)) != 0)
    return rc;
  if (p->max_delay < p->base_delay)
    return invalid("max_delay", "must not be below base_delay", errbuf, len);
  if ((unsigned)p->strategy > (unsigned)WFLO_BACKOFF_DECORRELATED)
    return invalid("strategy", "unknown strategy", errbuf, len);
  if ((rc = check_multiplier(p, errbuf, len)) != 0)
    return rc;
  if (!(p->jitter_factor >= 0.0 && p->jitter_factor <= 1.0))
    return invalid("jitter_factor", "must be in [0, 1]", errbuf, len);
  if ((rc = wflo__check_duration(WFLO__RETRY_WHAT, "timeout", p->timeout,
                                 errbuf, len)) != 0)
    return rc;
  /* breaker: any pointer (the breaker module owns its own checks). */
  return wflo__check_err_list(WFLO__RETRY_WHAT, "retryable_errors",
                              p->retryable_errors, p->retryable_errors_count,
                              errbuf, len);
}

int wflo_retry_policy_from_json(const json_t *j, wflo_retry_policy_t *p,
                                char *errbuf, size_t len) {
  int rc;
  if (p == NULL) {
    wflo__errbuf(errbuf, len, "%s: NULL policy", WFLO__RETRY_WHAT);
    return WFLO_E_INVAL;
  }
  wflo_retry_policy_init(p);
  rc = wflo__config_load(j, WFLO__RETRY_WHAT, policy_fields,
                         WFLO_ARRAY_SIZE(policy_fields), p, errbuf, len);
  if (rc == 0)
    rc = wflo_retry_policy_validate(p, errbuf, len);
  if (rc != 0) {
    wflo__config_free_owned(policy_fields, WFLO_ARRAY_SIZE(policy_fields), p);
    wflo_retry_policy_init(p);
  }
  return rc;
}

/* --- backoff ------------------------------------------------------------- */

/* base * m^n by binary exponentiation, saturating at max: at most 31 steps
 * for any int n and no pow() call (which alone costs more than the whole
 * 20 ns budget). m >= 1 and base > 0, so the running product only grows and
 * can reach +inf but never NaN; the first partial product at or above max
 * ends it. */
static double exp_sat(double base, double m, unsigned n, double max) {
  double r = base;
  if (base == 0.0 || m == 1.0)
    return base;
  for (;;) {
    if (n & 1u) {
      r *= m;
      if (r >= max)
        return max;
    }
    n >>= 1;
    if (n == 0)
      return r;
    m *= m;
  }
}

double wflo__retry_backoff(const wflo_retry_policy_t *p, int n, double prev) {
  double base = p->base_delay, max = p->max_delay, d, f, hi;
  if (n < 0)
    n = 0;
  switch (p->strategy) {
  case WFLO_BACKOFF_EXPONENTIAL:
    d = exp_sat(base, p->multiplier, (unsigned)n, max);
    break;
  case WFLO_BACKOFF_LINEAR:
    /* <= 1e9 * 2^31 * DBL_MAX: may be +inf, never NaN (multiplier finite). */
    d = base * ((double)n + 1.0) * p->multiplier;
    break;
  case WFLO_BACKOFF_DECORRELATED:
    if (n == 0 || !(prev >= base))
      prev = base;
    if (prev > max)
      prev = max;
    d = wflo__rng_uniform(base, 3.0 * prev);
    break;
  case WFLO_BACKOFF_FIXED:
  default:
    d = base;
    break;
  }
  if (!(d <= max))
    d = max;
  f = p->jitter_factor;
  if (p->jitter && f > 0.0 && d > 0.0) {
    /* Cap before jitter: at the cap delays still spread over
     * [max * (1 - f), max], so clients at the cap do not retry in step. */
    hi = d * (1.0 + f);
    d = wflo__rng_uniform(d * (1.0 - f), hi < max ? hi : max);
  }
  return d;
}

double wflo_backoff_delay(const wflo_retry_policy_t *p, int n, double prev) {
  if (wflo__unlikely(p == NULL || !wflo__retry_policy_ok(p)))
    return NAN;
  return wflo__retry_backoff(p, n, prev);
}

/* --- decision and events ------------------------------------------------- */

bool wflo__retry_is_retryable(const wflo_retry_policy_t *p, int err) {
  size_t i;
  if (p->is_retryable != NULL)
    return p->is_retryable(err, p->user_data);
  if (p->retryable_errors_count > 0) {
    for (i = 0; i < p->retryable_errors_count; i++)
      if (p->retryable_errors[i] == err)
        return true;
    return false;
  }
  return !wflo__err_is_verdict(err);
}

/* Also the one place both paths pass when a retry is scheduled: the delay
 * histogram is fed here, before the level check. */
void wflo__retry_emit_scheduled(const wflo_retry_policy_t *p, int attempt,
                                int err, double delay) {
  wflo__histogram_observe_labels(WFLO__M_RETRY_DELAY, NULL, delay);
  if (!wflo__event_on(WFLO_LOG_WARN))
    return;
  wflo__emit("retry_scheduled", WFLO_LOG_WARN,
             wflo__json_obj("policy", wflo__json_string(p->name), "attempt",
                            json_integer(attempt), "error",
                            wflo__json_err(err), "delay_seconds",
                            wflo__json_real(delay), NULL));
}

void wflo__retry_emit_succeeded(const wflo_retry_policy_t *p, int attempts) {
  if (!wflo__event_on(WFLO_LOG_INFO))
    return;
  wflo__emit("retry_succeeded", WFLO_LOG_INFO,
             wflo__json_obj("policy", wflo__json_string(p->name), "attempts",
                            json_integer(attempts), NULL));
}

void wflo__retry_emit_exhausted(const wflo_retry_policy_t *p, int attempts,
                                int err) {
  if (!wflo__event_on(WFLO_LOG_ERROR))
    return;
  wflo__emit("retry_exhausted", WFLO_LOG_ERROR,
             wflo__json_obj("policy", wflo__json_string(p->name), "attempts",
                            json_integer(attempts), "error",
                            wflo__json_err(err), NULL));
}

/* --- attempt metrics --------------------------------------------------------
 * wflo_retry_attempts_total{policy,result}, one count per attempt. The sync
 * success path pays for it on every call, and a lookup by label text (hash
 * and compare) would cost more than the whole path, so the sync engine
 * keeps per-thread caches of its own: keyed by the policy's name pointer,
 * confirmed against the name's text (a caller may rewrite a name buffer
 * between calls; DESIGN lends pointers for one call only), trusted while
 * wflo_metrics_reset() has not run since they were filled. A NULL name
 * (the default) skips the text compare. The success path reads a small
 * initial-exec one (no __tls_get_addr call in the shared library); the
 * three series of the last policy seen live in an ordinary one. */

enum { RES_SUCCESS, RES_RETRY, RES_FAILURE };
static const char *const result_names[] = {"success", "retry", "failure"};

typedef struct attempt_cache {
  uint64_t gen; /* wflo__metric_gen() when filled; 0: empty */
  const char *name;
  wflo__metric_series_t *s[3]; /* by result */
} attempt_cache_t;

/* The success series' cell of this thread's shard, worked out at fill time
 * (slot: the shard it belongs to, rechecked on use). */
typedef struct success_cache {
  uint64_t gen;
  const char *name;
  const char *label; /* the series' copy of the name */
  _Atomic uint64_t *cell;
  unsigned slot;
} success_cache_t;

static WFLO_THREAD_LOCAL attempt_cache_t tl_attempts;
static WFLO_THREAD_LOCAL WFLO__TLS_FAST success_cache_t tl_success;

static bool cache_hit(uint64_t gen, const char *name,
                      const wflo__metric_series_t *s,
                      const wflo_retry_policy_t *p) {
  return gen == wflo__metric_gen() && name == p->name &&
         (p->name == NULL || strcmp(s->labels[0], p->name) == 0);
}

/* The series of (p's name, res), or NULL when out of memory. */
static wflo__metric_series_t *attempt_series(const wflo_retry_policy_t *p,
                                             int res) {
  attempt_cache_t *c = &tl_attempts;
  const char *labels[2] = {p->name, NULL};
  uint64_t gen;
  int i;
  if (c->gen != 0 && cache_hit(c->gen, c->name, c->s[0], p))
    return c->s[res];
  gen = wflo__metric_gen();
  c->gen = 0;
  for (i = 0; i < 3; i++) {
    labels[1] = result_names[i];
    c->s[i] = wflo__metric_find(WFLO__M_RETRY_ATTEMPTS, labels);
    if (c->s[i] == NULL)
      return NULL; /* not counted; looked up again next time */
  }
  c->name = p->name;
  c->gen = gen;
  return c->s[res];
}

/* Every count but a hit of the success cache: also the thread's first
 * count (which claims its shard). */
static WFLO__NOINLINE void count_attempt(const wflo_retry_policy_t *p,
                                         int res) {
  wflo__metric_series_t *s;
  unsigned slot;
  if (!wflo__metrics_active() || (s = attempt_series(p, res)) == NULL)
    return;
  slot = wflo__metric_slot();
  if (res == RES_SUCCESS) {
    tl_success.gen = tl_attempts.gen;
    tl_success.name = p->name;
    tl_success.label = s->labels[0];
    tl_success.cell = wflo__metric_cell(s, slot, 0);
    tl_success.slot = slot;
  }
  wflo__metric_cell_add(wflo__metric_cell(s, slot, 0), slot, 1);
}

static inline void count_success(const wflo_retry_policy_t *p) {
  success_cache_t *c = &tl_success;
  unsigned slot;
  if (!wflo__metrics_active())
    return;
  slot = wflo__tl_metric_slot;
  /* An empty cache has gen 0, which wflo__metric_gen() never returns. */
  if (wflo__likely(c->gen == wflo__metric_gen() && c->name == p->name &&
                   c->slot == slot &&
                   (p->name == NULL || strcmp(c->label, p->name) == 0))) {
    wflo__metric_cell_add(c->cell, slot, 1);
    return;
  }
  count_attempt(p, RES_SUCCESS);
}

/* A failed attempt that ends the retry: counted, then its final result. */
static int attempt_final(const wflo_retry_policy_t *p, int fin) {
  count_attempt(p, RES_FAILURE);
  return fin;
}

/* --- sync engine -----------------------------------------------------------
 * wflo_retry_execute and WFLO_RETRY share one engine whose state is a
 * wflo_retry_guard_t (on the caller's stack either way). */

enum { G_FRESH = 0, G_ATTEMPT = 1, G_DONE = 2 };

/* Negative: no hint. Set by wflo_retry_hint() during an attempt, cleared
 * when the next attempt starts, consumed after a failure.
 * initial-exec: the success path writes it on every call, and in the shared
 * library the default (global-dynamic) model costs a __tls_get_addr call
 * each time. Eight bytes fit glibc's static TLS reserve even when libwflo
 * is dlopen()ed. */
#if defined(__GNUC__) || defined(__clang__)
#define WFLO__TLS_IE __attribute__((tls_model("initial-exec")))
#else
#define WFLO__TLS_IE
#endif
static WFLO_THREAD_LOCAL WFLO__TLS_IE double tl_hint = -1.0;

void wflo_retry_hint(double seconds) {
  if (seconds >= 0.0) /* false for NaN and negatives: ignored */
    tl_hint = seconds;
}

/* Every sync attempt, from execute and from WFLO_RETRY, starts and ends
 * here: the one place where per-attempt work goes. */
static inline void attempt_begin(void) { tl_hint = -1.0; }

/* neutral: WFLO_RETRY's block was left early (break, return, goto), so
 * the attempt has no result and rc must not be read. A hint is kept only
 * for on_failure: one left by a successful or abandoned attempt would
 * otherwise reach an enclosing retry's next failure. */
static inline void attempt_end(int rc, bool neutral) {
  if (neutral || rc >= 0)
    tl_hint = -1.0;
}

/* A policy's breaker guards each attempt: a refusal is the attempt's
 * result (WFLO_E_BREAKER_OPEN, not retried unless the policy says so)
 * without running it; an admitted attempt's result is recorded with its
 * duration. Out of line: the common path has no breaker. */
static WFLO__NOINLINE int run_guarded(const wflo_retry_policy_t *p,
                                      int (*fn)(void *arg), void *arg) {
  wflo_breaker_permit_t permit;
  int rc = wflo_breaker_acquire_timed(p->breaker, &permit);
  if (rc == 0) {
    rc = fn(arg);
    (void)wflo_breaker_record_timed(&permit, rc);
  }
  attempt_end(rc, false);
  return rc;
}

static inline int run_attempt(const wflo_retry_policy_t *p,
                              int (*fn)(void *arg), void *arg) {
  int rc;
  attempt_begin();
  if (wflo__unlikely(p->breaker != NULL))
    return run_guarded(p, fn, arg);
  rc = fn(arg);
  attempt_end(rc, false);
  return rc;
}

/* The overall deadline of a retry starting now, or 0 for none. Read the
 * clock only when there will be a deadline: a policy without timeout (or
 * without retries, which never waits) costs no clock read. A positive
 * timeout too small to count in ns still gets a deadline (1 ns), so 0 keeps
 * meaning "none". */
static inline uint64_t start_deadline(const wflo_retry_policy_t *p) {
  uint64_t ns;
  if (wflo__likely(!(p->timeout > 0.0)) || p->max_retries == 0)
    return 0;
  ns = wflo__s_to_ns(p->timeout);
  return wflo__retry_add_sat(wflo__now_ns(), ns > 0 ? ns : 1);
}

static void guard_init(wflo_retry_guard_t *g, const wflo_retry_policy_t *p,
                       uint64_t deadline) {
  g->policy = p;
  g->retries = 0;
  g->prev_delay = p->base_delay;
  g->total_delay = 0.0;
  g->deadline_ns = deadline;
  g->has_deadline = deadline != 0;
}

/* Why the policy was refused, with the message and event of validation. */
static int refuse_invalid(const wflo_retry_policy_t *p) {
  int rc = wflo_retry_policy_validate(p, NULL, 0);
  return rc != 0 ? rc : WFLO_E_INVAL; /* valid policy: fn was NULL */
}

/* After failed attempt `err`: returns 0 when the next attempt must run (the
 * wait is done), else the retry's final result. */
static int on_failure(wflo_retry_guard_t *g, int err) {
  const wflo_retry_policy_t *p = g->policy;
  int attempts = wflo__retry_attempts(g->retries);
  double delay, hint = tl_hint;
  uint64_t ns;

  tl_hint = -1.0;
  if (!wflo__retry_is_retryable(p, err))
    return attempt_final(p, err);
  if (g->retries >= p->max_retries) {
    wflo__retry_emit_exhausted(p, attempts, err);
    return attempt_final(p, err);
  }
  if (hint >= 0.0) {
    if (hint > p->max_delay) { /* never sleep past the policy */
      wflo__retry_emit_exhausted(p, attempts, err);
      return attempt_final(p, err);
    }
    delay = hint;
  } else {
    delay = wflo__retry_backoff(p, g->retries, g->prev_delay);
  }
  ns = wflo__s_to_ns(delay);
  /* A blocking wait on a loop thread would stall every other operation of
   * that loop: refuse to wait there (zero waits are harmless). Checked here
   * rather than up front so the success path stays a direct call. */
  if (ns > 0 && wflo__in_loop_callback())
    return attempt_final(p, WFLO_E_STATE);
  if (g->has_deadline &&
      wflo__retry_add_sat(wflo__now_ns(), ns) > g->deadline_ns) {
    wflo__retry_emit_exhausted(p, attempts, WFLO_E_TIMEOUT);
    return attempt_final(p, WFLO_E_TIMEOUT);
  }
  count_attempt(p, RES_RETRY);
  if (p->on_retry != NULL)
    p->on_retry(g->retries + 1, err, delay, p->user_data);
  wflo__retry_emit_scheduled(p, g->retries + 1, err, delay);
  if (ns > 0)
    wflo__sleep_ns(ns);
  g->total_delay += delay;
  g->prev_delay = delay;
  g->retries++;
  return 0;
}

static void set_report(wflo_retry_report_t *r, int attempts, double delay,
                       int last_error) {
  if (r == NULL)
    return;
  r->attempts = attempts;
  r->total_delay = delay;
  r->last_error = last_error;
}

/* The first attempt failed with rc: retry until done. Out of line so the
 * success path in wflo_retry_execute_ex stays small. */
static WFLO__NOINLINE int retry_slow(const wflo_retry_policy_t *p,
                                     int (*fn)(void *arg), void *arg, int rc,
                                     uint64_t deadline,
                                     wflo_retry_report_t *report) {
  wflo_retry_guard_t g;
  int fin;
  guard_init(&g, p, deadline);
  for (;;) {
    fin = on_failure(&g, rc);
    if (fin != 0)
      break;
    rc = run_attempt(p, fn, arg);
    if (rc >= 0) {
      count_success(p);
      wflo__retry_emit_succeeded(p, wflo__retry_attempts(g.retries));
      fin = rc;
      break;
    }
  }
  set_report(report, wflo__retry_attempts(g.retries), g.total_delay,
             rc < 0 ? rc : 0);
  return fin;
}

int wflo_retry_execute_ex(const wflo_retry_policy_t *p, int (*fn)(void *arg),
                          void *arg, wflo_retry_report_t *report) {
  uint64_t deadline;
  int rc;
  if (wflo__unlikely(p == NULL || fn == NULL || !wflo__retry_policy_ok(p))) {
    set_report(report, 0, 0.0, 0);
    return refuse_invalid(p);
  }
  deadline = start_deadline(p);
  rc = run_attempt(p, fn, arg);
  if (wflo__likely(rc >= 0)) {
    count_success(p);
    set_report(report, 1, 0.0, 0);
    return rc;
  }
  return retry_slow(p, fn, arg, rc, deadline, report);
}

int wflo_retry_execute(const wflo_retry_policy_t *p, int (*fn)(void *arg),
                       void *arg) {
  return wflo_retry_execute_ex(p, fn, arg, NULL);
}

/* --- WFLO_RETRY ---------------------------------------------------------- */

/* Starts an attempt of the block: 0 when the block must run, else a
 * breaker's refusal, which is the attempt's result without running it. */
static int guard_start(wflo_retry_guard_t *g) {
  attempt_begin();
  g->state = G_ATTEMPT;
  if (wflo__likely(g->policy->breaker == NULL))
    return 0;
  return wflo_breaker_acquire_timed(g->policy->breaker, &g->permit);
}

/* The attempt ended with rc, admitted (its result is recorded on the
 * breaker) or refused by the breaker: decide, wait, and start attempts until
 * one must run the block (true) or the retry is over (false). A loop, not
 * recursion: refusals may repeat up to max_retries times. */
static bool guard_after(wflo_retry_guard_t *g, int rc, bool admitted) {
  int fin;
  for (;;) {
    if (admitted && g->policy->breaker != NULL)
      (void)wflo_breaker_record_timed(&g->permit, rc);
    attempt_end(rc, false);
    g->state = G_DONE;
    if (rc >= 0) {
      count_success(g->policy);
      if (g->retries > 0)
        wflo__retry_emit_succeeded(g->policy,
                                   wflo__retry_attempts(g->retries));
      return false;
    }
    fin = on_failure(g, rc);
    if (fin != 0) {
      *g->rc = fin;
      return false;
    }
    rc = guard_start(g);
    if (rc == 0)
      return true;
    *g->rc = rc;
    admitted = false;
  }
}

static bool guard_first(wflo_retry_guard_t *g) {
  const wflo_retry_policy_t *p = g->policy;
  int rc;
  g->state = G_DONE;
  if (p == NULL || !wflo__retry_policy_ok(p)) {
    *g->rc = refuse_invalid(p);
    return false;
  }
  guard_init(g, p, start_deadline(p));
  rc = guard_start(g);
  if (rc == 0)
    return true;
  *g->rc = rc;
  return guard_after(g, rc, false);
}

bool wflo_retry_guard_next(wflo_retry_guard_t *g) {
  if (g->state == G_FRESH)
    return guard_first(g);
  if (g->state != G_ATTEMPT)
    return false;
  return guard_after(g, *g->rc, true);
}

void wflo_retry_guard_end(wflo_retry_guard_t *g) {
  /* Only an early exit (break, return, goto) leaves an attempt open: it
   * ends without a result, rc stays as the block left it. */
  if (g->state == G_ATTEMPT) {
    if (g->policy->breaker != NULL)
      wflo_breaker_abandon(&g->permit); /* neutral: frees a trial slot */
    attempt_end(0, true);
  }
  g->state = G_DONE;
}
