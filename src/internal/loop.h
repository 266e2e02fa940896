/* Per-loop state: one uv_timer_t for every libwflo deadline on a loop and one
 * uv_async_t for wake-ups from other threads (DESIGN "Threads and loops").
 *
 * Lifecycle: wflo__loop_ref() (loop thread) finds or lazily creates the
 * state of a uv_loop_t and counts one pending operation; wflo__loop_unref()
 * drops it. When the count reaches zero both handles are closed and the
 * memory is freed from the last close callback, so with nothing pending
 * libwflo holds no handle on the loop: uv_run() returns and uv_loop_close()
 * succeeds. Rule: every armed timer and every posted item belongs to an
 * operation that holds a ref, and the operation unrefs only after its timer
 * is stopped and its posted item has run.
 *
 * Timers fire in (due, start order): equal deadlines run FIFO. A timer started
 * from inside a timer callback never runs in the same pass, even with a zero
 * delay. Deadlines are loop time (uv_now) in ms, rounded up so a timer never
 * fires early; timers use real time, never the overridable clock. */
#ifndef WFLO_INTERNAL_LOOP_H
#define WFLO_INTERNAL_LOOP_H

#include "common.h"
#include "list.h"

typedef struct wflo__loop wflo__loop_t;
typedef struct wflo__timer wflo__timer_t;
typedef struct wflo__post wflo__post_t;

typedef void (*wflo__timer_cb)(wflo__timer_t *t);
typedef void (*wflo__post_cb)(wflo__post_t *p);

/* A deadline, embedded in the operation that owns it (no allocation). Fields
 * are private to loop.c; zero-initialise or call wflo__timer_init(). */
struct wflo__timer {
  wflo__timer_t *child, *sibling, *prev; /* pairing-heap links */
  uint64_t due_ms;
  uint64_t seq;
  wflo__timer_cb cb;
  bool armed;
};

/* A wake-up item: any thread may post it, its callback runs on the loop
 * thread, in posting order. Private fields; zero-initialise. An item may be
 * re-posted once its callback has started. */
struct wflo__post {
  wflo__list_t node;
  wflo__post_cb cb;
};

static inline void wflo__timer_init(wflo__timer_t *t) {
  memset(t, 0, sizeof(*t));
}

/* Loop thread only. Returns 0 or WFLO_E_NOMEM / a UV_E* code from handle
 * creation. */
int wflo__loop_ref(uv_loop_t *uv, wflo__loop_t **out);
/* Loop thread only. Takes one more ref on a state already held. */
void wflo__loop_ref_again(wflo__loop_t *l);
/* Loop thread only. */
void wflo__loop_unref(wflo__loop_t *l);

uv_loop_t *wflo__loop_uv(const wflo__loop_t *l);

/* Loop thread only. Arms t to fire after delay_ms (re-arming an armed timer
 * moves it). */
void wflo__timer_start(wflo__loop_t *l, wflo__timer_t *t, uint64_t delay_ms,
                       wflo__timer_cb cb);
/* Loop thread only. Harmless on a timer that is not armed. */
void wflo__timer_stop(wflo__loop_t *l, wflo__timer_t *t);
static inline bool wflo__timer_armed(const wflo__timer_t *t) {
  return t->armed;
}

/* Seconds to a timer delay in ms, rounded up, saturating. d must be a valid
 * duration or INFINITY (which the caller must not arm). */
uint64_t wflo__loop_delay_ms(double seconds);

/* Any thread (the loop thread included). Queues p; its callback runs on the
 * loop thread in a later loop iteration, never inside this call. The caller's
 * operation must hold a ref on l until the callback has run. */
void wflo__loop_post(wflo__loop_t *l, wflo__post_t *p, wflo__post_cb cb);

/* true while the calling thread runs a libwflo loop callback (a timer or a
 * posted item, hence any user callback libwflo calls from a loop): a blocking
 * sync call made there would stall the loop, so it is refused. */
extern WFLO_THREAD_LOCAL int wflo__tl_in_callback;
static inline bool wflo__in_loop_callback(void) {
  return wflo__tl_in_callback > 0; /* inline: hot paths ask it */
}

/* Number of loop states alive (tests: 0 when nothing is pending anywhere). */
size_t wflo__loop_states_alive(void);

#endif /* WFLO_INTERNAL_LOOP_H */
