/* libwflo execution context and budget. Include <wflo.h>, not this file.
 *
 * A context carries one workflow execution's id, workflow name and budget.
 * Each thread has its own stack of entered contexts; libwflo's async paths
 * capture the context current when an operation starts and re-enter it
 * around the user's callbacks. */
#ifndef WFLO_CONTEXT_H
#define WFLO_CONTEXT_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest finite budget, and the unlimited one (JSON null). */
#define WFLO_BUDGET_MAX 1e6
#define WFLO_BUDGET_UNLIMITED (HUGE_VAL)

/* Creates a context. execution_id: NULL generates "exec-" + 32 hex digits,
 * unique in this process; otherwise copied (invalid UTF-8 is kept here and
 * replaced only when written to JSON). workflow: the workflow's name, copied,
 * may be NULL. budget_usd: finite in [0, WFLO_BUDGET_MAX], or
 * WFLO_BUDGET_UNLIMITED. parent: may be NULL; the child holds a reference on
 * it and its spending draws on the parent's budget too.
 * Returns: 0; WFLO_E_INVAL (bad budget, out NULL); WFLO_E_NOMEM.
 * Ownership: *out is a new reference; drop it with wflo_context_put().
 * Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int wflo_context_new(const char *execution_id,
                                                const char *workflow,
                                                double budget_usd,
                                                wflo_context_t *parent,
                                                wflo_context_t **out);

/* Takes one more reference on ctx and returns it (NULL in, NULL out).
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN wflo_context_t *wflo_context_ref(wflo_context_t *ctx);

/* Drops a reference; the last one frees the context. NULL is a no-op.
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN void wflo_context_put(wflo_context_t *ctx);

/* Makes ctx the calling thread's current context, nesting over the previous
 * one (which wflo_context_exit restores). The thread holds a reference on ctx
 * while it is entered. Returns: 0; WFLO_E_INVAL (NULL); WFLO_E_NOMEM.
 * Thread-safety: affects the calling thread only. Since: 0.1. */
WFLO_EXTERN int wflo_context_enter(wflo_context_t *ctx);

/* Leaves ctx, which must be the innermost context this thread entered, and
 * restores the outer one. Returns: 0; WFLO_E_INVAL (NULL); WFLO_E_STATE when
 * ctx is not the innermost entered context (inside a libwflo callback, the
 * re-entered context of the operation cannot be exited either).
 * Thread-safety: calling thread only. Since: 0.1. */
WFLO_EXTERN int wflo_context_exit(wflo_context_t *ctx);

/* Returns the calling thread's current context, or NULL.
 * Ownership: borrowed; valid while it stays entered. Since: 0.1. */
WFLO_EXTERN wflo_context_t *wflo_context_current(void);

/* Returns a new reference to the current context, or NULL if none, for
 * carrying it to another thread or callback. Since: 0.1. */
WFLO_EXTERN wflo_context_t *wflo_context_capture(void);

/* Runs fn(arg) with ctx current (ctx may be NULL: then with no context) and
 * restores the caller's context afterwards; for a user's own callbacks.
 * Returns fn's result, or WFLO_E_INVAL when fn is NULL. Since: 0.1. */
WFLO_EXTERN int wflo_context_run(wflo_context_t *ctx, int (*fn)(void *arg),
                                 void *arg);

/* Returns ctx's execution id. Ownership: borrowed, valid while ctx lives.
 * Since: 0.1. */
WFLO_EXTERN const char *wflo_context_execution_id(const wflo_context_t *ctx);

/* Returns the current context's execution id, or NULL if none.
 * Ownership: borrowed. Since: 0.1. */
WFLO_EXTERN const char *wflo_current_execution_id(void);

/* Returns the current context's budget in USD (the total, not what remains):
 * WFLO_BUDGET_UNLIMITED when unlimited, NAN when no context is current. Reads
 * no store and takes no lock. Since: 0.1. */
WFLO_EXTERN double wflo_get_current_budget(void);

/* Sets the current context's budget. Returns: 0; WFLO_E_INVAL for a budget
 * outside [0, WFLO_BUDGET_MAX] that is not WFLO_BUDGET_UNLIMITED; WFLO_E_STATE
 * when no context is current. Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN int wflo_set_current_budget(double usd);

/* WFLO_WITH_CONTEXT(ctx) { ... }: runs the block with ctx entered and exits
 * it when the block ends. With gcc and clang, leaving the block by break,
 * goto or return also exits it (cleanup attribute); with other compilers
 * only the normal end is supported. If entering fails (NOMEM) the block is
 * skipped. `break` inside the block leaves the block, not an enclosing loop. */
typedef struct wflo_context_guard {
  wflo_context_t *ctx; /* entered context, NULL once exited */
  int state;
} wflo_context_guard_t;

/* Helpers behind WFLO_WITH_CONTEXT; not for direct use. */
WFLO_EXTERN int wflo_context_guard_begin(wflo_context_guard_t *g,
                                         wflo_context_t *ctx);
WFLO_EXTERN void wflo_context_guard_end(wflo_context_guard_t *g);

#if defined(__GNUC__) || defined(__clang__)
#define WFLO__CTX_CLEANUP __attribute__((cleanup(wflo_context_guard_end)))
#else
#define WFLO__CTX_CLEANUP
#endif

#define WFLO__CTX_CAT2(a, b) a##b
#define WFLO__CTX_CAT(a, b) WFLO__CTX_CAT2(a, b)
#define WFLO__CTX_G WFLO__CTX_CAT(wflo_ctx_guard_, __LINE__)

#define WFLO_WITH_CONTEXT(ctx)                                                \
  for (wflo_context_guard_t WFLO__CTX_CLEANUP WFLO__CTX_G = {NULL, 0};        \
       wflo_context_guard_begin(&WFLO__CTX_G, (ctx));                         \
       wflo_context_guard_end(&WFLO__CTX_G))

#ifdef __cplusplus
}
#endif

#endif /* WFLO_CONTEXT_H */
