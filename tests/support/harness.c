/* Test harness: counting allocator with failure injection, OOM driver,
 * virtual clock, event recorder, cross-thread checks, loop teardown. See
 * harness.h for the contract. Anything a non-main thread may touch is an
 * atomic or sits under rec_mu: cmocka 1.1.5 asserts only on the main
 * thread. */
#include "harness.h"

#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* --- counting allocator -------------------------------------------------- */

/* Each block carries its requested size and a magic word in front of it;
 * the header is padded to max_align_t so the user part keeps malloc's
 * alignment. */
typedef struct block_hdr {
  size_t size;
  uint64_t magic;
} block_hdr_t;

#define HDR_ALIGN _Alignof(max_align_t)
#define HDR_SIZE                                                              \
  ((sizeof(block_hdr_t) + HDR_ALIGN - 1) / HDR_ALIGN * HDR_ALIGN)
#define MAGIC_LIVE 0x77666c6f6c697665ull /* "wflolive" */
#define MAGIC_DEAD 0x77666c6f64656164ull /* "wflodead" */

static atomic_size_t a_live;
static atomic_size_t a_live_bytes;
static atomic_bool a_mismatch;
static atomic_flag a_mismatch_msg_taken = ATOMIC_FLAG_INIT;
static char a_mismatch_msg[256]; /* the first mismatch, written once */
static atomic_uint_fast64_t a_attempts;
static atomic_uint_fast64_t a_failed;
static atomic_uint_fast64_t a_fail_at; /* 0: off */
static atomic_int a_fail_mode;

static void record_mismatch(const char *what, const void *p, size_t expected,
                            size_t given) {
  atomic_store(&a_mismatch, true);
  if (!atomic_flag_test_and_set(&a_mismatch_msg_taken))
    snprintf(a_mismatch_msg, sizeof(a_mismatch_msg),
             "%s(%p): block has size %zu, caller passed %zu", what, p,
             expected, given);
}

static bool should_fail(void) {
  uint_fast64_t n = atomic_fetch_add(&a_attempts, 1) + 1;
  uint_fast64_t at = atomic_load(&a_fail_at);
  if (at == 0)
    return false;
  if (n == at ||
      (n > at && atomic_load(&a_fail_mode) == (int)WFLO_TEST_FAIL_AFTER)) {
    atomic_fetch_add(&a_failed, 1);
    return true;
  }
  return false;
}

/* The header of p, or NULL (and a recorded mismatch) when p was not handed
 * out by this allocator or was already released. */
static block_hdr_t *header_of(const char *what, void *p, size_t given) {
  block_hdr_t *h = (block_hdr_t *)(void *)((char *)p - HDR_SIZE);
  if (h->magic != MAGIC_LIVE) {
    record_mismatch(h->magic == MAGIC_DEAD ? "double release"
                                           : "foreign block",
                    p, 0, given);
    return NULL;
  }
  if (h->size != given)
    record_mismatch(what, p, h->size, given);
  return h;
}

static void *count_alloc(size_t size, void *ud) {
  block_hdr_t *h;
  (void)ud;
  if (should_fail() || size > SIZE_MAX - HDR_SIZE)
    return NULL;
  h = malloc(HDR_SIZE + size);
  if (h == NULL)
    return NULL;
  h->size = size;
  h->magic = MAGIC_LIVE;
  atomic_fetch_add(&a_live, 1);
  atomic_fetch_add(&a_live_bytes, size);
  return (char *)h + HDR_SIZE;
}

static void *count_resize(void *p, size_t old_size, size_t new_size,
                          void *ud) {
  block_hdr_t *h, *nh;
  size_t had;
  if (p == NULL)
    return count_alloc(new_size, ud);
  if (should_fail() || new_size > SIZE_MAX - HDR_SIZE)
    return NULL;
  h = header_of("resize", p, old_size);
  if (h == NULL)
    return NULL; /* never realloc a block we do not own */
  had = h->size;
  nh = realloc(h, HDR_SIZE + new_size);
  if (nh == NULL)
    return NULL;
  nh->size = new_size;
  atomic_fetch_add(&a_live_bytes, new_size);
  atomic_fetch_sub(&a_live_bytes, had);
  return (char *)nh + HDR_SIZE;
}

static void count_release(void *p, size_t size, void *ud) {
  block_hdr_t *h;
  (void)ud;
  if (p == NULL)
    return;
  h = header_of("release", p, size);
  if (h == NULL)
    return; /* leak it rather than free what we do not own */
  atomic_fetch_sub(&a_live, 1);
  atomic_fetch_sub(&a_live_bytes, h->size);
  h->magic = MAGIC_DEAD;
  free(h);
}

static const wflo_allocator_t counting_allocator = {count_alloc, count_resize,
                                                    count_release, NULL};

/* Both free retained metric series first (see free_metrics). */
static void free_metrics(void);

size_t wflo_test_alloc_live(void) {
  free_metrics();
  return atomic_load(&a_live);
}

size_t wflo_test_alloc_live_bytes(void) {
  free_metrics();
  return atomic_load(&a_live_bytes);
}
uint64_t wflo_test_alloc_attempts(void) { return atomic_load(&a_attempts); }
uint64_t wflo_test_alloc_failed(void) { return atomic_load(&a_failed); }
bool wflo_test_alloc_mismatch(void) { return atomic_load(&a_mismatch); }

void wflo_test_alloc_clear_mismatch(void) {
  atomic_store(&a_mismatch, false);
  atomic_flag_clear(&a_mismatch_msg_taken);
}

void wflo_test_alloc_fail_at(uint64_t n, wflo_test_fail_mode_t mode) {
  atomic_store(&a_fail_at, 0);
  atomic_store(&a_fail_mode, (int)mode);
  atomic_store(&a_attempts, 0);
  atomic_store(&a_failed, 0);
  atomic_store(&a_fail_at, n);
}

void wflo_test_alloc_fail_off(void) { atomic_store(&a_fail_at, 0); }

void wflo_test_setup_alloc(void) {
  int rc;
  wflo_test_alloc_fail_off();
  atomic_store(&a_attempts, 0);
  atomic_store(&a_failed, 0);
  rc = wflo_set_allocator(&counting_allocator);
  if (rc != 0)
    fail_msg("wflo_set_allocator(counting) returned %d (%s): something of "
             "libwflo is still alive",
             rc, wflo_err_name(rc));
}

/* Metric series outlive the objects that counted into them (counters keep
 * their values, as Prometheus clients do) until wflo_metrics_reset() frees
 * every series no live object holds. That is retained process memory, not
 * a leak: free it before every leak check, so that only memory of objects
 * still alive counts. Tests run one thread of libwflo at a time, which is
 * what reset needs. */
static void free_metrics(void) { wflo_metrics_reset(); }

/* Non-asserting check shared by the assert and the fixtures. */
static bool leaks_report(const char *when) {
  size_t live, bytes;
  bool ok = true;
  free_metrics();
  live = atomic_load(&a_live);
  bytes = atomic_load(&a_live_bytes);
  if (live != 0 || bytes != 0) {
    print_error("%s: %zu libwflo allocation(s) (%zu bytes) still live\n", when,
                live, bytes);
    ok = false;
  }
  if (wflo_test_alloc_mismatch()) {
    print_error("%s: allocator misuse: %s\n", when, a_mismatch_msg);
    ok = false;
  }
  return ok;
}

void wflo_test_assert_no_leaks(void) {
  if (!leaks_report("leak check"))
    fail_msg("libwflo memory leaked or misused (see above)");
}

void wflo_test_restore_alloc(void) {
  int rc;
  wflo_test_alloc_fail_off();
  free_metrics();
  rc = wflo_set_allocator(NULL);
  if (rc != 0)
    fail_msg("wflo_set_allocator(NULL) returned %d (%s): something of "
             "libwflo is still alive",
             rc, wflo_err_name(rc));
}

/* --- fixtures ------------------------------------------------------------ */

static atomic_bool vclock_installed;
static atomic_bool rec_installed;

int wflo_test_group_setup(void **state) {
  int rc;
  (void)state;
  wflo_test_alloc_fail_off();
  rc = wflo_set_allocator(&counting_allocator);
  if (rc != 0) {
    print_error("group setup: wflo_set_allocator returned %s\n",
                wflo_err_name(rc));
    return -1;
  }
  return 0;
}

int wflo_test_group_teardown(void **state) {
  int rc, ret = 0;
  (void)state;
  wflo_test_alloc_fail_off();
  if (atomic_load(&vclock_installed))
    wflo_test_vclock_uninstall();
  if (atomic_load(&rec_installed))
    wflo_test_events_uninstall();
  if (!leaks_report("group teardown"))
    ret = -1;
  rc = wflo_set_allocator(NULL);
  if (rc != 0) {
    print_error("group teardown: wflo_set_allocator(NULL) returned %s: "
                "something of libwflo is still alive\n",
                wflo_err_name(rc));
    ret = -1;
  }
  return ret;
}

int wflo_test_setup(void **state) {
  (void)state;
  wflo_test_alloc_fail_off();
  return 0;
}

int wflo_test_teardown(void **state) {
  (void)state;
  wflo_test_alloc_fail_off();
  return leaks_report("test teardown") ? 0 : -1;
}

/* --- OOM driver ---------------------------------------------------------- */

/* A scenario that needs more allocations than this is looping. */
#define OOM_MAX_ITERATIONS 100000u

void wflo_test_oom_loop_ex(int (*scenario)(void *ud), void *ud, int expect_ok,
                           wflo_test_fail_mode_t mode) {
  uint64_t n, failed_total = 0;
  int rc;

  if (wflo_test_alloc_live() != 0)
    fail_msg("oom loop: %zu allocation(s) live before the first run",
             wflo_test_alloc_live());
  for (n = 1; n <= OOM_MAX_ITERATIONS; n++) {
    uint64_t failed;
    wflo_test_alloc_fail_at(n, mode);
    rc = scenario(ud);
    failed = wflo_test_alloc_failed();
    wflo_test_alloc_fail_off();
    if (failed == 0) {
      if (rc != expect_ok)
        fail_msg("oom loop: with no allocation failed (N=%llu) the scenario "
                 "returned %d (%s), expected %d (%s)",
                 (unsigned long long)n, rc, wflo_err_name(rc), expect_ok,
                 wflo_err_name(expect_ok));
      if (!leaks_report("oom loop, final run"))
        fail_msg("oom loop: leak after the run with no failure (N=%llu)",
                 (unsigned long long)n);
      if (failed_total == 0)
        fail_msg("oom loop: the scenario made no allocation");
      return;
    }
    failed_total += failed;
    if (rc != expect_ok && rc != WFLO_E_NOMEM)
      fail_msg("oom loop: failing allocation %llu made the scenario return "
               "%d (%s); expected %d or WFLO_E_NOMEM",
               (unsigned long long)n, rc, wflo_err_name(rc), expect_ok);
    if (!leaks_report("oom loop"))
      fail_msg("oom loop: leak after failing allocation %llu (scenario "
               "returned %s)",
               (unsigned long long)n, wflo_err_name(rc));
  }
  fail_msg("oom loop: the scenario still allocates after %u runs",
           OOM_MAX_ITERATIONS);
}

void wflo_test_oom_loop(int (*scenario)(void *ud), void *ud, int expect_ok) {
  wflo_test_oom_loop_ex(scenario, ud, expect_ok, WFLO_TEST_FAIL_ONCE);
}

/* --- virtual clock ------------------------------------------------------- */

typedef void (*sleep_hook_fn)(uint64_t ns, void *ud);

static atomic_uint_fast64_t v_now;
static atomic_uint_fast64_t v_sleeps;
static atomic_uint_fast64_t v_slept;
static _Atomic(sleep_hook_fn) v_hook;
static _Atomic(void *) v_hook_ud;

static uint64_t vclock_now(void *ud) {
  (void)ud;
  return atomic_load(&v_now);
}

static void vclock_sleep(uint64_t ns, void *ud) {
  sleep_hook_fn hook;
  (void)ud;
  atomic_fetch_add(&v_now, ns);
  atomic_fetch_add(&v_sleeps, 1);
  atomic_fetch_add(&v_slept, ns);
  hook = atomic_load(&v_hook);
  if (hook != NULL)
    hook(ns, atomic_load(&v_hook_ud));
}

void wflo_test_vclock_install(uint64_t start_ns) {
  int rc;
  atomic_store(&v_now, start_ns);
  atomic_store(&v_sleeps, 0);
  atomic_store(&v_slept, 0);
  atomic_store(&v_hook, NULL);
  rc = wflo_clock_set(vclock_now, vclock_sleep, NULL);
  if (rc != 0)
    fail_msg("wflo_clock_set(virtual) returned %s", wflo_err_name(rc));
  atomic_store(&vclock_installed, true);
}

void wflo_test_vclock_uninstall(void) {
  int rc = wflo_clock_set(NULL, NULL, NULL);
  atomic_store(&vclock_installed, false);
  atomic_store(&v_hook, NULL);
  if (rc != 0)
    fail_msg("wflo_clock_set(NULL, NULL) returned %s", wflo_err_name(rc));
}

void wflo_test_vclock_advance(uint64_t ns) { atomic_fetch_add(&v_now, ns); }
uint64_t wflo_test_vclock_now(void) { return atomic_load(&v_now); }
uint64_t wflo_test_vclock_sleeps(void) { return atomic_load(&v_sleeps); }
uint64_t wflo_test_vclock_slept_ns(void) { return atomic_load(&v_slept); }

void wflo_test_vclock_on_sleep(void (*hook)(uint64_t ns, void *ud), void *ud) {
  atomic_store(&v_hook, NULL);
  atomic_store(&v_hook_ud, ud);
  atomic_store(&v_hook, hook);
}

/* --- event recorder ------------------------------------------------------ */

static uv_once_t rec_once = UV_ONCE_INIT;
static uv_mutex_t rec_mu;
static wflo_test_event_t **rec_events; /* pointers stay put on growth */
static size_t rec_n, rec_cap;

static void rec_init(void) {
  if (uv_mutex_init(&rec_mu) != 0)
    abort(); /* a test harness without its mutex cannot go on */
}

static void rec_free_event(wflo_test_event_t *e) {
  free(e->name);
  json_decref(e->fields);
  free(e);
}

static void rec_handler(const wflo_event_t *ev, void *ud) {
  wflo_test_event_t *e = calloc(1, sizeof(*e));
  (void)ud;
  if (e == NULL)
    return;
  e->name = strdup(ev->name != NULL ? ev->name : "(null)");
  e->level = ev->level;
  e->fields = ev->fields != NULL ? json_deep_copy(ev->fields) : json_null();
  if (e->name == NULL || e->fields == NULL) {
    rec_free_event(e);
    return;
  }
  uv_mutex_lock(&rec_mu);
  if (rec_n == rec_cap) {
    size_t cap = rec_cap != 0 ? rec_cap * 2 : 64;
    wflo_test_event_t **grown = realloc(rec_events, cap * sizeof(*grown));
    if (grown == NULL) {
      uv_mutex_unlock(&rec_mu);
      rec_free_event(e);
      return;
    }
    rec_events = grown;
    rec_cap = cap;
  }
  rec_events[rec_n++] = e;
  uv_mutex_unlock(&rec_mu);
}

void wflo_test_events_install(void) {
  uv_once(&rec_once, rec_init);
  wflo_test_events_clear();
  wflo_set_event_handler(rec_handler, NULL);
  atomic_store(&rec_installed, true);
}

void wflo_test_events_clear(void) {
  size_t i;
  uv_once(&rec_once, rec_init);
  uv_mutex_lock(&rec_mu);
  for (i = 0; i < rec_n; i++)
    rec_free_event(rec_events[i]);
  free(rec_events);
  rec_events = NULL;
  rec_n = rec_cap = 0;
  uv_mutex_unlock(&rec_mu);
}

void wflo_test_events_uninstall(void) {
  wflo_set_event_handler(NULL, NULL);
  atomic_store(&rec_installed, false);
  wflo_test_events_clear();
}

static bool name_matches(const wflo_test_event_t *e, const char *name) {
  return name == NULL || strcmp(e->name, name) == 0;
}

size_t wflo_test_events_count(const char *name) {
  size_t i, n = 0;
  uv_once(&rec_once, rec_init);
  uv_mutex_lock(&rec_mu);
  for (i = 0; i < rec_n; i++)
    if (name_matches(rec_events[i], name))
      n++;
  uv_mutex_unlock(&rec_mu);
  return n;
}

const wflo_test_event_t *wflo_test_events_get(const char *name, size_t idx) {
  const wflo_test_event_t *found = NULL;
  size_t i, n = 0;
  uv_once(&rec_once, rec_init);
  uv_mutex_lock(&rec_mu);
  for (i = 0; i < rec_n && found == NULL; i++)
    if (name_matches(rec_events[i], name) && n++ == idx)
      found = rec_events[i];
  uv_mutex_unlock(&rec_mu);
  return found;
}

const json_t *wflo_test_event_fields(const char *name, size_t i) {
  const wflo_test_event_t *e = wflo_test_events_get(name, i);
  return e != NULL ? e->fields : NULL;
}

int wflo_test_event_level(const char *name, size_t i) {
  const wflo_test_event_t *e = wflo_test_events_get(name, i);
  return e != NULL ? (int)e->level : -1;
}

void wflo_test_events_at(wflo_log_level_t level) {
  wflo_test_events_clear();
  wflo_set_log_level(level);
}

/* --- thread checks ------------------------------------------------------- */

static atomic_uint t_failures;
static atomic_flag t_msg_taken = ATOMIC_FLAG_INIT;
static char t_msg[512];

void wflo_test_thread_check_failed(const char *expr, const char *file,
                                   int line) {
  atomic_fetch_add(&t_failures, 1);
  if (!atomic_flag_test_and_set(&t_msg_taken))
    snprintf(t_msg, sizeof(t_msg), "%s:%d: %s", file, line, expr);
}

void wflo_test_assert_thread_checks(void) {
  unsigned n = atomic_exchange(&t_failures, 0);
  if (n != 0) {
    char msg[sizeof(t_msg)];
    memcpy(msg, t_msg, sizeof(msg));
    atomic_flag_clear(&t_msg_taken);
    fail_msg("%u check(s) failed on other threads; the first: %s", n, msg);
  }
}

/* --- loops --------------------------------------------------------------- */

static void watchdog_cb(uv_timer_t *t) { uv_stop(t->loop); }

static void walk_close(uv_handle_t *h, void *arg) {
  unsigned *n = arg;
  if (h->data == (void *)watchdog_cb)
    return; /* our own watchdog */
  print_error("open handle left on the loop: %s (active %d, referenced %d)\n",
              uv_handle_type_name(h->type), uv_is_active(h), uv_has_ref(h));
  (*n)++;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

void wflo_test_loop_close(uv_loop_t *loop) {
  uv_timer_t watchdog;
  unsigned open_handles = 0;
  int rc;

  /* An unreferenced timer does not keep the loop alive, so it fires only when
   * something else still does after 60 s: then the loop is stopped instead
   * of hanging the test until ctest's timeout. */
  uv_timer_init(loop, &watchdog);
  watchdog.data = (void *)watchdog_cb;
  uv_timer_start(&watchdog, watchdog_cb, 60000, 0);
  uv_unref((uv_handle_t *)&watchdog);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&watchdog, NULL);
  uv_run(loop, UV_RUN_NOWAIT);

  rc = uv_loop_close(loop);
  if (rc == 0)
    return;
  uv_walk(loop, walk_close, &open_handles);
  uv_run(loop, UV_RUN_NOWAIT);
  uv_loop_close(loop);
  fail_msg("uv_loop_close() returned %s: %u handle(s) still open",
           uv_err_name(rc), open_handles);
}

/* --- misc ---------------------------------------------------------------- */

int wflo_test_scale(int n) {
  const char *s = getenv("WFLO_STRESS_SCALE");
  double f = 1.0, r;
  if (s != NULL && *s != '\0') {
    char *end;
    double v = strtod(s, &end);
    if (end != s && isfinite(v) && v > 0.0)
      f = v;
  }
  r = (double)n * f;
  if (!(r >= 1.0))
    return 1;
  if (r >= (double)INT_MAX)
    return INT_MAX;
  return (int)(r + 0.5);
}
