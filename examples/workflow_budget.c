/* A workflow with a budget per execution: tracked LLM calls are refused
 * once the budget cannot cover another call, and the workflow's totals are
 * printed as JSON.
 *
 * Build: cc -std=gnu11 workflow_budget.c $(pkg-config --cflags --libs wflo)
 * Run:   ./workflow_budget   (exits 0 when the fourth call was refused) */
#include <stdio.h>
#include <stdlib.h>

#include <wflo.h>

/* Stands in for an HTTP request to a model API: it reports the tokens the
 * API said it used. A real one would parse them from the response. */
static int fake_completion(void *arg, wflo_llm_usage_t *u) {
  (void)arg;
  u->prompt_tokens = 1200;
  u->completion_tokens = 400;
  return 0;
}

/* One execution of the workflow: runs with its own context, so every
 * tracked call below is checked against, and charged to, its budget. */
static int research(void *arg) {
  int i, rc = 0;
  (void)arg;
  printf("execution %s, budget $%.3f\n", wflo_current_execution_id(),
         wflo_get_current_budget());
  for (i = 1; i <= 5; i++) {
    /* Reserves the model's max_call_usd first; refused when it no longer
     * fits, in which case fake_completion is not called at all. */
    rc = wflo_llm_call("demo-model", fake_completion, NULL);
    if (rc == WFLO_E_BUDGET_EXCEEDED) {
      printf("  call %d refused: %s\n", i, wflo_strerror(rc));
      return rc; /* counted as "refused" in the stats */
    }
    printf("  call %d done, spent $%.4f so far\n", i,
           wflo_budget_spent(wflo_context_current()));
  }
  return rc;
}

int main(void) {
  wflo_workflow_t *wf;
  json_t *prices, *stats;
  char err[256];
  char *text;
  int rc;

  wflo_set_log_level(WFLO_LOG_OFF); /* keep the demo's output readable */

  /* Prices in USD per million tokens; max_call_usd is what each call
   * reserves before it runs. */
  prices = json_pack("{s:{s:{s:f,s:f,s:f}}}", "models", "demo-model",
                     "input_per_mtok", 2.5, "output_per_mtok", 10.0,
                     "max_call_usd", 0.02);
  rc = wflo_pricing_load_json(prices, err, sizeof(err));
  json_decref(prices);
  if (rc != 0) {
    fprintf(stderr, "pricing: %s\n", err);
    return 1;
  }

  /* Each call costs 1200 * $2.5/M + 400 * $10/M = $0.007. With a $0.035
   * budget, three calls fit (0.014 spent + 0.02 reserved <= 0.035); the
   * fourth cannot reserve its $0.02 on top of $0.021 spent. */
  rc = wflo_workflow_new("research", 0.035, &wf);
  if (rc != 0) {
    fprintf(stderr, "workflow: %s\n", wflo_strerror(rc));
    return 1;
  }
  rc = wflo_workflow_execute(wf, research, NULL);
  printf("execution result: %s\n", wflo_err_name(rc));
  rc = rc == WFLO_E_BUDGET_EXCEEDED ? 0 : 1; /* what this demo expects */

  /* executions, succeeded, failed, refused, spent_usd */
  stats = wflo_workflow_stats_json(wf);
  text = stats != NULL
             ? json_dumps(stats, JSON_COMPACT | JSON_REAL_PRECISION(10))
             : NULL;
  printf("stats: %s\n", text != NULL ? text : "(out of memory)");
  free(text);
  json_decref(stats);

  wflo_workflow_put(wf);
  wflo_pricing_reset();
  return rc;
}
