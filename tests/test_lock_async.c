/* Tests of the lock module's async side: acquire on a libuv loop, timeouts,
 * try and queue limits, cancel (pending and after the grant), FIFO across
 * sync and async waiters, grants across threads and loops, context
 * re-entry, sync calls refused inside loop callbacks, and allocation
 * failure. Every loop ends closed with no libwflo state left. */
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

static void await_waiters(wflo_lock_t *l, size_t n) {
  int i;
  for (i = 0; i < 5000 && waiters_of(l) != n; i++)
    uv_sleep(1);
  assert_int_equal(waiters_of(l), n);
}

static json_int_t stat_int(wflo_lock_t *l, const char *key) {
  json_t *j = wflo_lock_stats_json(l);
  json_int_t n;
  assert_non_null(j);
  assert_true(json_is_integer(json_object_get(j, key)));
  n = json_integer_value(json_object_get(j, key));
  json_decref(j);
  return n;
}

static bool holders_contain(wflo_lock_t *l, const char *id) {
  json_t *j = wflo_lock_stats_json(l), *v;
  size_t i;
  bool found = false;
  json_array_foreach(json_object_get(j, "current_holders"), i, v) {
    if (strcmp(json_string_value(v), id) == 0)
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

static wflo_lock_t *make_lock(double timeout, int cap, int max_waiters) {
  wflo_lock_config_t c;
  wflo_lock_t *l = NULL;
  wflo_lock_config_init(&c);
  c.timeout = timeout;
  c.max_concurrent = cap;
  c.max_waiters = max_waiters;
  c.contention_threshold = 0.001;
  assert_int_equal(wflo_lock_new("async", &c, &l), 0);
  return l;
}

static void close_loop(uv_loop_t *loop) {
  wflo_test_loop_close(loop);
  assert_int_equal(wflo__loop_states_alive(), 0);
}

/* What a callback saw; written on the loop's thread, read after the loop
 * (or its thread) is done. */
typedef struct seen {
  int calls;
  int status;
  int order;
  bool held;           /* the permit was held in the callback */
  bool in_callback;    /* wflo__in_loop_callback() was true */
  uv_thread_t thread;  /* where it ran */
  wflo_context_t *ctx; /* wflo_context_current() in the callback */
  char holder[32];
  double wait_time;
} seen_t;

typedef struct item {
  wflo_lock_req_t req;
  seen_t seen;
  bool release;              /* release the permit in the callback */
  wflo_lock_permit_t *extra; /* also release this one in the callback */
  atomic_int *seq;
} item_t;

static void record(wflo_lock_req_t *req, int status) {
  item_t *it = wflo__container_of(req, item_t, req);
  seen_t *s = &it->seen;
  s->calls++;
  s->status = status;
  s->order = it->seq != NULL ? atomic_fetch_add(it->seq, 1) : -1;
  s->held = req->permit.priv.state == WFLO__PERMIT_HELD;
  s->in_callback = wflo__in_loop_callback();
  s->thread = uv_thread_self();
  s->ctx = wflo_context_current();
  s->wait_time = req->permit.wait_time;
  if (req->permit.holder_id != NULL)
    snprintf(s->holder, sizeof(s->holder), "%s", req->permit.holder_id);
}

static void on_done(wflo_lock_req_t *req, int status) {
  item_t *it = wflo__container_of(req, item_t, req);
  record(req, status);
  if (status == 0 && it->release)
    WFLO_TEST_THREAD_CHECK(wflo_lock_release(&req->permit) == 0);
  if (it->extra != NULL)
    WFLO_TEST_THREAD_CHECK(wflo_lock_release(it->extra) == 0);
}

static void item_init(item_t *it, atomic_int *seq, bool release) {
  memset(it, 0, sizeof(*it));
  it->seq = seq;
  it->release = release;
}

/* --- one loop ------------------------------------------------------------ */

static void test_one_loop(void **state) {
  wflo_lock_t *l = make_lock(30, 1, 16);
  uv_loop_t loop;
  item_t it[3];
  atomic_int seq;
  const char *ids[3] = {"r0", "r1", "r2"};
  int i;
  (void)state;
  atomic_init(&seq, 0);
  assert_int_equal(uv_loop_init(&loop), 0);
  for (i = 0; i < 3; i++) {
    item_init(&it[i], &seq, true);
    assert_int_equal(
        wflo_lock_acquire_async(&loop, l, &it[i].req, ids[i], -1, on_done), 0);
    /* Never from inside the call, even with a free permit. */
    assert_int_equal(it[i].seen.calls, 0);
  }
  /* r0's grant is decided already: it is a holder before its callback. */
  assert_true(holders_contain(l, "r0"));
  assert_int_equal(stat_int(l, "current_waiters"), 2);
  assert_int_equal(wflo_lock_cancel(&it[0].req), WFLO_E_STATE);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  wflo_test_assert_thread_checks();
  for (i = 0; i < 3; i++) {
    assert_int_equal(it[i].seen.calls, 1);
    assert_int_equal(it[i].seen.status, 0);
    assert_int_equal(it[i].seen.order, i);
    assert_true(it[i].seen.held);
    assert_true(it[i].seen.in_callback);
    assert_string_equal(it[i].seen.holder, ids[i]);
    assert_int_equal(wflo_lock_release(&it[i].req.permit), WFLO_E_STATE);
    assert_int_equal(wflo_lock_cancel(&it[i].req), WFLO_E_STATE);
  }
  assert_true(it[0].seen.wait_time == 0.0);
  assert_true(it[2].seen.wait_time > 0.0);
  assert_int_equal(stat_int(l, "total_acquisitions"), 3);
  assert_int_equal(stat_int(l, "current_waiters"), 0);
  close_loop(&loop);
  assert_free_permits(l, 1);
  wflo_lock_put(l);
}

/* Many grants in one post are delivered in order, in rounds. */
static void test_many_grants(void **state) {
  enum { N = 150 };
  wflo_lock_t *l = make_lock(30, N, 16);
  uv_loop_t loop;
  static item_t it[N];
  atomic_int seq;
  int i;
  (void)state;
  atomic_init(&seq, 0);
  assert_int_equal(uv_loop_init(&loop), 0);
  for (i = 0; i < N; i++) {
    item_init(&it[i], &seq, false);
    assert_int_equal(
        wflo_lock_acquire_async(&loop, l, &it[i].req, NULL, 0, on_done), 0);
  }
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  for (i = 0; i < N; i++) {
    assert_int_equal(it[i].seen.calls, 1);
    assert_int_equal(it[i].seen.order, i);
    assert_string_equal(it[i].seen.holder, "anonymous");
  }
  {
    json_t *j = wflo_lock_stats_json(l);
    assert_int_equal(json_array_size(json_object_get(j, "current_holders")),
                     N);
    json_decref(j);
  }
  for (i = 0; i < N; i++)
    assert_int_equal(wflo_lock_release(&it[i].req.permit), 0);
  close_loop(&loop);
  wflo_lock_put(l);
}

/* A callback may reuse its request at once. */
static int reuse_left;
static wflo_lock_t *reuse_lock;

static void on_reuse(wflo_lock_req_t *req, int status) {
  record(req, status);
  WFLO_TEST_THREAD_CHECK(status == 0);
  WFLO_TEST_THREAD_CHECK(wflo_lock_release(&req->permit) == 0);
  if (--reuse_left > 0)
    WFLO_TEST_THREAD_CHECK(wflo_lock_acquire_async(req->data, reuse_lock, req,
                                                   NULL, -1, on_reuse) == 0);
}

static void test_reuse_in_callback(void **state) {
  uv_loop_t loop;
  item_t it;
  (void)state;
  reuse_lock = make_lock(30, 1, 16);
  assert_int_equal(uv_loop_init(&loop), 0);
  item_init(&it, NULL, false);
  it.req.data = &loop;
  reuse_left = 5;
  assert_int_equal(
      wflo_lock_acquire_async(&loop, reuse_lock, &it.req, NULL, -1, on_reuse),
      0);
  /* data is the user's: acquire_async leaves it alone. */
  assert_ptr_equal(it.req.data, &loop);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  wflo_test_assert_thread_checks();
  assert_int_equal(it.seen.calls, 5);
  assert_int_equal(stat_int(reuse_lock, "total_acquisitions"), 5);
  close_loop(&loop);
  wflo_lock_put(reuse_lock);
}

/* Callbacks that re-queue forever must not starve the loop: a timer of the
 * user's still fires (without the per-wake-up budget this test hangs). */
static bool spin_stop;
static long spin_grants;
static wflo_lock_t *spin_lock;
static uv_timer_t spin_timer;

static void on_stop_timer(uv_timer_t *t);

static void on_spin(wflo_lock_req_t *req, int status) {
  WFLO_TEST_THREAD_CHECK(status == 0);
  /* The timer starts with the spinning, even on a slow machine. */
  if (spin_grants++ == 0)
    WFLO_TEST_THREAD_CHECK(uv_timer_start(&spin_timer, on_stop_timer, 5, 0) ==
                           0);
  WFLO_TEST_THREAD_CHECK(wflo_lock_release(&req->permit) == 0);
  if (!spin_stop)
    WFLO_TEST_THREAD_CHECK(wflo_lock_acquire_async(req->data, spin_lock, req,
                                                   NULL, -1, on_spin) == 0);
}

static void on_stop_timer(uv_timer_t *t) {
  spin_stop = true;
  uv_close((uv_handle_t *)t, NULL);
}

static void test_no_starvation(void **state) {
  uv_loop_t loop;
  wflo_lock_req_t reqs[3];
  int i;
  (void)state;
  spin_lock = make_lock(30, 1, 16);
  spin_stop = false;
  spin_grants = 0;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(uv_timer_init(&loop, &spin_timer), 0);
  for (i = 0; i < 3; i++) {
    reqs[i].data = &loop;
    assert_int_equal(
        wflo_lock_acquire_async(&loop, spin_lock, &reqs[i], NULL, -1, on_spin),
        0);
  }
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  wflo_test_assert_thread_checks();
  assert_true(spin_stop);
  assert_true(spin_grants >= 256); /* one wake-up's worth at least */
  assert_int_equal(stat_int(spin_lock, "total_acquisitions"), spin_grants);
  close_loop(&loop);
  wflo_lock_put(spin_lock);
}

/* --- timeouts, try, queue limits ----------------------------------------- */

typedef struct release_timer {
  uv_timer_t timer;
  wflo_lock_permit_t *permit;
} release_timer_t;

static void on_release_timer(uv_timer_t *t) {
  release_timer_t *rt = wflo__container_of(t, release_timer_t, timer);
  WFLO_TEST_THREAD_CHECK(wflo_lock_release(rt->permit) == 0);
  uv_close((uv_handle_t *)t, NULL);
}

static void test_async_timeouts(void **state) {
  wflo_lock_t *l = make_lock(0.02, 1, 3);
  wflo_lock_permit_t held;
  release_timer_t rt;
  uv_loop_t loop;
  item_t dflt, longer, forever, try0, full;
  const wflo_test_event_t *ev;
  atomic_int seq;
  (void)state;
  atomic_init(&seq, 0);
  wflo_set_log_level(WFLO_LOG_DEBUG);
  wflo_test_events_install();
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo_lock_acquire(l, &held, "main", 0), 0);

  item_init(&dflt, &seq, true);
  item_init(&longer, &seq, true);
  item_init(&forever, &seq, true);
  item_init(&try0, &seq, true);
  item_init(&full, &seq, true);
  /* Default (20 ms): times out. 10 s and forever: granted when the permit
   * is released at 60 ms. */
  assert_int_equal(
      wflo_lock_acquire_async(&loop, l, &dflt.req, "dflt", -1, on_done), 0);
  assert_int_equal(
      wflo_lock_acquire_async(&loop, l, &longer.req, "longer", 10, on_done),
      0);
  assert_int_equal(wflo_lock_acquire_async(&loop, l, &forever.req, "forever",
                                           WFLO_WAIT_FOREVER, on_done),
                   0);
  /* A try refuses at once and never calls back; so does a full queue. */
  assert_int_equal(
      wflo_lock_acquire_async(&loop, l, &try0.req, "try", 0, on_done),
      WFLO_E_LOCK_TIMEOUT);
  assert_int_equal(
      wflo_lock_acquire_async(&loop, l, &full.req, "full", 5, on_done),
      WFLO_E_QUEUE_FULL);
  assert_int_equal(wflo_lock_cancel(&try0.req), WFLO_E_STATE);
  assert_int_equal(wflo_lock_release(&full.req.permit), WFLO_E_STATE);
  /* Bad arguments. */
  assert_int_equal(
      wflo_lock_acquire_async(&loop, l, &full.req, NULL, NAN, on_done),
      WFLO_E_INVAL);
  assert_int_equal(
      wflo_lock_acquire_async(&loop, l, &full.req, NULL, 2e9, on_done),
      WFLO_E_INVAL);
  assert_int_equal(wflo_lock_acquire_async(&loop, l, &full.req, NULL, 1, NULL),
                   WFLO_E_INVAL);
  assert_int_equal(
      wflo_lock_acquire_async(NULL, l, &full.req, NULL, 1, on_done),
      WFLO_E_INVAL);
  assert_int_equal(
      wflo_lock_acquire_async(&loop, NULL, &full.req, NULL, 1, on_done),
      WFLO_E_INVAL);
  assert_int_equal(wflo_lock_acquire_async(&loop, l, NULL, NULL, 1, on_done),
                   WFLO_E_INVAL);

  rt.permit = &held;
  assert_int_equal(uv_timer_init(&loop, &rt.timer), 0);
  assert_int_equal(uv_timer_start(&rt.timer, on_release_timer, 60, 0), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  wflo_test_assert_thread_checks();

  assert_int_equal(dflt.seen.calls, 1);
  assert_int_equal(dflt.seen.status, WFLO_E_LOCK_TIMEOUT);
  assert_false(dflt.seen.held);
  assert_true(dflt.seen.in_callback);
  assert_int_equal(dflt.seen.order, 0);
  assert_int_equal(longer.seen.status, 0);
  assert_int_equal(forever.seen.status, 0);
  assert_int_equal(longer.seen.order, 1);
  assert_int_equal(forever.seen.order, 2);
  assert_true(longer.seen.wait_time >= 0.05);
  assert_int_equal(try0.seen.calls, 0);
  assert_int_equal(full.seen.calls, 0);
  assert_int_equal(wflo_lock_release(&dflt.req.permit), WFLO_E_STATE);
  assert_int_equal(wflo_lock_cancel(&dflt.req), WFLO_E_STATE);

  assert_int_equal(stat_int(l, "timeout_count"), 2);
  assert_int_equal(stat_int(l, "total_acquisitions"), 3);
  assert_int_equal(wflo_test_events_count("resource_lock_timeout"), 2);
  ev = wflo_test_events_get("resource_lock_timeout", 0);
  assert_string_equal(json_string_value(json_object_get(ev->fields, "holder")),
                      "try");
  assert_true(json_real_value(
                  json_object_get(ev->fields, "wait_time_seconds")) == 0.0);
  ev = wflo_test_events_get("resource_lock_timeout", 1);
  assert_string_equal(json_string_value(json_object_get(ev->fields, "holder")),
                      "dflt");
  assert_true(json_real_value(
                  json_object_get(ev->fields, "wait_time_seconds")) >= 0.019);
  /* Both granted waits exceeded the 1 ms threshold. */
  assert_int_equal(wflo_test_events_count("resource_contention_detected"), 2);
  ev = wflo_test_events_get("resource_contention_detected", 0);
  assert_string_equal(json_string_value(json_object_get(ev->fields, "holder")),
                      "longer");
  assert_int_equal(stat_int(l, "contention_count"), 2);
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
  close_loop(&loop);
  assert_free_permits(l, 1);
  wflo_lock_put(l);
}

/* --- cancel -------------------------------------------------------------- */

static void test_cancel(void **state) {
  wflo_lock_t *l = make_lock(30, 1, 16);
  wflo_lock_permit_t held;
  uv_loop_t loop;
  item_t a, b, c;
  wflo_lock_req_t zero;
  atomic_int seq;
  (void)state;
  atomic_init(&seq, 0);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo_lock_acquire(l, &held, NULL, 0), 0);
  item_init(&a, &seq, true);
  item_init(&b, &seq, true);
  item_init(&c, &seq, true);
  /* b's callback (the cancel) releases the held permit. */
  b.extra = &held;
  assert_int_equal(wflo_lock_acquire_async(&loop, l, &a.req, "a", 5, on_done),
                   0);
  assert_int_equal(wflo_lock_acquire_async(&loop, l, &b.req, "b", 5, on_done),
                   0);
  assert_int_equal(wflo_lock_acquire_async(&loop, l, &c.req, "c", 5, on_done),
                   0);
  assert_int_equal(wflo_lock_cancel(&b.req), 0);
  assert_int_equal(b.seen.calls, 0); /* later, through the loop */
  assert_int_equal(wflo_lock_cancel(&b.req), WFLO_E_STATE);
  assert_int_equal(waiters_of(l), 2);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  wflo_test_assert_thread_checks();
  assert_int_equal(b.seen.calls, 1);
  assert_int_equal(b.seen.status, WFLO_E_CANCELED);
  assert_false(b.seen.held);
  assert_int_equal(b.seen.order, 0);
  /* The others were not disturbed: a then c, in order. */
  assert_int_equal(a.seen.status, 0);
  assert_int_equal(a.seen.order, 1);
  assert_int_equal(c.seen.status, 0);
  assert_int_equal(c.seen.order, 2);
  assert_int_equal(wflo_lock_release(&b.req.permit), WFLO_E_STATE);
  assert_int_equal(stat_int(l, "total_acquisitions"), 3);
  assert_int_equal(stat_int(l, "timeout_count"), 0);

  /* After the grant was decided: refused, and the callback gets the grant. */
  item_init(&a, &seq, true);
  assert_int_equal(wflo_lock_acquire_async(&loop, l, &a.req, "a", 5, on_done),
                   0);
  assert_int_equal(wflo_lock_cancel(&a.req), WFLO_E_STATE);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(a.seen.calls, 1);
  assert_int_equal(a.seen.status, 0);

  assert_int_equal(wflo_lock_cancel(NULL), WFLO_E_INVAL);
  memset(&zero, 0, sizeof(zero));
  assert_int_equal(wflo_lock_cancel(&zero), WFLO_E_STATE);
  close_loop(&loop);
  assert_free_permits(l, 1);
  wflo_lock_put(l);
}

/* Cancel from inside another request's callback, and of a request whose
 * timer would fire later: the callback still runs once. */
static item_t *cancel_target;

static void on_cancel_other(wflo_lock_req_t *req, int status) {
  record(req, status);
  WFLO_TEST_THREAD_CHECK(wflo_lock_cancel(&cancel_target->req) == 0);
  WFLO_TEST_THREAD_CHECK(wflo_lock_cancel(req) == WFLO_E_STATE);
  WFLO_TEST_THREAD_CHECK(wflo_lock_release(&req->permit) == 0);
}

static void test_cancel_from_callback(void **state) {
  wflo_lock_t *l = make_lock(30, 1, 16);
  uv_loop_t loop;
  item_t a, b;
  atomic_int seq;
  (void)state;
  atomic_init(&seq, 0);
  assert_int_equal(uv_loop_init(&loop), 0);
  item_init(&a, &seq, false);
  item_init(&b, &seq, true);
  cancel_target = &b;
  assert_int_equal(
      wflo_lock_acquire_async(&loop, l, &a.req, NULL, 1, on_cancel_other), 0);
  assert_int_equal(wflo_lock_acquire_async(&loop, l, &b.req, NULL, 1, on_done),
                   0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  wflo_test_assert_thread_checks();
  assert_int_equal(a.seen.status, 0);
  assert_int_equal(b.seen.calls, 1);
  assert_int_equal(b.seen.status, WFLO_E_CANCELED);
  assert_int_equal(stat_int(l, "total_acquisitions"), 1);
  close_loop(&loop);
  assert_free_permits(l, 1);
  wflo_lock_put(l);
}

/* --- across threads and loops -------------------------------------------- */

typedef struct loop_thread {
  uv_loop_t loop;
  wflo_lock_t *lock;
  item_t item;
  atomic_int started;
  uv_thread_t self;
} loop_thread_t;

static void run_loop_b(void *arg) {
  loop_thread_t *t = arg;
  t->self = uv_thread_self();
  WFLO_TEST_THREAD_CHECK(wflo_lock_acquire_async(&t->loop, t->lock,
                                                 &t->item.req, "on-b", 5,
                                                 on_done) == 0);
  atomic_store(&t->started, 1);
  WFLO_TEST_THREAD_CHECK(uv_run(&t->loop, UV_RUN_DEFAULT) == 0);
}

/* A release on the main thread grants a waiter of loop B (thread B); B's
 * callback releases, which grants a waiter of loop A (main). */
static void test_two_loops(void **state) {
  wflo_lock_t *l = make_lock(30, 1, 16);
  wflo_lock_permit_t held;
  loop_thread_t b;
  uv_loop_t a_loop;
  uv_thread_t tb;
  item_t a;
  atomic_int seq;
  (void)state;
  atomic_init(&seq, 0);
  memset(&b, 0, sizeof(b));
  assert_int_equal(uv_loop_init(&b.loop), 0);
  assert_int_equal(uv_loop_init(&a_loop), 0);
  b.lock = l;
  item_init(&b.item, &seq, true);
  item_init(&a, &seq, true);
  assert_int_equal(wflo_lock_acquire(l, &held, "main", 0), 0);

  assert_int_equal(uv_thread_create(&tb, run_loop_b, &b), 0);
  await_waiters(l, 1);
  assert_int_equal(
      wflo_lock_acquire_async(&a_loop, l, &a.req, "on-a", 5, on_done), 0);
  assert_int_equal(waiters_of(l), 2);
  assert_int_equal(wflo_lock_release(&held), 0);
  assert_int_equal(uv_run(&a_loop, UV_RUN_DEFAULT), 0);
  uv_thread_join(&tb);
  wflo_test_assert_thread_checks();

  assert_int_equal(b.item.seen.status, 0);
  assert_int_equal(b.item.seen.order, 0);
  assert_true(uv_thread_equal(&b.item.seen.thread, &b.self));
  assert_int_equal(a.seen.status, 0);
  assert_int_equal(a.seen.order, 1);
  {
    uv_thread_t me = uv_thread_self();
    assert_true(uv_thread_equal(&a.seen.thread, &me));
  }
  assert_int_equal(stat_int(l, "total_acquisitions"), 3);
  wflo_test_loop_close(&b.loop);
  close_loop(&a_loop);
  assert_free_permits(l, 1);
  wflo_lock_put(l);
}

/* FIFO across sync and async waiters: async, sync, async, sync. The async
 * ones live on loop L (thread L); the second is started there through a
 * uv_async_t of the test. */
typedef struct fifo_ctx {
  uv_loop_t loop;
  uv_async_t kick;
  wflo_lock_t *lock;
  item_t r[2];
  atomic_int started;
} fifo_ctx_t;

static void on_kick(uv_async_t *h) {
  fifo_ctx_t *f = h->data;
  WFLO_TEST_THREAD_CHECK(
      wflo_lock_acquire_async(&f->loop, f->lock, &f->r[1].req, "async-2",
                              WFLO_WAIT_FOREVER, on_done) == 0);
  uv_close((uv_handle_t *)h, NULL);
}

static void run_fifo_loop(void *arg) {
  fifo_ctx_t *f = arg;
  WFLO_TEST_THREAD_CHECK(
      wflo_lock_acquire_async(&f->loop, f->lock, &f->r[0].req, "async-1",
                              WFLO_WAIT_FOREVER, on_done) == 0);
  atomic_store(&f->started, 1);
  WFLO_TEST_THREAD_CHECK(uv_run(&f->loop, UV_RUN_DEFAULT) == 0);
}

typedef struct sync_waiter_arg {
  wflo_lock_t *lock;
  atomic_int *seq;
  int order;
  int rc;
} sync_waiter_arg_t;

static void sync_waiter(void *arg) {
  sync_waiter_arg_t *w = arg;
  wflo_lock_permit_t p;
  w->rc = wflo_lock_acquire(w->lock, &p, "sync", WFLO_WAIT_FOREVER);
  if (w->rc == 0) {
    w->order = atomic_fetch_add(w->seq, 1);
    WFLO_TEST_THREAD_CHECK(wflo_lock_release(&p) == 0);
  }
}

static void test_fifo_sync_and_async(void **state) {
  wflo_lock_t *l = make_lock(30, 1, 16);
  wflo_lock_permit_t held;
  static fifo_ctx_t f;
  sync_waiter_arg_t s[2];
  uv_thread_t tl, ts[2];
  atomic_int seq;
  (void)state;
  atomic_init(&seq, 0);
  memset(&f, 0, sizeof(f));
  f.lock = l;
  item_init(&f.r[0], &seq, true);
  item_init(&f.r[1], &seq, true);
  assert_int_equal(uv_loop_init(&f.loop), 0);
  assert_int_equal(uv_async_init(&f.loop, &f.kick, on_kick), 0);
  f.kick.data = &f;
  assert_int_equal(wflo_lock_acquire(l, &held, "main", 0), 0);

  assert_int_equal(uv_thread_create(&tl, run_fifo_loop, &f), 0);
  await_waiters(l, 1);
  s[0] = (sync_waiter_arg_t){l, &seq, -1, -1};
  assert_int_equal(uv_thread_create(&ts[0], sync_waiter, &s[0]), 0);
  await_waiters(l, 2);
  assert_int_equal(uv_async_send(&f.kick), 0);
  await_waiters(l, 3);
  s[1] = (sync_waiter_arg_t){l, &seq, -1, -1};
  assert_int_equal(uv_thread_create(&ts[1], sync_waiter, &s[1]), 0);
  await_waiters(l, 4);

  assert_int_equal(wflo_lock_release(&held), 0);
  uv_thread_join(&ts[0]);
  uv_thread_join(&ts[1]);
  uv_thread_join(&tl);
  wflo_test_assert_thread_checks();
  assert_int_equal(f.r[0].seen.order, 0);
  assert_int_equal(s[0].order, 1);
  assert_int_equal(f.r[1].seen.order, 2);
  assert_int_equal(s[1].order, 3);
  assert_int_equal(f.r[0].seen.calls + f.r[1].seen.calls, 2);
  close_loop(&f.loop);
  assert_free_permits(l, 1);
  wflo_lock_put(l);
}

/* --- context, loop-thread rules, lifetime -------------------------------- */

static void test_context_reentry(void **state) {
  wflo_lock_t *l = make_lock(30, 1, 16);
  wflo_lock_permit_t held;
  wflo_context_t *ctx;
  uv_loop_t loop;
  item_t a, b;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo_context_new("exec-ctx", "wf", 1.0, NULL, &ctx), 0);
  item_init(&a, NULL, true);
  item_init(&b, NULL, true);
  assert_int_equal(wflo_lock_acquire(l, &held, NULL, 0), 0);
  assert_int_equal(wflo_context_enter(ctx), 0);
  assert_int_equal(wflo_lock_acquire_async(&loop, l, &a.req, NULL, 1, on_done),
                   0);
  assert_int_equal(
      wflo_lock_acquire_async(&loop, l, &b.req, NULL, 0.01, on_done), 0);
  assert_int_equal(wflo_context_exit(ctx), 0);
  /* The requests keep the context alive. */
  wflo_context_put(ctx);
  assert_int_equal(wflo_lock_cancel(&a.req), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  /* Cancelled and timed out alike ran inside the captured context. */
  assert_int_equal(a.seen.status, WFLO_E_CANCELED);
  assert_int_equal(b.seen.status, WFLO_E_LOCK_TIMEOUT);
  assert_non_null(a.seen.ctx);
  assert_ptr_equal(a.seen.ctx, b.seen.ctx);
  assert_null(wflo_context_current());

  /* Granted: the holder id is the context's execution id. */
  assert_int_equal(wflo_lock_release(&held), 0);
  assert_int_equal(wflo_context_new("exec-2", NULL, 1.0, NULL, &ctx), 0);
  item_init(&a, NULL, false);
  assert_int_equal(wflo_context_enter(ctx), 0);
  assert_int_equal(wflo_lock_acquire_async(&loop, l, &a.req, NULL, 1, on_done),
                   0);
  assert_int_equal(wflo_context_exit(ctx), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_ptr_equal(a.seen.ctx, ctx);
  assert_string_equal(a.seen.holder, "exec-2");
  wflo_context_put(ctx);
  /* The permit still holds the context: its id stays valid. */
  assert_true(holders_contain(l, "exec-2"));
  assert_int_equal(wflo_lock_release(&a.req.permit), 0);
  close_loop(&loop);
  wflo_lock_put(l);
}

static wflo_lock_t *other_lock;

static void on_try_sync(wflo_lock_req_t *req, int status) {
  wflo_lock_permit_t p;
  record(req, status);
  /* Waiting here would stall the loop: refused, whatever the timeout. */
  WFLO_TEST_THREAD_CHECK(wflo_lock_acquire(other_lock, &p, NULL, 0.5) ==
                         WFLO_E_STATE);
  WFLO_TEST_THREAD_CHECK(wflo_lock_acquire(other_lock, &p, NULL, -1) ==
                         WFLO_E_STATE);
  WFLO_TEST_THREAD_CHECK(wflo_lock_acquire(other_lock, &p, NULL,
                                           WFLO_WAIT_FOREVER) == WFLO_E_STATE);
  WFLO_TEST_THREAD_CHECK(wflo_lock_release(&p) == WFLO_E_STATE);
  /* A try never waits: allowed. */
  WFLO_TEST_THREAD_CHECK(wflo_lock_acquire(other_lock, &p, NULL, 0) == 0);
  WFLO_TEST_THREAD_CHECK(wflo_lock_release(&p) == 0);
  /* Releasing never blocks: allowed anywhere. */
  WFLO_TEST_THREAD_CHECK(wflo_lock_release(&req->permit) == 0);
}

static void test_sync_in_loop_callback(void **state) {
  wflo_lock_t *l = make_lock(30, 1, 16);
  uv_loop_t loop;
  item_t a;
  wflo_lock_permit_t p;
  (void)state;
  other_lock = make_lock(30, 1, 16);
  assert_int_equal(uv_loop_init(&loop), 0);
  item_init(&a, NULL, false);
  assert_int_equal(
      wflo_lock_acquire_async(&loop, l, &a.req, NULL, 1, on_try_sync), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  wflo_test_assert_thread_checks();
  assert_int_equal(a.seen.calls, 1);
  /* Outside a callback the same thread may wait. */
  assert_int_equal(wflo_lock_acquire(other_lock, &p, NULL, 0.5), 0);
  assert_int_equal(wflo_lock_release(&p), 0);
  close_loop(&loop);
  wflo_lock_put(other_lock);
  wflo_lock_put(l);
}

/* The caller may drop its lock reference while requests are pending. */
static void test_put_while_pending(void **state) {
  wflo_lock_t *l = make_lock(30, 1, 16);
  uv_loop_t loop;
  item_t a, b;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  item_init(&a, NULL, true);
  item_init(&b, NULL, true);
  assert_int_equal(wflo_lock_acquire_async(&loop, l, &a.req, NULL, 1, on_done),
                   0);
  assert_int_equal(wflo_lock_acquire_async(&loop, l, &b.req, NULL, 1, on_done),
                   0);
  wflo_lock_put(l);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  wflo_test_assert_thread_checks();
  assert_int_equal(a.seen.status, 0);
  assert_int_equal(b.seen.status, 0);
  close_loop(&loop);
  assert_int_equal(wflo_test_alloc_live(), 0);
}

/* --- allocation failure -------------------------------------------------- */

typedef struct oom_ctx {
  int waits; /* 0: granted at once; 1: waits for a release */
} oom_ctx_t;

static void on_oom(wflo_lock_req_t *req, int status) {
  WFLO_TEST_THREAD_CHECK(status == 0);
  WFLO_TEST_THREAD_CHECK(wflo_lock_release(&req->permit) == 0);
}

static void on_oom_release_held(wflo_lock_req_t *req, int status) {
  WFLO_TEST_THREAD_CHECK(status == 0);
  WFLO_TEST_THREAD_CHECK(wflo_lock_release(&req->permit) == 0);
}

static int oom_async(void *ud) {
  oom_ctx_t *o = ud;
  wflo_lock_permit_t held;
  wflo_lock_req_t r1, r2;
  wflo_lock_t *l;
  uv_loop_t loop;
  int rc, rc2 = -1;
  if (uv_loop_init(&loop) != 0)
    return -1;
  rc = wflo_lock_new("oom", NULL, &l);
  if (rc != 0)
    goto out_loop;
  if (o->waits)
    WFLO_TEST_THREAD_CHECK(wflo_lock_acquire(l, &held, NULL, 0) == 0);
  rc = wflo_lock_acquire_async(&loop, l, &r1, "holder-1", 5, on_oom);
  if (rc == 0)
    rc2 = wflo_lock_acquire_async(&loop, l, &r2, NULL, 5, on_oom_release_held);
  if (o->waits)
    WFLO_TEST_THREAD_CHECK(wflo_lock_release(&held) == 0);
  WFLO_TEST_THREAD_CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
  if (rc == 0)
    rc = rc2;
  wflo_lock_put(l);
out_loop:
  WFLO_TEST_THREAD_CHECK(uv_loop_close(&loop) == 0);
  WFLO_TEST_THREAD_CHECK(wflo__loop_states_alive() == 0);
  return rc;
}

static void test_oom(void **state) {
  oom_ctx_t o;
  (void)state;
  o.waits = 0;
  wflo_test_oom_loop(oom_async, &o, 0);
  o.waits = 1;
  wflo_test_oom_loop(oom_async, &o, 0);
  wflo_test_oom_loop_ex(oom_async, &o, 0, WFLO_TEST_FAIL_AFTER);
  wflo_test_assert_thread_checks();
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(f)                                                                  \
  cmocka_unit_test_setup_teardown(f, wflo_test_setup, wflo_test_teardown)
      T(test_one_loop),
      T(test_many_grants),
      T(test_reuse_in_callback),
      T(test_no_starvation),
      T(test_async_timeouts),
      T(test_cancel),
      T(test_cancel_from_callback),
      T(test_two_loops),
      T(test_fifo_sync_and_async),
      T(test_context_reentry),
      T(test_sync_in_loop_callback),
      T(test_put_while_pending),
      T(test_oom),
#undef T
  };
  wflo_set_log_level(WFLO_LOG_OFF);
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
