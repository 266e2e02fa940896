/* Tests of budget accounting (src/budget.c): reservations, commits and
 * charges, exactness in pico-dollars, refusal, rollup to parents, the
 * budget_exceeded event, and exactness and the budget bound under
 * concurrent reservers. */
/* ctest-labels: threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"
#include "internal/context.h"

static wflo_context_t *new_ctx(const char *id, double budget,
                               wflo_context_t *parent) {
  wflo_context_t *c = NULL;
  assert_int_equal(wflo_context_new(id, "wf", budget, parent, &c), 0);
  return c;
}

/* Spend in pico, the exact unit. */
static uint64_t spent_pico(const wflo_context_t *c) {
  return wflo__budget_spent_pico(c);
}

static void test_reserve_commit(void **state) {
  wflo_context_t *c = new_ctx(NULL, 1.0, NULL);
  wflo_budget_resv_t r, r2;
  (void)state;
  assert_int_equal(wflo_budget_reserve(c, 0.4, &r), 0);
  assert_true(r.usd == 0.4);
  assert_true(wflo_budget_spent(c) == 0.0);
  assert_true(wflo_budget_remaining(c) == 0.6);
  /* the reservation holds a reference: dropping ours keeps it alive */
  wflo_context_ref(c);
  wflo_context_put(c);
  assert_int_equal(wflo_budget_reserve(c, 0.7, &r2), WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(wflo_budget_commit(&r2, 0.1), WFLO_E_STATE);
  assert_int_equal(wflo_budget_commit(&r, 0.25), 0);
  assert_int_equal(wflo_budget_commit(&r, 0.25), WFLO_E_STATE);
  assert_int_equal(spent_pico(c), 250000000000ull);
  assert_true(wflo_budget_remaining(c) == 0.75);
  /* abandon */
  assert_int_equal(wflo_budget_reserve(c, 0.75, &r), 0);
  assert_true(wflo_budget_remaining(c) == 0.0);
  assert_int_equal(wflo_budget_commit(&r, 0.0), 0);
  assert_int_equal(spent_pico(c), 250000000000ull);
  assert_true(wflo_budget_remaining(c) == 0.75);
  /* a reservation of exactly what remains fits */
  assert_int_equal(wflo_budget_charge(c, 0.75), 0);
  assert_int_equal(spent_pico(c), 1000000000000ull);
  assert_int_equal(wflo_budget_charge(c, 1e-12), WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(wflo_budget_charge(c, 0.0), 0); /* zero still fits */
  wflo_context_put(c);
}

/* The reservation keeps its context alive until committed. */
static void test_reservation_holds_context(void **state) {
  wflo_context_t *c = new_ctx("held", 1.0, NULL);
  wflo_budget_resv_t r;
  (void)state;
  assert_int_equal(wflo_budget_reserve(c, 0.5, &r), 0);
  wflo_context_put(c);
  assert_true(wflo_test_alloc_live() > 0);
  assert_int_equal(wflo_set_allocator(NULL), WFLO_E_STATE);
  assert_int_equal(wflo_budget_commit(&r, 0.5), 0);
  assert_int_equal(wflo_test_alloc_live(), 0);
}

static void test_exact_pico(void **state) {
  wflo_context_t *c = new_ctx(NULL, 1.0, NULL);
  int i;
  (void)state;
  /* 0.1 is not exact in binary; ten charges of it are exactly 1 USD. */
  for (i = 0; i < 10; i++)
    assert_int_equal(wflo_budget_charge(c, 0.1), 0);
  assert_int_equal(spent_pico(c), 1000000000000ull);
  assert_true(wflo_budget_spent(c) == 1.0);
  assert_int_equal(wflo_budget_charge(c, 1e-12), WFLO_E_BUDGET_EXCEEDED);
  wflo_context_put(c);
}

static void test_bad_input(void **state) {
  wflo_context_t *c = new_ctx(NULL, 1.0, NULL);
  wflo_budget_resv_t r;
  const double bad[] = {NAN, -1.0, -1e-12, INFINITY, -INFINITY, 1e6 + 1};
  size_t i;
  (void)state;
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_DEBUG);
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(wflo_budget_charge(c, bad[i]), WFLO_E_INVAL);
    assert_int_equal(wflo_budget_reserve(c, bad[i], &r), WFLO_E_INVAL);
    assert_int_equal(wflo_budget_commit(&r, 0.0), WFLO_E_STATE);
  }
  assert_int_equal(wflo_budget_charge(NULL, 0.1), WFLO_E_INVAL);
  assert_int_equal(wflo_budget_reserve(NULL, 0.1, &r), WFLO_E_INVAL);
  assert_int_equal(wflo_budget_reserve(c, 0.1, NULL), WFLO_E_INVAL);
  assert_int_equal(wflo_budget_commit(NULL, 0.1), WFLO_E_INVAL);
  /* a bad commit amount leaves the reservation held */
  assert_int_equal(wflo_budget_reserve(c, 0.5, &r), 0);
  assert_int_equal(wflo_budget_commit(&r, NAN), WFLO_E_INVAL);
  assert_int_equal(wflo_budget_commit(&r, -0.1), WFLO_E_INVAL);
  assert_int_equal(wflo_budget_commit(&r, 0.2), 0);
  assert_true(wflo_budget_spent(c) == 0.2);
  assert_true(wflo_budget_spent(NULL) == 0.0);
  assert_true(isnan(wflo_budget_remaining(NULL)));
  assert_int_equal(wflo_test_events_count(NULL), 0); /* nothing to report */
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
  wflo_context_put(c);
}

static void check_exceeded_event(size_t i, const char *id, double budget,
                                 double spent, double requested) {
  const wflo_test_event_t *ev = wflo_test_events_get("budget_exceeded", i);
  const json_t *f;
  assert_non_null(ev);
  assert_int_equal(ev->level, WFLO_LOG_WARN);
  f = ev->fields;
  assert_int_equal(json_object_size(f), 5);
  assert_string_equal(json_string_value(json_object_get(f, "execution_id")),
                      id);
  assert_string_equal(json_string_value(json_object_get(f, "workflow")), "wf");
  assert_true(json_real_value(json_object_get(f, "budget_usd")) == budget);
  assert_true(json_real_value(json_object_get(f, "spent_usd")) == spent);
  assert_true(json_real_value(json_object_get(f, "requested_usd")) ==
              requested);
}

static void test_refusal_changes_nothing(void **state) {
  wflo_context_t *c = new_ctx("ex-1", 1.0, NULL);
  wflo_budget_resv_t r, held;
  (void)state;
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_WARN);
  assert_int_equal(wflo_budget_charge(c, 0.5), 0);
  assert_int_equal(wflo_budget_reserve(c, 0.25, &held), 0);
  assert_int_equal(wflo_budget_reserve(c, 0.5, &r), WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(wflo_budget_charge(c, 0.3), WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(spent_pico(c), 500000000000ull);
  assert_true(wflo_budget_remaining(c) == 0.25);
  assert_int_equal(wflo_test_events_count("budget_exceeded"), 2);
  check_exceeded_event(0, "ex-1", 1.0, 0.5, 0.5);
  check_exceeded_event(1, "ex-1", 1.0, 0.5, 0.3);
  /* what was held is untouched: it still commits */
  assert_int_equal(wflo_budget_commit(&held, 0.25), 0);
  assert_int_equal(spent_pico(c), 750000000000ull);
  assert_int_equal(wflo_test_events_count("budget_exceeded"), 2);
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
  wflo_context_put(c);
}

/* A commit above its reservation is recorded in full; when it takes spend
 * past the budget the commit says so and later reservations are refused. */
static void test_commit_over_budget(void **state) {
  wflo_context_t *c = new_ctx("ex-2", 1.0, NULL);
  wflo_budget_resv_t a, b;
  (void)state;
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_WARN);
  /* above its reservation but spend stays within budget: fine */
  assert_int_equal(wflo_budget_reserve(c, 0.25, &a), 0);
  assert_int_equal(wflo_budget_reserve(c, 0.25, &b), 0);
  assert_int_equal(wflo_budget_commit(&a, 0.5), 0);
  assert_int_equal(wflo_test_events_count(NULL), 0);
  /* b takes spend past the budget */
  assert_int_equal(wflo_budget_commit(&b, 0.75), WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(spent_pico(c), 1250000000000ull);
  assert_true(wflo_budget_remaining(c) == 0.0);
  assert_int_equal(wflo_test_events_count("budget_exceeded"), 1);
  check_exceeded_event(0, "ex-2", 1.0, 1.25, 0.75);
  assert_int_equal(wflo_budget_reserve(c, 0.0, &a), WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(wflo_budget_charge(c, 0.01), WFLO_E_BUDGET_EXCEEDED);
  assert_int_equal(spent_pico(c), 1250000000000ull);
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
  wflo_context_put(c);
}

static void test_rollup_to_parent(void **state) {
  wflo_context_t *root = new_ctx("root", 1.0, NULL);
  wflo_context_t *mid = new_ctx("mid", WFLO_BUDGET_UNLIMITED, root);
  wflo_context_t *a = new_ctx("a", 0.6, mid);
  wflo_context_t *b = new_ctx("b", 0.6, mid);
  wflo_budget_resv_t r;
  (void)state;
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_WARN);
  assert_int_equal(wflo_budget_charge(a, 0.5), 0);
  assert_true(wflo_budget_spent(a) == 0.5);
  assert_true(wflo_budget_spent(mid) == 0.5);
  assert_true(wflo_budget_spent(root) == 0.5);
  assert_true(wflo_budget_spent(b) == 0.0);
  /* b's own budget allows 0.6 but root only has 0.5 left */
  assert_true(wflo_budget_remaining(b) == 0.5);
  assert_int_equal(wflo_budget_reserve(b, 0.55, &r), WFLO_E_BUDGET_EXCEEDED);
  check_exceeded_event(0, "root", 1.0, 0.5, 0.55);
  /* nothing moved on any level */
  assert_int_equal(spent_pico(b), 0);
  assert_int_equal(spent_pico(mid), 500000000000ull);
  assert_true(wflo_budget_remaining(b) == 0.5);
  assert_true(wflo_budget_remaining(mid) == 0.5);
  /* the child's own budget refuses first */
  assert_int_equal(wflo_budget_charge(a, 0.2), WFLO_E_BUDGET_EXCEEDED);
  check_exceeded_event(1, "a", 0.6, 0.5, 0.2);
  assert_int_equal(spent_pico(root), 500000000000ull);
  /* reservations count on every level until committed */
  assert_int_equal(wflo_budget_reserve(b, 0.4, &r), 0);
  assert_true(wflo_budget_remaining(a) == 0.1);
  assert_int_equal(wflo_budget_commit(&r, 0.3), 0);
  assert_true(wflo_budget_spent(b) == 0.3);
  assert_int_equal(spent_pico(root), 800000000000ull);
  assert_true(wflo_budget_remaining(a) == 0.1); /* a's own limit */
  assert_true(wflo_budget_remaining(b) == 0.2); /* root's */
  /* a commit over its reservation can push an ancestor over */
  assert_int_equal(wflo_budget_reserve(b, 0.1, &r), 0);
  assert_int_equal(wflo_budget_commit(&r, 0.25), WFLO_E_BUDGET_EXCEEDED);
  check_exceeded_event(2, "root", 1.0, 1.05, 0.25);
  assert_true(wflo_budget_spent(b) == 0.55); /* b itself is within 0.6 */
  assert_int_equal(spent_pico(root), 1050000000000ull);
  assert_int_equal(wflo_test_events_count("budget_exceeded"), 3);
  wflo_test_events_uninstall();
  wflo_set_log_level(WFLO_LOG_OFF);
  /* children keep their parents alive */
  wflo_context_put(root);
  wflo_context_put(mid);
  assert_true(wflo_budget_spent(a) == 0.5);
  wflo_context_put(a);
  wflo_context_put(b);
  assert_int_equal(wflo_test_alloc_live(), 0);
}

static void test_unlimited_saturates(void **state) {
  wflo_context_t *c = new_ctx(NULL, WFLO_BUDGET_UNLIMITED, NULL);
  wflo_budget_resv_t r;
  int i;
  (void)state;
  for (i = 0; i < 18; i++)
    assert_int_equal(wflo_budget_charge(c, WFLO_BUDGET_MAX), 0);
  assert_int_equal(spent_pico(c), 18000000000000000000ull);
  /* the 19th would wrap a uint64_t: the total saturates instead */
  assert_int_equal(wflo_budget_charge(c, WFLO_BUDGET_MAX), 0);
  assert_int_equal(spent_pico(c), UINT64_MAX);
  assert_int_equal(wflo_budget_reserve(c, 1.0, &r), 0);
  assert_int_equal(wflo_budget_commit(&r, 0.5), 0);
  assert_int_equal(spent_pico(c), UINT64_MAX); /* and stays saturated */
  assert_true(wflo_budget_spent(c) > 1.8e7);
  assert_true(wflo_budget_remaining(c) == WFLO_BUDGET_UNLIMITED);
  wflo_context_put(c);
}

/* A finite budget refuses long before anything could overflow, even when
 * commits above their reservations keep pushing spend up. */
static void test_overcommit_then_refused(void **state) {
  wflo_context_t *c = new_ctx(NULL, 1.0, NULL);
  wflo_budget_resv_t r;
  int i;
  (void)state;
  for (i = 0; i < 40; i++) {
    assert_int_equal(wflo_budget_reserve(c, 0.0, &r),
                     i == 0 ? 0 : WFLO_E_BUDGET_EXCEEDED);
    if (i == 0)
      assert_int_equal(wflo_budget_commit(&r, WFLO_BUDGET_MAX),
                       WFLO_E_BUDGET_EXCEEDED);
  }
  assert_true(wflo_budget_spent(c) == WFLO_BUDGET_MAX);
  wflo_context_put(c);
}

/* --- concurrency ------------------------------------------------------------
 * Workers record what they committed; the main thread checks that the
 * context's spend is exactly the sum. While they run, every observed spend
 * must stay within the budget (no commit here exceeds its reservation). */
typedef struct worker {
  wflo_context_t *ctx;
  uv_barrier_t *barrier;
  int ops, seed;
  bool over; /* commit above the reservation now and then */
  uint64_t committed_pico;
  uint64_t refused, reserved_ok;
} worker_t;

static void worker_run(void *p) {
  worker_t *w = p;
  uint64_t budget = wflo__budget_to_pico(wflo_budget_remaining(w->ctx));
  int i;
  uv_barrier_wait(w->barrier);
  for (i = 0; i < w->ops; i++) {
    wflo_budget_resv_t r;
    /* amounts in whole micro-dollars: exact in pico, varied sizes */
    uint64_t x = (uint64_t)(1 + (i * 7 + w->seed) % 13) * 1000000u;
    uint64_t actual = x * (uint64_t)(i % 3) / 2; /* 0, x/2, x */
    int rc;
    if (w->over && i % 5 == 0)
      actual = x * 2;
    if (i % 4 == 3) { /* a charge: reserve + commit in one step */
      rc = wflo_budget_charge(w->ctx, (double)x / 1e12);
      if (rc == 0)
        w->committed_pico += x;
    } else {
      rc = wflo_budget_reserve(w->ctx, (double)x / 1e12, &r);
      if (rc == 0) {
        w->reserved_ok++;
        rc = wflo_budget_commit(&r, (double)actual / 1e12);
        WFLO_TEST_THREAD_CHECK(w->over || rc == 0);
        w->committed_pico += actual;
      }
    }
    if (rc == WFLO_E_BUDGET_EXCEEDED)
      w->refused++;
    else
      WFLO_TEST_THREAD_CHECK(rc == 0);
    if (!w->over)
      WFLO_TEST_THREAD_CHECK(wflo__budget_spent_pico(w->ctx) <= budget);
  }
}

/* Operations in all (1e6 scaled), and a budget in pico of about half of
 * what they would spend (about 4.4 micro-USD an operation), so that the
 * limit is reached halfway through at any scale. */
static int total_ops(void) { return wflo_test_scale(1000000); }
static double half_demand_usd(double share) {
  return (double)total_ops() * 2e-6 * share;
}

static uint64_t run_workers(wflo_context_t **ctxs, int nthreads, bool over,
                            bool distinct, uint64_t *refused) {
  uv_thread_t t[8];
  worker_t w[8];
  uv_barrier_t barrier;
  uint64_t sum = 0;
  int i, total = total_ops();
  assert_int_equal(uv_barrier_init(&barrier, (unsigned)nthreads), 0);
  *refused = 0;
  for (i = 0; i < nthreads; i++) {
    memset(&w[i], 0, sizeof(w[i]));
    w[i].ctx = ctxs[i];
    w[i].barrier = &barrier;
    w[i].ops = total / nthreads;
    w[i].seed = i * 5;
    w[i].over = over;
    assert_int_equal(uv_thread_create(&t[i], worker_run, &w[i]), 0);
  }
  for (i = 0; i < nthreads; i++) {
    assert_int_equal(uv_thread_join(&t[i]), 0);
    sum += w[i].committed_pico;
    *refused += w[i].refused;
    /* each worker's own context (when it has one) is exact too */
    if (distinct)
      assert_int_equal(wflo__budget_spent_pico(ctxs[i]), w[i].committed_pico);
  }
  uv_barrier_destroy(&barrier);
  wflo_test_assert_thread_checks();
  return sum;
}

/* 4 threads reserve and commit (and charge) 1e6 times in all on one context
 * whose budget runs out about halfway: the final spend is the sum of the
 * commits and never exceeded the budget. */
static void test_concurrent_exact(void **state) {
  wflo_context_t *c = new_ctx(NULL, half_demand_usd(1.0), NULL);
  wflo_context_t *ctxs[4] = {c, c, c, c};
  uint64_t sum, refused, budget = wflo__usd_to_pico(half_demand_usd(1.0));
  (void)state;
  sum = run_workers(ctxs, 4, false, false, &refused);
  assert_int_equal(spent_pico(c), sum);
  assert_true(sum <= budget);
  assert_true(sum > budget / 2); /* most of it was spent */
  assert_true(refused > 0);      /* the limit was really contended */
  /* nothing is left reserved */
  assert_int_equal(atomic_load(&c->reserved), 0);
  assert_true(wflo_budget_remaining(c) == wflo__pico_to_usd(budget - sum));
  wflo_context_put(c);
}

/* Same with commits above their reservations: still exact. */
static void test_concurrent_exact_overcommit(void **state) {
  wflo_context_t *c = new_ctx(NULL, half_demand_usd(1.0), NULL);
  wflo_context_t *ctxs[4] = {c, c, c, c};
  uint64_t sum, refused;
  (void)state;
  sum = run_workers(ctxs, 4, true, false, &refused);
  assert_int_equal(spent_pico(c), sum);
  assert_int_equal(atomic_load(&c->reserved), 0);
  wflo_context_put(c);
}

/* Four children of one parent, one per thread: the parent's budget binds
 * (the children's add up to more), every level is exact, and no level ever
 * goes over its budget. */
static void test_concurrent_rollup(void **state) {
  double root_usd = half_demand_usd(1.0), child_usd = half_demand_usd(0.4);
  wflo_context_t *root = new_ctx("root", root_usd, NULL);
  wflo_context_t *ctxs[4];
  uint64_t sum, refused;
  int i;
  (void)state;
  for (i = 0; i < 4; i++)
    ctxs[i] = new_ctx(NULL, child_usd, root);
  sum = run_workers(ctxs, 4, false, true, &refused);
  assert_int_equal(spent_pico(root), sum);
  assert_true(sum <= wflo__usd_to_pico(root_usd));
  assert_true(refused > 0);
  assert_int_equal(atomic_load(&root->reserved), 0);
  for (i = 0; i < 4; i++) {
    assert_true(spent_pico(ctxs[i]) <= wflo__usd_to_pico(child_usd));
    assert_int_equal(atomic_load(&ctxs[i]->reserved), 0);
    wflo_context_put(ctxs[i]);
  }
  wflo_context_put(root);
}

int main(void) {
#define T(f)                                                                  \
  cmocka_unit_test_setup_teardown(f, wflo_test_setup, wflo_test_teardown)
  const struct CMUnitTest tests[] = {
      T(test_reserve_commit),
      T(test_reservation_holds_context),
      T(test_exact_pico),
      T(test_bad_input),
      T(test_refusal_changes_nothing),
      T(test_commit_over_budget),
      T(test_rollup_to_parent),
      T(test_unlimited_saturates),
      T(test_overcommit_then_refused),
      T(test_concurrent_exact),
      T(test_concurrent_exact_overcommit),
      T(test_concurrent_rollup),
  };
#undef T
  wflo_set_log_level(WFLO_LOG_OFF);
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
