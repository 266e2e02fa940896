/* Private side of the context module: the struct (budget accounting lives
 * here too) and the scope used to re-enter a captured context around
 * libwflo's own callbacks. */
#ifndef WFLO_INTERNAL_CONTEXT_H
#define WFLO_INTERNAL_CONTEXT_H

#include "common.h"
#include "registry.h"

struct wflo_context_s {
  wflo__ref_t ref;
  char *execution_id;
  char *workflow; /* may be NULL */
  wflo_context_t *parent;
  /* The budget total in USD, read lock-free by wflo_get_current_budget(). */
  _Atomic double budget_usd;
};

/* Re-entering a captured context around a callback: no allocation, no
 * reference taken (the operation holds one). Contexts the callback enters
 * and forgets to exit are exited when the scope ends. */
typedef struct wflo__ctx_scope {
  wflo_context_t *saved_current;
  size_t saved_base;
} wflo__ctx_scope_t;

void wflo__ctx_scope_enter(wflo__ctx_scope_t *s, wflo_context_t *ctx);
void wflo__ctx_scope_exit(wflo__ctx_scope_t *s);

#endif /* WFLO_INTERNAL_CONTEXT_H */
