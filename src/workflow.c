/* Workflows: named kinds of execution with a budget per execution, counted
 * per result. Registered by name while alive so health and metrics can list
 * them (wflo__workflow_list). Counters are plain atomics: executions run
 * concurrently on any thread and nothing here needs a lock. */
#include "internal/config.h"
#include "internal/context.h"
#include "internal/health.h"
#include "internal/registry.h"
#include "internal/workflow.h"

struct wflo_workflow_s {
  wflo__ref_t ref; /* first: the registry hands back &wf->ref */
  char *name;
  double budget_usd; /* per execution; immutable */
  struct {
    atomic_uint_fast64_t executions, succeeded, failed, refused, in_flight;
    _Atomic uint64_t spent_pico; /* saturating */
  } stats;
};

static wflo__registry_t registry = WFLO__REGISTRY_INIT;

/* Runs under the registry mutex: allocate and initialise only. */
static int create(const char *name, void *arg, wflo__ref_t **out) {
  wflo_workflow_t *wf = wflo__calloc(1, sizeof(*wf));
  if (wf == NULL)
    return WFLO_E_NOMEM;
  wf->name = wflo__strdup(name);
  if (wf->name == NULL) {
    wflo__free(wf, sizeof(*wf));
    return WFLO_E_NOMEM;
  }
  wflo__ref_init(&wf->ref);
  wf->ref.name = wf->name;
  wf->budget_usd = *(const double *)arg;
  *out = &wf->ref;
  return 0;
}

int wflo_workflow_new(const char *name, double budget_per_execution_usd,
                      wflo_workflow_t **out) {
  wflo__ref_t *ref;
  wflo_workflow_t *wf;
  bool created;
  int rc;
  if (name == NULL || out == NULL ||
      !wflo__budget_ok(budget_per_execution_usd))
    return WFLO_E_INVAL;
  rc = wflo__registry_get(&registry, name, create, &budget_per_execution_usd,
                          &ref, &created);
  if (rc != 0)
    return rc;
  wf = wflo__container_of(ref, wflo_workflow_t, ref);
  /* Sharing by name keeps one set of stats per name, which is what health
   * and metrics report; a different budget is worth a warning, not a
   * failure, as for breakers and locks fetched by name. */
  if (!created && wf->budget_usd != budget_per_execution_usd &&
      wflo__event_on(WFLO_LOG_WARN))
    wflo__emit("config_conflict", WFLO_LOG_WARN,
               wflo__json_obj("what", json_string("workflow"), "name",
                              wflo__json_string(name), NULL));
  *out = wf;
  return 0;
}

void wflo_workflow_put(wflo_workflow_t *wf) {
  if (wf == NULL || !wflo__ref_dec(&wf->ref))
    return;
  wflo__strfree(wf->name);
  wflo__free(wf, sizeof(*wf));
}

int wflo_workflow_begin(wflo_workflow_t *wf, wflo_context_t **ctx) {
  wflo_context_t *c;
  int rc;
  if (wf == NULL || ctx == NULL)
    return WFLO_E_INVAL;
  /* The caller's current context (if any) is the parent: a workflow run
   * from inside another execution also draws on that one's budget. */
  rc = wflo_context_new(NULL, wf->name, wf->budget_usd, wflo_context_current(),
                        &c);
  if (rc != 0)
    return rc;
  atomic_store(&c->owner, (uintptr_t)wf);
  wflo__ref_inc(&wf->ref); /* the execution keeps its workflow alive */
  atomic_fetch_add_explicit(&wf->stats.in_flight, 1, memory_order_relaxed);
  *ctx = c;
  return 0;
}

static void add_spent(wflo_workflow_t *wf, uint64_t pico) {
  uint64_t o = atomic_load_explicit(&wf->stats.spent_pico,
                                    memory_order_relaxed),
           n;
  do
    n = o > UINT64_MAX - pico ? UINT64_MAX : o + pico;
  while (!atomic_compare_exchange_weak_explicit(&wf->stats.spent_pico, &o, n,
                                                memory_order_relaxed,
                                                memory_order_relaxed));
}

int wflo_workflow_end(wflo_workflow_t *wf, wflo_context_t *ctx, int result) {
  uintptr_t expected = (uintptr_t)wf;
  atomic_uint_fast64_t *counter;
  if (wf == NULL || ctx == NULL ||
      !atomic_compare_exchange_strong(&ctx->owner, &expected, 0))
    return WFLO_E_INVAL;
  add_spent(wf, wflo__budget_spent_pico(ctx));
  if (result >= 0)
    counter = &wf->stats.succeeded;
  else if (result == WFLO_E_BUDGET_EXCEEDED)
    counter = &wf->stats.refused;
  else
    counter = &wf->stats.failed;
  atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&wf->stats.executions, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&wf->stats.in_flight, 1, memory_order_relaxed);
  wflo_context_put(ctx);
  wflo_workflow_put(wf); /* the reference begin took */
  return 0;
}

int wflo_workflow_execute(wflo_workflow_t *wf, int (*fn)(void *arg),
                          void *arg) {
  wflo_context_t *ctx;
  int rc;
  if (wf == NULL || fn == NULL)
    return WFLO_E_INVAL;
  rc = wflo_workflow_begin(wf, &ctx);
  if (rc != 0)
    return rc;
  /* wflo_context_run: fn cannot exit the execution's context, and what fn
   * leaves entered is exited before the execution is counted. */
  rc = wflo_context_run(ctx, fn, arg);
  wflo_workflow_end(wf, ctx, rc);
  return rc;
}

void wflo__workflow_stats(const wflo_workflow_t *wf,
                          wflo__workflow_stats_t *out) {
  wflo_workflow_t *w = (wflo_workflow_t *)(uintptr_t)wf;
#define LOAD(f) atomic_load_explicit(&w->stats.f, memory_order_relaxed)
  out->budget_per_execution_usd = w->budget_usd;
  out->executions = LOAD(executions);
  out->succeeded = LOAD(succeeded);
  out->failed = LOAD(failed);
  out->refused = LOAD(refused);
  out->in_flight = LOAD(in_flight);
  out->spent_usd = wflo__pico_to_usd(LOAD(spent_pico));
#undef LOAD
}

const char *wflo__workflow_name(const wflo_workflow_t *wf) { return wf->name; }

static json_t *count(uint64_t v) {
  return json_integer(v > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)v);
}

json_t *wflo_workflow_stats_json(wflo_workflow_t *wf) {
  wflo__workflow_stats_t s;
  if (wf == NULL)
    return NULL;
  wflo__workflow_stats(wf, &s);
  return wflo__json_obj("executions", count(s.executions), "succeeded",
                        count(s.succeeded), "failed", count(s.failed),
                        "refused", count(s.refused), "spent_usd",
                        json_real(s.spent_usd), NULL);
}

int wflo__workflow_list(wflo_workflow_t ***arr, size_t *n) {
  wflo__ref_t **refs;
  wflo_workflow_t **out = NULL;
  size_t i, k;
  int rc = wflo__registry_snapshot(&registry, &refs, &k);
  if (rc != 0)
    return rc;
  if (k > 0) {
    out = wflo__calloc(k, sizeof(*out));
    for (i = 0; i < k; i++) {
      wflo_workflow_t *wf = wflo__container_of(refs[i], wflo_workflow_t, ref);
      if (out != NULL)
        out[i] = wf;
      else
        wflo_workflow_put(wf);
    }
    wflo__free(refs, k * sizeof(*refs));
    if (out == NULL) {
      rc = WFLO_E_NOMEM;
      k = 0;
    }
  }
  *arr = out;
  *n = k;
  return rc;
}

void wflo__workflow_list_free(wflo_workflow_t **arr, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    wflo_workflow_put(arr[i]);
  wflo__free(arr, n * sizeof(*arr));
}

/* --- health --------------------------------------------------------------- */

static json_t *health_json(const wflo_workflow_t *wf) {
  wflo__workflow_stats_t s;
  wflo__workflow_stats(wf, &s);
  return wflo__json_obj(
      "name", wflo__json_string(wf->name), "budget_per_execution_usd",
      wflo__json_real(s.budget_per_execution_usd), "executions",
      count(s.executions), "succeeded", count(s.succeeded), "failed",
      count(s.failed), "refused", count(s.refused), "in_flight",
      count(s.in_flight), "spent_usd", json_real(s.spent_usd), NULL);
}

/* Workflows are informational: failures and budget refusals are the
 * executions' business, not libwflo's health. */
int wflo__workflow_health(json_t *arr, bool *healthy) {
  wflo_workflow_t **wfs;
  size_t n, i;
  int rc;
  WFLO_UNUSED(healthy);
  if (arr == NULL)
    return 0;
  rc = wflo__workflow_list(&wfs, &n);
  if (rc != 0)
    return rc;
  for (i = 0; i < n && rc == 0; i++)
    if (json_array_append_new(arr, health_json(wfs[i])) != 0)
      rc = WFLO_E_NOMEM;
  wflo__workflow_list_free(wfs, n);
  return rc;
}
