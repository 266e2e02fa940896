/* Stress test of one lock (capacity 2) shared by 4 threads and 2 loops, each
 * loop on its own thread: ACQUISITIONS granted acquisitions in all (scaled
 * by WFLO_STRESS_SCALE), with short spinning holds. Every critical section
 * counts its holders in an atomic and records any excess over the capacity.
 * Timeouts (one thread, one loop) and cancels (the other loop) race with
 * grants all along. The main thread asserts that the capacity was never
 * exceeded, that every acquisition was released, that the lock's counts
 * match what the actors saw, and that grants really crossed threads and
 * loops. */
/* ctest-labels: threads slow */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <sched.h>

#include "harness.h"
#include "internal/lock.h"

#define ACQUISITIONS 1000000
#define CAPACITY 2
#define ACTORS 6      /* 0-3: threads, 4-5: loops */
#define OUTSTANDING 8 /* requests in flight per loop */

enum { LOOP_A = 4, LOOP_B = 5 };

static wflo_lock_t *lock;
static long quota; /* granted acquisitions per actor */

static atomic_int holders, max_holders, excess;
static atomic_long granted[ACTORS];
static atomic_long released;
static atomic_long timeouts, cancels;
static atomic_int last_releaser;
/* Grants after a wait whose last release came from another kind of actor:
 * a thread to a loop, a loop to a thread, one loop to the other. */
static atomic_long thread_to_loop, loop_to_thread, loop_to_loop;

static bool is_loop(int actor) { return actor >= LOOP_A; }

/* The critical section: count holders, hold briefly, note the releaser. */
static void hold(int me, double wait_time) {
  int h = atomic_fetch_add(&holders, 1) + 1, m, from;
  volatile int spin;
  if (h > CAPACITY)
    atomic_fetch_add(&excess, 1);
  m = atomic_load(&max_holders);
  while (h > m && !atomic_compare_exchange_weak(&max_holders, &m, h))
    ;
  if (wait_time > 0) {
    from = atomic_load(&last_releaser);
    if (!is_loop(from) && is_loop(me))
      atomic_fetch_add(&thread_to_loop, 1);
    else if (is_loop(from) && !is_loop(me))
      atomic_fetch_add(&loop_to_thread, 1);
    else if (is_loop(from) && is_loop(me) && from != me)
      atomic_fetch_add(&loop_to_loop, 1);
  }
  /* Mostly a short spin; now and then a yield, so that holders overlap
   * even on 2 cores and an excess permit would show. */
  if ((atomic_load(&granted[me]) & 31) == 0)
    sched_yield();
  else
    for (spin = 0; spin < 50; spin++)
      ;
  atomic_fetch_sub(&holders, 1);
  atomic_fetch_add(&granted[me], 1);
  atomic_store(&last_releaser, me);
}

static void release(wflo_lock_permit_t *p) {
  WFLO_TEST_THREAD_CHECK(wflo_lock_release(p) == 0);
  atomic_fetch_add(&released, 1);
}

/* --- threads ------------------------------------------------------------- */

static void thread_actor(void *arg) {
  int me = (int)(intptr_t)arg;
  /* Thread 3 waits at most 0.5 ms and tries again. */
  double timeout = me == 3 ? 0.0005 : WFLO_WAIT_FOREVER;
  wflo_lock_permit_t p;
  long n = 0;
  while (n < quota) {
    int rc = wflo_lock_acquire(lock, &p, NULL, timeout);
    if (rc == WFLO_E_LOCK_TIMEOUT) {
      atomic_fetch_add(&timeouts, 1);
      continue;
    }
    WFLO_TEST_THREAD_CHECK(rc == 0);
    if (rc != 0)
      return;
    hold(me, p.wait_time);
    release(&p);
    n++;
  }
}

/* --- loops --------------------------------------------------------------- */

typedef struct loop_actor {
  int me;
  uv_loop_t loop;
  long started; /* requests started that may still be granted */
  long done;    /* granted */
  unsigned n;
  wflo_lock_req_t reqs[OUTSTANDING];
} loop_actor_t;

static void start(loop_actor_t *a, wflo_lock_req_t *req);

static void on_result(wflo_lock_req_t *req, int status) {
  loop_actor_t *a = req->data;
  if (status == 0) {
    hold(a->me, req->permit.wait_time);
    release(&req->permit);
    a->done++;
  } else {
    WFLO_TEST_THREAD_CHECK(status == WFLO_E_LOCK_TIMEOUT ||
                           status == WFLO_E_CANCELED);
    WFLO_TEST_THREAD_CHECK(req->permit.holder_id == NULL);
    WFLO_TEST_THREAD_CHECK(wflo_lock_release(&req->permit) == WFLO_E_STATE);
    atomic_fetch_add(status == WFLO_E_CANCELED ? &cancels : &timeouts, 1);
    a->started--;
  }
  if (a->started < quota)
    start(a, req);
}

static void start(loop_actor_t *a, wflo_lock_req_t *req) {
  /* Loop B waits at most 1 ms; loop A cancels every 16th request at once,
   * racing with grants decided on other threads. */
  double timeout = a->me == LOOP_B ? 0.001 : WFLO_WAIT_FOREVER;
  int rc;
  req->data = a;
  rc = wflo_lock_acquire_async(&a->loop, lock, req, NULL, timeout, on_result);
  WFLO_TEST_THREAD_CHECK(rc == 0);
  if (rc != 0)
    return;
  a->started++;
  if (a->me == LOOP_A && (++a->n & 15) == 0) {
    rc = wflo_lock_cancel(req);
    WFLO_TEST_THREAD_CHECK(rc == 0 || rc == WFLO_E_STATE);
  }
}

static void loop_actor(void *arg) {
  loop_actor_t *a = arg;
  int i;
  for (i = 0; i < OUTSTANDING && a->started < quota; i++)
    start(a, &a->reqs[i]);
  WFLO_TEST_THREAD_CHECK(uv_run(&a->loop, UV_RUN_DEFAULT) == 0);
}

static void test_stress(void **state) {
  static loop_actor_t loops[2];
  wflo_lock_config_t c;
  uv_thread_t t[ACTORS];
  long total = wflo_test_scale(ACQUISITIONS), sum = 0;
  json_t *j;
  int i;
  (void)state;
  quota = total / ACTORS > 0 ? total / ACTORS : 1;
  wflo_lock_config_init(&c);
  c.max_concurrent = CAPACITY;
  c.max_waiters = 64;
  assert_int_equal(wflo_lock_new("stress", &c, &lock), 0);
  for (i = 0; i < 2; i++) {
    memset(&loops[i], 0, sizeof(loops[i]));
    loops[i].me = LOOP_A + i;
    assert_int_equal(uv_loop_init(&loops[i].loop), 0);
  }
  for (i = 0; i < 4; i++)
    assert_int_equal(
        uv_thread_create(&t[i], thread_actor, (void *)(intptr_t)i), 0);
  for (i = 0; i < 2; i++)
    assert_int_equal(uv_thread_create(&t[4 + i], loop_actor, &loops[i]), 0);
  for (i = 0; i < ACTORS; i++)
    uv_thread_join(&t[i]);
  wflo_test_assert_thread_checks();

  assert_int_equal(atomic_load(&excess), 0);
  assert_true(atomic_load(&max_holders) <= CAPACITY);
  assert_int_equal(atomic_load(&holders), 0);
  for (i = 0; i < ACTORS; i++) {
    assert_int_equal(atomic_load(&granted[i]), quota);
    sum += atomic_load(&granted[i]);
  }
  assert_int_equal(atomic_load(&released), sum);

  j = wflo_lock_stats_json(lock);
  assert_non_null(j);
  assert_int_equal(
      json_integer_value(json_object_get(j, "total_acquisitions")), sum);
  assert_int_equal(json_integer_value(json_object_get(j, "timeout_count")),
                   atomic_load(&timeouts));
  assert_int_equal(json_array_size(json_object_get(j, "current_holders")), 0);
  assert_int_equal(json_integer_value(json_object_get(j, "current_waiters")),
                   0);
  json_decref(j);
  print_message("stress: %ld acquisitions, %ld timeouts, %ld cancels, "
                "max holders %d; grants thread->loop %ld, loop->thread %ld, "
                "loop->loop %ld\n",
                sum, atomic_load(&timeouts), atomic_load(&cancels),
                atomic_load(&max_holders), atomic_load(&thread_to_loop),
                atomic_load(&loop_to_thread), atomic_load(&loop_to_loop));
  /* The capacity was used, and permits crossed between threads and loops
   * (a permit freed on one loop thread granted a waiter of the other loop,
   * or a sync thread's waiter, and the reverse). Small scales may be too
   * short for every kind of crossing. */
  assert_int_equal(atomic_load(&max_holders), CAPACITY);
  if (total >= 10000) {
    assert_true(atomic_load(&thread_to_loop) > 0);
    assert_true(atomic_load(&loop_to_thread) > 0);
    assert_true(atomic_load(&loop_to_loop) > 0);
    assert_true(atomic_load(&cancels) > 0);
  }
  for (i = 0; i < 2; i++)
    wflo_test_loop_close(&loops[i].loop);
  assert_int_equal(wflo__loop_states_alive(), 0);
  wflo_lock_put(lock);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_stress, wflo_test_setup,
                                      wflo_test_teardown),
  };
  wflo_set_log_level(WFLO_LOG_OFF);
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
