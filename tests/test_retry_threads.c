/* Sync retries from several threads sharing one policy: results stay per
 * call and a thread's Retry-After hint never leaks into another thread's
 * retry (the hint is thread-local). Workers record violations in atomics;
 * the main thread asserts. */
/* ctest-labels: threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"

enum { THREADS = 4 };

static wflo_retry_policy_t g_policy;
static long g_iters;

typedef struct op {
  int calls;
  bool hinter;
} op_t;

/* Fails twice, then succeeds; a "hinter" asks for a wait above max_delay
 * on every failure, which must end its retry after one call. */
static int op_run(void *arg) {
  op_t *o = arg;
  if (o->hinter)
    wflo_retry_hint(1.0);
  return ++o->calls <= 2 ? UV_EAGAIN : o->calls;
}

static void worker(void *arg) {
  bool hinter = (uintptr_t)arg % 2 != 0;
  long i;
  int rc;
  wflo_rng_seed((uint64_t)(uintptr_t)arg);
  for (i = 0; i < g_iters; i++) {
    op_t o = {0, hinter};
    rc = wflo_retry_execute(&g_policy, op_run, &o);
    if (hinter)
      WFLO_TEST_THREAD_CHECK(rc == UV_EAGAIN && o.calls == 1);
    else
      WFLO_TEST_THREAD_CHECK(rc == 3 && o.calls == 3);
    WFLO_TEST_THREAD_CHECK(wflo_backoff_delay(&g_policy, (int)i, 0) == 0.0);
  }
}

static void test_threads_share_policy(void **state) {
  uv_thread_t t[THREADS];
  uintptr_t i;
  (void)state;
  g_iters = wflo_test_scale(20000);
  wflo_set_log_level(WFLO_LOG_OFF);
  /* Zero delays: no sleep, no clock; max_delay 0 makes any hint too big. */
  wflo_retry_policy_init(&g_policy);
  g_policy.base_delay = 0;
  g_policy.max_delay = 0;
  g_policy.name = "shared";
  for (i = 0; i < THREADS; i++)
    assert_int_equal(uv_thread_create(&t[i], worker, (void *)(i + 1)), 0);
  for (i = 0; i < THREADS; i++)
    assert_int_equal(uv_thread_join(&t[i]), 0);
  wflo_test_assert_thread_checks();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_threads_share_policy,
                                      wflo_test_setup, wflo_test_teardown),
  };
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
