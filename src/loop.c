/* Per-loop state: one uv_timer_t re-armed to the earliest libwflo deadline on
 * the loop, and one uv_async_t carrying wake-ups from other threads. See
 * internal/loop.h for the lifecycle rules.
 *
 * Deadlines live in an intrusive pairing heap ordered by (due, seq): O(1)
 * insert, O(log n) amortized removal, no allocation per timer, and FIFO
 * among equal deadlines thanks to the sequence number. */
#include "internal/loop.h"

struct wflo__loop {
  uv_loop_t *uv;
  wflo__list_t node; /* in `states`, under states_mu */

  /* Loop thread only. */
  struct {
    uv_timer_t timer;
    uv_async_t async;
    size_t refs;
    int open_handles; /* freed when the last close callback brings it to 0 */
    wflo__timer_t *heap;
    uint64_t seq;
    uint64_t armed_due; /* due of the uv timer, UINT64_MAX when stopped */
    bool due_now_sent;  /* an async wake-up will run timers already due */
  } loop_only;

  /* Any thread. */
  struct {
    uv_mutex_t mu;
    wflo__list_t posted;
  } synced;
};

static uv_once_t states_once = UV_ONCE_INIT;
static uv_mutex_t states_mu;
static wflo__list_t states;
static atomic_size_t states_alive;

/* Read inline by wflo__in_loop_callback() (internal/loop.h). */
WFLO_THREAD_LOCAL int wflo__tl_in_callback;

static void states_init(void) {
  uv_mutex_init(&states_mu);
  wflo__list_init(&states);
}

size_t wflo__loop_states_alive(void) { return atomic_load(&states_alive); }

uv_loop_t *wflo__loop_uv(const wflo__loop_t *l) { return l->uv; }

/* --- pairing heap ------------------------------------------------------------ */

static bool timer_less(const wflo__timer_t *a, const wflo__timer_t *b) {
  return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

/* Links two roots; the larger becomes the leftmost child of the smaller. */
static wflo__timer_t *heap_meld(wflo__timer_t *a, wflo__timer_t *b) {
  if (a == NULL)
    return b;
  if (b == NULL)
    return a;
  if (timer_less(b, a)) {
    wflo__timer_t *t = a;
    a = b;
    b = t;
  }
  b->prev = a;
  b->sibling = a->child;
  if (a->child != NULL)
    a->child->prev = b;
  a->child = b;
  a->sibling = NULL;
  a->prev = NULL;
  return a;
}

/* Two-pass pairing of a sibling list: pair left to right, then meld the
 * pairs right to left. Iterative so a long list cannot overflow the stack. */
static wflo__timer_t *heap_merge_pairs(wflo__timer_t *first) {
  wflo__timer_t *pairs = NULL, *a, *b, *next, *root = NULL;
  while (first != NULL) {
    a = first;
    b = a->sibling;
    next = b != NULL ? b->sibling : NULL;
    a->sibling = a->prev = NULL;
    if (b != NULL)
      b->sibling = b->prev = NULL;
    a = heap_meld(a, b);
    a->sibling = pairs; /* reverse list of melded pairs */
    pairs = a;
    first = next;
  }
  while (pairs != NULL) {
    next = pairs->sibling;
    pairs->sibling = NULL;
    root = heap_meld(root, pairs);
    pairs = next;
  }
  return root;
}

static void heap_insert(wflo__loop_t *l, wflo__timer_t *t) {
  t->child = t->sibling = t->prev = NULL;
  l->loop_only.heap = heap_meld(l->loop_only.heap, t);
}

static void heap_remove(wflo__loop_t *l, wflo__timer_t *t) {
  wflo__timer_t *sub;
  if (t == l->loop_only.heap) {
    l->loop_only.heap = heap_merge_pairs(t->child);
    return;
  }
  /* Cut t out of its sibling list; prev is its parent when t is leftmost. */
  if (t->prev->child == t)
    t->prev->child = t->sibling;
  else
    t->prev->sibling = t->sibling;
  if (t->sibling != NULL)
    t->sibling->prev = t->prev;
  sub = heap_merge_pairs(t->child);
  l->loop_only.heap = heap_meld(l->loop_only.heap, sub);
}

/* --- the uv timer ------------------------------------------------------------ */

static void on_uv_timer(uv_timer_t *handle);

/* Timers already due are run from the async handle, not by a zero-delay uv
 * timer: libuv runs a timer started from a timer callback in the same pass
 * when its delay is 0, so a chain of zero-delay re-arms would starve I/O.
 * The async wake-up is processed in the poll phase: each link of such a
 * chain costs one loop iteration. */
static void rearm(wflo__loop_t *l) {
  wflo__timer_t *min = l->loop_only.heap;
  uint64_t now;
  if (min == NULL) {
    if (l->loop_only.armed_due != UINT64_MAX) {
      uv_timer_stop(&l->loop_only.timer);
      l->loop_only.armed_due = UINT64_MAX;
    }
    return;
  }
  now = uv_now(l->uv);
  if (min->due_ms <= now) {
    if (!l->loop_only.due_now_sent) {
      l->loop_only.due_now_sent = true;
      uv_async_send(&l->loop_only.async);
    }
    return;
  }
  if (min->due_ms == l->loop_only.armed_due)
    return;
  uv_timer_start(&l->loop_only.timer, on_uv_timer, min->due_ms - now, 0);
  l->loop_only.armed_due = min->due_ms;
}

/* Runs every timer due now that was started before this pass. Timers started
 * by the callbacks get seq >= pass_end and wait for a later pass; any older
 * due timer sorts before them, so stopping at the first newer one is safe.
 * The caller holds an extra ref (a callback may drop the last one). */
static void run_due_timers(wflo__loop_t *l) {
  uint64_t now = uv_now(l->uv), pass_end = l->loop_only.seq;
  wflo__timer_t *t;
  while ((t = l->loop_only.heap) != NULL && t->due_ms <= now &&
         t->seq < pass_end) {
    heap_remove(l, t);
    t->armed = false;
    t->cb(t);
  }
  rearm(l);
}

static void on_uv_timer(uv_timer_t *handle) {
  wflo__loop_t *l = wflo__container_of(handle, wflo__loop_t, loop_only.timer);
  l->loop_only.armed_due = UINT64_MAX;
  l->loop_only.refs++;
  wflo__tl_in_callback++;
  run_due_timers(l);
  wflo__tl_in_callback--;
  wflo__loop_unref(l);
}

uint64_t wflo__loop_delay_ms(double seconds) {
  double ms;
  if (!(seconds > 0))
    return 0;
  ms = ceil(seconds * 1e3);
  return ms >= 1.8e19 ? UINT64_MAX : (uint64_t)ms;
}

void wflo__timer_start(wflo__loop_t *l, wflo__timer_t *t, uint64_t delay_ms,
                       wflo__timer_cb cb) {
  uint64_t now = uv_now(l->uv);
  if (t->armed)
    heap_remove(l, t);
  t->due_ms = delay_ms > UINT64_MAX - now ? UINT64_MAX : now + delay_ms;
  t->seq = l->loop_only.seq++;
  t->cb = cb;
  t->armed = true;
  heap_insert(l, t);
  rearm(l);
}

void wflo__timer_stop(wflo__loop_t *l, wflo__timer_t *t) {
  if (!t->armed)
    return;
  heap_remove(l, t);
  t->armed = false;
  rearm(l);
}

/* --- posted wake-ups ---------------------------------------------------------- */

static void on_async(uv_async_t *handle) {
  wflo__loop_t *l = wflo__container_of(handle, wflo__loop_t, loop_only.async);
  wflo__list_t batch, *n;

  /* uv_async_send merges wake-ups: drain everything queued so far. Items
   * posted by these callbacks land in the next batch (a new send). */
  wflo__list_init(&batch);
  uv_mutex_lock(&l->synced.mu);
  wflo__list_splice(&batch, &l->synced.posted);
  uv_mutex_unlock(&l->synced.mu);

  l->loop_only.refs++;
  wflo__tl_in_callback++;
  while ((n = wflo__list_first(&batch)) != NULL) {
    wflo__post_t *p = wflo__container_of(n, wflo__post_t, node);
    wflo__list_remove(n);
    p->cb(p);
  }
  if (l->loop_only.due_now_sent) {
    l->loop_only.due_now_sent = false;
    run_due_timers(l);
  }
  wflo__tl_in_callback--;
  wflo__loop_unref(l);
}

void wflo__loop_post(wflo__loop_t *l, wflo__post_t *p, wflo__post_cb cb) {
  p->cb = cb;
  /* Send while holding the mutex: the loop thread cannot drain this item,
   * drop its last ref and free the state until we let go of it. */
  uv_mutex_lock(&l->synced.mu);
  wflo__list_insert_tail(&l->synced.posted, &p->node);
  uv_async_send(&l->loop_only.async);
  uv_mutex_unlock(&l->synced.mu);
}

/* --- lifecycle ------------------------------------------------------------------ */

static void state_free(wflo__loop_t *l) {
  uv_mutex_destroy(&l->synced.mu);
  wflo__free(l, sizeof(*l));
  atomic_fetch_sub(&states_alive, 1);
}

static void on_close(uv_handle_t *h) {
  wflo__loop_t *l = h->data;
  if (--l->loop_only.open_handles == 0)
    state_free(l);
}

static wflo__loop_t *find_state(uv_loop_t *uv) {
  wflo__list_t *n;
  wflo__list_foreach(n, &states) {
    wflo__loop_t *l = wflo__container_of(n, wflo__loop_t, node);
    if (l->uv == uv)
      return l;
  }
  return NULL;
}

static int state_new(uv_loop_t *uv, wflo__loop_t **out) {
  wflo__loop_t *l = wflo__calloc(1, sizeof(*l));
  int rc;
  if (l == NULL)
    return WFLO_E_NOMEM;
  l->uv = uv;
  l->loop_only.armed_due = UINT64_MAX;
  wflo__list_init(&l->synced.posted);
  if (uv_mutex_init(&l->synced.mu) != 0) {
    wflo__free(l, sizeof(*l));
    return WFLO_E_NOMEM;
  }
  rc = uv_async_init(uv, &l->loop_only.async, on_async);
  if (rc != 0) {
    uv_mutex_destroy(&l->synced.mu);
    wflo__free(l, sizeof(*l));
    return rc;
  }
  uv_timer_init(uv, &l->loop_only.timer); /* cannot fail on Unix */
  l->loop_only.timer.data = l;
  l->loop_only.async.data = l;
  l->loop_only.open_handles = 2;
  atomic_fetch_add(&states_alive, 1);
  *out = l;
  return 0;
}

int wflo__loop_ref(uv_loop_t *uv, wflo__loop_t **out) {
  wflo__loop_t *l;
  int rc = 0;
  if (uv == NULL)
    return WFLO_E_INVAL;
  uv_once(&states_once, states_init);
  uv_mutex_lock(&states_mu);
  l = find_state(uv);
  if (l == NULL) {
    rc = state_new(uv, &l);
    if (rc == 0)
      wflo__list_insert_tail(&states, &l->node);
  }
  if (rc == 0) {
    l->loop_only.refs++;
    *out = l;
  }
  uv_mutex_unlock(&states_mu);
  return rc;
}

void wflo__loop_ref_again(wflo__loop_t *l) { l->loop_only.refs++; }

void wflo__loop_unref(wflo__loop_t *l) {
  if (--l->loop_only.refs > 0)
    return;
  /* Nothing pending: unpublish now (a new ref creates a fresh state) and
   * free once both handles have closed. */
  uv_mutex_lock(&states_mu);
  wflo__list_remove(&l->node);
  uv_mutex_unlock(&states_mu);
  uv_close((uv_handle_t *)&l->loop_only.timer, on_close);
  uv_close((uv_handle_t *)&l->loop_only.async, on_close);
}
