/* libwflo resource lock (bulkhead) with contention detection. Include
 * <wflo.h>, not this file.
 *
 * A lock guards a shared resource such as a database pool or a rate-limited
 * API: it hands out at most max_concurrent permits at a time (1: an
 * exclusive lock). Callers that find no free permit wait in one queue,
 * served strictly first come, first served, whether they wait on a thread
 * (wflo_lock_acquire) or on a libuv loop (wflo_lock_acquire_async). A wait
 * longer than contention_threshold is counted as contention and reported by
 * a resource_contention_detected event; a wait that runs out of time returns
 * WFLO_E_LOCK_TIMEOUT and emits resource_lock_timeout.
 *
 * Three ways to hold a permit:
 *   WFLO_WITH_LOCK(l, rc) { use the resource; }     (released on every exit)
 *   wflo_lock_acquire(l, &permit, holder, timeout) ... wflo_lock_release()
 *   wflo_lock_acquire_async(loop, l, &req, ...)     (libuv loops; the
 *       callback gets req->permit, released with wflo_lock_release())
 *
 * Timeouts, per call: a negative value means the lock's configured default,
 * 0 tries once without waiting, WFLO_WAIT_FOREVER waits without limit, and
 * any other value is a duration in seconds (finite, <= WFLO_DURATION_MAX).
 * Waits on a condition variable and on loop timers use real time, never the
 * clock set by wflo_clock_set(); measured wait times (stats, events,
 * permit.wait_time) use libwflo's clock.
 *
 * Holder ids: every permit records who holds it, for current_holders in the
 * stats and the holder field of events. It is the holder_id given to the
 * acquire call (copied: one allocation per acquire), else the current
 * context's execution id (the permit keeps a reference on that context, no
 * allocation), else "anonymous".
 *
 * Thread-safety: a lock may be shared by any number of threads and loops at
 * once. An uncontended acquire and release take no mutex and read no clock.
 * A sync acquire that may wait blocks its thread: never call it with a
 * non-zero timeout on a loop thread (inside a libwflo callback it is refused
 * with WFLO_E_STATE); use the async form there. Nothing of this module ever
 * blocks a loop thread. Event handlers run with no libwflo lock held.
 *
 * Lifetime: keep a reference to the lock (from wflo_lock_new or
 * wflo_lock_get) until every permit it granted is released; a pending async
 * request keeps the lock alive by itself until its callback has run.
 */
#ifndef WFLO_LOCK_H
#define WFLO_LOCK_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- configuration ------------------------------------------------------- */

/* Defaults set by wflo_lock_config_init(). */
#define WFLO_LOCK_DEFAULT_TIMEOUT 30.0
#define WFLO_LOCK_DEFAULT_CONTENTION_THRESHOLD 5.0
#define WFLO_LOCK_DEFAULT_MAX_CONCURRENT 1
#define WFLO_LOCK_DEFAULT_MAX_WAITERS 1024

/* Largest max_concurrent and max_waiters that validation accepts. */
#define WFLO_LOCK_CONCURRENT_MAX 1000000000
#define WFLO_LOCK_WAITERS_MAX 1000000000

/* A per-call timeout that waits without limit (a per-call value only: a
 * config's default timeout is a finite duration). */
#define WFLO_WAIT_FOREVER (INFINITY)

/* A lock's configuration: a plain struct; set it up with
 * wflo_lock_config_init() (or _from_json) and edit the fields. Durations are
 * seconds (finite, >= 0, <= WFLO_DURATION_MAX). Since: 0.1. */
typedef struct wflo_lock_config {
  /* Default acquire timeout, used when a call passes a negative timeout.
   * 0 makes such calls try once without waiting. */
  double timeout;
  /* A granted acquisition that waited longer than this (strictly) counts as
   * contention and emits resource_contention_detected. */
  double contention_threshold;
  /* Permits held at once: 1 (exclusive) to WFLO_LOCK_CONCURRENT_MAX. */
  int max_concurrent;
  /* Waiters queued at once, sync and async together: 0 (never wait: an
   * acquire that would wait is refused with WFLO_E_QUEUE_FULL) to
   * WFLO_LOCK_WAITERS_MAX. A full queue refuses at once. */
  int max_waiters;
  void *reserved[8];
} wflo_lock_config_t;

/* Sets every field of c to its default (WFLO_LOCK_DEFAULT_*), reserved space
 * zeroed. NULL is a no-op. Thread-safety: c is the caller's. Since: 0.1. */
WFLO_EXTERN void wflo_lock_config_init(wflo_lock_config_t *c);

/* Checks every field of c. Returns: 0; WFLO_E_INVAL (c NULL, or a bad
 * field: errbuf gets "lock.FIELD: reason" and a config_invalid event is
 * emitted). Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN int wflo_lock_config_validate(const wflo_lock_config_t *c,
                                          char *errbuf, size_t len);

/* Loads a config from a JSON object whose keys are the C field names
 * ("timeout", "contention_threshold", "max_concurrent", "max_waiters"),
 * starting from the defaults (c is initialised first); a JSON integer is
 * accepted for a double. The result is validated.
 * Returns: 0; WFLO_E_PARSE (not an object, unknown key, wrong JSON type);
 * WFLO_E_INVAL (j or c NULL, a bad value); WFLO_E_NOMEM. On failure c holds
 * the defaults. errbuf names the field. Ownership: j is borrowed; nothing is
 * allocated into c (there is no _clear). Thread-safety: any thread.
 * Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int
wflo_lock_config_from_json(const json_t *j, wflo_lock_config_t *c,
                           char *errbuf, size_t len);

/* --- locks --------------------------------------------------------------- */

/* Creates a private lock (not in the registry). name: copied; NULL makes an
 * unnamed lock (its stats and events carry "resource_name": null). c: NULL
 * means the defaults; it is validated first and copied.
 * Returns: 0; WFLO_E_INVAL (out NULL, bad config: nothing is created);
 * WFLO_E_NOMEM. Ownership: *out is a new reference, dropped with
 * wflo_lock_put(). Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int wflo_lock_new(const char *name,
                                             const wflo_lock_config_t *c,
                                             wflo_lock_t **out);

/* Returns the lock registered under name, creating it with c (NULL: the
 * defaults) if there is none: every caller of the same name shares one lock,
 * its permits and its stats. When the name exists and c (validated first)
 * differs from the config it was created with, a config_conflict event
 * {what: "lock", name} is emitted and the first config stays. A name stays
 * registered while any reference to its lock is alive.
 * Returns: 0; WFLO_E_INVAL (name or out NULL, bad config); WFLO_E_NOMEM.
 * Ownership: *out is a new reference, dropped with wflo_lock_put().
 * Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int wflo_lock_get(const char *name,
                                             const wflo_lock_config_t *c,
                                             wflo_lock_t **out);

/* Drops one reference; the last one frees the lock and removes its name from
 * the registry. NULL is a no-op. Permits still held become invalid with it:
 * keep a reference while any permit is held (pending async requests hold
 * their own). Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN void wflo_lock_put(wflo_lock_t *l);

/* --- permits ------------------------------------------------------------- */

/* One held permit, declared by the caller (on its stack or inside its own
 * struct); nothing is allocated per acquire except the copy of a given
 * holder id. While held it is linked into its lock (for current_holders):
 * do not move or copy it until it is released. Filled by wflo_lock_acquire()
 * on every return; released exactly once with wflo_lock_release().
 * Since: 0.1. */
typedef struct wflo_lock_permit {
  /* public (read-only) */
  /* The holder id (see the top of this file), valid while the permit is
   * held; NULL when it holds nothing. */
  const char *holder_id;
  /* Seconds this acquisition waited (0 when a permit was free), valid once
   * it is granted: from the acquire call until the waiting thread resumed
   * with the permit, or until the async callback was about to run. Stats
   * and contention use the same measure. */
  double wait_time;
  /* private */
  struct {
    void *link[2];
    wflo_lock_t *lock;
    wflo_context_t *ctx;
    void *aux;
    uint32_t state;
    uint32_t flags;
  } priv;
  void *reserved[1];
} wflo_lock_permit_t;

/* Takes one permit of l, waiting in the lock's FIFO queue up to timeout_s
 * when none is free (see the top of this file for timeouts). holder_id:
 * NULL (the current context's execution id, else "anonymous"), or an id
 * that is copied. *permit is overwritten on every return: never pass a
 * permit that is still held.
 * Returns: 0 (held: release it with wflo_lock_release()); WFLO_E_LOCK_TIMEOUT
 * (no permit came in time; also a failed try with timeout 0; counted in
 * timeout_count, resource_lock_timeout emitted); WFLO_E_QUEUE_FULL (a wait
 * was needed and max_waiters are already waiting: refused at once, no
 * event); WFLO_E_STATE (timeout_s is not 0 and this thread is inside a
 * libwflo loop callback, where waiting would stall the loop);
 * WFLO_E_INVAL (l or permit NULL, timeout_s NaN or a finite value above
 * WFLO_DURATION_MAX); WFLO_E_NOMEM (copying holder_id).
 * Ownership: holder_id is borrowed for the call. Thread-safety: any thread;
 * blocks the calling thread while it waits (real time). Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int wflo_lock_acquire(wflo_lock_t *l,
                                                 wflo_lock_permit_t *permit,
                                                 const char *holder_id,
                                                 double timeout_s);

/* Releases a held permit: the first waiter in the queue, if any, gets it
 * directly (a waiter on another loop is woken through that loop), else it
 * becomes free. Returns: 0; WFLO_E_STATE (not held: already released, its
 * acquire failed, or its async request is still pending); WFLO_E_INVAL
 * (NULL). Thread-safety: any thread, also another than the one that
 * acquired (a loop callback included: it never blocks). Since: 0.1. */
WFLO_EXTERN int wflo_lock_release(wflo_lock_permit_t *permit);

/* Releases permit if it is held and does nothing otherwise (NULL, released,
 * failed). This is what WFLO_WITH_LOCK runs when its block is left early.
 * Thread-safety: as wflo_lock_release(). Since: 0.1. */
WFLO_EXTERN void wflo_lock_permit_drop(wflo_lock_permit_t *permit);

/* --- async acquire on a libuv loop --------------------------------------- */

/* One async acquire, declared by the caller (libuv style): it must stay at
 * the same address, untouched except for `data`, from wflo_lock_acquire_async
 * until its callback has run, and its permit (when granted) until released;
 * only then may it be reused for another acquire (from its own callback
 * too).
 * Nothing is allocated per request except the copy of a given holder id.
 * sizeof(wflo_lock_req_t) is 160 bytes on 64-bit systems. Since: 0.1. */
typedef struct wflo_lock_req {
  /* public */
  void *data;                /* the user's; never touched by libwflo */
  wflo_lock_permit_t permit; /* held after a callback with status 0 */
  /* private */
  struct {
    uint64_t timer[7];
    void (*cb)(struct wflo_lock_req *req, int status);
  } priv;
  void *reserved[2];
} wflo_lock_req_t;

/* Starts taking one permit of l for loop's thread, waiting in the same FIFO
 * queue as sync callers up to timeout_s (see the top of this file; the wait
 * is a deadline on libwflo's one timer for the loop, no handle per request).
 * holder_id: as for wflo_lock_acquire(). The context current now is
 * captured and re-entered around cb.
 * Returns: 0 (cb will run); WFLO_E_LOCK_TIMEOUT (timeout_s is 0 and no
 * permit is free: counted and emitted as a timeout); WFLO_E_QUEUE_FULL;
 * WFLO_E_INVAL (a NULL argument, a bad timeout_s); WFLO_E_NOMEM; a UV_E*
 * code from creating libwflo's handles on loop. On an error cb never runs.
 * Callback: cb(req, status) runs exactly once, on loop's thread, never from
 * inside this call: status 0 (req->permit is held: release it with
 * wflo_lock_release(&req->permit), from any thread, now or later),
 * WFLO_E_LOCK_TIMEOUT (resource_lock_timeout was emitted), or
 * WFLO_E_CANCELED (wflo_lock_cancel). A grant decided on another thread (a
 * release there) wakes loop through its uv_async_t. cb may start, cancel or
 * release anything, and may reuse req for a new acquire.
 * Ownership: req is the caller's; holder_id is borrowed for the call.
 * Thread-safety: call it on loop's thread; loop must keep running until cb
 * has run. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int
wflo_lock_acquire_async(uv_loop_t *loop, wflo_lock_t *l, wflo_lock_req_t *req,
                        const char *holder_id, double timeout_s,
                        void (*cb)(wflo_lock_req_t *req, int status));

/* Cancels a waiting async request: it leaves the queue at once (never
 * receiving a permit, disturbing no other waiter) and its callback runs
 * later, on the loop, with WFLO_E_CANCELED. Returns: 0; WFLO_E_STATE (the
 * outcome is already decided: a permit was granted, the wait timed out, or
 * it was cancelled before; its callback still runs once with that outcome,
 * unless it already has); WFLO_E_INVAL (NULL). Thread-safety: call it on the
 * request's loop thread, while the request is pending or from its callback.
 * Since: 0.1. */
WFLO_EXTERN int wflo_lock_cancel(wflo_lock_req_t *req);

/* --- stats --------------------------------------------------------------- */

/* Returns l's statistics as a JSON object: resource_name (string, null when
 * unnamed), total_acquisitions (granted acquisitions), contention_count
 * (those that waited longer than contention_threshold), contention_rate
 * (contention_count / total_acquisitions, 0 when none), avg_wait_time_seconds
 * and max_wait_time_seconds (over granted acquisitions, 0 when none),
 * current_holders (array of the holder id of every permit held now, a
 * granted async request not yet called back included), concurrent_capacity
 * (max_concurrent), timeout_count (acquisitions that ran out of time) and
 * current_waiters (waiting now, sync and async). Counts are integers, times
 * reals. Memory per lock is O(1) plus one entry per current holder.
 * Returns: a new reference, or NULL (l NULL, out of memory).
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN json_t *wflo_lock_stats_json(wflo_lock_t *l);

/* --- statement macro ----------------------------------------------------- */

/* WFLO_WITH_LOCK(l, rc) { use the resource; }
 *
 * rc: an int lvalue the caller declared. The block runs once holding a
 * permit of l, taken with wflo_lock_acquire(l, &permit, NULL, -1) (the
 * lock's default timeout, the current context's execution id as holder);
 * rc is 0 when the block starts. When no permit is granted the block is
 * skipped and rc holds the error (WFLO_E_LOCK_TIMEOUT, WFLO_E_QUEUE_FULL,
 * WFLO_E_STATE inside a loop callback, WFLO_E_INVAL for a NULL l,
 * WFLO_E_NOMEM). The permit is released when the block ends, normally or
 * by `continue`. `break` inside the block leaves this macro, not an
 * enclosing loop.
 *
 * Leaving the block early by `break`, `goto` or `return` also releases the
 * permit: with gcc and clang the macro declares it with
 * __attribute__((cleanup)), which runs wflo_lock_permit_drop(). Other
 * compilers: only the normal end (and `continue`) is supported; an early
 * exit leaves the permit held. l is evaluated once. Nesting is fine (each
 * use declares its own names). */
#define WFLO__LCK_CAT2(a, b) a##b
#define WFLO__LCK_CAT(a, b) WFLO__LCK_CAT2(a, b)
#if defined(__GNUC__) || defined(__clang__)
#define WFLO__LCK_CLEANUP __attribute__((cleanup(wflo_lock_permit_drop)))
#else
#define WFLO__LCK_CLEANUP
#endif
#ifdef __COUNTER__
#define WFLO_WITH_LOCK(l, rc) WFLO__WITH_LOCK(l, rc, __COUNTER__)
#else
#define WFLO_WITH_LOCK(l, rc) WFLO__WITH_LOCK(l, rc, __LINE__)
#endif
#define WFLO__LCK_P(n) WFLO__LCK_CAT(wflo__lck_permit_, n)
#define WFLO__LCK_GO(n) WFLO__LCK_CAT(wflo__lck_go_, n)
#define WFLO__WITH_LOCK(l, rc, n)                                             \
  for (wflo_lock_permit_t WFLO__LCK_P(n) WFLO__LCK_CLEANUP,                   \
       *WFLO__LCK_GO(n) =                                                     \
           ((rc) = wflo_lock_acquire((l), &WFLO__LCK_P(n), NULL, -1.0)) == 0  \
               ? &WFLO__LCK_P(n)                                              \
               : NULL;                                                        \
       WFLO__LCK_GO(n) != NULL;                                               \
       WFLO__LCK_GO(n) = NULL, (void)wflo_lock_release(&WFLO__LCK_P(n)))

#ifdef __cplusplus
}
#endif

#endif /* WFLO_LOCK_H */
