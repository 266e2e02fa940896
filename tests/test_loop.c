/* Tests of the per-loop scheduler (src/loop.c): deadline order, FIFO ties,
 * stop/restart, cross-thread posts, and that nothing stays open on the loop
 * once nothing is pending. */
/* ctest-labels: threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "internal/loop.h"

typedef struct op {
  wflo__timer_t timer;
  wflo__post_t post;
  wflo__loop_t *loop;
  int id;
  int *log;
  int *nlog;
  bool in_cb_seen;
} op_t;

static void log_timer(wflo__timer_t *t) {
  op_t *o = wflo__container_of(t, op_t, timer);
  o->log[(*o->nlog)++] = o->id;
  o->in_cb_seen = wflo__in_loop_callback();
  wflo__loop_unref(o->loop);
}

static void run_and_close(uv_loop_t *loop) {
  assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(loop), 0);
}

static void close_loop(uv_loop_t *loop) {
  run_and_close(loop);
  assert_int_equal(wflo__loop_states_alive(), 0);
  assert_int_equal(wflo__mem_outstanding(), 0);
}

static void test_order_and_fifo(void **state) {
  uv_loop_t loop;
  op_t ops[6];
  int log[6], nlog = 0, i;
  /* delays: equal deadlines must keep start order */
  const uint64_t delays[6] = {5, 1, 5, 0, 1, 5};
  const int expect[6] = {3, 1, 4, 0, 2, 5};
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  for (i = 0; i < 6; i++) {
    memset(&ops[i], 0, sizeof(ops[i]));
    ops[i].id = i;
    ops[i].log = log;
    ops[i].nlog = &nlog;
    assert_int_equal(wflo__loop_ref(&loop, &ops[i].loop), 0);
    wflo__timer_start(ops[i].loop, &ops[i].timer, delays[i], log_timer);
  }
  assert_false(wflo__in_loop_callback());
  assert_int_equal(wflo__loop_states_alive(), 1);
  close_loop(&loop);
  assert_int_equal(nlog, 6);
  for (i = 0; i < 6; i++) {
    assert_int_equal(log[i], expect[i]);
    assert_true(ops[i].in_cb_seen);
  }
  assert_false(wflo__in_loop_callback());
}

static void test_stop_and_restart(void **state) {
  uv_loop_t loop;
  op_t a, b;
  int log[4], nlog = 0;
  (void)state;
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  a.id = 1;
  b.id = 2;
  a.log = b.log = log;
  a.nlog = b.nlog = &nlog;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo__loop_ref(&loop, &a.loop), 0);
  assert_int_equal(wflo__loop_ref(&loop, &b.loop), 0);
  assert_ptr_equal(a.loop, b.loop);
  wflo__timer_start(a.loop, &a.timer, 1, log_timer);
  wflo__timer_start(b.loop, &b.timer, 2, log_timer);
  /* Moving a to after b, then stopping and re-arming b ahead of it. */
  wflo__timer_start(a.loop, &a.timer, 20, log_timer);
  wflo__timer_stop(b.loop, &b.timer);
  assert_false(wflo__timer_armed(&b.timer));
  wflo__timer_stop(b.loop, &b.timer); /* harmless twice */
  wflo__timer_start(b.loop, &b.timer, 3, log_timer);
  close_loop(&loop);
  assert_int_equal(nlog, 2);
  assert_int_equal(log[0], 2);
  assert_int_equal(log[1], 1);
}

/* A timer re-armed with zero delay from its own callback must not run again
 * in the same pass: the uv timer callback must return to the loop. */
typedef struct spinner {
  wflo__timer_t timer;
  wflo__loop_t *loop;
  int runs;
  uv_loop_t *uv;
  uint64_t iter_at_first;
  uint64_t iters_seen;
} spinner_t;

static void on_check(uv_check_t *c) {
  spinner_t *s = c->data;
  s->iters_seen++;
}

static void spin(wflo__timer_t *t) {
  spinner_t *s = wflo__container_of(t, spinner_t, timer);
  if (++s->runs < 5)
    wflo__timer_start(s->loop, &s->timer, 0, spin);
  else
    wflo__loop_unref(s->loop);
}

static void test_zero_delay_rearm_yields(void **state) {
  uv_loop_t loop;
  uv_check_t check;
  spinner_t s;
  (void)state;
  memset(&s, 0, sizeof(s));
  assert_int_equal(uv_loop_init(&loop), 0);
  uv_check_init(&loop, &check);
  check.data = &s;
  uv_check_start(&check, on_check);
  uv_unref((uv_handle_t *)&check);
  assert_int_equal(wflo__loop_ref(&loop, &s.loop), 0);
  wflo__timer_start(s.loop, &s.timer, 0, spin);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(s.runs, 5);
  /* One loop iteration per run: the check handle ran between them. */
  assert_true(s.iters_seen >= 4);
  uv_close((uv_handle_t *)&check, NULL);
  close_loop(&loop);
}

/* Many timers with random deadlines, a third stopped: the rest fire in
 * (due, start) order. Exercises the pairing heap's arbitrary removal. */
typedef struct rnd_op {
  wflo__timer_t timer;
  uint64_t due;
  int idx;
} rnd_op_t;

static rnd_op_t *g_rnd;
static int g_rnd_fired, g_rnd_bad, g_rnd_last;
static wflo__loop_t *g_rnd_loop;

static void rnd_fire(wflo__timer_t *t) {
  rnd_op_t *o = wflo__container_of(t, rnd_op_t, timer);
  if (g_rnd_last >= 0) {
    rnd_op_t *p = &g_rnd[g_rnd_last];
    if (p->due > o->due || (p->due == o->due && p->idx > o->idx))
      g_rnd_bad++;
  }
  g_rnd_last = o->idx;
  g_rnd_fired++;
  wflo__loop_unref(g_rnd_loop);
}

static void test_many_random_timers(void **state) {
  enum { N = 3000 };
  uv_loop_t loop;
  int i, expected = 0;
  (void)state;
  g_rnd = calloc(N, sizeof(*g_rnd));
  assert_non_null(g_rnd);
  g_rnd_fired = g_rnd_bad = 0;
  g_rnd_last = -1;
  assert_int_equal(uv_loop_init(&loop), 0);
  wflo_rng_seed(42);
  for (i = 0; i < N; i++) {
    assert_int_equal(wflo__loop_ref(&loop, &g_rnd_loop), 0);
    g_rnd[i].idx = i;
    g_rnd[i].due = wflo__rng_u64() % 20;
    wflo__timer_start(g_rnd_loop, &g_rnd[i].timer, g_rnd[i].due, rnd_fire);
  }
  for (i = 0; i < N; i += 3) {
    wflo__timer_stop(g_rnd_loop, &g_rnd[i].timer);
    wflo__loop_unref(g_rnd_loop);
  }
  for (i = 0; i < N; i++)
    expected += i % 3 != 0;
  /* All started in the same loop tick, so due order is delay order. */
  close_loop(&loop);
  assert_int_equal(g_rnd_fired, expected);
  assert_int_equal(g_rnd_bad, 0);
  free(g_rnd);
}

/* Posts from other threads run on the loop thread, in posting order per
 * thread, and the state is freed once the last one ran. */
enum { POSTERS = 2, PER_POSTER = 2000 };

typedef struct post_item {
  wflo__post_t post;
  int thread;
  int seq;
} post_item_t;

static post_item_t g_items[POSTERS][PER_POSTER];
static int g_next_seq[POSTERS];
static atomic_int g_post_errors;
static uv_thread_t g_loop_thread;
static wflo__loop_t *g_post_loop;
static int g_posted_run;

static void on_post(wflo__post_t *p) {
  post_item_t *it = wflo__container_of(p, post_item_t, post);
  uv_thread_t self = uv_thread_self();
  if (!uv_thread_equal(&self, &g_loop_thread) || !wflo__in_loop_callback())
    atomic_fetch_add(&g_post_errors, 1);
  if (it->seq != g_next_seq[it->thread]++)
    atomic_fetch_add(&g_post_errors, 1);
  g_posted_run++;
  wflo__loop_unref(g_post_loop);
}

static void poster(void *arg) {
  int t = (int)(intptr_t)arg, i;
  for (i = 0; i < PER_POSTER; i++) {
    g_items[t][i].thread = t;
    g_items[t][i].seq = i;
    wflo__loop_post(g_post_loop, &g_items[t][i].post, on_post);
  }
}

static void test_cross_thread_posts(void **state) {
  uv_loop_t loop;
  uv_thread_t th[POSTERS];
  int i;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  g_loop_thread = uv_thread_self();
  /* One ref per item, taken on the loop thread before posting starts. */
  for (i = 0; i < POSTERS * PER_POSTER; i++)
    assert_int_equal(wflo__loop_ref(&loop, &g_post_loop), 0);
  for (i = 0; i < POSTERS; i++)
    assert_int_equal(uv_thread_create(&th[i], poster, (void *)(intptr_t)i), 0);
  for (i = 0; i < POSTERS; i++)
    uv_thread_join(&th[i]);
  close_loop(&loop);
  assert_int_equal(g_posted_run, POSTERS * PER_POSTER);
  assert_int_equal(atomic_load(&g_post_errors), 0);
}

/* A post from the loop thread itself runs later, not inside the call. */
static int g_self_ran;
static void on_self_post(wflo__post_t *p) {
  op_t *o = wflo__container_of(p, op_t, post);
  g_self_ran++;
  wflo__loop_unref(o->loop);
}

static void test_self_post_is_deferred(void **state) {
  uv_loop_t loop;
  op_t o;
  (void)state;
  memset(&o, 0, sizeof(o));
  g_self_ran = 0;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(wflo__loop_ref(&loop, &o.loop), 0);
  wflo__loop_post(o.loop, &o.post, on_self_post);
  assert_int_equal(g_self_ran, 0);
  close_loop(&loop);
  assert_int_equal(g_self_ran, 1);
}

static void test_two_loops_two_states(void **state) {
  uv_loop_t a, b;
  wflo__loop_t *la, *lb;
  (void)state;
  assert_int_equal(uv_loop_init(&a), 0);
  assert_int_equal(uv_loop_init(&b), 0);
  assert_int_equal(wflo__loop_ref(&a, &la), 0);
  assert_int_equal(wflo__loop_ref(&b, &lb), 0);
  assert_ptr_not_equal(la, lb);
  assert_ptr_equal(wflo__loop_uv(la), &a);
  assert_int_equal(wflo__loop_states_alive(), 2);
  wflo__loop_unref(la);
  wflo__loop_unref(lb);
  /* Handles close asynchronously: the loops must run once to free them. */
  run_and_close(&a);
  assert_int_equal(wflo__loop_states_alive(), 1);
  close_loop(&b);
  assert_int_equal(wflo__loop_ref(NULL, &la), WFLO_E_INVAL);
}

static void test_delay_ms_rounding(void **state) {
  (void)state;
  assert_int_equal(wflo__loop_delay_ms(0), 0);
  assert_int_equal(wflo__loop_delay_ms(-1), 0);
  assert_int_equal(wflo__loop_delay_ms(NAN), 0);
  assert_int_equal(wflo__loop_delay_ms(0.0001), 1);
  assert_int_equal(wflo__loop_delay_ms(0.001), 1);
  assert_int_equal(wflo__loop_delay_ms(1.5), 1500);
  assert_true(wflo__loop_delay_ms(1e9) == 1000000000000ull);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_order_and_fifo),
      cmocka_unit_test(test_stop_and_restart),
      cmocka_unit_test(test_zero_delay_rearm_yields),
      cmocka_unit_test(test_many_random_timers),
      cmocka_unit_test(test_cross_thread_posts),
      cmocka_unit_test(test_self_post_is_deferred),
      cmocka_unit_test(test_two_loops_two_states),
      cmocka_unit_test(test_delay_ms_rounding),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
