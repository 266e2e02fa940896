/* Test harness shared by every tests/test_<module>.c (cmocka 1.1.5).
 *
 * cmocka's assert_* may only run on a test's main thread. Everything here that
 * other threads touch (the counting allocator, the virtual clock, the event
 * recorder, WFLO_TEST_THREAD_CHECK) records into atomics or under a mutex;
 * the main thread asserts afterwards.
 *
 * Typical use:
 *
 *   static void test_x(void **state) {
 *     (void)state;
 *     ...
 *   }
 *   int main(void) {
 *     const struct CMUnitTest tests[] = {
 *         cmocka_unit_test_setup_teardown(test_x, wflo_test_setup,
 *                                         wflo_test_teardown),
 *     };
 *     return cmocka_run_group_tests(tests, wflo_test_group_setup,
 *                                   wflo_test_group_teardown);
 *   }
 *
 * Only the public API plus the internal symbols DESIGN.md names is used, so
 * the harness keeps working as modules change.
 */
#ifndef WFLO_TEST_HARNESS_H
#define WFLO_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <wflo.h>

/* --- counting allocator -----------------------------------------------------
 * Installed with wflo_set_allocator(). Keeps atomic counts of live
 * allocations and bytes, stores each block's size in a header in front of it
 * and flags any release()/resize() that names a different size (or a pointer
 * it never handed out). */

/* Installs the counting allocator (asserts that wflo_set_allocator accepted
 * it: it refuses while anything of libwflo is alive) and resets its counters
 * and failure mode. Main thread. */
void wflo_test_setup_alloc(void);

/* Asserts zero live allocations, zero live bytes and no size mismatch. Main
 * thread. */
void wflo_test_assert_no_leaks(void);

/* Restores malloc with wflo_set_allocator(NULL); asserts that it succeeded
 * (WFLO_E_STATE means something of libwflo is still alive: a leak). */
void wflo_test_restore_alloc(void);

/* Metric series outlive the objects that counted into them until
 * wflo_metrics_reset(); the harness frees them (wflo_metrics_reset) before
 * it counts, in these two and in every leak check, so only memory of live
 * objects counts. Call them with no other thread using libwflo. */
size_t wflo_test_alloc_live(void);       /* live allocations */
size_t wflo_test_alloc_live_bytes(void); /* their requested bytes */
/* Allocation attempts (alloc + resize) since the counting allocator was
 * installed or the failure mode last set. */
uint64_t wflo_test_alloc_attempts(void);
/* Allocations failed on purpose since the failure mode was last set. */
uint64_t wflo_test_alloc_failed(void);
/* true when a release/resize named a wrong size or an unknown pointer. */
bool wflo_test_alloc_mismatch(void);
/* Forgets a recorded mismatch (for tests of the harness itself). */
void wflo_test_alloc_clear_mismatch(void);

typedef enum wflo_test_fail_mode {
  WFLO_TEST_FAIL_ONCE, /* only the Nth attempt fails; later ones succeed */
  WFLO_TEST_FAIL_AFTER /* the Nth and every later attempt fail */
} wflo_test_fail_mode_t;

/* Makes the nth allocation attempt (alloc or resize), counted from this call
 * and starting at 1, return NULL. n == 0 turns failure injection off. Any
 * thread may allocate; the count is global. */
void wflo_test_alloc_fail_at(uint64_t n, wflo_test_fail_mode_t mode);
void wflo_test_alloc_fail_off(void);

/* --- cmocka fixtures ----------------------------------------------------- */

/* Group fixtures: setup installs the counting allocator, teardown checks that
 * nothing leaked, uninstalls the virtual clock and the event recorder if a
 * test left them installed, and restores malloc. Return non-zero on failure
 * (cmocka then reports the group as failed). */
int wflo_test_group_setup(void **state);
int wflo_test_group_teardown(void **state);

/* Per-test fixtures: setup resets the failure mode, teardown asserts that the
 * test left no live allocation (so a leak names the test that made it). */
int wflo_test_setup(void **state);
int wflo_test_teardown(void **state);

/* --- out-of-memory driver ---------------------------------------------------
 * For N = 1, 2, 3, ...: fails the Nth allocation attempt, runs scenario(ud),
 * asserts that it returned expect_ok or WFLO_E_NOMEM and that it left no live
 * allocation (the scenario must clean up whatever it created, also after a
 * failure). Stops at the first N at which no allocation was failed: the
 * scenario then ran with all its allocations and must have returned
 * expect_ok. Asserts that at least one allocation was failed along the way.
 * expect_ok is what the scenario returns when nothing fails (usually 0).
 * The counting allocator must be installed. Main thread. */
void wflo_test_oom_loop(int (*scenario)(void *ud), void *ud, int expect_ok);

/* Same with a failure mode: WFLO_TEST_FAIL_AFTER also fails every allocation
 * after the Nth one (cleanup paths that allocate must cope). */
void wflo_test_oom_loop_ex(int (*scenario)(void *ud), void *ud, int expect_ok,
                           wflo_test_fail_mode_t mode);

/* --- virtual clock ----------------------------------------------------------
 * Installed with wflo_clock_set(): now is an atomic counter, and every sleep
 * libwflo takes advances it by the requested time at once (and is counted). */
void wflo_test_vclock_install(uint64_t start_ns);
void wflo_test_vclock_uninstall(void); /* back to the real clock */
void wflo_test_vclock_advance(uint64_t ns);
uint64_t wflo_test_vclock_now(void);
uint64_t wflo_test_vclock_sleeps(void);   /* sleeps taken since install */
uint64_t wflo_test_vclock_slept_ns(void); /* their total */
/* Optional hook run inside every virtual sleep, after the clock advanced
 * (e.g. to flip a flag mid-retry). NULL removes it. */
void wflo_test_vclock_on_sleep(void (*hook)(uint64_t ns, void *ud), void *ud);

/* --- event recorder ---------------------------------------------------------
 * Installed with wflo_set_event_handler(); stores a copy of every event that
 * reaches the handler (events below the log level never do: set the level
 * with wflo_set_log_level as the test needs). Thread-safe. Recorded events
 * use jansson's and libc's memory, never libwflo's allocator. */
typedef struct wflo_test_event {
  char *name;
  wflo_log_level_t level;
  json_t *fields; /* a deep copy; owned by the recorder */
} wflo_test_event_t;

void wflo_test_events_install(void);
void wflo_test_events_uninstall(void); /* default handler back; clears */
void wflo_test_events_clear(void);
/* Number of recorded events called name (NULL: all events). */
size_t wflo_test_events_count(const char *name);
/* The i-th (from 0) recorded event called name (NULL: any), or NULL. The
 * pointer stays valid until the next clear/uninstall. */
const wflo_test_event_t *wflo_test_events_get(const char *name, size_t i);
/* The fields (borrowed) and level of the i-th recorded event named `name`;
 * NULL and -1 when there is none. */
const json_t *wflo_test_event_fields(const char *name, size_t i);
int wflo_test_event_level(const char *name, size_t i);
/* Clears the recorder and sets the event level. */
void wflo_test_events_at(wflo_log_level_t level);

/* --- threads ----------------------------------------------------------------
 * WFLO_TEST_THREAD_CHECK(cond) on any thread records a failed condition (the
 * first one's text and line are kept); wflo_test_assert_thread_checks() on
 * the main thread fails the test if any was recorded, and resets. */
void wflo_test_thread_check_failed(const char *expr, const char *file,
                                   int line);
void wflo_test_assert_thread_checks(void);
#define WFLO_TEST_THREAD_CHECK(cond)                                          \
  do {                                                                        \
    if (!(cond))                                                              \
      wflo_test_thread_check_failed(#cond, __FILE__, __LINE__);               \
  } while (0)

/* --- loops ------------------------------------------------------------------
 * Runs loop until it has nothing left to do, then asserts that
 * uv_loop_close() returns 0, i.e. that no handle is left open (libwflo must
 * hold none once nothing is pending). On failure it lists the open handles,
 * closes them so the process stays clean for valgrind, and fails the
 * test. */
void wflo_test_loop_close(uv_loop_t *loop);

/* --- misc ---------------------------------------------------------------- */

/* n scaled by the environment variable WFLO_STRESS_SCALE (a float, default
 * 1.0), rounded, never below 1. */
int wflo_test_scale(int n);

#endif /* WFLO_TEST_HARNESS_H */
