/* Tests of execution contexts (src/context.c): the per-thread stack,
 * WFLO_WITH_CONTEXT on every exit path, isolation between threads and
 * between operations interleaved on one loop, the current budget, and
 * allocation failure in every constructor. */
/* ctest-labels: threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "harness.h"
#include "internal/context.h"
#include "internal/loop.h"

static wflo_context_t *new_ctx(const char *id, double budget,
                               wflo_context_t *parent) {
  wflo_context_t *c = NULL;
  assert_int_equal(wflo_context_new(id, "wf", budget, parent, &c), 0);
  assert_non_null(c);
  return c;
}

/* --- basics --------------------------------------------------------------- */

static void test_no_context(void **state) {
  (void)state;
  assert_null(wflo_context_current());
  assert_null(wflo_context_capture());
  assert_null(wflo_current_execution_id());
  assert_true(isnan(wflo_get_current_budget()));
  assert_int_equal(wflo_set_current_budget(1.0), WFLO_E_STATE);
  assert_int_equal(wflo_context_exit(NULL), WFLO_E_INVAL);
  assert_int_equal(wflo_context_enter(NULL), WFLO_E_INVAL);
  assert_null(wflo_context_ref(NULL));
  wflo_context_put(NULL);
  assert_null(wflo_context_execution_id(NULL));
  assert_null(wflo_context_workflow(NULL));
}

static void test_new_and_ids(void **state) {
  wflo_context_t *a, *b, *c;
  const char *ida, *idb;
  size_t i;
  (void)state;
  a = new_ctx(NULL, 1.0, NULL);
  b = new_ctx(NULL, 1.0, NULL);
  c = new_ctx("my-id", 1.0, NULL);
  ida = wflo_context_execution_id(a);
  idb = wflo_context_execution_id(b);
  assert_int_equal(strlen(ida), 5 + 32);
  assert_memory_equal(ida, "exec-", 5);
  for (i = 5; i < 37; i++)
    assert_non_null(strchr("0123456789abcdef", ida[i]));
  assert_string_not_equal(ida, idb);
  assert_string_equal(wflo_context_execution_id(c), "my-id");
  assert_string_equal(wflo_context_workflow(c), "wf");
  wflo_context_put(a);
  wflo_context_put(b);
  wflo_context_put(c);
}

static void test_ids_unique(void **state) {
  enum { N = 2000 };
  static char ids[N][40];
  wflo_context_t *c;
  size_t i, j;
  (void)state;
  for (i = 0; i < N; i++) {
    assert_int_equal(wflo_context_new(NULL, NULL, 0.0, NULL, &c), 0);
    snprintf(ids[i], sizeof(ids[i]), "%s", wflo_context_execution_id(c));
    assert_null(wflo_context_workflow(c));
    wflo_context_put(c);
  }
  for (i = 0; i < N; i++)
    for (j = i + 1; j < N; j++)
      assert_string_not_equal(ids[i], ids[j]);
}

static void test_bad_budget(void **state) {
  const double bad[] = {NAN, -NAN, -1.0, -1e-12, 1e6 + 1, -INFINITY, 1e300};
  wflo_context_t *c = (wflo_context_t *)&c;
  size_t i;
  (void)state;
  assert_true(WFLO_BUDGET_MAX == 1e6);
  assert_true(isinf(WFLO_BUDGET_UNLIMITED) && WFLO_BUDGET_UNLIMITED > 0);
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(wflo_context_new(NULL, NULL, bad[i], NULL, &c),
                     WFLO_E_INVAL);
  }
  assert_int_equal(wflo_context_new(NULL, NULL, 1.0, NULL, NULL),
                   WFLO_E_INVAL);
  /* The edges are valid. */
  c = new_ctx(NULL, 0.0, NULL);
  wflo_context_put(c);
  c = new_ctx(NULL, WFLO_BUDGET_MAX, NULL);
  wflo_context_put(c);
  c = new_ctx(NULL, WFLO_BUDGET_UNLIMITED, NULL);
  assert_true(wflo_budget_remaining(c) == WFLO_BUDGET_UNLIMITED);
  wflo_context_put(c);
}

/* --- the stack ------------------------------------------------------------ */

static void test_nesting(void **state) {
  wflo_context_t *a = new_ctx("a", 1.0, NULL), *b = new_ctx("b", 2.0, NULL);
  (void)state;
  assert_int_equal(wflo_context_enter(a), 0);
  assert_ptr_equal(wflo_context_current(), a);
  assert_string_equal(wflo_current_execution_id(), "a");
  assert_true(wflo_get_current_budget() == 1.0);
  assert_int_equal(wflo_context_enter(b), 0);
  assert_ptr_equal(wflo_context_current(), b);
  assert_true(wflo_get_current_budget() == 2.0);
  /* Entering the same context twice nests too. */
  assert_int_equal(wflo_context_enter(a), 0);
  assert_ptr_equal(wflo_context_current(), a);
  assert_int_equal(wflo_context_exit(a), 0);
  assert_ptr_equal(wflo_context_current(), b);
  assert_int_equal(wflo_context_exit(b), 0);
  assert_ptr_equal(wflo_context_current(), a);
  assert_int_equal(wflo_context_exit(a), 0);
  assert_null(wflo_context_current());
  wflo_context_put(a);
  wflo_context_put(b);
}

static void test_exit_not_innermost(void **state) {
  wflo_context_t *a = new_ctx("a", 1.0, NULL), *b = new_ctx("b", 1.0, NULL);
  (void)state;
  assert_int_equal(wflo_context_exit(a), WFLO_E_STATE); /* nothing entered */
  assert_int_equal(wflo_context_enter(a), 0);
  assert_int_equal(wflo_context_enter(b), 0);
  assert_int_equal(wflo_context_exit(a), WFLO_E_STATE);
  assert_ptr_equal(wflo_context_current(), b); /* nothing changed */
  assert_int_equal(wflo_context_exit(b), 0);
  assert_int_equal(wflo_context_exit(b), WFLO_E_STATE);
  assert_int_equal(wflo_context_exit(a), 0);
  assert_null(wflo_context_current());
  wflo_context_put(a);
  wflo_context_put(b);
}

/* The thread holds a reference while a context is entered. */
static void test_entered_holds_reference(void **state) {
  wflo_context_t *a = new_ctx("a", 1.0, NULL);
  wflo_context_t *cap;
  (void)state;
  assert_int_equal(wflo_context_enter(a), 0);
  wflo_context_put(a); /* the caller's reference */
  assert_string_equal(wflo_current_execution_id(), "a");
  cap = wflo_context_capture();
  assert_ptr_equal(cap, a);
  assert_int_equal(wflo_context_exit(a), 0);
  assert_string_equal(wflo_context_execution_id(cap), "a");
  wflo_context_put(cap); /* the last one */
  assert_int_equal(wflo_test_alloc_live(), 0);
}

/* Deeper than the inline part of the stack: spills to the heap and frees it
 * again when the stack shrinks. */
static void test_deep_nesting(void **state) {
  enum { DEPTH = 70 };
  wflo_context_t *c[DEPTH];
  size_t base_live;
  int i;
  (void)state;
  for (i = 0; i < DEPTH; i++)
    c[i] = new_ctx(NULL, (double)i, NULL);
  base_live = wflo_test_alloc_live();
  for (i = 0; i < DEPTH; i++) {
    assert_int_equal(wflo_context_enter(c[i]), 0);
    assert_true(wflo_get_current_budget() == (double)i);
  }
  assert_true(wflo_test_alloc_live() > base_live);
  for (i = DEPTH - 1; i >= 0; i--) {
    assert_ptr_equal(wflo_context_current(), c[i]);
    assert_int_equal(wflo_context_exit(c[i]), 0);
  }
  assert_null(wflo_context_current());
  assert_int_equal(wflo_test_alloc_live(), base_live);
  for (i = 0; i < DEPTH; i++)
    wflo_context_put(c[i]);
}

/* --- WFLO_WITH_CONTEXT ------------------------------------------------------ */

static int return_from_block(wflo_context_t *inner) {
  WFLO_WITH_CONTEXT(inner) {
    if (wflo_context_current() == inner)
      return 7;
  }
  return -1;
}

static void test_with_context_exits(void **state) {
  wflo_context_t *outer = new_ctx("outer", 1.0, NULL);
  wflo_context_t *inner = new_ctx("inner", 2.0, NULL), *stray;
  int runs = 0, i;
  (void)state;
  assert_int_equal(wflo_context_enter(outer), 0);

  /* normal end, once */
  WFLO_WITH_CONTEXT(inner) {
    assert_ptr_equal(wflo_context_current(), inner);
    runs++;
  }
  assert_int_equal(runs, 1);
  assert_ptr_equal(wflo_context_current(), outer);

  /* return */
  assert_int_equal(return_from_block(inner), 7);
  assert_ptr_equal(wflo_context_current(), outer);

  /* break leaves the block, not the enclosing loop */
  runs = 0;
  for (i = 0; i < 3; i++) {
    WFLO_WITH_CONTEXT(inner) {
      runs++;
      break;
    }
    assert_ptr_equal(wflo_context_current(), outer);
  }
  assert_int_equal(runs, 3);

  /* goto */
  WFLO_WITH_CONTEXT(inner) {
    assert_ptr_equal(wflo_context_current(), inner);
    goto out;
  }
  fail();
out:
  assert_ptr_equal(wflo_context_current(), outer);

  /* nested blocks, two on one line */
  WFLO_WITH_CONTEXT(inner) WFLO_WITH_CONTEXT(outer) {
    assert_ptr_equal(wflo_context_current(), outer);
  }
  assert_ptr_equal(wflo_context_current(), outer);

  /* a block that enters something and forgets to exit it */
  stray = new_ctx("stray", 3.0, NULL);
  WFLO_WITH_CONTEXT(inner) {
    assert_int_equal(wflo_context_enter(stray), 0);
    assert_int_equal(wflo_context_enter(outer), 0);
  }
  assert_ptr_equal(wflo_context_current(), outer);
  wflo_context_put(stray); /* the block's unwinding dropped its refs */

  /* NULL: the block is skipped */
  runs = 0;
  WFLO_WITH_CONTEXT(NULL) { runs++; }
  assert_int_equal(runs, 0);
  assert_ptr_equal(wflo_context_current(), outer);

  assert_int_equal(wflo_context_exit(outer), 0);
  assert_null(wflo_context_current());
  wflo_context_put(outer);
  wflo_context_put(inner);
}

/* --- wflo_context_run and the callback scope ---------------------------------- */

typedef struct run_probe {
  wflo_context_t *seen;
  wflo_context_t *drop;  /* put inside fn */
  wflo_context_t *enter; /* entered inside fn and not exited */
  int exit_rc;
} run_probe_t;

static int probe_fn(void *arg) {
  run_probe_t *p = arg;
  p->seen = wflo_context_current();
  if (p->seen != NULL)
    p->exit_rc = wflo_context_exit(p->seen); /* the scope's own: refused */
  if (p->enter != NULL && wflo_context_enter(p->enter) != 0)
    return -1;
  if (p->drop != NULL)
    wflo_context_put(p->drop);
  return 42;
}

static void test_context_run(void **state) {
  wflo_context_t *outer = new_ctx("outer", 1.0, NULL);
  wflo_context_t *run = new_ctx("run", 1.0, NULL);
  run_probe_t p = {NULL, NULL, NULL, 0};
  (void)state;
  assert_int_equal(wflo_context_run(run, NULL, NULL), WFLO_E_INVAL);

  assert_int_equal(wflo_context_enter(outer), 0);
  assert_int_equal(wflo_context_run(run, probe_fn, &p), 42);
  assert_ptr_equal(p.seen, run);
  assert_int_equal(p.exit_rc, WFLO_E_STATE);
  assert_ptr_equal(wflo_context_current(), outer);

  /* NULL runs with no context */
  assert_int_equal(wflo_context_run(NULL, probe_fn, &p), 42);
  assert_null(p.seen);
  assert_ptr_equal(wflo_context_current(), outer);

  /* what fn enters and leaves is exited; fn may drop the caller's ref */
  p.enter = outer;
  p.drop = run;
  assert_int_equal(wflo_context_run(run, probe_fn, &p), 42);
  assert_ptr_equal(wflo_context_current(), outer);
  assert_int_equal(wflo_context_exit(outer), 0);
  assert_null(wflo_context_current());
  wflo_context_put(outer);
  assert_int_equal(wflo_test_alloc_live(), 0);
}

/* --- the current budget ---------------------------------------------------------- */

static void test_current_budget(void **state) {
  wflo_context_t *c = new_ctx(NULL, 1.5, NULL);
  wflo_budget_resv_t r;
  (void)state;
  WFLO_WITH_CONTEXT(c) {
    assert_true(wflo_get_current_budget() == 1.5);
    assert_int_equal(wflo_set_current_budget(NAN), WFLO_E_INVAL);
    assert_int_equal(wflo_set_current_budget(-0.5), WFLO_E_INVAL);
    assert_int_equal(wflo_set_current_budget(2e6), WFLO_E_INVAL);
    assert_int_equal(wflo_set_current_budget(-INFINITY), WFLO_E_INVAL);
    assert_true(wflo_get_current_budget() == 1.5);
    assert_int_equal(wflo_set_current_budget(WFLO_BUDGET_UNLIMITED), 0);
    assert_true(isinf(wflo_get_current_budget()));
    /* the new limit is the one later reservations use */
    assert_int_equal(wflo_set_current_budget(0.25), 0);
    assert_true(wflo_get_current_budget() == 0.25);
    assert_int_equal(wflo_budget_reserve(c, 0.5, &r), WFLO_E_BUDGET_EXCEEDED);
    assert_int_equal(wflo_budget_reserve(c, 0.25, &r), 0);
    assert_int_equal(wflo_budget_commit(&r, 0.1), 0);
    assert_int_equal(wflo_set_current_budget(0.05), 0); /* below spend */
    assert_int_equal(wflo_budget_charge(c, 0.0), WFLO_E_BUDGET_EXCEEDED);
    assert_true(wflo_budget_remaining(c) == 0.0);
  }
  wflo_context_put(c);
}

/* --- threads ---------------------------------------------------------------------- */

typedef struct thread_arg {
  wflo_context_t *ctx;
  double budget;
  uv_barrier_t *barrier;
  int iterations;
} thread_arg_t;

static void isolation_thread(void *p) {
  thread_arg_t *a = p;
  int i;
  WFLO_TEST_THREAD_CHECK(wflo_context_current() == NULL);
  uv_barrier_wait(a->barrier);
  for (i = 0; i < a->iterations; i++) {
    WFLO_WITH_CONTEXT(a->ctx) {
      WFLO_TEST_THREAD_CHECK(wflo_context_current() == a->ctx);
      WFLO_TEST_THREAD_CHECK(wflo_get_current_budget() == a->budget);
      WFLO_TEST_THREAD_CHECK(strcmp(wflo_current_execution_id(),
                                    wflo_context_execution_id(a->ctx)) == 0);
    }
    WFLO_TEST_THREAD_CHECK(wflo_context_current() == NULL);
  }
}

static void test_thread_isolation(void **state) {
  enum { THREADS = 4 };
  uv_thread_t t[THREADS];
  thread_arg_t a[THREADS];
  uv_barrier_t barrier;
  wflo_context_t *mine = new_ctx("main", 99.0, NULL);
  int i;
  (void)state;
  assert_int_equal(uv_barrier_init(&barrier, THREADS), 0);
  assert_int_equal(wflo_context_enter(mine), 0);
  for (i = 0; i < THREADS; i++) {
    a[i].budget = (double)(i + 1);
    a[i].ctx = new_ctx(NULL, a[i].budget, NULL);
    a[i].barrier = &barrier;
    a[i].iterations = wflo_test_scale(20000);
    assert_int_equal(uv_thread_create(&t[i], isolation_thread, &a[i]), 0);
  }
  for (i = 0; i < THREADS; i++)
    assert_int_equal(uv_thread_join(&t[i]), 0);
  wflo_test_assert_thread_checks();
  /* the main thread's own stack was untouched */
  assert_ptr_equal(wflo_context_current(), mine);
  assert_int_equal(wflo_context_exit(mine), 0);
  for (i = 0; i < THREADS; i++)
    wflo_context_put(a[i].ctx);
  wflo_context_put(mine);
  uv_barrier_destroy(&barrier);
}

/* --- two async operations interleaved on one loop ----------------------------------
 * Each fake operation captures the context current when it starts, and
 * re-enters it around each of its "callbacks" (timer turns), the way retry
 * timers and lock grants do. Both run on one loop, interleaved turn by turn.
 * TODO(after merge): redo with two wflo_retry_start() retries. */
typedef struct fake_op {
  wflo__timer_t timer;
  wflo__loop_t *loop;
  wflo_context_t *captured;
  wflo_context_t *expect;
  double budget;
  wflo_context_t *stray; /* entered in a callback and not exited */
  int turns, left;
  int seen_ok, seen_bad;
  int *order, *norder, id;
} fake_op_t;

static void fake_turn(wflo__timer_t *t) {
  fake_op_t *op = wflo__container_of(t, fake_op_t, timer);
  wflo__ctx_scope_t scope;
  wflo__ctx_scope_enter(&scope, op->captured);
  /* the user's callback */
  if (wflo_context_current() == op->expect &&
      wflo_get_current_budget() == op->budget &&
      strcmp(wflo_current_execution_id(),
             wflo_context_execution_id(op->expect)) == 0)
    op->seen_ok++;
  else
    op->seen_bad++;
  op->order[(*op->norder)++] = op->id;
  if (wflo_context_enter(op->stray) != 0)
    op->seen_bad++;
  wflo__ctx_scope_exit(&scope);
  /* after the scope: the loop thread's own (empty) context is back */
  if (wflo_context_current() != NULL)
    op->seen_bad++;
  if (--op->left > 0) {
    wflo__timer_start(op->loop, &op->timer, 1, fake_turn);
    return;
  }
  wflo_context_put(op->captured);
  wflo__loop_unref(op->loop);
}

static void fake_start(uv_loop_t *loop, fake_op_t *op) {
  assert_int_equal(wflo__loop_ref(loop, &op->loop), 0);
  wflo__timer_init(&op->timer);
  op->captured = wflo_context_capture();
  op->left = op->turns;
  wflo__timer_start(op->loop, &op->timer, 1, fake_turn);
}

static void test_async_isolation_one_loop(void **state) {
  enum { TURNS = 5 };
  uv_loop_t loop;
  fake_op_t a, b;
  int order[2 * TURNS], norder = 0, i;
  wflo_context_t *ca = new_ctx("exec-a", 1.0, NULL);
  wflo_context_t *cb = new_ctx("exec-b", 2.0, NULL);
  wflo_context_t *stray = new_ctx("stray", 3.0, NULL);
  (void)state;
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  a.expect = ca;
  b.expect = cb;
  a.budget = 1.0;
  b.budget = 2.0;
  a.stray = b.stray = stray;
  a.turns = b.turns = TURNS;
  a.order = b.order = order;
  a.norder = b.norder = &norder;
  a.id = 1;
  b.id = 2;
  assert_int_equal(uv_loop_init(&loop), 0);
  WFLO_WITH_CONTEXT(ca) { fake_start(&loop, &a); }
  WFLO_WITH_CONTEXT(cb) { fake_start(&loop, &b); }
  /* the operations hold their own references */
  wflo_context_put(ca);
  wflo_context_put(cb);
  assert_null(wflo_context_current());
  wflo_test_loop_close(&loop);
  assert_int_equal(wflo__loop_states_alive(), 0);
  assert_int_equal(a.seen_bad, 0);
  assert_int_equal(b.seen_bad, 0);
  assert_int_equal(a.seen_ok, TURNS);
  assert_int_equal(b.seen_ok, TURNS);
  /* they really interleaved: equal deadlines run FIFO, a then b */
  for (i = 0; i < 2 * TURNS; i++)
    assert_int_equal(order[i], i % 2 == 0 ? 1 : 2);
  assert_null(wflo_context_current());
  wflo_context_put(stray);
}

/* The same with real async retries: two retries started in different
 * contexts interleave on one loop (each attempt fails, then the zero and
 * 1 ms backoff delays alternate them), and every callback libwflo makes
 * (start, on_retry, is_retryable, done) sees its own context and budget. */
typedef struct retry_op {
  wflo_context_t *expect;
  double budget;
  int attempts, fail_first, bad, done_calls, done_err;
  int id, *order, *norder;
} retry_op_t;

static void retry_op_check(retry_op_t *o) {
  if (wflo_context_current() != o->expect ||
      wflo_get_current_budget() != o->budget)
    o->bad++;
}

static void retry_op_start(wflo_call_t *call, void *arg) {
  retry_op_t *o = arg;
  retry_op_check(o);
  o->order[(*o->norder)++] = o->id;
  wflo_call_done(call, ++o->attempts <= o->fail_first ? UV_EAI_AGAIN : 0);
}

static bool retry_op_retryable(int err, void *ud) {
  /* user_data is the policy's: both ops share one policy, so check the
   * context through the thread-local only */
  (void)ud;
  return err == UV_EAI_AGAIN && wflo_context_current() != NULL;
}

static void retry_op_done(int err, void *arg) {
  retry_op_t *o = arg;
  retry_op_check(o);
  o->done_calls++;
  o->done_err = err;
}

static void test_async_retry_isolation_one_loop(void **state) {
  uv_loop_t loop;
  wflo_retry_policy_t p;
  retry_op_t a, b;
  int order[16], norder = 0, i, switches = 0;
  wflo_context_t *ca = new_ctx("exec-a", 1.0, NULL);
  wflo_context_t *cb = new_ctx("exec-b", 2.0, NULL);
  (void)state;
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  a.expect = ca;
  b.expect = cb;
  a.budget = 1.0;
  b.budget = 2.0;
  a.fail_first = b.fail_first = 4;
  a.id = 1;
  b.id = 2;
  a.order = b.order = order;
  a.norder = b.norder = &norder;
  wflo_retry_policy_init(&p);
  p.base_delay = 0.001;
  p.max_delay = 0.001;
  p.strategy = WFLO_BACKOFF_FIXED;
  p.jitter = false;
  p.max_retries = 5;
  p.is_retryable = retry_op_retryable;
  assert_int_equal(uv_loop_init(&loop), 0);
  WFLO_WITH_CONTEXT(ca) {
    assert_int_equal(
        wflo_retry_start(&loop, &p, retry_op_start, &a, retry_op_done, NULL),
        0);
  }
  WFLO_WITH_CONTEXT(cb) {
    assert_int_equal(
        wflo_retry_start(&loop, &p, retry_op_start, &b, retry_op_done, NULL),
        0);
  }
  wflo_context_put(ca); /* the retries hold their own references */
  wflo_context_put(cb);
  assert_null(wflo_context_current());
  wflo_test_loop_close(&loop);
  assert_int_equal(wflo__loop_states_alive(), 0);
  assert_null(wflo_context_current());
  assert_int_equal(a.bad, 0);
  assert_int_equal(b.bad, 0);
  assert_int_equal(a.done_calls, 1);
  assert_int_equal(b.done_calls, 1);
  assert_int_equal(a.done_err, 0);
  assert_int_equal(b.done_err, 0);
  assert_int_equal(norder, 10);
  /* they interleaved rather than ran one after the other */
  for (i = 1; i < norder; i++)
    switches += order[i] != order[i - 1];
  assert_true(switches >= 4);
}

/* --- allocator and allocation failure ----------------------------------------------- */

static void test_set_allocator_while_alive(void **state) {
  wflo_context_t *c = new_ctx(NULL, 1.0, NULL);
  (void)state;
  assert_int_equal(wflo_set_allocator(NULL), WFLO_E_STATE);
  wflo_context_put(c);
  wflo_test_restore_alloc(); /* asserts wflo_set_allocator(NULL) == 0 */
  wflo_test_setup_alloc();
}

static int oom_new(void *ud) {
  wflo_context_t *c;
  int rc = wflo_context_new(NULL, "workflow", 1.0, NULL, &c);
  (void)ud;
  if (rc == 0)
    wflo_context_put(c);
  return rc;
}

static int oom_new_child(void *ud) {
  wflo_context_t *parent, *c;
  int rc = wflo_context_new(NULL, "outer", 2.0, NULL, &parent);
  (void)ud;
  if (rc != 0)
    return rc;
  rc = wflo_context_new(NULL, "inner", 1.0, parent, &c);
  wflo_context_put(parent);
  if (rc == 0) {
    /* the child keeps its parent alive */
    if (wflo_budget_charge(c, 0.5) != 0 || wflo_budget_spent(c) != 0.5)
      rc = -1;
    wflo_context_put(c);
  }
  return rc;
}

static int oom_new_named(void *ud) {
  wflo_context_t *c;
  int rc = wflo_context_new("id", "workflow", 1.0, NULL, &c);
  (void)ud;
  if (rc == 0)
    wflo_context_put(c);
  return rc;
}

/* Enters deeper than the inline stack: the spill can fail, and a failed
 * enter changes nothing. */
static int oom_deep_enter(void *ud) {
  wflo_context_t *c, *before;
  int rc, i, entered = 0;
  (void)ud;
  rc = wflo_context_new(NULL, NULL, 1.0, NULL, &c);
  if (rc != 0)
    return rc;
  for (i = 0; i < 40 && rc == 0; i++) {
    before = wflo_context_current();
    rc = wflo_context_enter(c);
    if (rc == 0)
      entered++;
    else if (wflo_context_current() != before)
      rc = -1; /* not WFLO_E_NOMEM: fails the loop */
  }
  while (entered-- > 0)
    wflo_context_exit(c);
  wflo_context_put(c);
  return rc;
}

static void test_oom(void **state) {
  (void)state;
  wflo_test_oom_loop(oom_new, NULL, 0);
  wflo_test_oom_loop(oom_new_named, NULL, 0);
  wflo_test_oom_loop(oom_new_child, NULL, 0);
  wflo_test_oom_loop(oom_deep_enter, NULL, 0);
  wflo_test_oom_loop_ex(oom_deep_enter, NULL, 0, WFLO_TEST_FAIL_AFTER);
}

int main(void) {
#define T(f)                                                                  \
  cmocka_unit_test_setup_teardown(f, wflo_test_setup, wflo_test_teardown)
  const struct CMUnitTest tests[] = {
      T(test_no_context),
      T(test_new_and_ids),
      T(test_ids_unique),
      T(test_bad_budget),
      T(test_nesting),
      T(test_exit_not_innermost),
      T(test_entered_holds_reference),
      T(test_deep_nesting),
      T(test_with_context_exits),
      T(test_context_run),
      T(test_current_budget),
      T(test_thread_isolation),
      T(test_async_isolation_one_loop),
      T(test_async_retry_isolation_one_loop),
      T(test_set_allocator_while_alive),
      T(test_oom),
  };
#undef T
  wflo_set_log_level(WFLO_LOG_OFF);
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
