/* Tests of the common module: error table, version, allocator hooks, clock
 * override, per-thread RNG, event levels and the default JSON-lines handler,
 * and the internal config/JSON helpers every module's configs rely on.
 * Also exercises the test harness itself (counting allocator, OOM driver). */
/* ctest-labels: threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "internal/common.h"
#include "internal/config.h"

/* Set by main(): the path of this executable, for the WFLO_LOG subprocess. */
static const char *self_path;

/* --- version ------------------------------------------------------------- */

static void test_version(void **state) {
  unsigned maj = 99, min = 99, pat = 99;
  (void)state;
  assert_string_equal(wflo_version(), WFLO_VERSION_STRING);
  assert_int_equal(sscanf(wflo_version(), "%u.%u.%u", &maj, &min, &pat), 3);
  assert_int_equal(maj, WFLO_VERSION_MAJOR);
  assert_int_equal(min, WFLO_VERSION_MINOR);
  assert_int_equal(pat, WFLO_VERSION_PATCH);
  assert_int_equal(WFLO_VERSION_HEX, (WFLO_VERSION_MAJOR << 16) |
                                         (WFLO_VERSION_MINOR << 8) |
                                         WFLO_VERSION_PATCH);
  /* Static storage: the same pointer every time. */
  assert_ptr_equal(wflo_version(), wflo_version());
}

/* --- error codes --------------------------------------------------------- */

typedef struct err_row {
  int code;
  const char *name;
  const char *msg;
} err_row_t;

static const err_row_t err_rows[] = {
#define ROW(name, msg) {WFLO_##name, "WFLO_" #name, msg},
    WFLO_ERRNO_MAP(ROW)
#undef ROW
};
#define N_ERR_ROWS (sizeof(err_rows) / sizeof(err_rows[0]))

static bool is_uv_code(int err) {
  switch (err) {
#define UV_CASE(name, msg) case UV_##name:
    UV_ERRNO_MAP(UV_CASE)
#undef UV_CASE
    return true;
  default:
    return false;
  }
}

static const int uv_codes[] = {
#define UV_CODE(name, msg) UV_##name,
    UV_ERRNO_MAP(UV_CODE)
#undef UV_CODE
};

static void test_error_table(void **state) {
  size_t i, j;
  (void)state;

  /* Codes are ABI: DESIGN's list, in order, from -30000 down, appended
   * only. */
  assert_int_equal(WFLO_ERRNO_BASE, -30000);
  assert_int_equal(WFLO_E_INVAL, -30000);
  assert_int_equal(WFLO_E_NOMEM, -30001);
  assert_int_equal(WFLO_E_BREAKER_OPEN, -30002);
  assert_int_equal(WFLO_E_LOCK_TIMEOUT, -30003);
  assert_int_equal(WFLO_E_QUEUE_FULL, -30004);
  assert_int_equal(WFLO_E_TIMEOUT, -30005);
  assert_int_equal(WFLO_E_BUDGET_EXCEEDED, -30006);
  assert_int_equal(WFLO_E_CANCELED, -30007);
  assert_int_equal(WFLO_E_RATE_LIMITED, -30008);
  assert_int_equal(WFLO_E_STATE, -30009);
  assert_int_equal(WFLO_E_NOT_FOUND, -30010);
  assert_int_equal(WFLO_E_PARSE, -30011);
  assert_true(N_ERR_ROWS >= 12);
  assert_int_equal(WFLO_ERRNO_END, WFLO_ERRNO_BASE - (int)N_ERR_ROWS);

  for (i = 0; i < N_ERR_ROWS; i++) {
    const err_row_t *r = &err_rows[i];
    assert_true(r->code <= WFLO_ERRNO_BASE);
    assert_true(r->code >= WFLO_ERRNO_BASE - (int)N_ERR_ROWS + 1);
    assert_true(strncmp(r->name, "WFLO_E_", 7) == 0);
    assert_string_equal(wflo_err_name(r->code), r->name);
    assert_string_equal(wflo_strerror(r->code), r->msg);
    assert_true(strlen(r->msg) > 0);
    for (j = 0; j < i; j++) {
      assert_int_not_equal(r->code, err_rows[j].code);
      assert_string_not_equal(r->name, err_rows[j].name);
      assert_string_not_equal(r->msg, err_rows[j].msg);
    }
    /* The table's name parses back to its code. */
    {
      int code = 0;
      assert_int_equal(wflo__err_from_name(r->name, &code), 0);
      assert_int_equal(code, r->code);
    }
  }
}

static void test_error_uv_codes(void **state) {
  size_t i;
  int code;
  (void)state;

  assert_string_equal(wflo_err_name(UV_ETIMEDOUT), "ETIMEDOUT");
  assert_string_equal(wflo_err_name(UV_ETIMEDOUT), uv_err_name(UV_ETIMEDOUT));
  assert_string_equal(wflo_strerror(UV_ETIMEDOUT), uv_strerror(UV_ETIMEDOUT));

  for (i = 0; i < sizeof(uv_codes) / sizeof(uv_codes[0]); i++) {
    /* libuv's codes stay clear of the library range. */
    assert_true(uv_codes[i] < 0);
    assert_true(uv_codes[i] > WFLO_ERRNO_BASE);
    assert_string_equal(wflo_err_name(uv_codes[i]), uv_err_name(uv_codes[i]));
    assert_string_equal(wflo_strerror(uv_codes[i]), uv_strerror(uv_codes[i]));
    /* "ENAME" and "UV_ENAME" both parse back. */
    {
      char buf[64];
      code = 0;
      assert_int_equal(wflo__err_from_name(uv_err_name(uv_codes[i]), &code),
                       0);
      assert_int_equal(code, uv_codes[i]);
      snprintf(buf, sizeof(buf), "UV_%s", uv_err_name(uv_codes[i]));
      code = 0;
      assert_int_equal(wflo__err_from_name(buf, &code), 0);
      assert_int_equal(code, uv_codes[i]);
    }
  }

  code = 12345;
  assert_int_equal(wflo__err_from_name("E_NO_SUCH_THING", &code),
                   WFLO_E_NOT_FOUND);
  assert_int_equal(wflo__err_from_name("WFLO_E_NOPE", &code),
                   WFLO_E_NOT_FOUND);
  assert_int_equal(wflo__err_from_name("", &code), WFLO_E_NOT_FOUND);
  assert_int_equal(wflo__err_from_name(NULL, &code), WFLO_E_NOT_FOUND);
  assert_int_equal(code, 12345);
}

/* Unknown codes and positive values must come back as static strings: the
 * same pointer for the same class, whatever the value (libuv's own
 * uv_strerror() of an unknown code allocates a fresh string every time). */
static void check_err_strings(int e, const char *ok_msg, const char *ok_name,
                              const char *unk_msg, const char *unk_name) {
  if (e >= 0) {
    assert_ptr_equal(wflo_strerror(e), ok_msg);
    assert_ptr_equal(wflo_err_name(e), ok_name);
  } else if (e <= WFLO_ERRNO_BASE && e > WFLO_ERRNO_END) {
    assert_string_equal(wflo_err_name(e), err_rows[WFLO_ERRNO_BASE - e].name);
  } else if (is_uv_code(e)) {
    assert_string_equal(wflo_err_name(e), uv_err_name(e));
  } else {
    assert_ptr_equal(wflo_strerror(e), unk_msg);
    assert_ptr_equal(wflo_err_name(e), unk_name);
  }
}

static void test_error_unknown_static(void **state) {
  const char *ok_msg, *ok_name, *unk_msg, *unk_name;
  int e, i;
  (void)state;

  ok_msg = wflo_strerror(0);
  ok_name = wflo_err_name(0);
  assert_string_equal(ok_name, "OK");
  assert_true(strlen(ok_msg) > 0);
  unk_msg = wflo_strerror(INT_MIN);
  unk_name = wflo_err_name(INT_MIN);
  assert_string_equal(unk_name, "UNKNOWN");
  assert_string_equal(unk_msg, "unknown error");
  assert_ptr_equal(wflo_strerror(WFLO_ERRNO_END), unk_msg);
  assert_ptr_equal(wflo_err_name(WFLO_ERRNO_END), unk_name);

  /* Every value near the interesting ranges... */
  for (e = -5000; e <= 5; e++)
    check_err_strings(e, ok_msg, ok_name, unk_msg, unk_name);
  for (e = WFLO_ERRNO_BASE - 200; e <= WFLO_ERRNO_BASE + 200; e++)
    check_err_strings(e, ok_msg, ok_name, unk_msg, unk_name);
  check_err_strings(INT_MAX, ok_msg, ok_name, unk_msg, unk_name);
  check_err_strings(INT_MIN + 1, ok_msg, ok_name, unk_msg, unk_name);
  /* ...and many random ones. */
  wflo_rng_seed(20240601);
  for (i = 0; i < 200000; i++) {
    e = (int)(uint32_t)wflo__rng_u64();
    check_err_strings(e, ok_msg, ok_name, unk_msg, unk_name);
  }
  /* Nothing went through libwflo's allocator either. */
  assert_int_equal(wflo_test_alloc_live(), 0);
}

static void test_error_verdicts(void **state) {
  size_t i;
  (void)state;
  /* DESIGN's list of libwflo's own verdicts, not retried by default. */
  assert_true(wflo__err_is_verdict(WFLO_E_BREAKER_OPEN));
  assert_true(wflo__err_is_verdict(WFLO_E_BUDGET_EXCEEDED));
  assert_true(wflo__err_is_verdict(WFLO_E_CANCELED));
  assert_true(wflo__err_is_verdict(WFLO_E_INVAL));
  assert_true(wflo__err_is_verdict(WFLO_E_NOMEM));
  assert_true(wflo__err_is_verdict(WFLO_E_STATE));
  assert_true(wflo__err_is_verdict(WFLO_E_QUEUE_FULL));
  assert_false(wflo__err_is_verdict(WFLO_E_TIMEOUT));
  assert_false(wflo__err_is_verdict(WFLO_E_LOCK_TIMEOUT));
  assert_false(wflo__err_is_verdict(WFLO_E_RATE_LIMITED));
  assert_false(wflo__err_is_verdict(WFLO_E_NOT_FOUND));
  assert_false(wflo__err_is_verdict(WFLO_E_PARSE));
  assert_false(wflo__err_is_verdict(0));
  assert_false(wflo__err_is_verdict(1));
  assert_false(wflo__err_is_verdict(-1));
  for (i = 0; i < sizeof(uv_codes) / sizeof(uv_codes[0]); i++)
    assert_false(wflo__err_is_verdict(uv_codes[i]));
}

/* --- allocator ----------------------------------------------------------- */

static void *noop_alloc(size_t size, void *ud) {
  (void)ud;
  return malloc(size);
}
static void *noop_resize(void *p, size_t o, size_t n, void *ud) {
  (void)o;
  (void)ud;
  return realloc(p, n);
}
static void noop_release(void *p, size_t size, void *ud) {
  (void)size;
  (void)ud;
  free(p);
}

static void test_allocator_set_restore(void **state) {
  wflo_allocator_t a = {noop_alloc, noop_resize, noop_release, NULL};
  wflo_allocator_t bad;
  void *p;
  (void)state;

  /* Every hook is required. */
  bad = a;
  bad.alloc = NULL;
  assert_int_equal(wflo_set_allocator(&bad), WFLO_E_INVAL);
  bad = a;
  bad.resize = NULL;
  assert_int_equal(wflo_set_allocator(&bad), WFLO_E_INVAL);
  bad = a;
  bad.release = NULL;
  assert_int_equal(wflo_set_allocator(&bad), WFLO_E_INVAL);

  /* The counting allocator (group setup) is in place: libwflo's memory goes
   * through it. */
  p = wflo__malloc(16);
  assert_non_null(p);
  assert_int_equal(wflo_test_alloc_live(), 1);
  assert_int_equal(wflo_test_alloc_live_bytes(), 16);

  /* While anything is alive the allocator cannot change. The object a later
   * module would create is stood in for by a raw internal allocation. */
  assert_int_equal(wflo_set_allocator(NULL), WFLO_E_STATE);
  assert_int_equal(wflo_set_allocator(&a), WFLO_E_STATE);
  wflo__free(p, 16);
  assert_int_equal(wflo_test_alloc_live(), 0);

  /* NULL restores malloc: the counting allocator sees nothing any more. */
  assert_int_equal(wflo_set_allocator(NULL), 0);
  p = wflo__malloc(32);
  assert_non_null(p);
  assert_int_equal(wflo_test_alloc_live(), 0);
  wflo__free(p, 32);

  /* The struct is copied: changing the caller's copy afterwards is
   * harmless. */
  assert_int_equal(wflo_set_allocator(&a), 0);
  a.alloc = NULL;
  p = wflo__malloc(8);
  assert_non_null(p);
  wflo__free(p, 8);

  wflo_test_setup_alloc(); /* back to counting for the other tests */
}

/* An allocator that records what libwflo asked for and clobbers errno in
 * release(), which wflo__free must hide from its callers. */
typedef struct spy {
  size_t last_alloc, last_old, last_new, last_release;
  unsigned allocs, resizes, releases;
  void *seen_ud;
} spy_t;

static void *spy_alloc(size_t size, void *ud) {
  spy_t *s = ud;
  s->last_alloc = size;
  s->allocs++;
  s->seen_ud = ud;
  return malloc(size);
}
static void *spy_resize(void *p, size_t o, size_t n, void *ud) {
  spy_t *s = ud;
  s->last_old = o;
  s->last_new = n;
  s->resizes++;
  return realloc(p, n);
}
static void spy_release(void *p, size_t size, void *ud) {
  spy_t *s = ud;
  s->last_release = size;
  s->releases++;
  errno = EIO;
  free(p);
}

static void test_allocator_sizes(void **state) {
  static spy_t spy; /* static: it must outlive a failed assertion */
  wflo_allocator_t a = {spy_alloc, spy_resize, spy_release, &spy};
  unsigned char *p;
  char *s;
  size_t i;
  (void)state;

  memset(&spy, 0, sizeof(spy));
  wflo_test_restore_alloc();
  assert_int_equal(wflo_set_allocator(&a), 0);

  /* A zero-size request still gets a block, freed with the same size. */
  p = wflo__malloc(0);
  assert_non_null(p);
  assert_int_equal(spy.last_alloc, 1);
  assert_ptr_equal(spy.seen_ud, &spy);
  errno = 1234;
  wflo__free(p, 0);
  assert_int_equal(spy.last_release, 1);
  assert_int_equal(errno,
                   1234); /* release() clobbered it; wflo__free hid it */

  /* calloc checks n*size overflow before asking the hook. */
  spy.allocs = spy.releases = 0;
  assert_null(wflo__calloc(SIZE_MAX / 2, 4));
  assert_null(wflo__calloc(SIZE_MAX, SIZE_MAX));
  assert_int_equal(spy.allocs, 0);
  p = wflo__calloc(3, 8);
  assert_non_null(p);
  assert_int_equal(spy.last_alloc, 24);
  for (i = 0; i < 24; i++)
    assert_int_equal(p[i], 0);

  /* realloc passes both sizes. */
  p = wflo__realloc(p, 24, 48);
  assert_non_null(p);
  assert_int_equal(spy.last_old, 24);
  assert_int_equal(spy.last_new, 48);
  wflo__free(p, 48);
  assert_int_equal(spy.last_release, 48);
  p = wflo__realloc(NULL, 0, 10);
  assert_non_null(p);
  assert_int_equal(spy.last_alloc, 10);
  wflo__free(p, 10);
  wflo__free(NULL, 10); /* no-op */

  /* strdup/strfree agree on the size. */
  s = wflo__strdup("abc");
  assert_string_equal(s, "abc");
  assert_int_equal(spy.last_alloc, 4);
  wflo__strfree(s);
  assert_int_equal(spy.last_release, 4);
  assert_null(wflo__strdup(NULL));
  wflo__strfree(NULL);
  assert_int_equal(spy.allocs, spy.releases);
  assert_int_equal(wflo__mem_outstanding(), 0);

  assert_int_equal(wflo_set_allocator(NULL), 0);
  wflo_test_setup_alloc();
}

/* --- the harness's own allocator checks ---------------------------------- */

static void test_harness_counting_allocator(void **state) {
  void *p, *q;
  (void)state;

  /* A release with the wrong size is caught (and forgotten again here). */
  p = wflo__malloc(10);
  assert_non_null(p);
  assert_false(wflo_test_alloc_mismatch());
  wflo__free(p, 11);
  assert_true(wflo_test_alloc_mismatch());
  wflo_test_alloc_clear_mismatch();
  assert_int_equal(wflo_test_alloc_live(), 0);

  /* resize keeps the byte count right. */
  p = wflo__malloc(10);
  p = wflo__realloc(p, 10, 100);
  assert_non_null(p);
  assert_int_equal(wflo_test_alloc_live_bytes(), 100);
  wflo__free(p, 100);
  assert_false(wflo_test_alloc_mismatch());

  /* Fail once: only the 2nd attempt fails. */
  wflo_test_alloc_fail_at(2, WFLO_TEST_FAIL_ONCE);
  p = wflo__malloc(1);
  assert_non_null(p);
  assert_null(wflo__malloc(1));
  q = wflo__malloc(1);
  assert_non_null(q);
  assert_int_equal(wflo_test_alloc_failed(), 1);
  assert_int_equal(wflo_test_alloc_attempts(), 3);
  wflo__free(p, 1);
  wflo__free(q, 1);

  /* Fail after: the 2nd and every later attempt fail, resize included. */
  wflo_test_alloc_fail_at(2, WFLO_TEST_FAIL_AFTER);
  p = wflo__malloc(4);
  assert_non_null(p);
  assert_null(wflo__malloc(1));
  assert_null(wflo__malloc(1));
  assert_null(wflo__realloc(p, 4, 8)); /* p stays valid */
  assert_int_equal(wflo_test_alloc_failed(), 3);
  wflo_test_alloc_fail_off();
  wflo__free(p, 4);
  assert_int_equal(wflo_test_alloc_live(), 0);
}

static void test_harness_scale(void **state) {
  const char *old = getenv("WFLO_STRESS_SCALE");
  char *saved = old != NULL ? strdup(old) : NULL;
  (void)state;

  unsetenv("WFLO_STRESS_SCALE");
  assert_int_equal(wflo_test_scale(10), 10);
  assert_int_equal(wflo_test_scale(0), 1);
  setenv("WFLO_STRESS_SCALE", "2.5", 1);
  assert_int_equal(wflo_test_scale(10), 25);
  setenv("WFLO_STRESS_SCALE", "0.01", 1);
  assert_int_equal(wflo_test_scale(10), 1);
  setenv("WFLO_STRESS_SCALE", "junk", 1);
  assert_int_equal(wflo_test_scale(10), 10);
  setenv("WFLO_STRESS_SCALE", "1e12", 1);
  assert_int_equal(wflo_test_scale(10), INT_MAX);

  if (saved != NULL) {
    setenv("WFLO_STRESS_SCALE", saved, 1);
    free(saved);
  } else {
    unsetenv("WFLO_STRESS_SCALE");
  }
}

static void close_in_cb(uv_timer_t *t) { uv_close((uv_handle_t *)t, NULL); }

static void hook_count(uint64_t ns, void *ud) { *(uint64_t *)ud += ns; }

static void test_harness_loop_and_hook(void **state) {
  uv_loop_t loop;
  uv_timer_t timer;
  uint64_t hooked = 0;
  (void)state;

  /* A loop whose only handle closes itself ends clean. */
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(uv_timer_init(&loop, &timer), 0);
  assert_int_equal(uv_timer_start(&timer, close_in_cb, 1, 0), 0);
  wflo_test_loop_close(&loop);

  /* The sleep hook runs inside each virtual sleep, after the clock moved. */
  wflo_test_vclock_install(0);
  wflo_test_vclock_on_sleep(hook_count, &hooked);
  wflo__sleep_ns(40);
  wflo__sleep_ns(2);
  assert_int_equal(hooked, 42);
  assert_int_equal(wflo_test_vclock_now(), 42);
  wflo_test_vclock_on_sleep(NULL, NULL);
  wflo__sleep_ns(8);
  assert_int_equal(hooked, 42);
  assert_int_equal(wflo_test_vclock_slept_ns(), 50);
  assert_int_equal(wflo_test_vclock_sleeps(), 3);
  wflo_test_vclock_uninstall();
}

/* --- clock --------------------------------------------------------------- */

static uint64_t fixed_now(void *ud) { return *(const uint64_t *)ud; }
static void fixed_sleep(uint64_t ns, void *ud) { *(uint64_t *)ud += ns; }

static void test_clock_override(void **state) {
  uint64_t t = 777;
  (void)state;

  wflo_test_vclock_install(1000);
  assert_true(wflo__clock_overridden());
  assert_int_equal(wflo_now_ns(), 1000);
  assert_int_equal(wflo__now_ns(), 1000);
  assert_int_equal(wflo__now_coarse_ns(), 1000); /* the coarse clock too */
  wflo_test_vclock_advance(500);
  assert_int_equal(wflo_now_ns(), 1500);

  /* Sleeps go to the override, which advances virtual time. */
  wflo__sleep_ns(250);
  assert_int_equal(wflo_now_ns(), 1750);
  assert_int_equal(wflo_test_vclock_sleeps(), 1);
  assert_int_equal(wflo_test_vclock_slept_ns(), 250);
  wflo__sleep_ns(0); /* skipped entirely */
  assert_int_equal(wflo_test_vclock_sleeps(), 1);

  /* Exactly one NULL is refused and changes nothing. */
  assert_int_equal(wflo_clock_set(fixed_now, NULL, &t), WFLO_E_INVAL);
  assert_int_equal(wflo_clock_set(NULL, fixed_sleep, &t), WFLO_E_INVAL);
  assert_int_equal(wflo_now_ns(), 1750);

  /* user data reaches both hooks. */
  assert_int_equal(wflo_clock_set(fixed_now, fixed_sleep, &t), 0);
  assert_int_equal(wflo_now_ns(), 777);
  wflo__sleep_ns(23);
  assert_int_equal(wflo_now_ns(), 800);

  /* NULL, NULL restores the real clock. */
  wflo_test_vclock_uninstall();
  assert_false(wflo__clock_overridden());
  assert_true(wflo_now_ns() > 800);
}

static void test_clock_real(void **state) {
  uint64_t prev, prev_coarse, now, coarse, hr, t0;
  int i;
  (void)state;

  assert_int_equal(wflo_clock_set(NULL, NULL, NULL), 0);
  /* The same clock as libuv's (CLOCK_MONOTONIC). */
  hr = uv_hrtime();
  now = wflo_now_ns();
  assert_true(now >= hr && now - hr < 1000000000ull);

  prev_coarse = wflo__now_coarse_ns();
  prev = wflo_now_ns();
  for (i = 0; i < 10000; i++) {
    /* coarse first: the coarse clock (the last tick) should not be ahead of
     * the precise one read after it. The kernel computes the two from
     * different bases, and one valgrind run saw coarse ahead by a little:
     * allow a few ticks (a tick is 4 ms at HZ=250), which still catches a
     * wrong clock id or unit. */
    coarse = wflo__now_coarse_ns();
    now = wflo_now_ns();
    assert_true(now >= prev);
    assert_true(coarse >= prev_coarse);
    assert_true(coarse <= now + 20000000ull);
    /* and it lags by a tick or so (1 s leaves room for a descheduling) */
    assert_true(now - coarse < 1000000000ull);
    prev = now;
    prev_coarse = coarse;
  }

  t0 = wflo_now_ns();
  wflo__sleep_ns(2000000); /* 2 ms of real time */
  assert_true(wflo_now_ns() - t0 >= 2000000ull);
}

/* --- rng ----------------------------------------------------------------- */

static void test_rng_reproducible(void **state) {
  uint64_t a[64], b[64];
  int i, same = 0;
  double u;
  (void)state;

  wflo_rng_seed(42);
  for (i = 0; i < 64; i++)
    a[i] = wflo__rng_u64();
  wflo_rng_seed(42);
  for (i = 0; i < 64; i++)
    b[i] = wflo__rng_u64();
  assert_memory_equal(a, b, sizeof(a));

  wflo_rng_seed(43);
  for (i = 0; i < 64; i++)
    same += wflo__rng_u64() == a[i];
  assert_int_equal(same, 0);

  /* Seeding resets the doubles too. */
  wflo_rng_seed(7);
  u = wflo__rng_unit();
  wflo_rng_seed(7);
  assert_true(wflo__rng_unit() == u);

  /* uniform(): inside [lo, hi]; lo when the range is empty or inverted. */
  for (i = 0; i < 10000; i++) {
    double v = wflo__rng_uniform(2.0, 3.0);
    assert_true(v >= 2.0 && v <= 3.0);
    u = wflo__rng_unit();
    assert_true(u >= 0.0 && u < 1.0);
  }
  assert_true(wflo__rng_uniform(5.0, 5.0) == 5.0);
  assert_true(wflo__rng_uniform(5.0, 1.0) == 5.0);
  assert_true(wflo__rng_uniform(5.0, NAN) == 5.0);
}

static void test_rng_uniformity(void **state) {
  enum { BINS = 20, N = 200000 };
  unsigned bins[BINS] = {0};
  unsigned bit_ones[64] = {0};
  double chi2 = 0.0, expected = (double)N / BINS, sum = 0.0;
  int i, b;
  (void)state;

  wflo_rng_seed(0x5eed);
  for (i = 0; i < N; i++) {
    double u = wflo__rng_unit();
    bins[(int)(u * BINS)]++;
    sum += wflo__rng_uniform(2.0, 4.0);
  }
  for (b = 0; b < BINS; b++)
    chi2 +=
        ((double)bins[b] - expected) * ((double)bins[b] - expected) / expected;
  /* 19 degrees of freedom: 43.8 is the p = 0.001 critical value. */
  assert_true(chi2 < 43.8);
  assert_true(fabs(sum / N - 3.0) < 0.01);

  for (i = 0; i < 20000; i++) {
    uint64_t v = wflo__rng_u64();
    for (b = 0; b < 64; b++)
      bit_ones[b] += (unsigned)((v >> b) & 1u);
  }
  for (b = 0; b < 64; b++) {
    double f = bit_ones[b] / 20000.0;
    assert_true(f > 0.48 && f < 0.52);
  }
}

typedef struct rng_thread_arg {
  uint64_t seed;
  bool seed_it;
  uint64_t out[16];
} rng_thread_arg_t;

static void rng_thread(void *p) {
  rng_thread_arg_t *a = p;
  int i;
  if (a->seed_it)
    wflo_rng_seed(a->seed);
  for (i = 0; i < 16; i++)
    a->out[i] = wflo__rng_u64();
}

static void test_rng_per_thread(void **state) {
  rng_thread_arg_t seeded = {99, true, {0}}, unseeded = {0, false, {0}};
  uint64_t ref[16], mine[16];
  uv_thread_t t;
  int i;
  (void)state;

  wflo_rng_seed(99);
  for (i = 0; i < 16; i++)
    ref[i] = wflo__rng_u64();

  /* Main thread: seed, take 8, let other threads seed and draw, take 8 more:
   * the sequence is untouched by them. */
  wflo_rng_seed(99);
  for (i = 0; i < 8; i++)
    mine[i] = wflo__rng_u64();
  assert_int_equal(uv_thread_create(&t, rng_thread, &seeded), 0);
  assert_int_equal(uv_thread_join(&t), 0);
  assert_int_equal(uv_thread_create(&t, rng_thread, &unseeded), 0);
  assert_int_equal(uv_thread_join(&t), 0);
  for (i = 8; i < 16; i++)
    mine[i] = wflo__rng_u64();
  assert_memory_equal(mine, ref, sizeof(ref));

  /* Another thread seeded alike draws the same sequence... */
  assert_memory_equal(seeded.out, ref, sizeof(ref));
  /* ...and one seeded from the OS draws a different one. */
  assert_memory_not_equal(unseeded.out, ref, sizeof(ref));
}

/* --- events -------------------------------------------------------------- */

static void test_log_level_names(void **state) {
  (void)state;
  assert_string_equal(wflo_log_level_name(WFLO_LOG_DEBUG), "debug");
  assert_string_equal(wflo_log_level_name(WFLO_LOG_INFO), "info");
  assert_string_equal(wflo_log_level_name(WFLO_LOG_WARN), "warn");
  assert_string_equal(wflo_log_level_name(WFLO_LOG_ERROR), "error");
  assert_string_equal(wflo_log_level_name(WFLO_LOG_OFF), "off");
  assert_string_equal(wflo_log_level_name((wflo_log_level_t)5), "unknown");
  assert_string_equal(wflo_log_level_name((wflo_log_level_t)-1), "unknown");
  assert_true(WFLO_LOG_DEBUG < WFLO_LOG_INFO &&
              WFLO_LOG_INFO < WFLO_LOG_WARN &&
              WFLO_LOG_WARN < WFLO_LOG_ERROR && WFLO_LOG_ERROR < WFLO_LOG_OFF);
}

static void test_log_level_filtering(void **state) {
  (void)state;
  wflo_test_events_install();

  /* off: nothing reaches the handler, not even errors. */
  wflo_set_log_level(WFLO_LOG_OFF);
  assert_int_equal(wflo_get_log_level(), WFLO_LOG_OFF);
  assert_false(wflo__event_on(WFLO_LOG_ERROR));
  assert_int_equal(wflo__check_duration("demo", "timeout", NAN, NULL, 0),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_test_events_count(NULL), 0);

  /* error: error events pass, anything below does not. */
  wflo_set_log_level(WFLO_LOG_ERROR);
  assert_true(wflo__event_on(WFLO_LOG_ERROR));
  assert_false(wflo__event_on(WFLO_LOG_WARN));
  assert_false(wflo__event_on(WFLO_LOG_INFO));
  assert_false(wflo__event_on(WFLO_LOG_DEBUG));
  assert_int_equal(wflo__check_duration("demo", "timeout", NAN, NULL, 0),
                   WFLO_E_INVAL);
  assert_int_equal(wflo_test_events_count("config_invalid"), 1);
  assert_int_equal(wflo_test_events_get("config_invalid", 0)->level,
                   WFLO_LOG_ERROR);

  wflo_set_log_level(WFLO_LOG_WARN);
  assert_true(wflo__event_on(WFLO_LOG_WARN));
  assert_false(wflo__event_on(WFLO_LOG_INFO));
  wflo_set_log_level(WFLO_LOG_DEBUG);
  assert_true(wflo__event_on(WFLO_LOG_DEBUG));
  /* WFLO_LOG_OFF is a threshold, never an event level. */
  assert_false(wflo__event_on(WFLO_LOG_OFF));

  /* Values outside the enum are ignored. */
  wflo_set_log_level(WFLO_LOG_INFO);
  wflo_set_log_level((wflo_log_level_t)42);
  wflo_set_log_level((wflo_log_level_t)-1);
  assert_int_equal(wflo_get_log_level(), WFLO_LOG_INFO);
}

static void nop_handler(const wflo_event_t *ev, void *ud) {
  (void)ev;
  (void)ud;
}

static void test_log_level_survives_handler(void **state) {
  (void)state;
  wflo_set_log_level(WFLO_LOG_INFO);
  wflo_set_event_handler(nop_handler, NULL);
  assert_int_equal(wflo_get_log_level(), WFLO_LOG_INFO);
  wflo_set_event_handler(NULL, NULL);
  assert_int_equal(wflo_get_log_level(), WFLO_LOG_INFO);
  wflo_test_events_install();
  assert_int_equal(wflo_get_log_level(), WFLO_LOG_INFO);
  wflo_test_events_uninstall();
  assert_int_equal(wflo_get_log_level(), WFLO_LOG_INFO);
}

/* WFLO_LOG is read once per process, at first use. In-process, the internal
 * "not read yet" state (-1) is restored to read it again; a subprocess checks
 * the real first-use path. */
static void set_env(const char *name, const char *value) {
  if (value != NULL)
    setenv(name, value, 1);
  else
    unsetenv(name);
}

static void test_log_env_in_process(void **state) {
  static const struct {
    const char *env;
    wflo_log_level_t level;
  } cases[] = {{"debug", WFLO_LOG_DEBUG}, {"info", WFLO_LOG_INFO},
               {"warn", WFLO_LOG_WARN},   {"error", WFLO_LOG_ERROR},
               {"off", WFLO_LOG_OFF},     {"bogus", WFLO_LOG_WARN},
               {"", WFLO_LOG_WARN},       {"DEBUG", WFLO_LOG_WARN},
               {NULL, WFLO_LOG_WARN}};
  const char *old = getenv("WFLO_LOG");
  char *saved = old != NULL ? strdup(old) : NULL;
  size_t i;
  (void)state;

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    set_env("WFLO_LOG", cases[i].env);
    atomic_store(&wflo__log_level, -1);
    assert_int_equal(wflo_get_log_level(), cases[i].level);
    atomic_store(&wflo__log_level, -1);
    /* wflo__event_on() reads it lazily too. */
    assert_int_equal(wflo__event_on(WFLO_LOG_ERROR),
                     cases[i].level <= WFLO_LOG_ERROR);
    assert_int_equal(wflo_get_log_level(), cases[i].level);
  }
  /* wflo_set_log_level() overrides the environment for good. */
  set_env("WFLO_LOG", "debug");
  atomic_store(&wflo__log_level, -1);
  wflo_set_log_level(WFLO_LOG_ERROR);
  assert_int_equal(wflo_get_log_level(), WFLO_LOG_ERROR);

  set_env("WFLO_LOG", saved);
  free(saved);
}

/* Runs this executable with WFLO_LOG=value and "--print-log-level"; returns
 * what it printed (static buffer). */
static const char *child_log_level(const char *value) {
  static char out[64];
  int fds[2], status;
  ssize_t n, got = 0;
  pid_t pid;

  assert_int_equal(pipe(fds), 0);
  fflush(NULL);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    char *argv[] = {(char *)self_path, (char *)"--print-log-level", NULL};
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    set_env("WFLO_LOG", value);
    execv(self_path, argv);
    _exit(127);
  }
  close(fds[1]);
  while ((n = read(fds[0], out + got, sizeof(out) - 1 - (size_t)got)) > 0)
    got += n;
  close(fds[0]);
  out[got] = '\0';
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  return out;
}

static void test_log_env_subprocess(void **state) {
  (void)state;
  if (self_path == NULL)
    skip();
  assert_string_equal(child_log_level("debug"), "debug\n");
  assert_string_equal(child_log_level("off"), "off\n");
  assert_string_equal(child_log_level("nonsense"), "warn\n");
  assert_string_equal(child_log_level(NULL), "warn\n");
}

/* Captures what the default handler writes to fd 2 while fn runs. */
static char *capture_stderr(void (*fn)(void)) {
  FILE *tmp = tmpfile();
  int saved, n;
  long size;
  char *buf;

  assert_non_null(tmp);
  fflush(stderr);
  saved = dup(2);
  assert_true(saved >= 0);
  assert_true(dup2(fileno(tmp), 2) >= 0);
  fn();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);

  assert_int_equal(fseek(tmp, 0, SEEK_END), 0);
  size = ftell(tmp);
  assert_true(size >= 0);
  rewind(tmp);
  buf = malloc((size_t)size + 1);
  assert_non_null(buf);
  n = (int)fread(buf, 1, (size_t)size, tmp);
  assert_int_equal(n, size);
  buf[n] = '\0';
  fclose(tmp);
  return buf;
}

#define NASTY_NAME "a \"quoted\"\nname\\ \xff\xfe end \xc3\xa9"
#define NASTY_FIXED                                                           \
  "a \"quoted\"\nname\\ \xef\xbf\xbd\xef\xbf\xbd end \xc3\xa9"

static void emit_two_events(void) {
  wflo__emit("test_event", WFLO_LOG_WARN,
             wflo__json_obj("name", wflo__json_string(NASTY_NAME), "n",
                            json_integer(3), "inf", wflo__json_real(INFINITY),
                            "half", wflo__json_real(0.5), NULL));
  /* And one through a real emitter, which honours the level. */
  wflo__check_duration("demo", "timeout", -1.0, NULL, 0);
}

static void test_default_handler_json_lines(void **state) {
  char *out, *line2;
  json_t *j;
  json_error_t err;
  size_t newlines = 0;
  const char *p;
  (void)state;

  wflo_set_event_handler(NULL, NULL);
  wflo_set_log_level(WFLO_LOG_WARN);
  out = capture_stderr(emit_two_events);

  for (p = out; *p; p++)
    newlines += *p == '\n';
  assert_int_equal(newlines, 2);
  assert_true(strlen(out) > 0 && out[strlen(out) - 1] == '\n');
  line2 = strchr(out, '\n') + 1;
  line2[-1] = '\0';

  /* Line 1: one complete JSON object. */
  j = json_loads(out, 0, &err);
  if (j == NULL)
    fail_msg("line 1 is not JSON (%s): %s", err.text, out);
  assert_true(json_is_object(j));
  assert_true(json_is_number(json_object_get(j, "ts")));
  assert_true(json_number_value(json_object_get(j, "ts")) > 1e9);
  assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
  assert_string_equal(json_string_value(json_object_get(j, "event")),
                      "test_event");
  assert_string_equal(json_string_value(json_object_get(j, "name")),
                      NASTY_FIXED);
  assert_int_equal(json_integer_value(json_object_get(j, "n")), 3);
  assert_true(json_is_null(json_object_get(j, "inf")));
  assert_true(json_real_value(json_object_get(j, "half")) == 0.5);
  json_decref(j);

  /* Line 2: the config_invalid event. */
  line2[strlen(line2) - 1] = '\0';
  j = json_loads(line2, 0, &err);
  if (j == NULL)
    fail_msg("line 2 is not JSON (%s): %s", err.text, line2);
  assert_string_equal(json_string_value(json_object_get(j, "event")),
                      "config_invalid");
  assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
  assert_string_equal(json_string_value(json_object_get(j, "what")), "demo");
  assert_string_equal(json_string_value(json_object_get(j, "field")),
                      "timeout");
  assert_true(json_is_string(json_object_get(j, "reason")));
  json_decref(j);
  free(out);

  /* Below the level, the default handler writes nothing. */
  wflo_set_log_level(WFLO_LOG_OFF);
  out = capture_stderr(emit_two_events);
  /* wflo__emit() itself does not filter (callers check wflo__event_on()
   * first), so only the unfiltered first line appears. */
  newlines = 0;
  for (p = out; *p; p++)
    newlines += *p == '\n';
  assert_int_equal(newlines, 1);
  free(out);
}

typedef struct event_thread_arg {
  int n;
} event_thread_arg_t;

static void event_thread(void *p) {
  event_thread_arg_t *a = p;
  int i;
  char errbuf[64];
  for (i = 0; i < a->n; i++) {
    int rc = wflo__config_invalid("thr", "field", "reason \xff", errbuf,
                                  sizeof(errbuf));
    WFLO_TEST_THREAD_CHECK(rc == WFLO_E_INVAL);
    WFLO_TEST_THREAD_CHECK(strcmp(errbuf, "thr.field: reason \xff") == 0);
  }
}

static void test_events_from_threads(void **state) {
  enum { THREADS = 4 };
  uv_thread_t t[THREADS];
  event_thread_arg_t arg;
  const wflo_test_event_t *ev;
  size_t i;
  (void)state;

  arg.n = wflo_test_scale(200);
  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_ERROR);
  for (i = 0; i < THREADS; i++)
    assert_int_equal(uv_thread_create(&t[i], event_thread, &arg), 0);
  for (i = 0; i < THREADS; i++)
    assert_int_equal(uv_thread_join(&t[i]), 0);
  wflo_test_assert_thread_checks();

  assert_int_equal(wflo_test_events_count("config_invalid"),
                   (size_t)THREADS * (size_t)arg.n);
  assert_int_equal(wflo_test_events_count("other"), 0);
  for (i = 0; i < (size_t)THREADS * (size_t)arg.n; i += 97) {
    ev = wflo_test_events_get("config_invalid", i);
    assert_non_null(ev);
    assert_string_equal(json_string_value(json_object_get(ev->fields, "what")),
                        "thr");
    /* The invalid byte became U+FFFD in the event, never dropped the key. */
    assert_string_equal(
        json_string_value(json_object_get(ev->fields, "reason")),
        "reason \xef\xbf\xbd");
  }
  assert_null(
      wflo_test_events_get("config_invalid", (size_t)THREADS * (size_t)arg.n));
  wflo_test_events_clear();
  assert_int_equal(wflo_test_events_count(NULL), 0);
}

typedef struct alloc_thread_arg {
  int n;
  unsigned seed;
} alloc_thread_arg_t;

static void alloc_thread(void *p) {
  alloc_thread_arg_t *a = p;
  void *blocks[16] = {0};
  size_t sizes[16] = {0};
  int i;
  wflo_rng_seed(a->seed);
  for (i = 0; i < a->n; i++) {
    unsigned k = (unsigned)(wflo__rng_u64() % 16);
    size_t sz = (size_t)(wflo__rng_u64() % 300);
    if (blocks[k] == NULL) {
      blocks[k] = wflo__malloc(sz);
      sizes[k] = sz == 0 ? 1 : sz;
      WFLO_TEST_THREAD_CHECK(blocks[k] != NULL);
    } else if (i % 3 == 0) {
      void *q = wflo__realloc(blocks[k], sizes[k], sz);
      WFLO_TEST_THREAD_CHECK(q != NULL);
      if (q != NULL) {
        blocks[k] = q;
        sizes[k] = sz == 0 ? 1 : sz;
      }
    } else {
      wflo__free(blocks[k], sizes[k]);
      blocks[k] = NULL;
    }
  }
  for (i = 0; i < 16; i++)
    wflo__free(blocks[i], sizes[i]);
}

static void test_allocator_threads(void **state) {
  enum { THREADS = 4 };
  uv_thread_t t[THREADS];
  alloc_thread_arg_t args[THREADS];
  int i;
  (void)state;

  for (i = 0; i < THREADS; i++) {
    args[i].n = wflo_test_scale(20000);
    args[i].seed = 100u + (unsigned)i;
    assert_int_equal(uv_thread_create(&t[i], alloc_thread, &args[i]), 0);
  }
  for (i = 0; i < THREADS; i++)
    assert_int_equal(uv_thread_join(&t[i]), 0);
  wflo_test_assert_thread_checks();
  assert_int_equal(wflo__mem_outstanding(), 0);
  wflo_test_assert_no_leaks();
}

/* --- config helpers ------------------------------------------------------ */

typedef enum demo_mode { DEMO_FAST, DEMO_SLOW } demo_mode_t;

typedef struct demo_cfg {
  int count;
  uint32_t limit;
  double ratio;
  double timeout;
  bool flag;
  int mode; /* demo_mode_t */
  const char *name;
  const int *errors;
  size_t errors_count;
  void *owned_name;
  void *owned_errors;
} demo_cfg_t;

static const char *const demo_modes[] = {"fast", "slow", NULL};

static const wflo__field_t demo_fields[] = {
    {"count", WFLO__F_INT, offsetof(demo_cfg_t, count), 0, 0, NULL},
    {"limit", WFLO__F_UINT32, offsetof(demo_cfg_t, limit), 0, 0, NULL},
    {"ratio", WFLO__F_DOUBLE, offsetof(demo_cfg_t, ratio), 0, 0, NULL},
    {"timeout", WFLO__F_DURATION, offsetof(demo_cfg_t, timeout), 0, 0, NULL},
    {"flag", WFLO__F_BOOL, offsetof(demo_cfg_t, flag), 0, 0, NULL},
    {"mode", WFLO__F_ENUM, offsetof(demo_cfg_t, mode), 0, 0, demo_modes},
    {"name", WFLO__F_STRING, offsetof(demo_cfg_t, name), 0,
     offsetof(demo_cfg_t, owned_name), NULL},
    {"errors", WFLO__F_ERRLIST, offsetof(demo_cfg_t, errors),
     offsetof(demo_cfg_t, errors_count), offsetof(demo_cfg_t, owned_errors),
     NULL},
};
#define N_DEMO_FIELDS (sizeof(demo_fields) / sizeof(demo_fields[0]))

static void demo_init(demo_cfg_t *c) {
  memset(c, 0, sizeof(*c));
  c->count = 3;
  c->limit = 10;
  c->ratio = 0.5;
  c->timeout = 30.0;
  c->flag = false;
  c->mode = DEMO_FAST;
}

static void demo_clear(demo_cfg_t *c) {
  wflo__config_free_owned(demo_fields, N_DEMO_FIELDS, c);
}

/* Loads text into a fresh demo config; returns the code, errbuf filled. */
static int demo_load(const char *text, demo_cfg_t *c, char *errbuf,
                     size_t len) {
  json_error_t jerr;
  json_t *j = json_loads(text, 0, &jerr);
  int rc;
  if (j == NULL)
    fail_msg("bad test JSON %s: %s", text, jerr.text);
  rc =
      wflo__config_load(j, "demo", demo_fields, N_DEMO_FIELDS, c, errbuf, len);
  json_decref(j);
  return rc;
}

/* Expects text to fail with code, errbuf starting with prefix; frees what
 * the partial load left behind. */
static void expect_load(const char *text, int code, const char *prefix) {
  demo_cfg_t c;
  char errbuf[128] = "";
  size_t events = wflo_test_events_count("config_invalid");
  int rc;
  demo_init(&c);
  rc = demo_load(text, &c, errbuf, sizeof(errbuf));
  if (rc != code)
    fail_msg("%s: got %s, expected %s (errbuf: %s)", text, wflo_err_name(rc),
             wflo_err_name(code), errbuf);
  if (prefix != NULL && strncmp(errbuf, prefix, strlen(prefix)) != 0)
    fail_msg("%s: errbuf \"%s\" does not start with \"%s\"", text, errbuf,
             prefix);
  /* An invalid value is reported by exactly one config_invalid event. */
  if (code == WFLO_E_INVAL &&
      wflo_test_events_count("config_invalid") != events + 1)
    fail_msg("%s: %zu config_invalid events, expected 1", text,
             wflo_test_events_count("config_invalid") - events);
  demo_clear(&c);
}

static void test_config_load_ok(void **state) {
  demo_cfg_t c;
  char errbuf[128] = "";
  (void)state;

  demo_init(&c);
  assert_int_equal(
      demo_load("{\"count\": 7, \"limit\": 4000000000, \"ratio\": 0.25,"
                " \"timeout\": 1.5, \"flag\": true, \"mode\": \"slow\","
                " \"name\": \"svc\", \"errors\": [-30005, \"WFLO_E_TIMEOUT\","
                " \"ETIMEDOUT\", \"UV_ETIMEDOUT\", \"WFLO_E_BREAKER_OPEN\"]}",
                &c, errbuf, sizeof(errbuf)),
      0);
  assert_int_equal(c.count, 7);
  assert_int_equal(c.limit, 4000000000u);
  assert_true(c.ratio == 0.25);
  assert_true(c.timeout == 1.5);
  assert_true(c.flag);
  assert_int_equal(c.mode, DEMO_SLOW);
  assert_string_equal(c.name, "svc");
  assert_ptr_equal(c.name, c.owned_name);
  assert_int_equal(c.errors_count, 5);
  assert_int_equal(c.errors[0], WFLO_E_TIMEOUT);
  assert_int_equal(c.errors[1], WFLO_E_TIMEOUT);
  assert_int_equal(c.errors[2], UV_ETIMEDOUT);
  assert_int_equal(c.errors[3], UV_ETIMEDOUT);
  assert_int_equal(c.errors[4], WFLO_E_BREAKER_OPEN);
  assert_true(wflo_test_alloc_live() > 0);
  demo_clear(&c);
  assert_null(c.name);
  assert_null(c.errors);
  assert_int_equal(c.errors_count, 0);
  assert_int_equal(wflo_test_alloc_live(), 0);

  /* Parsing starts from what the struct holds: absent keys keep it. */
  demo_init(&c);
  assert_int_equal(demo_load("{\"flag\": true}", &c, NULL, 0), 0);
  assert_int_equal(c.count, 3);
  assert_true(c.timeout == 30.0);
  assert_true(c.flag);
  assert_int_equal(demo_load("{}", &c, NULL, 0), 0);

  /* A JSON integer is accepted wherever a double is expected. */
  assert_int_equal(demo_load("{\"ratio\": 2, \"timeout\": 3}", &c, NULL, 0),
                   0);
  assert_true(c.ratio == 2.0);
  assert_true(c.timeout == 3.0);
  /* Limits are inclusive. */
  assert_int_equal(
      demo_load("{\"timeout\": 1000000000, \"limit\": 4294967295}", &c, NULL,
                0),
      0);
  assert_true(c.timeout == WFLO_DURATION_MAX);
  assert_int_equal(c.limit, UINT32_MAX);
  /* An empty error list is a list. */
  assert_int_equal(demo_load("{\"errors\": []}", &c, NULL, 0), 0);
  assert_int_equal(c.errors_count, 0);
  demo_clear(&c);
  assert_int_equal(wflo_test_alloc_live(), 0);
}

static void test_config_load_errors(void **state) {
  json_t *arr;
  demo_cfg_t c;
  char errbuf[64];
  (void)state;

  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_ERROR);
  /* Unknown keys and wrong JSON types: WFLO_E_PARSE, key named. */
  expect_load("{\"bogus\": 1}", WFLO_E_PARSE, "demo.bogus: ");
  expect_load("{\"count\": \"7\"}", WFLO_E_PARSE, "demo.count: ");
  expect_load("{\"count\": 1.5}", WFLO_E_PARSE, "demo.count: ");
  expect_load("{\"limit\": true}", WFLO_E_PARSE, "demo.limit: ");
  expect_load("{\"ratio\": \"x\"}", WFLO_E_PARSE, "demo.ratio: ");
  expect_load("{\"timeout\": null}", WFLO_E_PARSE, "demo.timeout: ");
  expect_load("{\"flag\": 1}", WFLO_E_PARSE, "demo.flag: ");
  expect_load("{\"mode\": 1}", WFLO_E_PARSE, "demo.mode: ");
  expect_load("{\"name\": 5}", WFLO_E_PARSE, "demo.name: ");
  expect_load("{\"errors\": \"ETIMEDOUT\"}", WFLO_E_PARSE, "demo.errors: ");
  expect_load("{\"errors\": [true]}", WFLO_E_PARSE, "demo.errors: ");
  expect_load("{\"errors\": [[-1]]}", WFLO_E_PARSE, "demo.errors: ");

  /* Well-formed but invalid values: WFLO_E_INVAL. */
  expect_load("{\"mode\": \"medium\"}", WFLO_E_INVAL, "demo.mode: ");
  expect_load("{\"mode\": \"SLOW\"}", WFLO_E_INVAL, "demo.mode: ");
  expect_load("{\"count\": 1099511627776}", WFLO_E_INVAL, "demo.count: ");
  expect_load("{\"limit\": -1}", WFLO_E_INVAL, "demo.limit: ");
  expect_load("{\"limit\": 4294967296}", WFLO_E_INVAL, "demo.limit: ");
  expect_load("{\"timeout\": -1}", WFLO_E_INVAL, "demo.timeout: ");
  expect_load("{\"timeout\": 1000000001}", WFLO_E_INVAL, "demo.timeout: ");
  expect_load("{\"errors\": [\"E_NOPE\"]}", WFLO_E_INVAL, "demo.errors: ");
  expect_load("{\"errors\": [5]}", WFLO_E_INVAL, "demo.errors: ");
  expect_load("{\"errors\": [0]}", WFLO_E_INVAL, "demo.errors: ");
  /* A failure after a loaded string still frees it (the test's teardown
   * checks for leaks). */
  expect_load("{\"name\": \"x\", \"errors\": [\"E_NOPE\"]}", WFLO_E_INVAL,
              NULL);

  /* Not an object, or no input at all. */
  arr = json_array();
  demo_init(&c);
  errbuf[0] = '\0';
  assert_int_equal(wflo__config_load(arr, "demo", demo_fields, N_DEMO_FIELDS,
                                     &c, errbuf, sizeof(errbuf)),
                   WFLO_E_PARSE);
  assert_true(strncmp(errbuf, "demo", 4) == 0);
  json_decref(arr);
  assert_int_equal(
      wflo__config_load(NULL, "demo", demo_fields, N_DEMO_FIELDS, &c, NULL, 0),
      WFLO_E_INVAL);
  /* errbuf may be NULL and is always NUL-terminated when short. */
  assert_int_equal(demo_load("{\"bogus\": 1}", &c, NULL, 0), WFLO_E_PARSE);
  memset(errbuf, 'x', sizeof(errbuf));
  assert_int_equal(demo_load("{\"bogus\": 1}", &c, errbuf, 6), WFLO_E_PARSE);
  assert_int_equal(strlen(errbuf), 5);
  demo_clear(&c);
}

static void test_config_owned(void **state) {
  static const int mine[] = {WFLO_E_TIMEOUT};
  demo_cfg_t c;
  (void)state;

  /* Loading twice replaces (and frees) the first copy. */
  demo_init(&c);
  assert_int_equal(
      demo_load("{\"name\": \"first\", \"errors\": [-1]}", &c, NULL, 0), 0);
  assert_int_equal(wflo_test_alloc_live(), 2);
  assert_int_equal(
      demo_load("{\"name\": \"second\", \"errors\": [-2, -3]}", &c, NULL, 0),
      0);
  assert_int_equal(wflo_test_alloc_live(), 2);
  assert_string_equal(c.name, "second");
  assert_int_equal(c.errors_count, 2);
  demo_clear(&c);
  assert_int_equal(wflo_test_alloc_live(), 0);
  demo_clear(&c); /* twice is harmless */

  /* A caller who replaced a loaded field keeps theirs; the copy is freed. */
  assert_int_equal(
      demo_load("{\"name\": \"lib\", \"errors\": [-1, -2]}", &c, NULL, 0), 0);
  c.name = "mine";
  c.errors = mine;
  c.errors_count = 1;
  demo_clear(&c);
  assert_string_equal(c.name, "mine");
  assert_ptr_equal(c.errors, mine);
  assert_int_equal(c.errors_count, 1);
  assert_int_equal(wflo_test_alloc_live(), 0);

  /* The list is freed with its own size even if the count was changed. */
  demo_init(&c);
  assert_int_equal(demo_load("{\"errors\": [-1, -2, -3]}", &c, NULL, 0), 0);
  c.errors_count = 1;
  demo_clear(&c);
  assert_int_equal(wflo_test_alloc_live(), 0);
  assert_false(wflo_test_alloc_mismatch());
}

static int config_scenario(void *ud) {
  demo_cfg_t c;
  int rc;
  demo_init(&c);
  rc = wflo__config_load(ud, "demo", demo_fields, N_DEMO_FIELDS, &c, NULL, 0);
  if (rc == 0 &&
      (c.name == NULL || strcmp(c.name, "svc") != 0 || c.errors_count != 2))
    rc = WFLO_E_STATE; /* a success must be complete */
  demo_clear(&c);
  return rc;
}

static int invalid_event_scenario(void *ud) {
  (void)ud;
  /* Invalid UTF-8 in a name costs an allocation; an OOM there drops the
   * event but never changes the verdict. */
  return wflo__check_duration("d\xff", "timeout", NAN, NULL, 0);
}

static void test_config_oom(void **state) {
  json_t *j = json_loads(
      "{\"name\": \"svc\", \"errors\": [-1, \"ETIMEDOUT\"]}", 0, NULL);
  (void)state;
  assert_non_null(j);
  wflo_test_oom_loop(config_scenario, j, 0);
  wflo_test_oom_loop_ex(config_scenario, j, 0, WFLO_TEST_FAIL_AFTER);
  json_decref(j);

  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_ERROR);
  wflo_test_oom_loop(invalid_event_scenario, NULL, WFLO_E_INVAL);
  /* One run had its event dropped by the failed allocation, one did not. */
  assert_int_equal(wflo_test_events_count("config_invalid"), 1);
}

static void test_check_duration(void **state) {
  static const double bad[] = {NAN,   INFINITY,  -INFINITY, -1.0,
                               -1e-9, 1e9 + 1.0, 1e300};
  static const double good[] = {0.0, -0.0, 1e-9, 2.5, 1e9};
  char errbuf[128];
  size_t i;
  const wflo_test_event_t *ev;
  (void)state;

  wflo_test_events_install();
  wflo_set_log_level(WFLO_LOG_ERROR);
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    errbuf[0] = '\0';
    assert_int_equal(wflo__check_duration("demo", "timeout", bad[i], errbuf,
                                          sizeof(errbuf)),
                     WFLO_E_INVAL);
    if (strncmp(errbuf, "demo.timeout: ", 14) != 0 || strlen(errbuf) <= 14)
      fail_msg("errbuf for %g: \"%s\"", bad[i], errbuf);
    ev = wflo_test_events_get("config_invalid", i);
    assert_non_null(ev);
    assert_int_equal(ev->level, WFLO_LOG_ERROR);
    assert_string_equal(json_string_value(json_object_get(ev->fields, "what")),
                        "demo");
    assert_string_equal(
        json_string_value(json_object_get(ev->fields, "field")), "timeout");
    /* The event's reason is the errbuf's. */
    assert_string_equal(
        json_string_value(json_object_get(ev->fields, "reason")), errbuf + 14);
  }
  assert_int_equal(wflo_test_events_count(NULL), sizeof(bad) / sizeof(bad[0]));
  /* NULL errbuf is fine. */
  assert_int_equal(wflo__check_duration("demo", "timeout", NAN, NULL, 0),
                   WFLO_E_INVAL);

  wflo_test_events_clear();
  for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
    assert_int_equal(
        wflo__check_duration("demo", "timeout", good[i], errbuf, 1), 0);
  assert_int_equal(wflo_test_events_count(NULL), 0);
  assert_true(wflo__duration_ok(WFLO_DURATION_MAX));
  assert_false(wflo__duration_ok(NAN));
}

static void test_check_err_list(void **state) {
  static const int ok[] = {-1, WFLO_E_TIMEOUT, UV_ECONNRESET};
  static const int zero[] = {-1, 0};
  static const int pos[] = {5};
  char errbuf[128];
  (void)state;

  wflo_set_log_level(WFLO_LOG_OFF);
  assert_int_equal(wflo__check_err_list("demo", "errors", ok, 3, NULL, 0), 0);
  assert_int_equal(wflo__check_err_list("demo", "errors", NULL, 0, NULL, 0),
                   0);
  assert_int_equal(
      wflo__check_err_list("demo", "errors", NULL, 2, errbuf, sizeof(errbuf)),
      WFLO_E_INVAL);
  assert_true(strncmp(errbuf, "demo.errors: ", 13) == 0);
  assert_int_equal(wflo__check_err_list("demo", "errors", zero, 2, NULL, 0),
                   WFLO_E_INVAL);
  assert_int_equal(wflo__check_err_list("demo", "errors", pos, 1, NULL, 0),
                   WFLO_E_INVAL);
}

/* jansson's own memory, counted to check that the helpers leak nothing. */
static atomic_long json_live;
static void *json_count_malloc(size_t n) {
  void *p = malloc(n);
  if (p != NULL)
    atomic_fetch_add(&json_live, 1);
  return p;
}
static void json_count_free(void *p) {
  if (p != NULL)
    atomic_fetch_sub(&json_live, 1);
  free(p);
}

static void test_json_helpers(void **state) {
  static const struct {
    const char *in, *out;
  } utf8[] = {
      {"plain", "plain"},
      {"", ""},
      {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
       "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
      {"\xc3\x28", "\xef\xbf\xbd("},            /* bad continuation */
      {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"}, /* overlong */
      {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
      {"\xf4\x90\x80\x80x",
       "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdx"},
      {"end\xe2\x82", "end\xef\xbf\xbd\xef\xbf\xbd"}, /* truncated */
      {"\xff", "\xef\xbf\xbd"},
  };
  json_t *j, *obj;
  size_t i;
  (void)state;

  json_set_alloc_funcs(json_count_malloc, json_count_free);

  for (i = 0; i < sizeof(utf8) / sizeof(utf8[0]); i++) {
    j = wflo__json_string(utf8[i].in);
    assert_non_null(j);
    assert_string_equal(json_string_value(j), utf8[i].out);
    json_decref(j);
  }
  j = wflo__json_string(NULL);
  assert_true(json_is_null(j));
  json_decref(j);

  j = wflo__json_real(NAN);
  assert_true(json_is_null(j));
  json_decref(j);
  j = wflo__json_real(-INFINITY);
  assert_true(json_is_null(j));
  json_decref(j);
  j = wflo__json_real(1.25);
  assert_true(json_is_real(j) && json_real_value(j) == 1.25);
  json_decref(j);

  j = wflo__json_err(WFLO_E_TIMEOUT);
  assert_string_equal(json_string_value(j), "WFLO_E_TIMEOUT");
  json_decref(j);
  j = wflo__json_err(UV_ETIMEDOUT);
  assert_string_equal(json_string_value(j), "ETIMEDOUT");
  json_decref(j);

  obj = wflo__json_obj("a", json_integer(1), "b", json_string("x"), NULL);
  assert_non_null(obj);
  assert_int_equal(json_object_size(obj), 2);
  assert_int_equal(wflo__json_set(obj, "c", json_true()), 0);
  assert_int_equal(wflo__json_set(obj, "d", NULL), WFLO_E_NOMEM);
  assert_int_equal(json_object_size(obj), 3);
  json_decref(obj);
  /* One NULL value (an OOM while building it) gives NULL and frees the
   * rest, the values after the NULL included. */
  obj = wflo__json_obj("a", json_integer(1), "b", (json_t *)NULL, "c",
                       json_string("y"), NULL);
  assert_null(obj);

  json_set_alloc_funcs(malloc, free);
  assert_int_equal(atomic_load(&json_live), 0);
}

/* --- main ---------------------------------------------------------------- */

static int common_teardown(void **state) {
  /* Whatever a test changed, the next starts from the defaults. */
  wflo_test_events_uninstall();
  if (wflo__clock_overridden())
    wflo_clock_set(NULL, NULL, NULL);
  wflo_set_log_level(WFLO_LOG_WARN);
  return wflo_test_teardown(state);
}

#define T(fn)                                                                 \
  cmocka_unit_test_setup_teardown(fn, wflo_test_setup, common_teardown)

int main(int argc, char **argv) {
  static char self[4096];
  const struct CMUnitTest tests[] = {
      T(test_version),
      T(test_error_table),
      T(test_error_uv_codes),
      T(test_error_unknown_static),
      T(test_error_verdicts),
      T(test_allocator_set_restore),
      T(test_allocator_sizes),
      T(test_allocator_threads),
      T(test_harness_counting_allocator),
      T(test_harness_scale),
      T(test_harness_loop_and_hook),
      T(test_clock_override),
      T(test_clock_real),
      T(test_rng_reproducible),
      T(test_rng_uniformity),
      T(test_rng_per_thread),
      T(test_log_level_names),
      T(test_log_level_filtering),
      T(test_log_level_survives_handler),
      T(test_log_env_in_process),
      T(test_log_env_subprocess),
      T(test_default_handler_json_lines),
      T(test_events_from_threads),
      T(test_config_load_ok),
      T(test_config_load_errors),
      T(test_config_owned),
      T(test_config_oom),
      T(test_check_duration),
      T(test_check_err_list),
      T(test_json_helpers),
  };
  ssize_t n;

  /* Child mode for test_log_env_subprocess: report the level WFLO_LOG gave. */
  if (argc == 2 && strcmp(argv[1], "--print-log-level") == 0) {
    printf("%s\n", wflo_log_level_name(wflo_get_log_level()));
    return 0;
  }
  /* readlink, not argv[0]: under valgrind /proc/self/exe names this program
   * rather than the tool. */
  n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    self[n] = '\0';
    self_path = self;
  } else if (argc > 0 && strchr(argv[0], '/') != NULL) {
    self_path = argv[0];
  }
  return cmocka_run_group_tests(tests, wflo_test_group_setup,
                                wflo_test_group_teardown);
}
