/* Execution contexts: reference-counted objects and a per-thread stack of
 * entered ones. The current context is one thread-local pointer, so reading
 * the current budget costs a TLS load and an atomic load. Budget accounting
 * is in budget.c. */
#include "internal/context.h"
#include "internal/metrics.h"

#include <stdio.h>

/* The innermost context lives in tl_current; the outer ones are pushed on a
 * per-thread stack. The first INLINE_DEPTH slots are part of the thread-local
 * itself, so entering and exiting (once per workflow execution) never
 * allocates at ordinary depths; deeper levels spill into a heap array that is
 * freed as soon as the stack shrinks back, so nothing of libwflo stays
 * allocated after the last exit (wflo_set_allocator() counts blocks).
 * `base` marks the bottom of a callback scope: exits cannot go below it.
 *
 * tl_current is read on the budget fast path: initial-exec keeps it a single
 * %fs-relative load even in the shared library (a pointer fits the static TLS
 * surplus glibc reserves for dlopen'ed libraries). */
#define INLINE_DEPTH 16

#if defined(__GNUC__) || defined(__clang__)
#define TLS_FAST __attribute__((tls_model("initial-exec")))
#else
#define TLS_FAST
#endif

static WFLO_THREAD_LOCAL wflo_context_t *tl_current TLS_FAST;
static WFLO_THREAD_LOCAL struct {
  wflo_context_t *inl[INLINE_DEPTH];
  wflo_context_t **heap; /* levels INLINE_DEPTH.. */
  size_t heap_cap, n, base;
} tl_stack;

/* Process-unique ids without touching the jitter PRNG (a test seeding it
 * must not make ids repeat): a random per-process key mixed with a counter
 * through a bijection, so ids never collide within a run and do not reveal
 * how many executions ran. */
static uv_once_t id_once = UV_ONCE_INIT;
static uint64_t id_key[2];
static atomic_uint_fast64_t id_counter;

static void id_init(void) {
  if (uv_random(NULL, NULL, id_key, sizeof(id_key), 0, NULL) != 0) {
    id_key[0] = uv_hrtime() * 0x9e3779b97f4a7c15ull;
    id_key[1] = (uint64_t)uv_os_getpid() * 0xbf58476d1ce4e5b9ull;
  }
}

/* splitmix64's finalizer: a bijection on 64-bit values. */
static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static char *generate_id(void) {
  uint64_t n;
  char buf[40];
  uv_once(&id_once, id_init);
  n = atomic_fetch_add(&id_counter, 1);
  snprintf(buf, sizeof(buf), "exec-%016llx%016llx",
           (unsigned long long)mix64(n ^ id_key[0]),
           (unsigned long long)mix64(n + id_key[1]));
  return wflo__strdup(buf);
}

int wflo_context_new(const char *execution_id, const char *workflow,
                     double budget_usd, wflo_context_t *parent,
                     wflo_context_t **out) {
  wflo_context_t *c;
  if (out == NULL || !wflo__budget_ok(budget_usd))
    return WFLO_E_INVAL;
  c = wflo__calloc(1, sizeof(*c));
  if (c == NULL)
    return WFLO_E_NOMEM;
  wflo__ref_init(&c->ref);
  c->execution_id =
      execution_id != NULL ? wflo__strdup(execution_id) : generate_id();
  if (c->execution_id == NULL)
    goto fail_free_ctx;
  if (workflow != NULL) {
    c->workflow = wflo__strdup(workflow);
    if (c->workflow == NULL)
      goto fail_free_id;
  }
  atomic_init(&c->budget_usd, budget_usd);
  atomic_init(&c->budget_pico, wflo__budget_to_pico(budget_usd));
  atomic_init(&c->used, 0);
  atomic_init(&c->reserved, 0);
  atomic_init(&c->owner, 0);
  c->parent = wflo_context_ref(parent);
  *out = c;
  return 0;

fail_free_id:
  wflo__strfree(c->execution_id);
fail_free_ctx:
  wflo__free(c, sizeof(*c));
  return WFLO_E_NOMEM;
}

wflo_context_t *wflo_context_ref(wflo_context_t *ctx) {
  if (ctx != NULL)
    wflo__ref_inc(&ctx->ref);
  return ctx;
}

void wflo_context_put(wflo_context_t *ctx) {
  /* Iterative over parents: a deep chain must not recurse. */
  while (ctx != NULL && wflo__ref_dec(&ctx->ref)) {
    wflo_context_t *parent = ctx->parent;
    wflo__metric_release(atomic_load(&ctx->m_spent));
    wflo__strfree(ctx->execution_id);
    wflo__strfree(ctx->workflow);
    wflo__free(ctx, sizeof(*ctx));
    ctx = parent;
  }
}

/* --- the per-thread stack ------------------------------------------------ */

static int stack_push(wflo_context_t *c) {
  size_t i = tl_stack.n;
  if (i < INLINE_DEPTH) {
    tl_stack.inl[i] = c;
  } else {
    i -= INLINE_DEPTH;
    if (i == tl_stack.heap_cap) {
      size_t cap = tl_stack.heap_cap ? tl_stack.heap_cap * 2 : 16;
      wflo_context_t **items =
          wflo__realloc(tl_stack.heap, tl_stack.heap_cap * sizeof(*items),
                        cap * sizeof(*items));
      if (items == NULL)
        return WFLO_E_NOMEM;
      tl_stack.heap = items;
      tl_stack.heap_cap = cap;
    }
    tl_stack.heap[i] = c;
  }
  tl_stack.n++;
  return 0;
}

static wflo_context_t *stack_pop(void) {
  size_t i = --tl_stack.n;
  if (i < INLINE_DEPTH)
    return tl_stack.inl[i];
  {
    wflo_context_t *c = tl_stack.heap[i - INLINE_DEPTH];
    if (i == INLINE_DEPTH) {
      wflo__free(tl_stack.heap, tl_stack.heap_cap * sizeof(*tl_stack.heap));
      tl_stack.heap = NULL;
      tl_stack.heap_cap = 0;
    }
    return c;
  }
}

/* Exits everything entered above `depth` (never below the scope base). */
static void unwind_to(size_t depth) {
  if (depth < tl_stack.base)
    depth = tl_stack.base;
  while (tl_stack.n > depth) {
    wflo_context_t *c = tl_current;
    tl_current = stack_pop();
    wflo_context_put(c);
  }
}

int wflo_context_enter(wflo_context_t *ctx) {
  int rc;
  if (ctx == NULL)
    return WFLO_E_INVAL;
  rc = stack_push(tl_current);
  if (rc != 0)
    return rc;
  tl_current = wflo_context_ref(ctx);
  return 0;
}

int wflo_context_exit(wflo_context_t *ctx) {
  if (ctx == NULL)
    return WFLO_E_INVAL;
  if (ctx != tl_current || tl_stack.n == tl_stack.base)
    return WFLO_E_STATE;
  tl_current = stack_pop();
  wflo_context_put(ctx);
  return 0;
}

wflo_context_t *wflo_context_current(void) { return tl_current; }

wflo_context_t *wflo_context_capture(void) {
  return wflo_context_ref(tl_current);
}

void wflo__ctx_scope_enter(wflo__ctx_scope_t *s, wflo_context_t *ctx) {
  s->saved_current = tl_current;
  s->saved_base = tl_stack.base;
  tl_stack.base = tl_stack.n;
  tl_current = ctx;
}

void wflo__ctx_scope_exit(wflo__ctx_scope_t *s) {
  unwind_to(tl_stack.base); /* what the callback entered and left behind */
  tl_current = s->saved_current;
  tl_stack.base = s->saved_base;
}

int wflo_context_run(wflo_context_t *ctx, int (*fn)(void *arg), void *arg) {
  wflo__ctx_scope_t s;
  int rc;
  if (fn == NULL)
    return WFLO_E_INVAL;
  wflo_context_ref(ctx); /* fn may drop the caller's reference */
  wflo__ctx_scope_enter(&s, ctx);
  rc = fn(arg);
  wflo__ctx_scope_exit(&s);
  wflo_context_put(ctx);
  return rc;
}

/* --- getters ------------------------------------------------------------- */

const char *wflo_context_execution_id(const wflo_context_t *ctx) {
  return ctx != NULL ? ctx->execution_id : NULL;
}

const char *wflo_context_workflow(const wflo_context_t *ctx) {
  return ctx != NULL ? ctx->workflow : NULL;
}

const char *wflo_current_execution_id(void) {
  return tl_current != NULL ? tl_current->execution_id : NULL;
}

double wflo_get_current_budget(void) {
  wflo_context_t *c = tl_current;
  if (wflo__unlikely(c == NULL))
    return NAN;
  return atomic_load_explicit(&c->budget_usd, memory_order_relaxed);
}

int wflo_set_current_budget(double usd) {
  wflo_context_t *c = tl_current;
  if (!wflo__budget_ok(usd))
    return WFLO_E_INVAL;
  if (c == NULL)
    return WFLO_E_STATE;
  atomic_store_explicit(&c->budget_pico, wflo__budget_to_pico(usd),
                        memory_order_relaxed);
  atomic_store_explicit(&c->budget_usd, usd, memory_order_relaxed);
  return 0;
}

/* --- WFLO_WITH_CONTEXT --------------------------------------------------- */

int wflo_context_guard_begin(wflo_context_guard_t *g, wflo_context_t *ctx) {
  if (g->state != 0)
    return 0;
  g->state = 1;
  g->depth = tl_stack.n;
  if (wflo_context_enter(ctx) != 0)
    return 0;
  g->ctx = ctx;
  return 1;
}

void wflo_context_guard_end(wflo_context_guard_t *g) {
  /* Unwind by depth rather than exiting g->ctx alone: a block that entered
   * something and did not exit it must still leave the thread as it found
   * it. */
  if (g->ctx != NULL) {
    g->ctx = NULL;
    unwind_to(g->depth);
  }
}
