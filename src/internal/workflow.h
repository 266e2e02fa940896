/* Private side of the workflow module: a snapshot of every live workflow for
 * health and metrics, and the pricing lookup shared by pricing.c and llm.c. */
#ifndef WFLO_INTERNAL_WORKFLOW_H
#define WFLO_INTERNAL_WORKFLOW_H

#include "common.h"

/* --- workflows (workflow.c) ---------------------------------------------- */

/* Counters of one workflow, read with relaxed atomics (each value is exact,
 * the set is not one instant when executions are running). */
typedef struct wflo__workflow_stats {
  double budget_per_execution_usd; /* WFLO_BUDGET_UNLIMITED possible */
  uint64_t executions;             /* ended: succeeded + failed + refused */
  uint64_t succeeded;              /* result >= 0 */
  uint64_t failed;                 /* other negative results */
  uint64_t refused;                /* result WFLO_E_BUDGET_EXCEEDED */
  uint64_t in_flight;              /* begun, not yet ended */
  double spent_usd;                /* sum over ended executions */
} wflo__workflow_stats_t;

/* Takes a reference on every live workflow and returns them in a new array.
 * Release with wflo__workflow_list_free(). Returns 0 or WFLO_E_NOMEM; *n may
 * be 0 (*arr NULL). */
int wflo__workflow_list(wflo_workflow_t ***arr, size_t *n);
/* Drops the references and frees the array. */
void wflo__workflow_list_free(wflo_workflow_t **arr, size_t n);
/* The workflow's registered name. Borrowed, valid while wf lives. */
const char *wflo__workflow_name(const wflo_workflow_t *wf);
void wflo__workflow_stats(const wflo_workflow_t *wf,
                          wflo__workflow_stats_t *out);

/* --- pricing (pricing.c) ------------------------------------------------- */

/* Prices in exact integer units: pico-dollars per token (= micro-dollars per
 * million tokens, so a price given with up to 6 decimals is exact). */
typedef struct wflo__price {
  uint64_t input_pico;    /* per prompt token */
  uint64_t output_pico;   /* per completion token */
  uint64_t max_call_pico; /* what one call reserves */
} wflo__price_t;

/* Copies the prices of `model` out of the table (loaded entries override the
 * built-in ones). Returns 0, WFLO_E_NOT_FOUND, or WFLO_E_INVAL (NULL). */
int wflo__pricing_lookup(const char *model, wflo__price_t *out);

/* Cost of a usage in pico, saturating at UINT64_MAX (never wraps). */
uint64_t wflo__pricing_cost_pico(const wflo__price_t *p,
                                 const wflo_llm_usage_t *u);

#endif /* WFLO_INTERNAL_WORKFLOW_H */
