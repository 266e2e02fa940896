/* Tests of the lock module's sync side: configs, registry, exclusive and
 * concurrent capacity, try-acquire, timeouts and the per-call override, FIFO
 * order, contention, stats, WFLO_WITH_LOCK exit paths, holder ids, queue
 * limits, and allocation failure. Waits use real milliseconds: a sync wait
 * sleeps on a condition variable, which no virtual clock can drive. */
/* ctest-labels: threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"
#include "internal/lock.h"

/* --- helpers ------------------------------------------------------------- */

static size_t waiters_of(wflo_lock_t *l) {
  size_t n;
  uv_mutex_lock(&l->synced.mu);
  n = l->synced.nwaiters;
  uv_mutex_unlock(&l->synced.mu);
  return n;
}

/* Waits (real time, bounded) until l has n waiters. */
static void await_waiters(wflo_lock_t *l, size_t n) {
  int i;
  for (i = 0; i < 5000 && waiters_of(l) != n; i++)
    uv_sleep(1);
  assert_int_equal(waiters_of(l), n);
}

static json_t *stats(wflo_lock_t *l) {
  json_t *j = wflo_lock_stats_json(l);
  assert_non_null(j);
  return j;
}

static json_int_t stat_int(wflo_lock_t *l, const char *key) {
  json_t *j = stats(l);
  json_t *v = json_object_get(j, key);
  json_int_t n;
  assert_true(json_is_integer(v));
  n = json_integer_value(v);
  json_decref(j);
  return n;
}

static double stat_real(wflo_lock_t *l, const char *key) {
  json_t *j = stats(l);
  json_t *v = json_object_get(j, key);
  double d;
  assert_true(json_is_real(v));
  d = json_real_value(v);
  json_decref(j);
  return d;
}

static size_t holders_count(wflo_lock_t *l) {
  json_t *j = stats(l);
  size_t n = json_array_size(json_object_get(j, "current_holders"));
  json_decref(j);
  return n;
}

static bool holders_contain(wflo_lock_t *l, const char *id) {
  json_t *j = stats(l), *v;
  size_t i;
  bool found = false;
  json_array_foreach(json_object_get(j, "current_holders"), i, v) {
    if (json_is_string(v) && strcmp(json_string_value(v), id) == 0)
      found = true;
  }
  json_decref(j);
  return found;
}

/* Exactly cap permits are free now: cap tries succeed, one more fails. */
static void assert_free_permits(wflo_lock_t *l, int cap) {
  wflo_lock_permit_t p[8];
  int i;
  assert_true(cap < 8);
  for (i = 0; i < cap; i++)
    assert_int_equal(wflo_lock_acquire(l, &p[i], NULL, 0), 0);
  assert_int_equal(wflo_lock_acquire(l, &p[cap], NULL, 0),
                   WFLO_E_LOCK_TIMEOUT);
  for (i = 0; i < cap; i++)
    assert_int_equal(wflo_lock_release(&p[i]), 0);
}

static wflo_lock_t *make_lock(const char *name, double timeout, int cap,
                              int max_waiters, double threshold) {
  wflo_lock_config_t c;
  wflo_lock_t *l = NULL;
  wflo_lock_config_init(&c);
  c.timeout = timeout;
  c.max_concurrent = cap;
  c.max_waiters = max_waiters;
  c.contention_threshold = threshold;
  assert_int_equal(wflo_lock_new(name, &c, &l), 0);
  return l;
}

/* --- config -------------------------------------------------------------- */

static void test_defaults(void **state) {
  wflo_lock_config_t c;
  size_t i;
  (void)state;
  memset(&c, 0xab, sizeof(c));
  wflo_lock_config_init(&c);
  assert_true(c.timeout == WFLO_LOCK_DEFAULT_TIMEOUT);
  assert_true(c.timeout == 30.0);
  assert_true(c.contention_threshold ==
              WFLO_LOCK_DEFAULT_CONTENTION_THRESHOLD);
  assert_true(c.contention_threshold == 5.0);
  assert_int_equal(c.max_concurrent, WFLO_LOCK_DEFAULT_MAX_CONCURRENT);
  assert_int_equal(c.max_concurrent, 1);
  assert_int_equal(c.max_waiters, WFLO_LOCK_DEFAULT_MAX_WAITERS);
  assert_int_equal(c.max_waiters, 1024);
  for (i = 0; i < WFLO_ARRAY_SIZE(c.reserved); i++)
    assert_null(c.reserved[i]);
  assert_true(isinf(WFLO_WAIT_FOREVER) && WFLO_WAIT_FOREVER > 0);
  assert_int_equal(wflo_lock_config_validate(&c, NULL, 0), 0);
  wflo_lock_config_init(NULL); /* no-op */
}

static void expect_invalid(const wflo_lock_config_t *c, const char *field) {
  char err[128];
  wflo_lock_t *l = NULL;
  const wflo_test_event_t *ev;
  wflo_test_events_clear();
  assert_int_equal(wflo_lock_config_validate(c, err, sizeof(err)),
                   WFLO_E_INVAL);
  assert_non_null(strstr(err, "lock."));
  assert_non_null(strstr(err, field));
  ev = wflo_test_events_get("config_invalid", 0);
  assert_non_null(ev);
  assert_string_equal(json_string_value(json_object_get(ev->fields, "what")),
                      "lock");
  assert_string_equal(json_string_value(json_object_get(ev->fields, "field")),
                      field);
  assert_int_equal(wflo_lock_new("x", c, &l), WFLO_E_INVAL);
  assert_null(l);
  assert_int_equal(wflo_lock_get("x", c, &l), WFLO_E_INVAL);
  assert_null(l);
  assert_int_equal(wflo_test_alloc_live(), 0);
}

static void test_bad_configs(void **state) {
  wflo_lock_config_t c;
  const double bad_durations[] = {NAN, -1.0, INFINITY, -INFINITY, 2e9};
  size_t i;
  (void)state;
  wflo_set_log_level(WFLO_LOG_DEBUG);
  wflo_test_events_install();
  for (i = 0; i < WFLO_ARRAY_SIZE(bad_durations); i++) {
    wflo_lock_config_init(&c);
    c.timeout = bad_durations[i];
    expect_invalid(&c, "timeout");
    wflo_lock_config_init(&c);
    c.contention_threshold = bad_durations[i];
    expect_invalid(&c, "contention_threshold");
  }
  wflo_lock_config_init(&c);
  c.max_concurrent = 0;
  expect_invalid(&c, "max_concurrent");
  c.max_concurrent = -3;
  expect_invalid(&c, "max_concurrent");
  c.max_concurrent = WFLO_LOCK_CONCURRENT_MAX + 1;
  expect_invalid(&c, "max_concurrent");
  wflo_lock_config_init(&c);
  c.max_waiters = -1;
  expect_invalid(&c, "max_waiters");
  c.max_waiters = WFLO_LOCK_WAITERS_MAX + 1;
  expect_invalid(&c, "max_waiters");
  /* Edges that are valid. */
  wflo_lock_config_init(&c);
  c.timeout = 0;
  c.contention_threshold = WFLO_DURATION_MAX;
  c.max_concurrent = WFLO_LOCK_CONCURRENT_MAX;
  c.max_waiters = 0;
  assert_int_equal(wflo_lock_config_validate(&c, NULL, 0), 0);
  assert_int_equal(wflo_lock_config_validate(NULL, NULL, 0), WFLO_E_INVAL);
  {
    wflo_lock_t *l;
    assert_int_equal(wflo_lock_new("x", NULL, NULL), WFLO_E_INVAL);
    assert_int_equal(wflo_lock_get(NULL, NULL, &l), WFLO_E_INVAL);
    assert_int_equal(wflo_lock_get("x", NULL, NULL), WFLO_E_INVAL);
  }
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
}

static void test_config_from_json(void **state) {
  wflo_lock_config_t c;
  char err[128];
  json_t *j;
  (void)state;
  j = json_loads("{\"timeout\": 2, \"contention_threshold\": 0.5,"
                 " \"max_concurrent\": 4, \"max_waiters\": 0}",
                 0, NULL);
  assert_int_equal(wflo_lock_config_from_json(j, &c, err, sizeof(err)), 0);
  assert_true(c.timeout == 2.0);
  assert_true(c.contention_threshold == 0.5);
  assert_int_equal(c.max_concurrent, 4);
  assert_int_equal(c.max_waiters, 0);
  json_decref(j);

  /* Missing keys keep their defaults. */
  j = json_loads("{\"max_concurrent\": 3}", 0, NULL);
  assert_int_equal(wflo_lock_config_from_json(j, &c, NULL, 0), 0);
  assert_int_equal(c.max_concurrent, 3);
  assert_true(c.timeout == WFLO_LOCK_DEFAULT_TIMEOUT);
  json_decref(j);

  /* Failures leave the defaults and name the key. */
  j = json_loads("{\"max_concurrent\": 3, \"bogus\": 1}", 0, NULL);
  assert_int_equal(wflo_lock_config_from_json(j, &c, err, sizeof(err)),
                   WFLO_E_PARSE);
  assert_non_null(strstr(err, "bogus"));
  assert_int_equal(c.max_concurrent, WFLO_LOCK_DEFAULT_MAX_CONCURRENT);
  json_decref(j);
  j = json_loads("{\"timeout\": \"soon\"}", 0, NULL);
  assert_int_equal(wflo_lock_config_from_json(j, &c, err, sizeof(err)),
                   WFLO_E_PARSE);
  assert_non_null(strstr(err, "timeout"));
  json_decref(j);
  j = json_loads("{\"max_concurrent\": 1.5}", 0, NULL);
  assert_int_equal(wflo_lock_config_from_json(j, &c, NULL, 0), WFLO_E_PARSE);
  json_decref(j);
  j = json_loads("{\"max_concurrent\": 0}", 0, NULL);
  assert_int_equal(wflo_lock_config_from_json(j, &c, err, sizeof(err)),
                   WFLO_E_INVAL);
  assert_non_null(strstr(err, "lock.max_concurrent"));
  assert_int_equal(c.max_concurrent, WFLO_LOCK_DEFAULT_MAX_CONCURRENT);
  json_decref(j);
  j = json_loads("{\"timeout\": -1}", 0, NULL);
  assert_int_equal(wflo_lock_config_from_json(j, &c, NULL, 0), WFLO_E_INVAL);
  assert_true(c.timeout == WFLO_LOCK_DEFAULT_TIMEOUT);
  json_decref(j);
  j = json_loads("[1]", 0, NULL);
  assert_int_equal(wflo_lock_config_from_json(j, &c, NULL, 0), WFLO_E_PARSE);
  json_decref(j);
  assert_int_equal(wflo_lock_config_from_json(NULL, &c, NULL, 0),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_lock_config_from_json(NULL, NULL, NULL, 0),
                   WFLO_E_INVAL);

  /* It allocates nothing, so it cannot fail for lack of memory. */
  j = json_loads("{\"timeout\": 1, \"max_waiters\": 7}", 0, NULL);
  wflo_test_alloc_fail_at(1, WFLO_TEST_FAIL_AFTER);
  assert_int_equal(wflo_lock_config_from_json(j, &c, NULL, 0), 0);
  assert_int_equal(c.max_waiters, 7);
  assert_int_equal(wflo_test_alloc_attempts(), 0);
  wflo_test_alloc_fail_off();
  json_decref(j);
}

/* --- registry ------------------------------------------------------------ */

static void test_registry(void **state) {
  wflo_lock_config_t c;
  wflo_lock_t *a, *b, *p;
  const wflo_test_event_t *ev;
  (void)state;
  wflo_set_log_level(WFLO_LOG_WARN);
  wflo_test_events_install();
  wflo_lock_config_init(&c);
  c.max_concurrent = 2;
  assert_int_equal(wflo_lock_get("db", &c, &a), 0);
  assert_int_equal(wflo_lock_get("db", &c, &b), 0);
  assert_ptr_equal(a, b);
  assert_int_equal(wflo_test_events_count("config_conflict"), 0);
  /* Same name, another config: the first config stays, and it is said. */
  c.max_concurrent = 5;
  wflo_lock_put(b);
  assert_int_equal(wflo_lock_get("db", &c, &b), 0);
  assert_ptr_equal(a, b);
  assert_int_equal(wflo_test_events_count("config_conflict"), 1);
  ev = wflo_test_events_get("config_conflict", 0);
  assert_int_equal(ev->level, WFLO_LOG_WARN);
  assert_string_equal(json_string_value(json_object_get(ev->fields, "what")),
                      "lock");
  assert_string_equal(json_string_value(json_object_get(ev->fields, "name")),
                      "db");
  assert_int_equal(json_object_size(ev->fields), 2);
  assert_int_equal(stat_int(a, "concurrent_capacity"), 2);
  /* NULL config means the defaults: a conflict with max_concurrent 2. */
  wflo_lock_put(b);
  assert_int_equal(wflo_lock_get("db", NULL, &b), 0);
  assert_int_equal(wflo_test_events_count("config_conflict"), 2);
  wflo_lock_put(b);
  /* A private lock of the same name is another lock. */
  assert_int_equal(wflo_lock_new("db", NULL, &p), 0);
  assert_ptr_not_equal(p, a);
  wflo_lock_put(p);
  /* Permits are shared through the name. */
  {
    wflo_lock_permit_t x, y, z;
    assert_int_equal(wflo_lock_get("db", NULL, &b), 0);
    assert_int_equal(wflo_lock_acquire(a, &x, "x", 0), 0);
    assert_int_equal(wflo_lock_acquire(b, &y, "y", 0), 0);
    assert_int_equal(wflo_lock_acquire(b, &z, "z", 0), WFLO_E_LOCK_TIMEOUT);
    assert_int_equal(wflo_lock_release(&x), 0);
    assert_int_equal(wflo_lock_release(&y), 0);
    wflo_lock_put(b);
  }
  /* The last put frees it and the name: a new get makes a fresh lock. */
  wflo_lock_put(a);
  assert_int_equal(wflo_test_alloc_live(), 0);
  c.max_concurrent = 7;
  assert_int_equal(wflo_lock_get("db", &c, &a), 0);
  assert_int_equal(stat_int(a, "concurrent_capacity"), 7);
  assert_int_equal(stat_int(a, "total_acquisitions"), 0);
  wflo_lock_put(a);
  wflo_lock_put(NULL);
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
}

/* --- capacity, try, release ---------------------------------------------- */

static void test_exclusive(void **state) {
  wflo_lock_t *l = make_lock("ex", 30, 1, 16, 5);
  wflo_lock_permit_t a, b;
  (void)state;
  assert_int_equal(wflo_lock_acquire(l, &a, "a", -1), 0);
  assert_string_equal(a.holder_id, "a");
  assert_true(a.wait_time == 0.0);
  assert_int_equal(wflo_lock_acquire(l, &b, "b", 0), WFLO_E_LOCK_TIMEOUT);
  assert_null(b.holder_id);
  assert_int_equal(wflo_lock_release(&b), WFLO_E_STATE);
  assert_int_equal(holders_count(l), 1);
  assert_true(holders_contain(l, "a"));
  assert_int_equal(wflo_lock_release(&a), 0);
  assert_null(a.holder_id);
  assert_int_equal(wflo_lock_acquire(l, &b, "b", 0), 0);
  assert_int_equal(wflo_lock_release(&b), 0);
  assert_int_equal(stat_int(l, "total_acquisitions"), 2);
  assert_int_equal(stat_int(l, "timeout_count"), 1);
  assert_int_equal(holders_count(l), 0);
  wflo_lock_put(l);
}

static void test_concurrent_capacity(void **state) {
  wflo_lock_t *l = make_lock("cap", 30, 3, 16, 5);
  wflo_lock_permit_t p[4];
  int i;
  (void)state;
  for (i = 0; i < 3; i++)
    assert_int_equal(wflo_lock_acquire(l, &p[i], NULL, 0), 0);
  assert_int_equal(wflo_lock_acquire(l, &p[3], NULL, 0), WFLO_E_LOCK_TIMEOUT);
  assert_int_equal(holders_count(l), 3);
  assert_int_equal(stat_int(l, "concurrent_capacity"), 3);
  /* Release out of order; each frees exactly one permit. */
  assert_int_equal(wflo_lock_release(&p[1]), 0);
  assert_int_equal(wflo_lock_acquire(l, &p[1], NULL, 0), 0);
  assert_int_equal(wflo_lock_acquire(l, &p[3], NULL, 0), WFLO_E_LOCK_TIMEOUT);
  for (i = 0; i < 3; i++)
    assert_int_equal(wflo_lock_release(&p[i]), 0);
  assert_int_equal(holders_count(l), 0);
  for (i = 0; i < 3; i++)
    assert_int_equal(wflo_lock_acquire(l, &p[i], NULL, 0), 0);
  for (i = 0; i < 3; i++)
    assert_int_equal(wflo_lock_release(&p[i]), 0);
  wflo_lock_put(l);
}

static void test_release_errors(void **state) {
  wflo_lock_t *l = make_lock("rel", 30, 1, 16, 5);
  wflo_lock_permit_t p;
  (void)state;
  assert_int_equal(wflo_lock_release(NULL), WFLO_E_INVAL);
  assert_int_equal(wflo_lock_acquire(NULL, &p, NULL, 0), WFLO_E_INVAL);
  assert_int_equal(wflo_lock_release(&p), WFLO_E_STATE);
  assert_int_equal(wflo_lock_acquire(l, NULL, NULL, 0), WFLO_E_INVAL);
  assert_int_equal(wflo_lock_acquire(l, &p, NULL, NAN), WFLO_E_INVAL);
  assert_int_equal(wflo_lock_acquire(l, &p, NULL, 2e9), WFLO_E_INVAL);
  assert_int_equal(wflo_lock_release(&p), WFLO_E_STATE);
  assert_int_equal(wflo_lock_acquire(l, &p, "h", 0), 0);
  assert_int_equal(wflo_lock_release(&p), 0);
  /* Double release: refused, and the permit is not freed twice. */
  assert_int_equal(wflo_lock_release(&p), WFLO_E_STATE);
  assert_int_equal(wflo_lock_acquire(l, &p, NULL, 0), 0);
  assert_int_equal(stat_int(l, "total_acquisitions"), 2);
  assert_int_equal(wflo_lock_release(&p), 0);
  assert_int_equal(wflo_lock_release(&p), WFLO_E_STATE);
  wflo_lock_permit_drop(&p); /* released: nothing to do */
  wflo_lock_permit_drop(NULL);
  assert_int_equal(wflo_lock_acquire(l, &p, NULL, 0), 0);
  wflo_lock_permit_drop(&p); /* held: released */
  assert_int_equal(holders_count(l), 0);
  assert_int_equal(wflo_lock_release(&p), WFLO_E_STATE);
  wflo_lock_put(l);
}

/* --- holder ids ---------------------------------------------------------- */

static void test_holder_ids(void **state) {
  wflo_lock_t *l = make_lock("ids", 30, 4, 16, 5);
  wflo_lock_permit_t a, b, c;
  wflo_context_t *ctx;
  char buf[16] = "caller-id";
  (void)state;
  /* A given id is copied. */
  assert_int_equal(wflo_lock_acquire(l, &a, buf, 0), 0);
  memcpy(buf, "changed", sizeof("changed"));
  assert_true(holders_contain(l, "caller-id"));
  /* No id and no context: "anonymous". */
  assert_int_equal(wflo_lock_acquire(l, &b, NULL, 0), 0);
  assert_string_equal(b.holder_id, "anonymous");
  /* No id inside a context: its execution id, valid after the context is
   * exited and dropped. */
  assert_int_equal(wflo_context_new("exec-42", "wf", 1.0, NULL, &ctx), 0);
  assert_int_equal(wflo_context_enter(ctx), 0);
  assert_int_equal(wflo_lock_acquire(l, &c, NULL, 0), 0);
  assert_int_equal(wflo_context_exit(ctx), 0);
  wflo_context_put(ctx);
  assert_string_equal(c.holder_id, "exec-42");
  assert_true(holders_contain(l, "exec-42"));
  assert_true(holders_contain(l, "anonymous"));
  assert_int_equal(holders_count(l), 3);
  assert_int_equal(wflo_lock_release(&c), 0);
  assert_false(holders_contain(l, "exec-42"));
  assert_int_equal(wflo_lock_release(&a), 0);
  assert_int_equal(wflo_lock_release(&b), 0);
  wflo_lock_put(l);
}

/* --- waiting ------------------------------------------------------------- */

typedef struct waiter_arg {
  wflo_lock_t *lock;
  const char *id;
  double timeout;
  int rc;
  int order;
  double wait_time;
  atomic_int *seq;
} waiter_arg_t;

static void waiter_thread(void *arg) {
  waiter_arg_t *w = arg;
  wflo_lock_permit_t p;
  w->rc = wflo_lock_acquire(w->lock, &p, w->id, w->timeout);
  if (w->rc == 0) {
    w->order = atomic_fetch_add(w->seq, 1);
    w->wait_time = p.wait_time;
    WFLO_TEST_THREAD_CHECK(wflo_lock_release(&p) == 0);
  }
}

static void test_fifo_order(void **state) {
  enum { N = 6 };
  wflo_lock_t *l = make_lock("fifo", 30, 1, 16, 5);
  wflo_lock_permit_t held;
  waiter_arg_t w[N];
  uv_thread_t t[N];
  atomic_int seq;
  int i;
  (void)state;
  atomic_init(&seq, 0);
  assert_int_equal(wflo_lock_acquire(l, &held, "main", 0), 0);
  /* Each waiter is queued before the next starts, so queue order is known. */
  for (i = 0; i < N; i++) {
    w[i] = (waiter_arg_t){l, "w", WFLO_WAIT_FOREVER, -1, -1, 0, &seq};
    assert_int_equal(uv_thread_create(&t[i], waiter_thread, &w[i]), 0);
    await_waiters(l, (size_t)i + 1);
  }
  assert_int_equal(stat_int(l, "current_waiters"), N);
  /* A try-acquire never overtakes the queue. */
  {
    wflo_lock_permit_t p;
    assert_int_equal(wflo_lock_acquire(l, &p, NULL, 0), WFLO_E_LOCK_TIMEOUT);
  }
  assert_int_equal(wflo_lock_release(&held), 0);
  for (i = 0; i < N; i++)
    uv_thread_join(&t[i]);
  wflo_test_assert_thread_checks();
  for (i = 0; i < N; i++) {
    assert_int_equal(w[i].rc, 0);
    assert_int_equal(w[i].order, i);
    assert_true(w[i].wait_time > 0.0);
  }
  assert_int_equal(stat_int(l, "current_waiters"), 0);
  assert_int_equal(stat_int(l, "total_acquisitions"), N + 1);
  assert_free_permits(l, 1);
  wflo_lock_put(l);
}

/* Capacity 2 with one permit kept: the other one goes round the queue in
 * FIFO order. */
static void test_fifo_capacity_two(void **state) {
  wflo_lock_t *l = make_lock("fifo2", 30, 2, 16, 5);
  wflo_lock_permit_t a, b;
  waiter_arg_t w[3];
  uv_thread_t t[3];
  atomic_int seq;
  int i;
  (void)state;
  atomic_init(&seq, 0);
  assert_int_equal(wflo_lock_acquire(l, &a, "a", 0), 0);
  assert_int_equal(wflo_lock_acquire(l, &b, "b", 0), 0);
  for (i = 0; i < 3; i++) {
    w[i] = (waiter_arg_t){l, "w", WFLO_WAIT_FOREVER, -1, -1, 0, &seq};
    assert_int_equal(uv_thread_create(&t[i], waiter_thread, &w[i]), 0);
    await_waiters(l, (size_t)i + 1);
  }
  /* One release serves the whole queue in order: each waiter passes the
   * permit on when it releases, while b stays held. */
  assert_int_equal(wflo_lock_release(&a), 0);
  for (i = 0; i < 3; i++)
    uv_thread_join(&t[i]);
  wflo_test_assert_thread_checks();
  for (i = 0; i < 3; i++)
    assert_int_equal(w[i].order, i);
  assert_int_equal(holders_count(l), 1);
  assert_true(holders_contain(l, "b"));
  assert_int_equal(wflo_lock_release(&b), 0);
  assert_free_permits(l, 2);
  wflo_lock_put(l);
}

static void test_timeouts(void **state) {
  wflo_lock_t *l = make_lock("to", 0.03, 1, 16, 100);
  wflo_lock_permit_t held, p;
  const wflo_test_event_t *ev;
  uint64_t t0;
  double waited;
  (void)state;
  wflo_set_log_level(WFLO_LOG_DEBUG);
  wflo_test_events_install();
  assert_int_equal(wflo_lock_acquire(l, &held, "main", 0), 0);

  /* Negative: the lock's default (30 ms). */
  t0 = uv_hrtime();
  assert_int_equal(wflo_lock_acquire(l, &p, "late", -1), WFLO_E_LOCK_TIMEOUT);
  waited = (double)(uv_hrtime() - t0) / 1e9;
  assert_true(waited >= 0.029);
  assert_null(p.holder_id);
  assert_int_equal(wflo_test_events_count("resource_lock_timeout"), 1);
  ev = wflo_test_events_get("resource_lock_timeout", 0);
  assert_int_equal(ev->level, WFLO_LOG_ERROR);
  assert_int_equal(json_object_size(ev->fields), 3);
  assert_string_equal(
      json_string_value(json_object_get(ev->fields, "resource_name")), "to");
  assert_string_equal(json_string_value(json_object_get(ev->fields, "holder")),
                      "late");
  assert_true(json_real_value(
                  json_object_get(ev->fields, "wait_time_seconds")) >= 0.029);

  /* A per-call timeout overrides the default, both ways. */
  t0 = uv_hrtime();
  assert_int_equal(wflo_lock_acquire(l, &p, NULL, 0.005), WFLO_E_LOCK_TIMEOUT);
  waited = (double)(uv_hrtime() - t0) / 1e9;
  assert_true(waited >= 0.004 && waited < 0.029);
  t0 = uv_hrtime();
  assert_int_equal(wflo_lock_acquire(l, &p, NULL, 0.08), WFLO_E_LOCK_TIMEOUT);
  assert_true((double)(uv_hrtime() - t0) / 1e9 >= 0.079);

  /* 0 tries once, counts as a timeout with a zero wait. */
  wflo_test_events_clear();
  assert_int_equal(wflo_lock_acquire(l, &p, "try", 0), WFLO_E_LOCK_TIMEOUT);
  ev = wflo_test_events_get("resource_lock_timeout", 0);
  assert_non_null(ev);
  assert_true(json_real_value(
                  json_object_get(ev->fields, "wait_time_seconds")) == 0.0);
  assert_int_equal(stat_int(l, "timeout_count"), 4);
  assert_int_equal(stat_int(l, "current_waiters"), 0);

  /* WFLO_WAIT_FOREVER outlasts the default: released by another thread. */
  {
    waiter_arg_t w;
    uv_thread_t t;
    atomic_int seq;
    atomic_init(&seq, 0);
    w = (waiter_arg_t){l, "forever", WFLO_WAIT_FOREVER, -1, -1, 0, &seq};
    assert_int_equal(uv_thread_create(&t, waiter_thread, &w), 0);
    await_waiters(l, 1);
    uv_sleep(50); /* past the default timeout */
    assert_int_equal(wflo_lock_release(&held), 0);
    uv_thread_join(&t);
    assert_int_equal(w.rc, 0);
    assert_true(w.wait_time >= 0.045);
  }
  /* Timeouts were not acquisitions. */
  assert_int_equal(stat_int(l, "total_acquisitions"), 2);
  assert_int_equal(holders_count(l), 0);
  assert_free_permits(l, 1);
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
  wflo_lock_put(l);
}

/* A waiter that times out leaves the queue without disturbing the others:
 * the next waiter still gets the permit, in order. */
static void test_timeout_leaves_queue(void **state) {
  wflo_lock_t *l = make_lock("tl", 30, 1, 16, 100);
  wflo_lock_permit_t held;
  waiter_arg_t w[3];
  uv_thread_t t[3];
  atomic_int seq;
  const double timeouts[3] = {WFLO_WAIT_FOREVER, 0.02, WFLO_WAIT_FOREVER};
  int i;
  (void)state;
  atomic_init(&seq, 0);
  assert_int_equal(wflo_lock_acquire(l, &held, NULL, 0), 0);
  for (i = 0; i < 3; i++) {
    w[i] = (waiter_arg_t){l, "w", timeouts[i], -1, -1, 0, &seq};
    assert_int_equal(uv_thread_create(&t[i], waiter_thread, &w[i]), 0);
    await_waiters(l, (size_t)i + 1);
  }
  uv_thread_join(&t[1]);
  assert_int_equal(w[1].rc, WFLO_E_LOCK_TIMEOUT);
  assert_int_equal(waiters_of(l), 2);
  assert_int_equal(wflo_lock_release(&held), 0);
  uv_thread_join(&t[0]);
  uv_thread_join(&t[2]);
  wflo_test_assert_thread_checks();
  assert_int_equal(w[0].rc, 0);
  assert_int_equal(w[2].rc, 0);
  assert_int_equal(w[0].order, 0);
  assert_int_equal(w[2].order, 1);
  assert_int_equal(stat_int(l, "timeout_count"), 1);
  assert_free_permits(l, 1);
  wflo_lock_put(l);
}

static void test_queue_full(void **state) {
  wflo_lock_t *l = make_lock("qf", 30, 1, 1, 100);
  wflo_lock_t *z = make_lock("qz", 30, 1, 0, 100);
  wflo_lock_permit_t held, p;
  waiter_arg_t w;
  uv_thread_t t;
  atomic_int seq;
  uint64_t t0;
  (void)state;
  atomic_init(&seq, 0);
  assert_int_equal(wflo_lock_acquire(l, &held, NULL, 0), 0);
  w = (waiter_arg_t){l, "w", WFLO_WAIT_FOREVER, -1, -1, 0, &seq};
  assert_int_equal(uv_thread_create(&t, waiter_thread, &w), 0);
  await_waiters(l, 1);
  /* Refused at once, not after the timeout; not a timeout either. */
  t0 = uv_hrtime();
  assert_int_equal(wflo_lock_acquire(l, &p, NULL, 5.0), WFLO_E_QUEUE_FULL);
  assert_int_equal(wflo_lock_acquire(l, &p, NULL, WFLO_WAIT_FOREVER),
                   WFLO_E_QUEUE_FULL);
  assert_true(uv_hrtime() - t0 < 1000000000ull);
  assert_int_equal(wflo_lock_release(&p), WFLO_E_STATE);
  /* A try does not queue, so it is a plain timeout. */
  assert_int_equal(wflo_lock_acquire(l, &p, NULL, 0), WFLO_E_LOCK_TIMEOUT);
  assert_int_equal(stat_int(l, "timeout_count"), 1);
  assert_int_equal(wflo_lock_release(&held), 0);
  uv_thread_join(&t);
  assert_int_equal(w.rc, 0);

  /* max_waiters 0: never wait. */
  assert_int_equal(wflo_lock_acquire(z, &held, NULL, 1.0), 0);
  assert_int_equal(wflo_lock_acquire(z, &p, NULL, 1.0), WFLO_E_QUEUE_FULL);
  assert_int_equal(wflo_lock_acquire(z, &p, NULL, 0), WFLO_E_LOCK_TIMEOUT);
  assert_int_equal(wflo_lock_release(&held), 0);
  assert_int_equal(wflo_lock_acquire(z, &p, NULL, 1.0), 0);
  assert_int_equal(wflo_lock_release(&p), 0);
  wflo_lock_put(l);
  wflo_lock_put(z);
}

/* --- contention ---------------------------------------------------------- */

static void test_contention(void **state) {
  wflo_lock_t *l = make_lock("cont", 30, 1, 16, 0.005);
  wflo_lock_permit_t held, p;
  waiter_arg_t w;
  uv_thread_t t;
  atomic_int seq;
  const wflo_test_event_t *ev;
  double wt;
  (void)state;
  wflo_set_log_level(WFLO_LOG_WARN);
  wflo_test_events_install();
  atomic_init(&seq, 0);

  /* An acquisition that did not wait is never contention. */
  assert_int_equal(wflo_lock_acquire(l, &held, "main", 0), 0);
  assert_int_equal(stat_int(l, "contention_count"), 0);
  assert_true(stat_real(l, "contention_rate") == 0.0);

  /* One that waited 30 ms > 5 ms is. */
  w = (waiter_arg_t){l, "slow", WFLO_WAIT_FOREVER, -1, -1, 0, &seq};
  assert_int_equal(uv_thread_create(&t, waiter_thread, &w), 0);
  await_waiters(l, 1);
  uv_sleep(30);
  assert_int_equal(wflo_lock_release(&held), 0);
  uv_thread_join(&t);
  wflo_test_assert_thread_checks();
  assert_int_equal(w.rc, 0);
  assert_true(w.wait_time >= 0.029);
  assert_int_equal(stat_int(l, "total_acquisitions"), 2);
  assert_int_equal(stat_int(l, "contention_count"), 1);
  assert_true(stat_real(l, "contention_rate") == 0.5);
  wt = stat_real(l, "max_wait_time_seconds");
  assert_true(wt >= 0.029 && wt == w.wait_time);
  assert_true(stat_real(l, "avg_wait_time_seconds") == wt / 2);

  assert_int_equal(wflo_test_events_count("resource_contention_detected"), 1);
  ev = wflo_test_events_get("resource_contention_detected", 0);
  assert_int_equal(ev->level, WFLO_LOG_WARN);
  assert_int_equal(json_object_size(ev->fields), 3);
  assert_string_equal(
      json_string_value(json_object_get(ev->fields, "resource_name")), "cont");
  assert_string_equal(json_string_value(json_object_get(ev->fields, "holder")),
                      "slow");
  assert_true(json_real_value(json_object_get(
                  ev->fields, "wait_time_seconds")) == w.wait_time);

  /* Two quick ones: the rate falls to 1/4. */
  assert_int_equal(wflo_lock_acquire(l, &p, NULL, 0), 0);
  assert_int_equal(wflo_lock_release(&p), 0);
  assert_int_equal(wflo_lock_acquire(l, &p, NULL, 0), 0);
  assert_int_equal(wflo_lock_release(&p), 0);
  assert_true(stat_real(l, "contention_rate") == 0.25);
  assert_int_equal(wflo_test_events_count("resource_contention_detected"), 1);
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
  wflo_lock_put(l);
}

/* A wait below the threshold is counted in the wait times but is not
 * contention, and emits nothing. */
static void test_wait_below_threshold(void **state) {
  wflo_lock_t *l = make_lock("below", 30, 1, 16, 10.0);
  wflo_lock_permit_t held;
  waiter_arg_t w;
  uv_thread_t t;
  atomic_int seq;
  (void)state;
  wflo_set_log_level(WFLO_LOG_DEBUG);
  wflo_test_events_install();
  atomic_init(&seq, 0);
  assert_int_equal(wflo_lock_acquire(l, &held, NULL, 0), 0);
  w = (waiter_arg_t){l, "w", 5.0, -1, -1, 0, &seq};
  assert_int_equal(uv_thread_create(&t, waiter_thread, &w), 0);
  await_waiters(l, 1);
  uv_sleep(10);
  assert_int_equal(wflo_lock_release(&held), 0);
  uv_thread_join(&t);
  assert_int_equal(w.rc, 0);
  assert_int_equal(stat_int(l, "contention_count"), 0);
  assert_true(stat_real(l, "max_wait_time_seconds") >= 0.009);
  assert_int_equal(wflo_test_events_count(NULL), 0);
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
  wflo_lock_put(l);
}

/* --- stats --------------------------------------------------------------- */

static void test_stats_keys(void **state) {
  static const char *const keys[] = {
      "resource_name",   "total_acquisitions",    "contention_count",
      "contention_rate", "avg_wait_time_seconds", "max_wait_time_seconds",
      "current_holders", "concurrent_capacity",   "timeout_count",
      "current_waiters"};
  wflo_lock_t *l = make_lock("keys", 30, 3, 16, 5), *u;
  wflo_lock_permit_t a, b;
  json_t *j, *h;
  size_t i;
  (void)state;
  assert_int_equal(wflo_lock_acquire(l, &a, "alpha", 0), 0);
  assert_int_equal(wflo_lock_acquire(l, &b, "beta", 0), 0);
  j = stats(l);
  assert_int_equal(json_object_size(j), WFLO_ARRAY_SIZE(keys));
  for (i = 0; i < WFLO_ARRAY_SIZE(keys); i++)
    assert_non_null(json_object_get(j, keys[i]));
  assert_string_equal(json_string_value(json_object_get(j, "resource_name")),
                      "keys");
  assert_true(json_is_integer(json_object_get(j, "total_acquisitions")));
  assert_int_equal(
      json_integer_value(json_object_get(j, "total_acquisitions")), 2);
  assert_true(json_is_integer(json_object_get(j, "contention_count")));
  assert_true(json_is_real(json_object_get(j, "contention_rate")));
  assert_true(json_is_real(json_object_get(j, "avg_wait_time_seconds")));
  assert_true(json_is_real(json_object_get(j, "max_wait_time_seconds")));
  assert_true(json_is_integer(json_object_get(j, "concurrent_capacity")));
  assert_int_equal(
      json_integer_value(json_object_get(j, "concurrent_capacity")), 3);
  assert_true(json_is_integer(json_object_get(j, "timeout_count")));
  assert_true(json_is_integer(json_object_get(j, "current_waiters")));
  h = json_object_get(j, "current_holders");
  assert_true(json_is_array(h));
  assert_int_equal(json_array_size(h), 2);
  assert_string_equal(json_string_value(json_array_get(h, 0)), "alpha");
  assert_string_equal(json_string_value(json_array_get(h, 1)), "beta");
  json_decref(j);
  assert_int_equal(wflo_lock_release(&a), 0);
  assert_int_equal(wflo_lock_release(&b), 0);
  assert_null(wflo_lock_stats_json(NULL));

  /* Unnamed lock, no acquisition yet: null name, zero rates. */
  assert_int_equal(wflo_lock_new(NULL, NULL, &u), 0);
  j = stats(u);
  assert_true(json_is_null(json_object_get(j, "resource_name")));
  assert_true(json_real_value(json_object_get(j, "contention_rate")) == 0.0);
  assert_true(json_real_value(json_object_get(j, "avg_wait_time_seconds")) ==
              0.0);
  assert_int_equal(json_array_size(json_object_get(j, "current_holders")), 0);
  json_decref(j);
  /* Invalid UTF-8 in an id is replaced, never dropped. */
  assert_int_equal(wflo_lock_acquire(u, &a, "bad\xff", 0), 0);
  j = stats(u);
  h = json_array_get(json_object_get(j, "current_holders"), 0);
  assert_string_equal(json_string_value(h), "bad\xef\xbf\xbd");
  json_decref(j);
  assert_int_equal(wflo_lock_release(&a), 0);
  wflo_lock_put(u);
  wflo_lock_put(l);
}

/* --- WFLO_WITH_LOCK ------------------------------------------------------ */

static int with_return(wflo_lock_t *l) {
  int rc;
  WFLO_WITH_LOCK(l, rc) {
    if (holders_count(l) == 1)
      return 7;
  }
  return rc;
}

static void test_with_lock_exits(void **state) {
  wflo_lock_t *l = make_lock("with", 0, 1, 16, 5);
  wflo_lock_permit_t p;
  int rc = -1, runs = 0, i;
  (void)state;

  WFLO_WITH_LOCK(l, rc) {
    assert_int_equal(rc, 0);
    assert_int_equal(holders_count(l), 1);
    runs++;
  }
  assert_int_equal(runs, 1);
  assert_int_equal(holders_count(l), 0);

  /* break leaves the macro (not the enclosing loop) and releases. */
  for (i = 0; i < 3; i++) {
    WFLO_WITH_LOCK(l, rc) {
      runs++;
      break;
    }
    assert_int_equal(holders_count(l), 0);
  }
  assert_int_equal(i, 3);
  assert_int_equal(runs, 4);

  /* continue ends the block too. */
  WFLO_WITH_LOCK(l, rc) {
    runs++;
    continue;
  }
  assert_int_equal(holders_count(l), 0);

  /* return from inside. */
  assert_int_equal(with_return(l), 7);
  assert_int_equal(holders_count(l), 0);

  /* goto out of it. */
  WFLO_WITH_LOCK(l, rc) {
    runs++;
    goto out;
  }
  fail();
out:
  assert_int_equal(holders_count(l), 0);
  assert_int_equal(runs, 6);

  /* Nested on two locks. */
  {
    wflo_lock_t *m = make_lock("with2", 0, 1, 16, 5);
    int rc2;
    WFLO_WITH_LOCK(l, rc) {
      WFLO_WITH_LOCK(m, rc2) {
        assert_int_equal(holders_count(l) + holders_count(m), 2);
        runs++;
      }
    }
    assert_int_equal(holders_count(l) + holders_count(m), 0);
    wflo_lock_put(m);
  }

  /* No permit in time: the body is skipped, rc tells why. */
  assert_int_equal(wflo_lock_acquire(l, &p, NULL, 0), 0);
  WFLO_WITH_LOCK(l, rc) { fail(); }
  assert_int_equal(rc, WFLO_E_LOCK_TIMEOUT);
  WFLO_WITH_LOCK((wflo_lock_t *)NULL, rc) { fail(); }
  assert_int_equal(rc, WFLO_E_INVAL);
  assert_int_equal(wflo_lock_release(&p), 0);
  assert_int_equal(runs, 7);
  assert_int_equal(stat_int(l, "total_acquisitions"), 9);
  wflo_lock_put(l);
}

/* --- allocation failure -------------------------------------------------- */

static int oom_new(void *ud) {
  wflo_lock_t *l;
  int rc = wflo_lock_new("oom", NULL, &l);
  (void)ud;
  if (rc == 0)
    wflo_lock_put(l);
  return rc;
}

static int oom_get(void *ud) {
  wflo_lock_t *a, *b;
  int rc = wflo_lock_get((const char *)ud, NULL, &a);
  if (rc != 0)
    return rc;
  rc = wflo_lock_get((const char *)ud, NULL, &b);
  if (rc == 0) {
    WFLO_TEST_THREAD_CHECK(a == b);
    wflo_lock_put(b);
  }
  wflo_lock_put(a);
  return rc;
}

/* A given holder id is copied; stats allocate only to repair bad UTF-8. */
static int oom_acquire_stats(void *ud) {
  wflo_lock_t *l;
  wflo_lock_permit_t p;
  json_t *j;
  int rc = wflo_lock_new(NULL, NULL, &l);
  (void)ud;
  if (rc != 0)
    return rc;
  rc = wflo_lock_acquire(l, &p, "id\xfe", 0);
  if (rc == 0) {
    j = wflo_lock_stats_json(l);
    rc = j != NULL ? 0 : WFLO_E_NOMEM;
    json_decref(j);
    WFLO_TEST_THREAD_CHECK(wflo_lock_release(&p) == 0);
  }
  wflo_lock_put(l);
  return rc;
}

static void test_oom(void **state) {
  (void)state;
  wflo_test_oom_loop(oom_new, NULL, 0);
  wflo_test_oom_loop(oom_get, "oom-get", 0);
  wflo_test_oom_loop_ex(oom_get, "oom-get", 0, WFLO_TEST_FAIL_AFTER);
  wflo_test_oom_loop(oom_acquire_stats, NULL, 0);
  wflo_test_assert_thread_checks();
}

/* jansson's own allocation failures: stats return NULL, never half an
 * object, and nothing leaks. */
static atomic_int json_fail_at, json_calls;

static void *failing_json_malloc(size_t n) {
  int k = atomic_fetch_add(&json_calls, 1) + 1;
  if (atomic_load(&json_fail_at) > 0 && k >= atomic_load(&json_fail_at))
    return NULL;
  return malloc(n);
}

static void test_stats_json_oom(void **state) {
  wflo_lock_t *l = make_lock("json-oom", 30, 3, 16, 5);
  wflo_lock_permit_t a, b;
  json_malloc_t saved_malloc;
  json_free_t saved_free;
  json_t *j;
  int n, nulls = 0;
  (void)state;
  assert_int_equal(wflo_lock_acquire(l, &a, "alpha", 0), 0);
  assert_int_equal(wflo_lock_acquire(l, &b, NULL, 0), 0);
  json_get_alloc_funcs(&saved_malloc, &saved_free);
  json_set_alloc_funcs(failing_json_malloc, free);
  for (n = 1; n < 200; n++) {
    atomic_store(&json_calls, 0);
    atomic_store(&json_fail_at, n);
    j = wflo_lock_stats_json(l);
    if (j != NULL) {
      assert_int_equal(json_object_size(j), 10);
      json_decref(j);
      break;
    }
    nulls++;
  }
  atomic_store(&json_fail_at, 0);
  json_set_alloc_funcs(saved_malloc, saved_free);
  assert_true(nulls > 3);
  assert_true(n < 200);
  /* The lock still works: the SLOW mark was cleared on every failure. */
  assert_int_equal(wflo_lock_release(&a), 0);
  assert_int_equal(wflo_lock_release(&b), 0);
  assert_int_equal(holders_count(l), 0);
  wflo_lock_put(l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(f)                                                                  \
  cmocka_unit_test_setup_teardown(f, wflo_test_setup, wflo_test_teardown)
      T(test_defaults),
      T(test_bad_configs),
      T(test_config_from_json),
      T(test_registry),
      T(test_exclusive),
      T(test_concurrent_capacity),
      T(test_release_errors),
      T(test_holder_ids),
      T(test_fifo_order),
      T(test_fifo_capacity_two),
      T(test_timeouts),
      T(test_timeout_leaves_queue),
      T(test_queue_full),
      T(test_contention),
      T(test_wait_below_threshold),
      T(test_stats_keys),
      T(test_with_lock_exits),
      T(test_oom),
      T(test_stats_json_oom),
#undef T
  };
  wflo_set_log_level(WFLO_LOG_OFF);
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
