/* Sliding windows for the circuit breaker, with Resilience4j semantics:
 * COUNT keeps the last window_size outcomes, TIME the outcomes of the last
 * window_size seconds in one-second buckets. Both keep running totals so
 * that adding an outcome and evaluating the rates is O(1) (TIME: amortised,
 * O(window_size) after a quiet period at most).
 *
 * Every function except _new/_free runs under the window's mutex. A mutex,
 * not atomics, because eviction and the rate check must see one consistent
 * window, and because a transition clears the window while late results of
 * the old generation may still arrive: under the mutex, the breaker checks
 * the generation and adds in one step, so a cleared window never takes a
 * stale outcome. Held for a few dozen instructions; never across user code
 * or an event. */
#include "internal/breaker.h"

typedef struct bucket {
  uint32_t total, failures, slow;
} bucket_t;

struct wflo__bwindow {
  uv_mutex_t mu;
  size_t bytes; /* this allocation, for the sized free */
  uint32_t mode;
  uint32_t size;
  uint32_t min_calls; /* effective */
  double failure_rate;
  double slow_rate;
  uint32_t total, failures, slow;
  /* COUNT: next ring index and how many entries are filled. */
  uint32_t pos, filled;
  /* TIME: the second the newest bucket belongs to; valid when started. */
  uint64_t last_sec;
  bool started;
  /* COUNT: failure bits then slow bits, (size + 63) / 64 words each.
   * TIME: size buckets. */
  uint64_t data[];
};

static size_t count_words(uint32_t size) { return ((size_t)size + 63) / 64; }

static size_t data_bytes(uint32_t mode, uint32_t size) {
  if (mode == WFLO_WINDOW_COUNT)
    return 2 * count_words(size) * sizeof(uint64_t);
  return (size_t)size * sizeof(bucket_t);
}

int wflo__bwindow_new(const wflo__bcfg_t *cfg, wflo__bwindow_t **out) {
  size_t bytes =
      sizeof(wflo__bwindow_t) + data_bytes(cfg->window, cfg->window_size);
  wflo__bwindow_t *w = wflo__calloc(1, bytes);
  if (w == NULL)
    return WFLO_E_NOMEM;
  if (uv_mutex_init(&w->mu) != 0) {
    wflo__free(w, bytes);
    return WFLO_E_NOMEM;
  }
  w->bytes = bytes;
  w->mode = cfg->window;
  w->size = cfg->window_size;
  w->min_calls = cfg->minimum_calls;
  w->failure_rate = cfg->failure_rate;
  w->slow_rate = cfg->slow_rate;
  *out = w;
  return 0;
}

void wflo__bwindow_free(wflo__bwindow_t *w) {
  if (w == NULL)
    return;
  uv_mutex_destroy(&w->mu);
  wflo__free(w, w->bytes);
}

void wflo__bwindow_lock(wflo__bwindow_t *w) { uv_mutex_lock(&w->mu); }
void wflo__bwindow_unlock(wflo__bwindow_t *w) { uv_mutex_unlock(&w->mu); }

void wflo__bwindow_clear(wflo__bwindow_t *w) {
  memset(w->data, 0, data_bytes(w->mode, w->size));
  w->total = w->failures = w->slow = 0;
  w->pos = w->filled = 0;
  w->last_sec = 0;
  w->started = false;
}

static bucket_t *buckets(wflo__bwindow_t *w) {
  return (bucket_t *)(void *)w->data;
}

/* Moves the TIME window to second `sec`, emptying the buckets of the
 * seconds that fell out. A clock that went backwards (only a test's virtual
 * clock can) keeps adding to the newest bucket. */
static void time_advance(wflo__bwindow_t *w, uint64_t sec) {
  bucket_t *b = buckets(w);
  uint64_t s;
  if (!w->started) {
    w->started = true;
    w->last_sec = sec;
    return;
  }
  if (sec <= w->last_sec)
    return;
  if (sec - w->last_sec >= w->size) {
    memset(b, 0, (size_t)w->size * sizeof(*b));
    w->total = w->failures = w->slow = 0;
  } else {
    for (s = w->last_sec + 1; s <= sec; s++) {
      bucket_t *e = &b[s % w->size];
      w->total -= e->total;
      w->failures -= e->failures;
      w->slow -= e->slow;
      e->total = e->failures = e->slow = 0;
    }
  }
  w->last_sec = sec;
}

static void time_add(wflo__bwindow_t *w, bool failure, bool slow,
                     uint64_t now_ns) {
  bucket_t *e;
  time_advance(w, now_ns / WFLO__NS_PER_S);
  e = &buckets(w)[w->last_sec % w->size];
  e->total++;
  e->failures += failure;
  e->slow += slow;
}

/* Replaces the oldest outcome once the ring is full. */
static void count_add(wflo__bwindow_t *w, bool failure, bool slow) {
  size_t words = count_words(w->size), i = w->pos / 64;
  uint64_t bit = 1ull << (w->pos % 64);
  uint64_t *fbits = w->data, *sbits = w->data + words;
  if (w->filled == w->size) {
    w->total--;
    w->failures -= (fbits[i] & bit) != 0;
    w->slow -= (sbits[i] & bit) != 0;
  } else {
    w->filled++;
  }
  fbits[i] = failure ? fbits[i] | bit : fbits[i] & ~bit;
  sbits[i] = slow ? sbits[i] | bit : sbits[i] & ~bit;
  w->pos = w->pos + 1 == w->size ? 0 : w->pos + 1;
}

bool wflo__bwindow_add(wflo__bwindow_t *w, bool failure, bool slow,
                       uint64_t now_ns) {
  if (w->mode == WFLO_WINDOW_COUNT)
    count_add(w, failure, slow);
  else
    time_add(w, failure, slow, now_ns);
  w->total++;
  w->failures += failure;
  w->slow += slow;
  if (w->total < w->min_calls)
    return false;
  /* Divide rather than multiply the threshold: failures / total is the
   * correctly rounded quotient, so a rate that equals the configured
   * decimal exactly (3 of 10 against 0.3) compares equal, as the user
   * expects "at the threshold" to open. */
  return (double)w->failures / (double)w->total >= w->failure_rate ||
         (double)w->slow / (double)w->total >= w->slow_rate;
}

uint32_t wflo__bwindow_failures(wflo__bwindow_t *w, uint64_t now_ns) {
  if (w->mode == WFLO_WINDOW_TIME && w->started)
    time_advance(w, now_ns / WFLO__NS_PER_S);
  return w->failures;
}

uint32_t wflo__bwindow_total(wflo__bwindow_t *w, uint64_t now_ns) {
  if (w->mode == WFLO_WINDOW_TIME && w->started)
    time_advance(w, now_ns / WFLO__NS_PER_S);
  return w->total;
}
