/* Health: the summary of wflo_health_json() / wflo_health_ok(), built from
 * per-module sections, and user health checks run on the per-loop
 * scheduler (internal/loop.h): one embedded timer per check for its period
 * and one for the probe's timeout, no handle of its own. */
#include "internal/breaker.h"
#include "internal/config.h"
#include "internal/health.h"
#include "internal/list.h"
#include "internal/loop.h"

#define WHAT "health_check"

struct wflo_health_probe_s {
  wflo__post_t post; /* carries the report to the loop thread */
  wflo_health_check_t *check;
  uint64_t started_ns;
  int result;     /* written by the reporting thread, read after the post */
  bool timed_out; /* loop thread only */
  /* Breaker feed (loop thread only): the probe's admission, recorded once
   * by feed_end. */
  wflo_breaker_permit_t permit;
  bool admitted;
};

struct wflo_health_check_s {
  wflo__list_t node; /* in `checks` while running, under `mu` */
  char *name;
  double period, timeout;
  uint64_t period_ms, timeout_ms;
  uint32_t threshold;
  wflo_health_probe_fn probe_fn;
  void *user_data;
  wflo_breaker_t *breaker;
  wflo__loop_t *loop;

  /* Loop thread only. */
  struct {
    wflo__timer_t tick;
    wflo__timer_t deadline;
    wflo_health_probe_t *probe; /* outstanding, at most one */
    bool stopped;
  } loop_only;

  /* Read by wflo_health_json() on any thread: under `mu`. */
  struct {
    uint64_t runs, failures, consecutive;
    uint64_t last_ns, last_duration_ns;
    int last_result;
    bool has_result;
  } synced;
};

static uv_once_t once = UV_ONCE_INIT;
static uv_mutex_t mu;
static wflo__list_t checks;

static void health_init(void) {
  uv_mutex_init(&mu);
  wflo__list_init(&checks);
}

/* --- config ------------------------------------------------------------------- */

#define CFG_OFF(f) offsetof(wflo_health_check_config_t, f)
static const wflo__field_t fields[] = {
    {"name", WFLO__F_STRING, CFG_OFF(name), 0, CFG_OFF(reserved[0]), NULL},
    {"period", WFLO__F_DURATION, CFG_OFF(period), 0, 0, NULL},
    {"timeout", WFLO__F_DURATION, CFG_OFF(timeout), 0, 0, NULL},
    {"unhealthy_threshold", WFLO__F_UINT32, CFG_OFF(unhealthy_threshold), 0, 0,
     NULL},
};

void wflo_health_check_config_init(wflo_health_check_config_t *c) {
  if (c == NULL)
    return;
  memset(c, 0, sizeof(*c));
  c->period = WFLO_HEALTH_DEFAULT_PERIOD;
  c->timeout = WFLO_HEALTH_DEFAULT_TIMEOUT;
  c->unhealthy_threshold = WFLO_HEALTH_DEFAULT_UNHEALTHY_THRESHOLD;
}

void wflo_health_check_config_clear(wflo_health_check_config_t *c) {
  if (c != NULL)
    wflo__config_free_owned(fields, WFLO_ARRAY_SIZE(fields), c);
}

/* The loadable fields; the probe is checked only where it must be set. */
static int validate(const wflo_health_check_config_t *c, bool need_probe,
                    char *errbuf, size_t len) {
  int rc;
  if (c->name == NULL)
    return wflo__config_invalid(WHAT, "name", "is required", errbuf, len);
  rc = wflo__check_duration(WHAT, "period", c->period, errbuf, len);
  if (rc != 0)
    return rc;
  if (c->period <= 0)
    return wflo__config_invalid(WHAT, "period", "must be greater than 0",
                                errbuf, len);
  rc = wflo__check_duration(WHAT, "timeout", c->timeout, errbuf, len);
  if (rc != 0)
    return rc;
  if (c->unhealthy_threshold < 1)
    return wflo__config_invalid(WHAT, "unhealthy_threshold",
                                "must be at least 1", errbuf, len);
  if (need_probe && c->probe == NULL)
    return wflo__config_invalid(WHAT, "probe", "is required", errbuf, len);
  return 0;
}

int wflo_health_check_config_validate(const wflo_health_check_config_t *c,
                                      char *errbuf, size_t len) {
  if (c == NULL)
    return wflo__config_invalid(WHAT, "config", "is NULL", errbuf, len);
  return validate(c, true, errbuf, len);
}

int wflo_health_check_config_from_json(const json_t *j,
                                       wflo_health_check_config_t *c,
                                       char *errbuf, size_t len) {
  int rc;
  if (c == NULL)
    return WFLO_E_INVAL;
  wflo_health_check_config_init(c);
  rc = wflo__config_load(j, WHAT, fields, WFLO_ARRAY_SIZE(fields), c, errbuf,
                         len);
  if (rc == 0)
    rc = validate(c, false, errbuf, len);
  if (rc != 0) {
    wflo_health_check_config_clear(c);
    wflo_health_check_config_init(c);
  }
  return rc;
}

/* --- breaker feed ---------------------------------------------------------------
 * A check with a breaker records every probe in it as one call, so a
 * failing dependency opens the circuit before users' calls hit it. A probe
 * runs even when the circuit refuses it, so the health summary stays
 * current; only admitted probes are recorded, which also makes a probe the
 * HALF_OPEN trial that closes a recovered circuit. feed_end runs once per
 * admitted probe: at its report, or at its timeout with WFLO_E_TIMEOUT (a
 * late report then records nothing). */
static void breaker_hold(wflo_breaker_t *b) {
  if (b != NULL)
    wflo__breaker_ref(b);
}

static void breaker_drop(wflo_breaker_t *b) { wflo_breaker_put(b); }

static void feed_begin(wflo_health_check_t *c, wflo_health_probe_t *p) {
  p->admitted =
      c->breaker != NULL && wflo_breaker_acquire(c->breaker, &p->permit) == 0;
}

static void feed_end(wflo_health_check_t *c, wflo_health_probe_t *p,
                     int result, double duration_s) {
  if (!p->admitted)
    return;
  p->admitted = false;
  (void)wflo_breaker_record(c->breaker, &p->permit, result, duration_s);
}

/* --- running checks ------------------------------------------------------------- */

static void record(wflo_health_check_t *c, int result, uint64_t duration_ns) {
  uint64_t now = wflo__now_ns();
  uv_mutex_lock(&mu);
  c->synced.runs++;
  if (result < 0) {
    c->synced.failures++;
    c->synced.consecutive++;
  } else {
    c->synced.consecutive = 0;
  }
  c->synced.last_result = result;
  c->synced.has_result = true;
  c->synced.last_ns = now;
  c->synced.last_duration_ns = duration_ns;
  uv_mutex_unlock(&mu);
}

static uint64_t since(uint64_t start_ns) {
  uint64_t now = wflo__now_ns();
  return now > start_ns ? now - start_ns : 0;
}

static void check_free(wflo_health_check_t *c) {
  wflo__loop_unref(c->loop);
  breaker_drop(c->breaker);
  wflo__strfree(c->name);
  wflo__free(c, sizeof(*c));
}

static void on_deadline(wflo__timer_t *t) {
  wflo_health_check_t *c =
      wflo__container_of(t, wflo_health_check_t, loop_only.deadline);
  wflo_health_probe_t *p = c->loop_only.probe;
  uint64_t d = since(p->started_ns);
  p->timed_out = true;
  record(c, WFLO_E_TIMEOUT, d);
  feed_end(c, p, WFLO_E_TIMEOUT, wflo__ns_to_s(d));
}

static void on_report(wflo__post_t *post) {
  wflo_health_probe_t *p = wflo__container_of(post, wflo_health_probe_t, post);
  wflo_health_check_t *c = p->check;
  if (!p->timed_out) {
    uint64_t d = since(p->started_ns);
    wflo__timer_stop(c->loop, &c->loop_only.deadline);
    record(c, p->result, d);
    feed_end(c, p, p->result, wflo__ns_to_s(d));
  }
  c->loop_only.probe = NULL;
  wflo__free(p, sizeof(*p));
  if (c->loop_only.stopped)
    check_free(c);
}

static void probe_start(wflo_health_check_t *c) {
  wflo_health_probe_t *p = wflo__calloc(1, sizeof(*p));
  /* Out of memory is ours, not the dependency's: skip this run rather than
   * report the dependency unhealthy; the next tick tries again. */
  if (p == NULL)
    return;
  p->check = c;
  p->started_ns = wflo__now_ns();
  c->loop_only.probe = p;
  if (c->timeout_ms > 0)
    wflo__timer_start(c->loop, &c->loop_only.deadline, c->timeout_ms,
                      on_deadline);
  feed_begin(c, p);
  c->probe_fn(p, c->user_data);
}

static void on_tick(wflo__timer_t *t) {
  wflo_health_check_t *c =
      wflo__container_of(t, wflo_health_check_t, loop_only.tick);
  wflo_health_probe_t *p = c->loop_only.probe;
  /* Fixed rate: the next tick is armed before the probe runs, so a probe
   * callback that stops the check also stops this timer. */
  wflo__timer_start(c->loop, &c->loop_only.tick, c->period_ms, on_tick);
  if (p == NULL) {
    probe_start(c);
    return;
  }
  /* Never pile probes up on a hung dependency; keep counting it as down. */
  if (p->timed_out)
    record(c, WFLO_E_TIMEOUT, since(p->started_ns));
}

int wflo_health_check_start(uv_loop_t *loop,
                            const wflo_health_check_config_t *cfg,
                            wflo_health_check_t **out) {
  wflo_health_check_t *c;
  int rc;
  if (loop == NULL || out == NULL)
    return WFLO_E_INVAL;
  rc = wflo_health_check_config_validate(cfg, NULL, 0);
  if (rc != 0)
    return rc;
  uv_once(&once, health_init);
  c = wflo__calloc(1, sizeof(*c));
  if (c == NULL)
    return WFLO_E_NOMEM;
  c->name = wflo__strdup(cfg->name);
  if (c->name == NULL) {
    rc = WFLO_E_NOMEM;
    goto fail_free_check;
  }
  rc = wflo__loop_ref(loop, &c->loop);
  if (rc != 0)
    goto fail_free_name;
  c->period = cfg->period;
  c->timeout = cfg->timeout;
  c->period_ms = wflo__loop_delay_ms(cfg->period);
  c->timeout_ms = wflo__loop_delay_ms(cfg->timeout);
  c->threshold = cfg->unhealthy_threshold;
  c->probe_fn = cfg->probe;
  c->user_data = cfg->user_data;
  c->breaker = cfg->breaker;
  breaker_hold(c->breaker);
  wflo__timer_init(&c->loop_only.tick);
  wflo__timer_init(&c->loop_only.deadline);
  uv_mutex_lock(&mu);
  wflo__list_insert_tail(&checks, &c->node);
  uv_mutex_unlock(&mu);
  wflo__timer_start(c->loop, &c->loop_only.tick, 0, on_tick);
  *out = c;
  return 0;

fail_free_name:
  wflo__strfree(c->name);
fail_free_check:
  wflo__free(c, sizeof(*c));
  return rc;
}

int wflo_health_check_stop(wflo_health_check_t *c) {
  if (c == NULL)
    return WFLO_E_INVAL;
  if (c->loop_only.stopped)
    return WFLO_E_STATE;
  c->loop_only.stopped = true;
  wflo__timer_stop(c->loop, &c->loop_only.tick);
  wflo__timer_stop(c->loop, &c->loop_only.deadline);
  uv_mutex_lock(&mu);
  wflo__list_remove(&c->node);
  uv_mutex_unlock(&mu);
  if (c->loop_only.probe == NULL)
    check_free(c);
  return 0;
}

void wflo_health_probe_done(wflo_health_probe_t *p, int result) {
  if (p == NULL)
    return;
  p->result = result;
  /* The check holds its loop ref until this probe is processed, so the
   * loop state outlives the post. */
  wflo__loop_post(p->check->loop, &p->post, on_report);
}

/* --- the summary --------------------------------------------------------------------- */

static json_t *seconds_or_null(bool known, uint64_t ns) {
  return known ? wflo__json_real(wflo__ns_to_s(ns)) : json_null();
}

static json_t *check_json(const wflo_health_check_t *c, bool healthy,
                          uint64_t now) {
  bool has = c->synced.has_result;
  const char *state = !has                         ? "pending"
                      : c->synced.last_result >= 0 ? "passing"
                                                   : "failing";
  return wflo__json_obj(
      "name", wflo__json_string(c->name), "healthy", json_boolean(healthy),
      "state", json_string(state), "runs",
      json_integer((json_int_t)c->synced.runs), "failures",
      json_integer((json_int_t)c->synced.failures), "consecutive_failures",
      json_integer((json_int_t)c->synced.consecutive), "last_error",
      has ? wflo__json_err(c->synced.last_result) : json_null(),
      "last_duration_seconds",
      seconds_or_null(has, c->synced.last_duration_ns),
      "seconds_since_last_result",
      seconds_or_null(has,
                      now > c->synced.last_ns ? now - c->synced.last_ns : 0),
      "period", wflo__json_real(c->period), "timeout",
      wflo__json_real(c->timeout), "unhealthy_threshold",
      json_integer((json_int_t)c->threshold), NULL);
}

static int checks_section(json_t *arr, bool *healthy) {
  wflo__list_t *it;
  uint64_t now = wflo__now_ns();
  int rc = 0;
  uv_mutex_lock(&mu);
  wflo__list_foreach(it, &checks) {
    const wflo_health_check_t *c =
        wflo__container_of(it, wflo_health_check_t, node);
    bool ok = c->synced.consecutive < c->threshold;
    if (!ok)
      *healthy = false;
    if (arr != NULL && rc == 0 &&
        json_array_append_new(arr, check_json(c, ok, now)) != 0)
      rc = WFLO_E_NOMEM;
  }
  uv_mutex_unlock(&mu);
  return rc;
}

/* Sections in output order; each module with a registry provides its own
 * (internal/health.h). */
static const struct section {
  const char *key;
  wflo__health_section_fn fn;
} sections[] = {
    {"breakers", wflo__breaker_health},
    {"locks", wflo__lock_health},
    {"workflows", wflo__workflow_health},
    {"checks", checks_section},
};

json_t *wflo_health_json(void) {
  json_t *root = json_object();
  bool healthy = true;
  size_t i;
  uv_once(&once, health_init);
  if (root == NULL)
    return NULL;
  for (i = 0; i < WFLO_ARRAY_SIZE(sections); i++) {
    json_t *arr = json_array();
    if (arr != NULL && sections[i].fn(arr, &healthy) != 0) {
      json_decref(arr);
      arr = NULL;
    }
    /* wflo__json_set() steals arr, NULL included. */
    if (wflo__json_set(root, sections[i].key, arr) != 0) {
      json_decref(root);
      return NULL;
    }
  }
  if (wflo__json_set(root, "healthy", json_boolean(healthy)) != 0 ||
      wflo__json_set(root, "status",
                     json_string(healthy ? "ok" : "unhealthy")) != 0) {
    json_decref(root);
    return NULL;
  }
  return root;
}

bool wflo_health_ok(void) {
  bool healthy = true;
  size_t i;
  uv_once(&once, health_init);
  for (i = 0; i < WFLO_ARRAY_SIZE(sections); i++)
    sections[i].fn(NULL, &healthy);
  return healthy;
}
