/* Stress test of the breaker's HALF_OPEN admission under real concurrency:
 * 4 threads make 1e6 calls in total (scaled by WFLO_STRESS_SCALE) with random
 * outcomes on one breaker whose recovery_timeout is 1 ms of the real clock,
 * so the circuit cycles through every state many times. The guarded function
 * counts the trials running at once and records any excess over
 * half_open_max_calls; the main thread asserts there was none, and that
 * HALF_OPEN admissions and refusals both happened.
 *
 * half_open_max_wait is set to 60 s: with the default (= recovery_timeout,
 * 1 ms) a trial whose thread is descheduled for a millisecond is legitimately
 * reclaimed and a new trial admitted while the old one still runs, which is
 * the documented trade-off of reclamation, not a bug. Reclamation itself is
 * tested on the virtual clock in test_breaker.c.
 *
 * Workers also hold some permits across later calls (stale results) and
 * occasionally reset the breaker, to mix every kind of transition. */
/* ctest-labels: threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>

#include <cmocka.h>

#include "harness.h"
#include "internal/breaker.h"

#define THREADS 4
#define CALLS 1000000

typedef struct shared {
  wflo_breaker_t *b;
  int max_calls;
  long calls_per_thread;
  uint64_t deadline; /* uv_hrtime() */
  atomic_int running_trials;
  atomic_int excess; /* trials seen above max_calls */
  atomic_int max_seen;
  atomic_long half_admitted, half_refused, open_refused, closed_admitted;
  atomic_long stale_records, resets, bad_record_rc;
  atomic_long opened, half_opened, closed; /* events */
} shared_t;

typedef struct worker {
  shared_t *s;
  uint64_t rng;
} worker_t;

static uint64_t next_rand(uint64_t *x) {
  /* xorshift64*: each worker has its own state, no sharing. */
  *x ^= *x >> 12;
  *x ^= *x << 25;
  *x ^= *x >> 27;
  return *x * 0x2545f4914f6cdd1dull;
}

static void count_event(const wflo_event_t *ev, void *ud) {
  shared_t *s = ud;
  if (strcmp(ev->name, "circuit_breaker_opened") == 0)
    atomic_fetch_add(&s->opened, 1);
  else if (strcmp(ev->name, "circuit_breaker_half_open") == 0)
    atomic_fetch_add(&s->half_opened, 1);
  else if (strcmp(ev->name, "circuit_breaker_closed") == 0)
    atomic_fetch_add(&s->closed, 1);
}

/* k in [0, 20): 0 is neutral, 1..fail_max a failure, the rest success. */
static int outcome(uint64_t k, uint64_t fail_max) {
  if (k == 0)
    return WFLO_E_CANCELED;
  return k <= fail_max ? UV_ECONNRESET : 0;
}

/* A few hundred ns of work, so that a run lasts long enough for the 1 ms
 * recovery timeout to cycle the circuit many times. */
static void work(uint64_t r) {
  for (volatile int i = 0; i < (int)(r % 256); i++)
    ;
}

/* The guarded operation. A trial counts itself while it runs, and
 * sometimes sleeps, so that trials of different threads overlap. */
static int guarded(worker_t *w, const wflo_breaker_permit_t *p) {
  shared_t *s = w->s;
  uint64_t r = next_rand(&w->rng);
  if (p->state == WFLO_BREAKER_HALF_OPEN) {
    int now = atomic_fetch_add(&s->running_trials, 1) + 1, seen;
    if (now > s->max_calls)
      atomic_fetch_add(&s->excess, 1);
    seen = atomic_load(&s->max_seen);
    while (now > seen &&
           !atomic_compare_exchange_weak(&s->max_seen, &seen, now))
      ;
    /* Sleep (off the CPU, so even a loaded machine runs the others) long
     * enough for the other threads to arrive and find every trial slot
     * taken: HALF_OPEN refusals happen in every run. */
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
    atomic_fetch_sub(&s->running_trials, 1);
    /* Trials fail less often (15%) so that HALF_OPEN lasts a few trials
     * and they pile up against half_open_max_calls. */
    return outcome((r >> 8) % 20, 3);
  }
  work(r);
  return outcome((r >> 8) % 20, 8); /* failures: 40% */
}

/* A small WFLO_STRESS_SCALE still has to show every state: workers go on
 * past their share of calls until it has (or a 20 s deadline passed, and
 * the main thread's assertions say what was missing). */
static bool seen_enough(shared_t *s) {
  return (atomic_load(&s->half_admitted) >= 20 &&
          atomic_load(&s->half_refused) > 0 &&
          atomic_load(&s->open_refused) > 0 && atomic_load(&s->opened) > 5 &&
          atomic_load(&s->closed) > 5) ||
         uv_hrtime() > s->deadline;
}

static void worker_main(void *arg) {
  worker_t *w = arg;
  shared_t *s = w->s;
  wflo_breaker_permit_t p, held;
  bool holding = false;
  long i;

  for (i = 0; i < s->calls_per_thread || !seen_enough(s); i++) {
    int rc, res;
    if (next_rand(&w->rng) % 50000 == 0) {
      wflo_breaker_reset(s->b);
      atomic_fetch_add(&s->resets, 1);
    }
    rc = wflo_breaker_acquire(s->b, &p);
    if (rc != 0) {
      if (rc != WFLO_E_BREAKER_OPEN)
        atomic_fetch_add(&s->bad_record_rc, 1);
      else if (p.state == WFLO_BREAKER_HALF_OPEN)
        atomic_fetch_add(&s->half_refused, 1);
      else
        atomic_fetch_add(&s->open_refused, 1);
      work(next_rand(&w->rng));
      continue;
    }
    if (p.state == WFLO_BREAKER_HALF_OPEN)
      atomic_fetch_add(&s->half_admitted, 1);
    else
      atomic_fetch_add(&s->closed_admitted, 1);
    res = guarded(w, &p);
    /* Now and then keep a CLOSED permit and record it a few calls later,
     * usually after the circuit moved on: a stale result. */
    if (!holding && p.state == WFLO_BREAKER_CLOSED &&
        next_rand(&w->rng) % 64 == 0) {
      held = p;
      holding = true;
      continue;
    }
    if (wflo_breaker_record(s->b, &p, res, -1.0) != 0)
      atomic_fetch_add(&s->bad_record_rc, 1);
    if (holding && next_rand(&w->rng) % 8 == 0) {
      if (wflo_breaker_record(s->b, &held, UV_ECONNRESET, -1.0) != 0)
        atomic_fetch_add(&s->bad_record_rc, 1);
      atomic_fetch_add(&s->stale_records, 1);
      holding = false;
    }
  }
  if (holding && wflo_breaker_record(s->b, &held, 0, -1.0) != 0)
    atomic_fetch_add(&s->bad_record_rc, 1);
}

static void run_stress(int max_calls) {
  wflo_breaker_config_t cfg;
  uv_thread_t t[THREADS];
  worker_t w[THREADS];
  shared_t *s = calloc(1, sizeof(*s));
  uint32_t i;

  assert_non_null(s);
  s->max_calls = max_calls;
  s->calls_per_thread = wflo_test_scale(CALLS) / THREADS;
  s->deadline = uv_hrtime() + 20 * 1000000000ull;
  wflo_breaker_config_init(&cfg);
  cfg.failure_threshold = 3;
  cfg.recovery_timeout = 0.001;
  cfg.success_threshold = 4;
  cfg.half_open_max_calls = max_calls;
  cfg.half_open_max_wait = 60.0;
  assert_int_equal(wflo_breaker_new("stress", &cfg, &s->b), 0);
  wflo_set_event_handler(count_event, s);
  wflo_set_log_level(WFLO_LOG_INFO);

  for (i = 0; i < THREADS; i++) {
    w[i].s = s;
    w[i].rng = 0x9e3779b97f4a7c15ull * (i + 1);
    assert_int_equal(uv_thread_create(&t[i], worker_main, &w[i]), 0);
  }
  for (i = 0; i < THREADS; i++)
    assert_int_equal(uv_thread_join(&t[i]), 0);

  wflo_set_event_handler(NULL, NULL);
  wflo_set_log_level(WFLO_LOG_OFF);
  print_message("max_calls %d: closed %ld, half_open admitted %ld refused "
                "%ld, open refused %ld, max concurrent trials %d, opened %ld, "
                "half_open %ld, closed %ld, stale %ld, resets %ld\n",
                max_calls, atomic_load(&s->closed_admitted),
                atomic_load(&s->half_admitted), atomic_load(&s->half_refused),
                atomic_load(&s->open_refused), atomic_load(&s->max_seen),
                atomic_load(&s->opened), atomic_load(&s->half_opened),
                atomic_load(&s->closed), atomic_load(&s->stale_records),
                atomic_load(&s->resets));

  assert_int_equal(atomic_load(&s->excess), 0);
  assert_true(atomic_load(&s->max_seen) <= max_calls);
  assert_int_equal(atomic_load(&s->bad_record_rc), 0);
  assert_true(atomic_load(&s->half_admitted) > 0);
  assert_true(atomic_load(&s->half_refused) > 0);
  assert_true(atomic_load(&s->open_refused) > 0);
  assert_true(atomic_load(&s->opened) > 1);
  assert_true(atomic_load(&s->half_opened) > 1);
  assert_true(atomic_load(&s->closed) > 1);
  /* Every permit was recorded: no trial slot is left taken. */
  assert_int_equal(atomic_load(&s->b->in_use), 0);
  for (i = 0; i < (uint32_t)max_calls; i++)
    assert_int_equal(atomic_load(&s->b->slots[i]), 0);

  wflo_breaker_put(s->b);
  free(s);
}

static void test_stress_one_trial(void **state) {
  (void)state;
  run_stress(1);
}

static void test_stress_three_trials(void **state) {
  (void)state;
  run_stress(3);
}

/* --- the registry shared by threads ------------------------------------------ */

typedef struct reg_worker {
  wflo_breaker_t *expect;
  int rounds;
  atomic_int *wrong;
} reg_worker_t;

static int fail_op(void *arg) {
  (void)arg;
  return UV_ECONNRESET;
}

static void reg_main(void *arg) {
  reg_worker_t *w = arg;
  wflo_breaker_config_t cfg;
  wflo_breaker_config_init(&cfg);
  cfg.failure_threshold = WFLO_BREAKER_THRESHOLD_MAX;
  for (int i = 0; i < w->rounds; i++) {
    wflo_breaker_t *b, *e;
    if (wflo_breaker_get("shared-by-threads", &cfg, &b) != 0 || b != w->expect)
      atomic_fetch_add(w->wrong, 1);
    else if (wflo_breaker_call(b, fail_op, NULL) != UV_ECONNRESET)
      atomic_fetch_add(w->wrong, 1);
    wflo_breaker_put(b);
    /* A name nobody else holds: created and destroyed concurrently. */
    if (wflo_breaker_get("ephemeral", NULL, &e) != 0)
      atomic_fetch_add(w->wrong, 1);
    else if (wflo_breaker_call(e, fail_op, NULL) != UV_ECONNRESET &&
             wflo_breaker_state(e) == WFLO_BREAKER_CLOSED)
      atomic_fetch_add(w->wrong, 1);
    wflo_breaker_put(e);
  }
}

/* Threads that get the same name share one breaker: every failure they
 * record is counted once (no lost CAS updates) and no config conflict is
 * reported; a name that comes and goes leaks nothing. */
static void test_registry_shared_by_threads(void **state) {
  wflo_breaker_config_t cfg;
  wflo_breaker_t *b;
  uv_thread_t t[THREADS];
  reg_worker_t w[THREADS];
  atomic_int wrong = 0;
  json_t *j;
  int rounds = wflo_test_scale(20000) / THREADS;
  (void)state;
  if (rounds < 100)
    rounds = 100;
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_WARN);
  wflo_breaker_config_init(&cfg);
  cfg.failure_threshold = WFLO_BREAKER_THRESHOLD_MAX;
  assert_int_equal(wflo_breaker_get("shared-by-threads", &cfg, &b), 0);
  for (int i = 0; i < THREADS; i++) {
    w[i] = (reg_worker_t){b, rounds, &wrong};
    assert_int_equal(uv_thread_create(&t[i], reg_main, &w[i]), 0);
  }
  for (int i = 0; i < THREADS; i++)
    assert_int_equal(uv_thread_join(&t[i]), 0);
  assert_int_equal(atomic_load(&wrong), 0);
  j = wflo_breaker_state_json(b);
  assert_int_equal(json_integer_value(json_object_get(j, "failure_count")),
                   THREADS * rounds);
  json_decref(j);
  assert_int_equal(wflo_test_events_count("config_conflict"), 0);
  wflo_set_log_level(WFLO_LOG_OFF);
  wflo_test_events_uninstall();
  wflo_breaker_put(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_stress_one_trial, wflo_test_setup,
                                      wflo_test_teardown),
      cmocka_unit_test_setup_teardown(test_stress_three_trials,
                                      wflo_test_setup, wflo_test_teardown),
      cmocka_unit_test_setup_teardown(test_registry_shared_by_threads,
                                      wflo_test_setup, wflo_test_teardown),
  };
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
