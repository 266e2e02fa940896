/* libwflo common definitions: export macros, error codes, allocator, clock,
 * random numbers and the event sink.
 *
 * Include <wflo.h>, not this file. Anything not declared in include/wflo.h or
 * the module headers under include/wflo/ is not API.
 *
 * General contract (applies to every module unless a doc comment says
 * otherwise):
 * - Calls that can fail return int: 0 (or a positive value passed through
 *   from a user operation) on success, a negative code on failure: one of the
 *   WFLO_E_* codes below, a libuv UV_E* code, or whatever negative code a
 *   user operation returned, passed through untouched.
 * - Predicates return bool; getters return the value.
 * - Every `char *errbuf, size_t len` pair may be NULL/0; when given, it
 *   receives a NUL-terminated message naming the offending field on failure.
 * - Durations are seconds as double; money is USD as double.
 * - Async contract: an async start call that returns non-zero never runs its
 *   callback; one that returns 0 runs it exactly once, on the loop's thread,
 *   never from inside the starting call.
 *
 * <uv.h> does not compile under strict -std=c11 unless POSIX is requested:
 * build with -std=gnu11, or -std=c11 -D_POSIX_C_SOURCE=200809L.
 */
#ifndef WFLO_COMMON_H
#define WFLO_COMMON_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- export control ------------------------------------------------------ */

#if defined(BUILDING_WFLO_SHARED) && defined(USING_WFLO_SHARED)
#error "Define either BUILDING_WFLO_SHARED or USING_WFLO_SHARED, not both."
#endif

#if defined(_WIN32)
#if defined(BUILDING_WFLO_SHARED)
#define WFLO_EXTERN __declspec(dllexport)
#elif defined(USING_WFLO_SHARED)
#define WFLO_EXTERN __declspec(dllimport)
#else
#define WFLO_EXTERN /* static library */
#endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#define WFLO_EXTERN __attribute__((visibility("default")))
#else
#define WFLO_EXTERN
#endif

#if defined(__GNUC__) || defined(__clang__)
#define WFLO_NODISCARD __attribute__((warn_unused_result))
#else
#define WFLO_NODISCARD
#endif

/* --- opaque handles (one distinct struct type each) ------------------------ */

typedef struct wflo_breaker_s wflo_breaker_t;
typedef struct wflo_lock_s wflo_lock_t;
typedef struct wflo_context_s wflo_context_t;
typedef struct wflo_workflow_s wflo_workflow_t;
typedef struct wflo_retry_s wflo_retry_t;
typedef struct wflo_call_s wflo_call_t;

/* --- error codes ----------------------------------------------------------- */

/* The one table of library error codes. Codes start at -30000 and count down,
 * clear of -errno and libuv's codes. Rows are only ever appended. */
#define WFLO_ERRNO_MAP(XX)                                                    \
  XX(E_INVAL, "invalid argument")                                             \
  XX(E_NOMEM, "out of memory")                                                \
  XX(E_BREAKER_OPEN, "circuit breaker is open")                               \
  XX(E_LOCK_TIMEOUT, "timed out waiting for a resource lock")                 \
  XX(E_QUEUE_FULL, "resource lock waiter queue is full")                      \
  XX(E_TIMEOUT, "operation timed out")                                        \
  XX(E_BUDGET_EXCEEDED, "budget exceeded")                                    \
  XX(E_CANCELED, "operation canceled")                                        \
  XX(E_RATE_LIMITED, "rate limited")                                          \
  XX(E_STATE, "call not valid in the current state")                          \
  XX(E_NOT_FOUND, "not found")                                                \
  XX(E_PARSE, "malformed input")

#define WFLO_ERRNO_BASE (-30000)

enum wflo__errno_index {
#define WFLO__ERRIDX_GEN(name, msg) WFLO__IDX_##name,
  WFLO_ERRNO_MAP(WFLO__ERRIDX_GEN)
#undef WFLO__ERRIDX_GEN
      WFLO__IDX_COUNT
};

typedef enum wflo_errno {
#define WFLO__ERRNO_GEN(name, msg)                                            \
  WFLO_##name = WFLO_ERRNO_BASE - WFLO__IDX_##name,
  WFLO_ERRNO_MAP(WFLO__ERRNO_GEN)
#undef WFLO__ERRNO_GEN
  /* One below the last code; never returned. */
  WFLO_ERRNO_END = WFLO_ERRNO_BASE - WFLO__IDX_COUNT
} wflo_errno_t;

/* Returns the library version as "MAJOR.MINOR.PATCH" (static storage).
 * Compare with WFLO_VERSION_STRING to detect a header/library mismatch.
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN const char *wflo_version(void);

/* Returns a message for err: a WFLO_E_* code's own message, libuv's message
 * for a code in UV_ERRNO_MAP, "success" for 0 or positive values, and
 * "unknown error" otherwise. Ownership: every string is static; never free
 * it. Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN const char *wflo_strerror(int err);

/* Returns the symbolic name of err: "WFLO_E_TIMEOUT" for library codes,
 * libuv's own name ("ETIMEDOUT") for codes in UV_ERRNO_MAP, "OK" for 0 or
 * positive values, "UNKNOWN" otherwise. Ownership: static. Thread-safety:
 * any thread. Since: 0.1. */
WFLO_EXTERN const char *wflo_err_name(int err);

/* --- memory ---------------------------------------------------------------- */

/* Allocation hooks for every allocation libwflo makes itself (libuv and
 * jansson keep their own allocators). All three functions are required.
 * release() receives the size that was requested for p; resize() receives the
 * old and the new size. Any function may be called from any thread. */
typedef struct wflo_allocator {
  void *(*alloc)(size_t size, void *ud);
  void *(*resize)(void *p, size_t old_size, size_t new_size, void *ud);
  void (*release)(void *p, size_t size, void *ud);
  void *ud;
} wflo_allocator_t;

/* Installs allocation hooks; the struct is copied. NULL restores malloc.
 * Returns: 0; WFLO_E_INVAL when a function pointer is missing; WFLO_E_STATE
 * while anything of libwflo is alive (an object, a reservation, a pending
 * async operation, a loaded pricing table, per-loop state): memory must be
 * freed by the allocator that gave it. Thread-safety: call it while no other
 * thread uses libwflo. Since: 0.1. */
WFLO_EXTERN int wflo_set_allocator(const wflo_allocator_t *a);

/* --- time ------------------------------------------------------------------ */

/* Largest valid duration in any config or call, in seconds. */
#define WFLO_DURATION_MAX 1e9

/* Overrides libwflo's monotonic clock, for tests: now_ns() returns the time in
 * nanoseconds and sleep_ns() is what sync retries call to wait (a virtual
 * clock advances itself there). The override also replaces the coarse clock.
 * Blocking waits on a condition variable and libuv timers still use real
 * time. Passing NULL for both restores the real clock.
 * Returns: 0, or WFLO_E_INVAL when exactly one of now_ns and sleep_ns is NULL.
 * Thread-safety: call it before the threads that use libwflo start, or while
 * they are quiet. Since: 0.1. */
WFLO_EXTERN int wflo_clock_set(uint64_t (*now_ns)(void *ud),
                               void (*sleep_ns)(uint64_t ns, void *ud),
                               void *ud);

/* Returns libwflo's monotonic clock in nanoseconds (the override when one is
 * set). Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN uint64_t wflo_now_ns(void);

/* --- randomness ------------------------------------------------------------ */

/* Seeds the calling thread's jitter generator, for reproducible tests. Other
 * threads keep their own generators, seeded from the OS on first use.
 * Thread-safety: affects the calling thread only. Since: 0.1. */
WFLO_EXTERN void wflo_rng_seed(uint64_t seed);

/* --- events ---------------------------------------------------------------- */

typedef enum wflo_log_level {
  WFLO_LOG_DEBUG = 0,
  WFLO_LOG_INFO = 1,
  WFLO_LOG_WARN = 2,
  WFLO_LOG_ERROR = 3,
  WFLO_LOG_OFF = 4
} wflo_log_level_t;

/* One structured event. Valid only during the handler call: name and fields
 * are borrowed (json_incref the fields to keep them). */
typedef struct wflo_event {
  const char *name; /* "retry_scheduled", "circuit_breaker_opened", ... */
  wflo_log_level_t level;
  const json_t *fields; /* a JSON object; keys per DESIGN's event table */
} wflo_event_t;

typedef void (*wflo_event_handler_t)(const wflo_event_t *ev, void *ud);

/* Installs the one sink for every event. NULL restores the default handler,
 * which writes one JSON object per line to stderr ({"ts", "level", "event",
 * and the fields}). The handler runs on the thread where the event happened,
 * with no libwflo lock held, and may call into libwflo.
 * Thread-safety: any thread; a handler being replaced may still receive an
 * event that was being emitted concurrently. Since: 0.1. */
WFLO_EXTERN void wflo_set_event_handler(wflo_event_handler_t h, void *ud);

/* Sets the level below which events are dropped before any JSON is built.
 * The default is WFLO_LOG_WARN, or the WFLO_LOG environment variable
 * (debug|info|warn|error|off) read at first use; this call overrides both and
 * survives a change of handler. Levels outside the enum are ignored.
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN void wflo_set_log_level(wflo_log_level_t level);

/* Returns the current event level. Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN wflo_log_level_t wflo_get_log_level(void);

/* Returns the lowercase name of a level ("warn"), or "unknown". Static. */
WFLO_EXTERN const char *wflo_log_level_name(wflo_log_level_t level);

#ifdef __cplusplus
}
#endif

#endif /* WFLO_COMMON_H */
