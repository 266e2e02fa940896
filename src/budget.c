/* Budget accounting: reservations, commits and charges on a context and its
 * ancestors, lock-free, in integer pico-dollars.
 *
 * Each context keeps two words (internal/context.h):
 *   used     = spent + held reservations, the admission word;
 *   reserved = held reservations.
 * Spend is derived as used - reserved.
 *
 * Why this split: admission must compare one value against the budget and
 * update it atomically. Checking spent and reserved kept in two words with a
 * CAS on one of them is wrong: a commit (spent up, reserved down) followed by
 * a new reservation of the same size restores `reserved` to the value a
 * stale reserver read, its CAS succeeds (ABA) and it admits against a stale
 * spend. A CAS on `used` alone has no such hole: whatever changed `used`
 * since it was read makes the CAS fail. A 128-bit CAS would fit both words
 * but is not lock-free everywhere. And a charge (reserve + commit of the
 * same amount) then touches `used` only: one CAS, which is what keeps an
 * uncontended charge close to the cost of one atomic add.
 *
 * Invariant: through reservations and charges, used <= budget at every level
 * of the chain, so spend never exceeds a budget unless a commit exceeded its
 * reservation (or the budget was lowered). Spend read while other threads
 * are between their two word updates may momentarily count an in-flight
 * reservation as spent; at rest it is exact.
 *
 * Overflow: a single amount is at most 1e18 pico (WFLO_BUDGET_MAX), so
 * admission against a finite budget cannot overflow. Unlimited budgets and
 * commits above their reservations can push `used` up without bound: it
 * saturates at WFLO__PICO_SAT and stays there (sticky), and spend then reads
 * as saturated. `reserved` is only ever incremented and later decremented by
 * the same amounts, so modular arithmetic keeps it exact. */
#include "internal/config.h"
#include "internal/context.h"
#include "internal/metrics.h"

#if defined(__GNUC__) || defined(__clang__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

static uint64_t sat_add(uint64_t a, uint64_t b) {
  return a > WFLO__PICO_SAT - b ? WFLO__PICO_SAT : a + b;
}

/* Admission: used += x if it still fits the budget. One CAS, relaxed: the
 * words are counters; nothing else is published through them. */
static inline bool take(wflo_context_t *c, uint64_t x) {
  uint64_t budget =
      atomic_load_explicit(&c->budget_pico, memory_order_relaxed);
  uint64_t o = atomic_load_explicit(&c->used, memory_order_relaxed), n;
  do {
    if (budget == WFLO__PICO_UNLIMITED) {
      n = sat_add(o, x);
    } else {
      if (x > budget || o > budget - x)
        return false; /* also refuses a saturated word */
      n = o + x;
    }
  } while (!atomic_compare_exchange_weak_explicit(
      &c->used, &o, n, memory_order_relaxed, memory_order_relaxed));
  return true;
}

/* used = used - sub + add, saturating and sticky. `sub` was added earlier
 * by this caller, so used >= sub unless the word saturated. Returns the new
 * value. */
static uint64_t adjust(wflo_context_t *c, uint64_t add, uint64_t sub) {
  uint64_t o = atomic_load_explicit(&c->used, memory_order_relaxed), n;
  do {
    if (o == WFLO__PICO_SAT)
      return o;
    n = sat_add(o > sub ? o - sub : 0, add);
  } while (!atomic_compare_exchange_weak_explicit(
      &c->used, &o, n, memory_order_relaxed, memory_order_relaxed));
  return n;
}

/* Undoes take() on the levels from `from` up to, not including, `to`. */
static void untake(wflo_context_t *from, wflo_context_t *to, uint64_t x) {
  for (; from != to; from = from->parent)
    adjust(from, 0, x);
}

uint64_t wflo__budget_spent_pico(const wflo_context_t *ctx) {
  wflo_context_t *c = (wflo_context_t *)(uintptr_t)ctx;
  uint64_t r = atomic_load_explicit(&c->reserved, memory_order_relaxed);
  uint64_t u = atomic_load_explicit(&c->used, memory_order_relaxed);
  if (u == WFLO__PICO_SAT)
    return u;
  return u > r ? u - r : 0;
}

static void emit_exceeded(wflo_context_t *c, uint64_t requested) {
  if (!wflo__event_on(WFLO_LOG_WARN))
    return;
  wflo__emit(
      "budget_exceeded", WFLO_LOG_WARN,
      wflo__json_obj("execution_id", wflo__json_string(c->execution_id),
                     "workflow", wflo__json_string(c->workflow), "budget_usd",
                     wflo__json_real(atomic_load(&c->budget_usd)), "spent_usd",
                     json_real(wflo__pico_to_usd(wflo__budget_spent_pico(c))),
                     "requested_usd", json_real(wflo__pico_to_usd(requested)),
                     NULL));
}

/* --- metrics ----------------------------------------------------------------
 * Spend is counted once, at the committing context, under its workflow
 * name: a commit that rolls up into ancestors is still one amount spent.
 * The context holds its series from its first commit or charge, so a charge
 * costs a pointer load and an add to this thread's own counter cell, with
 * no label lookup. Refusals are rare: a lookup by label. */

/* The first amount a context spends (resolves and publishes its series;
 * another thread may publish the same series first), or the first a thread
 * counts (claims its shard). Out of line and called last, so the charge
 * path keeps nothing live across a call. */
static NOINLINE void count_spent_slow(wflo_context_t *c, uint64_t pico) {
  const char *labels[1] = {c->workflow};
  wflo__metric_series_t *s, *seen = NULL;
  s = atomic_load_explicit(&c->m_spent, memory_order_acquire);
  if (s == NULL) {
    s = wflo__metric_get(WFLO__M_BUDGET_SPENT, labels);
    if (s == NULL)
      return; /* out of memory: this amount is not counted */
    if (!atomic_compare_exchange_strong(&c->m_spent, &seen, s)) {
      wflo__metric_release(s); /* the same series: drop our hold */
      s = seen;
    }
  }
  wflo__counter_add(s, pico);
}

static inline void count_spent(wflo_context_t *c, uint64_t pico) {
  wflo__metric_series_t *s;
  unsigned slot;
  if (!wflo__metrics_active() || pico == 0)
    return;
  s = atomic_load_explicit(&c->m_spent, memory_order_acquire);
  slot = wflo__tl_metric_slot;
  if (wflo__unlikely(s == NULL || slot == 0)) {
    count_spent_slow(c, pico);
    return;
  }
  wflo__metric_cell_add(wflo__metric_cell(s, slot, 0), slot, pico);
}

static void count_refusal(const wflo_context_t *c) {
  const char *labels[1] = {c->workflow};
  wflo__counter_add_labels(WFLO__M_BUDGET_REFUSALS, labels, 1);
}

/* Takes x on every level of the chain; on a refusal undoes the levels
 * already taken and returns the level that refused. */
static wflo_context_t *take_chain(wflo_context_t *ctx, uint64_t x) {
  wflo_context_t *c;
  for (c = ctx; c != NULL; c = c->parent) {
    if (!take(c, x)) {
      untake(ctx, c, x);
      return c;
    }
  }
  return NULL;
}

int wflo__budget_reserve_pico(wflo_context_t *ctx, uint64_t pico,
                              wflo_budget_resv_t *resv) {
  wflo_context_t *c;
  resv->state = 0;
  resv->ctx = NULL;
  resv->pico = 0;
  resv->usd = 0.0;
  if (ctx != NULL) {
    c = take_chain(ctx, pico);
    if (c != NULL) {
      count_refusal(ctx);
      emit_exceeded(c, pico);
      return WFLO_E_BUDGET_EXCEEDED;
    }
    for (c = ctx; c != NULL; c = c->parent)
      atomic_fetch_add_explicit(&c->reserved, pico, memory_order_relaxed);
    resv->ctx = wflo_context_ref(ctx);
    resv->pico = pico;
    resv->usd = wflo__pico_to_usd(pico);
  }
  resv->state = WFLO__RESV_HELD;
  return 0;
}

int wflo_budget_reserve(wflo_context_t *ctx, double usd,
                        wflo_budget_resv_t *resv) {
  if (resv == NULL)
    return WFLO_E_INVAL;
  resv->state = 0;
  if (ctx == NULL || !wflo__amount_ok(usd))
    return WFLO_E_INVAL;
  return wflo__budget_reserve_pico(ctx, wflo__usd_to_pico(usd), resv);
}

/* Spend is past the budget at level c. Only looked at when `used` (exact,
 * just returned by our CAS) is past it: spend <= used always, so below
 * that nothing can be exceeded and the fast path reads nothing more. */
static bool over_budget(wflo_context_t *c, uint64_t used_now) {
  uint64_t budget =
      atomic_load_explicit(&c->budget_pico, memory_order_relaxed);
  if (budget == WFLO__PICO_UNLIMITED || used_now <= budget)
    return false;
  return wflo__budget_spent_pico(c) > budget;
}

int wflo__budget_commit_pico(wflo_budget_resv_t *resv, uint64_t pico,
                             const char *model) {
  wflo_context_t *ctx = resv->ctx, *c, *exceeded = NULL;
  uint64_t x = resv->pico;
  resv->state = WFLO__RESV_USED;
  resv->ctx = NULL;
  if (ctx == NULL)
    return 0; /* reserved with no context: charges nothing */
  for (c = ctx; c != NULL; c = c->parent) {
    uint64_t u;
    /* reserved first, then used: in between, a reader sees the amount as
     * spent (about to be true) rather than as freed budget. */
    atomic_fetch_sub_explicit(&c->reserved, x, memory_order_relaxed);
    u = adjust(c, pico, x);
    if (pico > 0 && exceeded == NULL && over_budget(c, u))
      exceeded = c;
  }
  count_spent(ctx, pico);
  /* Events and the ledger run after the accounting, with no lock held. */
  wflo__ledger_record(ctx, model, pico);
  if (exceeded != NULL)
    emit_exceeded(exceeded, pico);
  wflo_context_put(ctx);
  return exceeded != NULL ? WFLO_E_BUDGET_EXCEEDED : 0;
}

int wflo_budget_commit(wflo_budget_resv_t *resv, double actual_usd) {
  if (resv == NULL)
    return WFLO_E_INVAL;
  if (resv->state != WFLO__RESV_HELD)
    return WFLO_E_STATE;
  if (!wflo__amount_ok(actual_usd))
    return WFLO_E_INVAL;
  return wflo__budget_commit_pico(resv, wflo__usd_to_pico(actual_usd), NULL);
}

/* Out of line: the refusal's label lookup would otherwise give the charge
 * path a stack frame. */
static NOINLINE int charge_refused(wflo_context_t *ctx,
                                   wflo_context_t *refused, uint64_t x) {
  count_refusal(ctx);
  emit_exceeded(refused, x);
  return WFLO_E_BUDGET_EXCEEDED;
}

/* A child context, or a ledger to feed: the chain is taken level by
 * level. Out of line, so the common charge below has no frame to build. */
static NOINLINE int charge_slow(wflo_context_t *ctx, uint64_t x) {
  wflo_context_t *refused = NULL;
  if (wflo__unlikely(!take(ctx, x))) {
    refused = ctx;
  } else if (ctx->parent != NULL) {
    refused = take_chain(ctx->parent, x);
    if (refused != NULL)
      adjust(ctx, 0, x);
  }
  if (refused != NULL)
    return charge_refused(ctx, refused, x);
  if (wflo__ledger_on())
    wflo__ledger_record(ctx, NULL, x);
  count_spent(ctx, x);
  return 0;
}

int wflo_budget_charge(wflo_context_t *ctx, double usd) {
  uint64_t x;
  if (wflo__unlikely(ctx == NULL || !wflo__amount_ok(usd)))
    return WFLO_E_INVAL;
  x = wflo__usd_to_pico(usd);
  /* reserve + commit of the same amount: used += x and nothing else, so
   * no reservation is ever visible and `reserved` is untouched. A root
   * context with no ledger (the common case) costs one CAS and one add to
   * this thread's own cell of the spend counter, and calls nothing. */
  if (wflo__unlikely(ctx->parent != NULL || wflo__ledger_on()))
    return charge_slow(ctx, x);
  if (wflo__unlikely(!take(ctx, x)))
    return charge_refused(ctx, ctx, x);
  count_spent(ctx, x);
  return 0;
}

double wflo_budget_spent(const wflo_context_t *ctx) {
  if (ctx == NULL)
    return 0.0;
  return wflo__pico_to_usd(wflo__budget_spent_pico(ctx));
}

double wflo_budget_remaining(const wflo_context_t *ctx) {
  uint64_t best = WFLO__PICO_UNLIMITED;
  const wflo_context_t *c;
  if (ctx == NULL)
    return NAN;
  for (c = ctx; c != NULL; c = c->parent) {
    uint64_t budget = atomic_load_explicit(
        &((wflo_context_t *)(uintptr_t)c)->budget_pico, memory_order_relaxed);
    uint64_t u = atomic_load_explicit(&((wflo_context_t *)(uintptr_t)c)->used,
                                      memory_order_relaxed);
    uint64_t left;
    if (budget == WFLO__PICO_UNLIMITED)
      continue;
    left = u >= budget ? 0 : budget - u;
    if (left < best)
      best = left;
  }
  return best == WFLO__PICO_UNLIMITED ? WFLO_BUDGET_UNLIMITED
                                      : wflo__pico_to_usd(best);
}
