/* Private side of the context module: the struct (budget accounting lives
 * here too), the scope used to re-enter a captured context around libwflo's
 * own callbacks, and the pico-dollar budget entry points used by llm.c. */
#ifndef WFLO_INTERNAL_CONTEXT_H
#define WFLO_INTERNAL_CONTEXT_H

#include "common.h"
#include "registry.h"

/* Pico-dollars per USD, and the pico value standing for "no limit". */
#define WFLO__PICO_PER_USD 1e12
#define WFLO__PICO_UNLIMITED UINT64_MAX
/* Sticky saturation value of the accounting words (see budget.c). */
#define WFLO__PICO_SAT UINT64_MAX

struct wflo_context_s {
  wflo__ref_t ref;
  char *execution_id;
  char *workflow; /* may be NULL */
  wflo_context_t *parent;
  /* Read-mostly: the budget as the user gave it (read lock-free by
   * wflo_get_current_budget()) and in pico for reservations. Written only
   * by wflo_set_current_budget(); the pair need not change atomically
   * together (each reader uses one of them). */
  _Atomic double budget_usd;
  _Atomic uint64_t budget_pico;
  /* The workflow whose execution this context is (workflow.c), cleared by
   * wflo_workflow_end() so one execution cannot be ended twice while the
   * context lives on; 0 for contexts made by wflo_context_new(). */
  atomic_uintptr_t owner;
  /* wflo_budget_spent_usd_total{workflow}'s series, held by the context
   * from its first commit or charge (budget.c) to its destruction: the
   * charge path then adds to it without a label lookup. NULL before. */
  _Atomic(struct wflo__metric_series *) m_spent;
  /* Keep the write-hot words off the read-mostly line, so threads reading
   * the budget do not bounce with threads spending. */
  char pad[64];
  /* used = spent + held reservations: the one word reservations CAS against
   * the budget (a single word, so no ABA between two counters). reserved =
   * held reservations; spent is derived as used - reserved. A charge touches
   * only `used`. `used` saturates stickily at WFLO__PICO_SAT. */
  _Atomic uint64_t used;
  _Atomic uint64_t reserved;
};

/* Re-entering a captured context around a callback: no allocation, no
 * reference taken (the operation holds one). Contexts the callback enters
 * and forgets to exit are exited when the scope ends. The signatures are
 * used by the retry and lock modules: keep them stable. */
typedef struct wflo__ctx_scope {
  wflo_context_t *saved_current;
  size_t saved_base;
} wflo__ctx_scope_t;

void wflo__ctx_scope_enter(wflo__ctx_scope_t *s, wflo_context_t *ctx);
void wflo__ctx_scope_exit(wflo__ctx_scope_t *s);

/* USD (already validated: finite, in [0, WFLO_BUDGET_MAX]) to pico,
 * rounded to nearest; 1e6 USD is 1e18 pico, well inside uint64_t. */
static inline uint64_t wflo__usd_to_pico(double usd) {
  /* Through int64_t: one signed conversion instruction, and the value
   * (<= 1e18) is far below INT64_MAX. */
  return (uint64_t)(int64_t)(usd * WFLO__PICO_PER_USD + 0.5);
}
static inline double wflo__pico_to_usd(uint64_t pico) {
  return (double)pico / WFLO__PICO_PER_USD;
}
/* true for an amount a reservation, commit or charge accepts. */
static inline bool wflo__amount_ok(double usd) {
  return usd >= 0.0 && usd <= WFLO_BUDGET_MAX; /* false for NaN too */
}
/* true for a budget: an amount, or WFLO_BUDGET_UNLIMITED. */
static inline bool wflo__budget_ok(double usd) {
  return wflo__amount_ok(usd) || usd == WFLO_BUDGET_UNLIMITED;
}
static inline uint64_t wflo__budget_to_pico(double usd) {
  return usd == WFLO_BUDGET_UNLIMITED ? WFLO__PICO_UNLIMITED
                                      : wflo__usd_to_pico(usd);
}

/* wflo_budget_resv_t.state values; anything else is "not held". */
#define WFLO__RESV_HELD 0x52455356u /* "RESV" */
#define WFLO__RESV_USED 0x55534544u /* "USED" */

/* The budget entry points in pico, for callers that computed an exact cost
 * (llm.c). ctx may be NULL in reserve: the reservation is then held but
 * empty (commits charge nothing), which is how an LLM call with no current
 * context runs uncharged. model names the ledger record's "model" (NULL:
 * null). Same results as the public functions. */
int wflo__budget_reserve_pico(wflo_context_t *ctx, uint64_t pico,
                              wflo_budget_resv_t *resv);
int wflo__budget_commit_pico(wflo_budget_resv_t *resv, uint64_t pico,
                             const char *model);
/* Spend of one context in pico (used - reserved, clamped; SAT when
 * saturated). */
uint64_t wflo__budget_spent_pico(const wflo_context_t *ctx);

/* ledger.c: true while a ledger is installed (a relaxed load: the commit
 * path checks it before calling wflo__ledger_record). */
extern atomic_bool wflo__ledger_installed;
static inline bool wflo__ledger_on(void) {
  return atomic_load_explicit(&wflo__ledger_installed, memory_order_relaxed);
}

/* ledger.c: writes one record for a commit or charge of `pico` on ctx
 * (no-op when no ledger is set or pico is 0). No lock may be held. */
void wflo__ledger_record(wflo_context_t *ctx, const char *model,
                         uint64_t pico);

#endif /* WFLO_INTERNAL_CONTEXT_H */
