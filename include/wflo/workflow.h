/* libwflo workflows and LLM cost tracking. Include <wflo.h>, not this file.
 *
 * A workflow is a named kind of execution with a budget per execution. Each
 * execution runs in a fresh context (see context.h); every LLM call made in
 * it is checked against the budget before it is made (a reservation of the
 * model's max_call_usd) and charged after (the exact cost of the tokens
 * used). No store is read on the way: the only optional write is one ledger
 * record per charge. */
#ifndef WFLO_WORKFLOW_H
#define WFLO_WORKFLOW_H

#include "common.h"
#include "context.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- workflows ----------------------------------------------------------- */

/* Creates a workflow, registered by name while it is alive (health and
 * metrics list it). A second wflo_workflow_new() with the name of a live
 * workflow shares it: *out is a new reference to the registered one, which
 * keeps its own budget; when the budgets differ a config_conflict event
 * (warn: what "workflow", name) is emitted.
 * budget_per_execution_usd: finite in [0, WFLO_BUDGET_MAX], or
 * WFLO_BUDGET_UNLIMITED.
 * Returns: 0; WFLO_E_INVAL (name or out NULL, bad budget); WFLO_E_NOMEM.
 * Ownership: *out is a new reference; drop it with wflo_workflow_put(). The
 * name is copied. Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int
wflo_workflow_new(const char *name, double budget_per_execution_usd,
                  wflo_workflow_t **out);

/* Drops a reference; the last one unregisters and frees the workflow.
 * Executions begun and not yet ended hold references of their own. NULL is a
 * no-op. Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN void wflo_workflow_put(wflo_workflow_t *wf);

/* Runs fn(arg) as one execution: a fresh context (generated execution id,
 * the workflow's name, its budget per execution; its parent is the caller's
 * current context if any, so a nested workflow also draws on the outer
 * budget) is current while fn runs and is exited afterwards, with anything
 * fn left entered. The result is counted in the workflow's stats: >= 0
 * succeeded, WFLO_E_BUDGET_EXCEEDED refused, other negative codes failed.
 * Returns: fn's result, untouched; WFLO_E_INVAL (wf or fn NULL: fn not
 * called); WFLO_E_NOMEM (fn not called).
 * Thread-safety: any thread, concurrently. Callback: fn runs once, on the
 * calling thread, before this returns. Since: 0.1. */
WFLO_EXTERN int wflo_workflow_execute(wflo_workflow_t *wf,
                                      int (*fn)(void *arg), void *arg);

/* Begins an execution that spans loop callbacks: creates its context (as
 * wflo_workflow_execute() does) without entering it. Enter it yourself, or
 * start libwflo async operations inside wflo_context_run(*ctx, ...) so they
 * capture it. End it exactly once with wflo_workflow_end().
 * Returns: 0; WFLO_E_INVAL (NULL argument); WFLO_E_NOMEM.
 * Ownership: *ctx is a new reference, consumed by wflo_workflow_end(); the
 * execution also holds a reference on wf until it ends.
 * Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int wflo_workflow_begin(wflo_workflow_t *wf,
                                                   wflo_context_t **ctx);

/* Ends an execution begun by wflo_workflow_begin(): counts `result` (as
 * wflo_workflow_execute() does) and the context's spend in the workflow's
 * stats, and drops the reference on ctx. The context may still be entered
 * or captured elsewhere; it is freed once the last reference goes.
 * Returns: 0; WFLO_E_INVAL (NULL, or ctx not begun by this workflow: nothing
 * is counted or dropped). Calling it twice for one ctx is undefined (the
 * reference is gone). Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN int wflo_workflow_end(wflo_workflow_t *wf, wflo_context_t *ctx,
                                  int result);

/* Returns the workflow's totals as a JSON object: executions, succeeded,
 * failed, refused (integers; executions counts ended ones) and spent_usd
 * (real, summed over ended executions).
 * Returns: a new reference; NULL when wf is NULL or on out of memory.
 * Thread-safety: any thread; each counter is exact, the set is read while
 * other executions may end. Since: 0.1. */
WFLO_EXTERN json_t *wflo_workflow_stats_json(wflo_workflow_t *wf);

/* --- pricing ------------------------------------------------------------- */

/* Token counts of one LLM call, filled in by the caller's operation. */
typedef struct wflo_llm_usage {
  uint64_t prompt_tokens, completion_tokens;
  uint64_t reserved[4];
} wflo_llm_usage_t;

/* Loads model prices and merges them into the table: a loaded model
 * overrides a built-in one or an earlier load of the same name. Schema:
 *   {"models": {"NAME": {"input_per_mtok": 2.5, "output_per_mtok": 10.0,
 *                        "max_call_usd": 0.05}}}
 * Prices are USD per million tokens with at most 6 decimals (so costs in
 * pico-dollars are exact), finite, in [0, 1e6]; max_call_usd (what a call
 * reserves before it runs) is an amount in [0, WFLO_BUDGET_MAX]. All three
 * keys are required. All or nothing: on any error the table is unchanged.
 * The built-in entries (a few common models at their list prices when this
 * was written) are examples: load your own prices.
 * Returns: 0; WFLO_E_PARSE (not an object, unknown or missing key, wrong
 * JSON type); WFLO_E_INVAL (j NULL, empty name, value out of range or with
 * more than 6 decimals: also a config_invalid event); WFLO_E_NOMEM. errbuf
 * (may be NULL) names the offending model and key.
 * Ownership: j is borrowed; the table is library memory until
 * wflo_pricing_reset() (it counts as alive for wflo_set_allocator()).
 * Thread-safety: any thread; lookups in other threads see the old or the new
 * table, never a mix. Since: 0.1. */
WFLO_EXTERN int wflo_pricing_load_json(const json_t *j, char *errbuf,
                                       size_t len);

/* wflo_pricing_load_json() from a JSON file.
 * Returns: as wflo_pricing_load_json(); WFLO_E_NOT_FOUND when the file
 * cannot be opened; WFLO_E_PARSE for malformed JSON (errbuf gets the line
 * and column). Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN int wflo_pricing_load_file(const char *path, char *errbuf,
                                       size_t len);

/* Computes the cost of a usage: prompt_tokens * input price + completion_tokens
 * * output price, exact in pico-dollars, returned in USD.
 * Returns: 0; WFLO_E_NOT_FOUND (unknown model: never a zero cost);
 * WFLO_E_INVAL (NULL argument). Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN int wflo_pricing_cost(const char *model, const wflo_llm_usage_t *u,
                                  double *usd);

/* Drops every loaded price, leaving the built-in ones, and frees the table.
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN void wflo_pricing_reset(void);

/* --- LLM calls ----------------------------------------------------------- */

/* Makes one tracked LLM call: zeroes *u, reserves the model's max_call_usd
 * in the current context (refused: WFLO_E_BUDGET_EXCEEDED, fn not called),
 * calls fn(arg, u), then commits the cost of the usage fn filled in, even
 * when fn failed (money spent is never lost). With no current context fn
 * runs and nothing is charged. (fn's usage argument comes after arg: the
 * one exception to "user data last", because fn is the user's operation.)
 * Returns: fn's result, unless the commit took spend past the budget
 * (WFLO_E_BUDGET_EXCEEDED; the cost is recorded all the same);
 * WFLO_E_NOT_FOUND (unknown model, fn not called); WFLO_E_INVAL (NULL).
 * Thread-safety: any thread. Callback: fn runs at most once, on the calling
 * thread, before this returns. Since: 0.1. */
WFLO_EXTERN int wflo_llm_call(const char *model,
                              int (*fn)(void *arg, wflo_llm_usage_t *u),
                              void *arg);

/* Async pair, first half: reserves the model's max_call_usd in the current
 * context before an asynchronous request starts. With no current context the
 * reservation is held but empty (its commit charges nothing).
 * Returns: 0 (commit resv exactly once, with wflo_llm_commit() or
 * wflo_budget_commit()); WFLO_E_NOT_FOUND (unknown model);
 * WFLO_E_BUDGET_EXCEEDED (refused, with a budget_exceeded event);
 * WFLO_E_INVAL (NULL). Ownership: as wflo_budget_reserve().
 * Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int wflo_llm_reserve(const char *model,
                                                wflo_budget_resv_t *resv);

/* Async pair, second half: commits the cost of *u at the model's current
 * prices (from the request's callback, any thread) and writes a ledger
 * record naming the model.
 * Returns: as wflo_budget_commit(); WFLO_E_NOT_FOUND (unknown model: the
 * reservation stays held, commit it with wflo_budget_commit());
 * WFLO_E_INVAL (NULL: the reservation stays held). Since: 0.1. */
WFLO_EXTERN int wflo_llm_commit(wflo_budget_resv_t *resv, const char *model,
                                const wflo_llm_usage_t *u);

/* WFLO_TRACK_LLM(model, usage, rc) { ...; usage.prompt_tokens = ...;
 * rc = ...; }: the statement form of wflo_llm_call(). `usage` is a
 * wflo_llm_usage_t and `rc` an int, both declared by the caller. Before the
 * block: usage is zeroed and rc set to 0; an unknown model (rc =
 * WFLO_E_NOT_FOUND) or a refused reservation (rc = WFLO_E_BUDGET_EXCEEDED)
 * skips the block. After the block, the cost of what usage holds is
 * committed, and rc becomes WFLO_E_BUDGET_EXCEEDED when that took spend past
 * the budget. With gcc and clang, leaving the block by break, goto or return
 * commits what usage holds too (cleanup attribute; a `return rc;` returns rc
 * as it was before that commit); with other compilers only the normal end
 * is supported. model is evaluated once and must stay valid until the
 * block ends (its ledger records name it). `break` inside the block leaves
 * the block, not an enclosing loop. With no current context the block runs
 * and nothing is charged. */
typedef struct wflo_llm_guard {
  int state; /* 0 (zero-initialised) before the block starts */
  int *rc;
  wflo_llm_usage_t *usage;
  const char *model;
  uint64_t input_pico, output_pico;
  wflo_budget_resv_t resv;
  void *reserved[2];
} wflo_llm_guard_t;

/* Helpers behind WFLO_TRACK_LLM; not for direct use. Since: 0.1. */
WFLO_EXTERN int wflo_llm_guard_begin(wflo_llm_guard_t *g, const char *model,
                                     wflo_llm_usage_t *usage, int *rc);
WFLO_EXTERN void wflo_llm_guard_end(wflo_llm_guard_t *g);

#if defined(__GNUC__) || defined(__clang__)
#define WFLO__LLM_CLEANUP __attribute__((cleanup(wflo_llm_guard_end)))
#else
#define WFLO__LLM_CLEANUP
#endif

/* Zero-initialises the guard without -Wmissing-field-initializers in C++. */
#ifdef __cplusplus
#define WFLO__LLM_ZERO                                                        \
  {}
#else
#define WFLO__LLM_ZERO                                                        \
  { 0 }
#endif

#define WFLO__TRACK_LLM(model, usage, rc, g)                                  \
  for (wflo_llm_guard_t WFLO__LLM_CLEANUP g = WFLO__LLM_ZERO;                 \
       wflo_llm_guard_begin(&g, (model), &(usage), &(rc));                    \
       wflo_llm_guard_end(&g))

#define WFLO_TRACK_LLM(model, usage, rc)                                      \
  WFLO__TRACK_LLM(model, usage, rc,                                           \
                  WFLO__CTX_CAT(wflo__llm_guard_, WFLO__CTX_UNIQUE))

/* --- ledger -------------------------------------------------------------- */

/* A write-only sink for spend records, implemented by the user (to persist
 * them in a database, a file, a queue). The budget check never consults it.
 * record() receives one entry per non-zero commit or charge (a commit of 0
 * abandons a reservation and writes nothing; a refused reservation or charge
 * writes nothing), on the committing thread, after the accounting, with no
 * libwflo lock held; entry keys: execution_id, workflow (or null), model (or
 * null outside LLM commits), usd (this amount), spent_usd (the context's
 * spend after it), unix_time (seconds since the epoch, real). The entry is
 * borrowed for the call. A non-zero return emits a ledger_failed event
 * (error: execution_id, error) and nothing else: the spend stays recorded. */
typedef struct wflo_ledger {
  int (*record)(const json_t *entry, void *ud);
  void *ud;
} wflo_ledger_t;

/* Installs the ledger; the struct is copied. NULL (or a NULL record)
 * removes it. Thread-safety: any thread; a commit racing with this call may
 * still write to the ledger being replaced. Since: 0.1. */
WFLO_EXTERN void wflo_set_ledger(const wflo_ledger_t *ledger);

/* Fills *out with a ready ledger that appends each entry as one JSON line to
 * the file at path (created if missing), flushed after each line; lines from
 * concurrent commits never interleave.
 * Returns: 0; WFLO_E_INVAL (NULL); WFLO_E_NOMEM; a negative errno (UV_E*
 * code, e.g. UV_ENOENT) when the file cannot be opened.
 * Ownership: out->ud owns the open file and library memory (alive for
 * wflo_set_allocator()) until wflo_ledger_jsonl_close(). Thread-safety: any
 * thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int wflo_ledger_jsonl(const char *path,
                                                 wflo_ledger_t *out);

/* Closes a ledger made by wflo_ledger_jsonl() and zeroes *l. Remove it first
 * (wflo_set_ledger(NULL) or another ledger) and make sure no commit that may
 * still be writing to it is in flight.
 * Returns: 0; WFLO_E_INVAL (NULL or not a JSON-lines ledger); WFLO_E_STATE
 * (it is still the installed ledger: nothing closed); a negative errno when
 * the final flush failed (the file is closed all the same).
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN int wflo_ledger_jsonl_close(wflo_ledger_t *l);

#ifdef __cplusplus
}
#endif

#endif /* WFLO_WORKFLOW_H */
