/* Tracked LLM calls: reserve the model's max_call_usd before the call,
 * commit the exact cost of the tokens used after it. Costs stay in
 * pico-dollars from the price table to the budget, never through a double. */
#include "internal/context.h"
#include "internal/metrics.h"
#include "internal/workflow.h"

/* A cost above the largest amount is recorded as the largest amount: the
 * budget words then saturate the same way, and no conversion can wrap. */
static uint64_t clamp_cost(uint64_t pico) {
  uint64_t max = wflo__usd_to_pico(WFLO_BUDGET_MAX);
  return pico > max ? max : pico;
}

/* wflo_llm_tokens_total{model,kind}: what the call used, counted at its
 * commit whether or not a context pays for it. */
static void count_tokens(const char *model, const wflo_llm_usage_t *u) {
  const char *labels[2] = {model, "prompt"};
  if (u->prompt_tokens > 0)
    wflo__counter_add_labels(WFLO__M_LLM_TOKENS, labels, u->prompt_tokens);
  labels[1] = "completion";
  if (u->completion_tokens > 0)
    wflo__counter_add_labels(WFLO__M_LLM_TOKENS, labels, u->completion_tokens);
}

static int commit_usage(wflo_budget_resv_t *resv, const wflo__price_t *p,
                        const wflo_llm_usage_t *u, const char *model) {
  uint64_t cost = clamp_cost(wflo__pricing_cost_pico(p, u));
  count_tokens(model, u);
  return wflo__budget_commit_pico(resv, cost, model);
}

int wflo_llm_call(const char *model, int (*fn)(void *arg, wflo_llm_usage_t *u),
                  void *arg) {
  wflo_budget_resv_t resv;
  wflo_llm_usage_t u;
  wflo__price_t p;
  int rc, crc;
  if (model == NULL || fn == NULL)
    return WFLO_E_INVAL;
  rc = wflo__pricing_lookup(model, &p);
  if (rc != 0)
    return rc;
  memset(&u, 0, sizeof(u));
  /* The prices looked up now are the ones charged: a reload during the
   * call does not change what this call costs. */
  rc = wflo__budget_reserve_pico(wflo_context_current(), p.max_call_pico,
                                 &resv);
  if (rc != 0)
    return rc;
  rc = fn(arg, &u);
  crc = commit_usage(&resv, &p, &u, model);
  return crc == WFLO_E_BUDGET_EXCEEDED ? crc : rc;
}

int wflo_llm_reserve(const char *model, wflo_budget_resv_t *resv) {
  wflo__price_t p;
  int rc;
  if (resv == NULL)
    return WFLO_E_INVAL;
  resv->state = 0;
  if (model == NULL)
    return WFLO_E_INVAL;
  rc = wflo__pricing_lookup(model, &p);
  if (rc != 0)
    return rc;
  return wflo__budget_reserve_pico(wflo_context_current(), p.max_call_pico,
                                   resv);
}

int wflo_llm_commit(wflo_budget_resv_t *resv, const char *model,
                    const wflo_llm_usage_t *u) {
  wflo__price_t p;
  int rc;
  if (resv == NULL)
    return WFLO_E_INVAL;
  /* Same check as wflo_budget_commit(): a used reservation is a state
   * error whatever the other arguments. */
  if (resv->state != WFLO__RESV_HELD)
    return WFLO_E_STATE;
  if (model == NULL || u == NULL)
    return WFLO_E_INVAL;
  rc = wflo__pricing_lookup(model, &p);
  if (rc != 0)
    return rc;
  return commit_usage(resv, &p, u, model);
}

/* --- WFLO_TRACK_LLM ------------------------------------------------------ */

/* guard states */
enum { G_FRESH = 0, G_HELD = 1, G_DONE = 2 };

int wflo_llm_guard_begin(wflo_llm_guard_t *g, const char *model,
                         wflo_llm_usage_t *usage, int *rc) {
  wflo__price_t p;
  if (g->state != G_FRESH)
    return 0;
  g->state = G_DONE;
  g->rc = rc;
  g->usage = usage;
  g->model = model;
  memset(usage, 0, sizeof(*usage));
  *rc = wflo__pricing_lookup(model, &p);
  if (*rc != 0)
    return 0;
  g->input_pico = p.input_pico;
  g->output_pico = p.output_pico;
  *rc = wflo__budget_reserve_pico(wflo_context_current(), p.max_call_pico,
                                  &g->resv);
  if (*rc != 0)
    return 0;
  g->state = G_HELD;
  return 1;
}

void wflo_llm_guard_end(wflo_llm_guard_t *g) {
  wflo__price_t p;
  if (g->state != G_HELD)
    return;
  g->state = G_DONE;
  p.input_pico = g->input_pico;
  p.output_pico = g->output_pico;
  p.max_call_pico = 0;
  if (commit_usage(&g->resv, &p, g->usage, g->model) == WFLO_E_BUDGET_EXCEEDED)
    *g->rc = WFLO_E_BUDGET_EXCEEDED;
}
