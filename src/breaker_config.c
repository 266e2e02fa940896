/* Breaker configuration: defaults, validation (each field named), loading
 * from JSON through the shared table-driven loader, and the effective
 * config a breaker keeps (see wflo__bcfg_t). */
#include "internal/breaker.h"
#include "internal/config.h"

#include <stdlib.h>

#define WHAT "breaker"

static const char *const window_names[] = {"consecutive", "count", "time",
                                           NULL};

/* --- configuration -------------------------------------------------------- */

#define CFG_FIELD(key, kind)                                                  \
  { #key, kind, offsetof(wflo_breaker_config_t, key), 0, 0, NULL }

static const wflo__field_t cfg_fields[] = {
    CFG_FIELD(failure_threshold, WFLO__F_INT),
    CFG_FIELD(recovery_timeout, WFLO__F_DURATION),
    CFG_FIELD(success_threshold, WFLO__F_INT),
    CFG_FIELD(half_open_max_calls, WFLO__F_INT),
    CFG_FIELD(half_open_max_wait, WFLO__F_DURATION),
    {"expected_errors", WFLO__F_ERRLIST,
     offsetof(wflo_breaker_config_t, expected_errors),
     offsetof(wflo_breaker_config_t, expected_errors_count),
     offsetof(wflo_breaker_config_t, reserved), NULL},
    {"window", WFLO__F_ENUM, offsetof(wflo_breaker_config_t, window), 0, 0,
     window_names},
    CFG_FIELD(window_size, WFLO__F_INT),
    CFG_FIELD(minimum_calls, WFLO__F_INT),
    CFG_FIELD(failure_rate_threshold, WFLO__F_DOUBLE),
    CFG_FIELD(slow_call_duration, WFLO__F_DURATION),
    CFG_FIELD(slow_call_rate_threshold, WFLO__F_DOUBLE),
};

/* The JSON loader writes enums as int. */
_Static_assert(sizeof(wflo_window_t) == sizeof(int), "enum size");

void wflo_breaker_config_init(wflo_breaker_config_t *c) {
  if (c == NULL)
    return;
  memset(c, 0, sizeof(*c));
  c->failure_threshold = WFLO_BREAKER_DEFAULT_FAILURE_THRESHOLD;
  c->recovery_timeout = WFLO_BREAKER_DEFAULT_RECOVERY_TIMEOUT;
  c->success_threshold = WFLO_BREAKER_DEFAULT_SUCCESS_THRESHOLD;
  c->half_open_max_calls = WFLO_BREAKER_DEFAULT_HALF_OPEN_MAX_CALLS;
  c->half_open_max_wait = WFLO_BREAKER_DEFAULT_HALF_OPEN_MAX_WAIT;
  c->expected_errors = NULL;
  c->expected_errors_count = 0;
  c->is_failure = NULL;
  c->window = WFLO_BREAKER_DEFAULT_WINDOW;
  c->window_size = WFLO_BREAKER_DEFAULT_WINDOW_SIZE;
  c->minimum_calls = WFLO_BREAKER_DEFAULT_MINIMUM_CALLS;
  c->failure_rate_threshold = WFLO_BREAKER_DEFAULT_FAILURE_RATE_THRESHOLD;
  c->slow_call_duration = WFLO_BREAKER_DEFAULT_SLOW_CALL_DURATION;
  c->slow_call_rate_threshold = WFLO_BREAKER_DEFAULT_SLOW_CALL_RATE_THRESHOLD;
  c->user_data = NULL;
}

void wflo_breaker_config_clear(wflo_breaker_config_t *c) {
  if (c == NULL)
    return;
  wflo__config_free_owned(cfg_fields, WFLO_ARRAY_SIZE(cfg_fields), c);
  wflo_breaker_config_init(c);
}

static int check_range(const char *field, int v, int max, char *errbuf,
                       size_t len) {
  char reason[64];
  if (v < 1)
    return wflo__config_invalid(WHAT, field, "must be >= 1", errbuf, len);
  if (v > max) {
    wflo__errbuf(reason, sizeof(reason), "must be <= %d", max);
    return wflo__config_invalid(WHAT, field, reason, errbuf, len);
  }
  return 0;
}

static int check_rate(const char *field, double v, char *errbuf, size_t len) {
  if (v > 0.0 && v <= 1.0)
    return 0; /* false for NaN too */
  return wflo__config_invalid(WHAT, field, "must be in (0, 1]", errbuf, len);
}

static int check_window(const wflo_breaker_config_t *c, char *errbuf,
                        size_t len) {
  int rc, max;
  if ((int)c->window < 0 || (int)c->window > (int)WFLO_WINDOW_TIME)
    return wflo__config_invalid(WHAT, "window", "unknown window mode", errbuf,
                                len);
  max = c->window == WFLO_WINDOW_TIME ? WFLO_BREAKER_TIME_WINDOW_MAX
                                      : WFLO_BREAKER_COUNT_WINDOW_MAX;
  rc = check_range("window_size", c->window_size, max, errbuf, len);
  if (rc == 0)
    rc = check_range("minimum_calls", c->minimum_calls,
                     WFLO_BREAKER_THRESHOLD_MAX, errbuf, len);
  if (rc == 0)
    rc = check_rate("failure_rate_threshold", c->failure_rate_threshold,
                    errbuf, len);
  if (rc == 0)
    rc = wflo__check_duration(WHAT, "slow_call_duration",
                              c->slow_call_duration, errbuf, len);
  if (rc == 0)
    rc = check_rate("slow_call_rate_threshold", c->slow_call_rate_threshold,
                    errbuf, len);
  return rc;
}

int wflo_breaker_config_validate(const wflo_breaker_config_t *c, char *errbuf,
                                 size_t len) {
  int rc;
  if (c == NULL) {
    wflo__errbuf(errbuf, len, WHAT ": NULL config");
    return WFLO_E_INVAL;
  }
  rc = check_range("failure_threshold", c->failure_threshold,
                   WFLO_BREAKER_THRESHOLD_MAX, errbuf, len);
  if (rc == 0)
    rc = wflo__check_duration(WHAT, "recovery_timeout", c->recovery_timeout,
                              errbuf, len);
  if (rc == 0)
    rc = check_range("success_threshold", c->success_threshold,
                     WFLO_BREAKER_THRESHOLD_MAX, errbuf, len);
  if (rc == 0)
    rc = check_range("half_open_max_calls", c->half_open_max_calls,
                     WFLO_BREAKER_HALF_OPEN_CALLS_MAX, errbuf, len);
  if (rc == 0)
    rc = wflo__check_duration(WHAT, "half_open_max_wait",
                              c->half_open_max_wait, errbuf, len);
  if (rc == 0)
    rc = wflo__check_err_list(WHAT, "expected_errors", c->expected_errors,
                              c->expected_errors_count, errbuf, len);
  if (rc == 0)
    rc = check_window(c, errbuf, len);
  return rc;
}

int wflo_breaker_config_from_json(const json_t *j, wflo_breaker_config_t *c,
                                  char *errbuf, size_t len) {
  int rc;
  if (c == NULL) {
    wflo__errbuf(errbuf, len, WHAT ": NULL config");
    return WFLO_E_INVAL;
  }
  wflo_breaker_config_init(c);
  rc = wflo__config_load(j, WHAT, cfg_fields, WFLO_ARRAY_SIZE(cfg_fields), c,
                         errbuf, len);
  if (rc == 0)
    rc = wflo_breaker_config_validate(c, errbuf, len);
  if (rc != 0)
    wflo_breaker_config_clear(c);
  return rc;
}

void wflo__bcfg_effective(const wflo_breaker_config_t *c, wflo__bcfg_t *e) {
  memset(e, 0, sizeof(*e));
  e->failure_threshold = (uint32_t)c->failure_threshold;
  e->success_threshold = (uint32_t)c->success_threshold;
  e->half_open_max_calls = (uint32_t)c->half_open_max_calls;
  e->window = (uint32_t)c->window;
  e->window_size = (uint32_t)c->window_size;
  e->minimum_calls = (uint32_t)c->minimum_calls;
  if (c->window == WFLO_WINDOW_COUNT && e->minimum_calls > e->window_size)
    e->minimum_calls = e->window_size;
  e->recovery_ns = wflo__s_to_ns(c->recovery_timeout);
  e->max_wait_ns = c->half_open_max_wait > 0.0
                       ? wflo__s_to_ns(c->half_open_max_wait)
                       : e->recovery_ns;
  e->slow_ns = wflo__s_to_ns(c->slow_call_duration);
  e->failure_rate = c->failure_rate_threshold;
  e->slow_rate = c->slow_call_rate_threshold;
  e->is_failure = c->is_failure;
  e->user_data = c->user_data;
  e->errors = c->expected_errors_count > 0 ? c->expected_errors : NULL;
  e->nerrors = c->expected_errors_count;
}

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

void wflo__bcfg_sort_errors(int *list, size_t n) {
  qsort(list, n, sizeof(int), cmp_int);
}

bool wflo__bcfg_has_error(const int *list, size_t n, int err) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (list[mid] == err)
      return true;
    if (list[mid] < err)
      lo = mid + 1;
    else
      hi = mid;
  }
  return false;
}

/* The list of a (sorted) and of b (as given) hold the same set of codes. */
static bool same_set(const int *a, size_t na, const int *b, size_t nb) {
  size_t i, j;
  for (i = 0; i < nb; i++)
    if (!wflo__bcfg_has_error(a, na, b[i]))
      return false;
  for (i = 0; i < na; i++) {
    for (j = 0; j < nb && b[j] != a[i]; j++)
      ;
    if (j == nb)
      return false;
  }
  return true;
}

bool wflo__bcfg_equal(const wflo__bcfg_t *a, const wflo__bcfg_t *b) {
  return a->failure_threshold == b->failure_threshold &&
         a->success_threshold == b->success_threshold &&
         a->half_open_max_calls == b->half_open_max_calls &&
         a->window == b->window && a->window_size == b->window_size &&
         a->minimum_calls == b->minimum_calls &&
         a->recovery_ns == b->recovery_ns &&
         a->max_wait_ns == b->max_wait_ns && a->slow_ns == b->slow_ns &&
         a->failure_rate == b->failure_rate && a->slow_rate == b->slow_rate &&
         a->is_failure == b->is_failure && a->user_data == b->user_data &&
         same_set(a->errors, a->nerrors, b->errors, b->nerrors);
}
