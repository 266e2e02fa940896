/* libwflo execution context and budget. Include <wflo.h>, not this file.
 *
 * A context carries one workflow execution's id, workflow name and budget.
 * Each thread has its own stack of entered contexts; libwflo's async paths
 * capture the context current when an operation starts and re-enter it
 * around the user's callbacks, so two executions interleaved on one loop
 * never see each other's context.
 *
 * Money is USD as double in the API and integer pico-dollars (1e-12 USD)
 * inside, so sums are exact. Spending goes through reservations: a
 * reservation succeeds only if spend + what is reserved + the new amount
 * fits the budget (and every ancestor's budget), so concurrent callers can
 * never jointly overspend through reservations. A commit always records the
 * actual cost, even above its reservation, because money already spent is
 * never lost. No lock is taken and no store is read on these paths. */
#ifndef WFLO_CONTEXT_H
#define WFLO_CONTEXT_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest finite budget or amount, in USD. */
#define WFLO_BUDGET_MAX 1e6
/* The unlimited budget (INFINITY; written as JSON null). */
#define WFLO_BUDGET_UNLIMITED (HUGE_VAL)

/* --- contexts ------------------------------------------------------------ */

/* Creates a context for one workflow execution.
 * execution_id: NULL generates "exec-" + 32 hex digits, unique within this
 * process run; otherwise copied (invalid UTF-8 is kept here and replaced
 * only when written to JSON). workflow: the workflow's name, copied; may be
 * NULL. budget_usd: finite in [0, WFLO_BUDGET_MAX], or
 * WFLO_BUDGET_UNLIMITED. parent: may be NULL; the child holds a reference on
 * it, every reservation must fit the parent's budget too (and its parent's),
 * and spend rolls up to it.
 * Returns: 0; WFLO_E_INVAL (budget NaN, negative, above WFLO_BUDGET_MAX and
 * not unlimited; out NULL); WFLO_E_NOMEM (nothing is left allocated).
 * Ownership: *out is a new reference; drop it with wflo_context_put(). A live
 * context counts as "alive" for wflo_set_allocator().
 * Thread-safety: any thread. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int wflo_context_new(const char *execution_id,
                                                const char *workflow,
                                                double budget_usd,
                                                wflo_context_t *parent,
                                                wflo_context_t **out);

/* Takes one more reference on ctx and returns it (NULL in, NULL out).
 * Ownership: the caller owns the new reference. Thread-safety: any thread.
 * Since: 0.1. */
WFLO_EXTERN wflo_context_t *wflo_context_ref(wflo_context_t *ctx);

/* Drops a reference; the last one frees the context (and drops its
 * reference on the parent). NULL is a no-op. Entered contexts and held
 * reservations hold references of their own.
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN void wflo_context_put(wflo_context_t *ctx);

/* Makes ctx the calling thread's current context, nesting over the previous
 * one (which wflo_context_exit() restores). The thread holds a reference on
 * ctx while it is entered. Every enter must be matched by an exit on the
 * same thread before that thread ends. Nesting up to 16 deep allocates
 * nothing; deeper nesting grows a per-thread array.
 * Returns: 0; WFLO_E_INVAL (ctx NULL); WFLO_E_NOMEM (deeper than 16 only).
 * Thread-safety: affects the calling thread only. Since: 0.1. */
WFLO_EXTERN int wflo_context_enter(wflo_context_t *ctx);

/* Leaves ctx, which must be the innermost context this thread entered, and
 * restores the outer one.
 * Returns: 0; WFLO_E_INVAL (ctx NULL); WFLO_E_STATE when ctx is not the
 * innermost entered context (inside a libwflo callback, the context that
 * libwflo re-entered for the callback cannot be exited either).
 * Thread-safety: calling thread only. Since: 0.1. */
WFLO_EXTERN int wflo_context_exit(wflo_context_t *ctx);

/* Returns the calling thread's current context, or NULL when none.
 * Ownership: borrowed; valid while it stays entered (take a reference with
 * wflo_context_capture() to keep it). Thread-safety: calling thread only.
 * Since: 0.1. */
WFLO_EXTERN wflo_context_t *wflo_context_current(void);

/* Returns a new reference to the calling thread's current context, or NULL
 * when none, for carrying it to another thread or callback (then re-enter it
 * with wflo_context_run() or wflo_context_enter()).
 * Ownership: new reference; drop it with wflo_context_put().
 * Thread-safety: calling thread only. Since: 0.1. */
WFLO_EXTERN wflo_context_t *wflo_context_capture(void);

/* Runs fn(arg) with ctx current and restores the caller's context stack
 * afterwards, exiting anything fn entered and left entered; for a user's own
 * callbacks (libwflo's async paths do the same around theirs). ctx may be
 * NULL: fn then runs with no context. ctx may be dropped by fn: the call
 * holds its own reference.
 * Returns: fn's result; WFLO_E_INVAL when fn is NULL (fn not called).
 * Thread-safety: calling thread only. Callback: fn runs once, on the calling
 * thread, before this returns. Since: 0.1. */
WFLO_EXTERN int wflo_context_run(wflo_context_t *ctx, int (*fn)(void *arg),
                                 void *arg);

/* Returns ctx's execution id, or NULL when ctx is NULL.
 * Ownership: borrowed, valid while ctx lives. Thread-safety: any thread.
 * Since: 0.1. */
WFLO_EXTERN const char *wflo_context_execution_id(const wflo_context_t *ctx);

/* Returns ctx's workflow name (NULL when none or when ctx is NULL).
 * Ownership: borrowed, valid while ctx lives. Thread-safety: any thread.
 * Since: 0.1. */
WFLO_EXTERN const char *wflo_context_workflow(const wflo_context_t *ctx);

/* Returns the calling thread's current execution id, or NULL when no context
 * is current. Ownership: borrowed, valid while the context stays entered.
 * Thread-safety: calling thread only. Since: 0.1. */
WFLO_EXTERN const char *wflo_current_execution_id(void);

/* Returns the current context's budget in USD (the total, not what remains):
 * WFLO_BUDGET_UNLIMITED when unlimited, NAN when no context is current.
 * Reads no store and takes no lock: one thread-local load and one atomic
 * load. Thread-safety: calling thread's context; any thread. Since: 0.1. */
WFLO_EXTERN double wflo_get_current_budget(void);

/* Sets the current context's budget; reservations made after this call are
 * checked against it (held reservations and recorded spend are untouched,
 * so lowering it below what is spent refuses every later reservation).
 * Returns: 0; WFLO_E_INVAL for a budget that is NaN, negative or above
 * WFLO_BUDGET_MAX and not WFLO_BUDGET_UNLIMITED; WFLO_E_STATE when no context
 * is current. Thread-safety: any thread; acts on the calling thread's current
 * context, which other threads may be spending from. Since: 0.1. */
WFLO_EXTERN int wflo_set_current_budget(double usd);

/* --- budget -------------------------------------------------------------- */

/* A budget reservation: declared by the caller (on the stack or inside its
 * own struct), filled by wflo_budget_reserve(), ended by one
 * wflo_budget_commit(). No allocation. While held it keeps a reference on
 * its context. It may be declared uninitialised; reserving into a
 * reservation that is still held leaks that one (commit it first). */
typedef struct wflo_budget_resv {
  /* public */
  double usd; /* the amount reserved, in USD (read-only; 0 when the
                 reservation was made with no context: it charges nothing) */
  void *data; /* the caller's; libwflo never touches it */
  /* private */
  wflo_context_t *ctx;
  uint64_t pico;
  uint32_t state;
  void *reserved[4];
} wflo_budget_resv_t;

/* Reserves usd from ctx's budget (and from every ancestor's).
 * Succeeds only if spend + held reservations + usd fits each budget on the
 * chain; otherwise nothing changes, a budget_exceeded event (warn:
 * execution_id, workflow, budget_usd, spent_usd, requested_usd, naming the
 * context whose budget refused) is emitted, and WFLO_E_BUDGET_EXCEEDED is
 * returned. usd: finite in [0, WFLO_BUDGET_MAX].
 * Returns: 0 (resv held: commit it exactly once); WFLO_E_INVAL (ctx or resv
 * NULL, usd out of range); WFLO_E_BUDGET_EXCEEDED. On failure resv is not
 * held (committing it returns WFLO_E_STATE).
 * Ownership: on success resv holds a reference on ctx until committed.
 * Thread-safety: any thread; lock-free. Since: 0.1. */
WFLO_NODISCARD WFLO_EXTERN int
wflo_budget_reserve(wflo_context_t *ctx, double usd, wflo_budget_resv_t *resv);

/* Records actual_usd as spent and frees the reservation; actual_usd == 0
 * abandons it (nothing spent, nothing recorded by the ledger). A commit is
 * always recorded, even above the reservation: money already spent is never
 * lost. When spend is above the budget afterwards (of the context or of an
 * ancestor), a budget_exceeded event is emitted (requested_usd: actual_usd)
 * and WFLO_E_BUDGET_EXCEEDED is returned, but the amount is recorded all the
 * same; later reservations are then refused. A non-zero commit writes one
 * ledger record (see wflo_set_ledger()) after the accounting, on this
 * thread. Spend is read right after this commit is recorded; with other
 * threads reserving or committing on the same context at that very moment,
 * their in-flight amounts may count toward it.
 * Returns: 0; WFLO_E_BUDGET_EXCEEDED (recorded, see above); WFLO_E_INVAL
 * (resv NULL; actual_usd NaN, negative or above WFLO_BUDGET_MAX: the
 * reservation stays held); WFLO_E_STATE (not held: already committed, or
 * its reserve failed).
 * Ownership: drops the reservation's context reference.
 * Thread-safety: any thread (not necessarily the one that reserved), once
 * per reservation; lock-free accounting. Since: 0.1. */
WFLO_EXTERN int wflo_budget_commit(wflo_budget_resv_t *resv,
                                   double actual_usd);

/* Reserves and commits usd in one step (no reservation is visible to other
 * threads in between). A refused charge changes nothing.
 * Returns: 0; WFLO_E_INVAL (ctx NULL, usd out of range);
 * WFLO_E_BUDGET_EXCEEDED (refused, with a budget_exceeded event).
 * Thread-safety: any thread; lock-free. Since: 0.1. */
WFLO_EXTERN int wflo_budget_charge(wflo_context_t *ctx, double usd);

/* Returns what ctx has spent, in USD: its own commits and charges plus its
 * children's (which roll up). Exact once no reservation or commit on it is
 * in flight; saturates at about 1.8e7 USD. 0 for NULL.
 * Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN double wflo_budget_spent(const wflo_context_t *ctx);

/* Returns what a reservation on ctx could take now, in USD: the smallest of
 * budget - spent - held reservations over ctx and its ancestors, never below
 * 0; WFLO_BUDGET_UNLIMITED when every budget on the chain is unlimited;
 * NAN for NULL. Thread-safety: any thread. Since: 0.1. */
WFLO_EXTERN double wflo_budget_remaining(const wflo_context_t *ctx);

/* --- WFLO_WITH_CONTEXT --------------------------------------------------- */

/* WFLO_WITH_CONTEXT(ctx) { ... }: runs the block once with ctx entered, then
 * restores the thread's context stack to what it was before the block (so
 * anything the block entered and left entered is exited too). With gcc and
 * clang, leaving the block by break, goto or return restores it as well
 * (cleanup attribute); with other compilers only the normal end of the block
 * is supported. If entering fails (ctx NULL, or WFLO_E_NOMEM deeper than 16
 * nested contexts) the block is skipped. `break` inside the block leaves the
 * block, not an enclosing loop. */
typedef struct wflo_context_guard {
  wflo_context_t *ctx; /* the entered context, NULL once restored */
  size_t depth;        /* the thread's stack depth before entering */
  int state;
} wflo_context_guard_t;

/* Helpers behind WFLO_WITH_CONTEXT; not for direct use. guard_begin returns
 * 1 the first time when ctx was entered, else 0. Since: 0.1. */
WFLO_EXTERN int wflo_context_guard_begin(wflo_context_guard_t *g,
                                         wflo_context_t *ctx);
WFLO_EXTERN void wflo_context_guard_end(wflo_context_guard_t *g);

#if defined(__GNUC__) || defined(__clang__)
#define WFLO__CTX_CLEANUP __attribute__((cleanup(wflo_context_guard_end)))
#define WFLO__CTX_UNIQUE __COUNTER__
#else
#define WFLO__CTX_CLEANUP
#define WFLO__CTX_UNIQUE __LINE__
#endif

#define WFLO__CTX_CAT2(a, b) a##b
#define WFLO__CTX_CAT(a, b) WFLO__CTX_CAT2(a, b)

/* g is expanded once, so every use below names the same guard. */
#define WFLO__WITH_CONTEXT(ctx, g)                                            \
  for (wflo_context_guard_t WFLO__CTX_CLEANUP g = {NULL, 0, 0};               \
       wflo_context_guard_begin(&g, (ctx)); wflo_context_guard_end(&g))

#define WFLO_WITH_CONTEXT(ctx)                                                \
  WFLO__WITH_CONTEXT(ctx, WFLO__CTX_CAT(wflo__ctx_guard_, WFLO__CTX_UNIQUE))

#ifdef __cplusplus
}
#endif

#endif /* WFLO_CONTEXT_H */
